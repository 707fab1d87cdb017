"""Slow, oversized and flooding VR clients are closed; nobody else notices."""

from __future__ import annotations

import json
import os
import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from tests.support import select_events
from tests.test_vr import VRTestCase, sleep, summary
from tests.test_vr import events as room_events
from tests.test_vr_client import TIMEOUT
from tests.test_vr_deadlines import OPEN, until
from tests.test_vr_ticks import TickTestCase, pose


async def closed(client) -> tuple:
    d: Deferred = client.closed
    d.addTimeout(TIMEOUT, reactor)
    return await d


class LimitTests(VRTestCase):
    async def test_oversized_message_gets_400_then_close_1009(self):
        await self.start("--vr-max-frame", "1000")
        big, other = await self.client("big"), await self.client("other")
        await big.next()
        big.say("lobby", "msg", "x" * 900)  # within the limit: delivered
        for client in (big, other):
            self.assertEqual(summary(await client.next()), [("big", "msg", "x" * 900)])
        big.say("lobby", "msg", "x" * 2000)
        await self.expect_code(big, 400)
        _, code, _ = await closed(big)
        self.assertEqual(code, 1009)
        self.assertEqual(summary(await other.next()), [("big", "leave", "")])
        other.send({"system": "ping"})
        self.assertEqual(await other.code(), 220)

    async def test_message_in_several_frames_counts_as_a_whole(self):
        await self.start("--vr-max-frame", "1000")
        big = await self.client("big")
        text = json.dumps({"room": "lobby", "type": "msg", "data": "y" * 1200}).encode()
        big.beginMessage(isBinary=False)
        for start in range(0, len(text), 400):
            big.beginMessageFrame(len(text[start:start + 400]))
            big.sendMessageFrameData(text[start:start + 400])
        big.endMessage()
        await self.expect_code(big, 400)
        _, code, _ = await closed(big)
        self.assertEqual(code, 1009)

    async def test_oversized_binary_message_before_login(self):
        await self.start("--vr-max-frame", "1000")
        client = await self.client()
        client.send_raw(b"[" * 5000, binary=True)
        await self.expect_code(client, 400)
        _, code, _ = await closed(client)
        self.assertEqual(code, 1009)

    async def test_flood_closes_with_1008(self):
        await self.start("--vr-max-rate", "20")
        flood, other = await self.client("flood"), await self.client("other")
        await flood.next()
        for _ in range(200):
            flood.send({"system": "ping"})
        _, code, reason = await closed(flood)
        self.assertEqual(code, 1008)
        self.assertIn("flood", reason)
        self.assertEqual(summary(await other.next()), [("flood", "leave", "")])
        other.send({"system": "ping"})
        self.assertEqual(await other.code(), 220)

    async def test_client_that_stops_reading_is_closed(self):
        await self.start("--vr-send-buffer", "65536", "--vr-max-rate", "100000",
                         "--vr-max-frame", "200000")
        slow, fast = await self.client("slow"), await self.client("fast")
        await slow.next()
        slow.transport.pauseProducing()  # stop reading; the kernel buffers fill up
        chunk = "y" * 60000
        sent = 0
        leave = None
        while leave is None and sent < 2000:
            fast.say("lobby", "msg", chunk)
            sent += 1
            frame = await fast.next()  # the fast member keeps getting everything
            entry = frame["payload"][0]
            if entry["type"] == "leave":
                leave = frame
            else:
                self.assertEqual((entry["type"], len(entry["data"])), ("msg", len(chunk)))
        self.assertIsNotNone(leave, "the slow client was never closed")
        self.assertEqual(summary(leave), [("slow", "leave", "")])
        slow.transport.resumeProducing()
        await closed(slow)
        fast.send({"system": "ping"})
        while (frame := await fast.next())["info"] == "user":
            pass
        self.assertEqual(frame["response"]["code"], 220)

    async def test_events_are_recorded_with_address(self):
        await self.start()
        alice, bob = await self.client("alice"), await self.client("bob")
        await alice.next()
        alice.say("lobby", "msg", "hi")
        alice.say("lobby", "button", "defect")
        alice.say("lobby", "wave", {"n": 1})
        for client in (alice, bob):
            await room_events(client, 3)
        bob.transport.loseConnection()
        await alice.next()
        await self.server.core.events.flush()
        rows = await self.server.store.run(select_events, source="vr")
        events = [(r[3], r[4], r[5], None if r[8] is None else json.loads(r[8])) for r in rows]
        logout = events[-1]
        self.assertEqual(events, [
            ("login", "alice", None, {"registered": True}), ("join", "alice", "lobby", None),
            ("login", "bob", None, {"registered": True}), ("join", "bob", "lobby", None),
            ("msg", "alice", "lobby", "hi"), ("button", "alice", "lobby", "defect"),
            ("wave", "alice", "lobby", {"n": 1}), ("leave", "bob", "lobby", None),
            ("logout", "bob", None, logout[3])])
        self.assertEqual(set(logout[3]), {"since", "seconds", "rooms"})
        self.assertEqual(logout[3]["rooms"], ["lobby"])
        self.assertTrue(all(r[7].startswith("127.0.0.1:") for r in rows))

    async def test_csv_log_file(self):
        path = os.path.join(self.mktemp())
        await self.start("--vr-csv-log", path)
        alice = await self.client("alice")
        alice.say("lobby", "msg", "semi;colon")
        await alice.next()
        await self.server.stop()
        with open(path, encoding="utf-8") as csv_file:
            lines = csv_file.read().splitlines()
        self.assertEqual(lines[0], "timestamp;ip;nick;room;action;message")
        self.assertEqual([line.split(";")[2:5] for line in lines[1:]],
                         [["alice", "lobby", "join"], ["alice", "lobby", "msg"],
                          ["alice", "lobby", "leave"]])
        self.assertTrue(lines[2].endswith(';"semi;colon"'))
        await sleep(0)

    async def test_text_frame_that_is_not_utf8_closes_with_1007(self):
        await self.start()
        bad, other = await self.client("bad"), await self.client("other")
        await bad.next()
        bad.send_raw(b'{"system":"ping","x":"\xff"}')  # a text frame (WebSocket requires UTF-8)
        _, code, _ = await closed(bad)
        self.assertEqual(code, 1007)
        self.assertEqual(summary(await other.next()), [("bad", "leave", "")])
        other.send_raw(b'{"system":"ping","x":"\xff"}', binary=True)
        await self.expect_code(other, 406)  # the same bytes in a binary frame


