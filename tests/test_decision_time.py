"""Decision times: the log records when a player was sent a state in which
it is to move (``turn_sent``), and the moves table measures each move from
there."""

from __future__ import annotations

import json

from twisted.trial import unittest

from gtserver.games import IllegalMove
from gtserver.tables import MoveDeriver
from tests.memory import MemoryDaemon
from tests.test_uttt import move_frame
from tests.test_uttt_memory import challenge, login


def event(time: float, kind: str, seat: int | None = None, **data) -> dict:
    if seat is not None:
        data["seat"] = seat
    return {"id": 0, "time": time, "source": "eot", "kind": kind, "user": None,
            "room": None, "match": "m", "address": None, "data": json.dumps(data),
            "run": 1}


def decisions(events: list[dict]) -> list[tuple]:
    deriver = MoveDeriver([])
    rows = [row for e in events for row in deriver.feed(e)]
    return [(row["seat"], round(row["decision_seconds"], 6), row["decision_from"])
            for row in rows]


class DeriverTests(unittest.TestCase):
    def test_each_move_runs_from_the_state_that_told_its_mover(self):
        self.assertEqual(decisions([
            event(100.0, "match_start", game="TicTacToe"),
            event(101.0, "turn_sent", 0),
            event(103.5, "move", 0, move={"position": 4}),
            event(104.0, "turn_sent", 1),
            event(104.5, "turn_sent", 1),     # told again: the first one counts
            event(106.0, "move_refused", 1, move={"position": 4}),
            event(107.0, "move", 1, move={"position": 0}),
        ]), [(0, 2.5, "turn_sent"), (1, 2.0, "turn_sent"), (1, 3.0, "turn_sent")])

    def test_simultaneous_choices_each_run_from_the_rounds_state(self):
        self.assertEqual(decisions([
            event(10.0, "match_start", game="PrisonersDilemma"),
            event(11.0, "turn_sent", 0), event(11.5, "turn_sent", 1),
            event(12.0, "move", 0, move={"choice": "cooperate"}),
            event(15.5, "move", 1, move={"choice": "defect"}),
        ]), [(0, 1.0, "turn_sent"), (1, 4.0, "turn_sent")])

    def test_logs_without_turn_sent_fall_back_on_the_previous_move(self):
        self.assertEqual(decisions([
            event(10.0, "match_start", game="TicTacToe"),
            event(12.0, "move", 0, move={"position": 1}),
            event(15.0, "move", 1, move={"position": 2}),
        ]), [(0, 2.0, "match_start"), (1, 3.0, "move")])


class TurnSentTests(unittest.TestCase):
    def kinds(self, server: MemoryDaemon) -> list[tuple]:
        server.result(server.core.events.flush())
        rows = server.result(server.store.run(_turns))
        return [(kind, user, json.loads(data)["seat"] if kind == "turn_sent" else None)
                for kind, user, data in rows]

    async def test_uttt_records_the_push_that_tells_the_player_to_move(self):
        server = MemoryDaemon(self)
        (alice, _), (bob, _) = [await login(self, server, name) for name in ("alice", "bob")]
        update = await challenge(self, alice, bob, "bob")
        recorded = self.kinds(server)
        self.assertEqual(recorded[0][0], "turn_sent")
        first = recorded[0][1]
        mover, other = (alice, bob) if first == "alice" else (bob, alice)
        mover.send("move", move_frame(update["id"], (0, 0, 1, 1)))
        await mover.expect("match_update")
        await other.expect("match_update")
        recorded = self.kinds(server)
        self.assertEqual([(kind, user) for kind, user, _seat in recorded],
                         [("turn_sent", first), ("move", first),
                          ("turn_sent", "bob" if first == "alice" else "alice")])

    def test_eot_records_the_state_reply_that_tells_the_player_to_move(self):
        server = MemoryDaemon(self, listeners=("eot",))
        tables = server.factory("eot").tables
        joined = [tables.join("TicTacToe", "t", 2, name) for name in ("ann", "bob")]
        server.flush()
        players = [self.successResultOf(d) for d in joined]
        views = [tables.state("TicTacToe", "t", p.player_id, p.key) for p in players]
        starter = views[0]["current"][0]
        recorded = self.kinds(server)
        self.assertEqual(recorded, [("turn_sent", ["ann", "bob"][starter], starter)])
        # The same state again (after a refused move) records nothing more.
        mover = players[starter]
        with self.assertRaises(IllegalMove):
            tables.move("TicTacToe", "t", mover.player_id, mover.key, {"position": 9})
        server.flush()
        tables.state("TicTacToe", "t", mover.player_id, mover.key)
        self.assertEqual([kind for kind, _user, _seat in self.kinds(server)], ["turn_sent"])


def _turns():
    from gtserver.store.base import Statement
    rows = yield Statement("SELECT kind, user_name, data FROM events WHERE kind IN "
                           "('turn_sent', 'move') ORDER BY id")
    return rows
