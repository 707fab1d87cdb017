"""Logins, logouts, refused logins, EOT joins and observes in the research log,
over real sockets (docs/export.md, "Presence events")."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.trial import unittest

from gtserver.core.accounts import Accounts
from gtserver.core.login import LoginLimits, LoginPolicy
from gtserver.core.passwords import PasswordHasher
from gtserver.core.peers import Peer
from gtserver.core.presence import Presence
from gtserver.core.throttle import LoginThrottled
from gtserver.store import open_store
from tests import test_uttt as uttt
from tests.support import select_events, sqlite_url, start_server
from tests.test_eot import Collector, encode, join_request, tables_of, until
from tests.test_vr import sleep
from tests.test_vr_client import connect as vr_connect

PASSWORD = "s3cret-pw"
GUESS = "wrong-guess"


async def logged(server: Any, source: str, *kinds: str) -> list[dict]:
    """The events of ``source`` (of ``kinds``, if given) as dicts, in log order."""
    await server.core.events.flush()
    rows = await server.core.store.run(select_events, source=source, kinds=kinds)
    return [{"time": r[1], "source": r[2], "kind": r[3], "user": r[4], "room": r[5],
             "match": r[6], "address": r[7],
             "data": None if r[8] is None else json.loads(r[8])} for r in rows]


def address_of(client: Any) -> str:
    """The ``host:port`` the server sees for a test client's connection."""
    host = client.transport.getHost()
    return f"{host.host}:{host.port}"


class NoPasswordsMixin:
    async def assert_no_passwords(self, server: Any) -> None:
        await server.core.events.flush()
        rows = await server.core.store.run(select_events)
        text = json.dumps([list(row) for row in rows])
        self.assertNotIn(PASSWORD, text)
        self.assertNotIn(GUESS, text)


class VRPresenceTests(NoPasswordsMixin, unittest.TestCase):
    async def start(self, *arguments: str) -> Any:
        self.server = await start_server(self, "--fps", "0.001", *arguments,
                                         listeners={"vr": None})
        self.port = self.server.port("vr")
        return self.server

    async def test_login_failures_throttling_and_logout(self):
        await self.start("--vr-login-failures", "2")
        alice = await vr_connect(self.port, self)
        await alice.login("alice", PASSWORD)
        alice_address = address_of(alice)
        failed = []
        for _ in range(3):      # two wrong passwords, then the account is throttled
            client = await vr_connect(self.port, self)
            client.send({"system": "login", "options": {"user": "alice", "pass": GUESS}})
            self.assertEqual((await client.reply())["code"], 403)
            failed.append(address_of(client))
        await sleep(0.05)       # alice is logged in for a while
        alice.transport.loseConnection()
        await alice.closed
        await until(lambda: not self.server.core.presence.connections)
        events = await logged(self.server, "vr", "login", "login_failed", "login_throttled",
                              "logout")
        self.assertEqual([(e["kind"], e["user"], e["address"]) for e in events], [
            ("login", "alice", alice_address),
            ("login_failed", "alice", failed[0]),
            ("login_failed", "alice", failed[1]),
            ("login_throttled", "alice", failed[2]),
            ("logout", "alice", alice_address)])
        login, wrong, _wrong, throttled, logout = events
        self.assertEqual(login["data"], {"registered": True})
        self.assertEqual(wrong["data"], {"reason": "wrong_password"})
        self.assertEqual(throttled["data"]["budget"], "account")
        self.assertGreater(throttled["data"]["retry_after"], 0)
        # Counted from when the connection entered the presence view, right after login.
        self.assertTrue(login["time"] <= logout["data"]["since"] < login["time"] + 0.05)
        self.assertEqual(logout["data"]["seconds"], logout["time"] - logout["data"]["since"])
        self.assertGreaterEqual(logout["data"]["seconds"], 0.05)
        self.assertEqual(logout["data"]["rooms"], ["lobby"])
        self.assertTrue(all(e["room"] is None and e["match"] is None for e in events))
        await self.assert_no_passwords(self.server)

    async def test_any_password_logins_are_recorded(self):
        await self.start("--vr-any-password")
        client = await vr_connect(self.port, self)
        await client.login("bob", PASSWORD)
        events = await logged(self.server, "vr", "login")
        self.assertEqual([(e["user"], e["address"], e["data"]) for e in events],
                         [("bob", address_of(client), {"any_password": True})])
        await self.assert_no_passwords(self.server)

    async def test_two_connections_log_out_separately(self):
        await self.start()
        first = await vr_connect(self.port, self)
        await first.login("carol", PASSWORD)
        second = await vr_connect(self.port, self)
        await second.login("carol", PASSWORD)
        addresses = address_of(first), address_of(second)
        first.transport.loseConnection()
        await first.closed
        await until(lambda: len(self.server.core.presence.connections) == 1)
        events = await logged(self.server, "vr", "login", "logout")
        self.assertEqual([(e["kind"], e["address"]) for e in events], [
            ("login", addresses[0]), ("login", addresses[1]), ("logout", addresses[0])])
        self.assertEqual(events[0]["data"], {"registered": True})
        self.assertEqual(events[1]["data"], {"registered": False})


