"""gtserver-export --table/--format/--pseudonymize/--codebook: real clients play
(EOT TicTacToe with an illegal move, a uttt match, VR chat and a pose), then
every table is exported in every format and read back (docs/export.md)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from typing import Any

import pyarrow.parquet as pq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from gtserver import tables
from gtserver.codebook import write_codebook
from gtserver.core.ratings import updated_pair
from gtserver.export import argument_parser, export, main, sidecar_path
from gtserver.exportformats import PROVENANCE_KEY
from gtserver.store import events as event_queries
from gtserver.store import open_store
from tests import test_uttt as uttt
from tests.pgcluster import postgres_url
from tests.support import select_events, sqlite_url, start_server
from tests.test_eot import join_all, until
from tests.test_vr_client import connect as vr_connect
from tests.test_vr_ticks import pose

try:
    import pandas
except ImportError:  # pandas is in the test extra, but optional here
    pandas = None

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ("csv", "jsonl", "parquet")
NAMES = ("ann", "bob", "alice", "carl", "vic")
#: The EOT TicTacToe script: (mover is the starter?, position, accepted?)
TICTACTOE = ((True, 4, True), (False, 4, False), (False, 1, True), (True, 0, True),
             (False, 2, True), (True, 8, True))


def typed(value: str, kind: str) -> Any:
    """A CSV cell as the value the other formats hold."""
    if value == "":
        return None
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        return value == "true"
    return value


class TablesMixin:
    def make_url(self) -> str:
        raise NotImplementedError

    async def play(self) -> str:
        """Every client plays; returns the database URL (the server stopped)."""
        db = self.make_url()
        server = await start_server(self, "--fps", "20", db=db,
                                    listeners={"vr": None, "uttt": None, "eot": None})
        self.run_id = server.service.run_id
        # EOT TicTacToe, with one illegal move.
        port = server.port("eot")
        players = await join_all(server, port, "TicTacToe", "lab", 2, ["ann", "bob"])
        first = await players[0].state()
        self.starter = first["data"]["current"][0]
        if self.starter != 0:
            await players[self.starter].state()  # the starter is told it is to move
        for starter_moves, position, legal in TICTACTOE:
            seat = self.starter if starter_moves else 1 - self.starter
            reply = await players[seat].move(position=position)
            self.assertEqual(reply["status"], "ok" if legal else "illegalmove", reply)
        # A uttt match to a win of alice.
        self.addCleanup(uttt.settle_websocket_timers)
        alice, _ = await uttt.login(self, server.port("uttt"), "alice")
        carl, _ = await uttt.login(self, server.port("uttt"), "carl")
        update = await uttt.challenge(self, alice, carl, "carl")
        self.uttt_match = update["id"]
        self.uttt_moves = uttt.scripted_game("a")
        await uttt.play(self, self.uttt_match, [alice, carl], self.uttt_moves)
        # VR: a chat line, a button, a pose.
        vic = await vr_connect(server.port("vr"), self)
        await vic.login("vic")
        vic.say("lobby", "msg", "hello there")
        await vic.next()
        vic.say("lobby", "button", "cooperate")
        await vic.next()
        vic.say("lobby", "transform", pose(1.5))

        async def pose_logged() -> bool:
            await server.core.events.flush()
            return bool(await server.core.store.run(select_events, kinds=("transform",)))
        deadline = reactor.seconds() + 10
        while not await pose_logged():
            self.assertLess(reactor.seconds(), deadline, "the pose was never logged")
            await uttt.sleep(0.05)
        vic.transport.loseConnection()
        await vic.closed
        await alice.disconnect()
        await carl.disconnect()
        await until(lambda: not server.core.presence.connections)
        await server.stop()
        store = open_store(db, reactor)
        await store.start()
        try:
            self.events = [dict(zip(("id", "time", "source", "kind", "user", "room", "match",
                                     "address", "data"), row, strict=True))
                           for row in await store.run(select_events)]
        finally:
            await store.close()
        return db

    async def export_table(self, db: str, table: str, form: str, *extra: str,
                           name: str | None = None) -> tuple[list[dict], dict, str]:
        """Export one table to a file; its rows (typed), provenance and path."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, f"{name or table}.{form}")
        arguments = ["--db", db, "--table", table, "--format", form, "-o", path, *extra]
        options = argument_parser().parse_args(arguments)
        if form == "parquet":
            count = await export(reactor, options, path, arguments)
        else:
            with open(path, "w", encoding="utf-8", newline="") as output:
                count = await export(reactor, options, output, arguments)
        with open(sidecar_path(path), encoding="utf-8") as file:
            provenance = json.load(file)
        self.assertEqual(provenance["table"], table)
        self.assertEqual(provenance["format"], form)
        self.assertEqual(provenance["rows"], count)
        kinds = provenance["column_types"]
        self.assertEqual(set(kinds), set(provenance["columns"]))
        if form == "csv":
            with open(path, newline="", encoding="utf-8") as file:
                rows = [{k: typed(v, kinds[k]) for k, v in row.items()}
                        for row in csv.DictReader(file)]
        elif form == "jsonl":
            with open(path, encoding="utf-8") as file:
                rows = [json.loads(line) for line in file]
        else:
            parquet = pq.read_table(path)
            rows = parquet.to_pylist()
            metadata = pq.read_metadata(path).metadata[PROVENANCE_KEY.encode()]
            self.assertEqual(json.loads(metadata), provenance)
            if pandas is not None:
                frame = pandas.read_parquet(path)
                self.assertEqual(list(frame.columns), provenance["columns"])
                self.assertEqual(len(frame), count)
        self.assertEqual(len(rows), count)
        if rows:
            self.assertEqual(list(rows[0]), provenance["columns"])
        if pandas is not None and form == "csv" and rows:
            self.assertEqual(len(pandas.read_csv(path)), count)
        if pandas is not None and form == "jsonl" and rows:
            self.assertEqual(len(pandas.read_json(path, lines=True)), count)
        return rows, provenance, path

    async def every_format(self, db: str, table: str, *extra: str) -> list[dict]:
        """The table in every format; they must agree. Returns the rows."""
        exported = [await self.export_table(db, table, form, *extra) for form in FORMATS]
        first = exported[0][0]
        for rows, _provenance, _path in exported[1:]:
            self.assertEqual(rows, first)
        return first

    async def test_every_table_in_every_format(self):
        db = await self.play()
        kinds = [e["kind"] for e in self.events]
        # events
        rows = await self.every_format(db, "events")
        self.assertEqual([r["id"] for r in rows], [e["id"] for e in self.events])
        self.assertEqual({r["run"] for r in rows}, {self.run_id})
        # moves
        rows = await self.every_format(db, "moves")
        eot = [r for r in rows if r["source"] == "eot"]
        refusals_logged = kinds.count("move_refused")
        accepted = [r for r in eot if r["accepted"]]
        self.assertEqual([(r["arg_position"], r["seat"], r["user"], r["move_number"])
                          for r in accepted],
                         [(position, self.starter if starter else 1 - self.starter,
                           ["ann", "bob"][self.starter if starter else 1 - self.starter],
                           number)
                          for number, (starter, position, _legal) in
                          enumerate((m for m in TICTACTOE if m[2]), 1)])
        self.assertEqual(len(eot) - len(accepted), refusals_logged)
        for refused in (r for r in eot if not r["accepted"]):
            self.assertEqual((refused["arg_position"], refused["move_number"]), (4, 2))
            self.assertIn("taken", refused["refusal"])
        self.assertTrue(all(r["game"] == "TicTacToe" for r in eot))
        # Each move's decision time runs from the first state sent to its
        # seat, while it was to move, since that seat's previous move; these
        # players move without asking for the state (but for the first), so
        # most moves fall back on the match's previous move.
        told: dict = {}
        expected = []
        previous: tuple[str, float] | None = None
        for event in (e for e in self.events if e["source"] == "eot"):
            seat = json.loads(event["data"] or "{}").get("seat")
            if event["kind"] == "match_start":
                previous = ("match_start", event["time"])
            elif event["kind"] == "turn_sent":
                told.setdefault(seat, event["time"])
            elif event["kind"] in ("move", "move_refused"):
                since = ("turn_sent", told[seat]) if seat in told else previous
                expected.append((since[0], event["time"] - since[1]))
                if event["kind"] == "move":
                    told.pop(seat, None)
                    previous = ("move", event["time"])
        self.assertEqual(expected[0][0], "turn_sent")
        self.assertEqual(len(expected), len(eot))
        for row, (measured_from, seconds) in zip(eot, expected, strict=True):
            self.assertEqual(row["decision_from"], measured_from)
            self.assertAlmostEqual(row["decision_seconds"], seconds, places=6)
            self.assertGreaterEqual(row["decision_seconds"], 0)
        played = [r for r in rows if r["source"] == "uttt"]
        # The uttt client sends some moves' numbers as text: the columns are text.
        self.assertEqual([tuple(int(r[f"arg_{k}"]) for k in ("sub_x", "sub_y", "x", "y"))
                          for r in played if r["accepted"]], self.uttt_moves)
        self.assertEqual({r["arg_x"] for r in played} - set("012"), set())
        self.assertEqual([r["user"] for r in played if r["accepted"]][:2], ["alice", "carl"])
        self.assertTrue(all(r["decision_seconds"] >= 0 for r in played))
        self.assertEqual({r["decision_from"] for r in played}, {"turn_sent"})
        # matches
        rows = await self.every_format(db, "matches")
        self.assertEqual(len(rows), 2)
        by_source = {r["source"]: r for r in rows}
        ttt = by_source["eot"]
        self.assertEqual((ttt["game"], ttt["ended"], ttt["moves"], ttt["refused_moves"]),
                         ("TicTacToe", "win", 5, refusals_logged))
        self.assertEqual(json.loads(ttt["players"]), ["ann", "bob"])
        self.assertEqual((ttt["player_0"], ttt["player_1"]), ("ann", "bob"))
        self.assertEqual(ttt[f"outcome_{self.starter}"], 1.0)
        self.assertEqual(ttt[f"outcome_{1 - self.starter}"], 0.0)
        self.assertGreater(ttt["end_epoch"], ttt["start_epoch"])
        game = by_source["uttt"]
        self.assertEqual((game["match"], game["ended"], game["moves"], game["player_0"],
                          game["outcome_0"]),
                         (self.uttt_match, "win", len(self.uttt_moves), "alice", 1.0))
        new = updated_pair([1000, 1000], [1.0, 0.0])
        self.assertEqual((game["rating_before_0"], game["rating_after_0"],
                          game["rating_before_1"], game["rating_after_1"]),
                         (1000, new[0], 1000, new[1]))
        self.assertIsNone(ttt["rating_after_0"])      # EOT matches are not rated
        # chat
        rows = await self.every_format(db, "chat")
        self.assertEqual([(r["type"], r["user"], r["room"], r["text"]) for r in rows],
                         [("msg", "vic", "lobby", "hello there"),
                          ("button", "vic", "lobby", "cooperate")])
        # poses
        rows = await self.every_format(db, "poses")
        self.assertEqual(len(rows), kinds.count("transform"))
        self.assertEqual({k: rows[-1][k] for k in ("user", "room", "x", "y", "z", "rx", "ry",
                                                   "rz")},
                         {"user": "vic", "room": "lobby", "x": 1.5, "y": 2.0, "z": 3.0,
                          "rx": 4.0, "ry": 5.0, "rz": 6.0})
        # presence
        rows = await self.every_format(db, "presence")
        expected = [e for e in self.events if e["kind"] in tables.PRESENCE_KINDS]
        self.assertEqual([(r["id"], r["type"], r["user"]) for r in rows],
                         [(e["id"], e["kind"], e["user"]) for e in expected])
        self.assertEqual([(r["source"], r["user"]) for r in rows if r["type"] == "join_table"],
                         [("eot", "ann"), ("eot", "bob")])
        self.assertEqual({(r["source"], r["user"]) for r in rows if r["type"] == "login"},
                         {("uttt", "alice"), ("uttt", "carl"), ("vr", "vic")})
        logouts = [r for r in rows if r["type"] == "logout"]
        self.assertEqual({r["user"] for r in logouts}, {"alice", "carl", "vic"})
        self.assertTrue(all(r["session_seconds"] > 0 for r in logouts))

    async def test_type_filters_within_a_table(self):
        db = await self.play()
        logins, _p, _path = await self.export_table(db, "presence", "csv", "--type", "login")
        self.assertEqual({(r["type"], r["user"]) for r in logins},
                         {("login", "alice"), ("login", "carl"), ("login", "vic")})
        nothing, provenance, _path = await self.export_table(db, "chat", "jsonl", "--type",
                                                             "login")
        self.assertEqual((nothing, provenance["rows"], provenance["events_read"]), ([], 0, 0))

    async def test_pseudonyms(self):
        db = await self.play()
        key, other = self.mktemp(), self.mktemp()
        with open(key, "wb") as file:
            file.write(b"first key \x00\xff")
        with open(other, "wb") as file:
            file.write(b"second key")
        for table in ("events", "matches", "moves", "presence", "chat"):
            first = await self.every_format(db, table, "--pseudonymize", key)
            again, provenance, _path = await self.export_table(db, table, "csv",
                                                               "--pseudonymize", key,
                                                               name="again")
            self.assertEqual(again, first)     # the same key, the same pseudonyms
            self.assertTrue(provenance["pseudonymized"])
            self.assertNotIn("address", provenance["columns"])
            changed, _p, _path = await self.export_table(db, table, "jsonl",
                                                         "--pseudonymize", other)
            text = json.dumps(first)
            for name in NAMES:
                self.assertNotIn(name, text, (table, name))
            self.assertNotIn("127.0.0.1", text)
            users = [r["user"] for r in first if r.get("user")]
            if table == "matches":
                users = [r["player_0"] for r in first]
            self.assertTrue(users)
            self.assertTrue(all(u.startswith("p_") and len(u) == 18 for u in users), users)
            other_users = [r["player_0"] if table == "matches" else r.get("user")
                           for r in changed]
            self.assertNotEqual([u for u in other_users if u], users)
            if table == "chat":
                self.assertEqual([r["text"] for r in first], ["hello there", "cooperate"])
        events, _p, _path = await self.export_table(db, "events", "csv", "--pseudonymize", key)
        ann = tables.Pseudonyms(b"first key \x00\xff").name("ann")
        starts = [json.loads(r["data"]) for r in events if r["type"] == "match_start"
                  and r["source"] == "eot"]
        self.assertEqual(starts[0]["players"][0], ann)


