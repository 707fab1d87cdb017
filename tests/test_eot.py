"""The EOT game API over real sockets: every request, session rule and bad input."""

from __future__ import annotations

import functools
import json
import random
import socket
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial import unittest
from zope.interface import implementer

from gtserver.eot.lobby import TableService
from gtserver.eot.protocol import EOTFactory
from gtserver.games import GameFactory, IllegalMove
from gtserver.interfaces import IGame
from tests.fakegames import OneSeatGame
from tests.support import select_events, start_server

TCP_ESTABLISHED, TCP_CLOSE = 1, 7     # Linux tcpi_state values


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of a client socket (first byte of TCP_INFO)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


class Collector(Protocol):
    """Collects everything the server sends until it closes."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closed: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(b"".join(self.chunks))


async def connect(port: int) -> Collector:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    return await connectProtocol(endpoint, Collector())


async def exchange(port: int, payload: bytes) -> bytes:
    """Send raw bytes, return everything received until the server closed."""
    connection = await connect(port)
    connection.transport.write(payload)
    return await connection.closed


def encode(request: dict[str, Any]) -> bytes:
    return json.dumps(request).encode() + b"EOT\0"


async def call(port: int, request: dict[str, Any]) -> dict[str, Any]:
    return json.loads(await exchange(port, encode(request)))


def start_call(port: int, request: dict[str, Any]) -> Deferred:
    """Send a request without waiting; the Deferred fires with the reply."""
    from twisted.internet.defer import ensureDeferred
    return ensureDeferred(call(port, request))


async def until(predicate, timeout: float = 30.0) -> None:
    """Wait (on the real reactor) until ``predicate()`` is true.

    The timeout only bounds a failing test; a passing one never waits longer
    than its condition needs.
    """
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("condition not reached in time")
        await task.deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


async def eot_server(testcase: unittest.TestCase, *arguments: str, endpoint: str | None = None):
    server = await start_server(testcase, *arguments, listeners={"eot": endpoint})
    return server, server.port("eot")


def tables_of(server: Any) -> TableService:
    return server.factory("eot").tables


def eot_factory(server: Any) -> EOTFactory:
    return next(listener.factory for listener in server.service.listeners
                if listener.protocol_name == "eot")


def fake_connection_clock(server: Any) -> task.Clock:
    """Connection timeouts of the server's EOT listener run on a fake clock from now on."""
    clock = task.Clock()
    eot_factory(server).clock = clock
    return clock


def joined_so_far(server: Any, game: str, session: str) -> int:
    """Players in the session a further join with ``session`` would enter."""
    service = tables_of(server)
    if session == "auto":
        waiting = service.open_auto.get(game)
        return len(waiting[0].players) if waiting else 0
    found = service.tables.get((game, session))
    return len(found.players) if found is not None and not found.full else 0


class Player:
    """The request fields of one joined player, built from its join reply."""

    def __init__(self, port: int, game: str, reply: dict[str, Any]) -> None:
        assert reply["status"] == "ok", reply
        self.port, self.game = port, game
        data = reply["data"]
        self.id, self.key, self.session = data["player_id"], data["key"], data["session"]

    def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "game": self.game, "session": self.session,
                "player_id": self.id, "key": self.key, **fields}

    async def move(self, **arguments: Any) -> dict[str, Any]:
        return await call(self.port, self.request("move", move=arguments))

    async def state(self, observer: bool = False) -> dict[str, Any]:
        return await call(self.port, self.request("state", observer=observer))

    def start_state(self) -> Deferred:
        return start_call(self.port, self.request("state", observer=False))

    async def restart(self) -> dict[str, Any]:
        return await call(self.port, self.request("restart"))


def join_request(game: str, session: str, players: int | None, name: str = "") -> dict:
    return {"type": "join", "game": game, "session": session, "players": players,
            "name": name}


