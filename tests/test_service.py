"""The service tree with real listeners: tcp, unix and TLS side by side,
start-up log, stopping, start failures, restart without loss."""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
from datetime import datetime

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.trial import unittest

from gtserver.logs import event_as_json_line
from gtserver.store import StoreUnavailable
from tests.lineprotocol import connect_line_client, line_plugin
from tests.pgcluster import postgres_url, private_cluster
from tests.support import LOOPBACK, sqlite_url, start_server
from tests.tls import write_self_signed_certificate

PROTOCOLS = {"testline": line_plugin}


class CapturedLog:
    def __init__(self, testcase: unittest.TestCase) -> None:
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self)
        testcase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict) -> None:
        self.lines.append(formatEvent(event))

    def matching(self, prefix: str) -> list[str]:
        return [line for line in self.lines if line.startswith(prefix)]


class ListenerTests(unittest.TestCase):
    async def test_tcp_unix_and_tls_side_by_side(self):
        directory = tempfile.mkdtemp(prefix="gt-")  # short: unix socket paths are limited
        self.addCleanup(shutil.rmtree, directory, True)
        key, cert, pem = write_self_signed_certificate(directory)
        socket_path = os.path.abspath(os.path.join(directory, "line.sock"))
        log = CapturedLog(self)
        server = await start_server(
            self, "--port", f"testline=unix:{socket_path}",
            "--port", f"testline=ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            "--testline-greeting", "welcome",
            listeners={"testline": LOOPBACK}, protocols=PROTOCOLS)

        tcp_port, tls_port = server.port("testline", 0), server.port("testline", 2)
        tls_options = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pem))
        clients = [
            await connect_line_client(TCP4ClientEndpoint(reactor, "127.0.0.1", tcp_port)),
            await connect_line_client(UNIXClientEndpoint(reactor, socket_path)),
            await connect_line_client(wrapClientTLS(
                tls_options, TCP4ClientEndpoint(reactor, "127.0.0.1", tls_port))),
        ]
        for index, client in enumerate(clients):
            self.assertEqual(client.greeting, "welcome")
            self.assertEqual(await client.command(f"echo hi {index}"), f"hi {index}")
            client.transport.loseConnection()

        self.assertEqual(log.matching("listener testline"), [
            f"listener testline (test line protocol) on tcp:127.0.0.1:{tcp_port}",
            f"listener testline (test line protocol) on unix:{socket_path}",
            f"listener testline (test line protocol) on tls:127.0.0.1:{tls_port}"])

        await server.stop()
        self.assertEqual(log.matching("gtserver stopped"), ["gtserver stopped"])
        with self.assertRaises(ConnectionRefusedError):
            await connect_line_client(TCP4ClientEndpoint(reactor, "127.0.0.1", tcp_port))
        self.assertFalse(os.path.exists(socket_path))

    async def test_store_line_hides_the_password(self):
        url = postgres_url(self).replace("postgresql://postgres@",
                                         "postgresql://postgres:s3cret@")
        log = CapturedLog(self)
        server = await start_server(self, db=url, listeners={"testline": LOOPBACK},
                                    protocols=PROTOCOLS)
        [line] = log.matching("store:")
        self.assertIn("postgresql at postgresql://postgres:***@127.0.0.1:", line)
        self.assertFalse(any("s3cret" in entry for entry in log.lines))
        self.assertEqual(len(log.matching("listener ")), 1)
        self.assertEqual(server.store.engine, "postgresql")

    async def test_daemon_freezes_start_up_objects_once_serving(self):
        self.addCleanup(gc.unfreeze)
        gc.unfreeze()
        await start_server(self, listeners={"testline": LOOPBACK}, protocols=PROTOCOLS)
        self.assertEqual(gc.get_freeze_count(), 0)  # only the daemon owns its heap
        server = await start_server(self, listeners={"testline": LOOPBACK},
                                    protocols=PROTOCOLS, freeze_heap=True)
        self.assertGreater(gc.get_freeze_count(), 1000)
        client = await connect_line_client(
            TCP4ClientEndpoint(reactor, "127.0.0.1", server.port("testline")))
        self.addCleanup(client.transport.loseConnection)
        self.assertTrue(client.greeting)  # still serving

    async def test_port_in_use_fails_start(self):
        first = await start_server(self, listeners={"testline": LOOPBACK}, protocols=PROTOCOLS)
        taken = first.port("testline")
        with self.assertRaises(Exception) as caught:
            await start_server(self, listeners={"testline": f"tcp:{taken}:interface=127.0.0.1"},
                               protocols=PROTOCOLS)
        self.assertIn("Address already in use", str(caught.exception))

    async def test_unreachable_database_fails_start(self):
        with self.assertRaises(StoreUnavailable):
            await start_server(self, db="postgresql://nobody:pw@127.0.0.1:1/x",
                               listeners={"testline": LOOPBACK}, protocols=PROTOCOLS)


