"""Hostile and broken ultimate tic-tac-toe clients in memory (see
:mod:`tests.memory`): what they are answered, that nothing more arrives, and
the limits' timers on the daemon's clock. The same clients over real sockets
are in :mod:`tests.test_uttt_hostile`."""

from __future__ import annotations

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import Protocol
from twisted.trial import unittest

from gtserver.store import StoreUnavailable
from tests.support import parse_options
from tests.test_uttt import challenge, move_frame
from tests.test_uttt_hostile import NESTED, UnstorableTextTests, client_frame, request
from tests.test_uttt_memory import MemoryMixin, close_code, connect, login


class RawClient(Protocol):
    def __init__(self) -> None:
        self.lost: Deferred = Deferred()
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost.callback(None)

class MalformedFrameTests(MemoryMixin, unittest.TestCase):
    async def test_deeply_nested_frames_get_error_replies(self):
        await self.serve()
        client = await connect(self, self.server)
        nested = [b"[" * NESTED + b"]" * NESTED,
                  b'{"type":"login","data":' + b'{"a":' * NESTED + b"1" + b"}" * NESTED + b"}",
                  b'{"type":"login","data":{"name":' + b"[" * 30_000 + b"1" + b"]" * 30_000
                  + b"}}"]
        for payload in nested:
            client.sendMessage(payload)
            self.assertEqual((await client.expect("error"))["msg"],
                             "the frame is nested too deeply")
        client.send("login", {"name": "alice", "pw": "pw"})
        self.assertTrue((await client.expect("login_response"))["success"])
        await client.expect("elo_update")
        await client.expect("friends_update")
        for payload in nested:
            client.sendMessage(payload)
            self.assertIn("msg", await client.expect("error"))
        client.send("friend_request", {"user": "nobody"})
        self.assertFalse((await client.expect("friend_request_response"))["success"])

    async def test_non_finite_numbers_are_refused_at_parse(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        update = await challenge(self, alice, bob, "bob")
        frames = [b'{"type":"move","data":{"id":"%s","sub_x":NaN,"sub_y":1,"x":1,"y":1}}',
                  b'{"type":"move","data":{"id":"%s","sub_x":Infinity,"sub_y":1,"x":1,"y":1}}',
                  b'{"type":"move","data":{"id":"%s","sub_x":-Infinity,"sub_y":1,"x":1,"y":1}}',
                  b'{"type":"move","data":{"id":"%s","sub_x":1e400,"sub_y":1,"x":1,"y":1}}',
                  b'{"type":"move","data":{"id":"%s","sub_x":1,"sub_y":1,"x":1,"y":-1e999}}']
        for payload in frames:
            alice.sendMessage(payload % update["id"].encode())
            self.assertIn("finite", (await alice.expect("error"))["msg"])
        stranger = await connect(self, self.server)
        stranger.sendMessage(b'{"type":"login","data":{"name":"carol","pw":NaN}}')
        self.assertIn("finite", (await stranger.expect("error"))["msg"])
        # finite numbers still work, floats included
        alice.sendMessage(b'{"type":"move","data":{"id":"%s","sub_x":1,"sub_y":1.0,"x":1,"y":1}}'
                          % update["id"].encode())
        self.assertEqual(await alice.expect("match_update"), update)   # 1.0 is no coordinate
        alice.send("move", move_frame(update["id"], (1, 1, 1, 1)))
        self.assertEqual((await alice.expect("match_update"))["match_state"]["last_move"],
                         {"sub_x": 1, "sub_y": 1, "x": 1, "y": 1})
        await bob.expect("match_update")
        await bob.nothing_more()


class UnstorableTextTests(MemoryMixin, unittest.TestCase):
    TEXTS = UnstorableTextTests.TEXTS

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


class IdentityAnswerTests(MemoryMixin, unittest.TestCase):
    async def test_store_failing_during_login_and_reconnect(self):
        await self.serve()
        alice, _ = await login(self, self.server, "alice")
        store = self.server.store
        working_run = store.run

        def unavailable(*arguments, **keywords):
            return fail(StoreUnavailable("database down"))

        store.run = unavailable
        for first in (("login", {"name": "alice", "pw": "pw"}),
                      ("login", {"name": "bob", "pw": "pw"}),
                      ("temp_session", {"name": "guest"})):
            client = await connect(self, self.server)
            client.send(*first)
            response = await client.expect("login_response")
            self.assertEqual((response["success"], response["id"], response["registered"]),
                             (False, None, False))
            self.assertIn("database", response["msg"])
            self.assertEqual(await close_code(client), 1000)
        client = await connect(self, self.server)
        client.send("reconnect", {"id": alice.session})
        response = await client.expect("reconnect_response")
        self.assertEqual((response["success"], response["user"]), (False, None))
        self.assertIn("database", response["msg"])
        store.run = working_run
        # the same connection may try again once the database is back
        client.send("reconnect", {"id": alice.session})
        self.assertTrue((await client.expect("reconnect_response"))["success"])

    async def test_login_and_reconnect_after_login_have_every_field(self):
        await self.serve()
        [alice] = await self.users("alice")
        for kind, data in (("login", {"name": "bob", "pw": "pw"}),
                           ("temp_session", {"name": "guest"}),
                           ("login", {"name": "alice", "pw": "pw"})):
            alice.send(kind, data)
            self.assertEqual(await alice.expect("login_response"),
                             {"success": False, "id": None, "registered": False,
                              "msg": "already logged in as alice"})
        alice.send("reconnect", {"id": alice.session})
        self.assertEqual(await alice.expect("reconnect_response"),
                         {"success": False, "id": None, "user": None, "registered": False,
                          "msg": "already logged in as alice"})
        await alice.nothing_more()
        self.assertIsNone(await self.server.core.accounts.user("bob"))


class LeavingClientTests(MemoryMixin, unittest.TestCase):
    async def test_requests_then_close_at_once(self):
        await self.serve()
        for number in range(10):
            client = await connect(self, self.server)
            client.send("login", {"name": f"user{number}", "pw": "pw"})
            client.sendClose()
            await close_code(client)
        [alice] = await self.users("alice")
        for kind, data in (("match_request", {"player": "user1"}),
                           ("friend_request", {"user": "user2"}),
                           ("match_states_request", {}), ("login", {})):
            client = await connect(self, self.server)
            client.send("reconnect", {"id": alice.session})
            client.send(kind, data)
            client.sendClose()
            await close_code(client)

    async def test_reply_after_the_close_frame_arrived(self):
        """The reply to a request is ready just after the client's close frame
        has been processed, before the TCP connection is gone."""
        await self.serve()
        alice, _ = await login(self, self.server, "alice")
        await login(self, self.server, "bob")
        [connection] = [c for c in self.server.factory("uttt").connections
                        if c.user and c.user.name == "alice"]
        store = self.server.store
        working_run = store.run
        held: list[tuple[Deferred, object]] = []

        def run_then_hold(*arguments, **keywords):
            waiter: Deferred = Deferred()
            working_run(*arguments, **keywords).addCallback(
                lambda result: held.append((waiter, result)))
            return waiter

        dropped = []
        working_drop = connection.dropConnection

        def drop_then_answer(abort=False):
            working_drop(abort)
            dropped.append(connection.state)
            store.run = working_run
            for waiter, result in held:
                waiter.callback(result)   # the reply goes out now, in state CLOSED

        connection.dropConnection = drop_then_answer
        store.run = run_then_hold
        alice.send("friend_request", {"user": "bob"})
        await self.until(lambda: held)
        alice.sendClose()
        await close_code(alice)
        self.assertEqual(dropped, [WebSocketProtocol.STATE_CLOSED])
        self.assertEqual(list(alice.inbox), [])
        # the request itself was carried out
        user = await self.server.core.accounts.user("alice")
        friends = await self.server.core.friends.list(user)
        self.assertEqual(friends.names, ["bob"])


class SizeAndRateTests(MemoryMixin, unittest.TestCase):
    async def test_frame_over_the_limit_gets_an_error_and_close_1009(self):
        await self.serve()
        [alice] = await self.users("alice")
        alice.sendMessage(b"x" * (70 * 1024))        # over 64 KiB: an error, stays open
        self.assertIn("too large", (await alice.expect("error"))["msg"])
        alice.sendMessage(b"x" * (1024 * 1024 + 1))
        self.assertEqual((await alice.expect("error"))["msg"],
                         "frame too large (at most 1048576 bytes)")
        self.assertEqual(await close_code(alice), 1009)
        # before login, and with --uttt-max-frame
        await self.server.stop()
        await self.serve("--uttt-max-frame", "1000")
        other = await connect(self, self.server)
        other.sendMessage(request("login", {"name": "x" * 2000}))
        self.assertIn("at most 1000 bytes", (await other.expect("error"))["msg"])
        self.assertEqual(await close_code(other), 1009)

    async def test_fragmented_message_counts_as_a_whole(self):
        await self.serve("--uttt-max-frame", "100000")
        [alice] = await self.users("alice")
        text = request("friend_request", {"user": "y" * 120_000})
        alice.beginMessage(isBinary=False)
        for start in range(0, len(text), 30_000):
            alice.beginMessageFrame(len(text[start:start + 30_000]))
            alice.sendMessageFrameData(text[start:start + 30_000])
        alice.endMessage()
        self.assertIn("too large", (await alice.expect("error"))["msg"])
        self.assertEqual(await close_code(alice), 1009)

    async def test_flood_closes_with_1008(self):
        await self.serve("--uttt-max-rate", "20")
        flood, calm = await self.users("flood", "calm")
        for _ in range(200):
            flood.send("no_such_request")
        self.assertEqual(await close_code(flood), 1008)
        calm.send("friend_request", {"user": "flood"})
        self.assertTrue((await calm.expect("friend_request_response"))["success"])
        flooded = await connect(self, self.server)     # before login too
        for _ in range(200):
            flooded.sendPing()
        self.assertEqual(await close_code(flooded), 1008)

    async def test_too_many_frames_waiting_closes_with_1008(self):
        await self.serve("--uttt-max-rate", "100000")
        alice, _ = await login(self, self.server, "alice")
        store = self.server.store
        working_run = store.run
        held: list[Deferred] = []

        def hold(*arguments, **keywords):
            waiter: Deferred = Deferred()
            held.append(waiter)
            return waiter.addCallback(lambda _: working_run(*arguments, **keywords))

        store.run = hold
        alice.send("friend_request", {"user": "bob"})   # waits for the store
        await self.until(lambda: held)
        for _ in range(300):
            alice.send("no_such_request")
        self.assertEqual(await close_code(alice), 1008)
        self.assertIn("waiting", alice.remoteCloseReason)
        store.run = working_run
        for waiter in held:
            waiter.callback(None)


class TimeoutTests(MemoryMixin, unittest.TestCase):
    """The limits' timers run on the core's clock."""

    async def serve(self, *arguments: str):
        server = await super().serve(*arguments)
        self.factory = server.factory("uttt")
        return server

    async def opened(self, count: int) -> list:
        """The server's connections, once there are ``count``."""
        await self.until(lambda: len(self.factory.connections) == count)
        return list(self.factory.connections)

    async def test_connection_that_never_logs_in_is_closed(self):
        await self.serve()
        idle = await connect(self, self.server)
        member, _ = await login(self, self.server, "member")
        [first, second] = sorted(await self.opened(2), key=lambda c: c.user is not None)
        self.clock.advance(29.9)
        self.assertEqual(first.state, WebSocketProtocol.STATE_OPEN)
        self.clock.advance(0.1)
        self.assertEqual(await close_code(idle), 1008)
        self.assertIn("no login within 30 s", idle.remoteCloseReason)
        self.clock.advance(3600)
        self.assertEqual(second.state, WebSocketProtocol.STATE_OPEN)
        member.send("match_states_request")
        await member.nothing_more()
        self.assertEqual(second.state, WebSocketProtocol.STATE_OPEN)

    async def test_login_timeout_option(self):
        await self.serve("--uttt-login-timeout", "5")
        idle = await connect(self, self.server)
        await self.opened(1)
        self.clock.advance(5)
        self.assertEqual(await close_code(idle), 1008)

    async def test_zero_turns_the_timeouts_off(self):
        await self.serve("--uttt-login-timeout", "0", "--uttt-frame-timeout", "0")
        idle = await connect(self, self.server)
        raw = client_frame(request("login", {"name": "alice", "pw": "pw"}))
        idle.transport.write(raw[:9])
        [connection] = await self.opened(1)
        await self.until(lambda: connection.current_frame is not None)
        self.assertEqual([call for call in self.clock.getDelayedCalls()
                          if getattr(call.func, "__self__", None) is connection], [])
        self.clock.advance(10 * 86400)
        self.assertEqual(connection.state, WebSocketProtocol.STATE_OPEN)
        idle.transport.write(raw[9:])
        self.assertTrue((await idle.expect("login_response"))["success"])

    def test_limits_must_be_in_range(self):
        from twisted.python.usage import UsageError
        for option, value in (("--uttt-login-timeout", "-1"), ("--uttt-frame-timeout", "x"),
                              ("--uttt-handshake-timeout", "-0.5"), ("--uttt-max-rate", "0"),
                              ("--uttt-max-frame", "0"), ("--uttt-send-buffer", "-5")):
            with self.assertRaises(UsageError, msg=option):
                parse_options(option, value)
        options = parse_options()
        self.assertEqual((options["uttt-login-timeout"], options["uttt-frame-timeout"],
                          options["uttt-handshake-timeout"], options["uttt-max-rate"]),
                         (30.0, 10.0, 10.0, 100.0))

    async def test_a_failed_reconnect_does_not_stop_the_login_timer(self):
        await self.serve()
        client = await connect(self, self.server)
        client.send("reconnect", {"id": "made-up"})
        await client.expect("reconnect_response")
        self.clock.advance(30)
        self.assertEqual(await close_code(client), 1008)

    async def test_a_frame_trickling_in_is_closed(self):
        await self.serve()
        client, _ = await login(self, self.server, "alice")
        [connection] = await self.opened(1)
        raw = client_frame(request("match_states_request", {}))
        client.transport.write(raw[:5])
        await self.until(lambda: connection.data or connection.current_frame is not None)
        self.clock.advance(9)
        client.transport.write(raw[5:7])
        await self.until(lambda: connection.current_frame is not None)
        self.clock.advance(1)
        self.assertEqual(await close_code(client), 1008)
        self.assertIn("longer than 10 s", client.remoteCloseReason)

    async def test_frames_that_each_arrive_in_time_are_fine(self):
        await self.serve("--uttt-frame-timeout", "6")
        client, _ = await login(self, self.server, "alice")
        [connection] = await self.opened(1)
        first = client_frame(request("friend_request", {"user": "alice"}))
        second = client_frame(request("unfriend_request", {"user": "alice"}))
        third = client_frame(request("friend_request", {"user": "nobody"}))
        # every read ends inside a frame, but no frame takes 6 s
        client.transport.write(first[:10])
        await self.until(lambda: connection.current_frame is not None)
        self.clock.advance(4)
        client.transport.write(first[10:] + second[:10])
        self.assertFalse((await client.expect("friend_request_response"))["success"])
        self.clock.advance(4)
        client.transport.write(second[10:] + third[:3])
        self.assertFalse((await client.expect("unfriend_request_response"))["success"])
        self.clock.advance(4)
        self.assertEqual(connection.state, WebSocketProtocol.STATE_OPEN)
        client.transport.write(third[3:])
        self.assertFalse((await client.expect("friend_request_response"))["success"])
        self.clock.advance(60)
        self.assertEqual(connection.state, WebSocketProtocol.STATE_OPEN)
        # a fragmented message is timed as a whole
        client.transport.write(client_frame(b'{"type":', fin=False))
        await self.until(lambda: connection.inside_message)
        self.clock.advance(5)
        client.transport.write(client_frame(b'"x",', opcode=0, fin=False))
        self.clock.advance(1)
        self.assertEqual(await close_code(client), 1008)

    async def test_slow_opening_handshake_is_dropped(self):
        await self.serve("--uttt-handshake-timeout", "3")
        raw = RawClient()
        self.server.attach("uttt", raw)
        raw.transport.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        [connection] = await self.opened(1)
        self.clock.advance(2.9)
        self.assertEqual(connection.state, WebSocketProtocol.STATE_CONNECTING)
        self.clock.advance(0.1)
        self.server.flush()
        self.assertTrue(raw.lost.called)
        self.assertEqual(raw.received, b"")
