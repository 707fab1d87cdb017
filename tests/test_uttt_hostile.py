"""Hostile and broken ultimate tic-tac-toe clients over real sockets with real
Autobahn clients: text no store can keep (SQLite and PostgreSQL), a database
that stops, a client that stops reading (the kernel's buffers fill), and the
timeouts on the real reactor. The rest of the hostile input is played in
memory (tests.test_uttt_hostile_memory). Trial fails a test on any logged
error, so every test here also shows that none of this is logged as a failure."""

from __future__ import annotations

import json
import struct

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import reactor
from twisted.trial import unittest

from tests.test_uttt import (
    Closed,
    UtttTestMixin,
    challenge,
    connect,
    login,
    move_frame,
    settle_websocket_timers,
    sleep,
)

TIMEOUT = 10.0
NESTED = 1000


def client_frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    """The bytes of one masked client frame, as a browser sends it."""
    mask = b"\x5a\x13\xc7\x02"
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", (0x80 if fin else 0) | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", (0x80 if fin else 0) | opcode, 0x80 | 127, length)
    return header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


def request(kind: str, data: dict) -> bytes:
    """A frame's JSON as a browser's JSON.stringify writes it (lone surrogates escaped)."""
    return json.dumps({"type": kind, "data": data}).encode("utf-8")


async def close_code(client) -> int:
    return await client.closed.addTimeout(TIMEOUT, reactor)


def server_side(server) -> list:
    """The server's uttt connections."""
    factory = next(item.factory for item in server.service.listeners
                   if item.protocol_name == "uttt")
    return list(factory.connections)


class UnstorableTextTests(UtttTestMixin, unittest.TestCase):
    """Lone surrogates (legal JSON, not UTF-8) and NUL (refused by PostgreSQL)
    get the protocol's answer to bad input, never 'internal server error'."""

    TEXTS = ("\ud800", "\udfff", "bob\ud800", "\u0000", "bob\u0000", "\u0000\ud800")

    def test_storable(self):
        from gtserver.uttt.adapter import storable
        self.assertTrue(storable("bob"))
        self.assertTrue(storable("émile \U0001f600"))
        for text in self.TEXTS:
            self.assertFalse(storable(text), repr(text))

    async def test_identity(self):
        await self.serve()
        await login(self, self.port, "alice", "secret")
        for text in self.TEXTS:
            # a failed reconnect keeps the connection for a login
            client = await connect(self, self.port)
            client.sendMessage(request("reconnect", {"id": text}))
            self.assertEqual(await client.expect("reconnect_response"),
                             {"success": False, "id": None, "user": None, "registered": False,
                              "msg": "unknown or expired session"})
            client.sendMessage(request("login", {"name": "alice", "pw": text}))
            response = await client.expect("login_response")
            self.assertFalse(response["success"])
            self.assertEqual(await close_code(client), 1000)
            for first in (("login", {"name": "newbie", "pw": text + "\ud800"}),
                          ("login", {"name": text, "pw": "pw"}),
                          ("temp_session", {"name": text}),
                          (text, {})):
                client = await connect(self, self.port)
                client.sendMessage(request(*first))
                self.assertFalse((await client.expect("login_response"))["success"], first)
                await close_code(client)
        self.assertIsNone(await self.server.core.accounts.user("newbie"))
        # a password with NUL is just a password: it reaches only the hash
        client, _ = await login(self, self.port, "nul", "a\u0000b")
        await client.disconnect()
        again = await connect(self, self.port)
        again.send("login", {"name": "nul", "pw": "a"})
        self.assertFalse((await again.expect("login_response"))["success"])
        await login(self, self.port, "nul", "a\u0000b")


class PostgresUnstorableTextTests(UnstorableTextTests):
    def setUp(self):
        from tests.pgcluster import postgres_url
        self.db = postgres_url(self)

    async def test_after_login(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        update = await challenge(self, alice, bob, "bob")
        for text in self.TEXTS:
            # a move or end for a match nobody can name: the error reply
            alice.sendMessage(request("move", {**move_frame(update["id"], (1, 1, 1, 1)),
                                               "id": text}))
            self.assertEqual((await alice.expect("error"))["request"], "move")
            alice.sendMessage(request("end_match", {"id": text}))
            self.assertEqual((await alice.expect("error"))["request"], "end_match")
            # a known match with a bad value: the unchanged state
            alice.sendMessage(request("move", {**move_frame(update["id"], (1, 1, 1, 1)),
                                               "x": text}))
            self.assertEqual(await alice.expect("match_update"), update)
            for kind in ("match_request", "friend_request", "unfriend_request"):
                field = "player" if kind == "match_request" else "user"
                alice.sendMessage(request(kind, {field: text}))
                response = await alice.expect(f"{kind}_response")
                self.assertEqual(response["success"], False, (kind, text))
            alice.sendMessage(request(text, {"x": text}))         # unknown type: ignored
            for kind in ("login", "reconnect"):
                alice.sendMessage(request(kind, {"name": text, "pw": text, "id": text}))
                self.assertFalse((await alice.expect(f"{kind}_response"))["success"])
        await alice.nothing_more()
        await bob.nothing_more()
        # nothing was changed, and the match still plays
        alice.send("move", move_frame(update["id"], (1, 1, 1, 1)))
        moved = await alice.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), moved)


