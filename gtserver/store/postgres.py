"""PostgreSQL engine, on asynchronous ``txpostgres`` connections.

Transactions are the same generator functions SQLite runs; here each yielded
statement is executed asynchronously, with ``?`` placeholders rewritten to
psycopg2's ``%s``.

The engine keeps its own small pool instead of ``txpostgres.ConnectionPool``
because it must survive the database going away: a connection that breaks is
dropped, the transaction fails with :class:`StoreUnavailable`, and the next
transaction connects afresh. After a failed connection attempt, transactions
fail at once for ``retry_delay`` seconds instead of queueing behind a server
that is down; after that the next one tries again, so the pool recovers by
itself once the server is back. A transaction that runs out of the store's
time limit (a frozen server, a partition: no error ever comes) is abandoned by
closing its connection, with the same fail-fast delay (see ``_abandoned``).
"""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    ensureDeferred,
    inlineCallbacks,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from gtserver.store.base import (
    DRIVER_VALUE_ERRORS,
    Conflict,
    Statement,
    Store,
    StoreError,
    StoreUnavailable,
    TransactionFunction,
    Unstorable,
    unstorable,
)

log = Logger()

#: libpq settings added unless the URL sets them: notice a silently dead
#: server within about a minute instead of waiting for TCP's hours.
CONNECTION_DEFAULTS = {
    "application_name": "gtserver",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}

#: Rows per multi-row INSERT when a statement is executed for many rows.
ROWS_PER_INSERT = 500


@functools.lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """Rewrite ``?`` placeholders as ``%s`` (escaping literal ``%``)."""
    return sql.replace("%", "%%").replace("?", "%s")


_VALUES_GROUP = re.compile(r"\bVALUES\s*(\([^()]*\))", re.IGNORECASE)


@functools.lru_cache(maxsize=256)
def multi_row(sql: str, rows: int) -> str | None:
    """``INSERT ... VALUES (?, ?)`` rewritten to insert ``rows`` rows at once,
    or None when the statement is not a simple single-row INSERT."""
    matches = list(_VALUES_GROUP.finditer(sql))
    if len(matches) != 1 or not sql.lstrip().upper().startswith("INSERT"):
        return None
    group = matches[0]
    repeated = ", ".join([group.group(1)] * rows)
    return sql[:group.start(1)] + repeated + sql[group.end(1):]


def dsn_from_url(url: str) -> str:
    """Turn ``postgresql://user:pw@host:port/db?opt=v`` into a libpq keyword DSN."""
    parts = urlsplit(url)
    fields: dict[str, Any] = {
        "host": parts.hostname,
        "port": parts.port,
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "dbname": unquote(parts.path.lstrip("/")) or None,
        **CONNECTION_DEFAULTS,
    }
    for option in filter(None, parts.query.split("&")):
        key, _, value = option.partition("=")
        fields[key] = unquote(value)
    return " ".join(
        f"{key}='{_quote(str(value))}'" for key, value in fields.items() if value is not None)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _connection_class():
    """txpostgres' Connection, made quiet about a server that hangs up.

    An idle txpostgres connection watches its socket for NOTIFY messages; when
    the server closes it, psycopg2 raises from inside the reactor's read
    handler. Here that just closes the connection, which the pool then drops.
    """
    import psycopg2
    from txpostgres import txpostgres

    class Connection(txpostgres.Connection):
        def doRead(self):
            try:
                super().doRead()
            except psycopg2.Error as error:
                log.warn("PostgreSQL connection lost: {error}", error=str(error).strip())
                self.close()

        @property
        def broken(self) -> bool:
            return self._connection is None or bool(self._connection.closed)

    return Connection


class PostgresStore(Store):
    engine = "postgresql"

    def __init__(self, url: str, reactor: Any = None, pool_size: int = 4,
                 connect_timeout: float = 10.0, retry_delay: float = 1.0,
                 timeout: float | None = None) -> None:
        super().__init__(url, reactor, timeout)
        self.dsn = dsn_from_url(url)
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.retry_delay = retry_delay
        self._accepting = False
        self._idle: list[Any] = []
        self._slots = DeferredSemaphore(pool_size)
        self._retry_after = 0.0
        self._last_error = ""
        self._connection_class: Any = None

    def bus(self, node: str) -> Any:
        """Node ``node``'s bus over LISTEN/NOTIFY (see :mod:`gtserver.store.notify`)."""
        from gtserver.store.notify import PostgresBus
        return PostgresBus(self, node)

    async def _open(self) -> None:
        self._connection_class = _connection_class()
        # One connection now, to fail start-up clearly when the server is
        # unreachable; the rest are opened as load requires.
        self._idle.append(await self._connect())
        self._accepting = True

    def _run(self, function: TransactionFunction, args: tuple, kwargs: dict) -> Deferred:
        if not self._accepting:
            raise StoreUnavailable("the store is not open")
        # Cancelling this (the store's time limit) cancels the wait for a pool
        # slot, or for a connection, or abandons the running transaction.
        return self._slots.run(
            lambda: ensureDeferred(self._transaction(function, args, kwargs)))

    async def _transaction(self, function: TransactionFunction, args: tuple,
                           kwargs: dict) -> Any:
        connection = await self._checkout()
        try:
            result = await _abandonable(
                connection, _interaction(connection, function, args, kwargs))
        except CancelledError:
            self._abandoned(connection)
            raise
        except Exception as error:
            self._checkin(connection)
            raise _translate(error) from error
        self._checkin(connection)
        return result

    def _abandoned(self, connection: Any) -> None:
        """A transaction ran out of time: the server is frozen or out of reach
        (or badly overloaded). Its connection is closed, so the server rolls
        the transaction back whenever it sees the close; idle connections to
        the same server are dropped too, and for ``retry_delay`` seconds
        transactions that need a new connection fail at once."""
        _close_quietly(connection)
        idle, self._idle = self._idle, []
        for other in idle:
            _close_quietly(other)
        self._last_error = "a transaction ran out of time"
        self._retry_after = self.reactor.seconds() + self.retry_delay

    async def _checkout(self) -> Any:
        while self._idle:
            connection = self._idle.pop()
            if not connection.broken:
                return connection
        if self.reactor.seconds() < self._retry_after:
            raise StoreUnavailable(f"database unreachable: {self._last_error}")
        return await self._connect()

    def _checkin(self, connection: Any) -> None:
        if connection.broken or not self._accepting:
            _close_quietly(connection)
        else:
            self._idle.append(connection)

    async def _connect(self) -> Any:
        """A new connection, or StoreUnavailable within ``connect_timeout``."""
        connection = self._connection_class(self.reactor)
        try:
            await connect_within(connection, self.dsn, self.reactor, self.connect_timeout)
        except Exception as error:
            self._last_error = first_line(error)
            self._retry_after = self.reactor.seconds() + self.retry_delay
            raise StoreUnavailable(
                f"cannot connect to {self.describe()}: {self._last_error}") from error
        return connection

    async def _close(self) -> None:
        self._accepting = False
        idle, self._idle = self._idle, []
        for connection in idle:
            _close_quietly(connection)


