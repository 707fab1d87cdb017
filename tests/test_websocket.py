"""The WebSocket connection guard on its own, with a protocol that knows no messages, in memory."""

from __future__ import annotations

import base64
import os
import struct

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from gtserver.websocket import GuardedServerProtocol, Limits, guard_factory

OPEN = WebSocketProtocol.STATE_OPEN


class EchoProtocol(GuardedServerProtocol):
    """A protocol that knows only that ``login`` logs it in."""

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if payload == b"login":
            self.authenticated()
        self.send_bytes(payload)


def masked_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = os.urandom(4)
    return (struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def close_code(written: bytes) -> int | None:
    """The code of the close frame among the server's (unmasked) frames, if any."""
    position = written.find(b"\r\n\r\n")
    position = 0 if position < 0 else position + 4
    while position + 2 <= len(written):
        opcode, length = written[position] & 0x0F, written[position + 1] & 0x7F
        if opcode == 0x8:
            return struct.unpack("!H", written[position + 2:position + 4])[0]
        position += 2 + length
    return None


def lose(protocol) -> None:
    if not getattr(protocol, "_lost", False):
        protocol._lost = True
        protocol.connectionLost(Failure(ConnectionDone()))


class GuardTestCase(unittest.TestCase):
    limits = Limits(handshake_timeout=5, login_timeout=30, message_timeout=10)

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = WebSocketServerFactory()
        self.factory.protocol = EchoProtocol
        guard_factory(self.factory, self.limits, self.clock)

    def connect(self, handshake: bool = True):
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.makeConnection(transport)
        if handshake:
            key = base64.b64encode(os.urandom(16))
            protocol.dataReceived(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n")
            self.assertEqual(protocol.state, OPEN)
        self.addCleanup(lose, protocol)
        return protocol, transport


class DeadlineTests(GuardTestCase):
    def test_handshake_deadline_aborts(self):
        protocol, transport = self.connect(handshake=False)
        protocol.dataReceived(b"GET / HTTP/1.1\r\n")
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)  # aborted: no WebSocket to close
        self.assertEqual(transport.value(), b"")

    def test_login_deadline_closes_with_1008_unless_authenticated(self):
        idle, idle_transport = self.connect()
        member, member_transport = self.connect()
        self.clock.advance(29)
        member.dataReceived(masked_frame(b"login"))
        self.clock.advance(1)
        self.assertEqual(close_code(idle_transport.value()), 1008)
        self.assertNotEqual(idle.state, OPEN)
        self.clock.advance(1000)
        self.assertEqual(member.state, OPEN)
        self.assertIsNone(close_code(member_transport.value()))
        self.assertEqual(self.clock.getDelayedCalls(), [])  # nothing left scheduled

    def test_message_deadline_counts_from_the_first_byte(self):
        protocol, transport = self.connect()
        protocol.dataReceived(masked_frame(b"login"))
        frame = masked_frame(b"hello")
        self.assertEqual(len(frame), 11)
        for offset in range(len(frame) - 1):  # a byte every 0.9 s, all but the last
            protocol.dataReceived(frame[offset:offset + 1])
            self.clock.advance(0.9)
        self.assertEqual(protocol.state, OPEN)
        protocol.dataReceived(frame[-1:])  # complete 9 s after its first byte: in time
        self.assertIn(b"hello", transport.value())
        self.clock.advance(0.5)
        protocol.dataReceived(frame[:3])
        self.clock.advance(9.9)  # the first timer fired and moved on to this message
        self.assertEqual(protocol.state, OPEN)
        self.clock.advance(0.2)
        self.assertEqual(close_code(transport.value()), 1008)

    def test_connection_lost_leaves_no_timer(self):
        protocol, _ = self.connect()
        protocol.dataReceived(masked_frame(b"hello")[:3])
        lose(protocol)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reads_that_end_inside_a_frame_restart_the_clock(self):
        protocol, transport = self.connect()
        protocol.dataReceived(masked_frame(b"login"))
        frames = [masked_frame(b"message %d" % n) for n in range(5)]
        protocol.dataReceived(frames[0][:4])
        for n in range(4):  # no read ends between two messages
            self.clock.advance(6)
            protocol.dataReceived(frames[n][4:] + frames[n + 1][:4])
            self.assertIn(b"message %d" % n, transport.value())
        self.assertEqual(protocol.state, OPEN)  # 24 s since the first byte
        self.clock.advance(9.9)
        self.assertEqual(protocol.state, OPEN)
        self.clock.advance(0.2)  # the last message began 10.1 s ago
        self.assertEqual(close_code(transport.value()), 1008)
        self.assertTrue(transport.disconnecting)  # no close handshake after a partial frame


def long_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked frame of 126 to 65535 bytes."""
    mask = os.urandom(4)
    return (struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, len(payload)) + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def text_frames(written: bytes) -> list[bytes]:
    """The server's (unmasked) text frames of under 126 bytes, in order."""
    position = written.find(b"\r\n\r\n") + 4
    frames = []
    while position + 2 <= len(written):
        opcode, length = written[position] & 0x0F, written[position + 1] & 0x7F
        if opcode == 0x1:
            frames.append(written[position + 2:position + 2 + length])
        position += 2 + length
    return frames


class RecordingProtocol(EchoProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.refused: list[int] = []
        self.late_logins = 0

    def onRefusedMessage(self, size: int) -> None:
        self.refused.append(size)
        self.send_bytes(b"refused")

    def onOversizedMessage(self, size: int) -> None:
        self.send_bytes(b"too big")

    def onLoginTimeout(self) -> None:
        self.late_logins += 1  # as if a login were being checked


class IncomingLimitTests(GuardTestCase):
    limits = Limits(max_message=1000, refuse_above=100, max_rate=5.0)

    def setUp(self) -> None:
        super().setUp()
        self.factory.protocol = RecordingProtocol

    def test_a_message_over_refuse_above_is_reported_not_delivered(self):
        protocol, transport = self.connect()
        protocol.dataReceived(long_frame(b"r" * 500))
        self.assertEqual(protocol.refused, [500])
        protocol.dataReceived(masked_frame(b"small"))
        self.assertEqual(text_frames(transport.value()), [b"refused", b"small"])
        self.assertEqual(protocol.state, OPEN)

    def test_an_oversized_message_gets_the_protocols_reply_then_1009(self):
        protocol, transport = self.connect()
        protocol.dataReceived(long_frame(b"o" * 2000)[:20])  # the header says 2000 bytes
        self.assertEqual(text_frames(transport.value()), [b"too big"])
        self.assertEqual(close_code(transport.value()), 1009)
        self.assertNotEqual(protocol.state, OPEN)

    def test_pings_count_against_the_rate(self):
        protocol, transport = self.connect()
        for _ in range(10):  # the burst: twice max_rate, at least 10
            protocol.dataReceived(masked_frame(b"", opcode=0x9))
        self.assertEqual(protocol.state, OPEN)
        self.clock.advance(0.2)  # one more token
        protocol.dataReceived(masked_frame(b"", opcode=0x9))
        self.assertEqual(protocol.state, OPEN)
        protocol.dataReceived(masked_frame(b"", opcode=0x9))
        self.assertEqual(close_code(transport.value()), 1008)

    def test_a_protocol_may_wait_at_the_login_timeout(self):
        protocol, transport = self.connect()
        self.clock.advance(30)
        self.assertEqual((protocol.late_logins, protocol.state), (1, OPEN))
        protocol.close_late_login()  # the login it waited for failed
        self.assertEqual(close_code(transport.value()), 1008)


class SendTests(GuardTestCase):
    limits = Limits(send_buffer=100)

    def congested(self):
        protocol, transport = self.connect()
        transport.clear()
        transport.producer.pauseProducing()  # the transport's buffer is full
        return protocol, transport

    def test_droppable_messages_are_skipped_while_the_client_is_not_reading(self):
        protocol, transport = self.congested()
        prepared = self.factory.prepareMessage(b"tick")
        self.assertFalse(protocol.send_prepared(prepared, droppable=True))
        self.assertFalse(protocol.send_bytes(b"tick", droppable=True))
        self.assertEqual((transport.value(), protocol.sent_while_congested), (b"", 0))
        self.assertTrue(protocol.send_bytes(b"x" * 60))  # queued, and counted
        self.assertEqual(protocol.sent_while_congested, 60)
        transport.producer.resumeProducing()  # the client reads again
        self.assertEqual(protocol.sent_while_congested, 0)
        self.assertTrue(protocol.send_prepared(prepared, droppable=True))
        self.assertTrue(transport.value().endswith(prepared.payloadHybi))

    def test_past_the_send_buffer_the_connection_closes_with_1008(self):
        protocol, transport = self.congested()
        self.assertTrue(protocol.send_bytes(b"x" * 60))
        self.assertFalse(protocol.send_prepared(self.factory.prepareMessage(b"y" * 60)))
        self.assertEqual(close_code(transport.value()), 1008)
        self.assertNotIn(b"y" * 60, transport.value())
        written = transport.value()
        self.assertFalse(protocol.send_bytes(b"late reply"))  # closing: silently nothing
        self.assertEqual(transport.value(), written)

    def test_a_peer_that_does_not_answer_the_close_is_aborted(self):
        protocol, transport = self.congested()
        protocol.close_connection("testing")
        self.clock.advance(1.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
