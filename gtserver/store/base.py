"""The engine-neutral half of the store.

Every query module in this package writes its transactions once, as generator
functions that *yield* :class:`Statement` objects and receive each statement's
result rows back::

    def user_by_name(name):
        rows = yield Statement("SELECT id, name FROM users WHERE name = ?", (name,))
        return rows[0] if rows else None

An engine runs such a generator inside one database transaction: SQLite runs it
synchronously in its single database thread, PostgreSQL runs it step by step
with Deferreds. SQL is written with ``?`` placeholders and the small dialect
markers of :data:`DDL_MARKERS` in DDL; each engine translates them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail
from twisted.python.failure import Failure

from gtserver import metrics

Rows = list[tuple]
Transaction = Generator["Statement", Rows, Any]
TransactionFunction = Callable[..., Transaction]


@dataclass(frozen=True)
class Statement:
    """One SQL statement with its parameters.

    With ``many=True``, ``params`` is a sequence of parameter tuples and the
    statement is executed once for each (``executemany``); no rows come back.
    """

    sql: str
    params: Sequence[Any] = ()
    many: bool = False


class StoreError(Exception):
    """The database could not complete an operation (unreachable, broken)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now."""


class Conflict(StoreError):
    """A uniqueness or foreign-key constraint refused a write."""


class Unstorable(StoreError):
    """The database cannot store these values as given: text it cannot encode
    (a lone UTF-16 surrogate anywhere, a NUL character on PostgreSQL) or a
    number out of range. The request is at fault, not the database: answer it
    as a bad request; retrying the same values fails the same way."""


#: What drivers raise, before anything reaches the database, for values they
#: cannot send: UnicodeEncodeError (a ValueError) for surrogates, ValueError
#: for NUL on PostgreSQL, OverflowError for integers SQLite cannot hold.
DRIVER_VALUE_ERRORS = (ValueError, OverflowError)


def unstorable(error: Exception) -> Unstorable:
    """The :class:`Unstorable` for a driver's complaint about a value."""
    return Unstorable(f"cannot store this value: {error}")


