"""Hostile text and numbers at the EOT edge: clear errors, nothing unstorable logged."""

from __future__ import annotations

import json

from twisted.trial import unittest

from tests.pgcluster import postgres_url
from tests.support import select_events, start_server
from tests.test_eot import call, encode, exchange, join_all, join_request

BAD_KEY = "framework: not joined: unknown player id or wrong key"
SURROGATE = "framework: text in the request cannot be stored: it contains an unpaired " \
            "UTF-16 surrogate"
NUL = "framework: text in the request cannot be stored: it contains a NUL character (\\u0000)"
NOT_FINITE = ("framework: numbers must be finite: NaN, Infinity and numbers beyond the "
              "range of a double are refused")


class HostileInputTests(unittest.TestCase):
    """On SQLite; :class:`HostileInputPostgresTests` repeats them on PostgreSQL
    (which refuses NUL characters, so a NUL that got through would stop the log)."""

    def database(self) -> str | None:
        return None     # a fresh SQLite file

    async def chat(self):
        server = await start_server(self, db=self.database(), listeners={"eot": None})
        port = server.port("eot")
        (player,) = await join_all(server, port, "Chat", "hostile", 1, ["eve"])
        self.assertEqual((await player.move(name="eve"))["status"], "ok")
        return server, port, player

    async def test_a_lone_surrogate_in_the_key_is_a_wrong_key(self):
        server, port, player = await self.chat()
        for key in ("\ud800", player.key[:-1] + "\udfff", "\ud83d"):
            for request in (player.request("state", observer=False),
                            player.request("state", observer=True),
                            player.request("move", move={"message": "hi"}),
                            player.request("restart")):
                reply = await call(port, {**request, "key": key})
                self.assertEqual(reply, {"status": "error", "message": BAD_KEY})
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_unstorable_text_is_refused_at_the_edge(self):
        server, port, player = await self.chat()
        cases = [
            (join_request("Chat", "other", 1, "\ud800"), SURROGATE),
            (join_request("Chat", "other", 1, "a\u0000b"), NUL),
            (join_request("Chat", "tok\u0000en", 1, "ann"), NUL),
            (join_request("Chat\ud800", "other", 1, "ann"), SURROGATE),
            (player.request("move", move={"name": "\udc80"}), SURROGATE),
            (player.request("move", move={"message": "hi \u0000 there"}), NUL),
            (player.request("move", move={"message": ["deep", {"x": "\ud800"}]}), SURROGATE),
            (player.request("move", move={"\ud800": "key of an argument"}), SURROGATE),
            ({"type": "observe", "game": "Chat", "session": "hostile", "name": "e\u0000ve"},
             NUL),
        ]
        for request, message in cases:
            reply = await call(port, request)
            self.assertEqual(reply, {"status": "error", "message": message}, request)
        # The same bytes as raw UTF-8 JSON text (an escape is the only way to
        # write a lone surrogate in JSON; NUL may also come escaped only).
        raw = (b'{"type": "join", "game": "Chat", "session": "raw", "players": 1, '
               b'"name": "\\ud800x"}EOT\0')
        self.assertEqual(json.loads(await exchange(port, raw))["message"], SURROGATE)
        # The encoded surrogate itself (json reads it), and UTF-16 JSON text.
        raw = b'{"type": "join", "game": "Chat", "session": "raw", "players": 1, "name": "'
        self.assertEqual(json.loads(await exchange(port, raw + b'\xed\xa0\x80"}EOT\0'))[
            "message"], SURROGATE)
        for name, message in (("\ud800", SURROGATE), ("a\u0000", NUL)):
            text = json.dumps(join_request("Chat", "raw16", 1, name)).encode("utf-16-le")
            self.assertEqual(json.loads(await exchange(port, text + b"EOT\0"))["message"],
                             message)
        # Nothing was played, and the next good move is logged as usual.
        self.assertEqual((await player.move(message="fine"))["status"], "ok")
        await server.core.events.flush()
        rows = await server.store.run(select_events, 0, 100, "eot", ("move",))
        moves = [json.loads(row[-1])["move"] for row in rows]
        self.assertEqual(moves, [{"name": "eve"}, {"message": "fine"}])
        state = (await player.state())["data"]
        self.assertEqual(state["messages"], [["eve", "fine"]])
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_non_finite_numbers_are_refused(self):
        server, port, player = await self.chat()
        move = encode(player.request("move", move={"message": "x"}))
        for number in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"):
            payload = move.replace(b'"x"', number)
            self.assertIn(number, payload)
            reply = json.loads(await exchange(port, payload))
            self.assertEqual(reply, {"status": "error", "message": NOT_FINITE}, number)
        request = {**player.request("state", observer=False), "player_id": float("nan")}
        self.assertEqual((await call(port, request))["message"], NOT_FINITE)
        # Finite numbers of any size are fine JSON (the game decides on them).
        reply = json.loads(await exchange(port, move.replace(b'"x"', b"1e300")))
        self.assertEqual(reply["status"], "illegalmove")
        reply = json.loads(await exchange(port, move.replace(b'"x"', b"9" * 400)))
        self.assertEqual(reply["status"], "illegalmove")
        self.assertEqual((await player.state())["data"]["messages"], [])


class HostileInputPostgresTests(HostileInputTests):
    def database(self) -> str | None:
        return postgres_url(self)