class SlowReaderTickTests(TickTestCase):
    async def test_pose_ticks_are_skipped_for_a_client_that_stops_reading(self):
        await self.start(vr_send_buffer=64 << 20, vr_max_rate=100000, vr_max_frame=200000)
        fast, slow = await self.member("fast"), await self.member("slow")
        await fast.next()  # slow's join
        [slow_side] = [c for c in self.factory.connections if c.user == "slow"]
        # Small kernel buffers on both ends (no autotuning), so that a little
        # data fills them.
        for transport, option in ((slow_side.transport, socket.SO_SNDBUF),
                                  (slow.transport, socket.SO_RCVBUF)):
            transport.getHandle().setsockopt(socket.SOL_SOCKET, option, 16384)
        slow.transport.pauseProducing()  # stop reading; the kernel buffers fill up
        # Queued far past what those buffers hold, the frames cannot all drain
        # while the client does not read: its connection stays congested.
        for _ in range(2000):
            fast.say("lobby", "msg", "y" * 60000)
            await fast.next()
            if slow_side.sent_while_congested > 1 << 20:
                break
        self.assertTrue(slow_side.congested, "the slow client's buffers never filled")
        fast.say("lobby", "transform", pose(1.0))
        await self.settle(fast)
        queued = slow_side.sent_while_congested
        await self.tick()
        self.assertEqual(set(self.poses(await fast.next())), {"fast", "slow"})
        self.assertEqual(slow_side.sent_while_congested, queued)  # skipped, not queued
        fast.say("lobby", "msg", "after the tick")
        self.assertEqual(summary(await fast.next()), [("fast", "msg", "after the tick")])
        self.assertGreater(slow_side.sent_while_congested, queued)  # chat is queued
        slow.transport.resumeProducing()
        kinds = set()
        while (frame := await slow.next())["payload"][0]["data"] != "after the tick":
            kinds.update(entry["type"] for entry in frame["payload"])
        self.assertEqual(kinds, {"msg"})  # every chat line, no pose tick
        await until(lambda: not slow_side.congested, "the slow client caught up")
        await self.tick()
        self.assertEqual(set(self.poses(await slow.next())), {"fast", "slow"})
        self.assertEqual(slow_side.state, OPEN)
