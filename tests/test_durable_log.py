"""Events whose effect clients see are stored before they see it: the log's
group commit (``EventLog.stored``), the VR rooms' delivery gate, and
ultimate tic-tac-toe's moves. In memory: a held store decides when each
write of the log commits, and what the clients hold is asserted after the
connections went quiet."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from gtserver.core.events import DeliveryGate, EventLog
from gtserver.store import StoreUnavailable
from tests.memory import MemoryDaemon
from tests.test_uttt import move_frame
from tests.test_uttt_memory import challenge, login
from tests.test_vr_memory import VRMemoryTestCase


class HeldWrites:
    """The log's store: each transaction waits until the test commits it."""

    def __init__(self, store: Any = None) -> None:
        self.store = store
        self.calls: list[tuple[Any, tuple, Deferred]] = []

    def run(self, function: Any, *args: Any) -> Deferred:
        d: Deferred = Deferred()
        self.calls.append((function, args, d))
        return d

    def commit(self, index: int = 0) -> None:
        function, args, d = self.calls.pop(index)
        if self.store is None:
            d.callback(len(args[0]))
        else:
            self.store.run(function, *args).chainDeferred(d)

    def commit_all(self) -> None:
        while self.calls:
            self.commit()


class StoredTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = HeldWrites()
        self.log = EventLog(self.store, self.clock)

    def record(self, kind: str) -> None:
        self.log.record("test", kind, user="u")

    def test_nothing_recorded_is_stored_at_once(self):
        self.assertTrue(self.successResultOf(self.log.stored()))

    def test_the_events_of_one_turn_are_one_transaction(self):
        self.record("a")
        first = self.log.stored()
        self.record("b")
        second = self.log.stored()
        self.assertEqual(self.store.calls, [])  # written at the end of the turn
        self.clock.advance(0)
        self.assertEqual(len(self.store.calls), 1)
        self.assertEqual([row[2] for row in self.store.calls[0][1][0]], ["a", "b"])
        self.assertNoResult(first)
        self.store.commit()
        self.assertTrue(self.successResultOf(first))
        self.assertTrue(self.successResultOf(second))

    def test_events_recorded_during_a_write_wait_for_the_next(self):
        self.record("a")
        first = self.log.stored()
        self.clock.advance(0)
        self.record("b")
        second = self.log.stored()
        self.clock.advance(0)
        self.assertEqual(len(self.store.calls), 1)  # one write at a time
        self.store.commit()
        self.successResultOf(first)
        self.assertNoResult(second)
        self.clock.advance(0)
        self.assertEqual([row[2] for row in self.store.calls[0][1][0]], ["b"])
        self.store.commit()
        self.assertTrue(self.successResultOf(second))

    def test_an_unavailable_store_releases_the_waiters_unfulfilled(self):
        self.record("a")
        waiting = self.log.stored()
        self.clock.advance(0)
        self.store.calls.pop()[2].errback(StoreUnavailable("down"))
        self.assertFalse(self.successResultOf(waiting))
        self.record("b")
        self.assertFalse(self.successResultOf(self.log.stored()))  # at once while down
        self.assertEqual(self.log.backlog, 2)  # kept for the retry


class DeliveryGateTests(unittest.TestCase):
    def test_output_waits_behind_each_barrier_in_order(self):
        gate, sent = DeliveryGate(), []
        gate.send(sent.append, 1)
        first, second = Deferred(), Deferred()
        gate.hold(first)
        self.assertTrue(gate.send(sent.append, 2))
        gate.hold(second)
        gate.send(sent.append, 3)
        self.assertEqual(sent, [1])
        second.callback(True)  # a later barrier alone releases nothing
        self.assertEqual(sent, [1])
        first.callback(True)
        self.assertEqual(sent, [1, 2, 3])
        self.assertFalse(gate.holding)


class VRChatDurableTests(VRMemoryTestCase):
    async def test_a_chat_line_is_stored_before_anyone_sees_it(self):
        await self.start()
        alice, bob = await self.client("alice"), await self.client("bob")
        alice.pending()  # bob's join
        log = self.core.events
        held = HeldWrites(log.store)
        log.store = held
        alice.say("lobby", "msg", "hello")
        await self.quiet(alice, bob)          # nobody, the sender included
        self.assertEqual(len(held.calls), 1)
        self.assertIn("hello", repr(held.calls[0][1][0]))
        carol = self.server.connect("vr", type(alice))
        carol.send({"system": "login", "options": {"user": "carol", "pass": "secret"}})
        await self.quiet(alice, bob, carol)   # what comes after waits too
        held.commit_all()
        log.store = held.store
        for client in (alice, bob):
            frames = client.pending()
            payloads = [entry for frame in frames for entry in frame.get("payload", [])]
            self.assertEqual([(entry["user"], entry["type"]) for entry in payloads],
                             [("alice", "msg"), ("carol", "join")])
        self.assertEqual((await carol.reply())["code"], 202)


class UtttMoveDurableTests(unittest.TestCase):
    async def test_a_move_is_stored_in_the_log_before_the_players_are_told(self):
        server = MemoryDaemon(self)
        (alice, _), (bob, _) = [await login(self, server, name) for name in ("alice", "bob")]
        match_id = (await challenge(self, alice, bob, "bob"))["id"]
        log = server.core.events
        held = HeldWrites(log.store)
        log.store = held
        alice.send("move", move_frame(match_id, (0, 0, 1, 1)))
        self.assertEqual((alice.pending(), bob.pending()), ([], []))
        moves = [row for _f, args, _d in held.calls for row in args[0] if row[2] == "move"]
        self.assertEqual(len(moves), 1)
        held.commit_all()
        log.store = held.store
        update = await alice.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), update)
