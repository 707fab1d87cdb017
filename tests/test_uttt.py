"""The ultimate tic-tac-toe listener end to end: real Autobahn clients over real
sockets, on SQLite and PostgreSQL (protocol logic: tests.test_uttt_memory)."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import tempfile
from collections import deque
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial import unittest

from gtserver.games.ultimate import UltimateTicTacToe
from gtserver.store import ratings as rating_queries
from tests.support import sqlite_url, start_server
from tests.tls import write_self_signed_certificate


class Closed(Exception):
    """The server closed the connection while a frame was awaited."""


class UtttClient(WebSocketClientProtocol):
    """A test client: queues every frame it receives, waits for the next one."""

    def __init__(self) -> None:
        super().__init__()
        self.inbox: deque[dict] = deque()
        self.closed: Deferred = Deferred()
        self._waiting: Deferred | None = None

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.inbox.append(json.loads(payload.decode("utf-8")))
        self._wake()

    def onClose(self, wasClean: bool, code: int, reason: str) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(Closed(reason))
        if not self.closed.called:
            self.closed.callback(code)
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.called:
            waiting.callback(None)

    def send(self, kind: str, data: Any = None) -> None:
        self.sendMessage(json.dumps({"type": kind, "data": data or {}}).encode("utf-8"))

    async def receive(self, timeout: float = 5.0) -> dict:
        while not self.inbox:
            if self.closed.called:
                raise Closed("connection closed")
            self._waiting = Deferred()
            self._waiting.addTimeout(timeout, reactor)
            await self._waiting
        return self.inbox.popleft()

    async def expect(self, kind: str) -> dict:
        message = await self.receive()
        if message["type"] != kind:
            raise AssertionError(f"expected {kind}, got {message}")
        return message["data"]

    async def nothing_more(self, seconds: float = 0.1) -> None:
        """Fail if any frame arrives within ``seconds``."""
        await sleep(seconds)
        if self.inbox:
            raise AssertionError(f"unexpected frames: {list(self.inbox)}")

    async def disconnect(self) -> None:
        if not self.closed.called:
            self.transport.abortConnection()
            await self.closed


def sleep(seconds: float) -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def connect(testcase: unittest.TestCase, port: int,
                  trust: bytes | None = None) -> UtttClient:
    """A connected client; over TLS (wss://localhost) trusting only the PEM
    certificate ``trust`` when it is given."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if trust is None:
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/")
    else:
        factory = WebSocketClientFactory(f"wss://localhost:{port}/")
        endpoint = wrapClientTLS(
            optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(trust)), endpoint)
    factory.protocol = UtttClient
    factory.opened = Deferred()
    await endpoint.connect(factory)
    client = await factory.opened
    testcase.addCleanup(client.disconnect)
    return client


async def login(testcase: unittest.TestCase, port: int, name: str, password: str = "pw",
                matches: int = 0, trust: bytes | None = None) -> tuple[UtttClient, dict]:
    """Log in and read the greeting; returns the client and its elo_update."""
    client = await connect(testcase, port, trust)
    client.send("login", {"name": name, "pw": password})
    response = await client.expect("login_response")
    testcase.assertTrue(response["success"], response)
    client.session = response["id"]
    standing = await client.expect("elo_update")
    if response["registered"]:
        await client.expect("friends_update")
    for _ in range(matches):
        await client.expect("match_update")
    return client, standing


async def challenge(testcase: unittest.TestCase, first: UtttClient, second: UtttClient,
                    second_name: str) -> dict:
    """``first`` challenges ``second`` by name; returns the new match_update."""
    first.send("match_request", {"player": second_name})
    update = await first.expect("match_update")
    testcase.assertEqual(await second.expect("match_update"), update)
    testcase.assertTrue((await first.expect("match_request_response"))["success"])
    return update


def move_frame(match_id: str, move: tuple[int, int, int, int], as_text: bool = True) -> dict:
    sub_x, sub_y, x, y = move
    values = {"sub_x": sub_x, "sub_y": sub_y, "x": x, "y": y}
    if as_text:
        values = {key: str(value) for key, value in values.items()}
    return {"id": match_id, **values}


