"""Client addresses: host:port on every listener, X-Forwarded-For from trusted proxies."""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from gtserver.core.peers import Peer, TrustedProxies
from tests.support import select_events, start_server
from tests.test_throttle import uttt_client, vr_client


class PeerTests(unittest.TestCase):
    def test_address_of_each_kind_of_transport(self):
        cases = [(IPv4Address("TCP", "10.0.0.5", 51234), "10.0.0.5:51234", "10.0.0.5"),
                 (IPv6Address("TCP", "::1", 4711), "[::1]:4711", "::1"),
                 (UNIXAddress(b"/run/gtserver.sock"), "unix", "unix")]
        for address, expected, key in cases:
            peer = Peer.of(StringTransport(peerAddress=address))
            self.assertEqual((peer.address, peer.throttle_key), (expected, key))

    def test_a_forwarded_client_has_no_port(self):
        self.assertEqual(Peer("203.0.113.7").address, "203.0.113.7")


class TrustedProxiesTests(unittest.TestCase):
    proxy = Peer("10.0.0.1", 5000)

    def client(self, header, trusted=("10.0.0.1",)):
        return TrustedProxies(trusted).client(self.proxy, header)

    def test_off_by_default(self):
        self.assertEqual(TrustedProxies().client(self.proxy, "203.0.113.7"), self.proxy)
        self.assertFalse(TrustedProxies())

    def test_the_last_untrusted_address_is_the_client(self):
        self.assertEqual(self.client("203.0.113.7"), Peer("203.0.113.7"))
        # Whatever the client wrote itself comes first and is ignored.
        self.assertEqual(self.client("1.2.3.4, 203.0.113.7"), Peer("203.0.113.7"))
        # Chained trusted proxies (a network) are skipped.
        self.assertEqual(self.client("1.2.3.4, 203.0.113.7, 10.0.0.9",
                                     ("10.0.0.1", "10.0.0.0/24")), Peer("203.0.113.7"))
        self.assertEqual(self.client("[2001:db8::5]:443"), Peer("2001:db8::5"))
        self.assertEqual(self.client("198.51.100.2:6000"), Peer("198.51.100.2"))

    def test_only_from_a_trusted_peer(self):
        stranger = Peer("10.0.0.2", 5000)
        self.assertEqual(TrustedProxies(["10.0.0.1"]).client(stranger, "203.0.113.7"),
                         stranger)

    def test_a_malformed_or_missing_header_leaves_the_proxy(self):
        for header in (None, "", "not-an-address", "203.0.113.7, garbage"):
            self.assertEqual(self.client(header), self.proxy)

    def test_a_bad_option_value_is_refused(self):
        from twisted.python.usage import UsageError

        from tests.support import parse_options
        self.assertRaises(ValueError, TrustedProxies, ["proxy.example"])
        with self.assertRaises(UsageError) as caught:
            parse_options("--trusted-proxy", "proxy.example")
        self.assertIn("--trusted-proxy", str(caught.exception))
        options = parse_options("--trusted-proxy", "10.0.0.1", "--trusted-proxy", "::1")
        self.assertEqual(options["trusted-proxy"], ["10.0.0.1", "::1"])


XFF = "x-forwarded-for"


class ForwardedForOverSocketsTests(unittest.TestCase):
    async def serve(self, *arguments: str, listeners=("vr", "uttt")):
        from tests.test_uttt import settle_websocket_timers
        self.addCleanup(settle_websocket_timers)
        self.server = await start_server(self, "--fps", "0.001", *arguments,
                                         listeners=dict.fromkeys(listeners))

    async def event_addresses(self, kind: str) -> list[tuple[str, str]]:
        await self.server.core.events.flush()
        rows = await self.server.store.run(select_events)
        return [(row[4], row[7]) for row in rows if row[3] == kind]

    async def test_vr_event_log_uses_the_forwarded_client_from_a_trusted_proxy_only(self):
        await self.serve("--trusted-proxy", "127.0.0.2", listeners=("vr",))
        port = self.server.port("vr")
        via_proxy = await vr_client(self, port, "127.0.0.2",
                                    {"X-Forwarded-For": "1.2.3.4, 203.0.113.7"})
        await via_proxy.login("alice")
        stranger = await vr_client(self, port, "127.0.0.3", {"X-Forwarded-For": "203.0.113.8"})
        await stranger.login("bob")
        direct = await vr_client(self, port, "127.0.0.2")
        await direct.login("carol")
        addresses = dict(await self.event_addresses("join"))
        self.assertEqual(addresses["alice"], "203.0.113.7")
        self.assertRegex(addresses["bob"], r"^127\.0\.0\.3:\d+$")
        self.assertRegex(addresses["carol"], r"^127\.0\.0\.2:\d+$")

    async def test_uttt_throttle_counts_the_forwarded_client(self):
        await self.serve("--trusted-proxy", "127.0.0.0/31", "--registrations-per-address", "1",
                         listeners=("uttt",))
        port = self.server.port("uttt")

        async def register(name, source, forwarded):
            client = await uttt_client(self, port, source, {XFF: forwarded})
            client.send("login", {"name": name, "pw": "pw"})
            return (await client.expect("login_response"))["success"]

        # Through the proxy, two clients register one account each...
        self.assertTrue(await register("alice", "127.0.0.1", "203.0.113.1"))
        self.assertTrue(await register("bobby", "127.0.0.1", "203.0.113.2"))
        # ...and the first one's second is refused, whichever proxy port it came by.
        self.assertFalse(await register("carol", "127.0.0.1", "203.0.113.1"))
        # From an untrusted peer the header is ignored: both count as 127.0.0.3.
        self.assertTrue(await register("dave1", "127.0.0.3", "203.0.113.3"))
        self.assertFalse(await register("dave2", "127.0.0.3", "203.0.113.4"))


class AddressColumnTests(unittest.TestCase):
    """The research log's address is host:port on every listener (docs/export.md)."""

    async def test_uttt_moves(self):
        from tests.test_uttt import (
            challenge,
            login,
            move_frame,
            scripted_game,
            settle_websocket_timers,
        )
        self.addCleanup(settle_websocket_timers)
        server = self.server = await start_server(self, listeners={"uttt": None})
        port = server.port("uttt")
        alice, _ = await login(self, port, "alice")
        bob, _ = await login(self, port, "bobby")
        update = await challenge(self, alice, bob, "bobby")
        alice.send("move", move_frame(update["id"], scripted_game("a")[0]))
        await alice.expect("match_update")
        await server.core.events.flush()
        rows = await server.store.run(select_events)
        moves = [row for row in rows if row[3] == "move"]
        self.assertEqual(len(moves), 1)
        self.assertRegex(moves[0][7], r"^127\.0\.0\.1:\d+$")

    async def test_eot_moves(self):
        from tests.test_eot import join_all
        server = await start_server(self, listeners={"eot": None})
        (player,) = await join_all(server, server.port("eot"), "Echo", "logged", 1, ["eve"])
        await player.move(msg="hello")
        await server.core.events.flush()
        rows = await server.store.run(select_events, 0, 100, "eot", ("move",))
        self.assertEqual(len(rows), 1)
        self.assertEqual(json.loads(rows[0][-1])["move"], {"msg": "hello"})
        self.assertRegex(rows[0][7], r"^127\.0\.0\.1:\d+$")
