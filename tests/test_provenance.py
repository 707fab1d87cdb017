"""Provenance: every daemon start records a run, every event its run, every
export its provenance file (the runs of its rows, command line, filters,
schema version, counts). Read with the json and csv modules only."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
from contextlib import closing

import autobahn
from twisted.internet import reactor
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

import twisted
from gtserver import __version__
from gtserver.export import argument_parser, export, redacted_command_line, sidecar_path
from gtserver.provenance import (
    REDACTED,
    canonical_json,
    redact_database_url,
    redact_options,
    source_commit,
)
from gtserver.store import Statement, open_store
from gtserver.store import runs as run_queries
from tests.pgcluster import postgres_url
from tests.support import sqlite_url, start_server
from tests.test_lifecycle import (
    LISTENING,
    TWISTD,
    Daemon,
    all_builtin_listeners_off,
    environment,
)

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "token-of-the-monitor-0123456789"


def events_with_runs():
    rows = yield Statement("SELECT id, kind, user_name, run_id FROM events ORDER BY id")
    return rows


class RunRecordTests:
    """Mixed into a TestCase with ``database_url()``."""

    def database_url(self) -> str:
        raise NotImplementedError

    def secret_in_url(self) -> str | None:
        """The password in ``database_url()``, if it has one."""
        return None

    async def read(self, url: str, function, *args):
        store = open_store(url, reactor)
        await store.start()
        try:
            return await store.run(function, *args)
        finally:
            await store.close()

    def token_file(self) -> str:
        directory = tempfile.mkdtemp(prefix="gtserver-token-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "token")
        with open(path, "w", encoding="utf-8") as file:
            file.write(TOKEN + "\n")
        os.chmod(path, 0o600)
        return path

    async def start_and_record(self, url: str, user: str, *arguments: str):
        server = await start_server(self, *arguments, db=url)
        server.core.events.record("eot", "move", user=user, match="m1", data={"x": 1})
        run_id = server.service.run_id
        await server.stop()
        return run_id

    async def test_each_start_records_a_run_and_its_events_carry_it(self):
        url = self.database_url()
        token_file = self.token_file()
        first = await self.start_and_record(url, "alice", "--web-token-file", token_file,
                                            "--eot-pd-rounds", "7")
        second = await self.start_and_record(url, "bob")
        self.assertNotEqual(first, second)
        runs = await self.read(url, run_queries.all_runs)
        self.assertEqual([run[0] for run in runs], [first, second])
        events = await self.read(url, events_with_runs)
        self.assertEqual([(user, run) for _id, _kind, user, run in events],
                         [("alice", first), ("bob", second)])

        run_id, started, version, commit, digest, details_text = runs[0]
        details = json.loads(details_text)
        self.assertEqual(version, __version__)
        self.assertEqual(details["gtserver_version"], __version__)
        self.assertEqual(details["started"], started)
        self.assertEqual(details["python"],
                         f"{platform.python_implementation()} {platform.python_version()}")
        self.assertEqual(details["twisted"], twisted.__version__)
        self.assertEqual(details["autobahn"], autobahn.__version__)
        self.check_database_version(details["database"])
        self.assertEqual(commit, details["source_commit"])
        self.assertEqual(commit, await self.git_head())
        self.assertIsNone(details["node"])  # a single daemon

        plugins = {(plugin["kind"], plugin["name"]): plugin for plugin in details["plugins"]}
        self.assertEqual(plugins["protocol", "vr"]["module"], "gtserver.vr.plugin")
        self.assertEqual(plugins["protocol", "vr"]["version"], __version__)
        self.assertEqual(plugins["game", "PrisonersDilemma"]["module"], "gtserver.games.matrix")

        options = details["options"]
        self.assertEqual(options["eot-pd-rounds"], 7)
        self.assertEqual(options["hash-cost"], 4)
        self.assertEqual(options["web-token-file"], REDACTED)
        self.assertEqual(options["vr-any-password"], 0)
        self.assertEqual(options["db"], redact_database_url(url))
        self.assertEqual(digest, details["options_sha256"])
        self.assertEqual(digest, hashlib.sha256(canonical_json(options).encode()).hexdigest())
        self.assertNotIn(TOKEN, details_text)
        secret = self.secret_in_url()
        if secret is not None:
            self.assertNotIn(secret, details_text)
            self.assertIn(":***@", options["db"])

        second_details = json.loads(runs[1][5])
        self.assertEqual(second_details["options"]["eot-pd-rounds"], 5)
        self.assertEqual(second_details["options"]["web-token-file"], None)
        self.assertNotEqual(runs[1][4], digest)

    async def git_head(self) -> str | None:
        if shutil.which("git") is None or not os.path.exists(os.path.join(CHECKOUT, ".git")):
            return None
        out, _err, code = await getProcessOutputAndValue(
            "git", ["-C", CHECKOUT, "rev-parse", "HEAD"], env=os.environ)
        return out.decode().strip() if code == 0 else None

    async def session_of_two_runs(self, url: str) -> tuple[int, int, int]:
        """Two runs: the first logs two moves in m1, the second one in m1 and
        one in m2; plus an event from before runs existed (run_id NULL)."""
        first_server = await start_server(self, db=url)
        first = first_server.service.run_id
        for user in ("alice", "bob"):
            first_server.core.events.record("eot", "move", user=user, match="m1")
        first_server.core.events.record("uttt", "move", user="carol", match="m3")
        await first_server.stop()
        second_server = await start_server(self, db=url)
        second = second_server.service.run_id
        second_server.core.events.record("eot", "move", user="alice", match="m1")
        second_server.core.events.record("eot", "move", user="dave", match="m2")
        await second_server.stop()
        third_server = await start_server(self, db=url)  # a run with no exported rows
        third = third_server.service.run_id
        await third_server.stop()
        return first, second, third

    async def export_to_file(self, url: str, *arguments: str) -> tuple[list[dict], dict]:
        target = os.path.join(tempfile.mkdtemp(prefix="gtserver-export-"), "out.csv")
        self.addCleanup(shutil.rmtree, os.path.dirname(target), True)
        argv = ["--db", url, *arguments, "-o", target]
        options = argument_parser().parse_args(argv)
        with open(target, "w", encoding="utf-8", newline="") as output:
            count = await export(reactor, options, output, argv)
        with open(target, encoding="utf-8", newline="") as written:
            rows = list(csv.DictReader(written))
        self.assertEqual(len(rows), count)
        self.assertEqual(sidecar_path(target), target[:-len(".csv")] + ".provenance.json")
        with open(sidecar_path(target), encoding="utf-8") as sidecar:
            return rows, json.load(sidecar)

    async def test_the_sidecar_lists_exactly_the_runs_of_the_rows(self):
        url = self.database_url()
        first, second, third = await self.session_of_two_runs(url)
        rows, provenance = await self.export_to_file(url, "--source", "eot", "--match", "m1")
        self.assertEqual([(row["user"], row["run"]) for row in rows],
                         [("alice", str(first)), ("bob", str(first)), ("alice", str(second))])
        self.assertEqual(list(rows[0])[-1], "run")
        self.assertEqual(provenance["rows"], 3)
        self.assertEqual(provenance["rows_without_run"], 0)
        self.assertEqual([(run["id"], run["rows"]) for run in provenance["runs"]],
                         [(first, 2), (second, 1)])
        recorded = {run[0]: run for run in await self.read(url, run_queries.all_runs)}
        for run in provenance["runs"]:
            self.assertEqual(run["recorded"], json.loads(recorded[run["id"]][5]))
            self.assertEqual(run["options_sha256"], recorded[run["id"]][4])
            self.assertEqual(run["started"], recorded[run["id"]][1])
        self.assertNotIn(third, [run["id"] for run in provenance["runs"]])
        self.assertEqual(provenance["filters"]["source"], ["eot"])
        self.assertEqual(provenance["filters"]["match"], ["m1"])
        self.assertEqual(provenance["filters"]["since"], None)
        self.assertEqual(provenance["table"], "events")
        self.assertEqual(provenance["command"][:2], ["gtserver-export", "--db"])
        self.assertEqual(provenance["command"][2], redact_database_url(url))
        self.assertEqual(provenance["command"][3:7], ["--source", "eot", "--match", "m1"])
        core_version, applied, plugins = await self.read(url, run_queries.schema_version)
        self.assertEqual(provenance["schema_version"],
                         {"core": core_version, "core_applied": applied, "plugins": plugins})
        self.assertEqual(core_version, max(applied))
        self.assertIn(3, applied)
        self.assertIsInstance(provenance["exported"]["epoch"], float)
        secret = self.secret_in_url()
        if secret is not None:
            self.assertNotIn(secret, json.dumps(provenance))

        everything, provenance = await self.export_to_file(url)
        self.assertEqual(provenance["rows"], len(everything))
        self.assertEqual(sum(run["rows"] for run in provenance["runs"]), len(everything))
        self.assertEqual([(run["id"], run["rows"]) for run in provenance["runs"]],
                         [(first, 3), (second, 2)])

    async def test_rows_from_before_runs_were_recorded(self):
        url = self.database_url()
        await self.read(url, run_queries.schema_version)  # creates the tables
        store = open_store(url, reactor)
        await store.start()
        from gtserver.store import events as event_queries
        await store.run(event_queries.append_events,
                        [(1.0, "eot", "move", "old", None, "m1", None, None)])
        await store.close()
        server = await start_server(self, db=url)
        server.core.events.record("eot", "move", user="new", match="m1")
        await server.stop()
        rows, provenance = await self.export_to_file(url)
        self.assertEqual([(row["user"], row["run"]) for row in rows],
                         [("old", ""), ("new", str(server.service.run_id))])
        self.assertEqual(provenance["rows_without_run"], 1)
        self.assertEqual([(run["id"], run["rows"]) for run in provenance["runs"]],
                         [(server.service.run_id, 1)])


class SQLiteRunRecordTests(RunRecordTests, unittest.TestCase):
    def database_url(self) -> str:
        return sqlite_url(self)

    def check_database_version(self, database: dict) -> None:
        self.assertEqual(database, {"engine": "sqlite", "version": sqlite3.sqlite_version})


class PostgresRunRecordTests(RunRecordTests, unittest.TestCase):
    SECRET = "pw-never-recorded-4711"

    def database_url(self) -> str:
        # trust authentication: the password is accepted and ignored
        return postgres_url(self).replace("postgres@", f"postgres:{self.SECRET}@", 1)

    def secret_in_url(self) -> str | None:
        return self.SECRET

    def check_database_version(self, database: dict) -> None:
        self.assertEqual(database["engine"], "postgresql")
        self.assertRegex(database["version"], r"^\d+(\.\d+)?")


class RedactionTests(unittest.TestCase):
    def test_secrets_are_replaced(self):
        options = {"db": "postgresql://u:hunter2@db:5432/gt?password=again&x=1",
                   "web-token-file": b"the-token-itself", "vr-any-password": 1,
                   "bots-password": "pw", "db-file": "/etc/gtserver/db-url",
                   "listeners": {"vr": ("tcp:1",)}, "unset-secret": None}
        redacted = redact_options(options)
        self.assertEqual(redacted, {
            "db": "postgresql://u:***@db:5432/gt?password=***&x=1",
            "web-token-file": REDACTED, "vr-any-password": 1, "bots-password": REDACTED,
            "db-file": "/etc/gtserver/db-url", "listeners": {"vr": ["tcp:1"]},
            "unset-secret": None})

    def test_export_command_line(self):
        self.assertEqual(
            redacted_command_line(["--db", "postgresql://u:pw@h/d", "--db=postgres://v:x@h/d",
                                   "--room", "r1"]),
            ["--db", "postgresql://u:***@h/d", "--db=postgres://v:***@h/d", "--room", "r1"])

    def test_source_commit_of_a_checkout_and_of_none(self):
        directory = tempfile.mkdtemp(prefix="gtserver-git-")
        self.addCleanup(shutil.rmtree, directory, True)
        package = os.path.join(directory, "gtserver", "__init__.py")
        os.makedirs(os.path.dirname(package))
        self.assertIsNone(source_commit(package))
        git = os.path.join(directory, ".git")
        os.makedirs(os.path.join(git, "refs", "heads"))
        with open(os.path.join(git, "HEAD"), "w") as head:
            head.write("ref: refs/heads/main\n")
        with open(os.path.join(git, "packed-refs"), "w") as packed:
            packed.write("# pack-refs with: peeled\n" + "a" * 40 + " refs/heads/main\n")
        self.assertEqual(source_commit(package), "a" * 40)
        with open(os.path.join(git, "refs", "heads", "main"), "w") as loose:
            loose.write("b" * 40 + "\n")
        self.assertEqual(source_commit(package), "b" * 40)
        with open(os.path.join(git, "HEAD"), "w") as head:
            head.write("c" * 40 + "\n")
        self.assertEqual(source_commit(package), "c" * 40)


class TwistdRunTests(unittest.TestCase):
    async def test_a_twistd_start_records_its_run(self):
        directory = tempfile.mkdtemp(prefix="gtserver-run-")
        self.addCleanup(shutil.rmtree, directory, True)
        database = os.path.join(directory, "gt.sqlite")
        daemon = Daemon()
        command = [sys.executable, "-c", TWISTD, "--nodaemon", "--pidfile=", "gtserver",
                   "--db", f"sqlite:{database}", "--hash-cost", "4",
                   *all_builtin_listeners_off(), "--port", "testline=tcp:0:interface=127.0.0.1"]
        process = reactor.spawnProcess(daemon, command[0], command, env=environment(),
                                       path=directory)

        def kill_if_running():
            if daemon.ended.called:
                return None
            try:
                process.signalProcess("KILL")
            except ProcessExitedAlready:
                pass
            return daemon.ended

        self.addCleanup(kill_if_running)
        await daemon.wait_for(LISTENING)
        os.kill(daemon.transport.pid, signal.SIGTERM)
        self.assertEqual(await daemon.ended, 0, daemon.output)
        recorded = re.search(r"run (\d+) recorded \(options sha256 ([0-9a-f]{12})\)",
                             daemon.output)
        self.assertIsNotNone(recorded, daemon.output)
        # the run is recorded before any listener accepts
        self.assertLess(recorded.start(), LISTENING.search(daemon.output).start())
        with closing(sqlite3.connect(database)) as stored:
            runs = stored.execute("SELECT id, options_sha256, details FROM runs").fetchall()
        self.assertEqual(len(runs), 1)
        run_id, digest, details_text = runs[0]
        self.assertEqual((str(run_id), digest[:12]), recorded.groups())
        details = json.loads(details_text)
        self.assertEqual(details["options"]["db"], f"sqlite:{database}")
        self.assertEqual(details["options"]["listeners"]["testline"],
                         ["tcp:0:interface=127.0.0.1"])
        # a plugin from outside gtserver, of no installed distribution: no version known
        self.assertIn({"kind": "protocol", "name": "testline", "module": "tests.lineprotocol",
                       "version": None}, details["plugins"])


class ProvenanceOnTheCommandLineTests(unittest.TestCase):
    async def test_standard_output_with_provenance_file(self):
        url = sqlite_url(self)
        server = await start_server(self, db=url)
        server.core.events.record("eot", "move", user="alice", match="m1")
        await server.stop()
        target = self.mktemp() + ".json"
        env = dict(os.environ, PYTHONPATH=CHECKOUT)
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "gtserver.export", "--db", url, "--provenance", target],
            env=env)
        self.assertEqual(code, 0, err)
        rows = list(csv.DictReader(io.StringIO(out.decode())))
        self.assertEqual([(row["user"], row["run"]) for row in rows],
                         [("alice", str(server.service.run_id))])
        with open(target, encoding="utf-8") as file:
            provenance = json.load(file)
        self.assertEqual(provenance["command"],
                         ["gtserver-export", "--db", url, "--provenance", target])
        self.assertEqual(provenance["output"], "-")
        self.assertEqual([(run["id"], run["rows"]) for run in provenance["runs"]],
                         [(server.service.run_id, 1)])
