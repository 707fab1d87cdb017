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
from tests.pgcluster import postgres_url
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
        self.store = open_store(self.store_url(), reactor)
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

    def store_url(self) -> str:
        return sqlite_url(self)

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
        """The newest pose at a tick is recorded once, however many ticks carry it."""
        await self.start()
        alice = await self.member("alice")
        alice.say("lobby", "transform", pose(1.0))
        alice.say("lobby", "transform", pose(2.0))
        await self.settle(alice)
        received = self.clock.seconds()
        await self.tick()
        await self.tick()
        await self.core.events.flush()
        rows = await self.store.run(select_events, kinds=("transform",))
        self.assertEqual([(r[1], r[4], r[5], json.loads(r[8])) for r in rows],
                         [(received, "alice", "lobby", pose(2.0))])
        self.assertTrue(rows[0][7].startswith("127.0.0.1:"))
        ticks = await self.store.run(select_events, kinds=("tick",))
        self.assertEqual([(r[1], r[2], r[4], r[5], r[7], json.loads(r[8])) for r in ticks],
                         [(received + 1.0, "vr", None, "lobby", None,
                           {"tick": 1, "users": ["alice"]}),
                          (received + 2.0, "vr", None, "lobby", None,
                           {"tick": 2, "users": ["alice"]})])

    async def test_pose_log_rate_below_fps(self):
        await self.start(vr_fps=10.0, vr_pose_log_rate=2.0)
        alice = await self.member("alice")
        alice.say("lobby", "transform", pose(1.0))
        await self.settle(alice)
        for _ in range(20):  # two seconds
            await self.tick()
        await self.core.events.flush()
        rows = await self.store.run(select_events, kinds=("transform",))
        self.assertEqual([json.loads(r[8]) for r in rows], [pose(1.0)])
        ticks = await self.store.run(select_events, kinds=("tick",))
        self.assertEqual(len(ticks), 4)


class PoseLogTests(TickTestCase):
    """A client sending poses at 10 Hz to a 5 Hz server logging poses at 2 Hz."""

    async def settle(self, *clients) -> None:
        """Like the base's, reading past the room frames others caused."""
        for client in clients:
            client.send({"system": "ping"})
            while (frame := await client.next())["info"] == "user":
                pass
            self.assertEqual(frame["response"]["code"], 220)

    async def test_each_logged_pose_once_and_the_ticks_with_their_times(self):
        await self.start(vr_fps=5.0, vr_pose_log_rate=2.0)
        alice = await self.member("alice")
        await self.member("bob")    # sends no pose: at the origin in every tick
        received, tick_times = {}, []
        for n in range(20):  # two seconds of poses at 10 Hz
            alice.say("lobby", "transform", pose(float(n)))
            await self.settle(alice)
            received[n] = self.clock.seconds()
            ticks_before = self.rooms.ticks
            self.clock.advance(0.1)
            if self.rooms.ticks > ticks_before:
                tick_times.append(self.clock.seconds())
        ticks_before = self.rooms.ticks
        self.clock.advance(0.05)    # the tenth tick, should the sum of 0.1s fall short
        if self.rooms.ticks > ticks_before:
            tick_times.append(self.clock.seconds())
        self.assertEqual(len(tick_times), 10)
        await self.core.events.flush()
        rows = await self.store.run(select_events, kinds=("transform", "tick"))
        poses = [(r[1], json.loads(r[8])) for r in rows if r[3] == "transform"]
        ticks = [(r[1], json.loads(r[8])) for r in rows if r[3] == "tick"]
        # Ticks at 5 Hz, logged at 2 Hz: four of the ten, each with its own time.
        self.assertEqual(len(ticks), 4)
        for time, data in ticks:
            self.assertIn(time, tick_times)
            self.assertEqual(data["users"], ["alice", "bob"])
        self.assertEqual(sorted({data["tick"] for _time, data in ticks}),
                         [data["tick"] for _time, data in ticks])
        # At each logged tick, alice's newest pose, once, with its receive time
        # (bob sent none); never one of the ticks' times.
        expected = []
        for time, _data in ticks:
            newest = max(n for n, at in received.items() if at < time)
            expected.append((received[newest], pose(float(newest))))
        self.assertEqual(poses, expected)
        self.assertEqual(len({json.dumps(p) for _t, p in poses}), len(poses))
        self.assertFalse({time for time, _pose in poses} & {time for time, _data in ticks})
        # Later logged ticks add the newest pose if it was not logged yet, and
        # never a pose again.
        for _ in range(10):
            await self.tick()
        await self.core.events.flush()
        rows = await self.store.run(select_events, kinds=("transform",))
        later = [(r[1], json.loads(r[8])) for r in rows[len(poses):]]
        self.assertEqual([(r[1], json.loads(r[8])) for r in rows[:len(poses)]], poses)
        self.assertEqual(later, [] if poses[-1][1] == pose(19.0)
                         else [(received[19], pose(19.0))])

    async def test_changed_poses_only_ticks_name_whose_poses_they_carried(self):
        await self.start(vr_fps=5.0, vr_changed_poses_only=1)
        alice = await self.member("alice")
        bob = await self.member("bob")
        alice.say("lobby", "transform", pose(1.0))
        await self.settle(alice)
        await self.tick()
        await self.tick()   # nothing changed: no frame, no tick event
        bob.say("lobby", "transform", pose(2.0))
        await self.settle(bob)
        await self.tick()
        await self.core.events.flush()
        rows = await self.store.run(select_events, kinds=("transform", "tick"))
        self.assertEqual([(r[3], r[4], json.loads(r[8])) for r in rows], [
            ("transform", "alice", pose(1.0)),
            ("tick", None, {"tick": 1, "users": ["alice"]}),
            ("transform", "bob", pose(2.0)),
            ("tick", None, {"tick": 3, "users": ["bob"]})])


class PostgresPoseLogTests(PoseLogTests):
    def store_url(self) -> str:
        return postgres_url(self)
