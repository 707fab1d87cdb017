"""Stored matches: moves are stored before they count, and come back after a restart."""

from __future__ import annotations

import random

from twisted.internet import reactor
from twisted.internet.defer import fail
from twisted.trial import unittest

from gtserver.core.events import EventLog
from gtserver.core.match_store import MatchStore
from gtserver.core.matches import (
    Match,
    MatchOver,
    NotYourTurn,
    Seat,
    move_keywords,
    state_hash,
)
from gtserver.games import IllegalMove
from gtserver.registry import games
from gtserver.store import StoreUnavailable, open_store
from tests.pgcluster import postgres_url


class RecordedEvents:
    def __init__(self) -> None:
        self.events = []

    def record(self, source, kind, **fields) -> None:
        self.events.append((source, kind, fields))


class MatchTests(unittest.TestCase):
    """The pure match: checks, moves, events through its recorder, rollback."""

    def setUp(self):
        self.events = RecordedEvents()
        self.match = Match.new(games()["TicTacToe"], [Seat("ann"), Seat("bob")], "test",
                               self.events, 10.0, rng=random.Random(1))

    def kinds(self):
        return [kind for _source, kind, _fields in self.events.events]

    def test_a_move_is_checked_played_and_recorded(self):
        self.match.started()
        first = self.match.game.current()[0]
        self.assertRaises(NotYourTurn, self.match.move, 1 - first, {"position": 0}, 11.0)
        self.assertRaises(IllegalMove, self.match.move, first, {"square": 0}, 11.0)
        self.assertRaises(IllegalMove, self.match.move, first, {"position": 9}, 11.0)
        self.assertEqual((self.kinds(), self.match.updated), (["match_start"], 10.0))
        self.match.move(first, {"position": 4}, 12.0, "127.0.0.1:5", {"note": 1})
        self.assertEqual(self.match.updated, 12.0)
        self.assertEqual(self.events.events[-1], (
            "test", "move", {"user": ["ann", "bob"][first], "match": self.match.id,
                             "address": "127.0.0.1:5",
                             "data": {"seat": first, "move": {"position": 4}, "note": 1,
                                      "state_hash": state_hash(self.match.game),
                                      "refusals_before": 0}}))

    def test_refusals_seeds_and_parameters_are_recorded(self):
        first = self.match.game.current()[0]
        before = state_hash(self.match.game)
        with self.assertRaises(IllegalMove) as refused:
            self.match.apply(first, {"position": 9}, 11.0)
        self.match.refused(first, {"position": 9}, refused.exception, "127.0.0.1:5")
        self.match.refused(first, {"position": 9}, IllegalMove({"why": object()}))
        source, kind, fields = self.events.events[0]
        self.assertEqual((source, kind, fields["user"], fields["address"]),
                         ("test", "move_refused", ["ann", "bob"][first], "127.0.0.1:5"))
        self.assertEqual(fields["data"], {"seat": first, "move": {"position": 9},
                                          "message": "position must be between 0 and 8",
                                          "state_hash": before})
        self.assertIsInstance(self.events.events[1][2]["data"]["message"], str)
        self.match.move(first, {"position": 0}, 12.0)
        self.assertEqual(self.events.events[-1][2]["data"]["refusals_before"], 2)
        self.match.end(None, 13.0)
        self.assertEqual(self.events.events[-1][2]["data"]["refusals_before"], 0)

        seeded = Match.new(games()["PrisonersDilemma"].configured(rounds=2),
                           [Seat("ann"), Seat("bob")], "test", self.events, 10.0)
        seeded.started()
        data = self.events.events[-1][2]["data"]
        self.assertEqual(data["seed"], seeded.extra["seed"])
        self.assertEqual(data["parameters"]["rounds"], 2)

    def test_the_end_is_recorded_once(self):
        self.match.end(1, 13.0)
        self.assertTrue(self.match.finished)
        self.assertEqual(self.match.aborted_by, 1)
        self.assertRaises(MatchOver, self.match.move, 0, {"position": 0}, 14.0)
        self.assertRaises(MatchOver, self.match.abort, 0, 14.0)
        self.match.end(None, 15.0)
        self.assertEqual((self.kinds(), self.match.updated), (["match_end"], 13.0))

    def test_the_view_counts_recorded_moves_only(self):
        first = self.match.game.current()[0]
        view = self.match.view(30.0)
        self.assertEqual((view["moves"], view["last_move_age"], view["age"], view["turn"]),
                         (0, None, 20.0, [["ann", "bob"][first]]))
        self.assertRaises(IllegalMove, self.match.move, first, {"position": 9}, 31.0)
        self.match.apply(first, {"position": 4}, 32.0)  # played, not yet recorded
        self.assertEqual(self.match.view(33.0)["moves"], 0)
        self.match.moved(first, {"position": 4})
        view = self.match.view(35.0)
        self.assertEqual((view["moves"], view["last_move_age"], view["turn"]),
                         (1, 3.0, [["ann", "bob"][1 - first]]))

    def test_rollback_undoes_a_move_and_an_abort(self):
        before = self.match.snapshot()
        game = self.match.game
        self.match.apply(game.current()[0], {"position": 4}, 20.0)
        self.match.abort(None, 21.0)
        self.match.extra["end"] = "aborted"
        self.match.rollback(before)
        self.assertIsNot(self.match.game, game)     # a new object: renderings see the change
        self.assertEqual(self.match.game.to_data(), Match.new(
            games()["TicTacToe"], [Seat("a"), Seat("b")], "test", self.events, 0.0,
            rng=random.Random(1)).game.to_data())
        self.assertEqual((self.match.updated, self.match.aborted_by, self.match.extra),
                         (10.0, None, {}))
        self.assertEqual(self.events.events, [])


