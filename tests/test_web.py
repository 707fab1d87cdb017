"""The web listener: login, sessions, CSRF, the JSON API and the operator's
controls, against the real daemon over real sockets (docs/web.md)."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import types

from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.task import Clock, deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.trial import unittest

from gtserver.admin import read_password, set_password
from gtserver.core.presence import Presence
from gtserver.eot.lobby import TableService
from gtserver.store import settings as setting_queries
from gtserver.store.base import Statement
from gtserver.vr.rooms import RoomService, RoomSettings
from gtserver.web.auth import PASSWORD_SETTING
from tests import test_uttt as uttt
from tests.pgcluster import postgres_url, private_cluster
from tests.support import parse_options, sqlite_url, start_server
from tests.test_eot import call, join_all, join_request, start_call
from tests.test_vr_client import connect as vr_connect
from tests.webclient import WebClient, first_event

PASSWORD = "correct horse battery"
TOKEN = "t0ken-for-the-scripts-0123456789"


def write_token(testcase: unittest.TestCase, token: str = TOKEN, mode: int = 0o600) -> str:
    directory = tempfile.mkdtemp(prefix="gtserver-web-")
    testcase.addCleanup(__import__("shutil").rmtree, directory, True)
    path = os.path.join(directory, "token")
    with open(path, "w") as target:
        target.write(token + "\n")
    os.chmod(path, mode)
    return path


def events_of(source: str):
    rows = yield Statement(
        "SELECT kind, user_name, room, match_id, address, data FROM events "
        "WHERE source = ? ORDER BY id", (source,))
    return rows


def rating_changes(match_id: str):
    rows = yield Statement("SELECT user_id FROM rating_changes WHERE match_id = ?", (match_id,))
    return rows


class WebTestMixin:
    db: str | None = None

    async def serve(self, *arguments: str, listeners: tuple[str, ...] = ("vr",),
                    password: str | None = PASSWORD, db: str | None = None) -> WebClient:
        self.addCleanup(uttt.settle_websocket_timers)
        self.server = await start_server(
            self, "--fps", "0.001", *arguments, db=db or self.db,
            listeners={"web": None, **{name: None for name in listeners}})
        if password is not None:
            encoded = await self.server.core.accounts.hasher.hash(password)
            await self.server.store.run(setting_queries.put_setting, PASSWORD_SETTING,
                                        encoded, 0.0)
        self.web_port = self.server.port("web")
        return WebClient(self.web_port)

    async def logged_in(self, *arguments: str, **keywords) -> WebClient:
        client = await self.serve(*arguments, **keywords)
        reply = await client.log_in(PASSWORD)
        self.assertEqual(reply.code, 200, reply.body)
        return client

    async def operator_events(self) -> list[tuple]:
        await self.server.core.events.flush()
        return await self.server.store.run(events_of, "web")


class AccessTests(WebTestMixin, unittest.TestCase):
    async def test_nothing_is_shown_without_login(self):
        client = await self.serve()
        vr = await vr_connect(self.server.port("vr"), self)
        await vr.login("Alice-secret-name")
        page = await client.get("/")
        self.assertEqual((page.code, page.header("location")), (302, "/login"))
        login = await client.get("/login")
        self.assertEqual(login.code, 200)
        self.assertNotIn(b"Alice", login.body)
        for path in ("/api/state", "/api/session", "/api/events"):
            reply = await client.get(path)
            self.assertEqual(reply.code, 401, path)
            self.assertNotIn(b"Alice", reply.body)
        refused = await client.post_json("/api/control/message",
                                         {"room": "lobby", "text": "hi"}, csrf=None)
        self.assertEqual(refused.code, 401)

    async def test_password_login_opens_a_session_with_a_strict_cookie(self):
        client = await self.serve()
        reply = await client.log_in(PASSWORD)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json()["who"], "admin")
        cookie = reply.cookies()[0]
        self.assertIn("HttpOnly", cookie)
        self.assertIn("samesite=strict", cookie.lower())
        self.assertNotIn("Secure", cookie)  # plain HTTP
        state = await client.get("/api/state")
        self.assertEqual(state.code, 200)
        self.assertEqual(state.json()["server"]["version"], __import__("gtserver").__version__)
        session = (await client.get("/api/session")).json()
        self.assertEqual(session, {"who": "admin", "csrf": client.csrf})
        page = await client.get("/")
        self.assertEqual(page.code, 200)
        self.assertIn(b'<script src="/static/monitor.js"', page.body)
        self.assertIn("default-src 'self'", page.header("content-security-policy"))

    async def test_the_login_form_sets_the_cookie_and_redirects(self):
        client = await self.serve()
        reply = await client.request(
            "POST", "/login", b"password=" + PASSWORD.replace(" ", "+").encode(),
            {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual((reply.code, reply.header("location")), (302, "/"))
        self.assertEqual((await client.get("/api/state")).code, 200)

    async def test_wrong_password_is_refused_and_opens_nothing(self):
        client = await self.serve()
        reply = await client.log_in("not the password")
        self.assertEqual(reply.code, 403)
        self.assertEqual(reply.json(), {"error": "wrong password"})
        self.assertIsNone(client.cookie)
        self.assertEqual((await client.get("/api/state")).code, 401)
        form = await client.request("POST", "/login", b"password=nope",
                                    {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(form.code, 403)
        self.assertIn(b"wrong password", form.body)

    async def test_without_a_password_or_token_login_says_how_to_set_one(self):
        client = await self.serve(password=None)
        reply = await client.log_in("anything at all")
        self.assertEqual(reply.code, 403)
        self.assertIn("gtserver-admin set-password", reply.json()["error"])

    async def test_failed_logins_are_throttled_like_the_other_listeners(self):
        client = await self.serve("--login-failures-per-account", "3")
        for _ in range(3):
            self.assertEqual((await client.log_in("guess")).code, 403)
        reply = await client.log_in(PASSWORD)  # even the right one, for a while
        self.assertEqual(reply.code, 429)
        self.assertIn("too many", reply.json()["error"])
        self.assertIsNotNone(reply.header("retry-after"))
        self.assertIsNone(client.cookie)

    async def test_token_file_logs_in_and_serves_scripts_by_bearer(self):
        client = await self.serve("--web-token-file", write_token(self), password=None)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        state = await client.request("GET", "/api/state", headers=bearer)
        self.assertEqual(state.code, 200)
        wrong = await client.request("GET", "/api/state",
                                     headers={"Authorization": "Bearer " + "x" * 32})
        self.assertEqual(wrong.code, 401)
        # No CSRF token needed with a bearer token: the browser never sends one by itself.
        reply = await client.post_json("/api/control/message", {"room": "lobby", "text": "hi"},
                                       csrf=None, headers=bearer)
        self.assertEqual(reply.code, 200, reply.body)
        login = await client.log_in(TOKEN)
        self.assertEqual((login.code, login.json()["who"]), (200, "token"))

    def test_token_file_readable_by_everyone_or_short_is_refused(self):
        with self.assertRaises(usage.UsageError) as caught:
            parse_options("--web-token-file", write_token(self, mode=0o644))
        self.assertIn("chmod o-r", str(caught.exception))
        with self.assertRaises(usage.UsageError) as caught:
            parse_options("--web-token-file", write_token(self, token="short"))
        self.assertIn("at least 16", str(caught.exception))

    async def test_logout_ends_the_session(self):
        client = await self.logged_in()
        cookie = client.cookie
        forged = await client.request("POST", "/logout", b"csrf=forged",
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(forged.code, 403)
        reply = await client.request(
            "POST", "/logout", f"csrf={client.csrf}".encode(),
            {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual((reply.code, reply.header("location")), (302, "/login"))
        client.cookie = cookie  # an old cookie no longer opens anything
        self.assertEqual((await client.get("/api/state")).code, 401)

    async def test_the_live_stream_sends_the_state(self):
        client = await self.logged_in()
        code, event = await first_event(client, "/api/events")
        self.assertEqual(code, 200)
        kind, data = event.split(b"\n", 1)
        self.assertEqual(kind, b"event: state")
        state = json.loads(data.removeprefix(b"data: "))
        self.assertEqual([room["name"] for room in state["rooms"]], ["lobby"])
        self.assertEqual({listener["name"] for listener in state["listeners"]}, {"vr", "web"})

    async def test_secure_cookie_on_tls(self):
        from twisted.internet.ssl import Certificate, optionsForClientTLS
        from twisted.web.client import Agent, HTTPConnectionPool
        from twisted.web.iweb import IPolicyForHTTPS
        from zope.interface import implementer

        from tests.tls import write_self_signed_certificate

        directory = tempfile.mkdtemp(prefix="gtserver-web-tls-")
        self.addCleanup(__import__("shutil").rmtree, directory, True)
        certificate = write_self_signed_certificate(directory)
        self.addCleanup(uttt.settle_websocket_timers)
        self.server = await start_server(
            self, listeners={"web": f"ssl:0:interface=127.0.0.1:privateKey="
                                    f"{certificate.key_path}:certKey={certificate.certificate_path}"})
        encoded = await self.server.core.accounts.hasher.hash(PASSWORD)
        await self.server.store.run(setting_queries.put_setting, PASSWORD_SETTING, encoded, 0.0)
        trust = Certificate.loadPEM(certificate.pem)

        @implementer(IPolicyForHTTPS)
        class TrustOurs:
            def creatorForNetloc(self, hostname, port):
                return optionsForClientTLS("localhost", trustRoot=trust)

        agent = Agent(reactor, contextFactory=TrustOurs(),
                      pool=HTTPConnectionPool(reactor, persistent=False))
        client = WebClient(self.server.port("web"), scheme="https", agent=agent)
        reply = await client.log_in(PASSWORD)
        self.assertEqual(reply.code, 200)
        self.assertIn("Secure", reply.cookies()[0])
        self.assertEqual((await client.get("/api/state")).code, 200)


class ProxyTests(WebTestMixin, unittest.TestCase):
    async def check_recorded_address(self, arguments: tuple[str, ...], expected: str) -> None:
        client = await self.logged_in(*arguments)
        reply = await client.post_json("/api/control/pause", {"room": "lobby"},
                                       headers={"X-Forwarded-For": "10.9.8.7"})
        self.assertEqual(reply.code, 200)
        [recorded] = await self.operator_events()
        self.assertTrue(recorded[4].startswith(expected), recorded)

    async def test_behind_a_trusted_proxy_the_forwarded_client_is_recorded(self):
        await self.check_recorded_address(("--trusted-proxy", "127.0.0.1"), "10.9.8.7")

    async def test_from_any_other_peer_the_header_is_ignored(self):
        await self.check_recorded_address((), "127.0.0.1:")


class BadInputTests(WebTestMixin, unittest.TestCase):
    async def test_missing_or_forged_csrf_token_changes_nothing(self):
        client = await self.logged_in()
        vr = await vr_connect(self.server.port("vr"), self)
        await vr.login("Alice")
        vr.say("lobby", "join", "")
        vr.say("lab", "join", "")
        await vr.next()  # the lab's member list
        for token in (None, "forged-" + "x" * 30, client.csrf[:-1]):
            reply = await client.post_json("/api/control/close-room", {"room": "lab"},
                                           csrf=token)
            self.assertEqual(reply.code, 403, token)
            self.assertIn("CSRF", reply.json()["error"])
        state = (await client.get("/api/state")).json()
        self.assertIn("lab", [room["name"] for room in state["rooms"]])
        self.assertEqual(await self.operator_events(), [])

    async def test_unknown_room_user_or_match_is_404(self):
        client = await self.logged_in(listeners=("vr", "uttt"))
        cases = [("message", {"room": "nowhere", "text": "hi"}),
                 ("close-room", {"room": "nowhere"}),
                 ("pause", {"room": "nowhere"}),
                 ("resume", {"room": "nowhere"}),
                 ("disconnect", {"user": "Nobody"}),
                 ("end-match", {"match": "0" * 24})]
        for name, body in cases:
            reply = await client.post_json(f"/api/control/{name}", body)
            self.assertEqual(reply.code, 404, (name, reply.body))
            self.assertIn("error", reply.json())
        reply = await client.post_json("/api/control/explode", {})
        self.assertEqual(reply.code, 404)
        self.assertEqual(await self.operator_events(), [])

    async def test_malformed_bodies_are_400_or_415(self):
        client = await self.logged_in()
        headers = {"Content-Type": "application/json", "X-CSRF-Token": client.csrf}
        not_json = await client.request("POST", "/api/control/message", b"{nope", headers)
        self.assertEqual((not_json.code, not_json.json()), (400, {"error": "the body is not JSON"}))
        array = await client.request("POST", "/api/control/message", b"[]", headers)
        self.assertEqual(array.code, 400)
        missing = await client.post_json("/api/control/message", {"room": "lobby"})
        self.assertEqual(missing.code, 400)
        self.assertIn("'text'", missing.json()["error"])
        wrong_type = await client.post_json("/api/control/message", {"room": 5, "text": "x"})
        self.assertEqual(wrong_type.code, 400)
        unstorable = await client.post_json("/api/control/message",
                                            {"room": "lobby", "text": "a\u0000b"})
        self.assertEqual(unstorable.code, 400)
        too_long = await client.post_json("/api/control/message",
                                          {"room": "lobby", "text": "x" * 2001})
        self.assertEqual(too_long.code, 400)
        form = await client.request("POST", "/api/control/message", b"room=lobby",
                                    {"Content-Type": "application/x-www-form-urlencoded",
                                     "X-CSRF-Token": client.csrf})
        self.assertEqual(form.code, 415)
        lobby = await client.post_json("/api/control/close-room", {"room": "lobby"})
        self.assertEqual((lobby.code, lobby.json()), (400, {"error": "the lobby cannot be closed"}))
        get = await client.get("/api/control/message")
        self.assertEqual(get.code, 405)
        self.assertEqual(await self.operator_events(), [])

    async def test_oversized_bodies_are_413(self):
        client = await self.logged_in()
        huge = {"room": "lobby", "text": "x" * 100_000}
        reply = await client.post_json("/api/control/message", huge)
        self.assertEqual(reply.code, 413)
        self.assertIn("over", reply.json()["error"])
        login = await client.request("POST", "/api/login", b"x" * 50_000,
                                     {"Content-Type": "application/json"})
        self.assertEqual(login.code, 413)
        state = (await client.get("/api/state")).json()
        self.assertEqual(state["rooms"][0]["history"], 0)
        self.assertEqual(await self.operator_events(), [])

    async def test_unknown_pages_are_404(self):
        client = await self.serve()
        self.assertEqual((await client.get("/static/../auth.py")).code, 404)
        self.assertEqual((await client.get("/nothing")).code, 404)
        self.assertEqual((await client.get("/static/monitor.js")).code, 200)


class ControlTests(WebTestMixin, unittest.TestCase):
    async def vr_pair(self):
        port = self.server.port("vr")
        alice, bob = await vr_connect(port, self), await vr_connect(port, self)
        await alice.login("Alice")
        await bob.login("Bob")
        await alice.next()  # Bob joins the lobby
        for client in (alice, bob):
            client.say("lab", "join", "")
            await client.next()  # the lab's member list
        frame = await alice.next()
        assert frame["payload"][0]["user"] == "Bob", frame  # Bob joins the lab
        return alice, bob

    async def test_system_message_reaches_the_room_and_is_recorded(self):
        client = await self.logged_in()
        alice, bob = await self.vr_pair()
        reply = await client.post_json("/api/control/message",
                                       {"room": "lab", "text": "Please take off the headset"})
        self.assertEqual(reply.code, 200, reply.body)
        for member in (alice, bob):
            frame = await member.next()
            self.assertEqual(frame["room"], "lab")
            [event] = frame["payload"]
            self.assertEqual((event["user"], event["type"], event["data"]),
                             ("", "msg", "Please take off the headset"))
        [recorded] = await self.operator_events()
        kind, user, room, match, address, data = recorded
        self.assertEqual((kind, user, room), ("operator_message", "admin", "lab"))
        self.assertTrue(address.startswith("127.0.0.1:"))
        self.assertEqual(json.loads(data), {"text": "Please take off the headset"})

    async def test_closing_a_room_takes_everyone_out(self):
        client = await self.logged_in()
        alice, bob = await self.vr_pair()
        reply = await client.post_json("/api/control/close-room", {"room": "lab"})
        self.assertEqual((reply.code, reply.json()), (200, {"ok": True, "connections": 2}))
        frame = await alice.next()
        self.assertEqual(frame["payload"][0]["data"], "This room was closed by the experimenter.")
        alice.say("lab", "msg", "still here?")
        self.assertEqual((await alice.reply())["code"], 401)  # not in the room any more
        state = (await client.get("/api/state")).json()
        self.assertEqual([room["name"] for room in state["rooms"]], ["lobby"])
        kinds = [row[0] for row in await self.operator_events()]
        self.assertEqual(kinds, ["operator_close_room"])

    async def test_disconnect_closes_the_users_connections(self):
        client = await self.logged_in()
        alice, bob = await self.vr_pair()
        reply = await client.post_json("/api/control/disconnect", {"user": "Alice"})
        self.assertEqual((reply.code, reply.json()["connections"]), (200, 1))
        closed = alice.closed
        closed.addTimeout(5, reactor)
        _clean, code, reason = await closed
        self.assertEqual(code, 4000)
        self.assertIn("experimenter", reason)
        presence = self.server.core.presence
        await uttt.until(lambda: "Alice" not in
                         [entry.user for entry in presence.connections.values()])
        state = (await client.get("/api/state")).json()
        self.assertEqual([entry["user"] for entry in state["presence"]["dropouts"]], ["Alice"])
        self.assertEqual([entry["user"] for entry in state["presence"]["connected"]], ["Bob"])
        [recorded] = await self.operator_events()
        self.assertEqual(json.loads(recorded[5])["target"], "Alice")

    async def test_pause_and_resume_are_recorded(self):
        client = await self.logged_in()
        await self.vr_pair()
        for name in ("pause", "resume"):
            reply = await client.post_json(f"/api/control/{name}", {"room": "lab"})
            self.assertEqual(reply.code, 200)
            room = [r for r in (await client.get("/api/state")).json()["rooms"]
                    if r["name"] == "lab"][0]
            self.assertEqual(room["paused"], name == "pause")
        self.assertEqual([(row[0], row[2]) for row in await self.operator_events()],
                         [("operator_pause", "lab"), ("operator_resume", "lab")])

    async def test_ending_a_uttt_match_tells_both_players_and_rates_nobody(self):
        client = await self.logged_in(listeners=("uttt",))
        port = self.server.port("uttt")
        self.port = port
        (first, before_a), (second, before_b) = (await uttt.login(self, port, "Ann"),
                                                 await uttt.login(self, port, "Ben"))
        match = await uttt.challenge(self, first, second, "Ben")
        await uttt.play(self, match["id"], [first, second], [(1, 1, 1, 1), (1, 1, 0, 0)])
        live = (await client.get("/api/state")).json()["matches"]
        self.assertEqual([(m["id"], m["moves"], m["turn"]) for m in live],
                         [(match["id"], 2, ["ann"])])
        reply = await client.post_json("/api/control/end-match", {"match": match["id"]})
        self.assertEqual(reply.code, 200, reply.body)
        for player, before in ((first, before_a), (second, before_b)):
            update = await player.expect("match_update")
            self.assertTrue(update["match_state"]["game_over"])
            self.assertIsNone(update["match_state"]["player_won"])
            standing = await player.expect("elo_update")
            self.assertEqual(standing["elo"], before["elo"])
        changes = await self.server.store.run(rating_changes, match["id"])
        self.assertEqual(changes, [])  # not even rated as a draw
        self.assertEqual((await client.get("/api/state")).json()["matches"], [])
        again = await client.post_json("/api/control/end-match", {"match": match["id"]})
        self.assertEqual(again.code, 404)
        [recorded] = await self.operator_events()
        self.assertEqual((recorded[0], recorded[3]), ("operator_end_match", match["id"]))

    async def test_ending_an_eot_match_ends_its_session(self):
        client = await self.logged_in(listeners=("eot",))
        port = self.server.port("eot")
        players = await join_all(self.server, port, "TicTacToe", "lab", 2)
        match = (await client.get("/api/state")).json()["matches"][0]
        self.assertEqual((match["game"], match["source"]), ("TicTacToe", "eot"))
        await players[1].state()
        parked = players[1].start_state()  # seen already: it waits for a change
        sessions = self.server.core.attached(TableService)
        await uttt.until(lambda: sessions.snapshot()["parked"])
        eot = (await client.get("/api/state")).json()["eot"]
        self.assertEqual(eot["parked"][0]["requests"], 1)
        reply = await client.post_json("/api/control/end-match", {"match": match["id"]})
        self.assertEqual(reply.code, 200, reply.body)
        answer = await parked
        self.assertIn("ended by the operator", json.dumps(answer))
        self.assertEqual((await client.get("/api/state")).json()["matches"], [])


class SnapshotTests(WebTestMixin, unittest.TestCase):
    async def test_eot_sessions_waiting_to_fill(self):
        client = await self.logged_in(listeners=("eot",))
        port = self.server.port("eot")
        first = start_call(port, join_request("TicTacToe", "lab", 2, "Ann"))
        sessions = self.server.core.attached(TableService)
        await uttt.until(lambda: sessions.snapshot()["waiting"])
        [waiting] = (await client.get("/api/state")).json()["eot"]["waiting"]
        self.assertEqual((waiting["game"], waiting["session"], waiting["players"],
                          waiting["size"]), ("TicTacToe", "lab", ["Ann"], 2))
        second = await call(port, join_request("TicTacToe", "lab", 2, "Ben"))
        self.assertEqual(second["status"], "ok")
        self.assertEqual((await first)["status"], "ok")
        state = (await client.get("/api/state")).json()
        self.assertEqual(state["eot"]["waiting"], [])
        [match] = state["matches"]
        self.assertEqual((match["players"], match["moves"], match["last_move_age"]),
                         (["Ann", "Ben"], 0, None))

    async def test_rooms_show_members_connections_and_activity(self):
        client = await self.logged_in()
        port = self.server.port("vr")
        alice = await vr_connect(port, self)
        await alice.login("Alice")
        second = await vr_connect(port, self)
        await second.login("Alice")
        alice.say("lobby", "msg", "hello")
        await second.next()
        state = (await client.get("/api/state")).json()
        [lobby] = state["rooms"]
        [member] = lobby["members"]
        self.assertEqual((member["user"], member["connections"]), ("Alice", 2))
        self.assertEqual(len(member["addresses"]), 2)
        self.assertIsNone(member["pose_age"])
        self.assertEqual((lobby["messages"], lobby["history"]), (1, 1))
        vr = [listener for listener in state["listeners"] if listener["name"] == "vr"][0]
        self.assertEqual(vr["connections"], 2)
        self.assertEqual(state["store"]["engine"], self.server.store.engine)


class QueueTests(WebTestMixin, unittest.TestCase):
    async def test_the_random_queue_and_its_dropouts(self):
        client = await self.logged_in(listeners=("uttt",))
        self.port = self.server.port("uttt")
        (ann, _), = [await uttt.login(self, self.port, "Ann")]
        ann.send("match_request", {"player": None})
        await ann.expect("match_request_response")
        state = (await client.get("/api/state")).json()
        [waiting] = state["uttt"]["queue"]
        self.assertEqual(waiting["user"], "ann")
        self.assertGreaterEqual(waiting["waiting"], 0)
        self.assertEqual([entry["user"] for entry in state["presence"]["connected"]], ["ann"])
        await ann.disconnect()
        presence = self.server.core.presence
        await uttt.until(lambda: not presence.connections)
        state = (await client.get("/api/state")).json()
        self.assertEqual(state["uttt"]["queue"], [])
        [dropout] = state["presence"]["dropouts"]
        self.assertEqual((dropout["user"], dropout["source"]), ("ann", "uttt"))


    async def test_disconnect_on_one_listener_only(self):
        client = await self.logged_in(listeners=("uttt", "vr"))
        self.port = self.server.port("uttt")
        (ann, _), = [await uttt.login(self, self.port, "Ann")]
        vr = await vr_connect(self.server.port("vr"), self)
        await vr.login("ann", "pw")  # the same account
        wrong = await client.post_json("/api/control/disconnect",
                                       {"user": "ann", "listener": "eot"})
        self.assertEqual(wrong.code, 404)
        self.assertIn("not connected on eot", wrong.json()["error"])
        reply = await client.post_json("/api/control/disconnect",
                                       {"user": "ann", "listener": "uttt"})
        self.assertEqual((reply.code, reply.json()["connections"]), (200, 1))
        closed = ann.closed
        closed.addTimeout(5, reactor)
        self.assertEqual(await closed, 4000)
        self.assertFalse(vr.closed.called)  # the VR connection of the same name stays


class ListenerOptionTests(unittest.TestCase):
    def test_on_this_machine_by_default_and_off_on_request(self):
        self.assertEqual(parse_options()["listeners"]["web"], ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(parse_options("--port", "web=off")["listeners"]["web"], [])

    def test_the_metrics_token_needs_a_token_file(self):
        from gtserver.registry import wire_protocols
        web = wire_protocols()["web"]
        options = parse_options("--web-metrics-token")
        with self.assertRaises(ValueError) as refused:
            web.settings(options)
        self.assertIn("--web-token-file", str(refused.exception))
        self.assertFalse(web.settings(parse_options()).metrics_token)


class UpdateShareTests(unittest.TestCase):
    def test_a_costly_state_is_sent_less_often(self):
        from twisted.internet.defer import succeed

        from gtserver.web import monitor as monitor_module
        clock = Clock()
        core = types.SimpleNamespace(clock=clock, attached=lambda kind: None,
                                     store=types.SimpleNamespace(run=lambda *a: succeed(True)))
        monitor = monitor_module.Monitor(core, refresh=1.0)
        monitor.state = lambda: {"big": True}
        ticks = iter(x * 0.125 for x in range(1000))  # each update costs 0.125 s of CPU
        self.patch(monitor_module.time, "thread_time", lambda: next(ticks))
        sent: list[float] = []
        monitor.subscribers.add(lambda encoded: sent.append(clock.seconds()))
        monitor.start()
        for _ in range(6):
            clock.advance(1.0)
        monitor.stop()
        # 0.125 s is 5 % of 2.5 s: an update every 3 s (the next sample) instead of every 1 s.
        self.assertEqual(sent, [0.0, 3.0, 6.0])


class PresenceTests(unittest.TestCase):
    def test_dropouts_leave_the_view_after_the_window(self):
        clock = Clock()
        presence = Presence(clock)
        first, second = object(), object()
        presence.arrived(first, "vr", "Alice", "10.0.0.5:4000")
        presence.arrived(first, "vr", "Alice", "10.0.0.5:4000")  # once per connection
        presence.arrived(second, "uttt", "bob", None)
        clock.advance(10)
        presence.gone(first)
        presence.gone(first)
        clock.advance(60)
        snapshot = presence.snapshot(120.0)
        self.assertEqual([(e["user"], e["seconds"]) for e in snapshot["connected"]],
                         [("bob", 70.0)])
        self.assertEqual([(e["user"], e["ago"], e["stayed"]) for e in snapshot["dropouts"]],
                         [("Alice", 60.0, 10.0)])
        self.assertEqual(presence.of_user("bob"), [second])
        self.assertEqual(presence.of_user("bob", "vr"), [])
        clock.advance(61)
        self.assertEqual(presence.snapshot(120.0)["dropouts"], [])


class StoreOutageTests(WebTestMixin, unittest.TestCase):
    async def test_the_state_says_when_the_store_does_not_answer(self):
        cluster = private_cluster(self)
        client = await self.logged_in("--db-timeout", "1", db=cluster.create_database())
        self.server.store.retry_delay = 0.2
        [web] = [item for item in self.server.service.listeners if item.protocol_name == "web"]
        monitor = web.factory.monitor
        self.assertTrue(await monitor.check_store())
        self.assertTrue((await client.get("/api/state")).json()["store"]["reachable"])
        await cluster.stop_later()
        self.assertFalse(await monitor.check_store())
        store = (await client.get("/api/state")).json()["store"]
        self.assertFalse(store["reachable"])
        self.assertTrue(store["error"])
        refused = await WebClient(self.web_port).log_in(PASSWORD)  # the hash is in the store
        self.assertEqual(refused.code, 503)
        await cluster.start_later()
        await deferLater(reactor, 0.3, lambda: None)  # past the retry delay
        self.assertTrue(await monitor.check_store())


class PausedTicksTests(unittest.TestCase):
    """Pause in memory, with a task.Clock: no pose frame while paused."""

    def test_a_paused_room_gets_no_pose_frames(self):
        from tests.test_rooms import RecordingSink
        clock = Clock()
        events = types.SimpleNamespace(record=lambda *args, **fields: None,
                                       stored=lambda: succeed(True))
        rooms = RoomService(clock, events, RoomSettings(fps=1.0, history=50, changed_only=True,
                                                        pose_log_rate=0.0))
        alice, bob = RecordingSink("Alice"), RecordingSink("Bob")
        rooms.join(alice, "lab")
        rooms.join(bob, "lab")
        rooms.tick()
        rooms.set_paused("lab", True)
        pose = {"pos": {"x": 1.0, "y": 2.0, "z": 3.0}, "rot": {"x": 0.0, "y": 0.0, "z": 0.0}}
        rooms.set_pose(alice, "lab", pose)
        bob.take()
        rooms.tick()
        clock.advance(0)
        self.assertEqual(bob.take(), [])
        rooms.set_paused("lab", False)
        rooms.tick()  # the change made while paused is not lost
        self.assertEqual(bob.take(), [("lab", [("Alice", "transform", pose)])])


class MetricsMountTests(WebTestMixin, unittest.TestCase):
    """/metrics and /health (gtserver.web.metrics) are mounted on the web listener."""

    async def test_metrics_and_health_are_mounted_without_login(self):
        client = await self.serve()
        metrics = await client.get("/metrics")
        self.assertEqual(metrics.code, 200)
        self.assertIn(b"gtserver_build_info", metrics.body)
        health = await client.get("/health")
        self.assertEqual((health.code, health.body.strip()), (200, b"ok"))

    async def test_the_metrics_token_is_passed_when_required(self):
        client = await self.serve("--web-token-file", write_token(self), "--web-metrics-token")
        self.assertEqual((await client.get("/metrics")).code, 401)
        allowed = await client.request("GET", "/metrics",
                                       headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(allowed.code, 200)
        self.assertIn(b"gtserver_build_info", allowed.body)


class SetPasswordTests(unittest.TestCase):
    def test_password_sources(self):
        self.assertEqual(read_password(None, io.StringIO("long enough\n"), input),
                         "long enough")
        with self.assertRaises(ValueError):
            read_password(None, io.StringIO("short\n"), input)

        class Terminal(io.StringIO):
            def isatty(self):
                return True

        answers = iter(["first answer", "other answer"])
        with self.assertRaises(ValueError) as caught:
            read_password(None, Terminal(), lambda prompt: next(answers))
        self.assertIn("differ", str(caught.exception))

    async def check_set_password_then_login(self, url: str):
        await set_password(reactor, url, "a new admin password", 4)
        server = await start_server(self, db=url, listeners={"web": None})
        client = WebClient(server.port("web"))
        self.assertEqual((await client.log_in("a new admin password")).code, 200)
        self.assertEqual((await client.log_in("the old one maybe")).code, 403)

    async def test_set_password_then_login_sqlite(self):
        await self.check_set_password_then_login(sqlite_url(self))

    async def test_set_password_then_login_postgresql(self):
        await self.check_set_password_then_login(postgres_url(self))

    async def test_the_command(self):
        url = sqlite_url(self)
        path = write_token(self, token="from a file, long")
        out, err, status = await getProcessOutputAndValue(
            sys.executable, ["-m", "gtserver.admin", "set-password", "--db", url,
                             "--hash-cost", "4", "--password-file", path],
            env=os.environ, path=os.getcwd())
        self.assertEqual(status, 0, err)
        self.assertIn(b"admin password of the web monitor set", out)
        out, err, status = await getProcessOutputAndValue(
            sys.executable, ["-m", "gtserver.admin", "set-password", "--db", url,
                             "--password-file", "/nonexistent"],
            env=os.environ, path=os.getcwd())
        self.assertEqual(status, 2)
        self.assertIn(b"cannot read --password-file", err)
        server = await start_server(self, db=url, listeners={"web": None})
        self.assertEqual((await WebClient(server.port("web")).log_in("from a file, long")).code,
                         200)


class PostgresControlTests(ControlTests):
    def setUp(self):
        self.db = postgres_url(self)


class PostgresAccessTests(AccessTests):
    def setUp(self):
        self.db = postgres_url(self)