def random_playouts():
    """Seeded random legal games, one after another: yields (game, moves so
    far) after every move."""
    for seed in itertools.count():
        rng = random.Random(seed)
        game = UltimateTicTacToe()
        moves: list[tuple[int, int, int, int]] = []
        while not game.is_over():
            choices = [(sx, sy, x, y) for sx, sy in game.open_boards()
                       for y in range(3) for x in range(3)
                       if not game.field[sy * 3 + y][sx * 3 + x]]
            move = rng.choice(choices)
            game.move(game.to_move, *move)
            moves.append(move)
            yield game, moves


def scripted_game(outcome: str) -> list[tuple[int, int, int, int]]:
    """A legal move sequence ending in ``outcome`` ("a", "b" or "draw")."""
    for game, moves in random_playouts():
        if game.is_over() and ("draw" if game.winner is None else "ab"[game.winner]) == outcome:
            return list(moves)
    raise AssertionError("unreachable")


def moves_until_a_drawn_sub_board() -> tuple[list[tuple[int, int, int, int]], tuple[int, int]]:
    """Legal moves, from the start, whose last one fills a sub-board without a
    line, and that sub-board's (sub_x, sub_y)."""
    for game, moves in random_playouts():
        sub_x, sub_y = moves[-1][:2]
        if game.board[sub_y][sub_x] == 3 and not game.is_over():
            return list(moves), (sub_x, sub_y)
    raise AssertionError("unreachable")


async def play(testcase: unittest.TestCase, match_id: str, players: list[UtttClient],
               moves: list[tuple[int, int, int, int]]) -> dict:
    """Play ``moves`` alternately (player_a first); returns the last state."""
    state = None
    for number, move in enumerate(moves):
        mover, other = players[number % 2], players[1 - number % 2]
        mover.send("move", move_frame(match_id, move, as_text=number % 3 != 0))
        update = await mover.expect("match_update")
        testcase.assertEqual(await other.expect("match_update"), update)
        state = update["match_state"]
        testcase.assertEqual(state["last_move"], dict(zip(("sub_x", "sub_y", "x", "y"),
                                                          move, strict=True)))
    return state


async def settle_websocket_timers(limit: float = 3.0) -> None:
    """Let Autobahn's batched timers (close-handshake timeouts, bucketed per
    second) run out, so the reactor is clean when the test ends."""
    waited = 0.0
    while waited < limit and any(
            getattr(call.func, "__name__", "") == "_notify_bucket"
            for call in reactor.getDelayedCalls()):
        await sleep(0.05)
        waited += 0.05


