"""The EOT game API on a deployment of several nodes, in memory
(tests/memory.py's MemoryDeployment: one clock, one database, a bus hub):
every request of a session may go to a different node; each session has one
home that runs it, the others forward. The same over real daemons on
PostgreSQL is in tests/test_eot_nodes.py."""

from __future__ import annotations

import itertools
import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial import unittest

from gtserver.eot.cluster import ENDED_KEPT, HOME_STOPPED, SHARED_TOPIC, TOPIC, session_lease
from gtserver.eot.lobby import TableService
from gtserver.eot.protocol import Requests
from tests.memory import MemoryDaemon, MemoryDeployment
from tests.test_eot import encode, join_request

LEASE_TIME = 7  # seconds after a kill by which its leases expired and it is known gone


def start_call(deployment: MemoryDeployment, node: str, request: dict[str, Any]) -> Deferred:
    """Send ``request`` to ``node`` on a new connection; fires with the reply."""
    connection = deployment[node].stream("eot")
    connection.write(encode(request))
    return connection.closed.addCallback(json.loads)


def tables_on(deployment: MemoryDeployment, node: str) -> TableService:
    return deployment[node].factory("eot").tables


class Roaming:
    """A joined player whose every request goes to the next node in turn."""

    def __init__(self, testcase: unittest.TestCase, deployment: MemoryDeployment,
                 nodes: tuple[str, ...], game: str, reply: dict[str, Any],
                 observer: bool = False) -> None:
        testcase.assertEqual(reply["status"], "ok", reply)
        self.testcase, self.deployment, self.game = testcase, deployment, game
        self.nodes = itertools.cycle(nodes)
        data = reply["data"]
        self.id, self.key, self.session = data["player_id"], data["key"], data["session"]
        self.observer = observer

    def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "game": self.game, "session": self.session,
                "player_id": self.id, "key": self.key, **fields}

    def start(self, kind: str, node: str | None = None, **fields: Any) -> Deferred:
        return start_call(self.deployment, node or next(self.nodes), self.request(kind, **fields))

    def call(self, kind: str, node: str | None = None, **fields: Any) -> dict[str, Any]:
        """The reply, which must have come at once."""
        return self.testcase.successResultOf(self.start(kind, node, **fields))

    def move(self, node: str | None = None, **arguments: Any) -> dict[str, Any]:
        return self.call("move", node, move=arguments)

    def state(self, node: str | None = None) -> dict[str, Any]:
        return self.call("state", node, observer=self.observer)

    def start_state(self, node: str | None = None) -> Deferred:
        return self.start("state", node, observer=self.observer)


class ClusterTestCase(unittest.TestCase):
    nodes: tuple[str, ...] = ("a", "b")

    def setUp(self):
        self.deployment = MemoryDeployment(self, self.nodes, listeners=("eot",))
        self.deployment.advance(1.0)         # every node has seen the others

    def join(self, node: str, game: str, session: str, players: int | None,
             name: str = "") -> Deferred:
        return start_call(self.deployment, node, join_request(game, session, players, name))

    def seated(self, joins: list[Deferred], game: str, roam: tuple[str, ...]) -> list[Roaming]:
        return [Roaming(self, self.deployment, roam[i:] + roam[:i], game,
                        self.successResultOf(join)) for i, join in enumerate(joins)]

    def home(self, game: str, session: str) -> str:
        homes = [node for node in self.deployment.nodes
                 if (game, session) in tables_on(self.deployment, node).tables]
        self.assertEqual(len(homes), 1, f"{session} lives on {homes}")
        return homes[0]

    def advance(self, seconds: int) -> None:
        for _ in range(seconds):
            self.deployment.advance(1.0)