class IdentityAnswerTests(UtttTestMixin, unittest.TestCase):
    async def test_login_while_postgresql_is_stopped(self):
        from tests.pgcluster import private_cluster
        cluster = private_cluster(self)
        await self.serve(db=cluster.create_database())
        self.server.store.retry_delay = 0.2
        alice, _ = await login(self, self.port, "alice")
        await cluster.stop_later()
        for first in (("login", {"name": "alice", "pw": "pw"}),
                      ("login", {"name": "bob", "pw": "pw"})):
            client = await connect(self, self.port)
            client.send(*first)
            response = await client.expect("login_response")
            self.assertFalse(response["success"])
            self.assertIn("database", response["msg"])
            await close_code(client)
        client = await connect(self, self.port)
        client.send("reconnect", {"id": alice.session})
        self.assertIn("database", (await client.expect("reconnect_response"))["msg"])
        await cluster.start_later()
        await sleep(0.3)   # past the store's retry delay
        client.send("reconnect", {"id": alice.session})
        self.assertTrue((await client.expect("reconnect_response"))["success"])


class RealSocketHostileFrameTests(UtttTestMixin, unittest.TestCase):
    """Each hostile frame once over a real socket (their variants: the in-memory
    tests of tests/test_uttt_hostile_memory.py)."""

    async def test_deep_nesting_and_numbers_beyond_a_double_get_error_replies(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        update = await challenge(self, alice, bob, "bob")
        alice.sendMessage(b"[" * NESTED + b"]" * NESTED)
        self.assertEqual((await alice.expect("error"))["msg"], "the frame is nested too deeply")
        for number in (b"NaN", b"Infinity", b"1e400"):
            alice.sendMessage(b'{"type":"move","data":{"id":"%s","sub_x":%s,"sub_y":1,'
                              b'"x":1,"y":1}}' % (update["id"].encode(), number))
            self.assertIn("finite", (await alice.expect("error"))["msg"])
        alice.send("move", move_frame(update["id"], (1, 1, 1, 1)))
        self.assertEqual((await alice.expect("match_update"))["match_state"]["last_move"],
                         {"sub_x": 1, "sub_y": 1, "x": 1, "y": 1})
        await bob.expect("match_update")

    async def test_an_oversized_frame_closes_1009_and_a_flood_1008(self):
        await self.serve("--uttt-max-rate", "20")
        big, flood, calm = await self.users("big", "flood", "calm")
        big.sendMessage(b"x" * (1024 * 1024 + 1))
        self.assertEqual((await big.expect("error"))["msg"],
                         "frame too large (at most 1048576 bytes)")
        self.assertEqual(await close_code(big), 1009)
        for _ in range(200):
            flood.send("no_such_request")
        self.assertEqual(await close_code(flood), 1008)
        calm.send("friend_request", {"user": "flood"})
        self.assertTrue((await calm.expect("friend_request_response"))["success"])


    async def test_requests_then_close_at_once(self):
        """Replies that are ready once the client has closed are dropped
        quietly: trial fails the test on any error logged meanwhile."""
        await self.serve()
        for number in range(10):
            client = await connect(self, self.port)
            client.send("login", {"name": f"user{number}", "pw": "pw"})
            client.sendClose()
            await close_code(client)
        [alice] = await self.users("alice")
        for kind, data in (("match_request", {"player": "user1"}),
                           ("friend_request", {"user": "user2"}),
                           ("match_states_request", {})):
            client = await connect(self, self.port)
            client.send("reconnect", {"id": alice.session})
            client.send(kind, data)
            client.sendClose()
            await close_code(client)
        alice.send("friend_request", {"user": "user3"})
        self.assertTrue((await alice.expect("friend_request_response"))["success"])


class SizeAndRateTests(UtttTestMixin, unittest.TestCase):
    async def test_client_that_stops_reading_is_closed(self):
        await self.serve("--uttt-send-buffer", "65536", "--uttt-max-rate", "100000")
        slow, other = await self.users("slow", "other")
        [connection] = [c for c in server_side(self.server) if c.user and c.user.name == "slow"]
        slow.transport.pauseProducing()   # stop reading; the kernel buffers fill up
        # Each of these gets an error reply naming the 60,000-character id.
        big = request("move", {"id": "z" * 60_000})
        sent = 0
        while connection.state == WebSocketProtocol.STATE_OPEN and sent < 2000:
            for _ in range(20):
                slow.sendMessage(big)
            sent += 20
            await sleep(0.01)
        self.assertEqual(connection.localCloseCode, 1008)
        self.assertIn(b"too slow", connection.localCloseReason)
        slow.transport.resumeProducing()
        await close_code(slow)
        other.send("friend_request", {"user": "slow"})
        self.assertTrue((await other.expect("friend_request_response"))["success"])


class WallClockTimeoutTests(UtttTestMixin, unittest.TestCase):
    """The same timeouts on the real reactor, with short limits."""

    async def test_trickle_and_silence_are_closed(self):
        await self.serve("--uttt-frame-timeout", "0.5", "--uttt-login-timeout", "2")
        silent = await connect(self, self.port)
        trickler = await connect(self, self.port)
        raw = client_frame(request("login", {"name": "trickler", "pw": "pw"}))
        for byte in range(len(raw)):
            if trickler.closed.called:
                break
            trickler.transport.write(raw[byte:byte + 1])
            await sleep(0.1)
        self.assertEqual(await close_code(trickler), 1008)
        self.assertIn("longer than 0.5 s", trickler.remoteCloseReason)
        self.assertEqual(await close_code(silent), 1008)
        self.assertIn("no login", silent.remoteCloseReason)
        with self.assertRaises(Closed):
            await silent.receive()
        await settle_websocket_timers()
