"""The session service on its own, with a fake clock: timeouts, waiters, restart."""

from __future__ import annotations

from dataclasses import replace

from twisted.internet import task
from twisted.trial import unittest

from gtserver.core.matches import MatchService
from gtserver.eot.lobby import (
    BadKey,
    GameOver,
    JoinTimeout,
    NoSuchSession,
    NotYourTurn,
    SessionEnded,
    SessionService,
)
from gtserver.eot.plugin import eot
from gtserver.eot.settings import LobbySettings
from gtserver.games import IllegalMove
from gtserver.option_types import default_settings
from gtserver.registry import games


class RecordedEvents:
    def __init__(self) -> None:
        self.events = []

    def record(self, source, kind, **fields) -> None:
        self.events.append((source, kind, fields))


class FakeCore:
    """What the session service needs: a clock and a match service without a store."""

    def __init__(self) -> None:
        self.clock = task.Clock()
        self.events = RecordedEvents()
        self.matches = MatchService(None, self.clock, self.events, games())


def lobby_settings(**changes) -> LobbySettings:
    return replace(default_settings(eot).lobby, **changes)


def joined(deferred):
    results = []
    deferred.addBoth(results.append)
    return results


class SessionServiceTests(unittest.TestCase):
    def setUp(self):
        self.core = FakeCore()
        self.sessions = SessionService(self.core.matches, self.core.clock,
                                       lobby_settings(join_timeout=10, game_timeout=100))
        self.clock = self.core.clock

    def join(self, game, token, players, name=""):
        return joined(self.sessions.join(game, token, players, name))

    def test_join_timeout_and_renumbering(self):
        first = self.join("TicTacToe", "t", 2)
        self.clock.advance(5)
        second = self.join("Chat", "c", 3)
        self.clock.advance(6)
        self.assertIsInstance(first[0].value, JoinTimeout)
        self.assertEqual(second, [])
        self.assertNotIn(("TicTacToe", "t"), self.sessions.sessions)
        third = self.join("Chat", "c", None)
        fourth = self.join("Chat", "c", None)
        self.assertEqual([r[0].player_id for r in (second, third, fourth)], [0, 1, 2])

    def test_cancelled_join_frees_the_seat(self):
        waiting = self.sessions.join("TicTacToe", "t", 2, "a")
        waiting.addErrback(lambda failure: None)
        waiting.cancel()
        self.assertNotIn(("TicTacToe", "t"), self.sessions.sessions)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def play_echo(self):
        (result,) = self.join("Echo", "e", 1)
        return result

    def test_state_waiters_and_cancel(self):
        me = self.play_echo()
        args = ("Echo", "e", me.player_id, me.key)
        self.assertEqual(self.sessions.state(*args)["echo"], "")
        waiter = self.sessions.state(*args)
        other = self.sessions.state(*args)
        other.addErrback(lambda failure: None)
        other.cancel()
        session = self.sessions.sessions[("Echo", "e")]
        self.assertEqual(len(session.players[0].waiters), 1)
        results = joined(waiter)
        self.sessions.move(*args, {"msg": "x"})
        self.assertEqual(results[0]["echo"], "x")
        self.assertEqual(session.parked, set())
        self.assertEqual(self.core.events.events[-1][1], "move")

    def test_illegal_move_makes_the_next_state_immediate(self):
        me = self.play_echo()
        args = ("Echo", "e", me.player_id, me.key)
        self.sessions.state(*args)
        self.assertRaises(IllegalMove, self.sessions.move, *args, {"msg": "error"})
        self.assertEqual(self.sessions.state(*args)["echo"], "error")

    def test_turns_and_game_over(self):
        seats = [self.join("TicTacToe", "t", 2), self.join("TicTacToe", "t", 2)]
        players = [seat[0] for seat in seats]
        session = self.sessions.sessions[("TicTacToe", "t")]
        starter = session.match.game.current()[0]
        waiting = players[1 - starter]
        self.assertRaises(NotYourTurn, self.sessions.move, "TicTacToe", "t",
                          waiting.player_id, waiting.key, {"position": 0})
        self.assertRaises(BadKey, self.sessions.move, "TicTacToe", "t", starter, "nope",
                          {"position": 0})
        session.match.game.over = True
        self.assertRaises(GameOver, self.sessions.move, "TicTacToe", "t", starter,
                          players[starter].key, {"position": 0})

    def test_idle_session_ends_waiters(self):
        me = self.play_echo()
        args = ("Echo", "e", me.player_id, me.key)
        self.sessions.state(*args)
        self.clock.advance(60)
        results = joined(self.sessions.state(*args))   # a request: activity at t=60
        self.clock.advance(99)
        self.assertEqual(results, [])
        self.clock.advance(2)
        self.assertIsInstance(results[0].value, SessionEnded)
        self.assertRaises(NoSuchSession, self.sessions.state, *args)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart_of_a_running_game_owes_nothing_old(self):
        seats = [self.join("Chat", "c", 2), self.join("Chat", "c", 2)]
        first, second = (seat[0] for seat in seats)
        a = ("Chat", "c", first.player_id, first.key)
        b = ("Chat", "c", second.player_id, second.key)
        self.sessions.move(*a, {"name": "a", "message": "old game"})
        self.sessions.restart(*a)
        # Chat is never over: everybody's next state is the new game, at once.
        self.assertEqual(self.sessions.state(*b)["messages"], [])
        self.assertEqual(self.sessions.state(*a)["messages"], [])
        self.assertEqual(len(joined(self.sessions.state(*b))), 0)    # then it parks

    def test_restart_of_a_finished_game_owes_its_end_to_all_but_the_restarter(self):
        seats = [self.join("TicTacToe", "t", 2, "x"), self.join("TicTacToe", "t", 2, "y")]
        players = [seat[0] for seat in seats]
        requests = [("TicTacToe", "t", p.player_id, p.key) for p in players]
        session = self.sessions.sessions[("TicTacToe", "t")]
        starter = session.match.game.current()[0]
        for position in (0, 3, 1, 4, 2):
            self.sessions.move(*requests[session.match.game.current()[0]],
                               {"position": position})
        finals = [self.sessions.state(*request) for request in requests]
        self.assertEqual(finals[0]["winner"], starter)
        watcher = self.sessions.observe("TicTacToe", "t", "x")
        self.sessions.restart(*requests[0])
        self.assertEqual(self.sessions.state(*requests[1]), finals[1])
        self.assertEqual(self.sessions.state(*requests[1])["board"], [-1] * 9)
        self.assertEqual(self.sessions.state(*requests[0])["board"], [-1] * 9)
        observed = ("TicTacToe", "t", watcher.player_id, watcher.key, True)
        self.assertEqual(self.sessions.state(*observed), finals[0])
        self.assertEqual(self.sessions.state(*observed)["board"], [-1] * 9)

    def test_released_waiters_share_one_view(self):
        seats = [self.join("Chat", "c", 3, name) for name in ("ann", "bob", "cy")]
        players = [seat[0] for seat in seats]
        requests = [("Chat", "c", p.player_id, p.key) for p in players]
        self.sessions.move(*requests[0], {"name": "ann"})
        watcher = self.sessions.observe("Chat", "c", "ann")
        requests.append(("Chat", "c", watcher.player_id, watcher.key, True))
        for request in requests:
            self.sessions.state(*request)           # first states: at once
        results = [joined(self.sessions.state(*request)) for request in requests]
        self.sessions.move(*requests[0], {"message": "hello"})
        views = [result[0] for result in results]
        self.assertEqual(views[0]["messages"], [["ann", "hello"]])
        for view in views[1:]:
            self.assertIs(view, views[0])
        # The next version gets a new view, not the old object.
        self.sessions.move(*requests[1], {"name": "bob"})
        fresh = self.sessions.state(*requests[1])
        self.assertIsNot(fresh, views[0])
        self.assertEqual(fresh["messages"], [["ann", "hello"]])

    def test_stop_fails_every_waiter(self):
        self.sessions.startService()
        pending = self.join("TicTacToe", "t", 2)
        self.sessions.stopService()
        self.assertIsInstance(pending[0].value, SessionEnded)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsInstance(self.core.matches, MatchService)


