"""The core of a deployment of several nodes, in memory: leases, the bus
and calls between nodes (tests/memory.py's MemoryDeployment)."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer

from gtserver.core import Core
from gtserver.core.bus import CallTimeout, IBus, MemoryBus, MemoryHub, NodeGone, RemoteError
from gtserver.core.errors import CoreError
from gtserver.core.settings import CoreSettings
from tests.memory import MemoryDeployment, SynchronousStore


class Refused(CoreError):
    """A served function's refusal."""


class LeaseTests(unittest.TestCase):
    def setUp(self):
        self.nodes = MemoryDeployment(self, ("a", "b"))

    def test_one_holder_at_a_time(self):
        a, b = self.nodes["a"].core.leases, self.nodes["b"].core.leases
        self.assertEqual(self.nodes["a"].result(a.claim("room:x")), "a")
        self.assertEqual(self.nodes["b"].result(b.claim("room:x")), "a")
        self.assertEqual(self.nodes["b"].result(b.holder("room:x")), "a")
        self.assertEqual(self.nodes["b"].result(b.holder("room:y")), None)

    def test_live_nodes_are_known_to_each(self):
        self.nodes.advance(1.0)
        self.assertEqual(self.nodes["a"].core.leases.nodes, {"a", "b"})
        self.assertEqual(self.nodes["b"].core.leases.nodes, {"a", "b"})

    def test_a_killed_node_loses_its_leases_after_the_ttl(self):
        b = self.nodes["b"].core.leases
        self.nodes["a"].result(self.nodes["a"].core.leases.claim("room:x"))
        gone = []
        b.on_node_gone(gone.append)
        self.nodes.advance(1.0)
        self.nodes.kill("a")
        self.nodes.advance(2.0)
        self.assertEqual(self.nodes["b"].result(b.claim("room:x")), "a")  # not yet expired
        for _ in range(5):
            self.nodes.advance(1.0)
        self.assertEqual(gone, ["a"])
        self.assertEqual(self.nodes["b"].result(b.claim("room:x")), "b")

    def test_a_stopped_node_releases_its_leases_at_once(self):
        self.nodes["a"].result(self.nodes["a"].core.leases.claim("room:x"))
        self.nodes["a"].result(self.nodes["a"].stop())
        b = self.nodes["b"].core.leases
        self.assertEqual(self.nodes["b"].result(b.claim("room:x")), "b")


class CallTests(unittest.TestCase):
    def setUp(self):
        self.nodes = MemoryDeployment(self, ("a", "b"))
        self.a, self.b = self.nodes["a"].core.calls, self.nodes["b"].core.calls

    def test_reply(self):
        self.a.serve("double", lambda sender, body: {"twice": body * 2, "from": sender})
        self.assertEqual(self.nodes["b"].result(self.b.call("a", "double", 21)),
                         {"twice": 42, "from": "b"})

    def test_refusal_reaches_the_caller_by_name(self):
        def refuse(sender, body):
            raise Refused("not today")
        self.a.serve("refuse", refuse)
        d = self.b.call("a", "refuse", None)
        self.nodes.flush()
        error = self.failureResultOf(d, RemoteError).value
        self.assertEqual((error.kind, str(error)), ("Refused", "not today"))

    def test_deferred_reply_and_cancellation(self):
        cancelled = []
        self.a.serve("wait", lambda sender, body: Deferred(cancelled.append))
        d = self.b.call("a", "wait", None)
        self.nodes.flush()
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.nodes.flush()
        self.assertEqual(len(cancelled), 1)

    def test_timeout(self):
        self.a.serve("wait", lambda sender, body: Deferred())
        d = self.b.call("a", "wait", None, timeout=3.0)
        self.nodes.advance(2.9)
        self.assertNoResult(d)
        self.nodes.advance(0.2)
        self.failureResultOf(d, CallTimeout)

    def test_calls_to_a_killed_node_fail_once_it_is_known_gone(self):
        self.a.serve("wait", lambda sender, body: Deferred())
        self.nodes.advance(1.0)
        d = self.b.call("a", "wait", None)
        self.nodes.flush()
        self.nodes.kill("a")
        for _ in range(7):
            self.nodes.advance(1.0)
        self.failureResultOf(d, NodeGone)


@implementer(IBus)
class ServiceBus(MemoryBus, Service):
    """A bus that is a service, as the PostgreSQL one is; says when it listens."""

    def __init__(self, hub: MemoryHub, node: str) -> None:
        MemoryBus.__init__(self, hub, node)
        self.listening: Deferred = Deferred()

    def whenStarted(self) -> Deferred:
        return self.listening


class CoreOrderTests(unittest.TestCase):
    """In a deployment the bus starts first and stops last, the leases stop
    after the features that hold them."""

    def core(self) -> tuple[Core, ServiceBus]:
        clock = Clock()
        bus = ServiceBus(MemoryHub(clock), "a")
        core = Core(SynchronousStore(clock), clock, CoreSettings(node="a"), bus=bus)
        return core, bus

    def test_the_bus_first_and_the_leases_before_the_features(self):
        core, bus = self.core()
        feature = core.attach(Service())
        order = list(core)
        self.assertIs(order[0], bus)
        self.assertEqual([type(service).__name__ for service in order[1:4]],
                         ["Accounts", "EventLog", "Leases"])
        self.assertIs(order[-1], feature)  # stopped first: MultiService stops in reverse

    def test_started_once_the_bus_listens(self):
        core, bus = self.core()
        started = core.whenStarted()
        self.assertNoResult(started)
        bus.listening.callback(bus)
        self.assertIs(self.successResultOf(started), core)

    def test_a_single_daemon_has_nothing_to_wait_for(self):
        clock = Clock()
        core = Core(SynchronousStore(clock), clock)
        self.assertIsNone(core.bus)
        self.assertIs(self.successResultOf(core.whenStarted()), core)
