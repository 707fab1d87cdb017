"""The bus over PostgreSQL LISTEN/NOTIFY (gtserver/store/notify.py): several
nodes' buses in this process, each with its own store, on one database of
the test cluster."""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from gtserver.core.bus import IBus
from gtserver.store import open_store
from gtserver.store.base import Statement
from gtserver.store.notify import BROADCAST, MAX_PAYLOAD, channel_of, encode, pack
from tests.nodes import eventually
from tests.pgcluster import postgres_url


def count_stored():
    rows = yield Statement("SELECT COUNT(*) FROM bus_messages")
    return rows[0][0]


def terminate(pid: int):
    yield Statement("SELECT pg_terminate_backend(?)", (pid,))


class Inbox:
    """What one node's bus delivered: (sender, topic, body) in order."""

    def __init__(self, bus, topics=("t",)) -> None:
        self.received: list[tuple[str, str, object]] = []
        for topic in topics:
            bus.subscribe(topic, lambda sender, body, topic=topic:
                          self.received.append((sender, topic, body)))

    def bodies(self, sender: str | None = None) -> list:
        return [body for who, _topic, body in self.received if sender in (None, who)]

    def has(self, count: int):
        return lambda: len(self.received) >= count


class PackingTests(unittest.TestCase):
    """How messages become notifications (no database needed)."""

    SENDER = encode("a")

    def test_one_channel_fills_notifications_in_order(self):
        texts = [encode(["t", "x" * 100 + str(i)]) for i in range(200)]
        notifications, rows = pack([("c1", text) for text in texts], self.SENDER)
        self.assertEqual(rows, [])
        self.assertGreater(len(notifications), 1)
        self.assertEqual([item for n in notifications for item in n.items], texts)
        for number, notification in enumerate(notifications):
            payload = notification.payload(self.SENDER, 10 ** 19 + number)
            self.assertLessEqual(len(payload.encode()), MAX_PAYLOAD)
            self.assertEqual(json.loads(payload)["s"], "a")

    def test_a_broadcast_between_two_messages_keeps_them_apart(self):
        outgoing = [("b", "1"), ("c", "2"), (BROADCAST, "3"), ("b", "4"), ("c", "5"),
                    (BROADCAST, "6"), (BROADCAST, "7"), ("b", "8")]
        notifications, _rows = pack(outgoing, self.SENDER)
        self.assertEqual([(n.channel, n.items) for n in notifications],
                         [("b", ["1"]), ("c", ["2"]), (BROADCAST, ["3"]), ("b", ["4"]),
                          ("c", ["5"]), (BROADCAST, ["6", "7"]), ("b", ["8"])])

    def test_direct_messages_to_other_nodes_do_not_split_a_notification(self):
        notifications, _rows = pack([("b", "1"), ("c", "2"), ("b", "3")], self.SENDER)
        self.assertEqual([(n.channel, n.items) for n in notifications],
                         [("b", ["1", "3"]), ("c", ["2"])])

    def test_a_message_too_large_is_a_row(self):
        large = encode(["t", "é" * MAX_PAYLOAD])  # 6 bytes each as ASCII JSON
        notifications, rows = pack([("b", "1"), ("b", large), ("b", "3")], self.SENDER)
        [(row_id, channel, text)] = rows
        self.assertEqual((channel, text), ("b", large))
        self.assertEqual([(n.channel, n.items) for n in notifications],
                         [("b", ["1", encode({"r": row_id}), "3"])])

    def test_channels_are_identifiers(self):
        for name in ("a", "Node 1", "ü" * 300, "x; DROP TABLE users"):
            channel = channel_of(name)
            self.assertRegex(channel, r"^gtserver_[0-9a-f]{24}$")
        self.assertNotEqual(channel_of("a"), channel_of("b"))


