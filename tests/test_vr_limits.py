"""Slow, oversized and flooding VR clients are closed; nobody else notices."""

from __future__ import annotations

import json
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from tests.support import select_events
from tests.test_vr import VRTestCase, sleep, summary
from tests.test_vr import events as room_events
from tests.test_vr_client import TIMEOUT


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
        self.assertEqual(events, [
            ("join", "alice", "lobby", None), ("join", "bob", "lobby", None),
            ("msg", "alice", "lobby", "hi"), ("button", "alice", "lobby", "defect"),
            ("wave", "alice", "lobby", {"n": 1}), ("leave", "bob", "lobby", None)])
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