class Keywords:
    def move(self, seat, position, *, hint=None):
        pass


class AnyKeywords:
    def move(self, seat, **options):
        pass


class PositionalOnly:
    def move(self, seat, position, /):
        pass


class MoveKeywordTests(unittest.TestCase):
    """The quick check of a move's arguments agrees with binding the signature."""

    def test_agrees_with_binding(self):
        import inspect
        cases = [{}, {"position": 1}, {"position": 1, "hint": 2}, {"hint": 2},
                 {"position": 1, "other": 3}, {"seat": 0}, {"self": 1, "position": 1},
                 {"options": 1}, {"anything": "x"}]
        for game_class in (Keywords, AnyKeywords, PositionalOnly):
            signature = inspect.signature(game_class.move)
            for arguments in cases:
                try:
                    signature.bind(game_class(), 0, **arguments)
                except TypeError:
                    binds = False
                else:
                    binds = True
                quick = move_keywords(game_class).accepts(arguments)
                # The quick check may send a move on to binding, never let a bad one by.
                self.assertFalse(quick and not binds, (game_class.__name__, arguments))
                if game_class is not PositionalOnly:
                    self.assertEqual(quick, binds, (game_class.__name__, arguments))


class MatchStoreTests(unittest.TestCase):
    url = "sqlite::memory:"

    async def setUp(self):
        self.store = open_store(self.url or postgres_url(self), reactor)
        await self.store.start()
        self.events = EventLog(self.store, reactor)
        self.events.startService()
        self.addCleanup(self.store.close)
        self.addCleanup(self.events.stopService)
        self.matches = self.new_match_store()
        self.match = await self.matches.create(
            "UltimateTicTacToe", [Seat("ann"), Seat("bob")], "test")

    def new_match_store(self) -> MatchStore:
        return MatchStore(self.store, games(), self.events, reactor)

    async def move(self, match, seat, arguments):
        """Apply, store (undone if that fails), then record: as a protocol does."""
        before = match.snapshot()
        match.apply(seat, arguments, reactor.seconds())
        try:
            await self.matches.save(match)
        except Exception:
            match.rollback(before)
            raise
        match.moved(seat, arguments)

    async def end(self, match, by_seat):
        before = match.snapshot()
        match.abort(by_seat, reactor.seconds())
        try:
            await self.matches.save(match)
        except Exception:
            match.rollback(before)
            raise
        match.ended()

    async def test_move_is_undone_when_it_cannot_be_stored(self):
        def broken_save(*arguments):
            return fail(StoreUnavailable("database down"))

        self.matches.writer.save = broken_save
        with self.assertRaises(StoreUnavailable):
            await self.move(self.match, 0, {"sub_x": 1, "sub_y": 1, "x": 0, "y": 0})
        state = self.match.game.state(0)
        self.assertEqual(sum(map(sum, state["complete_field"])), 0)
        self.assertEqual(self.match.updated, self.match.created)
        self.assertEqual(self.match.game.current(), [0])

        del self.matches.writer.save  # the database is back
        await self.move(self.match, 0, {"sub_x": 1, "sub_y": 1, "x": 0, "y": 0})
        self.assertEqual(self.match.game.state(0)["complete_field"][3][3], 1)

    async def test_end_is_undone_when_it_cannot_be_stored(self):
        def broken_save(*arguments):
            return fail(StoreUnavailable("database down"))

        updated = self.match.updated
        self.matches.writer.save = broken_save
        with self.assertRaises(StoreUnavailable):
            await self.end(self.match, by_seat=0)
        self.assertFalse(self.match.finished)
        self.assertEqual(self.match.updated, updated)
        del self.matches.writer.save
        await self.end(self.match, by_seat=0)
        self.assertTrue(self.match.finished)

    async def test_an_id_the_database_cannot_hold_names_no_match(self):
        for match_id in ("\ud800", f"{self.match.id}\udfff"):
            self.assertIsNone(await self.matches.load(match_id))
        self.assertIs(await self.matches.load(self.match.id), self.match)

    async def test_turns_and_end(self):
        with self.assertRaises(NotYourTurn):
            await self.move(self.match, 1, {"sub_x": 0, "sub_y": 0, "x": 0, "y": 0})
        await self.end(self.match, by_seat=1)
        self.assertTrue(self.match.finished)
        with self.assertRaises(MatchOver):
            await self.move(self.match, 0, {"sub_x": 0, "sub_y": 0, "x": 0, "y": 0})
        reloaded = self.new_match_store()
        self.assertEqual(await reloaded.load_open("test"), [])

    async def test_open_matches_are_restored(self):
        await self.move(self.match, 0, {"sub_x": 2, "sub_y": 0, "x": 1, "y": 1})
        reloaded = self.new_match_store()
        [match] = await reloaded.load_open("test")
        self.assertEqual(match.id, self.match.id)
        self.assertEqual([seat.name for seat in match.seats], ["ann", "bob"])
        self.assertEqual(match.game.state(0), self.match.game.state(0))
        self.assertEqual(match.game.current(), [1])


class PostgresMatchStoreTests(MatchStoreTests):
    url = None

    async def test_an_id_the_database_cannot_hold_names_no_match(self):
        await super().test_an_id_the_database_cannot_hold_names_no_match()
        self.assertIsNone(await self.matches.load("a\x00b"))
