"""The EOT game API in memory: each request on its own connection to the
listener's protocol (a StringTransport from :meth:`tests.memory.MemoryDaemon.stream`),
join and connection timeouts on the daemon's clock. A reply that must not
have come yet is an assertion on the transport, not a wait. The same
requests over real sockets are in :mod:`tests.test_eot`."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial import unittest

from tests.memory import MemoryDaemon, StreamConnection
from tests.test_eot import encode, join_request, joined_so_far, tables_of


def eot_server(testcase: unittest.TestCase, *arguments: str) -> MemoryDaemon:
    return MemoryDaemon(testcase, *arguments, listeners=("eot",))


def connect(server: MemoryDaemon) -> StreamConnection:
    return server.stream("eot")


def start_call(server: MemoryDaemon, request: dict[str, Any]) -> Deferred:
    """Send a request on a new connection; fires with the reply once the server closed."""
    connection = connect(server)
    connection.write(encode(request))
    return connection.closed.addCallback(json.loads)


def call(testcase: unittest.TestCase, server: MemoryDaemon,
         request: dict[str, Any]) -> dict[str, Any]:
    """The reply to ``request``, which must have come at once."""
    return testcase.successResultOf(start_call(server, request))


class Player:
    """The request fields of one joined player, built from its join reply."""

    def __init__(self, testcase: unittest.TestCase, server: MemoryDaemon, game: str,
                 reply: dict[str, Any]) -> None:
        testcase.assertEqual(reply["status"], "ok", reply)
        self.testcase, self.server, self.game = testcase, server, game
        data = reply["data"]
        self.id, self.key, self.session = data["player_id"], data["key"], data["session"]

    def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "game": self.game, "session": self.session,
                "player_id": self.id, "key": self.key, **fields}

    def move(self, **arguments: Any) -> dict[str, Any]:
        return call(self.testcase, self.server, self.request("move", move=arguments))

    def state(self) -> dict[str, Any]:
        return call(self.testcase, self.server, self.request("state", observer=False))

    def start_state(self) -> Deferred:
        return start_call(self.server, self.request("state", observer=False))


def join_all(testcase: unittest.TestCase, server: MemoryDaemon, game: str, session: str,
             count: int, names: list[str] | None = None) -> list[Player]:
    """``count`` players join one session, in order; the last join answers them all."""
    pending = []
    for index in range(count):
        pending.append(start_call(server, join_request(
            game, session, count, names[index] if names else "")))
        if index < count - 1:
            testcase.assertEqual(joined_so_far(server, game, session), index + 1)
            testcase.assertNoResult(pending[-1])
    return [Player(testcase, server, game, testcase.successResultOf(reply))
            for reply in pending]


class JoinTests(unittest.TestCase):
    def test_join_timeout(self):
        server = eot_server(self, "--eot-join-timeout", "0.2")
        pending = start_call(server, join_request("TicTacToe", "lonely", 2))
        server.advance(0.19)
        self.assertNoResult(pending)
        server.advance(0.01)
        reply = self.successResultOf(pending)
        self.assertEqual(reply["status"], "error")
        self.assertIn("not enough players", reply["message"])
        self.assertEqual(tables_of(server).tables, {})

    def test_disconnect_while_joining_frees_the_seat(self):
        server = eot_server(self)
        connection = connect(server)
        connection.write(encode(join_request("TicTacToe", "t", 2, "gone")))
        self.assertIn(("TicTacToe", "t"), tables_of(server).tables)
        self.assertEqual(connection.received, b"")
        connection.lose()
        self.assertNotIn(("TicTacToe", "t"), tables_of(server).tables)
        players = join_all(self, server, "TicTacToe", "t", 2)
        self.assertEqual([p.id for p in players], [0, 1])


class PlayTests(unittest.TestCase):
    def tictactoe(self, server: MemoryDaemon, session: str = "ttt") -> tuple[list[Player], int]:
        """Two players in a TicTacToe session, both past their first state."""
        players = join_all(self, server, "TicTacToe", session, 2)
        first = players[0].state()
        self.assertEqual(players[1].state(), first)
        self.assertEqual(first["status"], "ok")
        return players, first["data"]["current"][0]

    def test_state_long_poll(self):
        server = eot_server(self)
        players, starter = self.tictactoe(server)
        mover, other = players[starter], players[1 - starter]
        waiting = other.start_state()              # nothing changed since: parks
        table = tables_of(server).tables[("TicTacToe", "ttt")]
        self.assertTrue(table.parked)
        server.advance(1)
        self.assertNoResult(waiting)
        mover.move(position=0)
        reply = self.successResultOf(waiting)
        self.assertEqual(reply["data"]["board"][0], starter)
        self.assertEqual(reply["data"]["current"], [other.id])
        # The mover gets the new state at once, right after its own move.
        self.assertEqual(mover.state()["data"]["board"][0], starter)

    def test_disconnect_while_parked_releases_the_waiter(self):
        server = eot_server(self)
        players, _ = self.tictactoe(server)
        connection = connect(server)
        connection.write(encode(players[1].request("state", observer=False)))
        table = tables_of(server).tables[("TicTacToe", "ttt")]
        self.assertTrue(table.parked)
        connection.lose()
        self.assertFalse(table.parked)
        self.assertEqual(table.players[1].waiters, [])
        self.assertEqual(connection.received, b"")
