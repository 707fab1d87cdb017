"""The daemon's service tree: listeners that bind in privilegedStartService
and accept once the store is open, children started in order and stopped in
reverse, the core's services built once through typed getters."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.trial import unittest

from gtserver.core import Core, DependencyCycle, built_once
from gtserver.core.passwords import PasswordHasher
from gtserver.service import GtserverService
from gtserver.tap import build_service
from tests.lineprotocol import connect_line_client, line_plugin
from tests.support import LOOPBACK, parse_options, sqlite_url
from tests.test_service import CapturedLog

PROTOCOLS = {"testline": line_plugin}


class ListenerBindingTests(unittest.TestCase):
    def service(self, endpoint: str = LOOPBACK) -> GtserverService:
        options = parse_options("--db", sqlite_url(self), "--hash-cost", "4",
                                "--port", f"testline={endpoint}", protocols=PROTOCOLS)
        service = build_service(options, reactor)
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service

    async def test_bound_before_start_accepting_once_the_store_is_open(self):
        log = CapturedLog(self)
        service = self.service()
        service.privilegedStartService()
        [listener] = service.listeners
        self.assertIsNotNone(listener.port)
        self.assertNotEqual(listener.port.getHost().port, 0)
        self.assertNotIn(listener.port, reactor.getReaders())  # bound, not accepting
        self.assertFalse(service.getServiceNamed("store").running)
        self.assertEqual(log.matching("listener testline"), [])

        service.startService()
        await service.started
        self.assertIn(listener.port, reactor.getReaders())
        [line] = log.matching("listener testline")
        self.assertIn(f"on tcp:127.0.0.1:{listener.port.getHost().port}", line)
        client = await connect_line_client(
            TCP4ClientEndpoint(reactor, "127.0.0.1", listener.port.getHost().port))
        self.addCleanup(client.transport.loseConnection)
        self.assertEqual(client.greeting, "hello")

    async def test_a_port_in_use_fails_the_start_not_the_bind(self):
        first = self.service()
        first.startService()
        await first.started
        taken = first.listeners[0].port.getHost().port
        second = self.service(f"tcp:{taken}:interface=127.0.0.1")
        second.privilegedStartService()  # does not raise: the start reports it
        second.startService()
        with self.assertRaises(Exception) as caught:
            await second.started
        self.assertIn("Address already in use", str(caught.exception))
        await second.stopService()
        self.assertFalse(second.getServiceNamed("store").running)


class FakeStore:
    engine = "fake"

    def __init__(self) -> None:
        self.opening: Deferred = Deferred()
        self.closed = False

    def describe(self) -> str:
        return "memory"

    def start(self) -> Deferred:
        return self.opening

    async def close(self) -> None:
        self.closed = True


class SlowToStop(Service):
    def __init__(self) -> None:
        self.stopping: Deferred = Deferred()

    def stopService(self) -> Deferred:
        super().stopService()
        return self.stopping


class OrderTests(unittest.TestCase):
    def test_the_core_starts_once_the_store_is_open_and_stops_before_it_closes(self):
        store = FakeStore()
        core = Core(store, Clock(), hasher=PasswordHasher(log2_n=4))
        slow = core.attach(SlowToStop())
        service = GtserverService(store, core, [])
        service.startService()
        self.assertFalse(core.running)
        store.opening.callback(None)
        self.assertTrue(core.running)
        self.assertTrue(slow.running)
        self.successResultOf(service.started)

        stopped = service.stopService()
        self.assertFalse(store.closed)  # the core has not finished stopping
        slow.stopping.callback(None)
        self.successResultOf(stopped)
        self.assertTrue(store.closed)


class Cyclic(Core):
    @built_once
    def first(self) -> object:
        return self.second

    @built_once
    def second(self) -> object:
        return self.first


class CoreServiceTests(unittest.TestCase):
    def core(self, cls: type[Core] = Core, **arguments) -> Core:
        return cls(FakeStore(), Clock(), hasher=PasswordHasher(log2_n=4), **arguments)

    def test_each_service_is_built_once_and_started_with_the_core(self):
        core = self.core()
        self.assertIs(core.match_store, core.match_store)
        self.assertIs(core.ratings, core.ratings)
        self.assertIs(core.match_store.recorder, core.events)
        self.assertEqual([child.__class__.__name__ for child in core],
                         ["Accounts", "EventLog"])

    def test_the_match_store_gets_the_games_it_is_given(self):
        games = {"Only": line_plugin}
        core = self.core(games=games)
        self.assertEqual(core.match_store.games, games)
        core.match_store.games["Other"] = line_plugin
        self.assertEqual(games, {"Only": line_plugin})  # its own copy

    def test_a_dependency_cycle_is_refused_with_its_chain(self):
        core = self.core(Cyclic)
        with self.assertRaises(DependencyCycle) as caught:
            core.first  # noqa: B018
        self.assertIn("first -> second -> first", str(caught.exception))

    def test_attached_services_are_found_by_class_and_never_built(self):
        from twisted.application.service import Service

        class Rooms(Service):
            pass

        class Tables(Service):
            pass

        core = self.core()
        self.assertIsNone(core.attached(Rooms))
        rooms = core.attach(Rooms())
        self.assertIs(core.attached(Rooms), rooms)
        self.assertIsNone(core.attached(Tables))
        self.assertIs(core.attached(type(core.events)), core.events)
        self.assertIs(core.presence, core.presence)
        self.assertNotIn(core.presence, list(core))  # no service of its own
