"""Pose ticks of the VR rooms, driven by a task.Clock, over real sockets."""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from gtserver.core import Core
from gtserver.core.passwords import PasswordHasher
from gtserver.option_types import option_defaults
from gtserver.store import open_store
from gtserver.vr.plugin import vr
from tests.support import select_events, sqlite_url
from tests.test_vr import sleep
from tests.test_vr_client import connect


def pose(x: float) -> dict:
    return {"pos": {"x": x, "y": 2.0, "z": 3.0}, "rot": {"x": 4.0, "y": 5.0, "z": 6.0}}


class TickTestCase(unittest.TestCase):
    """A room server whose clock is a task.Clock; sockets are real."""

    async def start(self, **config):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        options = {**option_defaults(vr), "vr-fps": 1.0, "vr-any-password": 1,
                   **{name.replace("_", "-"): value for name, value in config.items()}}
        self.store = open_store(sqlite_url(self), reactor)
        await self.store.start()
        self.addCleanup(self.store.close)
        self.core = Core(self.store, self.clock, hasher=PasswordHasher(log2_n=4))
        self.factory = vr.build_factory(self.core, vr.settings(options))
        self.rooms = self.factory.rooms
        self.core.startService()
        self.addCleanup(self.core.stopService)
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    async def member(self, name: str):
        client = await connect(self.port, self)
        await client.login(name)
        return client

    async def settle(self, *clients) -> None:
        """Every frame these clients sent has been handled (a ping answers after them)."""
        for client in clients:
            client.send({"system": "ping"})
            self.assertEqual(await client.code(), 220)

    async def tick(self) -> None:
        self.clock.advance(1.0 / self.rooms.settings.fps)

    async def quiet(self, *clients) -> None:
        await sleep(0.15)
        for client in clients:
            self.assertEqual(client.pending(), [])

    def poses(self, frame: dict) -> dict:
        self.assertEqual(frame["info"], "user")
        self.assertTrue(all(e["type"] == "transform" for e in frame["payload"]))
        return {e["user"]: e["data"] for e in frame["payload"]}


class FullTickTests(TickTestCase):
    async def test_members_without_pose_are_at_the_origin(self):
        await self.start()
        alice = await self.member("alice")
        await self.tick()
        self.assertEqual(self.poses(await alice.next()), {
            "alice": {"pos": {"x": 0.0, "y": 0.0, "z": 0.0},
                      "rot": {"x": 0.0, "y": 0.0, "z": 0.0}}})

    async def test_fractional_and_high_rates(self):
        await self.start(vr_fps=0.5)
        alice = await self.member("alice")
        self.clock.advance(1.0)
        await self.quiet(alice)
        self.clock.advance(1.0)
        await alice.next()

    async def test_sixty_ticks_a_second(self):
        await self.start(vr_fps=60.0)
        alice = await self.member("alice")
        for _ in range(60):
            self.clock.advance(1.0 / 60)
        frames = [await alice.next() for _ in range(60)]
        self.assertEqual(len(frames), 60)
        await self.quiet(alice)

    async def test_each_room_gets_its_own_frame(self):
        await self.start()
        alice = await self.member("alice")
        alice.say("r1", "join")
        await alice.next()
        alice.say("r1", "transform", pose(7.0))
        await self.settle(alice)
        await self.tick()
        frames = {f["room"]: self.poses(f) for f in [await alice.next(), await alice.next()]}
        self.assertEqual(frames["r1"], {"alice": pose(7.0)})
        self.assertEqual(frames["lobby"]["alice"]["pos"]["x"], 0.0)

    async def test_poses_are_recorded_at_ticks(self):
        await self.start()
        alice = await self.member("alice")
        alice.say("lobby", "transform", pose(1.0))
        alice.say("lobby", "transform", pose(2.0))
        await self.settle(alice)
        await self.tick()
        await self.tick()
        await self.core.events.flush()
        rows = await self.store.run(select_events, kinds=("transform",))
        self.assertEqual([(r[4], r[5], json.loads(r[8])) for r in rows],
                         [("alice", "lobby", pose(2.0))] * 2)
        self.assertTrue(rows[0][7].startswith("127.0.0.1:"))

    async def test_pose_log_rate_below_fps(self):
        await self.start(vr_fps=10.0, vr_pose_log_rate=2.0)
        alice = await self.member("alice")
        alice.say("lobby", "transform", pose(1.0))
        await self.settle(alice)
        for _ in range(20):  # two seconds
            await self.tick()
        await self.core.events.flush()
        rows = await self.store.run(select_events, kinds=("transform",))
        self.assertEqual(len(rows), 4)
