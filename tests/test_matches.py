"""The shared match service: moves are stored before they count."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import fail
from twisted.trial import unittest

from gtserver.core import Core
from gtserver.core.matches import MatchClosed, MatchService, Seat
from gtserver.core.passwords import PasswordHasher
from gtserver.games import IllegalMove
from gtserver.store import StoreUnavailable, open_store
from tests.pgcluster import postgres_url


class MatchServiceTests(unittest.TestCase):
    url = "sqlite::memory:"

    async def setUp(self):
        self.store = open_store(self.url or postgres_url(self), reactor)
        await self.store.start()
        self.core = Core(self.store, reactor, hasher=PasswordHasher(log2_n=4))
        self.core.startService()
        self.addCleanup(self.store.close)
        self.addCleanup(self.core.stopService)
        self.matches = self.core.matches
        self.match = await self.matches.create(
            "UltimateTicTacToe", [Seat("ann"), Seat("bob")], "test")

    async def test_move_is_undone_when_it_cannot_be_stored(self):
        def broken_save(*arguments):
            return fail(StoreUnavailable("database down"))

        self.matches.writer.save = broken_save
        with self.assertRaises(StoreUnavailable):
            await self.matches.move(self.match, 0, {"sub_x": 1, "sub_y": 1, "x": 0, "y": 0})
        state = self.match.game.state(0)
        self.assertEqual(sum(map(sum, state["complete_field"])), 0)
        self.assertEqual(self.match.updated, self.match.created)
        self.assertEqual(self.match.game.current(), [0])

        del self.matches.writer.save  # the database is back
        await self.matches.move(self.match, 0, {"sub_x": 1, "sub_y": 1, "x": 0, "y": 0})
        self.assertEqual(self.match.game.state(0)["complete_field"][3][3], 1)

    async def test_end_is_undone_when_it_cannot_be_stored(self):
        def broken_save(*arguments):
            return fail(StoreUnavailable("database down"))

        updated = self.match.updated
        self.matches.writer.save = broken_save
        with self.assertRaises(StoreUnavailable):
            await self.matches.end(self.match, by_seat=0)
        self.assertFalse(self.match.finished)
        self.assertEqual(self.match.updated, updated)
        del self.matches.writer.save
        await self.matches.end(self.match, by_seat=0)
        self.assertTrue(self.match.finished)

    async def test_an_id_the_database_cannot_hold_names_no_match(self):
        for match_id in ("\ud800", f"{self.match.id}\udfff"):
            self.assertIsNone(await self.matches.load(match_id))
        self.assertIs(await self.matches.load(self.match.id), self.match)

    async def test_turns_and_end(self):
        with self.assertRaises(IllegalMove):
            await self.matches.move(self.match, 1, {"sub_x": 0, "sub_y": 0, "x": 0, "y": 0})
        await self.matches.end(self.match, by_seat=1)
        self.assertTrue(self.match.finished)
        with self.assertRaises(MatchClosed):
            await self.matches.move(self.match, 0, {"sub_x": 0, "sub_y": 0, "x": 0, "y": 0})
        reloaded = MatchService(self.store, reactor, self.core.events, dict(self.core.games))
        self.assertEqual(await reloaded.load_open("test"), [])

    async def test_open_matches_are_restored(self):
        await self.matches.move(self.match, 0, {"sub_x": 2, "sub_y": 0, "x": 1, "y": 1})
        reloaded = MatchService(self.store, reactor, self.core.events, dict(self.core.games))
        [match] = await reloaded.load_open("test")
        self.assertEqual(match.id, self.match.id)
        self.assertEqual([seat.name for seat in match.seats], ["ann", "bob"])
        self.assertEqual(match.game.state(0), self.match.game.state(0))
        self.assertEqual(match.game.current(), [1])


class PostgresMatchServiceTests(MatchServiceTests):
    url = None

    async def test_an_id_the_database_cannot_hold_names_no_match(self):
        await super().test_an_id_the_database_cannot_hold_names_no_match()
        self.assertIsNone(await self.matches.load("a\x00b"))
