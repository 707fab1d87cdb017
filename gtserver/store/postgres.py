"""PostgreSQL engine, through a ``txpostgres`` connection pool.

Transactions are the same generator functions SQLite runs; here each yielded
statement is executed asynchronously on a pooled connection, with ``?``
placeholders rewritten to psycopg2's ``%s``.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from gtserver.store.base import (
    Conflict,
    Statement,
    Store,
    StoreError,
    StoreUnavailable,
    TransactionFunction,
)

log = Logger()


@functools.lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """Rewrite ``?`` placeholders as ``%s`` (escaping literal ``%``)."""
    return sql.replace("%", "%%").replace("?", "%s")


def dsn_from_url(url: str) -> str:
    """Turn ``postgresql://user:pw@host:port/db?opt=v`` into a libpq keyword DSN."""
    parts = urlsplit(url)
    fields = {
        "host": parts.hostname,
        "port": parts.port,
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "dbname": unquote(parts.path.lstrip("/")) or None,
    }
    for option in filter(None, parts.query.split("&")):
        key, _, value = option.partition("=")
        fields[key] = unquote(value)
    return " ".join(
        f"{key}='{_quote(str(value))}'" for key, value in fields.items() if value is not None)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


class PostgresStore(Store):
    engine = "postgresql"

    def __init__(self, url: str, reactor: Any = None, pool_size: int = 4) -> None:
        super().__init__(url, reactor)
        self.dsn = dsn_from_url(url)
        self.pool_size = pool_size
        self._pool = None

    async def _open(self) -> None:
        import psycopg2
        from txpostgres import txpostgres

        # txpostgres reads the reactor from a class attribute when it builds
        # its connections, so bind ours on a subclass.
        pool_class = type("Pool", (txpostgres.ConnectionPool,), {"reactor": self.reactor})
        pool = pool_class(None, self.dsn, min=self.pool_size)
        try:
            await pool.start()
        except psycopg2.Error as error:
            raise StoreUnavailable(
                f"cannot connect to {self.describe()}: {str(error).strip()}") from error
        self._pool = pool

    def _run(self, function: TransactionFunction, args: tuple, kwargs: dict) -> Deferred:
        if self._pool is None:
            raise StoreUnavailable("the store is not open")
        d = self._pool.runInteraction(_drive, function, args, kwargs)
        return d.addErrback(_translate)

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


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
        if statement.many:
            for params in statement.params:
                yield cursor.execute(sql, tuple(params))
            result = []
        else:
            yield cursor.execute(sql, tuple(statement.params))
            result = cursor.fetchall() if cursor.description else []


def _translate(failure: Failure) -> Failure:
    import psycopg2

    if failure.check(psycopg2.IntegrityError):
        raise Conflict(str(failure.value))
    if failure.check(psycopg2.OperationalError, psycopg2.InterfaceError):
        raise StoreUnavailable(str(failure.value).strip())
    if failure.check(psycopg2.Error):
        raise StoreError(str(failure.value).strip())
    return failure