class SQLiteTablesTests(TablesMixin, unittest.TestCase):
    def make_url(self) -> str:
        return sqlite_url(self)

    async def test_the_documented_prisoners_dilemma_analysis(self):
        """docs/export.md's worked example, on a session played over EOT."""
        if pandas is None:
            raise unittest.SkipTest("pandas is not installed")
        db = sqlite_url(self)
        server = await start_server(self, "--eot-pd-rounds", "3", db=db,
                                    listeners={"eot": None})
        port = server.port("eot")
        choices = {0: ["cooperate", "cooperate", "defect"],
                   1: ["cooperate", "defect", "defect"]}
        for pair in range(2):
            players = await join_all(server, port, "PrisonersDilemma", f"pd{pair}", 2,
                                     [f"a{pair}", f"b{pair}"])
            for round_number in range(3):
                for seat in (0, 1):
                    reply = await players[seat].move(choice=choices[seat][round_number])
                    self.assertEqual(reply["status"], "ok", reply)
        await server.stop()
        directory = self.mktemp()
        os.makedirs(directory)
        key = os.path.join(directory, "lab.key")
        with open(key, "wb") as file:
            file.write(b"lab key")
        for table in ("moves", "matches"):
            arguments = ["--db", db, "--table", table, "--source", "eot", "--pseudonymize",
                         key, "-o", os.path.join(directory, f"{table}.parquet")]
            await export(reactor, argument_parser().parse_args(arguments),
                         arguments[-1], arguments)
        with open(os.path.join(CHECKOUT, "docs", "export.md"), encoding="utf-8") as file:
            text = file.read()
        section = text[text.index("## Worked example"):]
        code = section[section.index("```python") + len("```python"):]
        code = code[:code.index("```")].replace("print(", "result = (")
        namespace: dict[str, Any] = {}
        previous = os.getcwd()
        os.chdir(directory)
        try:
            exec(compile(code, "docs/export.md", "exec"), namespace)
        finally:
            os.chdir(previous)
        self.assertEqual(namespace["cooperation"].to_dict(), {1: 1.0, 2: 0.5, 3: 0.0})
        timing = namespace["timing"]
        self.assertEqual(list(timing.index), [1, 2, 3])
        self.assertTrue((timing.decision_seconds >= 0).all())
        self.assertTrue(timing.round_seconds.iloc[1:].notna().all())
        played = namespace["played"]
        self.assertEqual(len(played), 2)
        self.assertEqual(list(played.ended), ["win", "win"])    # 5 + 0 + 1 against 5 + 5 + 1
        self.assertEqual(list(played.outcome_0), [0.0, 0.0])
        self.assertTrue(played.player_0.str.startswith("p_").all())

    async def test_refused_moves_and_how_matches_end(self):
        """move_refused rows, operator and server ends, in a log written directly."""
        db = sqlite_url(self)
        store = open_store(db, reactor)
        await store.start()
        rows = [
            (10.0, "eot", "match_start", None, None, "m1", None,
             json.dumps({"game": "PD", "players": ["x", "y"], "ranked": False, "rounds": 3})),
            (12.0, "eot", "move", "x", None, "m1", "10.0.0.1:5",
             json.dumps({"seat": 0, "move": {"choice": "C", "meta": {"a": [1]}}})),
            (13.5, "eot", "move_refused", "x", None, "m1", None,
             json.dumps({"seat": 0, "move": {"choice": "Z"}, "message": "not your turn"})),
            (15.0, "eot", "move", "y", None, "m1", None,
             json.dumps({"seat": 1, "move": {"choice": "D"}})),
            (16.0, "web", "operator_end_match", "op", None, "m1", None, json.dumps({})),
            (16.0, "eot", "match_end", None, None, "m1", None,
             json.dumps({"outcome": None, "aborted_by": -1})),
            (20.0, "eot", "match_start", None, None, "m2", None,
             json.dumps({"game": "TicTacToe", "players": ["x", "y", "z"], "ranked": False})),
            (21.0, "eot", "match_end", None, None, "m2", None,
             json.dumps({"outcome": [0.5, 0.5, 0.5], "aborted_by": None})),
            (22.0, "eot", "match_start", None, None, "m3", None,
             json.dumps({"game": "TicTacToe", "players": ["x", "y"], "ranked": False})),
            (23.0, "eot", "match_end", None, None, "m3", None,
             json.dumps({"outcome": [0.0, 1.0], "aborted_by": -1})),
            (24.0, "uttt", "match_start", None, None, "m4", None,
             json.dumps({"game": "uttt", "players": ["x", "y"], "ranked": True})),
            (25.0, "uttt", "match_end", None, None, "m4", None,
             json.dumps({"outcome": [0.0, 1.0], "aborted_by": 0, "end": "expired"})),
            (26.0, "uttt", "match_start", None, None, "m5", None,
             json.dumps({"game": "uttt", "players": ["x", "y"], "ranked": True})),
        ]
        await store.run(event_queries.append_events, rows)
        await store.close()
        moves, _p, _path = await self.export_table(db, "moves", "csv")
        self.assertEqual([(r["move_number"], r["accepted"], r["refusal"], r["decision_seconds"],
                           r["arg_choice"]) for r in moves],
                         [(1, True, None, 2.0, "C"), (2, False, "not your turn", 1.5, "Z"),
                          (2, True, None, 3.0, "D")])
        self.assertEqual(json.loads(moves[0]["arg_meta"]), {"a": [1]})
        parquet, _p, _path = await self.export_table(db, "moves", "parquet")
        self.assertEqual(parquet[0]["arg_meta"], moves[0]["arg_meta"])
        matches, _p, _path = await self.export_table(db, "matches", "jsonl")
        self.assertEqual([(r["match"], r["ended"]) for r in matches],
                         [("m1", "operator"), ("m2", "draw"), ("m3", "server"),
                          ("m4", "expired"), ("m5", "open")])
        self.assertEqual(json.loads(matches[0]["parameters"]), {"rounds": 3})
        self.assertEqual((matches[0]["moves"], matches[0]["refused_moves"]), (2, 1))
        self.assertEqual(matches[1]["player_2"], "z")     # as many seats as the largest
        self.assertIsNone(matches[0]["player_2"])

    def test_codebook_describes_every_table_and_column(self):
        directory = self.mktemp()
        paths = write_codebook(directory)
        with open(paths[1], encoding="utf-8") as file:
            book = json.load(file)
        self.assertEqual([t["name"] for t in book["tables"]], list(tables.TABLES))
        for table in book["tables"]:
            self.assertEqual([c["name"] for c in table["columns"]],
                             [c.name for c in tables.TABLES[table["name"]].columns])
        with open(paths[0], encoding="utf-8") as file:
            text = file.read()
        for table in tables.TABLES.values():
            for column in table.columns:
                self.assertIn(f"`{column.name}`", text)
        self.assertIn("`decision_seconds`", text)
        self.assertIn("move_refused", book["event_types"])

    def test_clear_errors(self):
        cases = [(["--format", "parquet"], "Parquet needs an output file"),
                 (["--pseudonymize", "/nonexistent/key"], "cannot use the pseudonym key")]
        db = sqlite_url(self)
        open(db[len("sqlite:"):], "w").close()
        for arguments, message in cases:
            errors = io.StringIO()
            with contextlib.redirect_stderr(errors), self.assertRaises(SystemExit) as raised:
                main(["--db", db, *arguments])
            self.assertEqual(raised.exception.code, 2)
            self.assertIn(message, errors.getvalue())

    async def test_command_line(self):
        """The tables, Parquet (its format from the extension) and the codebook
        from the installed command, in a process of its own."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [CHECKOUT, os.environ.get("PYTHONPATH")])))
        db = await self.play()
        directory = self.mktemp()
        os.makedirs(directory)
        target = os.path.join(directory, "chat.parquet")
        _out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "gtserver.export", "--db", db, "--table", "chat",
                             "-o", target], env=env)
        self.assertEqual(code, 0, err)
        self.assertIn(b"2 chat rows written", err)
        self.assertEqual(pq.read_table(target).column("text").to_pylist(),
                         ["hello there", "cooperate"])
        with open(os.path.join(directory, "chat.provenance.json")) as file:
            self.assertEqual(json.load(file)["format"], "parquet")
        book = os.path.join(directory, "book")
        _out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "gtserver.export", "--codebook", book], env=env)
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(os.listdir(book)), ["codebook.json", "codebook.md"])

    def test_sidecar_names(self):
        self.assertEqual(sidecar_path("out.parquet"), "out.provenance.json")
        self.assertEqual(sidecar_path("out.jsonl"), "out.provenance.json")
        self.assertEqual(sidecar_path("out.txt"), "out.txt.provenance.json")


class PostgresTablesTests(TablesMixin, unittest.TestCase):
    def make_url(self) -> str:
        return postgres_url(self)
