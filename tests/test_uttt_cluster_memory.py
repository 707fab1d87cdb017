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
        node = next(iter(self.dep.nodes))    # any live node
        return self.dep[node].result(self.service(node).leases.holder(MATCH_LEASE + match_id))

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

    async def test_one_bus_message_per_move_whatever_the_connections(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        extra = [await self.second_socket(node, client) for node, client in
                 (("a", alice), ("b", bob), ("b", bob), ("b", alice))]
        update = await challenge(self, alice, bob, "bob")
        for client in extra:
            await client.expect("match_update")
        hub = self.dep.hub
        before = hub.posted
        alice.send("move", move_frame(update["id"], (1, 1, 1, 1)))   # at the home
        moved = await alice.expect("match_update")
        for client in (bob, *extra):
            self.assertEqual(await client.expect("match_update"), moved)
        self.assertEqual(hub.posted - before, 1)    # one broadcast to the one other node
        before = hub.posted
        bob.send("move", move_frame(update["id"], (1, 1, 0, 0)))     # forwarded
        moved = await bob.expect("match_update")
        for client in (alice, *extra):
            self.assertEqual(await client.expect("match_update"), moved)
        self.assertEqual(hub.posted - before, 3)    # request, broadcast, reply


class QueueTests(ClusterMixin, unittest.TestCase):
    async def test_the_random_queue_pairs_players_of_different_nodes(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        bob.send("match_request", {"player": None})
        self.assertEqual((await bob.expect("match_request_response"))["msg"],
                         "waiting for an opponent")
        home = self.dep["a"].result(self.service("a").leases.holder(QUEUE_LEASE))
        self.assertEqual(home, "b")       # the first node to need it holds it
        bob.send("match_request", {"player": None})
        self.assertIn("already waiting", (await bob.expect("match_request_response"))["msg"])
        alice.send("match_request", {"player": None})
        update = await alice.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), update)
        self.assertEqual((await alice.expect("match_request_response"))["msg"],
                         "match started")
        state = update["match_state"]
        self.assertEqual((state["player_a"], state["current_player"]), ("bob", "bob"))
        self.assertEqual(self.service("b").queue, {})
        self.assertEqual(self.service("b").waiting_here, {})
        final = await play(self, update["id"], [bob, alice], scripted_game("draw"))
        self.assertTrue(final["is_draw"])

    async def test_a_user_who_disconnects_leaves_the_queue_on_its_home(self):
        alice = await self.user("a", "alice")
        alice.send("match_request", {"player": None})     # queue homed on a
        await alice.expect("match_request_response")
        carol = await self.user("b", "carol")
        carol.send("match_request", {"player": None})
        await carol.expect("match_update")
        await alice.expect("match_update")
        await carol.expect("match_request_response")
        bob = await self.user("b", "bob")
        bob.send("match_request", {"player": None})
        self.assertEqual((await bob.expect("match_request_response"))["msg"],
                         "waiting for an opponent")
        self.assertEqual(list(self.service("a").queue), [bob.server.user.id])
        await bob.disconnect()
        self.assertEqual(self.service("a").queue, {})
        dave = await self.user("a", "dave")
        dave.send("match_request", {"player": None})
        self.assertEqual((await dave.expect("match_request_response"))["msg"],
                         "waiting for an opponent")

    async def test_one_socket_closing_on_another_node_keeps_the_user_queued(self):
        alice = await self.user("a", "alice")
        elsewhere = await self.second_socket("b", alice)
        alice.send("match_request", {"player": None})
        await alice.expect("match_request_response")
        await elsewhere.disconnect()
        bob = await self.user("b", "bob")
        bob.send("match_request", {"player": None})
        self.assertEqual((await bob.expect("match_update"))["match_state"]["player_a"],
                         "alice")


