"""``gtserver-replay`` end to end: every built-in game played by real clients
over real sockets (illegal moves in between), on SQLite and PostgreSQL, then
replayed from the log; a tampered log fails with the right divergence."""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from gtserver.core.matches import decode_parameters, encode_parameters
from gtserver.replay import run
from gtserver.store.base import Statement
from tests.support import sqlite_url, start_server
from tests.test_eot import join_all
from tests.test_uttt import (
    UtttTestMixin,
    challenge,
    connect,
    move_frame,
    play,
)


def checkout_environment() -> dict[str, str]:
    """The environment for a subprocess importing this checkout's gtserver."""
    import gtserver
    root = os.path.dirname(os.path.dirname(os.path.abspath(gtserver.__file__)))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [root, os.environ.get("PYTHONPATH")]))}


def logged_events(kinds: tuple[str, ...] = ()):
    """Transaction: ``(id, kind, match_id, data)`` of the log's events, in order."""
    rows = yield Statement("SELECT id, kind, match_id, data FROM events ORDER BY id", ())
    return [(i, kind, match, json.loads(data) if data else None)
            for i, kind, match, data in rows if not kinds or kind in kinds]


def set_event_data(event_id: int, data: Any):
    yield Statement("UPDATE events SET data = ? WHERE id = ?", (json.dumps(data), event_id))


def delete_event(event_id: int):
    yield Statement("DELETE FROM events WHERE id = ?", (event_id,))


async def replay(db: str, *arguments: str) -> tuple[int, str, str]:
    """Run gtserver-replay in this process: (exit status, stdout, stderr)."""
    output, errors = io.StringIO(), io.StringIO()
    status = await run(["--db", db, *arguments], reactor, output, errors)
    return status, output.getvalue(), errors.getvalue()


class ParameterTests(unittest.TestCase):
    def test_payoff_matrices_survive_json(self):
        settings = {"rounds": 3, "payoffs": {("C", "C"): 3.0, ("C", "D"): 0.0}}
        encoded = json.loads(json.dumps(encode_parameters(settings)))
        self.assertEqual(decode_parameters(encoded), settings)
        self.assertEqual(decode_parameters(encode_parameters({"$pairs": 1})), {"$pairs": 1})


