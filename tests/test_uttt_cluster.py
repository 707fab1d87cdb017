"""Ultimate tic-tac-toe across real daemons of one deployment
(tests/nodes.py: ``twistd gtserver --node`` processes on one PostgreSQL
database), played with the real client (gtserver.uttt.client) over real
sockets, including ``kill -9`` of a match's home. The logic is tested in
memory in :mod:`tests.test_uttt_cluster_memory`."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial import unittest

from gtserver.store import leases as lease_queries
from gtserver.store import open_store
from gtserver.uttt.client import ConnectionClosed, UtttClient, legal_moves
from gtserver.uttt.cluster import MATCH_LEASE
from tests.nodes import Node, eventually, start_nodes
from tests.wstimers import settle_websocket_timers

TTL, RENEW = 2.0, 0.5
LEASE_OPTIONS = ("--lease-ttl", str(TTL), "--lease-renew", str(RENEW))


class DeploymentTests(unittest.TestCase):
    timeout = 180

    async def start(self, count: int = 2) -> list[Node]:
        self.addCleanup(settle_websocket_timers)
        self.nodes = await start_nodes(self, count=count, listeners=("uttt",),
                                       options=LEASE_OPTIONS)
        return self.nodes

    async def user(self, node: Node, name: str) -> UtttClient:
        client = await UtttClient.connect(f"ws://127.0.0.1:{node.port('uttt')}/",
                                          timeout=30.0)
        self.addCleanup(client.abort)
        await client.login(name, "pw")
        return client

    async def resume(self, node: Node, session: str) -> tuple[UtttClient, object]:
        client = await UtttClient.connect(f"ws://127.0.0.1:{node.port('uttt')}/",
                                          timeout=30.0)
        self.addCleanup(client.abort)
        return client, await client.reconnect(session)

    async def home_of(self, match_id: str) -> str | None:
        store = getattr(self, "_store", None)
        if store is None:
            store = self._store = open_store(self.nodes[0].url, reactor)
            await store.start()
            self.addCleanup(store.close)
        return await store.run(lease_queries.holder, MATCH_LEASE + match_id, reactor.seconds())

    async def play(self, match_id: str, players: dict[str, list[UtttClient]], update: dict,
                   moves: int | None = None) -> dict:
        """Play first legal moves, from ``update`` on, ``moves`` of them (to the
        end if None); every socket of both players sees every update."""
        played = 0
        while not update["match_state"]["game_over"] and (moves is None or played < moves):
            mover = update["match_state"]["current_player"]
            move = legal_moves(update)[0]
            update = await players[mover][0].move(match_id, *move)
            for name, sockets in players.items():
                for socket in sockets[1:] if name == mover else sockets:
                    self.assertEqual(await socket.next_match(match_id), update)
            played += 1
        return update

    async def test_challenge_queue_and_a_full_game_between_nodes(self):
        a, b = await self.start()
        alice, bob = await self.user(a, "alice"), await self.user(b, "bob")
        alice_on_b = await self.user(b, "alice")
        self.assertEqual(await bob.match_request(None), "waiting for an opponent")
        self.assertEqual(await alice.match_request(None), "match started")
        update = await alice.next_match()
        match_id = update["id"]
        self.assertEqual(await bob.next_match(match_id), update)
        self.assertEqual(await alice_on_b.next_match(match_id), update)
        self.assertEqual(update["match_state"]["player_a"], "bob")
        final = await self.play(match_id, {"alice": [alice, alice_on_b], "bob": [bob]}, update)
        self.assertTrue(final["match_state"]["game_over"])
        standings = [await client.next_push("elo_update")
                     for client in (alice, alice_on_b, bob)]
        self.assertEqual(standings[0], standings[1])
        self.assertEqual(standings[0]["elo"] + standings[2]["elo"], 2000)
        # the leaderboard, read on either node, has the new ratings
        for node in (a, b):
            carol = await UtttClient.connect(f"ws://127.0.0.1:{node.port('uttt')}/")
            self.addCleanup(carol.abort)
            greeting = await carol.login(f"carol{node.name}", "pw")
            top = dict(zip(greeting.elo["top_names"], greeting.elo["top_elos"], strict=True))
            self.assertEqual((top["alice"], top["bob"]),
                             (standings[0]["elo"], standings[2]["elo"]))
        # a named challenge across nodes, and the friends list from either
        self.assertEqual(await bob.match_request("alice"), "match started")
        await alice.next_match()
        friends = await alice_on_b.friend("bob")
        self.assertEqual(friends["friends"], ["bob"])
        self.assertEqual(await alice.next_push("friends_update"), friends)
        for node in (a, b):
            self.assertNotIn("Traceback", node.output, node.output)

    async def test_kill_9_of_the_home_mid_match_players_finish_on_the_survivor(self):
        a, b = await self.start()
        alice, bob = await self.user(a, "alice"), await self.user(b, "bob")
        await alice.match_request("bob")                   # homed on a
        update = await bob.next_match()
        match_id = update["id"]
        self.assertEqual(await alice.next_match(match_id), update)
        self.assertEqual(await self.home_of(match_id), "a")
        update = await self.play(match_id, {"alice": [alice], "bob": [bob]}, update, moves=7)
        killed = reactor.seconds()
        await a.kill()
        await self.assertFailure(alice.next_push(timeout=10.0), ConnectionClosed)
        # alice's client reconnects to b with its session, and gets the match
        again, greeting = await self.resume(b, alice.session)
        self.assertEqual([m["id"] for m in greeting.matches], [match_id])
        self.assertEqual(greeting.matches[0]["match_state"], update["match_state"])
        players = {"alice": [again], "bob": [bob]}
        update = await self.play(match_id, players, update, moves=1)
        # the first move waited for a's leases to expire, then b took the match over
        took = reactor.seconds() - killed
        self.assertLess(took, TTL + 2 * RENEW + 2.0)
        self.assertEqual(await self.home_of(match_id), "b")
        final = await self.play(match_id, players, update)
        self.assertTrue(final["match_state"]["game_over"])
        await gatherResults([again.next_push("elo_update"), bob.next_push("elo_update")])
        self.assertIn("taken over", b.output)
        self.assertNotIn("Traceback", b.output, b.output)

    async def test_kill_9_of_the_queue_home_requeues_the_waiting(self):
        a, b, c = await self.start(3)
        holder = await self.user(a, "anna")
        self.assertEqual(await holder.match_request(None), "waiting for an opponent")
        bob = await self.user(b, "bob")
        self.assertEqual(await bob.match_request(None), "match started")   # with anna, on a
        await bob.next_match()
        carol = await self.user(c, "carol")
        self.assertEqual(await carol.match_request(None), "waiting for an opponent")
        await a.kill()
        await eventually(lambda: "node a stopped" in b.output and "node a stopped" in c.output)
        dave = await self.user(b, "dave")
        await dave.match_request(None)     # carol is enqueued again before or after dave
        update = await carol.next_match(timeout=30.0)
        self.assertEqual(await dave.next_match(update["id"]), update)
        state = update["match_state"]
        self.assertEqual({state["player_a"], state["player_b"]}, {"carol", "dave"})
        for node in (b, c):
            self.assertNotIn("Traceback", node.output, node.output)


class StoreLimitTests(unittest.TestCase):
    """The open-match limits checked in the creating transaction hold when
    creations for one user run at once on several connections (nodes)."""

    async def test_concurrent_creations_never_exceed_the_limit(self):
        from gtserver.core.match_store import MatchLimit, MatchStore
        from gtserver.core.matches import Seat
        from gtserver.games import GameFactory
        from gtserver.games.ultimate import UltimateTicTacToe
        from gtserver.store import accounts as account_queries
        from tests.pgcluster import postgres_url

        url = postgres_url(self)
        stores = []
        for _ in range(3):   # three "nodes", four connections each
            store = open_store(url, reactor)
            await store.start()
            self.addCleanup(store.close)
            stores.append(store)
        users = [await stores[0].run(account_queries.insert_user, f"user{i}", None, False, 0.0)
                 for i in range(13)]
        games = {"UltimateTicTacToe": GameFactory(UltimateTicTacToe)}

        class Recorder:
            def record(self, *args, **kwargs):
                pass

        match_stores = [MatchStore(store, games, Recorder(), reactor) for store in stores]
        star, others = users[0], users[1:]

        async def create(number):
            other = others[number]
            try:
                await match_stores[number % 3].create(
                    "UltimateTicTacToe", [Seat("user0", star[0]), Seat(other[1], other[0])],
                    "uttt", limit=5)
            except MatchLimit as refusal:
                return refusal.reason, refusal.seat
            return "created"

        outcomes = await gatherResults([ensureDeferred(create(n)) for n in range(12)])
        self.assertEqual(outcomes.count("created"), 5, outcomes)
        self.assertEqual(outcomes.count(("full", 0)), 7, outcomes)
        # and the same pair twice at once: one match
        pair = [Seat(others[10][1], others[10][0]), Seat(others[11][1], others[11][0])]
        outcomes = await gatherResults([ensureDeferred(match_stores[n].create(
            "UltimateTicTacToe", pair, "uttt", limit=5)).addErrback(
                lambda failure: failure.trap(MatchLimit) and failure.value.reason)
            for n in range(3)])
        self.assertEqual(sum(1 for outcome in outcomes if outcome == "against"), 2, outcomes)