class RestartTestsMixin:
    """A restarted daemon on the same database knows every account and session."""

    def make_url(self) -> str:
        raise NotImplementedError

    async def test_restart_without_loss(self):
        url = self.make_url()
        server = await start_server(self, db=url, listeners={"testline": LOOPBACK},
                                    protocols=PROTOCOLS)
        client = await connect_line_client(
            TCP4ClientEndpoint(reactor, "127.0.0.1", server.port("testline")))
        reply = await client.command("login alice secret")
        self.assertTrue(reply.startswith("ok "), reply)
        token = reply[3:]
        guest = await server.core.accounts.create_temporary("guest")
        guest_token = await server.core.accounts.open_session(guest)
        client.transport.loseConnection()
        await server.stop()

        again = await start_server(self, db=url, listeners={"testline": LOOPBACK},
                                   protocols=PROTOCOLS)
        client = await connect_line_client(
            TCP4ClientEndpoint(reactor, "127.0.0.1", again.port("testline")))
        self.assertEqual(await client.command(f"resume {token}"), "ok alice")
        self.assertEqual(await client.command(f"resume {guest_token}"), "ok guest")
        self.assertEqual(await client.command("resume nonsense"), "error UnknownSession")
        self.assertEqual(await client.command("login alice wrong"), "error BadCredentials")
        self.assertTrue((await client.command("login alice secret")).startswith("ok "))
        client.transport.loseConnection()


class SQLiteRestartTests(RestartTestsMixin, unittest.TestCase):
    def make_url(self) -> str:
        return sqlite_url(self)


class PostgresRestartTests(RestartTestsMixin, unittest.TestCase):
    def make_url(self) -> str:
        return postgres_url(self)


class DatabaseLostTests(unittest.TestCase):
    async def test_requests_get_errors_then_service_recovers(self):
        cluster = private_cluster(self)
        server = await start_server(self, db=cluster.create_database(),
                                    listeners={"testline": LOOPBACK}, protocols=PROTOCOLS)
        server.store.retry_delay = 0.2
        client = await connect_line_client(
            TCP4ClientEndpoint(reactor, "127.0.0.1", server.port("testline")))
        token = (await client.command("login alice secret"))[3:]

        await cluster.stop_later()
        self.assertEqual(await client.command(f"resume {token}"), "error StoreUnavailable")
        self.assertEqual(await client.command("login bob pw"), "error StoreUnavailable")
        self.assertEqual(await client.command("echo still here"), "still here")

        await cluster.start_later()
        await deferLater(reactor, 0.3, lambda: None)  # past the retry delay
        self.assertEqual(await client.command(f"resume {token}"), "ok alice")
        self.assertTrue((await client.command("login bob pw")).startswith("ok "))
        client.transport.loseConnection()


