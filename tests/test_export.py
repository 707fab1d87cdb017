"""gtserver-export: events written by a session come out as CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import sys

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from gtserver.export import argument_parser, export, iso, parse_time
from tests.support import sqlite_url, start_server
from tests.test_vr_client import connect

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ExportTests(unittest.TestCase):
    async def session(self) -> str:
        """A VR session plus one event of each game source; returns the database URL."""
        db = sqlite_url(self)
        server = await start_server(self, "--fps", "0.001", db=db, listeners={"vr": None})
        self.run_id = server.service.run_id
        client = await connect(server.port("vr"), self)
        await client.login("alice")
        client.say("lobby", "msg", 'say "hi", then; leave')
        await client.next()
        client.say("r1", "join")
        await client.next()
        client.say("r1", "button", "cooperate")
        await client.next()
        server.core.events.record("uttt", "move", user="bob", match="m1", data={"cell": 4})
        server.core.events.record("eot", "move", user="carol", match="m2", data={"x": 1})
        client.transport.loseConnection()
        await client.closed
        await server.stop()
        return db

    async def rows(self, db: str, *arguments: str) -> list[dict]:
        options = argument_parser().parse_args(["--db", db, *arguments])
        output = io.StringIO()
        count = await export(reactor, options, output)
        rows = list(csv.DictReader(io.StringIO(output.getvalue())))
        self.assertEqual(len(rows), count)
        return rows

    async def test_session_events_appear_in_the_csv(self):
        db = await self.session()
        rows = await self.rows(db)
        self.assertEqual(list(rows[0]), ["id", "time", "epoch", "source", "type", "user", "room",
                                         "match", "address", "data", "run"])
        self.assertEqual({r["run"] for r in rows}, {str(self.run_id)})
        self.assertEqual([(r["source"], r["type"], r["user"], r["room"]) for r in rows], [
            ("vr", "login", "alice", ""),
            ("vr", "join", "alice", "lobby"), ("vr", "msg", "alice", "lobby"),
            ("vr", "join", "alice", "r1"), ("vr", "button", "alice", "r1"),
            ("uttt", "move", "bob", ""), ("eot", "move", "carol", ""),
            ("vr", "leave", "alice", "lobby"), ("vr", "leave", "alice", "r1"),
            ("vr", "logout", "alice", "")])
        message = rows[2]
        self.assertEqual(json.loads(message["data"]), 'say "hi", then; leave')
        self.assertEqual(message["time"], iso(float(message["epoch"])))
        self.assertTrue(message["time"].endswith("+00:00"))
        self.assertTrue(message["address"].startswith("127.0.0.1:"))
        self.assertEqual(json.loads(rows[5]["data"]), {"cell": 4})
        self.assertEqual(rows[5]["match"], "m1")

    async def test_filters(self):
        db = await self.session()
        rows = await self.rows(db, "--room", "r1")
        self.assertEqual([r["type"] for r in rows], ["join", "button", "leave"])
        rows = await self.rows(db, "--source", "uttt", "--source", "eot")
        self.assertEqual([r["match"] for r in rows], ["m1", "m2"])
        rows = await self.rows(db, "--match", "m2")
        self.assertEqual([r["user"] for r in rows], ["carol"])
        rows = await self.rows(db, "--type", "msg", "--type", "button", "--source", "vr")
        self.assertEqual([r["type"] for r in rows], ["msg", "button"])
        everything = await self.rows(db)
        middle = float(everything[2]["epoch"])
        rows = await self.rows(db, "--since", repr(middle), "--until", everything[4]["epoch"])
        self.assertEqual([r["id"] for r in rows], [everything[2]["id"], everything[3]["id"]])

    def test_time_arguments(self):
        self.assertEqual(parse_time("1700000000.5"), 1700000000.5)
        self.assertEqual(parse_time("2023-11-14T22:13:20Z"), 1700000000.0)
        self.assertEqual(parse_time("2023-11-14T22:13:20"), 1700000000.0)
        self.assertEqual(parse_time("2023-11-14T23:13:20+01:00"), 1700000000.0)

    async def test_command_line(self):
        import gtserver
        root = os.path.dirname(os.path.dirname(os.path.abspath(gtserver.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [root, os.environ.get("PYTHONPATH")])))
        db = await self.session()
        target = os.path.join(self.mktemp() + ".csv")
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "gtserver.export", "--db", db, "--source", "vr",
                             "-o", target], env=env)
        self.assertEqual(code, 0, err)
        self.assertIn(b"8 events written", err)
        with open(target, newline="", encoding="utf-8") as written:
            self.assertEqual(len(list(csv.DictReader(written))), 8)
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "gtserver.export", "--db", db + ".missing"],
            env=env)
        self.assertEqual(code, 2)
        self.assertIn(b"no database", err)

    async def test_database_url_from_a_file(self):
        db = await self.session()
        url_file = self.mktemp()
        with open(url_file, "w", encoding="utf-8") as file:
            file.write(db + "\n")
        env = dict(os.environ, PYTHONPATH=CHECKOUT)
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "gtserver.export", "--db-file", url_file, "--room", "r1"],
            env=env)
        self.assertEqual(code, 0, err)
        self.assertEqual(len(out.splitlines()), 4)  # header, join, button, leave
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "gtserver.export", "--db-file", url_file + ".missing"],
            env=env)
        self.assertEqual(code, 2)
        self.assertIn(b"cannot read --db-file", err)
        self.assertNotIn(b"Traceback", err)

    async def test_a_reader_that_quits_early_ends_the_export_quietly(self):
        db = sqlite_url(self)
        server = await start_server(self, db=db)
        for number in range(3000):
            server.core.events.record("eot", "move", user=f"player{number}", match="m1",
                                      data={"cell": number, "note": "x" * 40})
        await server.stop()
        env = dict(os.environ, PYTHONPATH=CHECKOUT)
        # pipefail: the status is the exporter's, not head's
        script = 'set -o pipefail; "$0" -m gtserver.export --db "$1" | head -n 2'
        out, err, code = await getProcessOutputAndValue(
            "/bin/bash", ["-c", script, sys.executable, db], env=env)
        self.assertEqual(out.decode().splitlines()[0].split(",")[:3], ["id", "time", "epoch"])
        self.assertEqual(len(out.splitlines()), 2)
        self.assertEqual((code, err), (0, b""))
