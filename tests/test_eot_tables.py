"""The table service on its own, with a fake clock: timeouts, waiters, restart."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial import unittest

from gtserver.core.matches import MatchOver, NotYourTurn
from gtserver.eot.lobby import (
    BadKey,
    JoinTimeout,
    NoSuchTable,
    TableEnded,
    TableService,
)
from gtserver.games import IllegalMove
from gtserver.registry import games


class RecordedEvents:
    def __init__(self) -> None:
        self.events = []

    def record(self, source, kind, **fields) -> None:
        self.events.append((source, kind, fields))


class FakeCore:
    """What the table service needs of the daemon: a clock and an event log."""

    def __init__(self) -> None:
        self.clock = task.Clock()
        self.events = RecordedEvents()

    def tables(self, join_timeout=10, game_timeout=100, finished_grace=60,
               tables_max=10_000) -> TableService:
        return TableService(games(), self.events, self.clock, join_timeout=join_timeout,
                            game_timeout=game_timeout, finished_grace=finished_grace,
                            tables_max=tables_max)


def joined(deferred):
    results = []
    deferred.addBoth(results.append)
    return results


class TableServiceTests(unittest.TestCase):
    def setUp(self):
        self.core = FakeCore()
        self.tables = self.core.tables(join_timeout=10, game_timeout=100)
        self.clock = self.core.clock

    def join(self, game, token, players, name=""):
        return joined(self.tables.join(game, token, players, name))

    def test_join_timeout_and_renumbering(self):
        first = self.join("TicTacToe", "t", 2)
        self.clock.advance(5)
        second = self.join("Chat", "c", 3)
        self.clock.advance(6)
        self.assertIsInstance(first[0].value, JoinTimeout)
        self.assertEqual(second, [])
        self.assertNotIn(("TicTacToe", "t"), self.tables.tables)
        third = self.join("Chat", "c", None)
        fourth = self.join("Chat", "c", None)
        self.assertEqual([r[0].player_id for r in (second, third, fourth)], [0, 1, 2])

    def test_cancelled_join_frees_the_seat(self):
        waiting = self.tables.join("TicTacToe", "t", 2, "a")
        waiting.addErrback(lambda failure: None)
        waiting.cancel()
        self.assertNotIn(("TicTacToe", "t"), self.tables.tables)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def play_echo(self):
        (result,) = self.join("Echo", "e", 1)
        return result

    def test_state_waiters_and_cancel(self):
        me = self.play_echo()
        args = ("Echo", "e", me.player_id, me.key)
        self.assertEqual(self.tables.state(*args)["echo"], "")
        waiter = self.tables.state(*args)
        other = self.tables.state(*args)
        other.addErrback(lambda failure: None)
        other.cancel()
        table = self.tables.tables[("Echo", "e")]
        self.assertEqual(len(table.players[0].waiters), 1)
        results = joined(waiter)
        self.tables.move(*args, {"msg": "x"})
        self.assertEqual(results[0]["echo"], "x")
        self.assertEqual(table.parked, set())
        self.assertEqual([event[1] for event in self.core.events.events][-2:],
                         ["move", "turn_sent"])  # the waiter was told it is its turn

    def test_illegal_move_makes_the_next_state_immediate(self):
        me = self.play_echo()
        args = ("Echo", "e", me.player_id, me.key)
        self.tables.state(*args)
        self.assertRaises(IllegalMove, self.tables.move, *args, {"msg": "error"})
        self.assertEqual(self.tables.state(*args)["echo"], "error")

    def test_turns_and_game_over(self):
        seats = [self.join("TicTacToe", "t", 2), self.join("TicTacToe", "t", 2)]
        players = [seat[0] for seat in seats]
        table = self.tables.tables[("TicTacToe", "t")]
        starter = table.match.game.current()[0]
        waiting = players[1 - starter]
        self.assertRaises(NotYourTurn, self.tables.move, "TicTacToe", "t",
                          waiting.player_id, waiting.key, {"position": 0})
        self.assertRaises(BadKey, self.tables.move, "TicTacToe", "t", starter, "nope",
                          {"position": 0})
        table.match.game.over = True
        self.assertRaises(MatchOver, self.tables.move, "TicTacToe", "t", starter,
                          players[starter].key, {"position": 0})

    def test_idle_table_ends_waiters(self):
        me = self.play_echo()
        args = ("Echo", "e", me.player_id, me.key)
        self.tables.state(*args)
        self.clock.advance(60)
        results = joined(self.tables.state(*args))   # a request: activity at t=60
        self.clock.advance(99)
        self.assertEqual(results, [])
        self.clock.advance(2)
        self.assertIsInstance(results[0].value, TableEnded)
        self.assertRaises(NoSuchTable, self.tables.state, *args)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart_of_a_running_game_owes_nothing_old(self):
        seats = [self.join("Chat", "c", 2), self.join("Chat", "c", 2)]
        first, second = (seat[0] for seat in seats)
        a = ("Chat", "c", first.player_id, first.key)
        b = ("Chat", "c", second.player_id, second.key)
        self.tables.move(*a, {"name": "a", "message": "old game"})
        self.tables.restart(*a)
        # Chat is never over: everybody's next state is the new game, at once.
        self.assertEqual(self.tables.state(*b)["messages"], [])
        self.assertEqual(self.tables.state(*a)["messages"], [])
        self.assertEqual(len(joined(self.tables.state(*b))), 0)    # then it parks

    def test_restart_of_a_finished_game_owes_its_end_to_all_but_the_restarter(self):
        seats = [self.join("TicTacToe", "t", 2, "x"), self.join("TicTacToe", "t", 2, "y")]
        players = [seat[0] for seat in seats]
        requests = [("TicTacToe", "t", p.player_id, p.key) for p in players]
        table = self.tables.tables[("TicTacToe", "t")]
        starter = table.match.game.current()[0]
        for position in (0, 3, 1, 4, 2):
            self.tables.move(*requests[table.match.game.current()[0]],
                             {"position": position})
        finals = [self.tables.state(*request) for request in requests]
        self.assertEqual(finals[0]["winner"], starter)
        watcher = self.tables.observe("TicTacToe", "t", "x")
        self.tables.restart(*requests[0])
        self.assertEqual(self.tables.state(*requests[1]), finals[1])
        self.assertEqual(self.tables.state(*requests[1])["board"], [-1] * 9)
        self.assertEqual(self.tables.state(*requests[0])["board"], [-1] * 9)
        observed = ("TicTacToe", "t", watcher.player_id, watcher.key, True)
        self.assertEqual(self.tables.state(*observed), finals[0])
        self.assertEqual(self.tables.state(*observed)["board"], [-1] * 9)

    def test_released_waiters_share_one_view(self):
        seats = [self.join("Chat", "c", 3, name) for name in ("ann", "bob", "cy")]
        players = [seat[0] for seat in seats]
        requests = [("Chat", "c", p.player_id, p.key) for p in players]
        self.tables.move(*requests[0], {"name": "ann"})
        watcher = self.tables.observe("Chat", "c", "ann")
        requests.append(("Chat", "c", watcher.player_id, watcher.key, True))
        for request in requests:
            self.tables.state(*request)           # first states: at once
        results = [joined(self.tables.state(*request)) for request in requests]
        self.tables.move(*requests[0], {"message": "hello"})
        views = [result[0] for result in results]
        self.assertEqual(views[0]["messages"], [["ann", "hello"]])
        for view in views[1:]:
            self.assertIs(view, views[0])
        # The next version gets a new view, not the old object.
        self.tables.move(*requests[1], {"name": "bob"})
        fresh = self.tables.state(*requests[1])
        self.assertIsNot(fresh, views[0])
        self.assertEqual(fresh["messages"], [["ann", "hello"]])

    def test_stop_fails_every_waiter(self):
        self.tables.startService()
        pending = self.join("TicTacToe", "t", 2)
        self.tables.stopService()
        self.assertIsInstance(pending[0].value, TableEnded)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.tables.tables, {})


class ReleaseTests(unittest.TestCase):
    """Finished tables are released soon; the number of tables is bounded."""

    def setUp(self):
        self.core = FakeCore()
        self.tables = self.core.tables(join_timeout=10, game_timeout=3600,
                                       finished_grace=30, tables_max=5)
        self.clock = self.core.clock

    def finished_tictactoe(self, token="t"):
        seats = [joined(self.tables.join("TicTacToe", token, 2, name)) for name in "xy"]
        requests = [("TicTacToe", token, seat[0].player_id, seat[0].key) for seat in seats]
        game = self.tables.tables[("TicTacToe", token)].match.game
        for position in (0, 3, 1, 4, 2):
            self.tables.move(*requests[game.current()[0]], {"position": position})
        self.assertTrue(game.is_over())
        return requests

    def test_released_after_the_grace_once_every_player_saw_the_end(self):
        requests = self.finished_tictactoe()
        final = self.tables.state(*requests[0])
        self.assertTrue(final["gameover"])
        self.clock.advance(100)         # one player has not seen the end: kept
        self.assertIn(("TicTacToe", "t"), self.tables.tables)
        self.assertEqual(self.tables.state(*requests[1]), final)   # its final, once
        self.clock.advance(29)
        waiting = joined(self.tables.state(*requests[1]))   # a request: the grace restarts
        self.clock.advance(29)
        self.assertIn(("TicTacToe", "t"), self.tables.tables)
        self.assertEqual(waiting, [])
        self.clock.advance(1)
        self.assertNotIn(("TicTacToe", "t"), self.tables.tables)
        self.assertIsInstance(waiting[0].value, TableEnded)
        self.assertIn("released", str(waiting[0].value))
        self.assertRaises(NoSuchTable, self.tables.state, *requests[0])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.tables.tables, {})     # its match with it
        self.assertEqual(self.core.events.events[-1][1], "match_end")

    def test_restart_within_the_grace_keeps_the_table(self):
        requests = self.finished_tictactoe()
        for request in requests:
            self.tables.state(*request)
        self.clock.advance(20)
        self.tables.restart(*requests[0])
        self.clock.advance(3000)        # a running game: the game timeout applies again
        self.assertIn(("TicTacToe", "t"), self.tables.tables)
        self.assertTrue(self.tables.state(*requests[1])["gameover"])   # the old end
        self.assertEqual(self.tables.state(*requests[1])["board"], [-1] * 9)
        self.clock.advance(3600)
        self.assertNotIn(("TicTacToe", "t"), self.tables.tables)

    def test_the_table_idle_longest_makes_room(self):
        waiting = []
        for number in range(5):
            (me,) = joined(self.tables.join("Echo", f"e{number}", 1, ""))
            self.tables.state("Echo", f"e{number}", me.player_id, me.key)
            waiting.append(joined(self.tables.state("Echo", f"e{number}", me.player_id,
                                                    me.key)))
            self.clock.advance(1)
        self.assertRaises(BadKey, self.tables.state, "Echo", "e0", 0, "wrong")
        # e0 was just requested (even a refused request counts): e1 is the idlest.
        joined(self.tables.join("Echo", "new", 1, ""))
        self.assertEqual(len(self.tables.tables), 5)
        self.assertNotIn(("Echo", "e1"), self.tables.tables)
        self.assertIn(("Echo", "e0"), self.tables.tables)
        self.assertIsInstance(waiting[1][0].value, TableEnded)
        self.assertIn("make room", str(waiting[1][0].value))
        self.assertEqual(waiting[0], [])