class UtttPresenceTests(NoPasswordsMixin, uttt.UtttTestMixin, unittest.TestCase):
    async def test_logins_refusals_reconnect_and_logout(self):
        await self.serve("--uttt-login-failures", "1")
        alice, _standing = await uttt.login(self, self.port, "alice", PASSWORD)
        bob, _standing = await uttt.login(self, self.port, "bob", PASSWORD)
        addresses = {"alice": address_of(alice), "bob": address_of(bob)}
        match = (await uttt.challenge(self, alice, bob, "bob"))["id"]
        wrong = await uttt.connect(self, self.port)
        addresses["wrong"] = address_of(wrong)
        wrong.send("login", {"name": "alice", "pw": GUESS})
        self.assertFalse((await wrong.expect("login_response"))["success"])
        throttled = await uttt.connect(self, self.port)
        addresses["throttled"] = address_of(throttled)
        throttled.send("login", {"name": "alice", "pw": GUESS})
        self.assertIn("too many", (await throttled.expect("login_response"))["msg"])
        invalid = await uttt.connect(self, self.port)
        addresses["invalid"] = address_of(invalid)
        invalid.send("login", {"name": "a b", "pw": PASSWORD})
        self.assertFalse((await invalid.expect("login_response"))["success"])
        guest = await uttt.connect(self, self.port)
        guest.send("temp_session", {"name": "guest"})
        self.assertTrue((await guest.expect("login_response"))["success"])
        await guest.expect("elo_update")
        unknown = await uttt.connect(self, self.port)
        addresses["unknown"] = address_of(unknown)
        unknown.send("reconnect", {"id": "no-such-session"})
        self.assertFalse((await unknown.expect("reconnect_response"))["success"])
        again = await uttt.connect(self, self.port)
        again.send("reconnect", {"id": alice.session})
        self.assertTrue((await again.expect("reconnect_response"))["success"])
        await again.expect("elo_update")
        presence = self.server.core.presence
        await until(lambda: len(presence.connections) == 4)
        await alice.disconnect()
        await until(lambda: len(presence.connections) == 3)
        events = await logged(self.server, "uttt", "login", "login_failed",
                              "login_throttled", "reconnect", "logout")
        self.assertEqual([(e["kind"], e["user"], e["address"], e["data"]) for e in events
                          if e["kind"] != "login_throttled"], [
            ("login", "alice", addresses["alice"], {"registered": True}),
            ("login", "bob", addresses["bob"], {"registered": True}),
            ("login_failed", "alice", addresses["wrong"], {"reason": "wrong_password"}),
            ("login_failed", "a b", addresses["invalid"], {"reason": "invalid_name"}),
            ("login", "guest", address_of(guest), {"temporary": True}),
            ("login_failed", None, addresses["unknown"], {"reason": "unknown_session"}),
            ("reconnect", "alice", address_of(again), {"temporary": False}),
            ("logout", "alice", addresses["alice"], events[-1]["data"])])
        throttle = [e for e in events if e["kind"] == "login_throttled"]
        self.assertEqual([(e["user"], e["address"], e["data"]["budget"]) for e in throttle],
                         [("alice", addresses["throttled"], "account")])
        logout = events[-1]
        self.assertTrue(events[0]["time"] <= logout["data"]["since"] < events[1]["time"])
        self.assertEqual(logout["data"]["matches"], [match])   # still open
        self.assertEqual(logout["data"]["seconds"], logout["time"] - logout["data"]["since"])
        await self.assert_no_passwords(self.server)


