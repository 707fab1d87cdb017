"""The VR rooms protocol (PROTOCOLS.md §1) against the real daemon over real sockets."""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.support import start_server
from tests.test_vr_client import connect

TEXTS = {
    202: "Access granted.", 212: "Listing information.", 220: "Pong.", 400: "Bad request.",
    401: "User unauthorized.", 403: "Access denied.", 406: "Data object has invalid structure.",
    409: "Request conflicts current status.", 500: "Internal server error.",
    501: "Command not recognized.",
}


def sleep(seconds: float) -> Deferred:
    d = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class VRTestCase(unittest.TestCase):
    #: Pose ticks are tested with a task.Clock (test_vr_ticks); keep them out of the way here.
    arguments: tuple[str, ...] = ("--fps", "0.001")

    async def start(self, *arguments: str, db: str | None = None):
        self.server = await start_server(self, *self.arguments, *arguments, db=db,
                                         listeners={"vr": None})
        self.port = self.server.port("vr")
        return self.server

    async def client(self, user: str | None = None, password: str = "secret",
                     source: str | None = None):
        client = await connect(self.port, self, source)
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
        # A room created by a join has the empty title, as the original's.
        self.assertEqual(response["detail"], {"lobby": "", "private_room_1": ""})
        self.server.factory("vr").rooms.set_title("private_room_1", "Round 1")
        client.send({"system": "rooms"})
        response = await self.expect_code(client, 212)
        self.assertEqual(response["detail"], {"lobby": "", "private_room_1": "Round 1"})

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
        client.send({"system": "login", "options": {"user": "Tibi", "pass": "secret"}})
        await self.expect_code(client, 409)
        # A second login sent before the first was answered.
        other = await self.client()
        other.send({"system": "login", "options": {"user": "Other", "pass": "x"}})
        other.send({"system": "login", "options": {"user": "Third", "pass": "x"}})
        await self.expect_code(other, 202)
        self.assertEqual(summary(await other.next()), [("Other", "join", ""),
                                                       ("Tibi", "join", "")])
        await self.expect_code(other, 409)
        self.assertIsNone(await self.server.core.accounts.user("Third"))

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

    async def login_code(self, user: str, password: str, source: str = "127.0.0.1") -> int:
        client = await self.client(source=source)
        client.send({"system": "login", "options": {"user": user, "pass": password}})
        return await client.code()

    async def test_repeated_failures_on_one_name_are_throttled(self):
        await self.start("--vr-login-failures", "3", "--vr-login-window", "60")
        clock = Clock()
        self.server.core.accounts.guard.use_clock(clock)
        await self.client("alice", "right", source="127.0.0.2")
        for _ in range(3):
            self.assertEqual(await self.login_code("alice", "wrong"), 403)
        # Blocked now, even with the right password, from another address too.
        self.assertEqual(await self.login_code("alice", "right", source="127.0.0.3"), 403)
        # Other names from another address are not affected.
        self.assertEqual(await self.login_code("bob", "pw", source="127.0.0.3"), 202)
        clock.advance(60)  # the failures leave the window
        self.assertEqual(await self.login_code("alice", "right", source="127.0.0.3"), 202)

    async def test_failures_from_one_address_do_not_lock_out_other_accounts(self):
        # Changed by issue 13: failures from one address used to refuse every
        # login from it. Now an address has its own, larger budget, and once
        # it is spent only guesses at accounts new to that address are refused.
        await self.start("--login-failures-per-address", "3")
        clock = Clock()
        self.server.core.accounts.guard.use_clock(clock)
        for name in ("alice", "bob"):
            await self.client(name, "right", source="127.0.0.2")
        await self.client("carol", "right", source="127.0.0.4")
        for name in ("alice", "bob", "alice"):  # three failures from one address
            self.assertEqual(await self.login_code(name, "wrong", source="127.0.0.4"), 403)
        # New accounts and accounts known from this address still get in.
        self.assertEqual(await self.login_code("dave", "new", source="127.0.0.4"), 202)
        self.assertEqual(await self.login_code("carol", "right", source="127.0.0.4"), 202)
        # Guesses at the others from there are refused, right password or not...
        self.assertEqual(await self.login_code("bob", "right", source="127.0.0.4"), 403)
        # ...but not from anywhere else (one failure on bob is far from his budget).
        self.assertEqual(await self.login_code("bob", "right", source="127.0.0.5"), 202)
        clock.advance(300)
        self.assertEqual(await self.login_code("bob", "right", source="127.0.0.4"), 202)

    async def test_a_good_login_clears_the_names_failures(self):
        await self.start("--vr-login-failures", "3", "--vr-login-window", "60")
        await self.client("alice", "right", source="127.0.0.2")
        for source in ("127.0.0.3", "127.0.0.4"):
            self.assertEqual(await self.login_code("alice", "wrong", source=source), 403)
        self.assertEqual(await self.login_code("alice", "right", source="127.0.0.5"), 202)
        for source in ("127.0.0.6", "127.0.0.7"):
            self.assertEqual(await self.login_code("alice", "wrong", source=source), 403)
        self.assertEqual(await self.login_code("alice", "right", source="127.0.0.5"), 202)

    async def test_frames_sent_during_login_wait_for_it(self):
        await self.start()
        client = await self.client()
        client.send({"system": "login", "options": {"user": "Tibi", "pass": "x"}})
        client.say("lobby", "msg", "right after login")
        await self.expect_code(client, 202)
        await client.next()  # member list
        frame = await client.next()
        self.assertEqual(frame["payload"][0]["data"], "right after login")