class HeldStore:
    """Stands in for the store of the match writer: transactions wait until
    :meth:`release` hands them to the real store."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.held: list[tuple[Any, tuple, Deferred]] = []

    def run(self, function: Any, *args: Any) -> Deferred:
        waiter: Deferred = Deferred()
        self.held.append((function, args, waiter))
        return waiter

    def release(self) -> None:
        held, self.held = self.held, []
        for function, args, waiter in held:
            self.store.run(function, *args).chainDeferred(waiter)


async def until(condition: Any, timeout: float = 5.0) -> None:
    waited = 0.0
    while not condition():
        if waited >= timeout:
            raise AssertionError("condition not reached")
        await sleep(0.01)
        waited += 0.01


class UtttTestMixin:
    db: str | None = None

    async def serve(self, *arguments: str, db: str | None = None) -> Any:
        self.addCleanup(settle_websocket_timers)
        self.server = await start_server(self, *arguments, db=db or self.db,
                                         listeners={"uttt": None})
        self.port = self.server.port("uttt")
        return self.server

    async def users(self, *names: str) -> list[UtttClient]:
        return [(await login(self, self.port, name))[0] for name in names]


class IdentityTests(UtttTestMixin, unittest.TestCase):
    async def test_failed_logins_are_throttled(self):
        await self.serve("--uttt-login-failures", "3")
        await login(self, self.port, "alice", "secret")
        for _ in range(3):
            client = await connect(self, self.port)
            client.send("login", {"name": "alice", "pw": "guess"})
            self.assertFalse((await client.expect("login_response"))["success"])
        client = await connect(self, self.port)
        client.send("login", {"name": "alice", "pw": "secret"})
        response = await client.expect("login_response")
        self.assertFalse(response["success"])
        self.assertIn("too many", response["msg"])


class MatchTests(UtttTestMixin, unittest.TestCase):
    async def test_full_game_to_a_win(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        update = await challenge(self, alice, bob, "bob")
        self.assertTrue(update["ranked"])
        state = update["match_state"]
        self.assertEqual((state["player_a"], state["player_b"]), ("alice", "bob"))
        self.assertEqual((state["current_player"], state["active_player"]), ("alice", "alice"))
        self.assertEqual(state["complete_field"], [[0] * 9 for _ in range(9)])
        self.assertRegex(update["revoke_time"], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")

        final = await play(self, update["id"], [alice, bob], scripted_game("b"))
        self.assertEqual((final["game_over"], final["is_draw"], final["player_won"]),
                         (True, False, "bob"))
        self.assertIsNone(final["current_player"])
        self.assertEqual((await alice.expect("elo_update"))["elo"], 990)
        bob_standing = await bob.expect("elo_update")
        self.assertEqual((bob_standing["elo"], bob_standing["rank"]), (1010, 1))
        self.assertEqual(bob_standing["top_names"], ["bob", "alice"])
        self.assertEqual(bob_standing["top_elos"], [1010, 990])

        # a late move on the finished match gets its final state back
        alice.send("move", move_frame(update["id"], (0, 0, 0, 0)))
        self.assertEqual((await alice.expect("match_update"))["match_state"], final)
        await self.server.core.events.flush()
        kinds = await self.event_kinds(update["id"])
        self.assertEqual(kinds.count("move"), len(scripted_game("b")))
        self.assertIn("match_start", kinds)
        self.assertIn("match_end", kinds)
        self.assertEqual(kinds.count("rating_change"), 2)

    async def event_kinds(self, match_id: str) -> list[str]:
        from gtserver.store.base import Statement

        def query():
            rows = yield Statement(
                "SELECT kind, source FROM events WHERE match_id = ? ORDER BY id", (match_id,))
            return rows

        rows = await self.server.store.run(query)
        self.assertEqual({source for _kind, source in rows}, {"uttt"})
        return [kind for kind, _source in rows]

    async def test_elo_figures_for_a_known_sequence(self):
        await self.serve()
        alice, bob, carol = await self.users("alice", "bob", "carol")

        async def forfeit(winner, loser, loser_name, winner_first=True):
            first, second = (winner, loser) if winner_first else (loser, winner)
            second_name = loser_name if winner_first else self.names[id(winner)]
            update = await challenge(self, first, second, second_name)
            await play(self, update["id"], [first, second], [(1, 1, 1, 1), (1, 1, 0, 0)])
            loser.send("end_match", {"id": update["id"]})
            await loser.expect("match_update")
            await winner.expect("match_update")
            return (await winner.expect("elo_update"), await loser.expect("elo_update"),
                    update["id"])

        self.names = {id(alice): "alice", id(bob): "bob", id(carol): "carol"}
        won, lost, first_match = await forfeit(alice, bob, "bob")
        self.assertEqual((won["elo"], lost["elo"]), (1010, 990))
        won, lost, _ = await forfeit(alice, carol, "carol")
        # 1010 vs 1000: expected 0.5144 -> 1010 + 9.71 and 1000 - 9.71, rounded
        self.assertEqual((won["elo"], lost["elo"]), (1020, 990))
        self.assertEqual((won["rank"], lost["rank"]), (1, 2))
        won, lost, _ = await forfeit(carol, alice, "alice", winner_first=False)
        # 990 vs 1020: expected 0.4569 -> 990 + 10.86 and 1020 - 10.86
        self.assertEqual((won["elo"], lost["elo"]), (1001, 1009))
        self.assertEqual(won["top_names"], ["alice", "carol", "bob"])
        self.assertEqual(won["top_elos"], [1009, 1001, 990])
        self.assertEqual(won["rank"], 2)

        user = await self.server.core.accounts.user("bob")
        history = await self.server.store.run(rating_queries.rating_changes, user.id)
        self.assertEqual([row[:3] for row in history], [(first_match, 1000, 990)])


class TLSTests(UtttTestMixin, unittest.TestCase):
    async def test_wss_on_an_ssl_endpoint(self):
        directory = tempfile.mkdtemp(prefix="gtserver-uttt-tls-")
        self.addCleanup(shutil.rmtree, directory, True)
        key, certificate, pem = write_self_signed_certificate(directory)
        self.addCleanup(settle_websocket_timers)
        server = await start_server(self, listeners={
            "uttt": f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}"})
        port = server.port("uttt")

        alice, _ = await login(self, port, "alice", trust=pem)
        bob, _ = await login(self, port, "bob", trust=pem)
        self.assertEqual(alice.transport.getHandle().get_peer_certificate().to_cryptography()
                         .public_bytes(Encoding.PEM), pem)
        update = await challenge(self, alice, bob, "bob")
        state = await play(self, update["id"], [alice, bob], [(1, 1, 1, 1), (1, 1, 2, 0)])
        self.assertEqual(state["complete_field"][3][5], 2)

        # A client that does not trust the certificate never gets a WebSocket,
        # and neither does plain ws:// on the TLS port; the server carries on.
        stranger = WebSocketClientFactory(f"wss://localhost:{port}/")
        stranger.protocol, stranger.opened = UtttClient, Deferred()
        untrusting = wrapClientTLS(optionsForClientTLS("localhost"),
                                   TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        await untrusting.connect(stranger)
        with self.assertRaises(Closed):
            await stranger.opened.addTimeout(5, reactor)
        plain = WebSocketClientFactory(f"ws://127.0.0.1:{port}/")
        plain.protocol, plain.opened = UtttClient, Deferred()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(plain)
        with self.assertRaises(Closed):
            await plain.opened.addTimeout(5, reactor)
        alice.send("match_states_request")
        self.assertEqual((await alice.expect("match_update"))["id"], update["id"])


class RestartTests(UtttTestMixin, unittest.TestCase):
    def database(self) -> str:
        return sqlite_url(self)

    async def test_reconnect_after_restart_mid_match(self):
        db = self.database()
        await self.serve(db=db)
        alice, bob, carol = await self.users("alice", "bob", "carol")
        alice_session, bob_session = alice.session, bob.session
        # a rated result first: carol ends a match both have moved in
        lost = await challenge(self, alice, carol, "carol")
        await play(self, lost["id"], [alice, carol], [(1, 1, 1, 1), (1, 1, 0, 0)])
        carol.send("end_match", {"id": lost["id"]})
        for client in (alice, carol):
            lost_final = await client.expect("match_update")
            await client.expect("elo_update")
        update = await challenge(self, alice, bob, "bob")
        alice.send("friend_request", {"user": "bob"})
        await alice.expect("friend_request_response")
        await alice.expect("friends_update")
        before = await play(self, update["id"], [alice, bob], [(1, 1, 1, 1), (1, 1, 0, 0)])
        for client in (alice, bob, carol):
            await client.disconnect()
        await self.server.stop()

        await self.serve(db=db)
        clients, greetings = [], {}
        for session, name in ((alice_session, "alice"), (bob_session, "bob")):
            client = await connect(self, self.port)
            client.send("reconnect", {"id": session})
            response = await client.expect("reconnect_response")
            self.assertEqual((response["success"], response["user"]), (True, name))
            greetings[name] = (await client.expect("elo_update"),
                               await client.expect("friends_update"))
            resumed = await client.expect("match_update")
            self.assertEqual(resumed["id"], update["id"])
            self.assertEqual(resumed["match_state"], before)
            clients.append(client)
        standing, friends = greetings["alice"]
        self.assertEqual((standing["elo"], standing["rank"]), (1010, 1))
        self.assertEqual(standing["top_names"], ["alice", "bob", "carol"])
        self.assertEqual(friends, {"friends": ["bob"], "elos": [1000]})
        self.assertEqual(greetings["bob"][1], {"friends": [], "elos": []})
        # a late move or end on a match that finished before the restart gets its final state
        alice = clients[0]
        alice.send("move", move_frame(lost["id"], (0, 0, 0, 0)))
        self.assertEqual(await alice.expect("match_update"), lost_final)
        alice.send("end_match", {"id": lost["id"]})
        self.assertEqual(await alice.expect("match_update"), lost_final)
        clients[1].send("move", move_frame(lost["id"], (0, 0, 0, 0)))   # bob did not play it
        self.assertEqual((await clients[1].expect("error"))["request"], "move")
        final = await play(self, update["id"], clients, [(0, 0, 0, 0)])
        self.assertEqual(final["current_player"], "bob")


class PostgresRestartTests(RestartTests):
    def database(self) -> str:
        from tests.pgcluster import postgres_url
        return postgres_url(self)


class PostgresMatchTests(UtttTestMixin, unittest.TestCase):
    """The same protocol on PostgreSQL: a game to a win, refusals, ratings, friends."""

    def setUp(self):
        from tests.pgcluster import postgres_url
        self.db = postgres_url(self)

    test_full_game_to_a_win = MatchTests.test_full_game_to_a_win
    event_kinds = MatchTests.event_kinds
    test_elo_figures_for_a_known_sequence = MatchTests.test_elo_figures_for_a_known_sequence

    async def test_match_request_refusals(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        for target, reason in (("alice", "yourself"), ("nobody", "no user"), ("ALICE", "")):
            alice.send("match_request", {"player": target})
            response = await alice.expect("match_request_response")
            self.assertFalse(response["success"])
            self.assertIn(reason, response["msg"])
        await challenge(self, alice, bob, "bob")
        for first, second in ((alice, "bob"), (bob, "alice")):
            first.send("match_request", {"player": second})
            self.assertIn("already", (await first.expect("match_request_response"))["msg"])
        await alice.nothing_more()
        await bob.nothing_more()

    async def test_friends(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        second = await connect(self, self.port)
        second.send("reconnect", {"id": alice.session})
        for kind in ("reconnect_response", "elo_update", "friends_update"):
            await second.expect(kind)
        alice.send("friend_request", {"user": "Bob"})
        self.assertTrue((await alice.expect("friend_request_response"))["success"])
        expected = {"friends": ["bob"], "elos": [1000]}
        self.assertEqual(await alice.expect("friends_update"), expected)
        self.assertEqual(await second.expect("friends_update"), expected)
        for name in ("bob", "alice", "nobody"):
            alice.send("friend_request", {"user": name})
            self.assertFalse((await alice.expect("friend_request_response"))["success"])
        guest = await connect(self, self.port)
        guest.send("temp_session", {"name": "guest"})
        await guest.expect("login_response")
        alice.send("friend_request", {"user": "guest"})
        self.assertFalse((await alice.expect("friend_request_response"))["success"])
        await bob.nothing_more()

        again, _ = await login(self, self.port, "alice", matches=0)
        # login() consumed the friends_update; check its content through a reconnect
        third = await connect(self, self.port)
        third.send("reconnect", {"id": again.session})
        await third.expect("reconnect_response")
        await third.expect("elo_update")
        self.assertEqual(await third.expect("friends_update"), expected)

        alice.send("unfriend_request", {"user": "bob"})
        self.assertTrue((await alice.expect("unfriend_request_response"))["success"])
        self.assertEqual(await alice.expect("friends_update"), {"friends": [], "elos": []})
        alice.send("unfriend_request", {"user": "bob"})
        self.assertFalse((await alice.expect("unfriend_request_response"))["success"])

    async def test_concurrent_moves_on_one_match(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        second = await connect(self, self.port)
        second.send("reconnect", {"id": alice.session})
        for kind in ("reconnect_response", "elo_update", "friends_update"):
            await second.expect(kind)
        update = await challenge(self, alice, bob, "bob")
        await second.expect("match_update")
        # alice's two sockets and bob all move at once: exactly one move counts
        alice.send("move", move_frame(update["id"], (0, 0, 0, 0)))
        second.send("move", move_frame(update["id"], (2, 2, 2, 2)))
        bob.send("move", move_frame(update["id"], (1, 1, 1, 1)))
        # Five frames in all: the accepted move reaches the three sockets, and
        # each of the two refused ones gets the unchanged state back.
        clients = (alice, second, bob)
        for _ in range(500):
            if sum(len(client.inbox) for client in clients) >= 5:
                break
            await sleep(0.02)
        frames = [frame for client in (alice, second, bob) for frame in client.inbox]
        fields = [frame["data"]["match_state"]["complete_field"] for frame in frames]
        marks = {sum(cell != 0 for row in field for cell in row) for field in fields}
        self.assertLessEqual(marks, {0, 1})
        final = fields[-1] if fields else None
        matches = self.server.factory("uttt").service
        game = matches.open[update["id"]].game
        self.assertEqual(sum(cell != 0 for row in game.field for cell in row), 1)
        self.assertIsNotNone(final)
