"""ELO arithmetic and the rating service on a real store."""

from twisted.internet import reactor
from twisted.trial import unittest

from gtserver.core import Core
from gtserver.core.passwords import PasswordHasher
from gtserver.core.ratings import expected_score, updated_pair, updated_rating
from gtserver.store import open_store
from tests.support import sqlite_url


class ArithmeticTests(unittest.TestCase):
    def test_expected_score(self):
        self.assertEqual(expected_score(1000, 1000), 0.5)
        self.assertAlmostEqual(expected_score(1200, 1000), 0.7597, places=4)
        self.assertAlmostEqual(expected_score(1000, 1200) + expected_score(1200, 1000), 1.0)

    def test_updates_with_k_20(self):
        self.assertEqual(updated_pair([1000, 1000], [1, 0]), [1010, 990])
        self.assertEqual(updated_pair([1000, 1000], [0.5, 0.5]), [1000, 1000])
        self.assertEqual(updated_pair([1010, 1000], [1, 0]), [1020, 990])
        self.assertEqual(updated_pair([1200, 1000], [0.5, 0.5]), [1195, 1005])
        self.assertEqual(updated_pair([1200, 1000], [0, 1]), [1185, 1015])

    def test_rounds_half_up(self):
        # 1000 + 20 * (1 - 0.975) = 1000.5 exactly enough to show the rule
        own = 1000
        opponent = own - round(400 * 1.5910646070264991)   # expected score ~ 0.975
        gain = 20 * (1 - expected_score(own, opponent))
        self.assertEqual(updated_rating(own, opponent, 1), int(own + gain + 0.5))


class RatingServiceTests(unittest.TestCase):
    async def setUp(self):
        self.store = open_store(sqlite_url(self), reactor)
        await self.store.start()
        self.addCleanup(self.store.close)
        self.core = Core(self.store, reactor, hasher=PasswordHasher(log2_n=4))
        self.ratings = self.core.ratings
        self.addCleanup(self.core.events.flush)

    async def user(self, name, temporary=False):
        if temporary:
            return await self.core.accounts.create_temporary(name)
        return await self.core.accounts.register(name, "pw")

    async def test_standings_rank_and_top_list(self):
        alice, bob, carol = [await self.user(n) for n in ("alice", "bob", "carol")]
        guest = await self.user("guest", temporary=True)
        await self.ratings.finish("m1", [alice.id, bob.id], [1, 0], "test")
        await self.ratings.finish("m2", [carol.id, bob.id], [0.5, 0.5], "test")
        standings = await self.ratings.standings([alice.id, bob.id, carol.id, guest.id, None])
        self.assertEqual([(s.elo, s.rank) for s in standings],
                         [(1010, 1), (990, 3), (1000, 2), (None, None), (None, None)])
        self.assertEqual(standings[0].top_names, ["alice", "carol", "bob"])
        self.assertEqual(standings[0].top_elos, [1010, 1000, 990])
        history = await self.ratings.history(bob.id)
        self.assertEqual([row[:3] for row in history], [("m1", 1000, 990), ("m2", 990, 990)])

    async def test_equal_ratings_share_a_rank_and_top_is_capped(self):
        users = [await self.user(f"user{n:03d}") for n in range(105)]
        # registered users enter the ranking with their first standing look-up
        await self.ratings.standings([user.id for user in users])
        standings = await self.ratings.standings([users[0].id, users[104].id])
        self.assertEqual([s.rank for s in standings], [1, 1])
        self.assertEqual(len(standings[0].top_names), 100)
        self.assertEqual(standings[0].top_names[:2], ["user000", "user001"])
