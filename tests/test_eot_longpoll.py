"""The long-poll rules of ``state``, as the original game framework's clients rely on them.

Clients are written here the way course clients are: blocking
:class:`gtserver.client.GameClient` objects, one per thread, each calling
``state()`` once per round whether or not it moved in that round.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from gtserver.client import GameClient, GameServerError, IllegalMove
from tests.test_eot import Player, call, eot_server, join_all, start_call, tables_of, until

#: Seconds after which a deadlocked test stops its server (which fails every
#: parked request, so the client threads end); a passing test is never near it.
DEADLOCK = 30.0


async def blocking(bodies: tuple, on_deadlock: Any, deadlock: float = DEADLOCK) -> list[Any]:
    """Run each blocking ``body()`` in its own thread; their results in order.

    Should the clients deadlock, ``on_deadlock()`` runs after ``deadlock``
    seconds (stopping or killing the servers, so that their blocked calls
    fail and the test reports the deadlock).
    """
    watchdog = reactor.callLater(deadlock, on_deadlock)
    try:
        results = await DeferredList([deferToThread(body) for body in bodies],
                                     consumeErrors=True)
    finally:
        if watchdog.active():
            watchdog.cancel()
    for ok, value in results:
        if not ok:
            value.raiseException()
    return [value for _ok, value in results]


async def in_threads(testcase: unittest.TestCase, server: Any, *bodies) -> list[Any]:
    """:func:`blocking`, stopping ``server`` should the clients deadlock."""
    return await blocking(bodies, lambda: ensureDeferred(server.stop()))


def lockstep_player(client: GameClient, barrier: threading.Barrier) -> dict[str, Any]:
    """A round-based TicTacToe player that first tries an illegal move on every turn.

    Each round both players call ``state()`` and meet at the barrier; then the
    player to move makes one move (an illegal one, position 9, on the first
    round of each of its turns; the first free cell on the next). The other
    player makes no move in that round, yet calls ``state()`` in the next one.
    """
    me = client.join()
    rounds: list[list[int]] = []
    refusals = 0
    tried_illegal = False
    while True:
        state = client.state()
        rounds.append(state["board"])
        barrier.wait(DEADLOCK)
        if state["gameover"]:
            return {"me": me, "rounds": rounds, "refusals": refusals, "final": state}
        if me in state["current"]:
            if not tried_illegal:
                tried_illegal = True
                try:
                    client.move(position=9)
                except IllegalMove:
                    refusals += 1
            else:
                tried_illegal = False
                client.move(position=state["board"].index(-1))


class ThreadedClientTests(unittest.TestCase):
    async def test_lockstep_players_survive_refused_moves(self):
        server, port = await eot_server(self)
        barrier = threading.Barrier(2)
        clients = [GameClient("127.0.0.1", port, "TicTacToe", session="lockstep",
                              players=2, name=name) for name in ("ann", "bob")]
        first, second = await in_threads(
            self, server, *(lambda c=c: lockstep_player(c, barrier) for c in clients))
        self.assertEqual({first["me"], second["me"]}, {0, 1})
        # Both saw the same state in every round, the refused moves included.
        self.assertEqual(first["rounds"], second["rounds"])
        self.assertTrue(first["final"]["gameover"])
        legal = 9 - first["final"]["board"].count(-1)
        self.assertEqual(first["refusals"] + second["refusals"], legal)
        self.assertEqual(len(first["rounds"]), 2 * legal + 1)

    async def test_observers_in_threads_follow_a_game_with_refusals(self):
        server, port = await eot_server(self)
        players = await join_all(server, port, "Echo", "watched", 1, ["solo"])
        (player,) = players
        started = threading.Event()

        def observer() -> list[str]:
            client = GameClient("127.0.0.1", port, "Echo", session="watched", name="solo")
            client.observe()
            seen = [client.state()["echo"]]
            started.set()
            while True:
                state = client.state()
                seen.append(state["echo"])
                if state["gameover"]:
                    return seen

        def solo() -> list[str]:
            client = GameClient("127.0.0.1", port, "Echo", session="watched")
            client.player_id, client.key = player.id, player.key
            started.wait(DEADLOCK)
            seen = []
            for message in ("a", "error", "b", "error", "quit"):
                deadline = time.monotonic() + DEADLOCK
                while not observing_parked():   # the observer asks before each move
                    if time.monotonic() > deadline:
                        raise AssertionError("the observer never asked for a state")
                    time.sleep(0.001)
                try:
                    client.move(msg=message)
                except IllegalMove:
                    pass
                seen.append(client.state()["echo"])
            return seen

        table = tables_of(server).tables[("Echo", "watched")]

        def observing_parked() -> bool:
            return bool(table.seats[0].waiters)

        watched, played = await in_threads(self, server, observer, solo)
        self.assertEqual(played, ["a", "error", "b", "error", "quit"])
        self.assertEqual(watched, ["", "a", "error", "b", "error", "quit"])


class LongPollTests(unittest.TestCase):
    async def tictactoe(self, server: Any, port: int, token: str = "ttt"):
        players = await join_all(server, port, "TicTacToe", token, 2, ["ann", "bob"])
        first = await players[0].state()
        await players[1].state()
        table = tables_of(server).tables[("TicTacToe", token)]
        return players, first["data"]["current"][0], table

    async def observer(self, port: int, token: str, name: str) -> Player:
        reply = await call(port, {"type": "observe", "game": "TicTacToe",
                                  "session": token, "name": name})
        return Player(port, "TicTacToe", {"status": "ok", "data": {**reply["data"],
                                                                   "session": token}})

    async def test_a_refused_move_answers_everybody(self):
        server, port = await eot_server(self)
        players, starter, table = await self.tictactoe(server, port)
        mover, other = players[starter], players[1 - starter]
        watcher = await self.observer(port, "ttt", "bob")
        await watcher.state(observer=True)
        parked = [other.start_state(),
                  start_call(port, watcher.request("state", observer=True))]
        await until(lambda: len(table.parked) == 2)
        reply = await mover.move(position=9)
        self.assertEqual(reply["status"], "illegalmove")
        for waiting in parked:
            self.assertEqual((await waiting)["data"]["board"], [-1] * 9)
        # The mover had not asked yet: its next state answers at once too.
        self.assertEqual((await mover.state())["data"]["board"], [-1] * 9)
        # Everybody is now up to date: the next states park until a change.
        again = [other.start_state(), mover.start_state()]
        await until(lambda: len(table.parked) == 2)
        self.assertEqual(await mover.move(position=4), {"status": "ok", "data": None})
        for waiting in again:
            self.assertEqual((await waiting)["data"]["board"][4], starter)

    async def test_a_refused_move_owes_the_idle_players_a_state(self):
        server, port = await eot_server(self)
        players, starter, table = await self.tictactoe(server, port)
        mover, other = players[starter], players[1 - starter]
        self.assertEqual((await mover.move(position=9))["status"], "illegalmove")
        waiting = other.start_state()       # not parked at the refusal: answers at once
        await until(lambda: waiting.called)
        self.assertEqual((await waiting)["data"]["current"], [starter])
        self.assertFalse(table.parked)

    async def test_framework_refusals_wake_nobody(self):
        server, port = await eot_server(self)
        players, starter, table = await self.tictactoe(server, port)
        mover, other = players[starter], players[1 - starter]
        parked = [player.start_state() for player in players]
        await until(lambda: len(table.parked) == 2)
        for request in (other.request("move", move={"position": 0}),        # not its turn
                        {**mover.request("move", move={"position": 0}), "key": "0" * 32}):
            self.assertEqual((await call(port, request))["status"], "error")
        self.assertEqual(len(table.parked), 2)
        self.assertEqual([len(player.waiters) for player in table.players], [1, 1])
        self.assertEqual(table.version, 1)
        # Play to the end; then a move on the finished game wakes nobody either.
        for mine, theirs in ((0, 3), (1, 4)):
            await mover.move(position=mine)
            await other.move(position=theirs)
        await mover.move(position=2)
        for waiting in parked:
            self.assertEqual((await waiting)["status"], "ok")
        for player in players:
            self.assertTrue((await player.state())["data"]["gameover"])
        again = [player.start_state() for player in players]
        await until(lambda: len(table.parked) == 2)
        version = table.version
        self.assertEqual((await other.move(position=8))["message"],
                         "framework: the game is over")
        self.assertEqual(table.version, version)
        self.assertEqual(len(table.parked), 2)
        await mover.restart()
        for waiting in again:
            self.assertEqual((await waiting)["status"], "ok")

    async def finished_game(self, server: Any, port: int):
        """A TicTacToe game played to its end, the final state seen by both players."""
        players, starter, table = await self.tictactoe(server, port)
        mover, other = players[starter], players[1 - starter]
        for mine, theirs in ((0, 3), (1, 4)):
            await mover.move(position=mine)
            await other.move(position=theirs)
        await mover.move(position=2)
        final = (await mover.state())["data"]
        self.assertEqual((await other.state())["data"], final)
        self.assertTrue(final["gameover"])
        return players, table, final

    async def test_restart_of_a_finished_game(self):
        server, port = await eot_server(self)
        players, table, final = await self.finished_game(server, port)
        ann, bob = players
        before = await self.observer(port, "ttt", "ann")
        self.assertEqual((await before.state(observer=True))["data"], final)
        self.assertEqual(await ann.restart(), {"status": "ok", "data": None})
        after = await self.observer(port, "ttt", "ann")
        # The restarter gets the new game at once.
        fresh = (await ann.state())["data"]
        self.assertEqual(fresh["board"], [-1] * 9)
        # Bob had seen the end, yet gets the final state once, then the new game.
        self.assertEqual((await bob.state())["data"], final)
        self.assertEqual((await bob.state())["data"], fresh)
        # Ann's observer seat (the restarter's) is owed the final state too: the
        # observer attached after the restart inherits it, then gets the new game.
        self.assertEqual((await after.state(observer=True))["data"], final)
        self.assertEqual((await before.state(observer=True))["data"], fresh)
        # The seat has seen everything: both observers now park until a change.
        parked = [start_call(port, watcher.request("state", observer=True))
                  for watcher in (before, after)]
        await until(lambda: len(table.seats[0].waiters) == 2)
        mover = players[fresh["current"][0]]
        await mover.move(position=4)
        for waiting in parked:
            self.assertEqual((await waiting)["data"]["board"][4], mover.id)

    async def test_observer_attached_after_a_restart_sees_the_old_end_first(self):
        server, port = await eot_server(self)
        players, table, final = await self.finished_game(server, port)
        await players[1].restart()
        watcher = await self.observer(port, "ttt", "bob")
        self.assertEqual((await watcher.state(observer=True))["data"], final)
        fresh = (await watcher.state(observer=True))["data"]
        self.assertEqual(fresh["board"], [-1] * 9)
        self.assertFalse(fresh["gameover"])
        self.assertEqual((await players[1].state())["data"], fresh)     # the restarter
        self.assertEqual((await players[0].state())["data"], final)

    async def test_restart_while_parked_delivers_the_old_end_first(self):
        server, port = await eot_server(self)
        players, table, final = await self.finished_game(server, port)
        waiting = players[1].start_state()
        await until(lambda: table.parked)
        await players[0].restart()
        self.assertEqual((await waiting)["data"], final)
        self.assertEqual((await players[1].state())["data"]["board"], [-1] * 9)

    async def test_restart_of_a_running_game_owes_nothing_old(self):
        server, port = await eot_server(self)
        players, starter, table = await self.tictactoe(server, port)
        await players[starter].move(position=4)
        watcher = await self.observer(port, "ttt", "ann")
        await players[1 - starter].restart()
        for request in (players[0].request("state", observer=False),
                        players[1].request("state", observer=False),
                        watcher.request("state", observer=True)):
            state = (await call(port, request))["data"]
            self.assertEqual(state["board"], [-1] * 9)

    async def test_several_observers_of_one_player_share_its_seat(self):
        server, port = await eot_server(self)
        players, starter, table = await self.tictactoe(server, port)
        watchers = [await self.observer(port, "ttt", "bob") for _ in range(3)]
        # The seat's first state goes to whoever asks first; the others wait.
        self.assertEqual((await watchers[0].state(observer=True))["data"]["board"], [-1] * 9)
        parked = [start_call(port, w.request("state", observer=True)) for w in watchers]
        await until(lambda: len(table.seats[1].waiters) == 3)
        await players[starter].move(position=0)
        replies = [await waiting for waiting in parked]
        self.assertEqual(replies[0], replies[1])
        self.assertEqual(replies[0], replies[2])
        self.assertEqual(replies[0]["data"], (await players[1].state())["data"])
        # An observer of the other player has its own seat.
        other = await self.observer(port, "ttt", "ann")
        self.assertEqual((await other.state(observer=True))["data"]["board"][0], starter)
        with self.assertRaises(GameServerError):
            GameClient("127.0.0.1", port, "TicTacToe", session="ttt", name="").observe()
