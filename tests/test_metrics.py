"""/metrics and /health over a real HTTP socket, next to real listeners and clients.

Every figure is checked as the change between two scrapes around what real
clients did (other tests in the same process move the same counters).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from gtserver.store import StoreError, StoreUnavailable, open_store
from gtserver.store import settings as setting_queries
from gtserver.store.base import Statement
from gtserver.web.metrics import REGISTRY, HealthResource, MetricsResource, daemon_health
from tests.pgcluster import postgres_url, private_cluster
from tests.support import sqlite_url, start_server
from tests.test_eot import call, join_all
from tests.test_uttt import login, play, scripted_game, settle_websocket_timers, sleep
from tests.test_vr_client import connect as vr_connect

Samples = dict[tuple[str, frozenset], float]


def serve(testcase: unittest.TestCase, **children: Resource) -> int:
    """Serve ``children`` (path segment: resource) on loopback; returns the port."""
    root = Resource()
    for name, child in children.items():
        root.putChild(name.encode(), child)
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port


async def get(port: int, path: str, headers: dict[str, str] | None = None
              ) -> tuple[int, bytes, Any]:
    pool = HTTPConnectionPool(reactor, persistent=False)
    agent = Agent(reactor, pool=pool)
    response = await agent.request(
        b"GET", f"http://127.0.0.1:{port}/{path}".encode(),
        Headers({key: [value] for key, value in (headers or {}).items()}))
    body = await readBody(response)
    await pool.closeCachedConnections()
    return response.code, body, response.headers


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


async def scrape(port: int) -> Samples:
    code, body, headers = await get(port, "metrics")
    assert code == 200, (code, body)
    assert headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version=")
    return parse(body.decode("utf-8"))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Scrapes:
    """A metrics endpoint and the change of any figure since a baseline scrape."""

    def __init__(self, testcase: unittest.TestCase) -> None:
        self.port = serve(testcase, metrics=MetricsResource(REGISTRY))
        self.before: Samples = {}
        self.now: Samples = {}

    async def baseline(self) -> None:
        self.before = self.now = await scrape(self.port)

    async def take(self) -> Samples:
        self.now = await scrape(self.port)
        return self.now

    def delta(self, name: str, **labels: str) -> float:
        return value(self.now, name, **labels) - value(self.before, name, **labels)

    def value(self, name: str, **labels: str) -> float:
        return value(self.now, name, **labels)


def count_frames(client: Any) -> list[int]:
    """A one-item list counting the frames ``client`` receives from now on."""
    received = [0]
    original = client.onMessage

    def counting(payload: bytes, isBinary: bool) -> None:
        received[0] += 1
        original(payload, isBinary)

    client.onMessage = counting
    return received


async def eventually(scrapes: Scrapes, condition: Any, timeout: float = 5.0) -> None:
    """Scrape until ``condition()`` holds (a disconnect takes a reactor turn or two)."""
    waited = 0.0
    while True:
        await scrapes.take()
        if condition():
            return
        if waited > timeout:
            raise AssertionError("the metrics never showed the expected state")
        await sleep(0.02)
        waited += 0.02


class VRMetricsTests(unittest.TestCase):
    async def test_connections_frames_requests_rooms_members(self):
        server = await start_server(self, "--fps", "0.001", "--vr-any-password",
                                    listeners={"vr": None})
        port = server.port("vr")
        scrapes = Scrapes(self)
        await scrapes.baseline()
        clients = [await vr_connect(port, self) for _ in range(3)]
        counts = [count_frames(client) for client in clients]
        await scrapes.take()
        self.assertEqual(scrapes.delta("gtserver_connections", listener="vr"), 3)
        for number, client in enumerate(clients):
            await client.login(f"user{number}")
            for earlier in clients[:number]:            # each sees the newcomer join
                self.assertEqual((await earlier.next())["payload"][0]["type"], "join")
        for number in range(5):
            clients[0].say("lobby", "msg", f"hello {number}")
            for client in clients:
                frame = await client.next()
                self.assertEqual(frame["payload"][0]["data"], f"hello {number}")
        clients[1].say("lobby", "join")                 # already in it: 409
        self.assertEqual((await clients[1].reply())["code"], 409)
        clients[2].send_raw(b"{not json")
        self.assertEqual((await clients[2].reply())["code"], 406)
        clients[2].send({"system": "dance"})
        self.assertEqual((await clients[2].reply())["code"], 501)
        await scrapes.take()
        self.assertEqual(scrapes.delta("gtserver_frames_received_total", listener="vr"),
                         3 + 5 + 1 + 1 + 1)
        self.assertEqual(scrapes.delta("gtserver_frames_sent_total", listener="vr"),
                         sum(count[0] for count in counts))
        for kind, outcome, expected in (("login", "ok", 3), ("say", "ok", 5),
                                        ("join", "conflict", 1),
                                        ("invalid", "invalid_structure", 1),
                                        ("other", "not_recognized", 1)):
            self.assertEqual(scrapes.delta("gtserver_requests_total", listener="vr", kind=kind,
                                           outcome=outcome), expected, (kind, outcome))
        self.assertEqual(scrapes.value("gtserver_vr_rooms"), 1)
        self.assertEqual(scrapes.value("gtserver_vr_members"), 3)
        self.assertEqual(scrapes.delta("gtserver_errors_total", listener="vr", kind="internal"),
                         0)
        clients[2].transport.abortConnection()
        await eventually(scrapes, lambda: scrapes.value("gtserver_vr_members") == 2
                         and scrapes.delta("gtserver_connections", listener="vr") == 2)

    async def test_ticks_and_reactor_lag_are_timed(self):
        scrapes = Scrapes(self)
        await scrapes.baseline()                        # before the first tick
        await start_server(self, "--fps", "50", listeners={"vr": None})
        await sleep(0.3)
        await scrapes.take()
        ticks = scrapes.value("gtserver_vr_ticks_total")
        self.assertGreater(ticks, 2)
        # A scrape sees every tick with its duration, and the lateness of
        # every tick after the first (this server's room service is new).
        self.assertEqual(scrapes.delta("gtserver_vr_tick_duration_seconds_count"), ticks)
        self.assertEqual(scrapes.delta("gtserver_vr_tick_lateness_seconds_count"), ticks - 1)
        self.assertGreater(scrapes.delta("gtserver_reactor_tick_seconds_count"), 0)

    async def test_wrong_passwords_and_throttles_are_counted(self):
        server = await start_server(self, "--fps", "0.001", "--login-failures-per-account", "2",
                                    listeners={"vr": None})
        client = await vr_connect(server.port("vr"), self)
        await client.login("ann", "right")              # registers ann
        other = await vr_connect(server.port("vr"), self)
        scrapes = Scrapes(self)
        await scrapes.baseline()
        for _ in range(3):
            other.send({"system": "login", "options": {"user": "ann", "pass": "wrong"}})
            self.assertEqual((await other.reply())["code"], 403)
        await scrapes.take()
        self.assertEqual(scrapes.delta("gtserver_login_failures_total"), 2)
        self.assertEqual(scrapes.delta("gtserver_login_throttled_total", budget="account"), 1)
        self.assertEqual(scrapes.delta("gtserver_requests_total", listener="vr", kind="login",
                                       outcome="denied"), 3)


    async def test_no_names_or_addresses(self):
        server = await start_server(self, "--fps", "0.001", "--vr-any-password",
                                    listeners={"vr": None})
        client = await vr_connect(server.port("vr"), self)
        await client.login("zelda42")
        client.say("room-xq7", "join")
        await client.next()
        client.say("room-xq7", "msg", "a line")
        await client.next()
        port = serve(self, metrics=MetricsResource(REGISTRY))
        code, body, _ = await get(port, "metrics")
        self.assertEqual(code, 200)
        self.assertEqual(value(parse(body.decode()), "gtserver_vr_rooms"), 2)
        for secret in (b"zelda42", b"room-xq7", b"a line", b"127.0.0.1"):
            self.assertNotIn(secret, body)


class UtttMetricsTests(unittest.TestCase):
    async def test_matches_moves_and_matchmaking_wait(self):
        self.addCleanup(settle_websocket_timers)
        server = await start_server(self, listeners={"uttt": None})
        port = server.port("uttt")
        scrapes = Scrapes(self)
        await scrapes.baseline()
        ann, _ = await login(self, port, "ann")
        bob, _ = await login(self, port, "bob")
        ann.send("match_request", {"player": None})
        self.assertEqual((await ann.expect("match_request_response"))["msg"],
                         "waiting for an opponent")
        await scrapes.take()
        self.assertEqual(scrapes.value("gtserver_uttt_matchmaking_queue"), 1)
        self.assertEqual(scrapes.delta("gtserver_connections", listener="uttt"), 2)
        bob.send("match_request", {"player": None})
        update = await ann.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), update)
        await bob.expect("match_request_response")
        await scrapes.take()
        self.assertEqual(scrapes.value("gtserver_uttt_matchmaking_queue"), 0)
        self.assertEqual(scrapes.delta("gtserver_uttt_matchmaking_wait_seconds_count"), 1)
        self.assertGreater(scrapes.delta("gtserver_uttt_matchmaking_wait_seconds_sum"), 0)
        (live,) = [labels for name, labels in scrapes.now
                   if name == "gtserver_matches_live" and ("source", "uttt") in labels]
        game_name = dict(live)["game"]
        self.assertEqual(scrapes.value("gtserver_matches_live", source="uttt", game=game_name),
                         1)
        # The match, played to its end.
        match_id = update["id"]
        moves = scripted_game("a")
        players = [ann, bob] if update["match_state"]["player_a"] == "ann" else [bob, ann]
        await play(self, match_id, players, moves)
        for client in (ann, bob):
            await client.expect("elo_update")
        await scrapes.take()
        self.assertEqual(scrapes.delta("gtserver_moves_total", source="uttt", game=game_name),
                         len(moves))
        self.assertEqual(scrapes.delta("gtserver_requests_total", listener="uttt", kind="move",
                                       outcome="ok"), len(moves))
        self.assertEqual(scrapes.delta("gtserver_matches_started_total", source="uttt",
                                       game=game_name), 1)
        self.assertEqual(scrapes.delta("gtserver_matches_finished_total", source="uttt",
                                       game=game_name, how="over"), 1)
        self.assertEqual(scrapes.value("gtserver_matches_live", source="uttt", game=game_name),
                         0)
        self.assertGreater(scrapes.delta("gtserver_store_transaction_seconds_count",
                                         engine="sqlite"), len(moves) / 10)


class EOTMetricsTests(unittest.TestCase):
    async def test_parked_state_request_and_requests(self):
        server = await start_server(self, listeners={"eot": None})
        port = server.port("eot")
        scrapes = Scrapes(self)
        await scrapes.baseline()
        (player,) = await join_all(server, port, "Echo", "watched", 1)
        self.assertEqual((await player.state())["status"], "ok")
        parked = player.start_state()
        # Only the parked request's connection stays open (the others close
        # once answered, the server's side a reactor turn after the client's).
        await eventually(scrapes, lambda: scrapes.value("gtserver_eot_parked_requests") == 1
                         and scrapes.delta("gtserver_connections", listener="eot") == 1)
        self.assertEqual(scrapes.value("gtserver_eot_sessions"), 1)
        self.assertEqual(scrapes.value("gtserver_matches_live", source="eot", game="Echo"), 1)
        self.assertEqual((await player.move(msg="hello"))["status"], "ok")
        self.assertEqual((await parked)["data"]["echo"], "hello")
        reply = await call(port, {"type": "no such type"})
        self.assertEqual(reply["status"], "error")
        await eventually(scrapes,
                         lambda: scrapes.delta("gtserver_connections", listener="eot") == 0)
        self.assertEqual(scrapes.value("gtserver_eot_parked_requests"), 0)
        self.assertEqual(scrapes.delta("gtserver_moves_total", source="eot", game="Echo"), 1)
        for kind, outcome, expected in (("join", "ok", 1), ("state", "ok", 2), ("move", "ok", 1),
                                        ("other", "bad_request", 1)):
            self.assertEqual(scrapes.delta("gtserver_requests_total", listener="eot", kind=kind,
                                           outcome=outcome), expected, (kind, outcome))
        # join, state, state, move and the unknown type: one frame each way.
        self.assertEqual(scrapes.delta("gtserver_frames_received_total", listener="eot"), 5)
        self.assertEqual(scrapes.delta("gtserver_frames_sent_total", listener="eot"), 5)


class StoreMetricsMixin:
    def store_url(self) -> str:
        raise NotImplementedError

    async def test_transactions_timed_and_failures_counted(self):
        store = open_store(self.store_url())
        await store.start()
        self.addCleanup(lambda: ensureDeferred(store.close()))
        engine = store.engine
        scrapes = Scrapes(self)
        await scrapes.baseline()
        await store.run(setting_queries.ping)
        with self.assertRaises(StoreError):
            await store.run(broken_transaction)
        await store.close()
        with self.assertRaises(StoreUnavailable):
            await store.run(setting_queries.ping)
        await scrapes.take()
        self.assertEqual(scrapes.delta("gtserver_store_transaction_seconds_count",
                                       engine=engine), 3)
        self.assertEqual(scrapes.delta("gtserver_store_failures_total", engine=engine,
                                       reason="error"), 1)
        self.assertEqual(scrapes.delta("gtserver_store_failures_total", engine=engine,
                                       reason="unavailable"), 1)


def broken_transaction() -> Any:
    yield Statement("SELECT no_such_column FROM no_such_table")


class SQLiteStoreMetricsTests(StoreMetricsMixin, unittest.TestCase):
    def store_url(self) -> str:
        return sqlite_url(self)


class PostgresStoreMetricsTests(StoreMetricsMixin, unittest.TestCase):
    def store_url(self) -> str:
        return postgres_url(self)


def terminate_backend(pid: int):
    yield Statement("SELECT pg_terminate_backend(?)", (pid,))


class HealthTests(unittest.TestCase):
    async def test_ok_while_serving_then_503_once_the_store_is_closed(self):
        server = await start_server(self, listeners={"eot": None})
        port = serve(self, health=HealthResource(daemon_health(server.service, reactor)))
        self.assertEqual((await get(port, "health"))[:2], (200, b"ok\n"))
        await server.store.close()
        code, body, _ = await get(port, "health")
        self.assertEqual(code, 503)
        self.assertIn(b"the store does not answer", body)
        await server.stop()
        code, body, _ = await get(port, "health")
        self.assertEqual((code, body), (503, b"not serving: the daemon is starting or stopping\n"))

    async def test_503_while_postgresql_is_down_and_200_once_it_is_back(self):
        cluster = private_cluster(self)
        server = await start_server(self, "--db-timeout", "1", db=cluster.url("postgres"),
                                    listeners={"eot": None})
        port = serve(self, health=HealthResource(daemon_health(server.service, reactor,
                                                               timeout=1.0)))
        self.assertEqual((await get(port, "health"))[:2], (200, b"ok\n"))
        await cluster.stop_later()
        code, body, _ = await get(port, "health")
        self.assertEqual(code, 503, body)
        self.assertIn(b"the store does not answer", body)
        await cluster.start_later()
        for _ in range(200):
            code, body, _ = await get(port, "health")
            if code == 200:
                break
            await sleep(0.05)
        self.assertEqual((code, body), (200, b"ok\n"))

    async def test_503_on_a_node_whose_bus_does_not_listen(self):
        server = await start_server(self, "--node", "a", db=postgres_url(self),
                                    listeners={"eot": None})
        port = serve(self, health=HealthResource(daemon_health(server.service, reactor)))
        self.assertEqual((await get(port, "health"))[:2], (200, b"ok\n"))
        bus = server.core.bus
        bus.reconnect_delays = (0.0, 0.05)
        dsn, bus.store.dsn = bus.store.dsn, bus.store.dsn.replace("dbname='", "dbname='none_")
        await server.store.run(terminate_backend, bus._listener.get_backend_pid())
        for _ in range(100):
            if not bus.listening:
                break
            await sleep(0.05)
        code, body, _ = await get(port, "health")
        self.assertEqual((code, body), (503, b"the bus does not listen: messages from the "
                                             b"other nodes are lost\n"))
        bus.store.dsn = dsn
        for _ in range(100):
            if bus.listening:
                break
            await sleep(0.05)
        self.assertEqual((await get(port, "health"))[:2], (200, b"ok\n"))

    async def test_the_core_alone_is_enough(self):
        """A listener plugin is given the core, not the whole service."""
        server = await start_server(self, listeners={"eot": None})
        port = serve(self, health=HealthResource(daemon_health(server.core, reactor)))
        self.assertEqual((await get(port, "health"))[:2], (200, b"ok\n"))
        await server.stop()
        code, body, _ = await get(port, "health")
        self.assertEqual((code, body), (503, b"not serving: the daemon is starting or stopping\n"))

    async def test_a_check_that_fails_is_503_with_its_message(self):
        def check() -> Any:
            raise RuntimeError("disk on fire")
        port = serve(self, health=HealthResource(check))
        self.assertEqual((await get(port, "health"))[:2], (503, b"disk on fire\n"))


class TokenTests(unittest.TestCase):
    async def test_token_required_when_set(self):
        port = serve(self, metrics=MetricsResource(REGISTRY, token=b"s3cret"))
        code, body, headers = await get(port, "metrics")
        self.assertEqual(code, 401)
        self.assertEqual(headers.getRawHeaders(b"www-authenticate"),
                         [b'Bearer realm="gtserver metrics"'])
        self.assertNotIn(b"gtserver_", body)
        for wrong in ("Bearer s3cre", "Bearer s3cretx", "Basic s3cret", "s3cret"):
            code, _, _ = await get(port, "metrics", {"Authorization": wrong})
            self.assertEqual(code, 401, wrong)
        code, body, _ = await get(port, "metrics", {"Authorization": "Bearer s3cret"})
        self.assertEqual(code, 200)
        self.assertIn(("gtserver_build_info", frozenset({("version", gtserver_version())})),
                      parse(body.decode()))

    async def test_open_without_token(self):
        port = serve(self, metrics=MetricsResource(REGISTRY))
        code, body, _ = await get(port, "metrics")
        self.assertEqual(code, 200)
        self.assertIn("process_cpu_seconds_total", {name for name, _ in parse(body.decode())})


def gtserver_version() -> str:
    import gtserver
    return gtserver.__version__


class SwitchTests(unittest.TestCase):
    def test_metrics_off_leaves_only_process_metrics(self):
        """``GTSERVER_METRICS=off`` (the benchmark's baseline) swaps every
        instrument for a no-op that the instrumented code can still call."""
        program = (
            "import gtserver.core, gtserver.vr.adapter, gtserver.eot.protocol\n"
            "import gtserver.web.metrics\n"
            "from gtserver import metrics\n"
            "from prometheus_client.exposition import generate_latest\n"
            "metrics.FRAMES_SENT.labels('vr').value += 1\n"
            "metrics.ListenerMetrics('eot').request('join', 'ok')\n"
            "metrics.MOVES('eot', 'Echo')\n"
            "metrics.STORE_TRANSACTION.labels('sqlite').observe(0.1)\n"
            "print(generate_latest(metrics.REGISTRY).decode())\n")
        environment = dict(os.environ, GTSERVER_METRICS="off")
        output = subprocess.run([sys.executable, "-c", program], env=environment, check=True,
                                capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.dirname(__file__))).stdout
        names = {name for name, _ in parse(output)}
        self.assertIn("process_cpu_seconds_total", names)
        self.assertEqual({name for name in names if name.startswith("gtserver_")}, set())