class EOTReplayMixin:
    """Every EOT game over a real TCP socket, then the replay of its log."""

    def database(self) -> str:
        return sqlite_url(self)

    async def play_every_eot_game(self) -> tuple[Any, str, dict[str, int]]:
        db = self.database()
        server = await start_server(self, "--eot-pd-rounds", "3", "--eot-pd-payoffs",
                                    "4,3,1,0", db=db, listeners={"eot": None})
        port = server.port("eot")
        refused = 0

        async def illegal(player, **arguments):
            """A move the game refuses: logged as move_refused."""
            nonlocal refused
            reply = await player.move(**arguments)
            self.assertEqual(reply["status"], "illegalmove", arguments)
            self.assertFalse(json.dumps(reply["message"]).startswith('"framework: '))
            refused += 1

        async def out_of_turn(player, **arguments):
            """A move the framework refuses (turn, game over): no game refusal."""
            reply = await player.move(**arguments)
            self.assertTrue(reply["message"].startswith("framework: "), reply)

        async def legal(player, **arguments):
            reply = await player.move(**arguments)
            self.assertEqual(reply["status"], "ok", (arguments, reply))

        # TicTacToe to a win, with refusals, then a restart (a new match)
        players = await join_all(server, port, "TicTacToe", "ttt", 2, ["ann", "bob"])
        starter = (await players[0].state())["data"]["current"][0]
        first, second = players[starter], players[1 - starter]
        await legal(first, position=4)
        await illegal(second, position=4)
        await illegal(second, position=9)
        await illegal(second, square=1)
        for mover, position in ((second, 0), (first, 3), (second, 1), (first, 5)):
            await legal(mover, position=position)
        await out_of_turn(second, position=6)     # the game is over
        self.assertEqual((await players[0].restart())["status"], "ok")
        starter = (await players[0].state())["data"]["current"][0]
        await legal(players[starter], position=0)
        await illegal(players[1 - starter], position=0)
        self.assertEqual((await players[1].restart())["status"], "ok")   # mid-game

        (echo,) = await join_all(server, port, "Echo", "echo", 1, ["eve"])
        await legal(echo, msg="hello")
        await illegal(echo, msg=5)
        await illegal(echo, msg="error")
        await legal(echo, msg="again")

        chatters = await join_all(server, port, "Chat", "chat", 2, ["cy", "dee"])
        await illegal(chatters[0], message="before a name")
        await legal(chatters[0], name="cy")
        await illegal(chatters[1], name="cy")
        await legal(chatters[1], name="dee")
        await legal(chatters[0], message="hi dee")
        await illegal(chatters[1], message=7)

        for game, choices in (("PrisonersDilemma", ("cooperate", "defect")),
                              ("StagHunt", ("stag", "hare"))):
            pair = await join_all(server, port, game, game, 2, ["pat", "quin"])
            await illegal(pair[0], choice="maybe")
            for round_number in range(3):
                await legal(pair[0], choice=choices[round_number % 2])
                await out_of_turn(pair[0], choice=choices[0])   # already chose
                await legal(pair[1], choice=choices[0])
            await out_of_turn(pair[1], choice=choices[0])       # the game is over

        dicers = await join_all(server, port, "Yahtzee", "dice", 2, ["rae", "sol"])
        await illegal(dicers[0], roll_dice=[0])             # names first
        await legal(dicers[0], name="rae")
        await illegal(dicers[1], name="rae")
        await legal(dicers[1], name="sol")
        state = (await dicers[0].state())["data"]
        roller = dicers[state["current"][0]]
        await illegal(roller, roll_dice=[7])
        await legal(roller, roll_dice=[0, 1, 2])
        await illegal(roller, score="add points", category="Nothing")
        await legal(roller, score="cross out", category="Chance")

        await server.core.events.flush()
        return server, db, {"refused": refused}

    async def test_every_eot_game_replays_and_tampering_fails(self):
        server, db, counts = await self.play_every_eot_game()
        events = await server.store.run(logged_events)
        starts = [e for e in events if e[1] == "match_start"]
        self.assertEqual(sorted({data["game"] for _i, _k, _m, data in starts}),
                         ["Chat", "Echo", "PrisonersDilemma", "StagHunt", "TicTacToe",
                          "Yahtzee"])
        self.assertEqual(len(starts), 8)     # TicTacToe restarted twice
        for _id, _kind, _match, data in starts:
            self.assertIsInstance(data["seed"], int)
        pd = next(data for *_, data in starts if data["game"] == "PrisonersDilemma")
        self.assertEqual(decode_parameters(pd["parameters"]), {"rounds": 3, "payoffs": {
            ("cooperate", "cooperate"): 3.0, ("cooperate", "defect"): 0.0,
            ("defect", "cooperate"): 4.0, ("defect", "defect"): 1.0}})
        refusals = [e for e in events if e[1] == "move_refused"]
        self.assertEqual(len(refusals), counts["refused"])
        moves = [e for e in events if e[1] == "move"]
        self.assertTrue(all(len(data["state_hash"]) == 64 for *_, data in moves))

        status, output, errors = await replay(db, "--all")
        self.assertEqual((status, errors), (0, ""))
        self.assertIn(f"8 matches checked (4 finished), {len(moves)} moves, "
                      f"{len(refusals)} refusals", output)
        status, output, _ = await replay(db, "--game", "Yahtzee")
        self.assertEqual(status, 0)
        self.assertIn("1 matches checked (0 finished), 4 moves, 4 refusals, "
                      "7 matches of other games skipped", output)

        # a move's arguments changed: the TicTacToe winner's last move
        ttt = [e for e in moves if e[3]["game"] == "TicTacToe"]
        event_id, _kind, match_id, data = ttt[4]
        await server.store.run(set_event_data, event_id,
                               {**data, "move": {"position": 8}})
        status, _, errors = await replay(db, "--match", match_id)
        self.assertEqual(status, 1)
        self.assertIn(f"divergence in match {match_id} at event {event_id}: state hash", errors)
        await server.store.run(set_event_data, event_id, data)
        self.assertEqual((await replay(db, "--match", match_id))[0], 0)

        # a refusal's message changed, then a refusal made of a legal move
        event_id, _kind, match_id, data = refusals[0]
        await server.store.run(set_event_data, event_id, {**data, "message": "no"})
        status, _, errors = await replay(db, "--all")
        self.assertEqual(status, 1)
        self.assertIn(f"match {match_id} at event {event_id}: refused with "
                      f"{data['message']!r} on replay, logged 'no'", errors)
        await server.store.run(set_event_data, event_id, {**data, "move": {"position": 0}})
        status, _, errors = await replay(db, "--all")
        self.assertIn(f"at event {event_id}: logged as refused", errors)
        self.assertIn("accepted on replay", errors)
        await server.store.run(set_event_data, event_id, data)

        # a refusal deleted: the next move recorded how many came before it
        event_id, _kind, match_id, data = refusals[1]
        self.assertEqual(data["message"], "position must be between 0 and 8")
        next_move = next(e for e in moves if e[0] > event_id)
        self.assertEqual((next_move[2], next_move[3]["refusals_before"]), (match_id, 3))
        await server.store.run(delete_event, event_id)
        status, _, errors = await replay(db, "--match", match_id)
        self.assertEqual(status, 1)
        self.assertIn(f"match {match_id} at event {next_move[0]}: 3 refusals recorded before "
                      "this move, 2 move_refused events in the log", errors)

        # a seed altered: Yahtzee's dice (and so its first state) differ
        (event_id, _kind, match_id, data), = [
            e for e in starts if e[3]["game"] == "Yahtzee"]
        await server.store.run(set_event_data, event_id, {**data, "seed": data["seed"] + 1})
        status, _, errors = await replay(db, "--game", "Yahtzee")
        self.assertEqual(status, 1)
        first_move = next(e for e in events if e[2] == match_id
                          and e[1] in ("move", "move_refused"))
        self.assertIn(f"match {match_id} at event {first_move[0]}: state hash", errors)

        # the outcome altered at the end of the PrisonersDilemma match
        end = next(e for e in events if e[1] == "match_end" and e[2] == pd_match(starts))
        swapped = end[3]["outcome"][::-1]
        self.assertNotEqual(swapped, end[3]["outcome"])
        await server.store.run(set_event_data, end[0], {**end[3], "outcome": swapped})
        status, _, errors = await replay(db, "--game", "PrisonersDilemma")
        self.assertEqual(status, 1)
        self.assertIn(f"at event {end[0]}: outcome {swapped!r} logged, "
                      f"{end[3]['outcome']!r} on replay", errors)

        # the match_start deleted: its moves belong to no match
        await server.store.run(delete_event, event_id)
        status, _, errors = await replay(db, "--match", match_id)
        self.assertIn(f"event {first_move[0]}: {first_move[1]} of a match without "
                      "match_start", errors)
        self.assertEqual(status, 1)
        status, _, errors = await replay(db, "--match", "nonesuch")
        self.assertEqual((status, errors.strip()[-24:]), (1, "no such match in the log"))


