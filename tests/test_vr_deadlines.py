"""VR connections that do not log in, or send a message byte by byte, are closed.

Real sockets; the server's clock is a task.Clock, so every deadline is
crossed by advancing it, never by waiting.
"""

from __future__ import annotations

import os
import struct

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial import unittest

from gtserver.core.errors import BadCredentials
from tests.support import start_server
from tests.test_vr_client import TIMEOUT, connect
from tests.test_vr_ticks import TickTestCase

OPEN = WebSocketProtocol.STATE_OPEN


def masked_frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """One client-to-server WebSocket frame (payloads under 126 bytes), masked."""
    assert len(payload) < 126
    mask = os.urandom(4)
    header = struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def closed(client) -> tuple:
    d: Deferred = client.closed
    d.addTimeout(TIMEOUT, reactor)
    return await d


async def until(condition, what: str) -> None:
    """Wait (on the real reactor) for the server to have seen what was sent."""
    for _ in range(500):
        if condition():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"never happened: {what}")


class DeadlineTestCase(TickTestCase):
    async def start(self, **config):
        await super().start(vr_fps=0.001, **config)  # no pose ticks while the clock moves
        self.built: list = []
        build = self.factory.buildProtocol

        def recording(address):
            protocol = build(address)
            self.built.append(protocol)
            return protocol
        self.patch(self.factory, "buildProtocol", recording)

    async def connected(self):
        """A connected client and its server-side protocol."""
        client = await connect(self.port, self)
        await until(lambda: len(self.built) and self.built[-1].state == OPEN, "open")
        return client, self.built[-1]

    async def ping(self, client) -> None:
        client.send({"system": "ping"})
        self.assertEqual(await client.code(), 220)


class LoginDeadlineTests(DeadlineTestCase):
    async def test_no_login_in_time_closes_with_1008(self):
        await self.start(vr_login_timeout=30.0)
        member = await self.member("alice")
        idle, server_side = await self.connected()
        self.clock.advance(29.9)
        await self.ping(idle)  # pings do not count as a login
        self.assertEqual(server_side.state, OPEN)
        self.clock.advance(0.2)
        self.assertNotEqual(server_side.state, OPEN)
        _, code, reason = await closed(idle)
        self.assertEqual((code, reason), (1008, "no login within 30 s"))
        self.clock.advance(900)
        await self.ping(member)  # a logged-in member has no login deadline

    async def test_the_deadline_starts_when_the_websocket_opens_and_a_login_stops_it(self):
        await self.start(vr_login_timeout=5.0)
        self.clock.advance(100)  # before the connection: does not count
        client, server_side = await self.connected()
        self.clock.advance(4.9)
        await client.login("late")
        self.clock.advance(60)
        self.assertEqual(server_side.state, OPEN)
        await self.ping(client)

    async def test_failed_logins_do_not_stop_it(self):
        await self.start(vr_login_timeout=30.0, vr_any_password=False)
        owner = await self.member("alice")  # registers alice with "secret"
        guesser, _ = await self.connected()
        for _ in range(3):
            guesser.send({"system": "login", "options": {"user": "alice", "pass": "guess"}})
            self.assertEqual(await guesser.code(), 403)
        self.clock.advance(30)
        _, code, _ = await closed(guesser)
        self.assertEqual(code, 1008)
        await self.ping(owner)

    async def test_a_login_being_checked_at_the_deadline_decides(self):
        await self.start(vr_login_timeout=30.0, vr_any_password=False)
        pending: dict[str, Deferred] = {}

        def held_login(name, password, *_peer_and_policy):
            pending[name] = Deferred()
            return pending[name]
        self.patch(self.core.accounts, "login", held_login)
        granted, granted_side = await self.connected()
        refused, refused_side = await self.connected()
        for client, name in ((granted, "granted"), (refused, "refused")):
            client.send({"system": "login", "options": {"user": name, "pass": "x"}})
        await until(lambda: len(pending) == 2, "both logins being checked")
        self.clock.advance(31)
        self.assertEqual((granted_side.state, refused_side.state), (OPEN, OPEN))
        pending["granted"].callback(None)
        self.assertEqual(await granted.code(), 202)
        self.assertEqual((await granted.next())["room"], "lobby")  # its join sequence
        pending["refused"].errback(BadCredentials("wrong password"))
        self.assertEqual(await refused.code(), 403)
        _, code, _ = await closed(refused)
        self.assertEqual(code, 1008)
        self.clock.advance(60)
        await self.ping(granted)


