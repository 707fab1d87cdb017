"""Ultimate tic-tac-toe across the nodes of a deployment, in memory
(tests/memory.py's MemoryDeployment: one clock, one database, a bus hub).
Real Autobahn clients log in on different nodes; "nothing more arrives" is
an assertion after every node went quiet. The end-to-end tests with real
daemons on PostgreSQL are in :mod:`tests.test_uttt_cluster`."""

from __future__ import annotations

from twisted.trial import unittest

from gtserver.uttt.cluster import MATCH_LEASE, QUEUE_LEASE, ClusterMatches
from tests.memory import MemoryDeployment
from tests.test_uttt import challenge, move_frame, play, scripted_game
from tests.test_uttt_memory import UtttClient, connect, login


class ClusterMixin:
    nodes: tuple[str, ...] = ("a", "b")
    arguments: tuple[str, ...] = ()

    def setUp(self) -> None:
        self.dep = MemoryDeployment(self, self.nodes, *self.arguments, listeners=("uttt",))
        self.dep.advance(1.0)   # every node has seen every other at a lease check

    def service(self, node: str) -> ClusterMatches:
        return self.dep[node].factory("uttt").service

    async def user(self, node: str, name: str, matches: int = 0) -> UtttClient:
        return (await login(self, self.dep[node], name, matches=matches))[0]

    async def second_socket(self, node: str, first: UtttClient, matches: int = 0
                            ) -> UtttClient:
        """Another connection of ``first``'s user (its session) on ``node``."""
        client = await connect(self, self.dep[node])
        client.send("reconnect", {"id": first.session})
        self.assertTrue((await client.expect("reconnect_response"))["success"])
        await client.expect("elo_update")
        await client.expect("friends_update")
        for _ in range(matches):
            await client.expect("match_update")
        return client

    def home_of(self, match_id: str) -> str | None:
        leases = self.service(self.nodes[0]).leases
        return self.dep[self.nodes[0]].result(leases.holder(MATCH_LEASE + match_id))

    def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` pass a second at a time (lease checks run in between)."""
        for _ in range(int(seconds)):
            self.dep.advance(1.0)


class ChallengeTests(ClusterMixin, unittest.TestCase):
    async def test_a_named_challenge_across_nodes_is_homed_with_the_challenger(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        update = await challenge(self, bob, alice, "alice")
        self.assertEqual(update["match_state"]["player_a"], "bob")
        self.assertEqual(self.home_of(update["id"]), "b")
        self.assertIn(update["id"], self.service("b").open)
        self.assertNotIn(update["id"], self.service("a").open)
        await alice.nothing_more()
        await bob.nothing_more()

    async def test_a_full_game_across_nodes_rates_both_players(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        update = await challenge(self, alice, bob, "bob")
        final = await play(self, update["id"], [alice, bob], scripted_game("a"))
        self.assertEqual((final["game_over"], final["player_won"]), (True, "alice"))
        self.assertEqual((await alice.expect("elo_update"))["elo"], 1010)
        self.assertEqual((await bob.expect("elo_update"))["elo"], 990)
        await alice.nothing_more()
        await bob.nothing_more()
        self.assertEqual(self.home_of(update["id"]), None)   # released when it ended
        for node in ("a", "b"):
            self.assertEqual(self.service(node).open, {})
            self.assertEqual(self.service(node).remote, {})

    async def test_refusals_across_nodes(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        update = await challenge(self, alice, bob, "bob")
        # bob is not to move: the unchanged state comes back to him only
        bob.send("move", move_frame(update["id"], (1, 1, 1, 1)))
        self.assertEqual(await bob.expect("match_update"), update)
        # a cell outside the highlighted sub-board, after alice's first move
        alice.send("move", move_frame(update["id"], (0, 0, 2, 2)))
        moved = await alice.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), moved)
        bob.send("move", move_frame(update["id"], (0, 0, 0, 0)))
        self.assertEqual(await bob.expect("match_update"), moved)
        carol = await self.user("b", "carol")
        carol.send("move", move_frame(update["id"], (2, 2, 0, 0)))
        self.assertEqual((await carol.expect("error"))["msg"], "you do not play in this match")
        carol.send("end_match", {"id": "no-such-match"})
        self.assertEqual((await carol.expect("error"))["request"], "end_match")
        for first, second in ((bob, "alice"), (alice, "bob")):
            first.send("match_request", {"player": second})
            self.assertIn("already", (await first.expect("match_request_response"))["msg"])
        await alice.nothing_more()
        await bob.nothing_more()