class EveryRequestElsewhereTests(ClusterTestCase):
    def test_a_game_whose_every_request_goes_to_another_node(self):
        first = self.join("a", "TicTacToe", "roam", 2, "ann")
        self.assertNoResult(first)
        second = self.join("b", "TicTacToe", "roam", 2, "bob")     # forwarded to a
        players = self.seated([first, second], "TicTacToe", ("b", "a"))
        self.assertEqual([p.id for p in players], [0, 1])
        self.assertEqual(self.home("TicTacToe", "roam"), "a")
        states = [player.state() for player in players]
        self.assertEqual(states[0], states[1])
        board_seen = []
        state = states[0]["data"]
        while not state["gameover"]:
            mover = players[state["current"][0]]
            other = players[1 - mover.id]
            waiting = other.start_state()       # parks at the home, whichever node
            self.assertNoResult(waiting)
            self.assertEqual(mover.move(position=state["board"].index(-1)),
                             {"status": "ok", "data": None})
            state = self.successResultOf(waiting)["data"]
            self.assertEqual(mover.state()["data"], state)
            board_seen.append(state["board"])
        self.assertEqual(len(board_seen), 9 - state["board"].count(-1))
        refused = players[0].move(position=0)
        self.assertEqual(refused["message"], "framework: the game is over")
        # A restart from either node; the old end is owed to the other player.
        self.assertEqual(players[1].call("restart")["status"], "ok")
        self.assertTrue(players[0].state()["data"]["gameover"])
        self.assertEqual(players[0].state()["data"]["board"], [-1] * 9)

    def test_a_state_parked_on_b_is_released_by_a_move_on_a(self):
        (player,) = self.seated([self.join("a", "Echo", "solo", 1)], "Echo", ("a",))
        player.state("a")
        parked = player.start_state("b")
        home_table = tables_on(self.deployment, "a").tables[("Echo", "solo")]
        self.assertTrue(home_table.parked)      # parked at the home
        self.assertEqual(player.move("a", msg="hi")["status"], "ok")
        self.assertEqual(self.successResultOf(parked)["data"]["echo"], "hi")
        # And the other way round: parked on a, released by a move sent to b.
        parked = player.start_state("a")
        self.assertEqual(player.move("b", msg="ho")["status"], "ok")
        self.assertEqual(self.successResultOf(parked)["data"]["echo"], "ho")
        refused = player.move("b", msg="error")
        self.assertEqual(refused, {"status": "illegalmove", "message": "you sent 'error'"})

    def test_a_client_leaving_a_forwarded_state_unparks_it_at_the_home(self):
        (player,) = self.seated([self.join("a", "Echo", "left", 1)], "Echo", ("a",))
        player.state("a")
        connection = self.deployment["b"].stream("eot")
        connection.write(encode(player.request("state", observer=False)))
        table = tables_on(self.deployment, "a").tables[("Echo", "left")]
        self.assertTrue(table.parked)
        connection.lose()
        self.deployment.flush()
        self.assertFalse(table.parked)
        self.assertEqual(self.deployment["a"].core.calls._serving, {})
        self.assertEqual(connection.received, b"")

    def test_auto_sessions_are_made_by_one_node_per_game(self):
        joins = [self.join(node, "TicTacToe", "auto", 2, name)
                 for node, name in (("b", "ann"), ("a", "bob"))]
        players = self.seated(joins, "TicTacToe", ("a", "b"))
        session = players[0].session
        self.assertTrue(session.startswith("auto-"))
        self.assertEqual(players[1].session, session)
        self.assertEqual(self.home("TicTacToe", session), "b")   # the first one to need it
        self.assertIn(session_lease("TicTacToe", session), self.deployment["b"].core.leases.held)
        state = players[0].state()["data"]
        mover = players[state["current"][0]]
        self.assertEqual(mover.move(position=4)["status"], "ok")
        self.assertEqual(players[1 - mover.id].state()["data"]["board"][4], mover.id)
        # A one-player auto session asked for on a is made on b too.
        (solo,) = self.seated([self.join("a", "Echo", "auto", 1)], "Echo", ("a", "b"))
        self.assertEqual(self.home("Echo", solo.session), "a")    # Echo's auto home: a
        self.assertEqual(solo.state()["data"]["echo"], "")
        self.assertEqual(solo.move(msg="x")["status"], "ok")

    def test_observers_on_other_nodes(self):
        players = self.seated([self.join("a", "Echo", "watched", 1, "solo")], "Echo", ("a",))
        reply = self.successResultOf(start_call(self.deployment, "b", {
            "type": "observe", "game": "Echo", "session": "watched", "name": "solo"}))
        watcher = Roaming(self, self.deployment, ("b", "a"), "Echo", reply, observer=True)
        first = watcher.state()
        self.assertEqual(first, players[0].state())
        parked = watcher.start_state("b")
        players[0].move("a", msg="seen")
        self.assertEqual(self.successResultOf(parked)["data"]["echo"], "seen")
        cannot = watcher.call("move", "b", move={"msg": "no"})
        self.assertIn("wrong key", cannot["message"])

    def test_unknown_sessions_and_bad_requests_as_on_one_node(self):
        unknown = self.successResultOf(start_call(self.deployment, "b", {
            "type": "state", "game": "Echo", "session": "never", "player_id": 0,
            "key": "k", "observer": False}))
        self.assertEqual(unknown["message"], "framework: no such session")
        for request, message in (
                ({"type": "state", "game": "Nope", "session": "s", "player_id": 0, "key": "k"},
                 "no such game"),
                ({"type": "move", "game": "Echo", "session": 3, "move": {}},
                 "'session' must be a string"),
                (join_request("Echo", "automatic", 1), "reserved"),
                (join_request("Echo", "never", None), "no such session")):
            reply = self.successResultOf(start_call(self.deployment, "a", request))
            self.assertEqual(reply["status"], "error")
            self.assertIn(message, reply["message"])

    def test_a_session_that_ends_gives_its_token_back(self):
        (player,) = self.seated([self.join("a", "Echo", "brief", 1)], "Echo", ("a",))
        lease = session_lease("Echo", "brief")
        self.assertIn(lease, self.deployment["a"].core.leases.held)
        player.move("b", msg="quit")
        player.state("b")
        self.advance(61)                          # the finished grace
        self.assertNotIn(lease, self.deployment["a"].core.leases.held)
        self.assertEqual(player.state("b")["message"], "framework: no such session")
        # The token can start a session anywhere again.
        (again,) = self.seated([self.join("b", "Echo", "brief", 1)], "Echo", ("b",))
        self.assertEqual(self.home("Echo", "brief"), "b")

    def test_long_answers_to_many_waiters_cross_the_bus_once(self):
        count = 6
        joins = [self.join("a", "Chat", "big", count, f"p{n}") for n in range(count)]
        players = self.seated(joins, "Chat", ("b",))
        players[0].move("a", name="p0")
        for player in players:
            player.state("b")
        parked = [player.start_state("b") for player in players]
        topics = []
        post = self.deployment.hub.post

        def counting(sender, node, topic, body):
            topics.append((topic, "done" in body if topic == SHARED_TOPIC else None))
            post(sender, node, topic, body)
        self.deployment.hub.post = counting
        players[0].move("a", message="x" * 3000)
        replies = [self.successResultOf(waiting) for waiting in parked]
        self.assertEqual({json.dumps(reply) for reply in replies}, {json.dumps(replies[0])})
        self.assertEqual(replies[0]["data"]["messages"], [["p0", "x" * 3000]])
        self.assertEqual(topics.count((SHARED_TOPIC, False)), 1)
        self.assertEqual(topics.count((SHARED_TOPIC, True)), 1)
        self.assertEqual(self.deployment["b"].factory("eot").requests._received, {})


    def test_a_forwarded_move_gives_up_on_a_silent_home_a_state_never(self):
        (player,) = self.seated([self.join("a", "Echo", "silent", 1)], "Echo", ("a",))
        player.state("a")
        self.deployment["a"].core.calls.serve(TOPIC, lambda sender, body: Deferred())
        moved, parked = player.start("move", "b", move={"msg": "x"}), player.start_state("b")
        self.advance(29)
        self.assertNoResult(moved)
        self.advance(1)
        self.assertEqual(self.successResultOf(moved)["message"],
                         "framework: the node holding this session did not answer in time")
        self.advance(600)
        self.assertNoResult(parked)
        parked.addErrback(lambda failure: None)     # dropped unanswered at the cleanup

    def test_a_session_whose_lease_is_lost_ends_on_its_node(self):
        (player,) = self.seated([self.join("a", "Echo", "lost", 1)], "Echo", ("a",))
        player.state("a")
        parked = player.start_state("a")
        database = self.deployment["a"].store._connection
        database.execute("UPDATE leases SET node = 'b' WHERE name = ?",
                         (session_lease("Echo", "lost"),))
        self.advance(1)
        self.assertIn("lost its hold on it", self.successResultOf(parked)["message"])
        self.assertNotIn(("Echo", "lost"), tables_on(self.deployment, "a").tables)