class EOTPresenceTests(unittest.TestCase):
    async def request(self, port: int, request: dict) -> tuple[Deferred, str]:
        """Send one request; its reply (a Deferred) and the client's address."""
        connection = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                           Collector())
        connection.transport.write(encode(request))
        return connection.closed, address_of(connection)

    async def test_joins_and_observes(self):
        server = await start_server(self, listeners={"eot": None})
        port = server.port("eot")
        first, ann = await self.request(port, join_request("TicTacToe", "lab", 2, "ann"))
        await until(lambda: ("TicTacToe", "lab") in tables_of(server).tables)
        second, bob = await self.request(port, join_request("TicTacToe", "lab", 2, "bob"))
        await first
        await second
        watch, watcher = await self.request(port, {"type": "observe", "game": "TicTacToe",
                                                   "session": "lab", "name": "bob"})
        self.assertEqual(json.loads(await watch)["status"], "ok")
        match = tables_of(server).tables[("TicTacToe", "lab")].match
        events = await logged(server, "eot", "join_table", "match_start", "observe")
        self.assertEqual([(e["kind"], e["user"], e["address"], e["match"], e["data"])
                          for e in events if e["kind"] != "match_start"], [
            ("join_table", "ann", ann, None,
             {"game": "TicTacToe", "session": "lab", "player": 0, "players": 2}),
            ("join_table", "bob", bob, None,
             {"game": "TicTacToe", "session": "lab", "player": 1, "players": 2}),
            ("observe", None, watcher, match.id,
             {"game": "TicTacToe", "session": "lab", "observed": "bob", "player": 1})])
        # The joins come before the match they start.
        self.assertEqual([e["kind"] for e in events],
                         ["join_table", "join_table", "match_start", "observe"])

    async def test_auto_joins_record_the_session_they_got(self):
        server = await start_server(self, listeners={"eot": None})
        port = server.port("eot")
        first, address = await self.request(port, join_request("TicTacToe", "auto", 2))
        await until(lambda: tables_of(server).open_auto.get("TicTacToe"))
        second, _other = await self.request(port, join_request("TicTacToe", "auto", 2))
        session = json.loads(await first)["data"]["session"]
        await second
        events = await logged(server, "eot", "join_table")
        self.assertEqual([(e["user"], e["data"]["session"]) for e in events],
                         [(None, session), (None, session)])     # no names given
        self.assertEqual(events[0]["address"], address)
        self.assertNotEqual(session, "auto")


class InMemoryTests(unittest.TestCase):
    """The accounts and presence services record into any log, on a task.Clock."""

    async def test_throttled_registrations_and_unrecorded_policies(self):
        clock = Clock()
        clock.advance(1000.0)
        recorded: list[tuple] = []

        class Log:
            def record(self, source, kind, **fields):
                recorded.append((source, kind, fields.get("user"), fields.get("data")))

        store = open_store(sqlite_url(self), reactor)
        await store.start()
        self.addCleanup(store.close)
        accounts = Accounts(store, clock, PasswordHasher(log2_n=4),
                            limits=LoginLimits(registrations_per_address=1), events=Log())
        self.addCleanup(accounts.hasher.stop)
        peer = Peer("10.0.0.7", 5000)
        lab = LoginPolicy(listener="lab")
        await accounts.login("ann", PASSWORD, peer, lab)
        with self.assertRaises(LoginThrottled):
            await accounts.login("bea", PASSWORD, peer, lab)
        await accounts.login("ann", PASSWORD, peer)     # a policy without a listener
        self.assertEqual(recorded, [
            ("lab", "login", "ann", {"registered": True}),
            ("lab", "login_throttled", "bea",
             {"budget": "registrations", "retry_after": 60.0})])
        presence = Presence(clock, Log())
        connection = object()
        presence.arrived(connection, "lab", "ann", peer.address)
        clock.advance(12.5)
        presence.gone(connection)
        presence.gone(connection)       # a second end changes nothing
        self.assertEqual(recorded[2:], [
            ("lab", "logout", "ann", {"since": 1000.0, "seconds": 12.5})])
