"""The VR rooms listener in memory (see :mod:`tests.memory`): real Autobahn
clients joined to the listener's factory, pose ticks on the daemon's clock.
"Nothing more arrives" is an assertion on what each client holds once every
connection went quiet, never a wait. The end-to-end tests over real sockets
are in :mod:`tests.test_vr` and :mod:`tests.test_vr_ticks`."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.trial import unittest

from tests.memory import JSONClient, MemoryDaemon
from tests.test_vr import TEXTS, events, summary
from tests.test_vr_ticks import pose


class VRClient(JSONClient):
    """The memory twin of :class:`tests.test_vr_client.VRTestClient`."""

    def send(self, value: Any, binary: bool = False) -> None:
        self.sendMessage(json.dumps(value).encode(), isBinary=binary)

    def send_raw(self, payload: bytes, binary: bool = False) -> None:
        self.sendMessage(payload, isBinary=binary)

    async def next(self) -> Any:
        return self.take()

    async def reply(self) -> dict:
        """The next frame, which must be a system or error reply; its response."""
        frame = self.take()
        assert frame.get("info") in ("system", "error"), frame
        assert set(frame) == {"info", "response"}, frame
        response = frame["response"]
        assert set(response) == {"time", "code", "msg", "detail"}, frame
        assert frame["info"] == ("error" if response["code"] >= 400 else "system"), frame
        assert isinstance(response["time"], float), frame
        return response

    async def code(self) -> int:
        return (await self.reply())["code"]

    def pending(self) -> list:
        """Frames received and not yet read (now read), after a flush."""
        frames = super().pending()
        self.inbox.clear()
        return frames

    async def login(self, user: str, password: str = "secret") -> list[dict]:
        """Log in; returns the lobby member list the server sends after 202."""
        self.send({"system": "login", "options": {"user": user, "pass": password}})
        response = await self.reply()
        assert response["code"] == 202, response
        members = await self.next()
        assert members["room"] == "lobby", members
        return members["payload"]

    def say(self, room: str, kind: str, data: Any = "") -> None:
        self.send({"room": room, "type": kind, "data": data})


class VRMemoryTestCase(unittest.TestCase):
    #: As in tests.test_vr: pose ticks are out of the way (and the clock moves only when told).
    arguments: tuple[str, ...] = ("--fps", "0.001")

    async def start(self, *arguments: str) -> MemoryDaemon:
        self.server = MemoryDaemon(self, *self.arguments, *arguments, listeners=("vr",))
        self.clock = self.server.clock
        self.core = self.server.core
        self.store = self.server.store
        return self.server

    async def client(self, user: str | None = None, password: str = "secret",
                     source: str | None = None) -> VRClient:
        peer = None if source is None else IPv4Address("TCP", source, 50_000)
        client = self.server.connect("vr", VRClient, peer=peer)
        if user is not None:
            await client.login(user, password)
        return client

    async def expect_code(self, client: VRClient, code: int) -> dict:
        response = await client.reply()
        self.assertEqual((response["code"], response["msg"]), (code, TEXTS[code]))
        return response

    async def quiet(self, *clients: VRClient) -> None:
        """Nothing more has arrived at these clients once every connection is quiet."""
        for client in clients:
            self.assertEqual(client.pending(), [])


class TickMemoryTestCase(VRMemoryTestCase):
    """One tick a second, any password accepted."""

    arguments = ("--fps", "1", "--vr-any-password")

    async def start(self, *arguments: str) -> MemoryDaemon:
        server = await super().start(*arguments)
        self.factory = server.factory("vr")
        self.rooms = self.factory.rooms
        return server

    async def member(self, name: str) -> VRClient:
        return await self.client(name)

    async def settle(self, *clients: VRClient) -> None:
        """Every frame these clients sent has been handled (a ping answers after them)."""
        for client in clients:
            client.send({"system": "ping"})
            self.assertEqual(await client.code(), 220)

    async def tick(self) -> None:
        self.server.advance(1.0 / self.rooms.settings.fps)

    def poses(self, frame: dict) -> dict:
        self.assertEqual(frame["info"], "user")
        self.assertTrue(all(e["type"] == "transform" for e in frame["payload"]))
        return {e["user"]: e["data"] for e in frame["payload"]}


class SystemCommandTests(VRMemoryTestCase):
    async def test_login_grants_access_then_joins_the_lobby(self):
        await self.start()
        client = await self.client()
        before = self.clock.seconds()
        client.send({"system": "login", "options": {"user": "Tibi", "pass": "1234"}})
        frame = await client.next()
        self.assertEqual(frame["info"], "system")
        self.assertEqual(frame["response"]["code"], 202)
        self.assertEqual(frame["response"]["msg"], "Access granted.")
        self.assertEqual(frame["response"]["detail"], {})
        self.assertGreaterEqual(frame["response"]["time"], before - 1)
        members = await client.next()
        self.assertEqual(members["info"], "user")
        self.assertEqual(members["room"], "lobby")
        self.assertEqual([(e["user"], e["type"], e["data"]) for e in members["payload"]],
                         [("Tibi", "join", "")])
        await self.quiet(client)


class RoomMessageTests(VRMemoryTestCase):
    async def test_join_sequence_history_and_others_join_event(self):
        await self.start("--vr-history", "3")
        alice = await self.client("alice")
        alice.say("lobby", "join")
        await self.expect_code(alice, 409)
        for n in range(5):
            alice.say("lobby", "msg", f"m{n}")
            await alice.next()
        alice.say("lobby", "button", "defect")  # not kept in history
        await alice.next()
        alice.say("lobby", "wave", {"hand": "left"})  # other types are kept
        await alice.next()
        bob = await self.client()
        bob.send({"system": "login", "options": {"user": "Bob", "pass": "x"}})
        await self.expect_code(bob, 202)
        members = await bob.next()
        self.assertEqual(members["room"], "lobby")
        self.assertEqual(summary(members), [("alice", "join", ""), ("Bob", "join", "")])
        history = await bob.next()
        self.assertEqual(summary(history), [("alice", "msg", "m3"), ("alice", "msg", "m4"),
                                            ("alice", "wave", {"hand": "left"})])
        self.assertEqual(summary(await alice.next()), [("Bob", "join", "")])
        await self.quiet(alice, bob)

    async def test_one_user_two_connections_is_one_member(self):
        await self.start()
        alice = await self.client("alice", "pw")
        observer = await self.client("zed")
        await alice.next()
        second = await self.client()
        second.send({"system": "login", "options": {"user": "alice", "pass": "pw"}})
        await self.expect_code(second, 202)
        self.assertEqual(summary(await second.next()), [("alice", "join", ""), ("zed", "join", "")])
        second.say("lobby", "msg", "from the second")
        for client in (alice, observer, second):
            self.assertEqual(summary(await client.next()), [("alice", "msg", "from the second")])
        second.transport.loseConnection()
        await self.quiet(alice, observer)  # alice is still there through her first connection
        alice.transport.loseConnection()
        self.assertEqual(summary(await observer.next()), [("alice", "leave", "")])

    async def test_login_burst_every_member_sees_everyone_once(self):
        await self.start()
        observer = await self.client("observer")
        clients = [await self.client() for _ in range(20)]
        for n, client in enumerate(clients):
            client.send({"system": "login", "options": {"user": f"u{n:02}", "pass": "x"}})
        names = {f"u{n:02}" for n in range(20)} | {"observer"}
        joined = await events(observer, 20)
        self.assertEqual({user for user, _, _ in joined}, names - {"observer"})
        self.assertTrue(all(kind == "join" for _, kind, _ in joined))
        for client in clients:
            await self.expect_code(client, 202)
            seen = [entry[0] for entry in summary(await client.next())]  # member list
            while len(seen) < len(names):
                seen += [user for user, _, _ in summary(await client.next())]
            self.assertEqual(sorted(seen), sorted(names))  # nobody missing, nobody twice
        await self.quiet(observer, *clients)

    async def test_bad_pose_is_a_bad_request(self):
        await self.start()
        client = await self.client("Tibi")
        for data in ("up", {"pos": 3}, {"pos": {"x": "1"}}, {"rot": {"y": True}}):
            client.say("lobby", "transform", data)
            await self.expect_code(client, 400)
        client.say("lobby", "transform", {"pos": {"x": 1}})
        await self.quiet(client)  # stored, not broadcast at once


class FullTickTests(TickMemoryTestCase):
    async def test_many_poses_one_frame_per_tick(self):
        await self.start()
        alice, bob = await self.member("alice"), await self.member("bob")
        await alice.next()  # bob's join
        for n in range(20):
            alice.say("lobby", "transform", pose(float(n)))
        bob.say("lobby", "transform", {"pos": {"x": 1}})
        await self.settle(alice, bob)
        await self.quiet(alice, bob)  # a pose update sends nothing
        prepared = []
        original = self.factory.prepareMessage
        self.factory.prepareMessage = lambda *a, **k: prepared.append(a) or original(*a, **k)
        await self.tick()
        for client in (alice, bob):
            frame = await client.next()
            self.assertEqual(frame["room"], "lobby")
            self.assertEqual(self.poses(frame), {
                "alice": pose(19.0),
                "bob": {"pos": {"x": 1.0, "y": 0.0, "z": 0.0},
                        "rot": {"x": 0.0, "y": 0.0, "z": 0.0}}})
            self.assertEqual(frame["payload"][0]["time"], self.clock.seconds() - 1.0)
        self.assertEqual(len(prepared), 1)  # serialised once for both members
        await self.quiet(alice, bob)
        await self.tick()  # full mode repeats the latest poses
        self.assertEqual(self.poses(await alice.next())["alice"], pose(19.0))


class ChangedOnlyTickTests(TickMemoryTestCase):
    async def test_only_changes_and_a_full_set_for_joiners(self):
        await self.start("--vr-changed-poses-only")
        alice = await self.member("alice")
        await self.tick()
        await self.quiet(alice)  # nobody sent a pose: no frame at all
        alice.say("lobby", "transform", pose(1.0))
        await self.settle(alice)
        await self.tick()
        self.assertEqual(self.poses(await alice.next()), {"alice": pose(1.0)})
        await self.tick()
        await self.quiet(alice)  # nothing changed
        bob = await self.member("bob")
        await alice.next()  # bob's join
        bob.say("lobby", "transform", pose(2.0))
        await self.settle(bob)
        await self.tick()
        self.assertEqual(self.poses(await alice.next()), {"bob": pose(2.0)})
        self.assertEqual(self.poses(await bob.next()), {"alice": pose(1.0), "bob": pose(2.0)})
        alice.say("lobby", "transform", pose(3.0))
        await self.settle(alice)
        await self.tick()
        self.assertEqual(self.poses(await alice.next()), {"alice": pose(3.0)})
        self.assertEqual(self.poses(await bob.next()), {"alice": pose(3.0)})
        await self.quiet(alice, bob)