class JSONLogLineTests(unittest.TestCase):
    """The JSON form of log events (--log-format json), in memory."""

    def record(self, emit) -> dict:
        events: list[dict] = []
        emit(Logger(namespace="gtserver.test", observer=events.append))
        [event] = events
        line = event_as_json_line(event)
        self.assertTrue(line.endswith("\n"))
        self.assertEqual(line.count("\n"), 1)
        line.encode("ascii")  # valid in any encoding of the log file
        return json.loads(line)

    def test_level_namespace_message_fields(self):
        record = self.record(lambda log: log.warn(
            "throttled {user} from {address}", user="bob", address="10.0.0.1", count=3))
        self.assertEqual((record["level"], record["namespace"], record["message"]),
                         ("warn", "gtserver.test", "throttled bob from 10.0.0.1"))
        self.assertEqual(record["fields"], {"user": "bob", "address": "10.0.0.1", "count": 3})
        self.assertAlmostEqual(datetime.fromisoformat(record["timestamp"]).timestamp(),
                               record["time"], places=5)
        self.assertTrue(record["timestamp"].endswith("+00:00"))

    def test_values_that_are_not_json_become_text(self):
        record = self.record(lambda log: log.info(
            "odd {name}", name="\ud800x", ratio=float("nan"), thing=ValueError("no"),
            pair=(1, {2: b"x"})))
        self.assertEqual(record["fields"], {"name": "\ud800x", "ratio": "nan",
                                            "thing": "no", "pair": [1, {"2": "b'x'"}]})
        self.assertEqual(record["message"], "odd \ud800x")

    def test_a_failure_carries_its_traceback(self):
        def emit(log):
            try:
                raise ZeroDivisionError("division by zero")
            except ZeroDivisionError:
                log.failure("dividing {what}", what="by zero")
        record = self.record(emit)
        self.assertEqual((record["level"], record["message"]), ("critical", "dividing by zero"))
        self.assertIn("ZeroDivisionError", record["traceback"])
        self.assertEqual(record["fields"], {"what": "by zero"})


class PasswordOutsideTheURLTests(unittest.TestCase):
    """A --db URL without a password: the PostgreSQL client library takes it
    from PGPASSWORD or a password file, as the README says."""

    def connect(self, environment: dict[str, str]):
        import psycopg2

        from gtserver.store.postgres import dsn_from_url

        url = postgres_url(self)
        self.assertNotIn(":", url.split("://", 1)[1].split("@", 1)[0])  # no password
        saved = {name: os.environ.get(name) for name in ("PGPASSWORD", "PGPASSFILE")}
        self.addCleanup(restore_environment, saved)
        for name in saved:
            os.environ.pop(name, None)
        os.environ.update(environment)
        connection = psycopg2.connect(dsn_from_url(url))
        self.addCleanup(connection.close)
        return connection

    def test_password_from_pgpassword(self):
        connection = self.connect({"PGPASSWORD": "from-the-environment"})
        self.assertEqual(connection.info.password, "from-the-environment")

    def test_password_from_a_password_file(self):
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as file:
            file.write("127.0.0.1:*:*:postgres:from-the-file\n")
        os.chmod(path, 0o600)
        connection = self.connect({"PGPASSFILE": path})
        self.assertEqual(connection.info.password, "from-the-file")


def restore_environment(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    async def test_frozen_database_gets_errors_within_the_timeout_then_recovers(self):
        cluster = private_cluster(self)
        server = await start_server(self, "--db-timeout", "0.5", db=cluster.create_database(),
                                    listeners={"testline": LOOPBACK}, protocols=PROTOCOLS)
        self.assertEqual(server.store.timeout, 0.5)
        server.store.retry_delay = 0.2
        client = await connect_line_client(
            TCP4ClientEndpoint(reactor, "127.0.0.1", server.port("testline")))
        token = (await client.command("login alice secret"))[3:]

        cluster.freeze()
        self.addCleanup(cluster.thaw)
        self.assertEqual(await client.command(f"resume {token}"), "error StoreUnavailable")
        self.assertEqual(await client.command("login bob pw"), "error StoreUnavailable")
        self.assertEqual(await client.command("echo still here"), "still here")

        cluster.thaw()
        for _attempt in range(100):  # bounds a failing test only
            reply = await client.command(f"resume {token}")
            if reply != "error StoreUnavailable":
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(reply, "ok alice")
        self.assertTrue((await client.command("login bob pw")).startswith("ok "))
        client.transport.loseConnection()

    test_frozen_database_gets_errors_within_the_timeout_then_recovers.timeout = 60  # type: ignore[attr-defined]  # noqa: E501