class PostgresBusTests(unittest.TestCase):
    timeout = 60

    async def start_buses(self) -> None:
        self.url = postgres_url(self)
        self.buses = {}
        for node in ("a", "b", "c"):
            self.buses[node] = await self.start_bus(node)

    def setUp(self) -> Deferred:
        return Deferred.fromCoroutine(self.start_buses())

    async def start_bus(self, node: str, **settings):
        store = open_store(self.url, reactor)
        await store.start()
        self.addCleanup(store.close)
        bus = store.bus(node)
        for name, value in settings.items():
            setattr(bus, name, value)
        bus.startService()
        self.addCleanup(lambda: bus.stopService() if bus.running else None)
        await bus.whenStarted()
        return bus

    def logged(self) -> list[str]:
        """The bus's log messages from now on."""
        messages: list[str] = []

        def observe(event):
            if "PostgresBus" in event.get("log_namespace", ""):
                from twisted.logger import formatEvent
                messages.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return messages

    def test_it_is_a_bus(self):
        self.assertTrue(IBus.providedBy(self.buses["a"]))
        self.assertEqual(self.buses["a"].node, "a")

    async def test_messages_of_one_turn_are_one_statement_in_order(self):
        a, b = self.buses["a"], self.buses["b"]
        inbox = Inbox(b)
        for i in range(1000):
            a.send("b", "t", {"i": i, "text": "hello"})
        await eventually(inbox.has(1000))
        self.assertEqual(inbox.bodies("a"), [{"i": i, "text": "hello"} for i in range(1000)])
        self.assertEqual(a.stats["statements"], 1)
        self.assertLessEqual(a.stats["notifications"], 5)  # ~27 bytes each, 7,900 a notification
        self.assertEqual(a.stats["messages"], 1000)

    async def test_messages_sent_while_a_statement_is_on_its_way_go_in_the_next(self):
        a, b = self.buses["a"], self.buses["b"]
        inbox = Inbox(b)
        for turn in range(50):
            for i in range(10):
                a.send("b", "t", turn * 10 + i)
            await deferLater(reactor, 0, lambda: None)
        await eventually(inbox.has(500))
        self.assertEqual(inbox.bodies(), list(range(500)))
        self.assertLessEqual(a.stats["statements"], 50)

    async def test_large_and_small_messages_keep_their_order(self):
        a, b = self.buses["a"], self.buses["b"]
        inbox = Inbox(b)
        large = "ü" * 20_000
        bodies = ["first", large + "1", "second", {"k": large + "2"}, "third"]
        for body in bodies:
            a.send("b", "t", body)
        await deferLater(reactor, 0, lambda: None)
        a.send("b", "t", "fourth")  # small, in a later statement
        await eventually(inbox.has(6))
        self.assertEqual(inbox.bodies(), [*bodies, "fourth"])
        self.assertEqual(a.stats["stored"], 2)
        self.assertEqual(await a.store.run(count_stored), 0)  # deleted once read

    async def test_order_holds_from_each_sender_with_many_large_messages(self):
        a, b, c = self.buses["a"], self.buses["b"], self.buses["c"]
        inbox = Inbox(c)
        for turn in range(20):
            for sender in (a, b):
                sender.send("c", "t", [sender.node, turn, "x" * (9000 if turn % 3 else 10)])
            await deferLater(reactor, 0, lambda: None)
        await eventually(inbox.has(40))
        for sender in ("a", "b"):
            self.assertEqual([body[1] for body in inbox.bodies(sender)], list(range(20)))

    async def test_broadcast_reaches_every_other_node_in_order_with_direct_messages(self):
        a = self.buses["a"]
        inboxes = {node: Inbox(bus) for node, bus in self.buses.items()}
        a.send("b", "t", 1)
        a.broadcast("t", 2)
        a.send("b", "t", 3)
        a.broadcast("t", {"large": "y" * 10_000})
        a.send("c", "t", 5)
        await eventually(inboxes["b"].has(4))
        await eventually(inboxes["c"].has(3))
        self.assertEqual(inboxes["b"].bodies(), [1, 2, 3, {"large": "y" * 10_000}])
        self.assertEqual(inboxes["c"].bodies(), [2, {"large": "y" * 10_000}, 5])
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(inboxes["a"].received, [])  # not to itself

    async def test_stored_broadcasts_are_pruned(self):
        await self.buses["a"].stopService()
        a = await self.start_bus("a2", keep_stored=0.4)
        inbox = Inbox(self.buses["b"])
        a.broadcast("t", "z" * 10_000)
        await eventually(inbox.has(1))
        self.assertEqual(await a.store.run(count_stored), 1)  # others may not have read it
        await eventually(lambda: a.store.run(count_stored).addCallback(lambda n: n == 0))

    async def test_to_itself_on_a_later_turn(self):
        a = self.buses["a"]
        inbox = Inbox(a)
        a.send("a", "t", (1, 2))
        self.assertEqual(inbox.received, [])
        await eventually(inbox.has(1))
        self.assertEqual(inbox.received, [("a", "t", [1, 2])])  # as JSON, as from elsewhere
        self.assertEqual(a.stats["statements"], 0)

    def test_a_body_that_is_not_json_is_refused_at_once(self):
        for node in ("a", "b"):
            self.assertRaises(TypeError, self.buses["a"].send, node, "t", object())
        self.assertRaises(TypeError, self.buses["a"].broadcast, "t", {1, 2})

    async def test_unknown_topics_and_failing_handlers_do_not_stop_delivery(self):
        a, b = self.buses["a"], self.buses["b"]
        inbox = Inbox(b)
        b.subscribe("boom", lambda sender, body: 1 / 0)
        a.send("b", "nobody", 0)
        a.send("b", "boom", 0)
        a.send("b", "t", "after")
        await eventually(inbox.has(1))
        self.assertEqual(inbox.bodies(), ["after"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def test_listening_again_after_the_backend_is_terminated(self):
        a, b = self.buses["a"], self.buses["b"]
        messages = self.logged()
        inbox = Inbox(b)
        old = b._listener.get_backend_pid()
        await a.store.run(terminate, old)
        await eventually(lambda: b._listener is not None and b._listener.get_backend_pid() != old)
        a.send("b", "t", "after")
        await eventually(inbox.has(1))
        self.assertEqual(inbox.bodies(), ["after"])
        lost = [m for m in messages if "listening connection lost" in m]
        self.assertEqual(len(lost), 1, messages)
        self.assertIn("listening connection lost (server closed the connection", lost[0])
        self.assertEqual(len([m for m in messages if "listening again after" in m]), 1)

    async def test_listening_again_after_an_outage_with_one_warning(self):
        a, b = self.buses["a"], self.buses["b"]
        b.reconnect_delays = (0.0, 0.05)
        messages = self.logged()
        # the listening connection is refused a few times: another database name
        dsn, b.store.dsn = b.store.dsn, b.store.dsn.replace("dbname='", "dbname='missing_")
        await a.store.run(terminate, b._listener.get_backend_pid())
        await deferLater(reactor, 0.5, lambda: None)
        self.assertIsNone(b._listener)
        b.store.dsn = dsn
        await eventually(lambda: b._listener is not None)
        inbox = Inbox(b)
        a.send("b", "t", "back")
        await eventually(inbox.has(1))
        warnings = [m for m in messages if "lost" in m or "cannot" in m]
        self.assertEqual(len(warnings), 1, messages)

    async def test_sending_again_after_the_sending_backend_is_terminated(self):
        a, b = self.buses["a"], self.buses["b"]
        inbox = Inbox(b)
        a.send("b", "t", 1)
        await eventually(inbox.has(1))
        await b.store.run(terminate, a._sender.get_backend_pid())
        await eventually(lambda: a._sender.broken)
        a.send("b", "t", 2)
        await eventually(inbox.has(2))
        self.assertEqual(inbox.bodies(), [1, 2])

    async def test_stopping_sends_what_is_queued(self):
        a, b = self.buses["a"], self.buses["b"]
        inbox = Inbox(b)
        for i in range(10):
            a.send("b", "t", i)
        await a.stopService()
        self.assertIsNone(a._sender)
        await eventually(inbox.has(10))
        self.assertEqual(inbox.bodies(), list(range(10)))
        a.send("b", "t", "after")  # dropped: the bus has stopped
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(len(inbox.received), 10)
