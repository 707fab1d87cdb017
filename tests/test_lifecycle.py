"""The real ``twistd gtserver`` process: plugin discovery, start-up log,
SIGTERM, exit statuses.

The daemon runs from this checkout (on PYTHONPATH, which is how twistd finds
``twisted/plugins/gtserver_plugin.py``), with ``tests/plugins`` added so that
the tests' line protocol registers as a third-party listener would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from contextlib import closing

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.ssl import Certificate, CertificateOptions, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.protocols.basic import LineOnlyReceiver
from twisted.trial import unittest

from gtserver.tap import Options
from tests.daemons import (
    CHECKOUT,
    TWISTD,
    Daemon,
    all_builtin_listeners_off,
    environment,
    spawn_daemon,
)
from tests.lineprotocol import connect_line_client
from tests.pgcluster import postgres_url
from tests.tls import write_self_signed_certificate

LISTENING = re.compile(r"listener testline \(test line protocol\) on tcp:127\.0\.0\.1:(\d+)")


async def file_matching(path: str, pattern: re.Pattern, daemon: Daemon,
                        timeout: float = 30.0) -> re.Match:
    """Wait until the file at ``path`` matches ``pattern`` (the daemon writes it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except FileNotFoundError:
            text = ""
        match = pattern.search(text)
        if match:
            return match
        if daemon.ended.called or time.monotonic() > deadline:
            raise AssertionError(f"{pattern.pattern!r} not in {path}:\n{text}\n"
                                 f"output:\n{daemon.output}")
        await deferLater(reactor, 0.05, lambda: None)


def make_read_only(tree: str) -> None:
    for directory, _names, files in os.walk(tree):
        for name in files:
            os.chmod(os.path.join(directory, name), 0o444)
        os.chmod(directory, 0o555)


def make_writable(tree: str) -> None:
    for directory, _names, files in os.walk(tree):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)


class GreetedTLSClient(LineOnlyReceiver):
    """Fires ``greeted`` with the server's certificate once its first line arrives."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.greeted: Deferred = Deferred()

    def lineReceived(self, line: bytes) -> None:
        if not self.greeted.called:
            self.greeted.callback(self.transport.getPeerCertificate())


async def presented_certificate(port: int) -> str:
    """The digest of the certificate a TLS listener presents (not verified)."""
    client = await connectProtocol(
        wrapClientTLS(CertificateOptions(), TCP4ClientEndpoint(reactor, "127.0.0.1", port)),
        GreetedTLSClient())
    peer = await client.greeted
    client.transport.loseConnection()
    return Certificate(peer).digest()


def digest(pem: bytes) -> str:
    return Certificate.loadPEM(pem).digest()


class NotificationReceiver(DatagramProtocol):
    """The systemd side of NOTIFY_SOCKET: collects the daemon's datagrams."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self._waiting: list[tuple[int, Deferred]] = []

    def datagramReceived(self, datagram: bytes, address: object = None) -> None:
        self.received.append(datagram)
        for waiter in [item for item in self._waiting if item[0] <= len(self.received)]:
            self._waiting.remove(waiter)
            waiter[1].callback(None)

    def wait_for(self, count: int) -> Deferred:
        """Fires once ``count`` datagrams have arrived."""
        waiter: Deferred = Deferred()
        if len(self.received) >= count:
            waiter.callback(None)
        else:
            self._waiting.append((count, waiter))
        return waiter


class TwistdTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="gtserver-run-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def spawn(self, *arguments: str, inherit_socket: int | None = None,
              twistd_options: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> Daemon:
        """Start the daemon; ``inherit_socket`` is passed as systemd would pass
        an activated socket (file descriptor 3, LISTEN_FDS, LISTEN_PID)."""
        return spawn_daemon(self, arguments, self.directory, twistd_options=twistd_options,
                            env=env, inherit_socket=inherit_socket)

    async def run_twistd(self, *arguments: str) -> tuple[str, int]:
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", TWISTD, *arguments], env=environment(), path=self.directory)
        return (out + err).decode(errors="replace"), code

    async def test_sigterm_stops_cleanly(self):
        database = os.path.join(self.directory, "gt.sqlite")
        daemon = self.spawn("--db", f"sqlite:{database}", "--hash-cost", "4",
                            *all_builtin_listeners_off(),
                            "--port", "testline=tcp:0:interface=127.0.0.1",
                            "--port", f"testline=unix:{self.directory}/s")
        match = await daemon.wait_for(LISTENING)
        client = await connect_line_client(
            TCP4ClientEndpoint(reactor, "127.0.0.1", int(match.group(1))))
        reply = await client.command("login alice secret")
        self.assertTrue(reply.startswith("ok "), reply)

        os.kill(daemon.transport.pid, signal.SIGTERM)
        self.assertEqual(await daemon.ended, 0, daemon.output)
        self.assertIn("gtserver stopped", daemon.output)
        lines = daemon.output.splitlines()
        self.assertEqual(len([line for line in lines if "] store: sqlite at " in line]), 1)
        self.assertEqual(len([line for line in lines if "] listener testline " in line]), 2)
        self.assertNotIn("Traceback", daemon.output)
        with closing(sqlite3.connect(database)) as stored:
            self.assertEqual(stored.execute("SELECT name FROM users").fetchall(), [("alice",)])
            self.assertEqual(stored.execute("SELECT COUNT(*) FROM sessions").fetchone(), (1,))

    async def test_sighup_reopens_the_log_file_and_keeps_serving(self):
        log = os.path.join(self.directory, "gtserver.log")
        daemon = self.spawn("--db", f"sqlite:{self.directory}/gt.sqlite",
                            *all_builtin_listeners_off(),
                            "--port", "testline=tcp:0:interface=127.0.0.1",
                            twistd_options=("--logfile", log))
        match = await file_matching(log, LISTENING, daemon)
        client = await connect_line_client(
            TCP4ClientEndpoint(reactor, "127.0.0.1", int(match.group(1))))
        self.assertTrue((await client.command("login alice secret")).startswith("ok "))

        os.rename(log, log + ".1")  # as logrotate does
        os.kill(daemon.transport.pid, signal.SIGHUP)
        await file_matching(log, re.compile(f"received SIGHUP: log file {log} reopened"),
                            daemon)
        self.assertFalse(daemon.ended.called)
        self.assertEqual(await client.command("login alice wrong"), "error BadCredentials")
        await file_matching(log, re.compile("failed login for alice from 127.0.0.1:"), daemon)
        self.assertTrue((await client.command("login alice secret")).startswith("ok "))
        client.transport.loseConnection()

        os.kill(daemon.transport.pid, signal.SIGTERM)
        self.assertEqual(await daemon.ended, 0, daemon.output)
        with open(log, encoding="utf-8") as file:
            after = file.read()
        with open(log + ".1", encoding="utf-8") as file:
            before = file.read()
        self.assertIn("gtserver ready", before)
        self.assertNotIn("SIGHUP", before)
        self.assertNotIn("failed login", before)
        self.assertIn("gtserver stopped", after)
        self.assertNotIn("gtserver ready", after)
        self.assertNotIn("Traceback", before + after)

    async def test_sighup_reloads_the_tls_files_of_ssl_listeners(self):
        live = os.path.join(self.directory, "live")
        os.mkdir(live)
        first = write_self_signed_certificate(live)
        daemon = self.spawn(
            "--db", f"sqlite:{self.directory}/gt.sqlite", *all_builtin_listeners_off(),
            "--port", f"testline=ssl:0:interface=127.0.0.1:privateKey={first.key_path}"
                      f":certKey={first.certificate_path}")
        port = int((await daemon.wait_for(re.compile(
            r"listener testline \(test line protocol\) on tls:127\.0\.0\.1:(\d+)"))).group(1))
        self.assertEqual(await presented_certificate(port), digest(first.pem))
        trusting_first = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(first.pem))
        open_before = await connect_line_client(
            wrapClientTLS(trusting_first, TCP4ClientEndpoint(reactor, "127.0.0.1", port)))

        renewed = os.path.join(self.directory, "renewed")
        os.mkdir(renewed)
        second = write_self_signed_certificate(renewed)
        os.replace(second.key_path, first.key_path)
        os.replace(second.certificate_path, first.certificate_path)
        os.kill(daemon.transport.pid, signal.SIGHUP)
        await daemon.wait_for(re.compile(
            rf"listener testline on tls:127\.0\.0\.1:{port}: TLS key and certificate reloaded"))
        self.assertEqual(await presented_certificate(port), digest(second.pem))
        self.assertEqual(await open_before.command("echo still here"), "still here")

        # half renewed: the new certificate does not match the key in place
        with open(first.certificate_path, "wb") as certificate:
            certificate.write(first.pem)
        os.kill(daemon.transport.pid, signal.SIGHUP)
        await daemon.wait_for(re.compile(
            "TLS files not reloaded, the previous ones stay in use: .+"))
        self.assertEqual(await presented_certificate(port), digest(second.pem))
        open_before.transport.loseConnection()

        os.kill(daemon.transport.pid, signal.SIGTERM)
        self.assertEqual(await daemon.ended, 0, daemon.output)
        self.assertNotIn("Traceback", daemon.output)

    async def test_systemd_is_told_of_readiness_reloads_and_stopping(self):
        notifications = NotificationReceiver()
        address = os.path.join(self.directory, "notify")
        listening = reactor.listenUNIXDatagram(address, notifications)
        self.addCleanup(listening.stopListening)
        daemon = self.spawn("--db", f"sqlite:{self.directory}/gt.sqlite",
                            *all_builtin_listeners_off(),
                            "--port", "testline=tcp:0:interface=127.0.0.1",
                            env={**environment(), "NOTIFY_SOCKET": address})
        await daemon.wait_for(re.compile("gtserver ready"))
        await notifications.wait_for(1)
        os.kill(daemon.transport.pid, signal.SIGHUP)
        await notifications.wait_for(3)
        os.kill(daemon.transport.pid, signal.SIGTERM)
        self.assertEqual(await daemon.ended, 0, daemon.output)
        await notifications.wait_for(4)
        self.assertEqual(notifications.received[0], b"READY=1")
        reloading = notifications.received[1].split(b"\n")
        self.assertEqual(reloading[0], b"RELOADING=1")
        self.assertRegex(reloading[1], rb"^MONOTONIC_USEC=\d+$")
        self.assertEqual(notifications.received[2:], [b"READY=1", b"STOPPING=1"])

    async def test_json_log_lines(self):
        daemon = self.spawn("--db", f"sqlite:{self.directory}/gt.sqlite", "--log-format", "json",
                            *all_builtin_listeners_off(),
                            "--port", "testline=tcp:0:interface=127.0.0.1")
        match = await daemon.wait_for(re.compile(
            r'"message": "listener testline \(test line protocol\) on '
            r'tcp:127\.0\.0\.1:(\d+)"'))
        client = await connect_line_client(
            TCP4ClientEndpoint(reactor, "127.0.0.1", int(match.group(1))))
        self.assertTrue((await client.command("login alice secret")).startswith("ok "))
        self.assertEqual(await client.command("login alice wrong"), "error BadCredentials")
        await daemon.wait_for(re.compile("failed login for alice from 127.0.0.1:"))
        client.transport.loseConnection()
        os.kill(daemon.transport.pid, signal.SIGHUP)
        await daemon.wait_for(re.compile("received SIGHUP"))
        os.kill(daemon.transport.pid, signal.SIGTERM)
        self.assertEqual(await daemon.ended, 0, daemon.output)

        records = [json.loads(line) for line in daemon.output.splitlines()]
        self.assertTrue(records)
        for record in records:
            self.assertEqual(set(record) - {"traceback"},
                             {"time", "timestamp", "level", "namespace", "message", "fields"})
        [refused] = [record for record in records if "failed login" in record["message"]]
        self.assertEqual((refused["level"], refused["namespace"], refused["fields"]["name"]),
                         ("info", "gtserver.core.login.LoginGuard", "alice"))
        self.assertRegex(refused["fields"]["address"], r"^127\.0\.0\.1:\d+$")
        address = refused["fields"]["address"]
        self.assertEqual(refused["message"], f"failed login for alice from {address}")
        [listener] = [record for record in records
                      if record["message"].startswith("listener testline")]
        self.assertEqual(listener["fields"]["name"], "testline")
        self.assertEqual(listener["namespace"], "gtserver.service.ListenerService")
        [sighup] = [record for record in records if "SIGHUP" in record["message"]]
        self.assertEqual(sighup["message"],
                         "received SIGHUP: logging to standard output, nothing to reopen")
        self.assertIn("gtserver stopped", [record["message"] for record in records])

    async def test_startup_log_says_when_a_listener_binds_every_interface(self):
        daemon = self.spawn("--db", f"sqlite:{self.directory}/gt.sqlite",
                            *all_builtin_listeners_off(),
                            "--port", "testline=tcp:0:interface=127.0.0.1",
                            "--port", "testline=tcp:0", "--port", "testline=tcp6:0")
        await daemon.wait_for(re.compile(r"gtserver ready"))
        os.kill(daemon.transport.pid, signal.SIGTERM)
        self.assertEqual(await daemon.ended, 0, daemon.output)
        lines = [line.split("] ", 1)[1] for line in daemon.output.splitlines()
                 if "] listener testline " in line]
        self.assertRegex(lines[0], r"on tcp:127\.0\.0\.1:\d+$")
        self.assertRegex(lines[1], r"on tcp:0\.0\.0\.0:\d+ \(every interface\)$")
        self.assertRegex(lines[2], r"on tcp:\[::\]:\d+ \(every interface\)$")

    async def test_startup_log_hides_the_database_password(self):
        url = postgres_url(self).replace("postgresql://postgres@",
                                         "postgresql://postgres:s3cret@")
        daemon = self.spawn("--db", url, *all_builtin_listeners_off(),
                            "--port", "testline=tcp:0:interface=127.0.0.1")
        await daemon.wait_for(LISTENING)
        os.kill(daemon.transport.pid, signal.SIGTERM)
        self.assertEqual(await daemon.ended, 0, daemon.output)
        [store_line] = [line for line in daemon.output.splitlines() if "] store: " in line]
        self.assertIn("store: postgresql at postgresql://postgres:***@127.0.0.1:", store_line)
        self.assertNotIn("s3cret", daemon.output)

    async def check_database_url_from_a_file(self, url: str, secret: str | None) -> str:
        url_file = os.path.join(self.directory, "db.url")
        with open(url_file, "w", encoding="utf-8") as file:
            file.write(url + "\n")
        os.chmod(url_file, 0o600)
        daemon = self.spawn("--db-file", url_file, *all_builtin_listeners_off(),
                            "--port", "testline=tcp:0:interface=127.0.0.1")
        match = await daemon.wait_for(LISTENING)
        with open(f"/proc/{daemon.transport.pid}/cmdline", "rb") as cmdline:
            arguments = cmdline.read().split(b"\0")
        self.assertIn(url_file.encode(), arguments)
        client = await connect_line_client(
            TCP4ClientEndpoint(reactor, "127.0.0.1", int(match.group(1))))
        self.assertTrue((await client.command("login alice secret")).startswith("ok "))
        client.transport.loseConnection()
        os.kill(daemon.transport.pid, signal.SIGTERM)
        self.assertEqual(await daemon.ended, 0, daemon.output)
        if secret is not None:
            self.assertNotIn(secret.encode(), b" ".join(arguments))
            self.assertNotIn(secret, daemon.output)
        [store_line] = [line for line in daemon.output.splitlines() if "] store: " in line]
        return store_line

    async def test_sqlite_url_from_a_file(self):
        database = os.path.join(self.directory, "from-file.sqlite")
        store_line = await self.check_database_url_from_a_file(f"sqlite:{database}", None)
        self.assertIn(f"store: sqlite at sqlite:{database}", store_line)
        with closing(sqlite3.connect(database)) as stored:
            self.assertEqual(stored.execute("SELECT name FROM users").fetchall(), [("alice",)])

    async def test_postgresql_url_with_password_from_a_file(self):
        url = postgres_url(self).replace("postgresql://postgres@",
                                         "postgresql://postgres:f1lesecret@")
        store_line = await self.check_database_url_from_a_file(url, "f1lesecret")
        self.assertIn("store: postgresql at postgresql://postgres:***@127.0.0.1:", store_line)

    async def test_unreachable_database_exits_non_zero_with_one_line(self):
        daemon = self.spawn("--db", "postgresql://game:s3cret@127.0.0.1:1/gt",
                            *all_builtin_listeners_off(),
                            "--port", "testline=tcp:0:interface=127.0.0.1")
        status = await daemon.ended
        self.assertNotEqual(status, 0, daemon.output)
        errors = [line for line in daemon.output.splitlines() if "cannot start" in line]
        self.assertEqual(len(errors), 1, daemon.output)
        self.assertIn("cannot connect to postgresql://game:***@127.0.0.1:1/gt", errors[0])
        self.assertNotIn("Traceback", daemon.output)
        self.assertNotIn("s3cret", daemon.output)
        self.assertNotIn("listener testline", daemon.output)

    async def test_usage_error_starts_nothing(self):
        output, status = await self.run_twistd("--nodaemon", "--pidfile=", "gtserver",
                                               "--port", "nosuch=tcp:0")
        self.assertNotEqual(status, 0)
        self.assertIn("unknown listener 'nosuch'", output)
        self.assertNotIn("store:", output)
        self.assertEqual(os.listdir(self.directory), [])

    async def test_usage_error_gives_the_reason_and_a_hint_not_the_help(self):
        for bad in (["--port", "nosuch=tcp:0"], ["--hash-cost", "many"], ["--no-such-option"]):
            output, status = await self.run_twistd("--nodaemon", "--pidfile=", "gtserver", *bad)
            self.assertEqual(status, 1, output)
            lines = output.strip().splitlines()
            self.assertLessEqual(len(lines), 3, output)
            self.assertRegex(lines[-1], r"^twistd .*: .*(nosuch|many|no-such-option)")
            self.assertIn("Run 'twistd gtserver --help' for the options.", lines)
            self.assertNotIn("--account-idle-days", output)

    async def test_json_log_format_is_for_twistds_log_file_only(self):
        for twistd_option in ("--syslog", "--logger=gtserver.logs.json_observer"):
            output, status = await self.run_twistd("--nodaemon", "--pidfile=", twistd_option,
                                                   "gtserver", "--log-format", "json")
            self.assertEqual(status, 1, output)
            self.assertIn("--log-format applies to twistd's --logfile, not to --logger or "
                          "--syslog", output)

    async def test_twistd_logger_option_gives_json_lines(self):
        daemon = self.spawn("--db", "sqlite::memory:", *all_builtin_listeners_off(),
                            "--port", "testline=tcp:0:interface=127.0.0.1",
                            twistd_options=("--logger=gtserver.logs.json_observer",))
        await daemon.wait_for(re.compile(r'"message": "gtserver ready'))
        os.kill(daemon.transport.pid, signal.SIGHUP)
        await daemon.wait_for(re.compile(r"received SIGHUP: the log is twistd's own"))
        os.kill(daemon.transport.pid, signal.SIGTERM)
        self.assertEqual(await daemon.ended, 0, daemon.output)
        messages = [json.loads(line)["message"] for line in daemon.output.splitlines()]
        self.assertIn("gtserver stopped", messages)

    async def test_malformed_database_url_is_one_line_not_a_traceback(self):
        output, status = await self.run_twistd("--nodaemon", "--pidfile=", "gtserver",
                                               "--db", "postgresql://u@h:notaport/db")
        self.assertEqual(status, 1, output)
        self.assertNotIn("Traceback", output)
        self.assertTrue(output.strip().splitlines()[-1].endswith(
            "bad PostgreSQL URL postgresql://u@h:notaport/db: Port could not be cast to "
            "integer value as 'notaport'; use postgresql://user:password@host:port/database"),
            output)

    async def test_negative_lifetime_is_refused_before_anything_starts(self):
        database = os.path.join(self.directory, "gt.sqlite")
        output, status = await self.run_twistd("--nodaemon", "--pidfile=", "gtserver",
                                               "--db", f"sqlite:{database}",
                                               "--account-idle-days", "-1")
        self.assertEqual(status, 1, output)
        self.assertIn("--account-idle-days must be a number above 0, got '-1'", output)
        self.assertFalse(os.path.exists(database))

    def install_copy(self) -> tuple[str, dict[str, str]]:
        """A copy of the checkout's packages as an installation; its environment."""
        installed = os.path.join(self.directory, "site")
        ignore = shutil.ignore_patterns("__pycache__", "dropin.cache")
        for package in ("gtserver", "twisted"):
            shutil.copytree(os.path.join(CHECKOUT, package), os.path.join(installed, package),
                            ignore=ignore)
        return installed, {**os.environ, "PYTHONPATH": installed,
                           "PYTHONDONTWRITEBYTECODE": "1"}

    async def build_plugin_cache(self, env: dict[str, str]) -> tuple[str, str, int]:
        out, err, status = await getProcessOutputAndValue(
            sys.executable, ["-m", "gtserver.admin", "build-plugin-cache"], env=env,
            path=self.directory)
        return out.decode(), err.decode(), status

    async def test_build_plugin_cache_names_a_plugin_that_does_not_import(self):
        installed, env = self.install_copy()
        with open(os.path.join(installed, "gtserver", "plugins", "broken.py"), "w") as module:
            module.write("import no_such_module_anywhere\n")
        out, err, status = await self.build_plugin_cache(env)
        self.assertEqual(status, 1, out + err)
        self.assertIn("gtserver-admin: " + os.path.join(installed, "gtserver", "plugins",
                                                          "dropin.cache")
                      + ": broken.py is missing (does it import?)", err)

    async def test_read_only_installation_with_built_plugin_cache_writes_nothing(self):
        """What ProtectSystem=strict does to an installation, after the install
        step ``gtserver-admin build-plugin-cache``."""
        installed, env = self.install_copy()
        out, err, status = await self.build_plugin_cache(env)
        self.assertEqual(status, 0, err)
        caches = re.findall(r"^plugin cache up to date: (.+)$", out, re.M)
        own_cache = os.path.join(installed, "gtserver", "plugins", "dropin.cache")
        self.assertIn(own_cache, caches)
        self.assertTrue(any(path.endswith(os.path.join("twisted", "plugins", "dropin.cache"))
                            for path in caches), caches)
        written = {path: os.stat(path).st_mtime_ns for path in caches}

        make_read_only(installed)
        self.addCleanup(make_writable, installed)
        daemon = self.spawn("--db", f"sqlite:{self.directory}/gt.sqlite",
                            *all_builtin_listeners_off(),
                            "--port", "eot=tcp:0:interface=127.0.0.1", env=env)
        await daemon.wait_for(re.compile("gtserver ready: 1 listeners"))
        os.kill(daemon.transport.pid, signal.SIGTERM)
        self.assertEqual(await daemon.ended, 0, daemon.output)
        self.assertNotIn("plugin cache", daemon.output)
        self.assertEqual({path: os.stat(path).st_mtime_ns for path in caches}, written)

    async def test_plugin_discovery_and_help(self):
        output, status = await self.run_twistd("--help")
        self.assertEqual(status, 0)
        self.assertRegex(output, r"\n\s+gtserver\s+Multi-protocol game server")
        output, status = await self.run_twistd("gtserver", "--help")
        self.assertEqual(status, 0, output)
        for option in ("--port=", "--db=", "--hash-cost=", "--testline-greeting=",
                       "--temporary-idle=", *(f"{name} (" for name in Options.protocols)):
            self.assertIn(option, output)

    async def test_systemd_socket_activation(self):
        activated = socket.socket()
        self.addCleanup(activated.close)
        activated.bind(("127.0.0.1", 0))
        activated.listen(16)
        port = activated.getsockname()[1]
        daemon = self.spawn("--db", f"sqlite:{self.directory}/gt.sqlite",
                            *all_builtin_listeners_off(),
                            "--port", "testline=systemd:domain=INET:index=0",
                            inherit_socket=activated.fileno())
        match = await daemon.wait_for(LISTENING)
        self.assertEqual(int(match.group(1)), port)
        activated.close()  # only the daemon holds the socket now
        client = await connect_line_client(TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        self.assertEqual(await client.command("echo activated"), "activated")
        client.transport.loseConnection()
        os.kill(daemon.transport.pid, signal.SIGTERM)
        self.assertEqual(await daemon.ended, 0, daemon.output)