class SerialisationTests(ClusterMixin, unittest.TestCase):
    async def test_moves_sent_at_once_from_both_nodes_are_serialised_at_the_home(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        alice_on_b = await self.second_socket("b", alice)
        update = await challenge(self, alice, bob, "bob")
        await alice_on_b.expect("match_update")
        for node in self.nodes:        # store results a turn later: requests overlap
            self.dep[node].store.delay_results = True
        # alice on both nodes and bob move at once: exactly one move counts
        alice_on_b.send("move", move_frame(update["id"], (2, 2, 2, 2)))
        bob.send("move", move_frame(update["id"], (1, 1, 1, 1)))
        alice.send("move", move_frame(update["id"], (0, 0, 0, 0)))
        clients = (alice, alice_on_b, bob)
        # The accepted move reaches the three sockets; each refused one gets
        # the state back (unchanged, or with the accepted move if it was behind it).
        frames = [frame for client in clients for frame in client.pending()]
        self.assertEqual(len(frames), 5)
        marks = [sum(cell != 0 for row in frame["data"]["match_state"]["complete_field"]
                     for cell in row) for frame in frames]
        self.assertLessEqual(set(marks), {0, 1})
        game = self.service("a").open[update["id"]].game
        self.assertEqual(sum(cell != 0 for row in game.field for cell in row), 1)
        last = [client.inbox[-1]["data"] for client in clients]
        self.assertEqual(last[0], last[1])
        self.assertEqual(last[0], last[2])

    async def test_alternating_moves_from_two_nodes_in_one_burst_all_count(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        update = await challenge(self, bob, alice, "alice")   # homed on b
        moves = scripted_game("b")[:8]
        for node in self.nodes:
            self.dep[node].store.delay_results = True
        state = await play(self, update["id"], [bob, alice], moves)
        self.assertEqual(state["last_move"], dict(zip(("sub_x", "sub_y", "x", "y"),
                                                      moves[-1], strict=True)))
        self.assertEqual(self.service("b").open[update["id"]].moves, 8)


class PushTests(ClusterMixin, unittest.TestCase):
    async def test_a_user_on_two_nodes_gets_every_update_on_both(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        alice_on_b = await self.second_socket("b", alice)
        update = await challenge(self, bob, alice, "alice")     # homed on b
        self.assertEqual(await alice_on_b.expect("match_update"), update)
        moves = scripted_game("a")
        for number, move in enumerate(moves):
            mover = bob if number % 2 == 0 else (alice, alice_on_b)[number % 4 == 1]
            mover.send("move", move_frame(update["id"], move))
            moved = await mover.expect("match_update")
            for client in {bob, alice, alice_on_b} - {mover}:
                self.assertEqual(await client.expect("match_update"), moved)
        self.assertTrue(moved["match_state"]["game_over"])
        for client in (alice, alice_on_b):
            self.assertEqual((await client.expect("elo_update"))["elo"], 990)
        self.assertEqual((await bob.expect("elo_update"))["elo"], 1010)
        for client in (alice, alice_on_b, bob):
            await client.nothing_more()

    async def test_login_on_another_node_lists_the_open_matches(self):
        alice = await self.user("a", "alice")
        bob = await self.user("a", "bob")
        carol = await self.user("b", "carol")
        first = await challenge(self, alice, bob, "bob")          # homed on a
        second = await challenge(self, carol, alice, "alice")     # homed on b
        await play(self, first["id"], [alice, bob], [(1, 1, 1, 1)])
        again = await self.user("b", "alice", matches=0)
        listed = [await again.expect("match_update") for _ in range(2)]
        self.assertEqual([update["id"] for update in listed], [first["id"], second["id"]])
        self.assertEqual(listed[0]["match_state"]["complete_field"][4][4], 1)
        await again.nothing_more()
        bob.send("move", move_frame(first["id"], (1, 1, 0, 0)))
        moved = await bob.expect("match_update")
        self.assertEqual(await again.expect("match_update"), moved)
        await alice.expect("match_update")
        again.send("match_states_request")
        self.assertEqual([await again.expect("match_update") for _ in range(2)],
                         [moved, second])
        await again.nothing_more()

    async def test_friends_updates_reach_every_node(self):
        alice = await self.user("a", "alice")
        alice_on_b = await self.second_socket("b", alice)
        await self.user("b", "bob")
        alice.send("friend_request", {"user": "bob"})
        self.assertTrue((await alice.expect("friend_request_response"))["success"])
        expected = {"friends": ["bob"], "elos": [1000]}
        self.assertEqual(await alice.expect("friends_update"), expected)
        self.assertEqual(await alice_on_b.expect("friends_update"), expected)
        alice_on_b.send("unfriend_request", {"user": "bob"})
        self.assertTrue((await alice_on_b.expect("unfriend_request_response"))["success"])
        for client in (alice_on_b, alice):
            self.assertEqual(await client.expect("friends_update"),
                             {"friends": [], "elos": []})
        await alice.nothing_more()

    async def test_the_leaderboard_after_a_rated_match_is_the_same_on_every_node(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        alice.send("friend_request", {"user": "bob"})
        await alice.expect("friend_request_response")
        await alice.expect("friends_update")
        update = await challenge(self, bob, alice, "alice")
        await play(self, update["id"], [bob, alice], scripted_game("b"))
        self.assertEqual((await alice.expect("elo_update"))["elo"], 1010)
        self.assertEqual((await bob.expect("elo_update"))["elo"], 990)
        for node in ("a", "b"):
            carol, standing = await login(self, self.dep[node], f"carol{node}")
            top = dict(zip(standing["top_names"], standing["top_elos"], strict=True))
            self.assertEqual((standing["top_names"][0], top["alice"], top["bob"]),
                             ("alice", 1010, 990))
            again, standing = await login(self, self.dep[node], "alice")
            self.assertEqual((standing["elo"], standing["rank"]), (1010, 1))
        # and the friend list (read on either node) has bob's new rating
        again = await connect(self, self.dep["b"])
        again.send("reconnect", {"id": alice.session})
        await again.expect("reconnect_response")
        await again.expect("elo_update")
        self.assertEqual(await again.expect("friends_update"),
                         {"friends": ["bob"], "elos": [990]})

    def test_an_older_copy_never_replaces_a_newer_one(self):
        service = self.service("b")
        store = self.dep["b"].core.match_store
        from gtserver.core.matches import Seat
        match = self.dep["b"].result(store.create(
            "UltimateTicTacToe", [Seat("x"), Seat("y")], "uttt"))
        from gtserver.uttt.cluster import decode_match, encode_match
        older = decode_match(encode_match(match), store)
        match.apply(0, {"sub_x": 1, "sub_y": 1, "x": 1, "y": 1}, 0.0)
        newer = decode_match(encode_match(match), store)
        self.assertTrue(service._remember_remote(newer))
        self.assertFalse(service._remember_remote(older))
        self.assertIs(service.remote[match.id], newer)


class LimitTests(ClusterMixin, unittest.TestCase):
    arguments = ("--uttt-max-open-matches", "2")

    async def test_open_match_limits_hold_across_nodes(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        carol = await self.user("a", "carol")
        dave = await self.user("b", "dave")
        erin = await self.user("a", "erin")
        await challenge(self, bob, alice, "alice")       # alice: one open, homed on b
        for node in self.nodes:
            self.dep[node].store.delay_results = True
        # carol on a and dave on b challenge alice at once: one of them fits
        carol.send("match_request", {"player": "alice"})
        dave.send("match_request", {"player": "alice"})
        frames = {"carol": carol.pending(), "dave": dave.pending()}
        started = [name for name, got in frames.items()
                   if got[0]["type"] == "match_update"]
        self.assertEqual(len(started), 1)
        refused = ({"carol", "dave"} - set(started)).pop()
        self.assertIn("alice has too many open matches (at most 2)",
                      frames[refused][-1]["data"]["msg"])
        self.assertEqual(len(alice.pending()), 1)
        # the random queue counts the matches of every node too
        alice.inbox.clear()
        alice.send("match_request", {"player": None})
        self.assertIn("you have too many", (await alice.expect("match_request_response"))["msg"])
        erin.send("match_request", {"player": None})
        await erin.expect("match_request_response")
        bob.send("match_request", {"player": None})       # bob and erin: no match yet
        update = await bob.expect("match_update")
        self.assertEqual(update["match_state"]["player_a"], "erin")
        self.assertEqual(await erin.expect("match_update"), update)
        await bob.expect("match_request_response")
        bob.send("match_request", {"player": "erin"})
        self.assertIn("already an open match against erin",
                      (await bob.expect("match_request_response"))["msg"])


class FailoverTests(ClusterMixin, unittest.TestCase):
    async def test_players_of_a_killed_home_reconnect_and_finish_the_match(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        update = await challenge(self, alice, bob, "bob")     # homed on a
        moves = scripted_game("b")
        await play(self, update["id"], [alice, bob], moves[:5])
        self.dep.kill("a")
        self.assertIsNotNone(alice.closed_with())
        # alice's client reconnects to the surviving node with its session
        again = await connect(self, self.dep["b"])
        again.send("reconnect", {"id": alice.session})
        self.assertTrue((await again.expect("reconnect_response"))["success"])
        await again.expect("elo_update")
        await again.expect("friends_update")
        listed = await again.expect("match_update")
        self.assertEqual(listed["id"], update["id"])
        self.assertEqual(listed["match_state"]["current_player"], "bob")
        # bob's move waits until a's lease has expired, then b takes the match over
        bob.send("move", move_frame(update["id"], moves[5]))
        self.pass_time(7)
        moved = await bob.expect("match_update")
        self.assertEqual(await again.expect("match_update"), moved)
        self.assertEqual(moved["match_state"]["last_move"]["x"], moves[5][2])
        self.assertEqual(self.home_of(update["id"]), "b")
        final = await play(self, update["id"], [again, bob], moves[6:]) \
            if len(moves) % 2 == 0 else await self._finish(again, bob, update, moves)
        self.assertEqual((final["game_over"], final["player_won"]), (True, "bob"))
        self.assertEqual((await again.expect("elo_update"))["elo"], 990)
        self.assertEqual((await bob.expect("elo_update"))["elo"], 1010)
        await again.nothing_more()

    async def _finish(self, alice, bob, update, moves):
        # play() alternates from its first client: from move 6 alice moves first
        return await play(self, update["id"], [alice, bob], moves[6:])

    async def test_a_move_to_a_killed_home_the_mover_did_not_know_of(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        update = await challenge(self, alice, bob, "bob")
        await play(self, update["id"], [alice, bob], [(1, 1, 1, 1)])
        self.dep.kill("a")
        bob.send("move", move_frame(update["id"], (1, 1, 0, 0)))   # sent before b knows
        self.dep.flush()
        self.assertEqual(bob.pending(), [])
        self.pass_time(7)
        moved = await bob.expect("match_update")
        self.assertEqual(moved["match_state"]["current_player"], "alice")
        self.assertIn(update["id"], self.service("b").open)

    async def test_a_home_cut_off_from_the_database_loses_its_matches_to_another(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        update = await challenge(self, alice, bob, "bob")     # homed on a
        await play(self, update["id"], [alice, bob], [(1, 1, 1, 1)])
        self.dep["a"].store.killed = True      # a's bus works, its database does not
        self.pass_time(7)                      # a's leases expire; b sees a stopped
        bob.send("move", move_frame(update["id"], (1, 1, 0, 0)))
        moved = await bob.expect("match_update")
        self.assertEqual(moved["match_state"]["current_player"], "alice")
        self.assertIn(update["id"], self.service("b").open)
        self.dep["a"].store.killed = False
        self.pass_time(2)                      # a learns that b holds the match now
        self.assertNotIn(update["id"], self.service("a").open)
        self.assertEqual(await alice.expect("match_update"), moved)
        alice.send("move", move_frame(update["id"], (0, 0, 1, 1)))
        again = await alice.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), again)
        self.assertEqual(again["match_state"]["current_player"], "bob")

    async def test_a_killed_node_restarted_under_its_name_serves_again(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        update = await challenge(self, alice, bob, "bob")
        self.dep.kill("a")
        self.dep.start("a")
        again = await self.user("a", "alice", matches=1)
        again.send("move", move_frame(update["id"], (1, 1, 1, 1)))
        moved = await again.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), moved)
        self.assertEqual(self.home_of(update["id"]), "a")

class IdleTests(ClusterMixin, unittest.TestCase):
    arguments = ("--uttt-match-idle-days", "0.001", "--uttt-expiry-interval", "10")

    async def test_idle_matches_without_a_home_expire(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        update = await challenge(self, alice, bob, "bob")     # homed on a
        alice.send("move", move_frame(update["id"], (1, 1, 1, 1)))
        await alice.expect("match_update")
        await bob.expect("match_update")
        self.dep.kill("a")
        self.pass_time(100)                      # 86.4 s idle, checked every 10 s on b
        ended = await bob.expect("match_update")
        self.assertEqual((ended["match_state"]["game_over"],
                          ended["match_state"]["player_won"]), (True, "alice"))
        self.assertEqual((await bob.expect("elo_update"))["elo"], 990)



class QueueFailoverTests(ClusterMixin, unittest.TestCase):
    nodes = ("a", "b", "c")

    async def test_waiters_of_a_killed_node_leave_the_queue(self):
        self.dep["a"].result(self.service("a")._queue_home())
        bob = await self.user("b", "bob")
        bob.send("match_request", {"player": None})
        await bob.expect("match_request_response")
        self.dep.kill("b")
        self.pass_time(7)
        self.assertEqual(self.service("a").queue, {})
        carol = await self.user("c", "carol")
        carol.send("match_request", {"player": None})
        self.assertEqual((await carol.expect("match_request_response"))["msg"],
                         "waiting for an opponent")

    async def test_a_paired_waiter_is_not_enqueued_again_when_the_home_dies(self):
        self.dep["a"].result(self.service("a")._queue_home())
        bob = await self.user("b", "bob")
        bob.send("match_request", {"player": None})
        await bob.expect("match_request_response")
        carol = await self.user("c", "carol")
        carol.send("match_request", {"player": None})
        await carol.expect("match_update")
        await bob.expect("match_update")
        self.assertEqual(self.service("b").waiting_here, {})
        self.dep.kill("a")
        self.pass_time(7)
        dave = await self.user("c", "dave")
        dave.send("match_request", {"player": None})
        self.assertEqual((await dave.expect("match_request_response"))["msg"],
                         "waiting for an opponent")
        await bob.nothing_more()

    async def test_waiting_users_are_enqueued_again_at_the_new_home(self):
        self.dep["a"].result(self.service("a")._queue_home())    # the queue lives on a
        bob = await self.user("b", "bob")
        bob.send("match_request", {"player": None})
        self.assertEqual((await bob.expect("match_request_response"))["msg"],
                         "waiting for an opponent")
        self.assertEqual(list(self.service("a").queue), [bob.server.user.id])
        self.dep.kill("a")
        self.pass_time(7)
        homes = {self.service(node).queue_home for node in ("b", "c")} - {None}
        self.assertEqual(homes, {"b"})
        self.assertEqual(list(self.service("b").queue), [bob.server.user.id])
        carol = await self.user("c", "carol")
        carol.send("match_request", {"player": None})
        update = await carol.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), update)
        self.assertEqual(update["match_state"]["player_a"], "bob")
        self.assertEqual(self.home_of(update["id"]), "b")

    async def test_a_request_on_its_way_to_a_killed_queue_home_is_answered(self):
        self.dep["a"].result(self.service("a")._queue_home())
        self.pass_time(1)
        bob = await self.user("b", "bob")
        self.dep.kill("a")
        bob.send("match_request", {"player": None})
        self.pass_time(8)
        self.assertEqual((await bob.expect("match_request_response"))["msg"],
                         "waiting for an opponent")
        carol = await self.user("c", "carol")
        carol.send("match_request", {"player": None})
        self.assertEqual((await carol.expect("match_update"))["match_state"]["player_a"],
                         "bob")


class OperatorTests(ClusterMixin, unittest.TestCase):
    async def test_the_operators_end_is_forwarded_to_the_home(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        update = await challenge(self, alice, bob, "bob")     # homed on a
        match = self.dep["b"].result(self.service("b").end_by_operator(update["id"]))
        self.assertTrue(match.finished)
        ended = await alice.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), ended)
        self.assertTrue(ended["match_state"]["game_over"])
        for client in (alice, bob):
            self.assertEqual((await client.expect("elo_update"))["elo"], 1000)
        d = self.service("b").end_by_operator(update["id"])
        self.dep.flush()
        from gtserver.uttt.matchmaking import UnknownMatch
        self.failureResultOf(d, UnknownMatch)

    async def test_an_abort_on_another_node_is_forwarded(self):
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        update = await challenge(self, alice, bob, "bob")
        await play(self, update["id"], [alice, bob], [(1, 1, 1, 1), (1, 1, 0, 0)])
        bob.send("end_match", {"id": update["id"]})
        ended = await bob.expect("match_update")
        self.assertEqual(await alice.expect("match_update"), ended)
        self.assertEqual(ended["match_state"]["player_won"], "alice")
        self.assertEqual((await bob.expect("elo_update"))["elo"], 990)
        bob.send("end_match", {"id": update["id"]})         # over: the final state again
        self.assertEqual(await bob.expect("match_update"), ended)
        bob.send("move", move_frame(update["id"], (0, 0, 0, 0)))
        self.assertEqual(await bob.expect("match_update"), ended)

    async def test_the_web_monitor_of_any_node_ends_a_match(self):
        from gtserver.web.monitor import ControlError, Monitor
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        update = await challenge(self, alice, bob, "bob")     # homed on a
        monitor = Monitor(self.dep["b"].core)
        self.dep["b"].result(monitor.end_match(update["id"], "operator", None))
        ended = await bob.expect("match_update")
        self.assertEqual(await alice.expect("match_update"), ended)
        self.assertTrue(ended["match_state"]["game_over"])
        d = monitor.end_match(update["id"], "operator", None)
        self.dep.flush()
        self.assertEqual(self.failureResultOf(d, ControlError).value.status, 404)


class ThreeNodeTests(ClusterMixin, unittest.TestCase):
    nodes = ("a", "b", "c")

    async def test_players_on_two_nodes_play_a_match_homed_on_a_third(self):
        carol = await self.user("a", "carol")
        carol.send("match_request", {"player": None})           # the queue on a
        await carol.expect("match_request_response")
        alice = await self.user("b", "alice")
        bob = await self.user("c", "bob")
        alice.send("match_request", {"player": None})           # paired with carol
        carol_update = await carol.expect("match_update")
        await alice.expect("match_update")
        await alice.expect("match_request_response")
        bob.send("match_request", {"player": None})
        self.assertEqual((await bob.expect("match_request_response"))["msg"],
                         "waiting for an opponent")
        await carol.disconnect()
        again = await self.user("b", "alice", matches=1)
        await again.disconnect()
        # a match between bob (c) and dave (b), created by the queue's home a
        dave = await self.user("b", "dave")
        dave.send("match_request", {"player": None})
        update = await dave.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), update)
        self.assertEqual((await dave.expect("match_request_response"))["msg"], "match started")
        self.assertEqual(self.home_of(update["id"]), "a")
        self.assertNotEqual(update["id"], carol_update["id"])
        final = await play(self, update["id"], [bob, dave], scripted_game("draw"))
        self.assertTrue(final["is_draw"])
        for client in (bob, dave):
            self.assertEqual((await client.expect("elo_update"))["elo"], 1000)
        self.assertEqual(self.service("a").open, {carol_update["id"]:
                                                  self.service("a").open[carol_update["id"]]})


class ResearchLogTests(ClusterMixin, unittest.TestCase):
    async def test_every_turn_sent_is_logged_by_the_node_that_sent_it(self):
        from tests.support import select_events
        alice = await self.user("a", "alice")
        bob = await self.user("b", "bob")
        update = await challenge(self, alice, bob, "bob")     # homed on a
        await play(self, update["id"], [alice, bob], [(1, 1, 1, 1), (1, 1, 0, 0)])
        await self.user("b", "alice", matches=1)              # alice is to move
        for node in ("a", "b"):
            self.dep[node].result(self.dep[node].core.events.flush())
        rows = self.dep["a"].result(self.dep["a"].store.run(
            select_events, 0, 100, "uttt", ("move", "turn_sent")))
        # (id, time, source, kind, user, ...); each node's log has its own ids
        self.assertEqual(sorted((row[3], row[4]) for row in rows),
                         sorted([("turn_sent", "alice"),    # at the start, by a
                                 ("move", "alice"),
                                 ("turn_sent", "bob"),      # the broadcast, delivered by b
                                 ("move", "bob"),
                                 ("turn_sent", "alice"),    # by a
                                 ("turn_sent", "alice")]))  # the greeting on b