class Store:
    """Runs transaction generators on one database engine.

    Engines implement :meth:`_open`, :meth:`_run` and :meth:`_close`; this class
    adds schema migration at start, a time limit on every transaction, and a
    clean close that waits for every transaction still in flight.

    With ``timeout`` set, a transaction that has not finished (waiting for a
    connection included) after that many seconds fails with
    :class:`StoreUnavailable`: the Deferred from :meth:`_run` is cancelled, and
    each engine makes cancelling abandon the work without committing it.
    Migrations at start are not limited.
    """

    #: Engine name as shown in logs: ``sqlite`` or ``postgresql``.
    engine: str = ""

    def __init__(self, url: str, reactor: Any = None, timeout: float | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.url = url
        self.reactor = reactor
        #: Seconds a transaction may take before it fails as unavailable (None: no limit).
        self.timeout = timeout
        self._inflight: set[Deferred] = set()
        self._closing = False
        #: Plugin migrations applied at start, by namespace (see add_migrations).
        self.plugin_migrations: dict[str, PluginMigrations] = {}
        #: Latency and failures of every transaction, for /metrics.
        self._timer = metrics.StoreTimer(self.engine or "unknown")

    def add_migrations(self, namespace: str,
                       migrations: Sequence[tuple[int, Sequence[str]]]) -> None:
        """Also bring ``namespace``'s tables up to date at :meth:`start`.

        ``migrations`` is a plugin's ``(version, statements)`` list (checked by
        :func:`gtserver.store.schema.check_plugin_migrations`: ValueError if
        it is malformed). Call it before the store starts.
        """
        if namespace in self.plugin_migrations:
            raise ValueError(f"migrations of {namespace!r} are added twice")
        self.plugin_migrations[namespace] = check_plugin_migrations(migrations)

    def run(self, function: TransactionFunction, *args: Any, **kwargs: Any) -> Deferred:
        """Run ``function(*args, **kwargs)`` as one transaction.

        Returns a Deferred firing with the generator's return value, or failing
        with :class:`StoreError` (:class:`Conflict` for constraint violations,
        :class:`Unstorable` for values the database cannot hold,
        :class:`StoreUnavailable` when it cannot answer within ``timeout``).
        """
        return self._submit(function, args, kwargs, self.timeout)

    def _submit(self, function: TransactionFunction, args: tuple, kwargs: dict,
                timeout: float | None) -> Deferred:
        started = time.perf_counter()
        if self._closing:
            failure = Failure(StoreUnavailable("the store is closing"))
            self._timer.finished(started, failure)
            return fail(failure)
        try:
            d = self._run(function, args, kwargs)
        except StoreError as error:
            failure = Failure(error)
            self._timer.finished(started, failure)
            return fail(failure)
        if timeout is not None:
            d.addTimeout(timeout, self.reactor, onTimeoutCancel=_timed_out)
        self._inflight.add(d)

        def finished(result: Any) -> Any:
            self._inflight.discard(d)
            self._timer.finished(started, result)
            return result

        return d.addBoth(finished)

    def bus(self, node: str) -> Any:
        """The cross-node bus of a deployment sharing this database, as node
        ``node`` (a service: start it with the core). Only engines a
        deployment of several nodes can share have one."""
        raise StoreError(f"{self.engine or 'this'} database serves a single node; "
                         "several nodes need PostgreSQL")

    async def start(self) -> None:
        """Connect and bring the schema up to date (idempotent)."""
        await self._open()
        pending = await self._submit(migrate, (self.engine,), {}, None)
        for migration in pending:
            await self._submit(apply_migration, (migration, self.engine, self.reactor.seconds()),
                               {}, None)
        for namespace, migrations in self.plugin_migrations.items():
            done = await self._submit(plugin_versions, (namespace,), {}, None)
            for version, statements in migrations:
                if version not in done:
                    await self._submit(apply_plugin_migration,
                                       (namespace, version, statements, self.engine,
                                        self.reactor.seconds()), {}, None)

    async def close(self) -> None:
        """Refuse new work, let in-flight transactions finish, disconnect."""
        self._closing = True
        if self._inflight:
            await DeferredList(list(self._inflight), consumeErrors=True)
        await self._close()

    def describe(self) -> str:
        """The database location for logs, without any password."""
        return redact_url(self.url)

    async def _open(self) -> None:
        raise NotImplementedError

    def _run(self, function: TransactionFunction, args: tuple, kwargs: dict) -> Deferred:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError


def _timed_out(result: Any, timeout: float) -> Any:
    """What a transaction cancelled by its time limit fails with."""
    if isinstance(result, Failure) and result.check(CancelledError, StoreUnavailable):
        return Failure(StoreUnavailable(f"the database did not answer within {timeout:g} s"))
    return result


def redact_url(url: str) -> str:
    """Hide the password of a ``scheme://user:password@host`` URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, location = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{location}" if ":" in credentials else url


def drive_synchronously(cursor: Any, function: TransactionFunction, args: tuple,
                        kwargs: dict) -> Any:
    """Run a transaction generator against a DB-API cursor, blocking.

    Used by engines whose driver is synchronous (SQLite, in its own thread).
    """
    generator = function(*args, **kwargs)
    result: Rows | None = None
    try:
        while True:
            statement = generator.send(result) if result is not None else next(generator)
            try:
                if statement.many:
                    cursor.executemany(statement.sql, statement.params)
                else:
                    cursor.execute(statement.sql, tuple(statement.params))
            except DRIVER_VALUE_ERRORS as error:
                raise unstorable(error) from error
            result = cursor.fetchall() if not statement.many and cursor.description else []
    except StopIteration as stop:
        return stop.value


from gtserver.store.schema import (  # noqa: E402  (schema needs Statement)
    PluginMigrations,
    apply_migration,
    apply_plugin_migration,
    check_plugin_migrations,
    migrate,
    plugin_versions,
)
