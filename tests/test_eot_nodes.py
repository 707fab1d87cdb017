"""The EOT game API on real daemons of one deployment (tests/nodes.py:
``twistd gtserver --node`` processes on one PostgreSQL database), played by
the blocking client of the original framework (:class:`gtserver.client.GameClient`,
one thread per player, one request per round), with every request going to
the next node, as behind a load balancer; and a ``kill -9`` of a session's
home in the middle of a game."""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from gtserver.client import GameClient, GameServerError
from gtserver.eot.cluster import HOME_STOPPED, session_lease
from gtserver.store import leases as lease_queries
from gtserver.store import open_store
from tests.nodes import Node, eventually, start_nodes
from tests.support import select_events
from tests.test_eot_longpoll import blocking, lockstep_player

TTL, RENEW = 2.0, 0.5
LEASE_OPTIONS = ("--lease-ttl", str(TTL), "--lease-renew", str(RENEW))
#: Seconds after which deadlocked client threads are freed (their nodes killed).
DEADLOCK = 60.0


class RoamingClient(GameClient):
    """A GameClient whose every request goes to the next of ``ports`` in turn."""

    def __init__(self, ports: list[int], *arguments: Any, **options: Any) -> None:
        super().__init__("127.0.0.1", ports[0], *arguments, **options)
        self._ports = itertools.cycle(ports)

    def _request(self, request: dict[str, Any]) -> Any:
        self.port = next(self._ports)
        return super()._request(request)


async def in_threads(nodes: list[Node], *bodies: Any) -> list[Any]:
    """Run each blocking ``body()`` in a thread of its own; their results.
    Should they deadlock, the nodes are killed so that their calls fail."""
    def kill_all() -> None:
        for node in nodes:
            if node.running:
                node.kill()
    return await blocking(bodies, kill_all, DEADLOCK)


def watch(client: GameClient, final: threading.Event) -> list[dict[str, Any]]:
    """Observe (as soon as the session runs) until the game is over."""
    deadline = time.monotonic() + DEADLOCK
    while True:
        try:
            client.observe()
            break
        except GameServerError:         # not started yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    seen = []
    while True:
        state = client.state()
        seen.append(state)
        if state["gameover"]:
            final.set()
            return seen


class DeploymentGameTests(unittest.TestCase):
    timeout = 240

    async def logged_moves(self, url: str, session: str) -> list[dict[str, Any]]:
        """The data of every ``move`` event of ``session`` in the database."""
        store = open_store(url, reactor)
        await store.start()
        try:
            rows = await store.run(select_events, source="eot", kinds=("move",))
        finally:
            await store.close()
        moves = [json.loads(row[-1]) for row in rows]
        return [move for move in moves if move["session"] == session]

    async def test_lockstep_players_and_an_observer_on_three_nodes(self):
        nodes = await start_nodes(self, count=3, listeners=("eot",), options=LEASE_OPTIONS)
        ports = [node.port("eot") for node in nodes]
        barrier = threading.Barrier(2)
        players = [RoamingClient(ports[i:] + ports[:i], "TicTacToe", session="three",
                                 players=2, name=name) for i, name in enumerate(("ann", "bob"))]
        watcher = RoamingClient(ports[2:] + ports[:2], "TicTacToe", session="three",
                                name="ann")
        final = threading.Event()
        first, second, watched = await in_threads(
            nodes, *(lambda c=c: lockstep_player(c, barrier) for c in players),
            lambda: watch(watcher, final))
        self.assertEqual({first["me"], second["me"]}, {0, 1})
        self.assertEqual(first["rounds"], second["rounds"])     # the same state each round
        self.assertTrue(first["final"]["gameover"])
        legal = 9 - first["final"]["board"].count(-1)
        self.assertEqual(first["refusals"] + second["refusals"], legal)
        self.assertEqual(len(first["rounds"]), 2 * legal + 1)
        ann = first if first["me"] == 0 else second
        self.assertEqual(watched[-1], ann["final"])
        self.assertEqual(len(await self.logged_moves(nodes[0].url, "three")), legal)
        for node in nodes:
            self.assertNotIn("Traceback", node.output)

    async def test_kill_of_the_home_mid_game(self):
        a, b = await start_nodes(self, count=2, listeners=("eot",), options=LEASE_OPTIONS)
        ports = [a.port("eot"), b.port("eot")]
        barrier = threading.Barrier(2)
        acknowledged: list[list[str]] = [[], []]
        enough = threading.Event()

        def player(index: int, name: str) -> dict[str, Any]:
            client = RoamingClient(ports[index:] + ports[:index], "Chat", session="doomed",
                                   players=2, name=name)
            me = client.join()
            client.move(name=name)
            barrier.wait(DEADLOCK)
            count = itertools.count()
            try:
                while True:
                    client.state()
                    text = f"{name} {next(count)}"
                    client.move(message=text)
                    acknowledged[index].append(text)
                    if sum(map(len, acknowledged)) >= 6:
                        enough.set()
            except GameServerError as error:
                failed = str(error)
            client.port = ports[1]      # and again through the survivor
            client._ports = itertools.repeat(ports[1])
            try:
                client.state()
            except GameServerError as error:
                return {"me": me, "failed": failed, "after": str(error)}
            raise AssertionError(f"the session outlived its home (after {failed!r})")

        # ann's join goes to a, and only then bob's to b: a is the session's home.
        ann = deferToThread(player, 0, "ann")
        store = open_store(a.url, reactor)
        await store.start()
        self.addCleanup(store.close)
        await eventually(lambda: store.run(lease_queries.holder, session_lease(
            "Chat", "doomed"), reactor.seconds()).addCallback(lambda home: home == "a"))
        playing = gatherResults([ann, deferToThread(player, 1, "bob")], consumeErrors=True)
        await deferToThread(enough.wait, DEADLOCK)
        await a.kill()
        outcomes = await playing
        for outcome in outcomes:
            self.assertEqual(outcome["after"], f"framework: {HOME_STOPPED}")
        # Every move a player was told of is in the research log.
        logged = await self.logged_moves(b.url, "doomed")
        told = sum(map(len, acknowledged))
        self.assertGreaterEqual(told, 6)
        messages = {move["move"]["message"] for move in logged if "message" in move["move"]}
        self.assertLessEqual(set(acknowledged[0] + acknowledged[1]), messages)
        # New sessions live on the survivor.
        solo = RoamingClient(ports[1:], "Echo", session="auto", players=1)
        solo.join()
        solo.move(msg="still here")
        self.assertEqual(solo.state()["echo"], "still here")
        pair = [RoamingClient(ports[1:], "TicTacToe", session="after", players=2)
                for _ in range(2)]
        ids = await gatherResults([deferToThread(client.join) for client in pair])
        self.assertEqual(sorted(ids), [0, 1])
        self.assertNotIn("Traceback", b.output)
