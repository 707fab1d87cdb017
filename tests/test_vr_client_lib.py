"""gtserver.vr.client against a real daemon over real sockets, and its frame inbox in memory."""

from __future__ import annotations

import os

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial import unittest

from gtserver.vr.client import ConnectionClosed, Event, VRClient, VRError
from gtserver.wsclient import DEFAULT_TIMEOUT, FrameConnection, FrameProtocol, Taken
from tests.support import start_server
from tests.tls import write_self_signed_certificate


class VRClientTests(unittest.TestCase):
    arguments: tuple[str, ...] = ("--fps", "0.001")

    async def start(self, *arguments: str, listener: str | None = None) -> None:
        self.server = await start_server(self, *self.arguments, *arguments,
                                         listeners={"vr": listener})
        self.url = f"ws://127.0.0.1:{self.server.port('vr')}/"

    async def client(self, user: str | None = None, password: str = "secret") -> VRClient:
        client = await VRClient.connect(self.url)
        self.addCleanup(client.abort)
        if user is not None:
            await client.login(user, password)
        return client

    async def test_ping_and_rooms_need_what_the_protocol_says(self):
        await self.start()
        client = await self.client()
        pong = await client.ping()
        self.assertEqual((pong.code, pong.msg, pong.detail), (220, "Pong.", {}))
        self.assertIsInstance(pong.time, float)
        refused = await self.assertFailure(client.rooms(), VRError)
        self.assertEqual(refused.code, 403)
        await client.login("Tibi", "pw")
        self.assertEqual(await client.rooms(), {"lobby": ""})
        self.assertEqual(client.user, "Tibi")

    async def test_login_returns_the_lobby_and_others_see_the_join(self):
        await self.start()
        first = await self.client()
        members = await first.login("Ann", "pw")
        self.assertEqual([(e.room, e.user, e.type) for e in members], [("lobby", "Ann", "join")])
        second = await self.client()
        members = await second.login("bob", "pw")
        self.assertEqual([e.user for e in members], ["Ann", "bob"])
        joined = await first.next_event("join", room="lobby")
        self.assertEqual((joined.user, joined.room), ("bob", "lobby"))

    async def test_wrong_password_and_second_login_are_errors(self):
        await self.start()
        await self.client("Ann", "right")
        other = await self.client()
        refused = await self.assertFailure(other.login("Ann", "wrong"), VRError)
        self.assertEqual((refused.code, refused.reply.msg), (403, "Access denied."))
        self.assertIsNone(other.user)
        await other.login("Ann", "right")
        again = await self.assertFailure(other.login("Ann", "right"), VRError)
        self.assertEqual(again.code, 409)

    async def test_join_msg_history_members_and_leave(self):
        await self.start()
        ann, bob = await self.client("Ann"), await self.client("Bob")
        members = await ann.join("table")
        self.assertEqual([(e.room, e.user, e.type) for e in members], [("table", "Ann", "join")])
        self.assertEqual((await self.assertFailure(ann.join("table"), VRError)).code, 409)
        await bob.join("table")
        self.assertEqual((await ann.next_event("join", room="table")).user, "Bob")
        await ann.msg("table", "hello")
        for client in (ann, bob):
            event = await client.next_event("msg", room="table")
            self.assertEqual((event.user, event.data), ("Ann", "hello"))
            self.assertIsInstance(event.time, float)
        await bob.button("table", "defect")
        self.assertEqual((await ann.next_event("button")).data, "defect")
        self.assertEqual([e.user for e in await bob.members("table")], ["Ann", "Bob"])
        self.assertEqual(await ann.rooms(), {"lobby": "", "table": ""})
        # A later joiner gets the member list, then the history (msg, not button).
        cid = await self.client("Cid")
        await cid.join("table")
        history = await cid.next_event(room="table")
        self.assertEqual((history.type, history.user, history.data), ("msg", "Ann", "hello"))
        await bob.leave("table", confirm=True)
        for client in (ann, cid):
            self.assertEqual((await client.next_event("leave", room="table")).user, "Bob")
        refused = await self.assertFailure(bob.leave("table", confirm=True), VRError)
        self.assertEqual(refused.code, 401)
        refused = await self.assertFailure(bob.msg("table", "hi", confirm=True), VRError)
        self.assertEqual(refused.code, 401)
        await bob.sync()
        self.assertEqual([f for f in bob.pending() if f["info"] != "user"], [])

    async def test_errors_of_unconfirmed_messages_wait_as_replies(self):
        await self.start()
        client = await self.client("Ann")
        await client.msg("nowhere", "x")
        client.send({"room": 5, "data": ""})
        self.assertEqual((await client.next_reply()).code, 401)
        self.assertEqual((await client.next_reply()).code, 400)

    async def test_transforms_arrive_at_the_tick(self):
        self.arguments = ("--fps", "50")
        await self.start()
        ann, bob = await self.client("Ann"), await self.client("Bob")
        await ann.transform("lobby", pos=(1, 2, 3), rot={"y": 90})
        event = await bob.next_event("transform", user="Ann")
        self.assertEqual(event.data, {"pos": {"x": 1.0, "y": 2.0, "z": 3.0},
                                      "rot": {"x": 0.0, "y": 90.0, "z": 0.0}})
        self.assertRaises(ValueError, ann.transform, "lobby", pos=(1, 2))

    async def test_frames_listeners_pending_and_close(self):
        await self.start()
        ann = await self.client("Ann")
        seen = []
        ann.listen(seen.append)
        await ann.ping()
        self.assertEqual([f["response"]["code"] for f in seen], [220])
        bob = await self.client("Bob")
        await ann.next_event("join", user="Bob")
        await bob.msg("lobby", "one")
        self.assertEqual((await ann.next_event("msg")).data, "one")
        await bob.msg("lobby", "two")
        frame = await ann.next_frame()
        self.assertEqual(frame["payload"][0]["data"], "two")
        self.assertEqual(ann.pending(), [])
        received = []

        async def read_all():
            async for frame in bob.frames():
                received.append(frame)
        reading = ensureDeferred(read_all())
        left = Deferred()
        bob.listen(lambda frame: "leave" in str(frame) and not left.called
                   and left.callback(None))
        await ann.msg("lobby", "three")
        await ann.close()
        await left
        code = await bob.close()
        self.assertEqual(code, 1000)
        await reading
        self.assertEqual([[(e["user"], e["type"], e["data"]) for e in f["payload"]]
                          for f in received],
                         [[("Bob", "msg", "one")], [("Bob", "msg", "two")],
                          [("Ann", "msg", "three")], [("Ann", "leave", "")]])
        await self.assertFailure(bob.ping(), ConnectionClosed)

    async def test_server_close_fails_the_waiting_call(self):
        await self.start("--vr-max-frame", "100")
        client = await self.client()
        waiting = client.next_event("msg")
        client.connection.send_raw(b'{"system":"ping","pad":"' + b"x" * 200 + b'"}')
        self.assertEqual((await client.next_reply()).code, 400)
        await self.assertFailure(waiting, ConnectionClosed)
        self.assertEqual(await client.connection.when_closed(), 1009)

    async def test_wss(self):
        directory = self.mktemp()
        os.makedirs(directory)
        key, certificate, pem = write_self_signed_certificate(directory)
        await self.start(listener="ssl:0:interface=127.0.0.1:"
                                  f"privateKey={key}:certKey={certificate}")
        from twisted.internet.ssl import Certificate, optionsForClientTLS
        options = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pem))
        client = await VRClient.connect(f"wss://localhost:{self.server.port('vr')}/",
                                        tls_options=options)
        self.addCleanup(client.abort)
        self.assertEqual(len(await client.login("Ann", "pw")), 1)

    def test_bad_address(self):
        self.failureResultOf(VRClient.connect("http://127.0.0.1/"), ValueError)


