"""The store on both engines: migrations, every query module, errors, closing.

Each test runs against SQLite and against a real PostgreSQL the suite starts
itself (see :mod:`tests.pgcluster`).
"""

from __future__ import annotations

import json
import sqlite3

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.logger import Logger
from twisted.trial import unittest

from gtserver.core.events import UNSTORABLE_KIND, EventLog
from gtserver.store import (
    Conflict,
    Statement,
    StoreError,
    StoreUnavailable,
    Unstorable,
    open_store,
)
from gtserver.store import accounts as account_queries
from gtserver.store import events as event_queries
from gtserver.store import matches as match_queries
from gtserver.store.schema import MIGRATIONS
from tests.pgcluster import postgres_url, private_cluster
from tests.support import select_events, sqlite_url


def count_rows(table: str):
    rows = yield Statement(f"SELECT COUNT(*) FROM {table}")
    return rows[0][0]


def delete_events():
    yield Statement("DELETE FROM events")


def delete_match(match_id: str):
    yield Statement("DELETE FROM matches WHERE id = ?", (match_id,))


def count_to(limit: int):
    rows = yield Statement(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "SELECT COUNT(*) FROM n", (limit,))
    return rows[0][0]


def set_busy_timeout(milliseconds: int):
    yield Statement(f"PRAGMA busy_timeout = {int(milliseconds)}")


def applied_migrations():
    rows = yield Statement("SELECT id FROM schema_migrations ORDER BY id")
    return [row[0] for row in rows]


def insert_then_fail(name: str):
    yield Statement("INSERT INTO users (name, temporary, created, last_seen) VALUES (?, ?, ?, ?)",
                    (name, False, 1.0, 1.0))
    yield Statement("INSERT INTO no_such_table VALUES (1)")


SURROGATE, NUL = "\ud800", "\x00"

#: The text columns of the events table, as positions in an event row.
EVENT_TEXT_COLUMNS = {name: index for index, name in enumerate(event_queries.EVENT_COLUMNS)
                      if name != "time"}


def event_row(n: int, **columns: str) -> tuple:
    """An event row numbered ``n`` (in its data), with ``columns`` replaced."""
    row = [float(n), "vr", "chat", f"user{n}", "lobby", f"m{n}", "127.0.0.1",
           json.dumps({"n": n})]
    for name, value in columns.items():
        row[event_queries.EVENT_COLUMNS.index(name)] = value
    return tuple(row)


def all_events():
    return (yield from select_events(limit=1_000_000))


def as_before_migration_101():
    """A database from before matches had a ``source``, holding one open match."""
    yield Statement("ALTER TABLE matches RENAME COLUMN source TO context")
    yield Statement("DELETE FROM schema_migrations WHERE id = 101")
    yield Statement(
        "INSERT INTO matches (id, game, context, state, ranked, finished, created, updated) "
        "VALUES ('m-old', 'UltimateTicTacToe', 'uttt', '{}', FALSE, FALSE, 1.0, 1.0)")


class FailingAt:
    """A store that reports itself unavailable on chosen calls of ``run``
    (counted from 1) and passes every other call to a real store."""

    def __init__(self, store, failing_calls: set[int]) -> None:
        self.store = store
        self.failing_calls = failing_calls
        self.calls = 0

    def run(self, function, *args, **kwargs):
        self.calls += 1
        if self.calls in self.failing_calls:
            from twisted.internet.defer import fail
            return fail(StoreUnavailable("unavailable for this test"))
        return self.store.run(function, *args, **kwargs)