async def join_all(server: Any, port: int, game: str, session: str, count: int,
                   names: list[str] | None = None) -> list[Player]:
    """``count`` players join one session, in order.

    Each join is sent once the server has registered the one before, so the
    ids follow the order of ``names`` however slow the machine is.
    """
    pending = []
    for index in range(count):
        name = names[index] if names else ""
        pending.append(start_call(port, join_request(game, session, count, name)))
        if index < count - 1:
            await until(lambda index=index: joined_so_far(server, game, session) == index + 1)
    replies = [await reply for reply in pending]
    return [Player(port, game, reply) for reply in replies]


class JoinTests(unittest.TestCase):
    async def test_named_session_ids_in_join_order(self):
        server, port = await eot_server(self)
        first = start_call(port, join_request("TicTacToe", "lab", 2, "ann"))
        await until(lambda: ("TicTacToe", "lab") in tables_of(server).tables)
        self.assertFalse(first.called, "join answers only once the session is full")
        second = await call(port, join_request("TicTacToe", "lab", None, "bob"))
        first = await first
        self.assertEqual(first["status"], "ok")
        self.assertEqual(first["data"]["player_id"], 0)
        self.assertEqual(second["data"]["player_id"], 1)
        self.assertEqual(first["data"]["session"], "lab")
        self.assertEqual(first["data"]["request_size_max"], 1_000_000)
        self.assertNotEqual(first["data"]["key"], second["data"]["key"])
        self.assertGreaterEqual(len(first["data"]["key"]), 16)

    async def test_join_without_players_needs_an_open_session(self):
        server, port = await eot_server(self)
        reply = await call(port, join_request("Echo", "nobody-here", None))
        self.assertEqual(reply["status"], "error")
        self.assertIn("no such session", reply["message"])

    async def test_full_session_without_players_is_refused(self):
        server, port = await eot_server(self)
        await join_all(server, port, "Echo", "solo", 1)
        reply = await call(port, join_request("Echo", "solo", None))
        self.assertEqual(reply, {"status": "error", "message": "framework: the session is full"})

    async def test_players_is_ignored_when_an_open_session_is_joined(self):
        server, port = await eot_server(self)
        first = start_call(port, join_request("TicTacToe", "open", 2))
        await until(lambda: joined_so_far(server, "TicTacToe", "open") == 1)
        second = await call(port, join_request("TicTacToe", "open", 5))
        self.assertEqual(second["status"], "ok", second)
        self.assertEqual(second["data"]["player_id"], 1)
        self.assertEqual((await first)["data"]["player_id"], 0)
        first = start_call(port, join_request("TicTacToe", "auto", 2))
        await until(lambda: joined_so_far(server, "TicTacToe", "auto") == 1)
        second = await call(port, join_request("TicTacToe", "auto", 7))
        self.assertEqual(second["data"]["session"], (await first)["data"]["session"])

    async def test_unknown_game_and_bad_player_count(self):
        server, port = await eot_server(self)
        reply = await call(port, join_request("NoSuchGame", "x", 2))
        self.assertEqual(reply, {"status": "error", "message": "framework: no such game"})
        reply = await call(port, join_request("TicTacToe", "x", 3))
        self.assertEqual(reply["status"], "error")
        self.assertIn("2 to 2 players", reply["message"])

    async def test_joining_a_full_session_with_players_replaces_it(self):
        server, port = await eot_server(self)
        old = await join_all(server, port, "TicTacToe", "room", 2)
        parked = []
        for player in old:
            await player.state()                 # the first state answers at once
            parked.append(player.start_state())  # then they wait
        await until(lambda: len(tables_of(server).tables[("TicTacToe", "room")].parked) == 2)
        new = await join_all(server, port, "TicTacToe", "room", 2)
        for waiting in parked:
            reply = await waiting
            self.assertEqual(reply["status"], "error")
            self.assertIn("replaced", reply["message"])
        reply = await old[0].state()
        self.assertIn("replaced", reply["message"])
        self.assertEqual([p.id for p in new], [0, 1])
        self.assertEqual((await new[0].state())["status"], "ok")

    async def test_auto_sessions(self):
        server, port = await eot_server(self)
        reply = await call(port, join_request("TicTacToe", "auto", None))
        self.assertEqual(reply["status"], "error", "no open auto session to join")
        first = start_call(port, join_request("TicTacToe", "auto", 2, "ann"))
        await until(lambda: tables_of(server).open_auto.get("TicTacToe"))
        second = await call(port, join_request("TicTacToe", "auto", None, "bob"))
        first = await first
        token = first["data"]["session"]
        self.assertTrue(token.startswith("auto"))
        self.assertNotEqual(token, "auto")
        self.assertEqual(second["data"]["session"], token)
        self.assertEqual([first["data"]["player_id"], second["data"]["player_id"]], [0, 1])
        # A full auto session is never replaced: the next auto join opens another one.
        third = start_call(port, join_request("TicTacToe", "auto", 2))
        await until(lambda: tables_of(server).open_auto.get("TicTacToe"))
        fourth = await call(port, join_request("TicTacToe", "auto", 2))
        self.assertNotEqual((await third)["data"]["session"], token)
        self.assertEqual(fourth["data"]["session"], (await third)["data"]["session"])
        player = Player(port, "TicTacToe", first)
        self.assertEqual((await player.state())["status"], "ok")
        # Never observable, and the prefix is reserved for the server.
        for session in ("auto", token):
            reply = await call(port, {"type": "observe", "game": "TicTacToe",
                                      "session": session, "name": "ann"})
            self.assertEqual(reply["status"], "error")
            self.assertIn("cannot be observed", reply["message"])
        reply = await call(port, join_request("TicTacToe", "automatic", 2))
        self.assertIn("reserved", reply["message"])
        reply = await call(port, join_request("TicTacToe", token, 2))
        self.assertIn("reserved", reply["message"])