def connect_within(connection: Any, dsn: str, reactor: Any, timeout: float) -> Deferred:
    """Connect ``connection`` (a txpostgres Connection) to ``dsn``; fails with
    the driver's error, or TimeoutError after ``timeout`` seconds (a server
    that does not answer), and then the connection is closed (also when the
    attempt is cancelled)."""
    def cancel(_: Deferred) -> None:
        if timer.active():
            timer.cancel()
        _close_quietly(connection)

    result: Deferred = Deferred(cancel)

    def timed_out() -> None:
        _close_quietly(connection)
        if not result.called:
            result.errback(TimeoutError(f"no answer in {timeout:g} s"))

    timer = reactor.callLater(timeout, timed_out)

    def settled(outcome: Any) -> Any:
        if timer.active():
            timer.cancel()
        if isinstance(outcome, Failure):
            _close_quietly(connection)
        if not result.called:
            result.callback(outcome)  # a Failure takes the errback path
        return None

    connection.connect(dsn).addBoth(settled)
    return result


def first_line(error: BaseException) -> str:
    """The first line of an error's message (drivers' messages run on), else its kind."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _close_quietly(connection: Any) -> None:
    try:
        connection.close()
    except Exception:  # already closed or never connected
        pass


def _abandonable(connection: Any, work: Deferred) -> Deferred:
    """``work`` on ``connection``, made safe to cancel.

    Cancelling the returned Deferred fails it at once and closes the
    connection; the server rolls back when it sees the close. (Cancelling
    ``work`` itself would make txpostgres send a cancel request, which blocks
    on a server that does not answer.) ``work``'s late outcome is ignored.
    """
    def abandon(outcome: Deferred) -> None:
        outcome.errback(Failure(CancelledError()))
        _close_quietly(connection)

    outcome: Deferred = Deferred(abandon)

    def relay(result: Any) -> None:
        if not outcome.called:
            outcome.callback(result)

    work.addBoth(relay)
    return outcome


@inlineCallbacks
def _interaction(connection: Any, function: TransactionFunction, args: tuple, kwargs: dict):
    """Run a transaction generator between BEGIN and COMMIT on ``connection``.

    On failure it is rolled back, unless the connection is gone (then the
    server has rolled it back or will): no second error to report.
    """
    cursor = connection.cursor()
    yield cursor.execute("BEGIN")
    try:
        result = yield _drive(cursor, function, args, kwargs)
        yield cursor.execute("COMMIT")
    except Exception as error:
        if not connection.broken:
            try:
                yield cursor.execute("ROLLBACK")
            except Exception:
                _close_quietly(connection)  # in an unknown state: never reuse it
        raise error
    return result


@inlineCallbacks
def _drive(cursor: Any, function: TransactionFunction, args: tuple, kwargs: dict):
    generator = function(*args, **kwargs)
    result = None
    while True:
        try:
            statement: Statement = (
                generator.send(result) if result is not None else next(generator))
        except StopIteration as stop:
            return stop.value
        sql = to_pyformat(statement.sql)
        try:
            if statement.many:
                yield from _execute_many(cursor, sql, list(statement.params))
            else:
                yield cursor.execute(sql, tuple(statement.params))
        except DRIVER_VALUE_ERRORS as error:
            raise unstorable(error) from error
        result = cursor.fetchall() if not statement.many and cursor.description else []


def _execute_many(cursor: Any, sql: str, rows: list):
    """Yield the Deferreds executing ``sql`` for every row, in few round trips."""
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start:start + ROWS_PER_INSERT]
        combined = multi_row(sql, len(chunk))
        if combined is None:
            for params in chunk:
                yield cursor.execute(sql, tuple(params))
        else:
            yield cursor.execute(combined, tuple(value for row in chunk for value in row))


def _translate(error: Exception) -> Exception:
    import psycopg2
    from txpostgres.txpostgres import RollbackFailed

    if isinstance(error, StoreError):
        return error
    if isinstance(error, psycopg2.IntegrityError):
        return Conflict(str(error).strip())
    if isinstance(error, psycopg2.DataError):  # e.g. a number out of its column's range
        return Unstorable(str(error).strip())
    if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError, RollbackFailed)):
        return StoreUnavailable(f"database connection lost: {str(error).strip() or error!r}")
    if isinstance(error, psycopg2.Error):
        return StoreError(str(error).strip())
    return error