class StoreTestsMixin:
    """Store behaviour every engine must show. Subclasses define make_url()."""

    #: Whether the engine stores a NUL character in text (SQLite does).
    stores_nul = False

    def make_url(self) -> str:
        raise NotImplementedError

    def storable(self, text: str | None) -> bool:
        return text is None or (SURROGATE not in text and (self.stores_nul or NUL not in text))

    async def open(self, url: str | None = None):
        store = open_store(url or self.url, reactor)
        await store.start()
        self.addCleanup(store.close)
        return store

    def setUp(self):
        self.url = self.make_url()

    async def test_a_database_whose_matches_have_a_context_keeps_them(self):
        """Migration 101 renames the matches' ``context`` to ``source``."""
        store = await self.open()
        await store.run(as_before_migration_101)
        await store.close()
        store = await self.open()
        self.assertIn(101, await store.run(applied_migrations))
        row = await store.run(match_queries.match_by_id, "m-old")
        self.assertEqual(row[:3], ("m-old", "UltimateTicTacToe", "uttt"))
        self.assertEqual([row[0] for row in await store.run(match_queries.open_matches,
                                                             "uttt")], ["m-old"])

    async def test_migrations_are_idempotent(self):
        store = await self.open()
        await store.close()
        again = await self.open()
        await again.start()  # a second start on an open store changes nothing either
        applied = await again.run(applied_migrations)
        self.assertEqual(applied, sorted(m.id for m in MIGRATIONS))
        self.assertEqual(await again.run(count_rows, "users"), 0)

    async def test_users_round_trip_with_real_booleans(self):
        store = await self.open()
        row = await store.run(account_queries.insert_user, "alice", "hash", False, 10.5)
        user_id, name, password_hash, temporary, created, last_seen = row
        self.assertEqual((name, password_hash, created, last_seen), ("alice", "hash", 10.5, 10.5))
        self.assertIs(temporary, False)
        temp = await store.run(account_queries.insert_user, "bob", None, True, 11.0)
        self.assertIs(temp[3], True)
        self.assertEqual(await store.run(account_queries.user_by_name, "alice"), row)
        self.assertIsNone(await store.run(account_queries.user_by_name, "carol"))

    async def test_duplicate_user_is_a_conflict(self):
        store = await self.open()
        await store.run(account_queries.insert_user, "alice", "h", False, 1.0)
        with self.assertRaises(Conflict):
            await store.run(account_queries.insert_user, "alice", "h2", False, 2.0)

    async def test_sessions_resume_and_expire(self):
        store = await self.open()
        user = await store.run(account_queries.insert_user, "alice", "h", False, 100.0)
        await store.run(account_queries.insert_session, "tok", user[0], False, 100.0)
        with self.assertRaises(Conflict):
            await store.run(account_queries.insert_session, "tok", user[0], False, 100.0)
        resumed = await store.run(account_queries.resume_session, "tok", 150.0, 100.0, 10.0)
        self.assertEqual(resumed[:2], (user[0], "alice"))
        self.assertEqual(resumed[5], 150.0)  # last_seen moved on
        self.assertIsNone(
            await store.run(account_queries.resume_session, "tok", 251.0, 100.0, 10.0))
        removed = await store.run(account_queries.expire, 251.0, 1000.0, 100.0, 10.0)
        self.assertEqual(removed, (1, 0))
        removed = await store.run(account_queries.expire, 1151.0, 1000.0, 100.0, 10.0)
        self.assertEqual(removed, (0, 1))
        self.assertEqual(await store.run(count_rows, "users"), 0)

    async def test_events_append_and_select(self):
        store = await self.open()
        rows = [(float(i), "eot" if i % 2 else "vr", "move", f"u{i}", "r1", None, "127.0.0.1",
                 json.dumps({"i": i})) for i in range(1200)]
        self.assertEqual(await store.run(event_queries.append_events, rows), 1200)
        page = await store.run(select_events, source="eot", limit=3)
        self.assertEqual([row[1:] for row in page], rows[1:7:2])
        later = await store.run(select_events, after_id=page[-1][0], since=1000.0,
                                kinds=("move",), room="r1", limit=5000)
        self.assertEqual(len(later), 200)
        self.assertEqual(later[0][1:], rows[1000])

    async def test_matches_round_trip(self):
        store = await self.open()
        alice = await store.run(account_queries.insert_user, "alice", "h", False, 1.0)
        seats = [(0, alice[0], "alice"), (1, None, "guest")]
        await store.run(match_queries.insert_match, "m1", "TicTacToe", "eot", '{"s": 1}', True,
                        False, 5.0, seats)
        with self.assertRaises(Conflict):
            await store.run(match_queries.insert_match, "m1", "TicTacToe", "eot", "{}", False,
                            False, 5.0, seats)
        [match] = await store.run(match_queries.open_matches, "eot")
        self.assertEqual(match, ("m1", "TicTacToe", '{"s": 1}', True, 5.0, 5.0, seats))
        self.assertIs(match[3], True)
        await store.run(match_queries.update_matches, [('{"s": 2}', True, 6.0, "m1")])
        self.assertEqual(await store.run(match_queries.open_matches, "eot"), [])
        await store.run(delete_match, "m1")     # a match's players go with it
        self.assertEqual(await store.run(count_rows, "match_players"), 0)

    async def test_failed_transaction_rolls_back(self):
        store = await self.open()
        with self.assertRaises(StoreError) as caught:
            await store.run(insert_then_fail, "alice")
        self.assertNotIsInstance(caught.exception, Conflict)
        self.assertEqual(await store.run(count_rows, "users"), 0)

    async def test_event_log_batches(self):
        store = await self.open()
        log = EventLog(store, reactor, flush_delay=0.01, batch_size=100)
        log.startService()
        for i in range(250):
            log.record("uttt", "move", user="alice", match="m", data={"n": i}, time=float(i))
        await log.flush()
        await log.stopService()
        self.assertEqual(log.written, 250)
        rows = await store.run(select_events)
        self.assertEqual([json.loads(row[8])["n"] for row in rows], list(range(250)))

    async def test_unencodable_text_is_unstorable(self):
        store = await self.open()
        for bad in (f"a{SURROGATE}b", f"a{NUL}b"):
            if self.storable(bad):
                row = await store.run(account_queries.insert_user, bad, None, False, 1.0)
                self.assertEqual(await store.run(account_queries.user_by_name, bad), row)
                continue
            for function, *args in (
                    (account_queries.insert_user, bad, None, False, 1.0),
                    (account_queries.user_by_name, bad),
                    (event_queries.append_events, [event_row(1, room=bad)])):
                with self.assertRaises(Unstorable) as caught:
                    await store.run(function, *args)
                self.assertNotIsInstance(caught.exception, StoreUnavailable)
        with self.assertRaises(Unstorable):
            await store.run(account_queries.insert_user, "big", None, False, 10 ** 400)
        # Nothing half-done stays behind, and the store carries on.
        self.assertEqual(await store.run(count_rows, "events"), 0)
        await store.run(account_queries.insert_user, "alice", None, False, 1.0)

    async def test_poisoned_event_log_keeps_recording_in_order(self):
        """Every text column of an event, poisoned with each unstorable
        character, amid good events: the good ones are all stored in order,
        the bad ones stand in as unstorable_event with their exact values."""
        store = await self.open()
        log = EventLog(store, reactor, flush_delay=0.01, batch_size=64)
        log.startService()
        expected, n = [], 0
        for bad in (SURROGATE, NUL):
            for column in EVENT_TEXT_COLUMNS:
                for _good in range(5):
                    n += 1
                    expected.append(event_row(n))
                n += 1
                expected.append(event_row(n, **{column: f"x{bad}y"}))
        for row in expected:
            time, source, kind, user, room, match, address, data = row
            log.record(source, kind, user=user, room=room, match=match, address=address,
                       data=data, time=time)
        await log.flush()
        for n in range(len(expected) + 1, len(expected) + 11):  # later events still go in
            expected.append(event_row(n))
            log.record("vr", "chat", user=f"user{n}", room="lobby", match=f"m{n}",
                       address="127.0.0.1", data=json.dumps({"n": n}), time=float(n))
        await log.stopService()  # a clean stop writes everything still buffered

        stored = [row[1:] for row in await store.run(all_events)]
        self.assertEqual(len(stored), len(expected))
        refused = 0
        for want, got in zip(expected, stored, strict=True):
            if all(self.storable(value) for value in want[1:]):
                self.assertEqual(got, want)
                continue
            refused += 1
            self.assertEqual(got[0], want[0])
            self.assertEqual(got[2], UNSTORABLE_KIND)
            details = json.loads(got[7])
            original = dict(zip(EVENT_TEXT_COLUMNS, want[1:], strict=True))
            self.assertEqual(details["original"], original)
            self.assertIn("cannot store", details["error"])
            for value in got[1:]:
                self.assertTrue(self.storable(value))
        self.assertEqual(refused, 14 if not self.stores_nul else 7)
        self.assertEqual((log.refused, log.lost, log.written), (refused, 0, len(expected)))
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    async def test_event_with_a_value_of_no_column_type_stands_in(self):
        """A caller's bug (a dict where text belongs) cannot stop the log either."""
        store = await self.open()
        log = EventLog(store, reactor, flush_delay=0.01)
        log.startService()
        log.record("vr", "chat", room="lobby", data="before", time=1.0)
        log.record("vr", "chat", room={"not": "text"}, data="bad", time=2.0)  # type: ignore
        log.record("vr", "chat", room="lobby", data="after", time=3.0)
        await log.stopService()
        rows = [row[1:] for row in await store.run(all_events)]
        self.assertEqual([(row[0], row[2], row[7]) for row in rows[::2]],
                         [(1.0, "chat", "before"), (3.0, "chat", "after")])
        self.assertEqual((rows[1][0], rows[1][2]), (2.0, UNSTORABLE_KIND))
        self.assertEqual(rows[1][4], "{'not': 'text'}")
        self.assertEqual(json.loads(rows[1][7])["original"]["room"], {"not": "text"})
        self.assertEqual((log.refused, log.lost), (1, 0))

    async def test_event_log_outage_is_logged_once(self):
        real = await self.open()
        log = EventLog(FailingAt(real, {1, 2, 3, 4}), reactor, flush_delay=0.01)
        logged = []
        log.log = Logger(observer=logged.append)
        log.startService()
        for n in range(5):
            log.record("vr", "chat", data=str(n), time=float(n))
        for _attempt in range(5):
            await log.flush()
        await log.stopService()
        self.assertEqual(log.written, 5)
        self.assertEqual([event["log_level"].name for event in logged], ["warn", "info"])
        self.assertIn("retrying", logged[0]["log_format"])
        self.assertIn("writing again", logged[1]["log_format"])

    async def test_poisoned_event_log_survives_an_outage_while_splitting(self):
        """The store goes away in the middle of the split: nothing is lost or
        reordered, and the rest is written once it is back."""
        real = await self.open()
        rows = [event_row(n, user_name=f"bad{SURROGATE}") if n == 6 else event_row(n)
                for n in range(10)]
        for failing in ({2}, {3}, {4, 5}, {7}):
            await real.run(delete_events)
            store = FailingAt(real, failing)
            log = EventLog(store, reactor, flush_delay=0.01, batch_size=100)
            log.startService()
            for row in rows:
                time, source, kind, user, room, match, address, data = row
                log.record(source, kind, user=user, room=room, match=match, address=address,
                           data=data, time=time)
            while log._buffer or log._writing:
                await log.flush()
            await log.stopService()
            stored = [row[1:] for row in await real.run(all_events)]
            self.assertEqual([row[0] for row in stored], [float(n) for n in range(10)])
            self.assertEqual(stored[:6] + stored[7:], rows[:6] + rows[7:])
            self.assertEqual(stored[6][2], UNSTORABLE_KIND)
            self.assertEqual((log.refused, log.written), (1, 10))

    async def test_close_waits_for_in_flight_writes(self):
        store = open_store(self.url, reactor)
        await store.start()
        writes = [store.run(account_queries.insert_user, f"user{i}", None, False, 1.0)
                  for i in range(50)]
        await store.close()
        self.assertTrue(all(write.called for write in writes))
        await gatherResults(writes)
        with self.assertRaises(StoreUnavailable):
            await store.run(count_rows, "users")
        reopened = await self.open()
        self.assertEqual(await reopened.run(count_rows, "users"), 50)