class PlayTests(unittest.TestCase):
    async def tictactoe(self, server, port: int, session: str = "ttt", names=None):
        """Two players in a TicTacToe session, both past their first state."""
        players = await join_all(server, port, "TicTacToe", session, 2, names)
        first = await players[0].state()
        self.assertEqual(await players[1].state(), first)
        self.assertEqual(first["status"], "ok")
        self.initial = first["data"]
        return players, first["data"]["current"][0]

    async def test_move_state_turns_and_illegal_moves(self):
        server, port = await eot_server(self)
        players, starter = await self.tictactoe(server, port)
        mover, other = players[starter], players[1 - starter]
        state = self.initial
        self.assertEqual(state["board"], [-1] * 9)
        self.assertIsNone(state["winner"])
        self.assertFalse(state["gameover"])
        self.assertEqual((await other.move(position=0))["message"],
                         "framework: it is not your turn")
        self.assertEqual(await mover.move(position=4), {"status": "ok", "data": None})
        for bad, message in ((4, "taken"), (9, "between 0 and 8"), ("1", "integer"),
                             (True, "integer")):
            reply = await other.move(position=bad)
            self.assertEqual(reply["status"], "illegalmove", bad)
            self.assertIn(message, reply["message"])
        reply = await other.move(square=1)
        self.assertEqual(reply["status"], "illegalmove")
        state = (await mover.state())["data"]    # right after its own move: at once
        self.assertEqual(state["board"][4], starter)
        self.assertEqual(state["current"], [1 - starter])

    async def test_wrong_key_and_unknown_player(self):
        server, port = await eot_server(self)
        players, starter = await self.tictactoe(server, port)
        requests = [players[0].request("state", observer=False),
                    players[0].request("move", move={"position": 4}),
                    players[1].request("move", move={"position": 4}),
                    players[0].request("restart")]
        for request in requests:
            for change in ({"key": "0" * 32}, {"key": players[1 - request["player_id"]].key},
                           {"player_id": 7}, {"player_id": -1}, {"session": "elsewhere"}):
                reply = await call(port, {**request, **change})
                self.assertEqual(reply["status"], "error", (request["type"], change))
        # Nothing was moved or restarted: the game is as it started.
        waiting = players[0].start_state()
        table = tables_of(server).tables[("TicTacToe", "ttt")]
        await until(lambda: table.parked)
        self.assertEqual(table.version, 1)
        self.assertFalse(waiting.called)
        await players[starter].move(position=4)
        self.assertEqual((await waiting)["data"]["board"][4], starter)

    async def test_waiting_clients_get_an_error_when_the_server_stops(self):
        server, port = await eot_server(self)
        players, _ = await self.tictactoe(server, port)
        waiting = [player.start_state() for player in players]
        table = tables_of(server).tables[("TicTacToe", "ttt")]
        await until(lambda: len(table.parked) == 2)
        await server.stop()
        for reply in waiting:
            self.assertEqual(await reply, {"status": "error",
                                           "message": "framework: the server is shutting down"})
        self.assertIsNone(eot_factory(server).sweeper)

    async def test_observer_sees_the_observed_players_states(self):
        server, port = await eot_server(self)
        players, starter = await self.tictactoe(server, port, "watched", ["ann", "bob"])
        observe = await call(port, {"type": "observe", "game": "TicTacToe",
                                    "session": "watched", "name": "bob"})
        self.assertEqual(observe["data"]["player_id"], 1)
        watcher = Player(port, "TicTacToe", {"status": "ok", "data": {
            **observe["data"], "session": "watched"}})
        self.assertNotEqual(watcher.key, players[1].key)
        seen = await watcher.state(observer=True)
        self.assertEqual(seen["data"], self.initial)
        parked = start_call(port, watcher.request("state", observer=True))
        table = tables_of(server).tables[("TicTacToe", "watched")]
        await until(lambda: table.parked)
        await players[starter].move(position=8)
        self.assertEqual((await parked)["data"], (await players[1].state())["data"])
        # An observer key cannot move, nor pass as the player.
        reply = await call(port, watcher.request("move", move={"position": 1}))
        self.assertEqual(reply["status"], "error")
        reply = await watcher.state(observer=False)
        self.assertEqual(reply["status"], "error")
        for name in ("carl", ""):
            reply = await call(port, {"type": "observe", "game": "TicTacToe",
                                      "session": "watched", "name": name})
            self.assertEqual(reply["status"], "error")

    async def test_observer_gets_the_state_after_a_refused_move(self):
        server, port = await eot_server(self)
        (player,) = await join_all(server, port, "Echo", "refused", 1, ["solo"])
        await player.state()
        observe = await call(port, {"type": "observe", "game": "Echo",
                                    "session": "refused", "name": "solo"})
        watcher = Player(port, "Echo", {"status": "ok", "data": {
            **observe["data"], "session": "refused"}})
        await watcher.state(observer=True)
        parked = start_call(port, watcher.request("state", observer=True))
        table = tables_of(server).tables[("Echo", "refused")]
        await until(lambda: table.parked)
        self.assertEqual((await player.move(msg="error"))["status"], "illegalmove")
        seen = (await player.state())["data"]     # at once after its own (refused) move
        self.assertEqual(seen["echo"], "error")
        self.assertEqual((await parked)["data"], seen)

    async def test_tictactoe_starting_player_is_random(self):
        server, port = await eot_server(self)
        tables_of(server).rng = random.Random(1)
        starters = set()
        for number in range(40):
            players = await join_all(server, port, "TicTacToe", f"start-{number}", 2)
            state = (await players[0].state())["data"]
            self.assertEqual(state["board"], [-1] * 9)
            starters.update(state["current"])
            if starters == {0, 1}:
                break
        self.assertEqual(starters, {0, 1})

    async def test_restart_delivers_the_final_state_once(self):
        server, port = await eot_server(self)
        players, starter = await self.tictactoe(server, port)
        mover, other = players[starter], players[1 - starter]
        # The mover wins with the top row while the other plays the middle row.
        for mine, theirs in ((0, 3), (1, 4)):
            await mover.move(position=mine)
            await other.move(position=theirs)
        await mover.move(position=2)
        final = (await mover.state())["data"]
        self.assertTrue(final["gameover"])
        self.assertEqual(final["winner"], mover.id)
        self.assertEqual(final["current"], [])
        self.assertEqual((await other.move(position=8))["message"], "framework: the game is over")
        self.assertEqual(await mover.restart(), {"status": "ok", "data": None})
        # The other had not seen the end: it gets the final state once, then the new game.
        self.assertEqual((await other.state())["data"], final)
        fresh = (await other.state())["data"]
        self.assertEqual(fresh["board"], [-1] * 9)
        self.assertFalse(fresh["gameover"])
        self.assertEqual((await mover.state())["data"], fresh)   # the restarter: at once
        self.assertEqual([p.id for p in players], [0, 1])

    async def test_restart_wakes_waiting_players(self):
        server, port = await eot_server(self)
        players, _ = await self.tictactoe(server, port)
        waiting = players[1].start_state()
        table = tables_of(server).tables[("TicTacToe", "ttt")]
        await until(lambda: table.parked)
        await players[0].restart()
        self.assertEqual((await waiting)["data"]["board"], [-1] * 9)

    async def test_idle_session_ends_and_waiters_get_an_error(self):
        server, port = await eot_server(self, "--eot-game-timeout", "30")
        clock = tables_of(server).clock = task.Clock()
        (player,) = await join_all(server, port, "Echo", "idle", 1)
        await player.state()
        waiting = player.start_state()      # parks until the session times out
        table = tables_of(server).tables[("Echo", "idle")]
        await until(lambda: table.parked)
        clock.advance(29)
        self.assertFalse(waiting.called)
        clock.advance(1)
        reply = await waiting
        self.assertEqual(reply["status"], "error")
        self.assertIn("without requests", reply["message"])
        self.assertIn("no such session", (await player.state())["message"])

    async def test_moves_go_to_the_event_log(self):
        server, port = await eot_server(self)
        (player,) = await join_all(server, port, "Echo", "logged", 1, ["eve"])
        await player.move(msg="hello")
        await server.core.events.flush()
        rows = await server.store.run(select_events, 0, 100, "eot", ("move",))
        self.assertEqual(len(rows), 1)
        data = json.loads(rows[0][-1])
        self.assertEqual(data["game"], "Echo")
        self.assertEqual(data["session"], "logged")
        self.assertEqual(data["player"], 0)
        self.assertEqual(data["move"], {"msg": "hello"})