class SingleNodeTests(unittest.TestCase):
    def test_one_daemon_answers_through_its_tables_alone(self):
        daemon = MemoryDaemon(self, listeners=("eot",))
        self.assertIs(type(daemon.factory("eot").requests), Requests)
        self.assertIsNone(daemon.core.bus)


class HomeStoppedTests(ClusterTestCase):
    nodes = ("a", "b", "c")

    def test_a_killed_home_ends_its_sessions_with_a_clear_error(self):
        players = self.seated([self.join("a", "TicTacToe", "doomed", 2),
                               self.join("b", "TicTacToe", "doomed", 2)],
                              "TicTacToe", ("b", "c"))
        for player in players:
            player.state()
        parked = players[0].start_state("b")     # waits at a
        on_c = players[1].start_state("c")
        self.deployment.kill("a")
        self.assertNoResult(parked)
        self.advance(LEASE_TIME)
        for waiting in (parked, on_c):
            self.assertEqual(self.successResultOf(waiting)["message"],
                             f"framework: {HOME_STOPPED}")
        for player, node in zip(players, ("b", "c"), strict=True):
            reply = player.move(node, position=0)
            self.assertEqual(reply, {"status": "error", "message": f"framework: {HOME_STOPPED}"})
        observe = self.successResultOf(start_call(self.deployment, "c", {
            "type": "observe", "game": "TicTacToe", "session": "doomed", "name": "x"}))
        self.assertEqual(observe["message"], f"framework: {HOME_STOPPED}")
        # A join without players cannot reopen it; one with players starts anew.
        reopen = self.successResultOf(self.join("c", "TicTacToe", "doomed", None))
        self.assertEqual(reopen["message"], f"framework: {HOME_STOPPED}")
        fresh = self.seated([self.join("b", "TicTacToe", "doomed", 2),
                             self.join("c", "TicTacToe", "doomed", 2)], "TicTacToe", ("c",))
        self.assertEqual(self.home("TicTacToe", "doomed"), "b")
        self.assertEqual(fresh[0].state()["status"], "ok")

    def test_new_sessions_after_a_kill_live_on_the_survivors(self):
        first = self.seated([self.join("a", "Echo", "auto", 1)], "Echo", ("b",))
        self.assertEqual(self.home("Echo", first[0].session), "a")     # a: Echo's auto home
        self.deployment.kill("a")
        self.advance(LEASE_TIME)
        (solo,) = self.seated([self.join("b", "Echo", "auto", 1)], "Echo", ("c", "b"))
        self.assertEqual(self.home("Echo", solo.session), "b")      # taken over
        self.assertEqual(solo.move(msg="alive")["status"], "ok")
        self.assertEqual(solo.state()["data"]["echo"], "alive")
        self.assertEqual(first[0].state()["message"], f"framework: {HOME_STOPPED}")
        named = self.seated([self.join("c", "Chat", "after", 2, "x"),
                             self.join("b", "Chat", "after", 2, "y")], "Chat", ("b", "c"))
        self.assertEqual(named[1].move(name="y")["status"], "ok")

    def test_an_auto_join_sent_while_its_home_dies_lands_on_a_survivor(self):
        self.seated([self.join("a", "TicTacToe", "auto", 2),
                     self.join("a", "TicTacToe", "auto", 2)], "TicTacToe", ("a",))
        self.deployment.kill("a")
        waiting = self.join("b", "TicTacToe", "auto", 2, "early")  # forwarded to the dead a
        self.advance(LEASE_TIME)
        self.assertNoResult(waiting)        # routed again: now waiting on a survivor
        other = self.join("c", "TicTacToe", "auto", 2, "late")
        players = self.seated([waiting, other], "TicTacToe", ("b", "c"))
        self.assertEqual(players[0].session, players[1].session)
        self.assertIn(self.home("TicTacToe", players[0].session), ("b", "c"))

    def test_a_cleanly_stopped_home_ends_its_sessions_alike(self):
        (player,) = self.seated([self.join("a", "Echo", "stopped", 1)], "Echo", ("b",))
        player.state("c")
        parked = player.start_state("b")
        self.deployment["a"].stop()
        reply = self.successResultOf(parked)
        self.assertIn(reply["message"], (f"framework: {HOME_STOPPED}",
                                         "framework: the server is shutting down"))
        self.advance(2)                              # a is known gone
        self.assertEqual(player.state("c")["message"], f"framework: {HOME_STOPPED}")
        self.advance(LEASE_TIME)                     # and its lease expired
        self.assertEqual(player.state("b")["message"], f"framework: {HOME_STOPPED}")

    def test_sessions_ended_long_ago_are_forgotten_at_a_start(self):
        self.seated([self.join("a", "Echo", "old", 1)], "Echo", ("a",))
        self.deployment.kill("a")
        self.advance(LEASE_TIME)
        database = self.deployment["b"].store._connection
        lease = session_lease("Echo", "old")
        self.assertEqual(len(database.execute(
            "SELECT * FROM leases WHERE name = ?", (lease,)).fetchall()), 1)
        self.deployment.clock.advance(ENDED_KEPT)
        self.deployment.start("d", listeners=("eot",))
        self.assertEqual(database.execute(
            "SELECT * FROM leases WHERE name = ?", (lease,)).fetchall(), [])


class RememberedHomeTests(ClusterTestCase):
    nodes = ("a", "b", "c")

    def test_a_token_reused_elsewhere_is_found_again(self):
        (first,) = self.seated([self.join("a", "Echo", "reused", 1)], "Echo", ("b",))
        first.state()                                 # b now knows: a is its home
        self.assertEqual(self.deployment["b"].factory("eot").requests._homes,
                         {("Echo", "reused"): "a"})
        first.move(msg="quit")
        first.state()
        self.advance(61)                              # released on a
        (second,) = self.seated([self.join("c", "Echo", "reused", 1)], "Echo", ("b",))
        self.assertEqual(self.home("Echo", "reused"), "c")
        self.assertEqual(second.move(msg="here")["status"], "ok")     # a: not mine
        self.assertEqual(second.state()["data"]["echo"], "here")
        self.assertEqual(self.deployment["b"].factory("eot").requests._homes,
                         {("Echo", "reused"): "c"})
        self.assertEqual(first.state()["message"],
                         "framework: not joined: unknown player id or wrong key")
