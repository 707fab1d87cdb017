"""SQLite engine: the embedded default, through ``twisted.enterprise.adbapi``.

One connection in one database thread: SQLite serialises writers anyway, and a
single connection is what ``sqlite::memory:`` needs. The reactor thread never
touches the database.

Every transaction starts with an explicit ``BEGIN`` (the connection is in
autocommit mode otherwise), so migrations' DDL and multi-statement reads are
atomic too. Columns declared ``BOOLEAN`` come back as Python booleans, as they
do from PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
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


def _transaction(cursor: Any, function: TransactionFunction, args: tuple, kwargs: dict) -> Any:
    cursor.execute("BEGIN")
    return drive_synchronously(cursor, function, args, kwargs)


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

    def __init__(self, url: str, path: str, reactor: Any = None) -> None:
        super().__init__(url, reactor)
        self.path = path
        self._pool: adbapi.ConnectionPool | None = None

    async def _open(self) -> None:
        self._pool = adbapi.ConnectionPool(
            "sqlite3", self.path, check_same_thread=False, isolation_level=None,
            detect_types=sqlite3.PARSE_DECLTYPES,
            cp_min=1, cp_max=1, cp_openfun=_configure, cp_reactor=self.reactor)
        self._pool.start()

    def _run(self, function: TransactionFunction, args: tuple, kwargs: dict) -> Deferred:
        if self._pool is None:
            raise StoreError("the store is not open")
        d = self._pool.runInteraction(_transaction, function, args, kwargs)
        return d.addErrback(_translate)

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # Nothing is in flight any more (Store.close waited), so joining the
        # idle database thread returns at once.
        pool.close()
