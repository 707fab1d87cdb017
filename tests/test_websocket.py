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
