"""Leases (gtserver/core/leases.py) on a real PostgreSQL database: the same
checks as tests/test_cluster_core.py's in-memory ones, with each node's own
store on one database and the lease times on a test clock."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.trial import unittest

from gtserver.core.leases import Leases
from gtserver.store import open_store
from tests.memory import START
from tests.pgcluster import postgres_url

TTL, RENEW = 5.0, 1.0


class PostgresLeaseTests(unittest.TestCase):
    timeout = 60

    async def start(self) -> None:
        self.url = postgres_url(self)
        self.clock = Clock()
        self.clock.advance(START)
        self.leases: dict[str, Leases] = {}
        for node in ("a", "b"):
            store = open_store(self.url, reactor)
            await store.start()
            self.addCleanup(store.close)
            self.leases[node] = Leases(store, self.clock, node, ttl=TTL, renew=RENEW)

    def setUp(self) -> Deferred:
        return Deferred.fromCoroutine(self.start())

    async def test_one_holder_at_a_time(self):
        a, b = self.leases["a"], self.leases["b"]
        self.assertEqual(await a.claim("room:x"), "a")
        self.assertEqual(await b.claim("room:x"), "a")
        self.assertEqual(await a.claim("room:x"), "a")  # again: still a's
        self.assertEqual(await b.holder("room:x"), "a")
        self.assertIsNone(await b.holder("room:y"))
        self.assertEqual(a.held, {"room:x"})
        self.assertEqual(b.held, set())

    async def test_claims_at_once_have_one_winner(self):
        a, b = self.leases["a"], self.leases["b"]
        claims = [leases.claim(f"room:{i % 5}") for i in range(40) for leases in (a, b)]
        holders = await gatherResults(claims)
        for room in range(5):
            winners = {holders[2 * i + side] for i in range(40) if i % 5 == room
                       for side in (0, 1)}
            self.assertEqual(len(winners), 1, winners)

    async def test_an_expired_lease_is_taken_over_and_its_holder_told(self):
        a, b = self.leases["a"], self.leases["b"]
        lost = []
        a.on_lost(lost.append)
        await a.claim("room:x")
        self.clock.advance(TTL - 0.5)
        self.assertEqual(await b.claim("room:x"), "a")
        self.clock.advance(1.0)
        self.assertIsNone(await b.holder("room:x"))
        self.assertEqual(await b.claim("room:x"), "b")
        await a.check()
        self.assertEqual(lost, ["room:x"])
        self.assertNotIn("room:x", a.held)
        self.assertEqual(await a.holder("room:x"), "b")

    async def test_renewal_keeps_a_lease(self):
        a, b = self.leases["a"], self.leases["b"]
        await a.claim("room:x")
        for _ in range(10):
            self.clock.advance(RENEW)
            await a.check()
        self.assertEqual(await b.claim("room:x"), "a")

    async def test_live_nodes_and_a_node_that_stops_renewing(self):
        a, b = self.leases["a"], self.leases["b"]
        gone = []
        b.on_node_gone(gone.append)
        await a.check()
        await b.check()
        self.assertEqual((a.nodes, b.nodes), ({"a"}, {"a", "b"}))  # a checked before b came
        await a.check()
        self.assertEqual(a.nodes, {"a", "b"})
        self.assertTrue(b.alive("a"))
        for _ in range(int(TTL) + 1):  # a is killed: only b renews
            self.clock.advance(RENEW)
            await b.check()
        self.assertEqual(gone, ["a"])
        self.assertEqual(b.nodes, {"b"})

    async def test_holders_by_prefix_and_release(self):
        a, b = self.leases["a"], self.leases["b"]
        await gatherResults([a.claim("vr-room:one"), b.claim("vr-room:two"),
                             a.claim("uttt-queue"), b.claim("vr-roomy")])
        self.assertEqual(await a.holders("vr-room:"),
                         [("vr-room:one", "a"), ("vr-room:two", "b")])
        await b.release("vr-room:one")  # not b's: left alone
        await a.release("vr-room:one")
        self.assertEqual(await b.claim("vr-room:one"), "b")

    async def test_stopping_releases_every_lease(self):
        a, b = self.leases["a"], self.leases["b"]
        await a.check()  # as the service does when it starts, and every RENEW seconds
        await a.claim("room:x")
        self.assertEqual(await b.holder("node:a"), "a")
        await a.stopService()
        self.assertEqual(await b.claim("room:x"), "b")
        self.assertIsNone(await b.holder("node:a"))
