"""Store errors as a client sees them, over a real uttt WebSocket.

Moves refused because the database is down (stopped) or frozen (no answer
within ``--db-timeout``) are answered with the match's unchanged state; the
log gets one warning line for each, never a traceback. An id the database
cannot hold (a lone surrogate, a NUL on PostgreSQL) names no match: the
client gets the protocol's error reply, neither an internal error nor a
database outage.
"""

from __future__ import annotations

from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from tests.pgcluster import postgres_url, private_cluster
from tests.support import sqlite_url
from tests.test_uttt import UtttTestMixin, challenge, move_frame, scripted_game


class UnstorableIdTestsMixin(UtttTestMixin):
    bad_ids: tuple[str, ...] = ("\ud800", "m\udfff")

    async def test_move_and_end_match_with_an_unstorable_id(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        update = await challenge(self, alice, bob, "bob")
        for bad_id in self.bad_ids:
            for kind, data in (("move", move_frame(bad_id, scripted_game("b")[0])),
                               ("end_match", {"id": bad_id})):
                alice.send(kind, data)
                reply = await alice.expect("error")
                self.assertNotIn("internal", reply["msg"])
                self.assertNotIn("database", reply["msg"])
        alice.send("move", move_frame(update["id"], scripted_game("b")[0]))
        self.assertEqual((await alice.expect("match_update"))["id"], update["id"])


class SQLiteUnstorableIdTests(UnstorableIdTestsMixin, unittest.TestCase):
    def setUp(self):
        self.db = sqlite_url(self)


class PostgresUnstorableIdTests(UnstorableIdTestsMixin, unittest.TestCase):
    bad_ids = ("\ud800", "m\udfff", "a\x00b")

    def setUp(self):
        self.db = postgres_url(self)


class OutageLogTests(UtttTestMixin, unittest.TestCase):
    def capture_log(self) -> list[dict]:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    async def refused_move_logs_one_warning(self, cluster, outage) -> None:
        await self.serve("--db-timeout", "0.5", db=cluster.create_database())
        self.server.store.retry_delay = 0.2
        alice, bob = await self.users("alice", "bob")
        update = await challenge(self, alice, bob, "bob")
        first_move = scripted_game("b")[0]

        await outage()
        logged = self.capture_log()
        for _attempt in range(3):
            alice.send("move", move_frame(update["id"], first_move))
            refused = await alice.expect("match_update")
            self.assertEqual(refused["match_state"], update["match_state"])

        tracebacks = [event for event in logged if "log_failure" in event]
        self.assertEqual(tracebacks, [], [event.get("log_format") for event in tracebacks])
        warnings = [event for event in logged if event.get("log_level") is not None
                    and event["log_level"].name == "warn" and "move" in event["log_format"]]
        self.assertEqual(len(warnings), 3, [event["log_format"] for event in logged])

    async def test_database_stopped(self):
        cluster = private_cluster(self)
        await self.refused_move_logs_one_warning(cluster, cluster.stop_later)

    async def test_database_frozen(self):
        cluster = private_cluster(self)
        self.addCleanup(cluster.thaw)

        async def freeze():
            cluster.freeze()

        await self.refused_move_logs_one_warning(cluster, freeze)

    test_database_frozen.timeout = 60  # type: ignore[attr-defined]