class ReleaseTests(unittest.TestCase):
    """Finished sessions are released soon; the number of sessions is bounded."""

    def setUp(self):
        self.core = FakeCore()
        self.sessions = SessionService(self.core.matches, self.core.clock, lobby_settings(
            join_timeout=10, game_timeout=3600, finished_grace=30, sessions_max=5))
        self.clock = self.core.clock

    def finished_tictactoe(self, token="t"):
        seats = [joined(self.sessions.join("TicTacToe", token, 2, name)) for name in "xy"]
        requests = [("TicTacToe", token, seat[0].player_id, seat[0].key) for seat in seats]
        game = self.sessions.sessions[("TicTacToe", token)].match.game
        for position in (0, 3, 1, 4, 2):
            self.sessions.move(*requests[game.current()[0]], {"position": position})
        self.assertTrue(game.is_over())
        return requests

    def test_released_after_the_grace_once_every_player_saw_the_end(self):
        requests = self.finished_tictactoe()
        final = self.sessions.state(*requests[0])
        self.assertTrue(final["gameover"])
        self.clock.advance(100)         # one player has not seen the end: kept
        self.assertIn(("TicTacToe", "t"), self.sessions.sessions)
        self.assertEqual(self.sessions.state(*requests[1]), final)   # its final, once
        self.clock.advance(29)
        waiting = joined(self.sessions.state(*requests[1]))   # a request: the grace restarts
        self.clock.advance(29)
        self.assertIn(("TicTacToe", "t"), self.sessions.sessions)
        self.assertEqual(waiting, [])
        self.clock.advance(1)
        self.assertNotIn(("TicTacToe", "t"), self.sessions.sessions)
        self.assertIsInstance(waiting[0].value, SessionEnded)
        self.assertIn("released", str(waiting[0].value))
        self.assertRaises(NoSuchSession, self.sessions.state, *requests[0])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.core.matches.matches, {})

    def test_restart_within_the_grace_keeps_the_session(self):
        requests = self.finished_tictactoe()
        for request in requests:
            self.sessions.state(*request)
        self.clock.advance(20)
        self.sessions.restart(*requests[0])
        self.clock.advance(3000)        # a running game: the game timeout applies again
        self.assertIn(("TicTacToe", "t"), self.sessions.sessions)
        self.assertTrue(self.sessions.state(*requests[1])["gameover"])   # the old end
        self.assertEqual(self.sessions.state(*requests[1])["board"], [-1] * 9)
        self.clock.advance(3600)
        self.assertNotIn(("TicTacToe", "t"), self.sessions.sessions)

    def test_the_session_idle_longest_makes_room(self):
        waiting = []
        for number in range(5):
            (me,) = joined(self.sessions.join("Echo", f"e{number}", 1, ""))
            self.sessions.state("Echo", f"e{number}", me.player_id, me.key)
            waiting.append(joined(self.sessions.state("Echo", f"e{number}", me.player_id,
                                                      me.key)))
            self.clock.advance(1)
        self.assertRaises(BadKey, self.sessions.state, "Echo", "e0", 0, "wrong")
        # e0 was just requested (even a refused request counts): e1 is the idlest.
        joined(self.sessions.join("Echo", "new", 1, ""))
        self.assertEqual(len(self.sessions.sessions), 5)
        self.assertNotIn(("Echo", "e1"), self.sessions.sessions)
        self.assertIn(("Echo", "e0"), self.sessions.sessions)
        self.assertIsInstance(waiting[1][0].value, SessionEnded)
        self.assertIn("make room", str(waiting[1][0].value))
        self.assertEqual(waiting[0], [])