def pd_match(starts: list[tuple]) -> str:
    return next(match for _i, _k, match, data in starts if data["game"] == "PrisonersDilemma")


class SQLiteEOTReplayTests(EOTReplayMixin, unittest.TestCase):
    pass


class PostgresEOTReplayTests(EOTReplayMixin, unittest.TestCase):
    def database(self) -> str:
        from tests.pgcluster import postgres_url
        return postgres_url(self)


class UtttReplayMixin(UtttTestMixin):
    def database(self) -> str:
        return sqlite_url(self)

    async def test_a_match_across_a_restart_replays(self):
        db = self.database()
        await self.serve(db=db)
        alice, bob = await self.users("alice", "bob")
        sessions = (alice.session, bob.session)
        update = await challenge(self, alice, bob, "bob")
        match_id = update["id"]
        await play(self, match_id, [alice, bob], [(1, 1, 1, 1), (1, 1, 0, 0)])
        alice.send("move", move_frame(match_id, (1, 1, 1, 1)))    # taken, and elsewhere
        refused = await alice.expect("match_update")
        self.assertEqual(refused["match_state"]["last_move"],
                         {"sub_x": 1, "sub_y": 1, "x": 0, "y": 0})
        for client in (alice, bob):
            await client.disconnect()
        await self.server.core.events.flush()
        await self.server.stop()

        await self.serve(db=db)
        clients = []
        for session in sessions:
            client = await connect(self, self.port)
            client.send("reconnect", {"id": session})
            self.assertTrue((await client.expect("reconnect_response"))["success"])
            await client.expect("elo_update")
            await client.expect("friends_update")
            await client.expect("match_update")
            clients.append(client)
        clients[0].send("move", move_frame(match_id, (2, 2, 0, 0)))   # wrong sub-board
        await clients[0].expect("match_update")
        await play(self, match_id, clients, [(0, 0, 1, 1), (1, 1, 2, 2)])
        clients[1].send("end_match", {"id": match_id})
        await clients[1].expect("match_update")
        await self.server.core.events.flush()

        events = await self.server.store.run(logged_events, ("match_start", "move",
                                                             "move_refused", "match_end"))
        ours = [e for e in events if e[2] == match_id]
        self.assertEqual([kind for _i, kind, _m, _d in ours],
                         ["match_start", "move", "move", "move_refused", "move_refused",
                          "move", "move", "match_end"])
        self.assertIsInstance(ours[0][3]["seed"], int)
        self.assertEqual(ours[3][3]["message"], "you must play in the highlighted sub-board")
        # counted per daemon run: the refusal after the restart only
        self.assertEqual(ours[5][3]["refusals_before"], 1)
        self.assertEqual(ours[7][3]["refusals_before"], 0)
        status, output, errors = await replay(db, "--game", "UltimateTicTacToe")
        self.assertEqual((status, errors), (0, ""))
        self.assertIn("1 matches checked (1 finished), 4 moves, 2 refusals", output)

        # the move after the restart tampered: its arguments name another cell
        event_id, _kind, _match, data = ours[5]
        await self.server.store.run(set_event_data, event_id,
                                    {**data, "move": {**data["move"], "x": 0}})
        status, _, errors = await replay(db, "--all")
        self.assertEqual(status, 1)
        self.assertIn(f"divergence in match {match_id} at event {event_id}: state hash",
                      errors)
        # the same from the command line, as a process of its own
        output, errors, status = await getProcessOutputAndValue(
            sys.executable, ["-m", "gtserver.replay", "--db", db, "--all"],
            env=checkout_environment())
        self.assertEqual((status, output), (1, b""))
        self.assertIn(f"match {match_id} at event {event_id}: state hash".encode(), errors)
        await self.server.store.run(set_event_data, event_id, data)
        output, errors, status = await getProcessOutputAndValue(
            sys.executable, ["-m", "gtserver.replay", "--db", db, "--match", match_id],
            env=checkout_environment())
        self.assertEqual((status, errors), (0, b""))
        self.assertIn(b"1 matches checked (1 finished), 4 moves, 2 refusals", output)


class SQLiteUtttReplayTests(UtttReplayMixin, unittest.TestCase):
    pass


class PostgresUtttReplayTests(UtttReplayMixin, unittest.TestCase):
    def database(self) -> str:
        from tests.pgcluster import postgres_url
        return postgres_url(self)
