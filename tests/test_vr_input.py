"""Text and numbers the VR listener cannot relay or store are refused at the edge.

Every frame here is sent as exact bytes by a real Autobahn client; the
research log is checked on both engines.
"""

from __future__ import annotations

import json

from twisted.trial import unittest

from tests.pgcluster import postgres_url
from tests.support import select_events, sqlite_url
from tests.test_vr import VRTestCase, summary
from tests.test_vr import events as room_events

#: A chat line whose data is a lone UTF-16 surrogate, exactly as a client may send it.
LONE_SURROGATE_LINE = b'{"room":"lobby","type":"msg","data":"x\\ud800y"}'


class InputTestsMixin:
    """Run against the engine of ``database_url``."""

    def database_url(self) -> str:
        raise NotImplementedError

    async def start_logged(self, *names: str):
        await self.start(db=self.database_url())
        clients = [await self.client(name) for name in names]
        for index, client in enumerate(clients):  # each sees the later ones join
            await room_events(client, len(names) - index - 1)
        return clients

    async def recorded(self) -> list[tuple]:
        await self.server.core.events.flush()
        rows = await self.server.store.run(select_events, source="vr")
        return [(r[3], r[4], r[5], None if r[8] is None else json.loads(r[8])) for r in rows]

    async def test_lone_surrogate_in_a_chat_line_is_refused_and_nobody_else_notices(self):
        alice, bob = await self.start_logged("alice", "bob")
        # Three lines in one turn of the server: they would share one frame.
        alice.say("lobby", "msg", "before")
        alice.send_raw(LONE_SURROGATE_LINE)
        alice.say("lobby", "msg", "after")
        self.assertEqual(await room_events(bob, 2),
                         [("alice", "msg", "before"), ("alice", "msg", "after")])
        seen = []
        while len(seen) < 3:  # the 400 and the two lines, in the order they happened
            frame = await alice.next()
            seen += summary(frame) if frame["info"] == "user" else [frame["response"]["code"]]
        self.assertEqual(seen, [("alice", "msg", "before"), 400, ("alice", "msg", "after")])
        # The history is clean: a later login gets its join sequence, rooms answers.
        carol = await self.client("carol")
        self.assertEqual(summary(await carol.next()),
                         [("alice", "msg", "before"), ("alice", "msg", "after")])
        carol.send({"system": "rooms"})
        self.assertEqual(await carol.code(), 212)
        events = await self.recorded()
        self.assertEqual([e for e in events if e[0] == "msg"],
                         [("msg", "alice", "lobby", "before"), ("msg", "alice", "lobby", "after")])
        self.assertEqual(events[-1], ("join", "carol", "lobby", None))

    async def test_lone_surrogates_anywhere_in_a_frame(self):
        (alice,) = await self.start_logged("alice")
        for frame in (b'{"room":"lobby","type":"msg","data":{"k":["\\uDFFF"]}}',
                      b'{"room":"lobby","type":"msg","data":{"\\udc00":1}}',
                      b'{"room":"lobby","type":"w\\ud800ve","data":""}',
                      b'{"room":"r\\ud800","type":"join","data":""}',
                      b'{"room":"lobby","type":"transform","data":{"pos":{"x":1}},"n":"\\ud800"}',
                      b'{"system":"ping","x":"\\ud800"}'):
            alice.send_raw(frame)
            self.assertEqual(await alice.code(), 400, frame)
        # UTF-8 bytes of a surrogate in a binary frame (read with the JSON
        # module's encoding detection) are refused the same way.
        alice.send_raw(b'{"room":"lobby","type":"msg","data":"\xed\xa0\x80"}', binary=True)
        self.assertEqual(await alice.code(), 400)
        # A surrogate pair is one character, sent on as UTF-8.
        alice.send_raw(b'{"room":"lobby","type":"msg","data":"\\ud83d\\ude00"}')
        self.assertEqual(summary(await alice.next()), [("alice", "msg", "\U0001F600")])
        alice.send({"system": "rooms"})
        self.assertEqual((await alice.reply())["detail"], {"lobby": ""})
        self.assertEqual([e for e in await self.recorded() if e[0] == "msg"],
                         [("msg", "alice", "lobby", "\U0001F600")])

    async def test_names_that_cannot_be_stored_are_refused(self):
        await self.start(db=self.database_url())
        client = await self.client()
        for options in (b'{"user":"a\\ud800","pass":"x"}', b'{"user":"a\\u0000b","pass":"x"}',
                        b'{"user":"newcomer","pass":"p\\udbff"}'):
            client.send_raw(b'{"system":"login","options":%s}' % options)
            self.assertEqual(await client.code(), 400, options)
        self.assertIsNone(await self.server.core.accounts.user("newcomer"))
        await client.login("alice")
        for frame in (b'{"room":"r\\u0000","type":"join","data":""}',
                      b'{"room":"lobby","type":"m\\u0000g","data":"x"}'):
            client.send_raw(frame)
            self.assertEqual(await client.code(), 400, frame)
        client.send({"system": "rooms"})
        self.assertEqual((await client.reply())["detail"], {"lobby": ""})
        self.assertEqual(await self.recorded(), [("login", "alice", None, {"registered": True}),
                                                 ("join", "alice", "lobby", None)])

    async def test_non_finite_numbers_are_refused(self):
        alice, bob = await self.start_logged("alice", "bob")
        frames = (b'{"room":"lobby","type":"msg","data":1e400}',
                  b'{"room":"lobby","type":"msg","data":NaN}',
                  b'{"room":"lobby","type":"msg","data":{"a":[Infinity]}}',
                  b'{"room":"lobby","type":"msg","data":-Infinity}',
                  b'{"room":"lobby","type":"msg","data":[1,-1.5e309]}',
                  b'{"room":"lobby","type":"button","data":1' + b"0" * 400 + b'.5}',
                  b'{"room":"lobby","type":"transform","data":{"pos":{"x":1e400}}}',
                  b'{"room":"lobby","type":"transform","data":{"rot":{"z":NaN}}}',
                  b'{"system":"ping","time":Infinity}')
        for frame in frames:
            alice.send_raw(frame)
            self.assertEqual(await alice.code(), 400, frame)
        # In a binary frame in UTF-16 (read with encoding detection) as well.
        alice.send_raw('{"room":"lobby","type":"msg","data":NaN}'.encode("utf-16"), binary=True)
        self.assertEqual(await alice.code(), 400)
        carol = await self.client()
        carol.send_raw(b'{"system":"login","options":{"user":"carol","pass":1e999}}')
        self.assertEqual(await carol.code(), 400)
        # Large finite numbers are numbers like any other.
        alice.send_raw(b'{"room":"lobby","type":"msg","data":[1.5e308,-2e-400]}')
        for client in (alice, bob):
            self.assertEqual(await room_events(client, 1), [("alice", "msg", [1.5e308, -0.0])])
        await self.quiet(alice, bob)
        dave = await self.client("dave")
        self.assertEqual(summary(await dave.next()), [("alice", "msg", [1.5e308, -0.0])])
        self.assertEqual([e for e in await self.recorded() if e[0] in ("msg", "button")],
                         [("msg", "alice", "lobby", [1.5e308, -0.0])])

    async def test_a_pose_coordinate_too_large_for_a_float_is_a_bad_pose(self):
        alice, bob = await self.start_logged("alice", "bob")
        huge = b"4" * 401
        for frame in (b'{"room":"lobby","type":"transform","data":{"pos":{"x":%s}}}' % huge,
                      b'{"room":"lobby","type":"transform","data":{"rot":{"z":-%s}}}' % huge):
            alice.send_raw(frame)
            self.assertEqual(await alice.code(), 400, frame)
        # A number that fits is taken; nothing was logged as an error (trial
        # would fail the test for a logged failure).
        alice.send_raw(b'{"room":"lobby","type":"transform","data":{"pos":{"x":1%s}}}'
                       % (b"0" * 300))
        alice.send({"system": "ping"})
        self.assertEqual(await alice.code(), 220)
        lobby = self.server.factory("vr").rooms.rooms["lobby"]
        self.assertEqual(lobby.members["alice"].pose_entry["data"]["pos"]["x"], 1e300)
        await self.quiet(alice, bob)

    async def test_nul_in_chat_data_is_relayed_and_stored_escaped(self):
        alice, bob = await self.start_logged("alice", "bob")
        alice.send_raw(b'{"room":"lobby","type":"msg","data":{"text":"a\\u0000b"}}')
        for client in (alice, bob):
            self.assertEqual(await room_events(client, 1),
                             [("alice", "msg", {"text": "a\x00b"})])
        # A NUL password is a password like any other.
        carol = await self.client()
        carol.send_raw(b'{"system":"login","options":{"user":"carol","pass":"p\\u0000"}}')
        self.assertEqual(await carol.code(), 202)
        self.assertIn(("msg", "alice", "lobby", {"text": "a\x00b"}), await self.recorded())


class SQLiteInputTests(InputTestsMixin, VRTestCase):
    def database_url(self) -> str:
        return sqlite_url(self)


class PostgresInputTests(InputTestsMixin, VRTestCase):
    def database_url(self) -> str:
        return postgres_url(self)


class StorableTests(unittest.TestCase):
    def test_storable(self):
        from gtserver.vr.rooms import storable
        for text in ("", "lobby", "é", "\U0001F600"):
            self.assertTrue(storable(text), text)
        for text in ("\x00", "a\x00", "é\x00", "\ud800", "a\udfff"):
            self.assertFalse(storable(text), text)