class MessageDeadlineTests(DeadlineTestCase):
    async def test_a_trickled_frame_closes_with_1008(self):
        await self.start(vr_frame_timeout=10.0)
        alice, server_side = await self.connected()
        await alice.login("alice")
        frame = masked_frame(b'{"room":"lobby","type":"msg","data":"hi"}')
        # Half a frame, then the rest within the limit: delivered.
        alice.transport.write(frame[:9])
        await until(lambda: server_side.incomplete_since is not None, "half a frame")
        self.clock.advance(9.9)
        self.assertEqual(server_side.state, OPEN)
        alice.transport.write(frame[9:])
        self.assertEqual((await alice.next())["payload"][0]["data"], "hi")
        self.clock.advance(9.9)  # complete messages leave no deadline behind
        self.assertEqual(server_side.state, OPEN)
        # One byte of a header, never more.
        alice.transport.write(frame[:1])
        await until(lambda: server_side.incomplete_since is not None, "one byte")
        self.clock.advance(9.9)
        self.assertEqual(server_side.state, OPEN)
        self.clock.advance(0.2)
        _, code, reason = await closed(alice)
        self.assertEqual((code, reason), (1008, "a message took longer than 10 s to arrive"))

    async def test_reads_that_end_inside_a_frame_restart_the_clock(self):
        await self.start(vr_frame_timeout=10.0)
        alice, server_side = await self.connected()
        await alice.login("alice")
        frames = [masked_frame(b'{"room":"lobby","type":"msg","data":"%d"}' % n)
                  for n in range(5)]
        alice.transport.write(frames[0][:5])
        await until(lambda: server_side.incomplete_since is not None, "a first part")
        for n in range(4):  # each write ends one message and begins the next
            self.clock.advance(6)
            alice.transport.write(frames[n][5:] + frames[n + 1][:5])
            self.assertEqual((await alice.next())["payload"][0]["data"], str(n))
        self.assertEqual(server_side.state, OPEN)  # 24 s, every message in 6 s
        self.clock.advance(9.9)
        self.assertEqual(server_side.state, OPEN)
        self.clock.advance(0.2)
        _, code, reason = await closed(alice)
        self.assertEqual((code, reason), (1008, "a message took longer than 10 s to arrive"))

    async def test_a_fragmented_message_that_never_ends(self):
        await self.start(vr_frame_timeout=10.0)
        bob = await self.member("bob")
        alice, server_side = await self.connected()
        await alice.login("alice")
        await bob.next()  # alice's join
        alice.transport.write(masked_frame(b'{"room":"lobby",', fin=False))
        await until(lambda: server_side.incomplete_since is not None, "a first fragment")
        for _ in range(5):  # each control frame is complete; the message is not
            self.clock.advance(1.9)
            alice.transport.write(masked_frame(b"", opcode=0x9))  # ping
        self.assertEqual(server_side.state, OPEN)
        self.clock.advance(0.6)
        _, code, _ = await closed(alice)
        self.assertEqual(code, 1008)
        self.assertEqual([(e["user"], e["type"]) for e in (await bob.next())["payload"]],
                         [("alice", "leave")])

    async def test_an_unfinished_opening_handshake_is_cut_off(self):
        await self.start(vr_frame_timeout=10.0)
        lost: Deferred = Deferred()

        class Silent(Protocol):
            def connectionLost(self, reason):
                lost.callback(None)
        client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port),
                                       Silent())
        self.addCleanup(client.transport.abortConnection)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await until(lambda: len(self.built) and self.built[-1].data, "the request's start")
        self.clock.advance(9.9)
        self.assertFalse(lost.called)
        self.assertFalse(self.built[-1].transport.disconnecting)
        self.clock.advance(0.2)
        await lost.addTimeout(TIMEOUT, reactor)


class DaemonTests(unittest.TestCase):
    async def test_login_timeout_option_on_the_daemon(self):
        server = await start_server(self, "--fps", "0.001", "--vr-login-timeout", "0.2",
                                    "--vr-frame-timeout", "5", listeners={"vr": None})
        port = server.port("vr")
        member = await connect(port, self)
        await member.login("alice")
        idle = await connect(port, self)
        _, code, reason = await closed(idle)  # on the real clock, after 0.2 s
        self.assertEqual((code, reason), (1008, "no login within 0.2 s"))
        member.send({"system": "ping"})
        self.assertEqual(await member.code(), 220)