class StubTransport:
    aborted = False

    def abortConnection(self):
        self.aborted = True


class StubProtocol(FrameProtocol):
    def __init__(self):
        self.sent = []
        self.closes = []
        self.transport = StubTransport()

    def sendMessage(self, payload, isBinary=False):
        self.sent.append(payload)

    def sendClose(self, code=None, reason=None):
        self.closes.append((code, reason))


class FrameInboxTests(unittest.TestCase):
    """The inbox on a task.Clock: waiting, timeouts, taking out of order, bounds."""

    def setUp(self):
        self.clock = task.Clock()
        self.connection = FrameConnection(StubProtocol(), self.clock, DEFAULT_TIMEOUT, 3)

    def test_take_waits_and_times_out(self):
        d = self.connection.take()
        self.assertNoResult(d)
        self.clock.advance(DEFAULT_TIMEOUT - 0.1)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.failureResultOf(d, TimeoutError)
        forever = self.connection.take(timeout=0)
        self.clock.advance(10 * DEFAULT_TIMEOUT)
        self.assertNoResult(forever)
        self.connection._received({"n": 1})
        self.assertEqual(self.successResultOf(forever), {"n": 1})

    def test_takes_the_first_match_and_keeps_the_rest(self):
        for n in (1, 2, 3):
            self.connection._received({"n": n})
        self.assertEqual(self.successResultOf(self.connection.take(lambda f: f["n"] == 2)),
                         {"n": 2})
        self.assertEqual(self.successResultOf(
            self.connection.take(lambda f: Taken(f["n"] * 10, keep=True))), 10)
        self.assertEqual(self.connection.pending(), [{"n": 1}, {"n": 3}])

    def test_oldest_frames_are_dropped_beyond_the_bound(self):
        for n in range(5):
            self.connection._received({"n": n})
        self.assertEqual((self.connection.dropped, self.connection.frames_received), (2, 5))
        self.assertEqual([f["n"] for f in self.connection.pending()], [2, 3, 4])

    def test_close_fails_waiters_and_later_sends(self):
        d = self.connection.take()
        self.connection._closed(1001, "going away")
        self.failureResultOf(d, ConnectionClosed)
        self.assertEqual(self.successResultOf(self.connection.when_closed()), 1001)
        self.assertRaises(ConnectionClosed, self.connection.send, {})

    def test_close_disconnects_a_server_that_does_not_answer(self):
        closing = self.connection.close()
        self.assertEqual(self.connection.protocol.closes, [(1000, None)])
        self.clock.advance(DEFAULT_TIMEOUT - 0.1)
        self.assertFalse(self.connection.protocol.transport.aborted)
        self.clock.advance(0.2)
        self.assertTrue(self.connection.protocol.transport.aborted)
        self.connection._closed(1006, "dropped")
        self.assertEqual(self.successResultOf(closing), 1006)

    def test_a_completed_close_cancels_its_timer(self):
        closing = self.connection.close()
        self.connection._closed(1000, "bye")
        self.assertEqual(self.successResultOf(closing), 1000)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_event_helpers_split_a_frame(self):
        client = VRClient(self.connection)
        self.connection._received({"info": "user", "room": "r", "payload": [
            {"time": 1.0, "user": "a", "type": "msg", "data": "x"},
            {"time": 2.0, "user": "b", "type": "button", "data": "y"}]})
        self.assertEqual(self.successResultOf(client.next_event("button")),
                         Event("r", "b", "button", "y", 2.0))
        self.assertEqual(self.successResultOf(client.next_event()),
                         Event("r", "a", "msg", "x", 1.0))
        self.assertEqual(client.pending(), [])