def summary(frame: dict) -> list[tuple]:
    return [(e["user"], e["type"], e["data"]) for e in frame["payload"]]


async def events(client, count: int, room: str = "lobby") -> list[tuple]:
    """The next ``count`` events of ``room``, however the server grouped them in frames.

    Events of one reactor turn may share a frame (PROTOCOLS.md: "several events
    may come in one frame"); no frame may hold more than asked for.
    """
    collected: list[tuple] = []
    while len(collected) < count:
        frame = await client.next()
        assert (frame["info"], frame["room"]) == ("user", room), frame
        collected.extend(summary(frame))
    assert len(collected) == count, collected
    return collected


class RoomMessageTests(VRTestCase):
    async def test_room_messages_need_login(self):
        await self.start()
        client = await self.client()
        for kind in ("join", "leave", "list", "msg", "transform", "button", "wave"):
            client.say("lobby", kind)
            await self.expect_code(client, 403)

    async def test_room_and_data_are_required(self):
        await self.start()
        client = await self.client("Tibi")
        for frame in ({"type": "msg", "data": "x"}, {"room": "lobby", "type": "msg"},
                      {"room": "lobby"}, {"room": 5, "type": "msg", "data": "x"},
                      {"room": "lobby", "type": 7, "data": "x"},
                      {"room": "", "type": "join", "data": ""}):
            client.send(frame)
            await self.expect_code(client, 400)

    async def test_type_defaults_to_msg(self):
        await self.start()
        client = await self.client("Tibi")
        client.send({"room": "lobby", "data": "hello"})
        self.assertEqual(summary(await client.next()), [("Tibi", "msg", "hello")])
        client.send({"room": "lobby", "type": None, "data": "null type"})
        self.assertEqual(summary(await client.next()), [("Tibi", "msg", "null type")])
        client.send({"system": "rooms"})
        self.assertEqual((await self.expect_code(client, 212))["detail"], {"lobby": ""})

    async def test_member_list_is_sorted_case_insensitively(self):
        await self.start()
        for name in ("carol", "Bob", "alice", "Dave"):
            await self.client(name)
        me = await self.client("eve")
        me.say("lobby", "list")
        frame = await me.next()
        self.assertEqual([e["user"] for e in frame["payload"]],
                         ["alice", "Bob", "carol", "Dave", "eve"])
        self.assertTrue(all(e["type"] == "join" and e["data"] == "" for e in frame["payload"]))

    async def test_msg_reaches_every_member_with_server_time(self):
        await self.start()
        alice, bob = await self.client("alice"), await self.client("bob")
        await alice.next()  # bob's join
        before = time.time()
        alice.send({"room": "lobby", "type": "msg", "data": "hello", "time": 12345.0})
        for client in (alice, bob):
            frame = await client.next()
            self.assertEqual(frame["info"], "user")
            self.assertEqual(frame["room"], "lobby")
            self.assertEqual(summary(frame), [("alice", "msg", "hello")])
            self.assertGreaterEqual(frame["payload"][0]["time"], before - 1)
            self.assertLessEqual(frame["payload"][0]["time"], time.time() + 1)

    async def test_button_and_other_types_are_broadcast(self):
        await self.start()
        alice, bob = await self.client("alice"), await self.client("bob")
        await alice.next()
        alice.say("lobby", "button", "cooperate")
        alice.say("lobby", "emote", [1, 2])
        for client in (alice, bob):
            self.assertEqual(await events(client, 2), [("alice", "button", "cooperate"),
                                                       ("alice", "emote", [1, 2])])

    async def test_messages_to_rooms_not_joined(self):
        await self.start()
        client = await self.client("Tibi")
        for kind in ("leave", "list", "msg", "transform", "button", "other"):
            client.say("elsewhere", kind, {})
            await self.expect_code(client, 401)

    async def test_two_rooms_at_once(self):
        await self.start()
        alice, bob = await self.client("alice"), await self.client("bob")
        await alice.next()
        alice.say("private_room_1", "join")
        members = await alice.next()
        self.assertEqual((members["room"], summary(members)),
                         ("private_room_1", [("alice", "join", "")]))
        bob.say("private_room_1", "join")
        self.assertEqual(summary(await bob.next()), [("alice", "join", ""), ("bob", "join", "")])
        self.assertEqual(summary(await alice.next()), [("bob", "join", "")])
        alice.say("private_room_1", "msg", "in private")
        alice.say("lobby", "msg", "in lobby")
        for client in (alice, bob):
            first, second = await client.next(), await client.next()
            self.assertEqual((first["room"], summary(first)),
                             ("private_room_1", [("alice", "msg", "in private")]))
            self.assertEqual((second["room"], summary(second)),
                             ("lobby", [("alice", "msg", "in lobby")]))

    async def test_leave_notifies_others_and_closes_empty_rooms(self):
        await self.start()
        alice, bob = await self.client("alice"), await self.client("bob")
        await alice.next()
        alice.say("r1", "join")
        await alice.next()
        bob.say("r1", "join")
        await bob.next()
        await alice.next()
        bob.say("r1", "leave")
        self.assertEqual((await alice.next())["payload"][0]["type"], "leave")
        alice.say("r1", "leave")
        await self.quiet(alice, bob)  # the leaver gets no reply
        alice.send({"system": "rooms"})
        self.assertEqual((await self.expect_code(alice, 212))["detail"], {"lobby": ""})
        # Leaving the lobby as its last member keeps it, and the connection.
        bob.say("lobby", "leave")
        self.assertEqual(summary(await alice.next()), [("bob", "leave", "")])
        alice.say("lobby", "leave")
        bob.send({"system": "rooms"})
        self.assertEqual((await self.expect_code(bob, 212))["detail"], {"lobby": ""})
        alice.send({"system": "ping"})
        await self.expect_code(alice, 220)
        alice.say("lobby", "msg", "x")
        await self.expect_code(alice, 401)
        alice.say("lobby", "join")
        self.assertEqual(summary(await alice.next()), [("alice", "join", "")])

    async def test_disconnect_leaves_every_room(self):
        await self.start()
        alice, bob = await self.client("alice"), await self.client("bob")
        await alice.next()
        for client in (alice, bob):
            client.say("r1", "join")
            await client.next()
        await alice.next()  # bob joins r1
        bob.transport.loseConnection()
        frames = [await alice.next(), await alice.next()]
        self.assertEqual(sorted((f["room"], summary(f)[0][:2]) for f in frames),
                         [("lobby", ("bob", "leave")), ("r1", ("bob", "leave"))])
        # A room whose last member disconnects is closed.
        carol = await self.client("carol")
        await alice.next()  # carol's join
        carol.send({"room": "r2", "type": "join", "data": ""}, binary=True)
        self.assertEqual(summary(await carol.next()), [("carol", "join", "")])
        alice.send({"system": "rooms"})
        self.assertEqual(set((await self.expect_code(alice, 212))["detail"]),
                         {"lobby", "r1", "r2"})
        carol.transport.loseConnection()
        self.assertEqual(summary(await alice.next()), [("carol", "leave", "")])
        alice.send({"system": "rooms"})
        self.assertEqual((await self.expect_code(alice, 212))["detail"],
                         {"lobby": "", "r1": ""})

    async def test_events_before_a_reply_arrive_before_it(self):
        await self.start()
        alice = await self.client("alice")
        alice.say("lobby", "msg", "one")
        alice.say("lobby", "msg", "two")
        alice.say("lobby", "list")
        self.assertEqual(await events(alice, 2), [("alice", "msg", "one"), ("alice", "msg", "two")])
        self.assertEqual(summary(await alice.next()), [("alice", "join", "")])
        alice.say("lobby", "msg", "three")
        alice.send({"system": "ping"})
        self.assertEqual(await events(alice, 1), [("alice", "msg", "three")])
        await self.expect_code(alice, 220)