class SQLiteStoreTests(StoreTestsMixin, unittest.TestCase):
    stores_nul = True

    def make_url(self) -> str:
        return sqlite_url(self)

    async def test_memory_database(self):
        store = await self.open("sqlite::memory:")
        await store.run(account_queries.insert_user, "alice", None, True, 1.0)
        self.assertEqual(await store.run(count_rows, "users"), 1)

    def lock_database(self) -> sqlite3.Connection:
        """Another connection (as another process would) holding the write lock."""
        other = sqlite3.connect(self.url[len("sqlite:"):], isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN EXCLUSIVE")
        return other

    async def test_locked_by_another_connection_is_unavailable(self):
        store = await self.open()
        await store.run(set_busy_timeout, 20)
        other = self.lock_database()
        with self.assertRaises(StoreUnavailable) as caught:
            await store.run(account_queries.insert_user, "alice", None, False, 1.0)
        self.assertIn("database is locked", str(caught.exception))
        other.execute("ROLLBACK")
        await store.run(account_queries.insert_user, "alice", None, False, 1.0)

    async def test_stuck_database_thread_times_out_and_abandons_work(self):
        """The database thread waits for another connection's lock: every
        caller, queued ones included, gets StoreUnavailable at the time limit,
        and none of the abandoned writes is committed once the lock is free."""
        store = open_store(self.url, reactor, timeout=0.2)
        await store.start()
        self.addCleanup(store.close)
        other = self.lock_database()
        writes = [store.run(account_queries.insert_user, f"user{i}", None, False, 1.0)
                  for i in range(5)]
        for write in writes:
            with self.assertRaises(StoreUnavailable) as caught:
                await write
            self.assertIn("did not answer within 0.2 s", str(caught.exception))
        other.execute("ROLLBACK")
        await store.run(account_queries.insert_user, "after", None, False, 1.0)
        self.assertEqual(await store.run(count_rows, "users"), 1)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    async def test_a_long_statement_is_interrupted_at_the_time_limit(self):
        store = open_store(self.url, reactor, timeout=0.2)
        await store.start()
        self.addCleanup(store.close)
        with self.assertRaises(StoreUnavailable):
            await store.run(count_to, 10 ** 12)  # hours of work if left running
        # The database thread is free again: the next transaction gets its turn.
        store.timeout = 5.0
        self.assertEqual(await store.run(count_to, 10), 10)

    async def test_unopenable_file_fails_start(self):
        store = open_store("sqlite:/nonexistent-dir/x.sqlite", reactor)
        with self.assertRaises(StoreError):
            await store.start()
        await store.close()


class PostgresStoreTests(StoreTestsMixin, unittest.TestCase):
    def make_url(self) -> str:
        return postgres_url(self)

    def test_password_never_described(self):
        store = open_store("postgresql://game:s3cret@127.0.0.1:5432/gt", reactor)
        self.assertEqual(store.describe(), "postgresql://game:***@127.0.0.1:5432/gt")

    async def test_unreachable_at_start(self):
        store = open_store("postgresql://game:s3cret@127.0.0.1:1/gt", reactor)
        with self.assertRaises(StoreUnavailable) as caught:
            await store.start()
        message = str(caught.exception)
        self.assertIn("cannot connect to postgresql://game:***@127.0.0.1:1/gt", message)
        self.assertNotIn("s3cret", message)
        self.assertNotIn("\n", message)
        await store.close()


class PostgresLostTests(unittest.TestCase):
    """The database server goes away while the store is running, then returns."""

    async def test_fails_fast_then_recovers(self):
        cluster = private_cluster(self)
        store = open_store(cluster.create_database(), reactor)
        store.retry_delay = 0.2
        await store.start()
        self.addCleanup(store.close)
        await gatherResults([store.run(account_queries.insert_user, f"u{i}", None, False, 1.0)
                             for i in range(8)])  # several pooled connections are open

        await cluster.stop_later()
        for _ in range(3):
            with self.assertRaises(StoreUnavailable):
                await store.run(count_rows, "users")

        await cluster.start_later()
        await _sleep(0.3)  # past the retry delay
        self.assertEqual(await store.run(count_rows, "users"), 8)
        results = await gatherResults([store.run(count_rows, "users") for _ in range(8)])
        self.assertEqual(results, [8] * 8)


class PostgresFrozenTests(unittest.TestCase):
    """The database server stops answering (SIGSTOP on every server process,
    as a hung host or a network partition looks): no request hangs."""

    async def test_times_out_then_recovers(self):
        cluster = private_cluster(self)
        store = open_store(cluster.create_database(), reactor, timeout=0.5)
        store.retry_delay = 0.2
        await store.start()
        self.addCleanup(store.close)
        await gatherResults([store.run(account_queries.insert_user, f"u{i}", None, False, 1.0)
                             for i in range(8)])  # several pooled connections are open

        cluster.freeze()
        self.addCleanup(cluster.thaw)
        for _round in range(2):  # pooled connections, then new ones, then fail-fast
            requests = [store.run(account_queries.insert_user, f"frozen{i}", None, False, 1.0)
                        for i in range(10)] + [store.run(count_rows, "users")]
            for request in requests:
                with self.assertRaises(StoreUnavailable):
                    await request

        cluster.thaw()
        self.assertEqual(await _when_available(store, count_rows, "users"), 8)
        results = await gatherResults([store.run(count_rows, "users") for _ in range(8)])
        self.assertEqual(results, [8] * 8)  # every write that timed out was rolled back
        await store.run(account_queries.insert_user, "after", None, False, 1.0)
        self.assertEqual(await store.run(count_rows, "users"), 9)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    test_times_out_then_recovers.timeout = 60  # type: ignore[attr-defined]


async def _when_available(store, function, *args, attempts: int = 100):
    """The result of the first attempt that finds the store available (a
    bounded wait for a failing test; a passing one waits only what it needs)."""
    for _attempt in range(attempts):
        try:
            return await store.run(function, *args)
        except StoreUnavailable:
            await _sleep(0.1)
    raise AssertionError("the store did not become available again")


def _sleep(seconds: float):
    from twisted.internet.task import deferLater
    return deferLater(reactor, seconds, lambda: None)