class Exploding(OneSeatGame):
    """A game whose move raises a programming error."""

    def move(self, seat, **arguments):
        raise ZeroDivisionError("bug in the game")


@implementer(IGame)
class Unspeakable(Exploding):
    """A game that refuses moves with a message JSON cannot carry."""

    def move(self, seat, **arguments):
        raise IllegalMove({"not json": object()})


class BadInputTests(unittest.TestCase):
    async def parked_bystander(self, server, port):
        """An Echo player waiting in state(): it must not notice any bad input."""
        (player,) = await join_all(server, port, "Echo", "bystander", 1)
        await player.state()
        waiting = player.start_state()
        table = tables_of(server).tables[("Echo", "bystander")]
        await until(lambda: table.parked)
        return player, waiting

    async def check_bystander(self, player, waiting):
        self.assertFalse(waiting.called)
        await player.move(msg="still here")
        self.assertEqual((await waiting)["data"]["echo"], "still here")

    async def test_malformed_requests_get_error_replies(self):
        server, port = await eot_server(self)
        player, waiting = await self.parked_bystander(server, port)
        valid = player.request("state", observer=False)
        cases = [
            b"\x00\xff garbage \x80EOT\0",
            b"\xc3\x28 not utf-8EOT\0",
            b"{not json}EOT\0",
            b"[1, 2, 3]EOT\0",
            b'"a string"EOT\0',
            b"EOT\0",
            b"[" * 100000 + b"EOT\0",
            encode({"game": "Echo"}),
            encode({"type": "dance"}),
            encode({"type": ["join"]}),
            encode({**valid, "player_id": "0"}),
            encode({**valid, "player_id": True}),
            encode({**valid, "key": 5}),
            encode({**valid, "observer": "yes"}),
            encode({k: v for k, v in valid.items() if k != "session"}),
            encode({**valid, "type": "move", "move": [1]}),
            encode({**valid, "type": "move", "move": None}),
            encode({"type": "join", "game": "Echo", "session": "s", "players": "2"}),
            encode({"type": "join", "game": "Echo", "session": "s", "players": 1, "name": 3}),
            encode({"type": "join", "game": "Echo", "session": "s", "players": 0}),
            encode({"type": "join", "game": 7, "session": "s", "players": 1}),
        ]
        for payload in cases:
            raw = await exchange(port, payload)
            reply = json.loads(raw)
            self.assertEqual(reply["status"], "error", payload[:40])
            self.assertTrue(reply["message"].startswith("framework: "), reply)
        await self.check_bystander(player, waiting)

    async def test_a_request_in_pieces_split_inside_the_terminator(self):
        server, port = await eot_server(self)
        (player,) = await join_all(server, port, "Chat", "pieces", 1)
        payload = encode(player.request("move", move={"name": "zoë ✓"}))
        cut = len(payload) - 2                     # between "EO" and "T\0"
        pieces = [payload[:10], payload[10:cut], payload[cut:-1], payload[-1:]]
        connection = await connect(port)
        factory = eot_factory(server)
        sent = 0
        for piece in pieces[:-1]:
            connection.transport.write(piece)
            sent += len(piece)
            await until(lambda sent=sent: any(len(p.buffer) == sent for p in factory.pending))
        connection.transport.write(pieces[-1])
        self.assertEqual(json.loads(await connection.closed), {"status": "ok", "data": None})
        self.assertEqual((await player.move(message="hallo"))["status"], "ok")
        state = (await player.state())["data"]
        self.assertEqual(state["messages"], [["zoë ✓", "hallo"]])

    async def test_request_size_limit(self):
        server, port = await eot_server(self, "--eot-request-size-max", "1000")
        player, waiting = await self.parked_bystander(server, port)
        reply = json.loads(await exchange(port, b"x" * 5000 + b"EOT\0"))
        self.assertEqual(reply["status"], "error")
        self.assertIn("size limit", reply["message"])
        big = encode(player.request("move", move={"msg": "y" * 2000}))
        reply = json.loads(await exchange(port, big))
        self.assertIn("size limit", reply["message"])
        # Far beyond the limit with no terminator at all: refused, not buffered.
        reply = json.loads(await exchange(port, b"z" * 300_000))
        self.assertIn("size limit", reply["message"])
        # Exactly at the limit is fine.
        request = player.request("move", move={"msg": ""})
        padding = 1000 - len(encode(request))
        request["move"]["msg"] = "p" * padding
        self.assertEqual(len(encode(request)), 1000)
        self.assertEqual((await call(port, request))["status"], "ok")
        self.assertEqual((await waiting)["data"]["echo"], "p" * padding)

    async def test_silent_and_trickling_clients_time_out(self):
        server, port = await eot_server(self, "--eot-connection-timeout", "10")
        clock = fake_connection_clock(server)
        player, waiting = await self.parked_bystander(server, port)
        factory = eot_factory(server)
        silent = await connect(port)
        trickler = await connect(port)
        await until(lambda: len(factory.pending) == 2)
        for sent in range(1, 10):
            trickler.transport.write(b" ")        # data does not extend the deadline
            await until(lambda sent=sent: any(len(p.buffer) == sent for p in factory.pending))
            clock.advance(1)
        self.assertFalse(silent.closed.called or trickler.closed.called)
        clock.advance(1)
        for connection in (silent, trickler):
            reply = json.loads(await connection.closed)
            self.assertEqual(reply["status"], "error")
            self.assertIn("timed out", reply["message"])
        await self.check_bystander(player, waiting)

    async def test_a_client_that_never_reads_its_reply_is_cut_off(self):
        # Chat bounds raised so that one state outgrows the socket buffers.
        server, port = await eot_server(self, "--eot-connection-timeout", "5",
                                        "--eot-chat-line-max", "250000",
                                        "--eot-chat-history-max", str(256 * 2**20))
        clock = fake_connection_clock(server)
        (speaker,) = await join_all(server, port, "Chat", "big", 1, ["talker"])
        self.assertEqual((await speaker.move(name="talker"))["status"], "ok")
        # A state larger than the kernel's socket buffers can hold.
        with open("/proc/sys/net/ipv4/tcp_wmem") as limits:
            send_buffer_max = int(limits.read().split()[2])
        line = "m" * 250_000
        for _ in range(send_buffer_max // len(line) + 8):
            self.assertEqual((await speaker.move(message=line))["status"], "ok")
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        await until(lambda: tcp_state(client) == TCP_ESTABLISHED)
        client.send(encode(speaker.request("state", observer=False)))
        factory = eot_factory(server)
        await until(lambda: any(protocol.answered for protocol in factory.pending))
        clock.advance(4)
        self.assertEqual(tcp_state(client), TCP_ESTABLISHED)
        clock.advance(1)
        await until(lambda: tcp_state(client) == TCP_CLOSE)    # reset by the server
        received = b""
        try:
            while chunk := client.recv(1 << 20):
                received += chunk
        except (ConnectionResetError, BlockingIOError):
            pass
        self.assertLess(len(received), send_buffer_max)
        self.assertEqual(factory.pending, {})
        # A client that reads gets the whole state (at once after its own move).
        self.assertEqual((await speaker.move(message="last"))["status"], "ok")
        state = await speaker.state()
        self.assertEqual(len(state["data"]["messages"]), send_buffer_max // len(line) + 9)
        await until(lambda: not factory.pending)

    async def test_disconnect_mid_request(self):
        server, port = await eot_server(self)
        player, waiting = await self.parked_bystander(server, port)
        connection = await connect(port)
        connection.transport.write(b'{"type": "move", "game": "Ec')
        factory = eot_factory(server)
        await until(lambda: any(protocol.buffer for protocol in factory.pending))
        connection.transport.loseConnection()
        self.assertEqual(await connection.closed, b"")
        await self.check_bystander(player, waiting)

    async def test_a_game_that_raises_is_contained(self):
        server, port = await eot_server(self)
        tables_of(server).games["Exploding"] = GameFactory(Exploding)
        player, waiting = await self.parked_bystander(server, port)
        (boom,) = await join_all(server, port, "Exploding", "b", 1)
        reply = await boom.move(anything=1)
        self.assertEqual(reply, {"status": "error",
                                 "message": "framework: internal error in the game"})
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        tables_of(server).games["Unspeakable"] = GameFactory(Unspeakable)
        (mute,) = await join_all(server, port, "Unspeakable", "u", 1)
        reply = await mute.move(anything=1)
        self.assertEqual(reply, {"status": "error",
                                 "message": "framework: internal error in the game"})
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        await self.check_bystander(player, waiting)


def logged(move):
    """A decorator such as a game author writes: it keeps the signature visible."""
    @functools.wraps(move)
    def wrapper(self, seat, *args, **kwargs):
        self.calls += 1
        return move(self, seat, *args, **kwargs)
    return wrapper


class Decorated(OneSeatGame):
    """A game whose move takes exactly ``word`` and is wrapped by a decorator."""

    def __init__(self, players=1, rng=None):
        self.calls = 0
        self.word = ""

    @logged
    def move(self, seat, word):
        if not isinstance(word, str):
            len(word)       # a TypeError inside the game: a bug, not a bad move
        self.word = word

    def state(self, seat):
        return {"word": self.word, "calls": self.calls}


class SignatureTests(unittest.TestCase):
    async def test_wrong_arguments_of_a_decorated_move_are_illegal(self):
        server, port = await eot_server(self)
        tables_of(server).games["Decorated"] = GameFactory(Decorated)
        (player,) = await join_all(server, port, "Decorated", "d", 1)
        for arguments in ({"wrod": "x"}, {}, {"word": "x", "extra": 1}, {"seat": 0},
                          {"self": 1, "word": "x"}):
            reply = await call(port, player.request("move", move=arguments))
            self.assertEqual(reply["status"], "illegalmove", arguments)
            self.assertIn("bad move arguments", reply["message"])
        self.assertEqual(await player.move(word="yes"), {"status": "ok", "data": None})
        state = (await player.state())["data"]
        self.assertEqual((state["word"], state["calls"]), ("yes", 1))
        # A TypeError raised inside the game is still the game's bug.
        reply = await player.move(word=5)
        self.assertEqual(reply, {"status": "error",
                                 "message": "framework: internal error in the game"})
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