class WireFormatTests(VRTestCase):
    def test_every_code_has_its_text_and_kind(self):
        import json

        from gtserver.vr import wire
        expected = {200: "Ok.", 202: "Access granted.", 212: "Listing information.",
                    214: "Help message.", 220: "Pong.", 400: "Bad request.",
                    401: "User unauthorized.", 403: "Access denied.",
                    406: "Data object has invalid structure.",
                    409: "Request conflicts current status.", 500: "Internal server error.",
                    501: "Command not recognized."}
        self.assertEqual(wire.TEXTS, expected)
        for code, text in expected.items():
            frame = json.loads(wire.reply(code, 1568979503.28))
            self.assertEqual(frame, {"info": "system" if code < 400 else "error",
                                     "response": {"time": 1568979503.28, "code": code,
                                                  "msg": text, "detail": {}}})

    async def test_room_event_frame_shape(self):
        await self.start()
        client = await self.client("Tibi")
        client.send({"room": "lobby", "type": "msg", "data": "hello", "time": 5.0})
        frame = await client.next()
        self.assertEqual(set(frame), {"info", "room", "payload"})
        self.assertEqual((frame["info"], frame["room"]), ("user", "lobby"))
        self.assertIsInstance(frame["payload"], list)
        (entry,) = frame["payload"]
        self.assertEqual(set(entry), {"time", "user", "type", "data"})
        self.assertIsInstance(entry["time"], float)
        self.assertNotEqual(entry["time"], 5.0)

    async def test_unexpected_failures_are_500_and_the_connection_stays(self):
        from gtserver.store import StoreUnavailable, Unstorable
        await self.start()
        client = await self.client()
        accounts = self.server.core.accounts
        working_login = accounts.login

        async def broken_login(*arguments):
            raise StoreUnavailable("database down")
        accounts.login = broken_login
        client.send({"system": "login", "options": {"user": "Tibi", "pass": "x"}})
        await self.expect_code(client, 500)
        client.send({"system": "rooms"})
        await self.expect_code(client, 403)  # still not logged in

        async def unstorable_login(*arguments):
            raise Unstorable("text the database cannot hold")
        accounts.login = unstorable_login
        client.send({"system": "login", "options": {"user": "Tibi", "pass": "x"}})
        await self.expect_code(client, 400)  # bad input, not an internal error
        accounts.login = working_login
        await client.login("Tibi")

        def broken_say(*arguments):
            raise RuntimeError("bug")
        self.patch(self.server.factory("vr").rooms, "say", broken_say)
        client.say("lobby", "msg", "x")
        await self.expect_code(client, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        client.send({"system": "ping"})
        await self.expect_code(client, 220)


class HistoryTests(VRTestCase):
    async def test_last_fifty_messages_as_one_frame_for_a_joiner(self):
        await self.start()  # the default history length
        alice = await self.client("alice")
        alice.say("r1", "join")
        await alice.next()
        for n in range(55):
            alice.say("r1", "msg", f"m{n}")
        alice.say("r1", "button", "cooperate")
        alice.say("r1", "transform", {"pos": {"x": 1.0}})
        await events(alice, 56, room="r1")
        bob = await self.client("bob")
        bob.say("r1", "join")
        members = await bob.next()  # no reply code before a room's join sequence
        self.assertEqual((members["room"], summary(members)),
                         ("r1", [("alice", "join", ""), ("bob", "join", "")]))
        history = await bob.next()
        self.assertEqual(history["room"], "r1")
        self.assertEqual(summary(history), [("alice", "msg", f"m{n}") for n in range(5, 55)])
        self.assertEqual(summary(await alice.next()), [("bob", "join", "")])
        # A room without history: the member list only.
        bob.say("r2", "join")
        self.assertEqual(summary(await bob.next()), [("bob", "join", "")])
        bob.send({"system": "ping"})
        await self.expect_code(bob, 220)

    async def test_recorded_time_is_server_time(self):
        from tests.support import select_events
        await self.start()
        before = time.time()
        alice = await self.client("alice")
        alice.send({"room": "lobby", "type": "msg", "data": "hi", "time": 5.0})
        await alice.next()
        after = time.time()
        await self.server.core.events.flush()
        rows = await self.server.store.run(select_events, source="vr")
        self.assertEqual([r[3] for r in rows], ["login", "join", "msg"])
        for row in rows:
            self.assertTrue(before - 1 <= row[1] <= after + 1, row)
