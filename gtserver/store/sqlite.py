"""SQLite engine: the embedded default, through ``twisted.enterprise.adbapi``.

One connection in one database thread: SQLite serialises writers anyway, and a
single connection is what ``sqlite::memory:`` needs. The reactor thread never
touches the database.

Every transaction starts with an explicit ``BEGIN`` (the connection is in
autocommit mode otherwise), so migrations' DDL and multi-statement reads are
atomic too. Columns declared ``BOOLEAN`` come back as Python booleans, as they
do from PostgreSQL.

A transaction cancelled by the store's time limit (the database thread stuck
behind another process's lock, a slow disk) is abandoned: if it has not
started it never will, a running statement is interrupted, and one that ends
anyway is rolled back instead of committed (only one cancelled in the instant
between its last statement and the commit may still commit).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

from gtserver.store.base import (
    Conflict,
    Store,
    StoreError,
    StoreUnavailable,
    TransactionFunction,
    Unstorable,
    drive_synchronously,
)

sqlite3.register_converter("BOOLEAN", lambda value: value not in (b"0", b""))


def _configure(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 5000")
    if connection.execute("PRAGMA database_list").fetchone()[2]:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")


class _Call:
    """One transaction's state, shared by the reactor and the database thread."""

    __slots__ = ("cancelled", "running", "lock")

    def __init__(self) -> None:
        self.cancelled = False
        self.running = False
        self.lock = threading.Lock()

    def cancel(self, connection: sqlite3.Connection | None) -> None:
        """Abandon the call (reactor thread): interrupt it if it is running."""
        self.cancelled = True
        with self.lock:
            if self.running and connection is not None:
                connection.interrupt()


def _transaction(cursor: Any, call: _Call, function: TransactionFunction, args: tuple,
                 kwargs: dict) -> Any:
    with call.lock:
        if call.cancelled:
            raise StoreUnavailable("abandoned before it started")
        call.running = True
    try:
        cursor.execute("BEGIN")
        result = drive_synchronously(cursor, function, args, kwargs)
        if call.cancelled:  # raising makes adbapi roll back instead of commit
            raise StoreUnavailable("abandoned after its time limit")
        return result
    finally:
        with call.lock:
            call.running = False


#: Primary SQLite result codes that mean "not now" rather than "never": busy
#: or locked by another connection, out of memory or disk, I/O trouble, the
#: file gone or read-only, interrupted by a timeout. Retrying later may work.
_UNAVAILABLE_CODES = frozenset({
    5,   # SQLITE_BUSY
    6,   # SQLITE_LOCKED
    7,   # SQLITE_NOMEM
    8,   # SQLITE_READONLY
    9,   # SQLITE_INTERRUPT
    10,  # SQLITE_IOERR
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
})


def _translate(failure: Failure) -> Failure:
    error = failure.value
    if isinstance(error, StoreError):
        raise error
    if isinstance(error, sqlite3.IntegrityError):
        raise Conflict(str(error))
    if isinstance(error, sqlite3.DataError):  # a string or blob too big
        raise Unstorable(str(error))
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _UNAVAILABLE_CODES:
            raise StoreUnavailable(f"database unavailable: {error}")
        raise StoreError(str(error))
    return failure


class SQLiteStore(Store):
    engine = "sqlite"

    def __init__(self, url: str, path: str, reactor: Any = None,
                 timeout: float | None = None) -> None:
        super().__init__(url, reactor, timeout)
        self.path = path
        self._pool: adbapi.ConnectionPool | None = None
        self._connection: sqlite3.Connection | None = None
        #: Work handed to the database thread and not finished there yet.
        self._in_thread: set[Deferred] = set()

    async def _open(self) -> None:
        self._pool = adbapi.ConnectionPool(
            "sqlite3", self.path, check_same_thread=False, isolation_level=None,
            detect_types=sqlite3.PARSE_DECLTYPES,
            cp_min=1, cp_max=1, cp_openfun=self._opened, cp_reactor=self.reactor)
        self._pool.start()

    def _opened(self, connection: sqlite3.Connection) -> None:
        _configure(connection)
        self._connection = connection

    def _run(self, function: TransactionFunction, args: tuple, kwargs: dict) -> Deferred:
        if self._pool is None:
            raise StoreError("the store is not open")
        call = _Call()
        work = self._pool.runInteraction(_transaction, call, function, args, kwargs)
        self._in_thread.add(work)
        outcome = Deferred(lambda _: call.cancel(self._connection))

        def relay(result: Any) -> None:
            self._in_thread.discard(work)
            if not outcome.called:
                outcome.callback(result)
            # else: abandoned; its late result (or failure) is of no interest

        work.addBoth(relay)
        return outcome.addErrback(_translate)

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # Store.close waited for every transaction; one abandoned after its
        # time limit may still be finishing in the thread: let it end first,
        # so that joining the idle database thread returns at once.
        if self._in_thread:
            await DeferredList(list(self._in_thread), consumeErrors=True)
        pool.close()
