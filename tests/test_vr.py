"""The VR rooms protocol (PROTOCOLS.md §1) against the real daemon over real sockets."""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from tests.support import start_server
from tests.test_vr_client import connect

TEXTS = {
    202: "Access granted.", 212: "Listing information.", 220: "Pong.", 400: "Bad request.",
    401: "User unauthorized.", 403: "Access denied.", 406: "Data object has invalid structure.",
    409: "Request conflicts current status.", 501: "Command not recognized.",
}


def sleep(seconds: float) -> Deferred:
    d = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class VRTestCase(unittest.TestCase):
    arguments: tuple[str, ...] = ()

    async def start(self, *arguments: str, db: str | None = None):
        self.server = await start_server(self, *self.arguments, *arguments, db=db,
                                         listeners={"vr": None})
        self.port = self.server.port("vr")
        return self.server

    async def client(self, user: str | None = None, password: str = "secret"):
        client = await connect(self.port, self)
        if user is not None:
            await client.login(user, password)
        return client

    async def expect_code(self, client, code: int) -> dict:
        response = await client.reply()
        self.assertEqual((response["code"], response["msg"]), (code, TEXTS[code]))
        return response

    async def quiet(self, *clients, seconds: float = 0.2) -> None:
        """Nothing more arrives at these clients for a little while."""
        await sleep(seconds)
        for client in clients:
            self.assertEqual(client.pending(), [])


class SystemCommandTests(VRTestCase):
    async def test_login_grants_access_then_joins_the_lobby(self):
        await self.start()
        client = await self.client()
        before = time.time()
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

    async def test_login_needs_user_and_pass(self):
        await self.start()
        client = await self.client()
        for options in ({"user": "a"}, {"pass": "x"}, {}, "text", None, {"user": "", "pass": "x"},
                        {"user": ["a"], "pass": "x"}):
            client.send({"system": "login", "options": options})
            await self.expect_code(client, 400)
        client.send({"system": "login"})
        await self.expect_code(client, 400)
        # Still usable, not logged in.
        client.send({"system": "rooms"})
        await self.expect_code(client, 403)

    async def test_ping_before_and_after_login(self):
        await self.start()
        client = await self.client()
        client.send({"system": "ping"})
        response = await self.expect_code(client, 220)
        self.assertEqual(response["detail"], {})
        await client.login("Tibi")
        client.send({"system": "ping"})
        await self.expect_code(client, 220)

    async def test_rooms_needs_login_and_lists_titles(self):
        await self.start()
        client = await self.client()
        client.send({"system": "rooms"})
        await self.expect_code(client, 403)
        await client.login("Tibi")
        client.say("private_room_1", "join")
        await client.next()
        client.send({"system": "rooms"})
        response = await self.expect_code(client, 212)
        self.assertEqual(response["detail"],
                         {"lobby": "lobby", "private_room_1": "private_room_1"})

    async def test_unknown_system_command(self):
        await self.start()
        client = await self.client()
        for command in ("help", "shutdown", 5, None):
            client.send({"system": command})
            await self.expect_code(client, 403)
        await client.login("Tibi")
        for command in ("help", "shutdown", 5, None, ["login"]):
            client.send({"system": command})
            await self.expect_code(client, 501)

    async def test_login_twice_on_one_connection_conflicts(self):
        await self.start()
        client = await self.client("Tibi")
        client.send({"system": "login", "options": {"user": "Other", "pass": "x"}})
        await self.expect_code(client, 409)

    async def test_malformed_frames(self):
        await self.start()
        client = await self.client()
        client.send_raw(b"{not json")
        await self.expect_code(client, 406)
        client.send_raw(b"\xff\xfe", binary=True)
        await self.expect_code(client, 406)
        for value in ([1, 2], "text", 3, None):
            client.send(value)
            await self.expect_code(client, 403)
        client.send({"room": "lobby", "type": "msg", "data": "x"})
        await self.expect_code(client, 403)
        await client.login("Tibi")
        for value in ([1, 2], "text", 3, None):
            client.send(value)
            await self.expect_code(client, 400)
        client.send_raw(b"[")
        await self.expect_code(client, 406)

    async def test_binary_frames_are_accepted(self):
        await self.start()
        client = await self.client()
        client.send({"system": "ping"}, binary=True)
        await self.expect_code(client, 220)
        client.send({"system": "login", "options": {"user": "Tibi", "pass": "x"}}, binary=True)
        await self.expect_code(client, 202)


class AuthenticationTests(VRTestCase):
    async def test_first_login_registers_then_password_is_checked(self):
        await self.start()
        await self.client("Alice", "right")
        self.assertIsNotNone(await self.server.core.accounts.user("Alice"))
        second = await self.client()
        second.send({"system": "login", "options": {"user": "Alice", "pass": "wrong"}})
        await self.expect_code(second, 403)
        second.send({"system": "login", "options": {"user": "Alice", "pass": "right"}})
        await self.expect_code(second, 202)

    async def test_any_password_mode(self):
        await self.start("--vr-any-password")
        first = await self.client("Alice", "one")
        self.assertIsNotNone(first)
        second = await self.client()
        second.send({"system": "login", "options": {"user": "Alice", "pass": "two"}})
        await self.expect_code(second, 202)
        self.assertIsNone(await self.server.core.accounts.user("Alice"))

    async def test_accounts_survive_a_restart(self):
        from tests.support import sqlite_url
        db = sqlite_url(self)
        await self.start(db=db)
        await self.client("Alice", "right")
        await self.server.stop()
        await self.start(db=db)
        client = await self.client()
        client.send({"system": "login", "options": {"user": "Alice", "pass": "wrong"}})
        await self.expect_code(client, 403)
        client.send({"system": "login", "options": {"user": "Alice", "pass": "right"}})
        await self.expect_code(client, 202)

    async def test_frames_sent_during_login_wait_for_it(self):
        await self.start()
        client = await self.client()
        client.send({"system": "login", "options": {"user": "Tibi", "pass": "x"}})
        client.say("lobby", "msg", "right after login")
        await self.expect_code(client, 202)
        await client.next()  # member list
        frame = await client.next()
        self.assertEqual(frame["payload"][0]["data"], "right after login")
