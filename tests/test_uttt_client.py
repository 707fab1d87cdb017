"""gtserver.uttt.client against a real daemon over real sockets."""

from __future__ import annotations

import random

from twisted.trial import unittest

from gtserver.uttt.client import (
    ConnectionClosed,
    MoveRefused,
    UtttClient,
    UtttError,
    legal_moves,
    mark_of,
)
from tests.support import start_server
from tests.wstimers import settle_websocket_timers


class UtttClientTests(unittest.TestCase):
    async def start(self, *arguments: str) -> None:
        self.addCleanup(settle_websocket_timers)
        self.server = await start_server(self, *arguments, listeners={"uttt": None})
        self.url = f"ws://127.0.0.1:{self.server.port('uttt')}/"

    async def client(self) -> UtttClient:
        client = await UtttClient.connect(self.url)
        self.addCleanup(client.abort)
        return client

    async def user(self, name: str, password: str = "pw") -> UtttClient:
        client = await self.client()
        await client.login(name, password)
        return client

    async def test_login_registers_and_greets(self):
        await self.start()
        client = await self.client()
        greeting = await client.login("Alice", "secret")
        self.assertEqual((greeting.user, greeting.registered, greeting.msg),
                         ("alice", True, "logged in"))
        self.assertEqual(greeting.elo, {"elo": 1000, "rank": 1, "top_names": ["alice"],
                                        "top_elos": [1000]})
        self.assertEqual(greeting.friends, {"friends": [], "elos": []})
        self.assertEqual(greeting.matches, [])
        self.assertEqual((client.user, client.session, client.registered),
                         ("alice", greeting.session, True))
        self.assertEqual(client.elo, greeting.elo)
        self.assertEqual(client.pending(), [])

    async def test_temporary_sessions(self):
        await self.start()
        for login in (lambda c: c.temp_session("Guest1"), lambda c: c.login("guest2", "")):
            client = await self.client()
            greeting = await login(client)
            self.assertFalse(greeting.registered)
            self.assertIsNone(greeting.friends)
            self.assertEqual(greeting.elo["elo"], None)
            refused = await self.assertFailure(client.friend("alice"), UtttError)
            self.assertFalse(refused.data["success"])

    async def test_refused_login_closes(self):
        await self.start()
        await self.user("alice", "right")
        client = await self.client()
        refused = await self.assertFailure(client.login("alice", "wrong"), UtttError)
        self.assertEqual(str(refused), "wrong name or password")
        self.assertEqual(await client.connection.when_closed(), 1000)
        self.assertIsNone(client.user)

    async def test_reconnect_resumes_the_session_with_its_matches(self):
        await self.start()
        alice, _bob = await self.user("alice"), await self.user("bob")
        await alice.match_request("bob")
        [match_id] = alice.matches
        client = await self.client()
        refused = await self.assertFailure(client.reconnect("no-such-session"), UtttError)
        self.assertEqual(refused.data["success"], False)
        # A refused reconnect leaves the connection open for another attempt.
        greeting = await client.reconnect(alice.session)
        self.assertEqual((greeting.user, greeting.session, greeting.registered),
                         ("alice", alice.session, True))
        self.assertEqual([m["id"] for m in greeting.matches], [match_id])
        self.assertEqual(client.open_matches(), greeting.matches)

    async def test_challenge_move_and_refusals(self):
        await self.start()
        alice, bob = await self.user("alice"), await self.user("bob")
        self.assertEqual(await alice.match_request("bob"), "match started")
        [match_id] = alice.matches
        pushed = await bob.next_match(match_id)
        self.assertEqual(pushed, alice.matches[match_id])
        self.assertEqual((mark_of(pushed, "alice"), mark_of(pushed, "bob")), (1, 2))
        self.assertEqual(len(legal_moves(pushed)), 81)
        update = await alice.move(match_id, 1, 1, 0, 2)
        self.assertEqual(update["match_state"]["complete_field"][5][3], 1)
        self.assertEqual(update["match_state"]["current_player"], "bob")
        self.assertEqual(await bob.next_match(match_id), update)
        # Bob must play in sub-board (0, 2); alice may not move twice.
        self.assertEqual({m[:2] for m in legal_moves(update)}, {(0, 2)})
        refused = await self.assertFailure(alice.move(match_id, 0, 2, 0, 0), MoveRefused)
        self.assertEqual(refused.update, update)
        refused = await self.assertFailure(bob.move(match_id, 1, 1, 0, 0), MoveRefused)
        self.assertEqual(refused.update, update)
        unknown = await self.assertFailure(bob.move("no-such-match", 0, 0, 0, 0), UtttError)
        self.assertNotIsInstance(unknown, MoveRefused)
        again = await self.assertFailure(alice.match_request("bob"), UtttError)
        self.assertFalse(again.data["success"])
        self.assertEqual([m["id"] for m in await bob.match_states()], [match_id])
        alice.pending()                 # the match's start, never taken
        ended = await bob.end_match(match_id)
        self.assertTrue(ended["match_state"]["game_over"])
        self.assertTrue((await alice.next_match(match_id))["match_state"]["game_over"])
        self.assertEqual(await bob.match_states(), [])
        self.assertEqual(alice.open_matches(), [])

    async def test_random_queue_and_a_game_to_the_end(self):
        await self.start()
        alice, bob = await self.user("alice"), await self.user("bob")
        self.assertEqual(await alice.match_request(None), "waiting for an opponent")
        self.assertEqual(await bob.match_request(None), "match started")
        update = await alice.next_match()
        match_id = update["id"]
        self.assertEqual(await bob.next_match(match_id), update)
        players = {"alice": alice, "bob": bob}
        # The one who waited moves first.
        self.assertEqual(update["match_state"]["current_player"], "alice")
        chooser = random.Random(13)
        while not update["match_state"]["game_over"]:
            mover = players[update["match_state"]["current_player"]]
            other = bob if mover is alice else alice
            update = await mover.move(match_id, *chooser.choice(legal_moves(update)))
            self.assertEqual(await other.next_match(match_id), update)
        self.assertEqual(legal_moves(update), [])
        # A ranked game: both get their new standing.
        for client in (alice, bob):
            standing = await client.next_push("elo_update")
            self.assertEqual(client.elo, standing)
        if not update["match_state"]["is_draw"]:
            winner = update["match_state"]["player_won"]
            self.assertGreater(players[winner].elo["elo"], 1000)

    async def test_friends(self):
        await self.start()
        alice, _bob = await self.user("alice"), await self.user("bob")
        self.assertEqual(await alice.friend("bob"), {"friends": ["bob"], "elos": [1000]})
        self.assertEqual(alice.friends, {"friends": ["bob"], "elos": [1000]})
        refused = await self.assertFailure(alice.friend("nobody"), UtttError)
        self.assertFalse(refused.data["success"])
        self.assertEqual(await alice.unfriend("bob"), {"friends": [], "elos": []})
        await self.assertFailure(alice.unfriend("bob"), UtttError)

    async def test_raw_frames_listeners_and_close(self):
        await self.start()
        alice = await self.user("alice")
        seen = []
        alice.listen(seen.append)
        alice.send("no_such_request")   # ignored after login, as the protocol says
        alice.send("match_request", {"player": 5})
        kind, data = await alice.next_push()
        self.assertEqual((kind, data["success"]), ("match_request_response", False))
        self.assertEqual(seen, [{"type": kind, "data": data}])
        self.assertEqual(await alice.close(), 1000)
        await self.assertFailure(alice.match_states(), ConnectionClosed)
