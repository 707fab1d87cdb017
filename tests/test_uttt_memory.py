"""The ultimate tic-tac-toe listener in memory: real Autobahn clients joined
to the listener's factory by :mod:`tests.memory`, the core on a clock that
moves only when a test advances it. "Nothing more arrives" is an assertion
on what a client holds after every connection went quiet, never a wait.
The end-to-end tests over real sockets are in :mod:`tests.test_uttt`."""

from __future__ import annotations

import calendar
import json
import time
from typing import Any

from twisted.internet.defer import ensureDeferred, fail
from twisted.trial import unittest

from gtserver.core.accounts import DAY
from gtserver.store import StoreUnavailable, Unstorable
from gtserver.store import matches as match_queries
from gtserver.store.base import Statement
from tests.memory import JSONClient, MemoryDaemon
from tests.support import select_events
from tests.test_uttt import (
    HeldStore,
    challenge,
    move_frame,
    moves_until_a_drawn_sub_board,
    play,
    scripted_game,
)


class UtttClient(JSONClient):
    """The memory twin of :class:`tests.test_uttt.UtttClient`: the same calls,
    answered from what has arrived after a flush."""

    session: str

    def send(self, kind: str, data: Any = None) -> None:
        self.sendMessage(json.dumps({"type": kind, "data": data or {}}).encode("utf-8"))

    async def receive(self) -> dict:
        return self.take()

    async def expect(self, kind: str) -> dict:
        message = self.take()
        if message["type"] != kind:
            raise AssertionError(f"expected {kind}, got {message}")
        return message["data"]

    async def nothing_more(self) -> None:
        self.assert_nothing_more()

    async def disconnect(self) -> None:
        self.drop()


async def connect(testcase: unittest.TestCase, server: MemoryDaemon) -> UtttClient:
    return server.connect("uttt", UtttClient)


async def login(testcase: unittest.TestCase, server: MemoryDaemon, name: str,
                password: str = "pw", matches: int = 0) -> tuple[UtttClient, dict]:
    """Log in and read the greeting; returns the client and its elo_update."""
    client = await connect(testcase, server)
    client.send("login", {"name": name, "pw": password})
    response = await client.expect("login_response")
    testcase.assertTrue(response["success"], response)
    client.session = response["id"]
    standing = await client.expect("elo_update")
    if response["registered"]:
        await client.expect("friends_update")
    for _ in range(matches):
        await client.expect("match_update")
    return client, standing


async def close_code(client: UtttClient) -> int | None:
    return client.closed_with()


class MemoryMixin:
    """``serve`` starts a memory daemon with the uttt listener as ``self.server``."""

    store_delay = False

    async def serve(self, *arguments: str) -> MemoryDaemon:
        self.server = MemoryDaemon(self, *arguments, listeners=("uttt",),
                                   store_delay=self.store_delay)
        self.clock = self.server.clock
        self.core = self.server.core
        return self.server

    async def until(self, condition: Any) -> None:
        """``condition()`` holds once every connection went quiet."""
        self.server.flush()
        self.assertTrue(condition())

    async def users(self, *names: str) -> list[UtttClient]:
        return [(await login(self, self.server, name))[0] for name in names]


class IdentityTests(MemoryMixin, unittest.TestCase):
    async def test_wrong_password_is_answered_then_closed(self):
        await self.serve()
        await login(self, self.server, "alice", "secret")
        client = await connect(self, self.server)
        client.send("login", {"name": "alice", "pw": "wrong"})
        response = await client.expect("login_response")
        self.assertFalse(response["success"])
        self.assertTrue(response["msg"])
        await client.closed

    async def test_bad_names_are_refused(self):
        await self.serve()
        for name in ("ab", "a" * 17, "has space", "émile", 42, None, "alice\n", "bob\r\n"):
            client = await connect(self, self.server)
            client.send("login", {"name": name, "pw": "pw"})
            self.assertFalse((await client.expect("login_response"))["success"])
            await client.closed

    async def test_first_frame_must_identify(self):
        await self.serve()
        client = await connect(self, self.server)
        client.send("match_request", {"player": None})
        response = await client.expect("login_response")
        self.assertFalse(response["success"])
        await client.closed

    async def test_database_down_gets_an_error_reply_and_keeps_the_connection(self):
        await self.serve()
        [alice] = await self.users("alice")
        store = self.server.store
        working_run = store.run

        def unavailable(*arguments, **keywords):
            return fail(StoreUnavailable("database down"))

        store.run = unavailable
        alice.send("friend_request", {"user": "bob"})
        self.assertIn("database", (await alice.expect("error"))["msg"])
        store.run = working_run
        alice.send("friend_request", {"user": "alice"})
        self.assertFalse((await alice.expect("friend_request_response"))["success"])

    async def test_text_the_store_cannot_hold_is_bad_input_not_an_outage(self):
        await self.serve()
        [alice] = await self.users("alice")
        store = self.server.store
        working_run = store.run

        def unstorable(*arguments, **keywords):
            return fail(Unstorable("text the database cannot hold"))

        store.run = unstorable
        alice.send("friend_request", {"user": "bob"})
        self.assertEqual((await alice.expect("error"))["msg"],
                         "the request holds text the server cannot store")
        client = await connect(self, self.server)
        client.send("login", {"name": "carol", "pw": "pw"})
        response = await client.expect("login_response")
        self.assertEqual((response["success"], response["msg"]),
                         (False, "the name or password holds text the server cannot store"))
        store.run = working_run
        alice.send("friend_request", {"user": "alice"})
        self.assertFalse((await alice.expect("friend_request_response"))["success"])

    async def test_malformed_frames_get_error_replies(self):
        await self.serve()
        client = await connect(self, self.server)
        for payload in (b"{nope", b"[1, 2]", b'{"data": {}}', b'{"type": "login", "data": 3}',
                        b"\xff\xfe"):
            client.sendMessage(payload)
            self.assertEqual((await client.receive())["type"], "error")
        client.sendMessage(b'{"type": "login", "data": {}}\xff', isBinary=True)
        self.assertEqual((await client.receive())["type"], "error")
        client.send("login", {"name": "alice", "pw": "pw"})
        self.assertTrue((await client.expect("login_response"))["success"])
        await client.expect("elo_update")
        await client.expect("friends_update")
        client.sendMessage(b"not json")
        self.assertIn("msg", await client.expect("error"))
        client.send("no_such_request", {"x": 1})      # ignored
        client.send("match_states_request")
        client.send("friend_request", {"user": "nobody"})
        self.assertFalse((await client.expect("friend_request_response"))["success"])
        client.sendMessage(b"x" * (70 * 1024))
        self.assertIn("too large", (await client.expect("error"))["msg"])
        client.send("match_request", {"player": 5})
        self.assertFalse((await client.expect("match_request_response"))["success"])

    async def test_reconnect(self):
        await self.serve()
        alice, _ = await login(self, self.server, "alice")
        client = await connect(self, self.server)
        client.send("reconnect", {"id": alice.session})
        self.assertEqual(await client.expect("reconnect_response"),
                         {"success": True, "id": alice.session, "user": "alice",
                          "registered": True, "msg": "reconnected"})
        await client.expect("elo_update")
        await client.expect("friends_update")

        stranger = await connect(self, self.server)
        stranger.send("reconnect", {"id": "made-up"})
        self.assertFalse((await stranger.expect("reconnect_response"))["success"])
        # the connection stays usable for a login
        stranger.send("login", {"name": "bob", "pw": "pw"})
        self.assertTrue((await stranger.expect("login_response"))["success"])
        await stranger.expect("elo_update")
        await stranger.expect("friends_update")

    async def test_frames_after_a_refused_login_are_not_handled(self):
        await self.serve()
        await login(self, self.server, "alice", "secret")
        for first in (("login", {"name": "alice", "pw": "wrong"}), ("hello", {})):
            client = await connect(self, self.server)
            client.send(*first)
            client.send("login", {"name": "carol", "pw": "pw"})   # same write, queued
            self.assertFalse((await client.expect("login_response"))["success"])
            await client.closed
            self.assertEqual(list(client.inbox), [])
            self.assertIsNone(await self.server.core.accounts.user("carol"))

    async def test_a_new_login_keeps_older_sessions(self):
        await self.serve()
        first, _ = await login(self, self.server, "alice")
        second, _ = await login(self, self.server, "alice")
        self.assertNotEqual(first.session, second.session)
        await first.disconnect()
        await second.disconnect()
        for session in (first.session, second.session):
            client = await connect(self, self.server)
            client.send("reconnect", {"id": session})
            response = await client.expect("reconnect_response")
            self.assertEqual((response["success"], response["id"], response["user"]),
                             (True, session, "alice"))

    async def test_login_registers_then_greets(self):
        await self.serve()
        client = await connect(self, self.server)
        client.send("login", {"name": "Alice", "pw": "secret"})
        response = await client.expect("login_response")
        self.assertEqual(response["success"], True)
        self.assertEqual(response["registered"], True)
        self.assertIsInstance(response["id"], str)
        self.assertGreaterEqual(len(response["id"]), 32)
        self.assertEqual(await client.expect("elo_update"),
                         {"elo": 1000, "rank": 1, "top_names": ["alice"], "top_elos": [1000]})
        self.assertEqual(await client.expect("friends_update"), {"friends": [], "elos": []})
        await client.nothing_more()
        user = await self.server.core.accounts.user("alice")
        self.assertFalse(user.temporary)

    async def test_temporary_users(self):
        await self.serve()
        client = await connect(self, self.server)
        client.send("temp_session", {"name": "Guest1"})
        response = await client.expect("login_response")
        self.assertEqual((response["success"], response["registered"]), (True, False))
        standing = await client.expect("elo_update")
        self.assertEqual((standing["elo"], standing["rank"]), (None, None))
        await client.nothing_more()   # no friends_update for temporary users
        client.send("friend_request", {"user": "guest1"})
        self.assertFalse((await client.expect("friend_request_response"))["success"])

        # an empty password is a temporary login too; a live temporary name is taken
        other = await connect(self, self.server)
        other.send("login", {"name": "guest2", "pw": ""})
        self.assertEqual((await other.expect("login_response"))["registered"], False)
        taken = await connect(self, self.server)
        taken.send("login", {"name": "guest1", "pw": ""})
        self.assertFalse((await taken.expect("login_response"))["success"])
        await taken.closed


class MatchTests(MemoryMixin, unittest.TestCase):
    async def test_match_update_fields(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        before = self.clock.seconds()
        update = await challenge(self, alice, bob, "bob")
        self.assertEqual(set(update), {"id", "revoke_time", "ranked", "match_state"})
        self.assertIsInstance(update["id"], str)
        self.assertIs(update["ranked"], True)
        state = update["match_state"]
        self.assertEqual(set(state), {"complete_field", "global_field", "last_move",
                                      "game_over", "is_draw", "player_won", "active_player",
                                      "current_player", "player_a", "player_b"})
        self.assertEqual(state["global_field"], [[0] * 3 for _ in range(3)])
        self.assertEqual((state["last_move"], state["game_over"], state["is_draw"],
                          state["player_won"]), (None, False, False, None))
        # revoke_time: UTC, the idle limit (7 days) after the last change
        revoke = calendar.timegm(time.strptime(update["revoke_time"], "%Y-%m-%d %H:%M:%S"))
        self.assertLessEqual(int(before) + 7 * 86400, revoke)
        self.assertLessEqual(revoke, self.clock.seconds() + 7 * 86400)
        # complete_field[sub_y*3+y][sub_x*3+x]: sub-board column 2, row 0; cell column 1, row 2
        state = await play(self, update["id"], [alice, bob], [(2, 0, 1, 2)])
        marked = [(row, column) for row in range(9) for column in range(9)
                  if state["complete_field"][row][column]]
        self.assertEqual(marked, [(2, 7)])
        self.assertEqual(state["complete_field"][2][7], 1)
        self.assertEqual((state["current_player"], state["active_player"]), ("bob", "bob"))

    async def test_a_drawn_sub_board_is_3_in_the_global_field(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        update = await challenge(self, alice, bob, "bob")
        moves, (sub_x, sub_y) = moves_until_a_drawn_sub_board()
        state = await play(self, update["id"], [alice, bob], moves)
        self.assertEqual(state["global_field"][sub_y][sub_x], 3)
        self.assertFalse(state["game_over"])

    async def test_a_draw_between_unequal_ratings_scores_half(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        update = await challenge(self, alice, bob, "bob")
        await play(self, update["id"], [alice, bob], [(1, 1, 1, 1), (1, 1, 0, 0)])
        bob.send("end_match", {"id": update["id"]})
        await bob.expect("match_update")
        await alice.expect("match_update")
        self.assertEqual((await alice.expect("elo_update"))["elo"], 1010)
        self.assertEqual((await bob.expect("elo_update"))["elo"], 990)
        update = await challenge(self, alice, bob, "bob")
        final = await play(self, update["id"], [alice, bob], scripted_game("draw"))
        self.assertTrue(final["is_draw"])
        # 1010 vs 990: expected 0.5288, so 1010 + 20 * (0.5 - 0.5288) = 1009.42
        self.assertEqual((await alice.expect("elo_update"))["elo"], 1009)
        self.assertEqual((await bob.expect("elo_update"))["elo"], 991)

    async def test_random_queue(self):
        await self.serve()
        alice, bob, carol = await self.users("alice", "bob", "carol")
        alice.send("match_request", {"player": None})
        response = await alice.expect("match_request_response")
        self.assertTrue(response["success"])
        alice.send("match_request", {"player": None})
        self.assertFalse((await alice.expect("match_request_response"))["success"])

        bob.send("match_request", {"player": None})
        update = await bob.expect("match_update")
        self.assertEqual(await alice.expect("match_update"), update)
        self.assertTrue((await bob.expect("match_request_response"))["success"])
        state = update["match_state"]
        self.assertEqual((state["player_a"], state["current_player"]), ("alice", "alice"))

        # a user who disconnects leaves the queue
        carol.send("match_request", {"player": None})
        await carol.expect("match_request_response")
        await carol.disconnect()
        dave, _ = await login(self, self.server, "dave")
        dave.send("match_request", {"player": None})
        self.assertEqual((await dave.expect("match_request_response"))["msg"],
                         "waiting for an opponent")

    async def test_aborting_after_both_moved_loses_a_ranked_match(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        update = await challenge(self, alice, bob, "bob")
        await play(self, update["id"], [alice, bob], [(1, 1, 1, 1), (1, 1, 0, 0)])
        alice.send("end_match", {"id": update["id"]})
        ended = await alice.expect("match_update")
        await bob.expect("match_update")
        self.assertEqual(ended["match_state"]["player_won"], "bob")
        self.assertEqual((await alice.expect("elo_update"))["elo"], 990)
        self.assertEqual((await bob.expect("elo_update"))["elo"], 1010)

    async def test_temporary_players_are_not_ranked(self):
        await self.serve()
        alice, _ = await login(self, self.server, "alice")
        guest = await connect(self, self.server)
        guest.send("temp_session", {"name": "guest"})
        await guest.expect("login_response")
        await guest.expect("elo_update")
        update = await challenge(self, guest, alice, "alice")
        self.assertFalse(update["ranked"])
        await play(self, update["id"], [guest, alice], [(1, 1, 1, 1), (1, 1, 0, 0)])
        guest.send("end_match", {"id": update["id"]})
        await guest.expect("match_update")
        await alice.expect("match_update")
        self.assertEqual((await guest.expect("elo_update"))["elo"], None)
        self.assertEqual((await alice.expect("elo_update"))["elo"], 1000)

    async def test_two_sockets_of_one_user_get_every_push(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        second = await connect(self, self.server)
        second.send("reconnect", {"id": alice.session})
        await second.expect("reconnect_response")
        await second.expect("elo_update")
        await second.expect("friends_update")
        third, _ = await login(self, self.server, "alice")      # another session, same user
        bob.send("match_request", {"player": "alice"})
        update = await bob.expect("match_update")
        for socket in (alice, second, third):
            self.assertEqual(await socket.expect("match_update"), update)
        await bob.expect("match_request_response")
        bob.send("move", move_frame(update["id"], (0, 0, 1, 1)))
        await bob.expect("match_update")
        for socket in (alice, second, third):
            await socket.expect("match_update")
        second.send("move", move_frame(update["id"], (1, 1, 0, 0)))
        moved = await second.expect("match_update")
        self.assertEqual(moved["match_state"]["current_player"], "bob")
        for socket in (alice, third, bob):
            self.assertEqual(await socket.expect("match_update"), moved)
        # one socket closing keeps alice in the random queue
        alice.send("match_request", {"player": None})
        await alice.expect("match_request_response")
        await third.disconnect()
        carol, _ = await login(self, self.server, "carol")
        carol.send("match_request", {"player": None})
        self.assertEqual((await carol.expect("match_update"))["match_state"]["player_a"],
                         "alice")

    async def test_full_game_to_a_draw(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        update = await challenge(self, alice, bob, "bob")
        final = await play(self, update["id"], [alice, bob], scripted_game("draw"))
        self.assertEqual((final["game_over"], final["is_draw"], final["player_won"]),
                         (True, True, None))
        self.assertTrue(all(cell for row in final["global_field"] for cell in row))
        self.assertEqual((await alice.expect("elo_update"))["elo"], 1000)
        self.assertEqual((await bob.expect("elo_update"))["elo"], 1000)
        alice.send("match_states_request")
        await alice.nothing_more()

    async def test_login_and_match_states_list_every_open_match(self):
        await self.serve()
        alice, bob, carol = await self.users("alice", "bob", "carol")
        first = await challenge(self, alice, bob, "bob")
        second = await challenge(self, carol, alice, "alice")
        again = await connect(self, self.server)
        again.send("login", {"name": "alice", "pw": "pw"})
        self.assertTrue((await again.expect("login_response"))["success"])
        await again.expect("elo_update")
        await again.expect("friends_update")
        self.assertEqual([(await again.expect("match_update"))["id"] for _ in range(2)],
                         [first["id"], second["id"]])
        await again.nothing_more()
        again.send("match_states_request")
        self.assertEqual([await again.expect("match_update") for _ in range(2)],
                         [first, second])
        await again.nothing_more()

    async def test_the_default_limit_is_five_open_matches(self):
        await self.serve()
        names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]
        clients = dict(zip(names, await self.users(*names), strict=True))
        for opponent in names[1:6]:
            await challenge(self, clients["alice"], clients[opponent], opponent)
        clients["grace"].send("match_request", {"player": "alice"})
        response = await clients["grace"].expect("match_request_response")
        self.assertFalse(response["success"])
        self.assertIn("alice has too many open matches (at most 5)", response["msg"])
        await clients["alice"].nothing_more()

    async def test_match_request_refusals(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        for target, reason in (("alice", "yourself"), ("nobody", "no user"), ("ALICE", "")):
            alice.send("match_request", {"player": target})
            response = await alice.expect("match_request_response")
            self.assertFalse(response["success"])
            self.assertIn(reason, response["msg"])
        await challenge(self, alice, bob, "bob")
        for first, second in ((alice, "bob"), (bob, "alice")):
            first.send("match_request", {"player": second})
            self.assertIn("already", (await first.expect("match_request_response"))["msg"])
        await alice.nothing_more()
        await bob.nothing_more()

    async def test_open_match_limit_applies_to_both_players(self):
        await self.serve("--uttt-max-open-matches", "2")
        alice, bob, carol, dave = await self.users("alice", "bob", "carol", "dave")
        await challenge(self, alice, bob, "bob")
        await challenge(self, alice, carol, "carol")
        alice.send("match_request", {"player": "dave"})
        self.assertIn("too many", (await alice.expect("match_request_response"))["msg"])
        dave.send("match_request", {"player": "alice"})
        self.assertIn("alice has too many",
                      (await dave.expect("match_request_response"))["msg"])
        alice.send("match_request", {"player": None})
        self.assertFalse((await alice.expect("match_request_response"))["success"])
        await dave.nothing_more()

    async def test_refused_moves_get_the_unchanged_state(self):
        await self.serve()
        alice, bob, carol = await self.users("alice", "bob", "carol")
        update = await challenge(self, alice, bob, "bob")
        match_id = update["id"]
        unchanged = update

        async def refused(client, move, **override):
            frame = {**move_frame(match_id, move), **override}
            client.send("move", frame)
            self.assertEqual(await client.expect("match_update"), unchanged)

        await refused(bob, (0, 0, 0, 0))                    # not bob's turn
        await refused(alice, (0, 0, 0, 0), x="3")           # out of range
        await refused(alice, (0, 0, 0, 0), y="a")           # not a number
        await refused(alice, (0, 0, 0, 0), sub_x=None)      # missing
        await refused(alice, (0, 0, 0, 0), x="\u00b2")       # a digit int() does not read
        await refused(alice, (0, 0, 0, 0), y=[1])           # not a number at all
        await refused(alice, (0, 0, 0, 0), x=True)          # a boolean is not 1
        alice.send("move", move_frame(match_id, (1, 1, 2, 0), as_text=False))
        unchanged = await alice.expect("match_update")
        await bob.expect("match_update")
        await refused(bob, (0, 0, 0, 0))                    # wrong sub-board (must be 2,0)
        bob.send("move", move_frame(match_id, (2, 0, 1, 1)))
        unchanged = await bob.expect("match_update")
        await alice.expect("match_update")
        await refused(alice, (0, 0, 0, 0))                  # wrong sub-board (must be 1,1)
        await refused(alice, (1, 1, 2, 0))                  # occupied cell
        carol.send("move", move_frame(match_id, (1, 1, 0, 0)))
        self.assertEqual((await carol.expect("error"))["request"], "move")
        alice.send("move", move_frame("no-such-match", (1, 1, 0, 0)))
        await alice.expect("error")
        await bob.nothing_more()
        state = unchanged["match_state"]
        self.assertEqual(sum(cell != 0 for row in state["complete_field"] for cell in row), 2)

    async def test_a_reply_sent_while_the_move_is_stored_is_told_after_it(self):
        """The next move of a match may arrive while the previous one is still
        being stored: it waits, and both players see the state after the first
        move before the state after the reply (each stored before it is told)."""
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        match_id = (await challenge(self, alice, bob, "bob"))["id"]
        ultimate = self.server.factory("uttt").service
        service = ultimate.match_store
        match = service.get(match_id)
        held = HeldStore(service.writer.store)
        service.writer.store = held
        alice.send("move", move_frame(match_id, (0, 0, 1, 1)))
        self.server.flush()
        self.assertTrue(held.held)
        bob.send("move", move_frame(match_id, (1, 1, 0, 0)))   # legal once alice's is in
        self.server.flush()
        self.assertTrue(ultimate.locks[match.id].waiting)
        self.assertEqual((alice.pending(), bob.pending()), ([], []))
        service.writer.store = held.store
        held.release()
        first = await alice.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), first)
        second = await bob.expect("match_update")
        self.assertEqual(await alice.expect("match_update"), second)
        marks = [sum(cell != 0 for row in update["match_state"]["complete_field"] for cell in row)
                 for update in (first, second)]
        self.assertEqual(marks, [1, 2])
        self.assertEqual(first["match_state"]["last_move"],
                         {"sub_x": 0, "sub_y": 0, "x": 1, "y": 1})
        self.assertEqual(second["match_state"]["last_move"],
                         {"sub_x": 1, "sub_y": 1, "x": 0, "y": 0})
        await alice.nothing_more()
        await bob.nothing_more()

    async def test_the_operators_end_waits_for_the_move_being_stored(self):
        """Ending a match for the operator (the web monitor) is a change like a
        move: it waits for the match's lock, is stored, then told, and rates
        nobody."""
        await self.serve()
        (alice, alice_standing), (bob, bob_standing) = [
            await login(self, self.server, name) for name in ("alice", "bob")]
        match_id = (await challenge(self, alice, bob, "bob"))["id"]
        ultimate = self.server.factory("uttt").service
        service = ultimate.match_store
        held = HeldStore(service.writer.store)
        service.writer.store = held
        alice.send("move", move_frame(match_id, (0, 0, 1, 1)))
        self.server.flush()
        self.assertTrue(held.held)
        ended = ensureDeferred(ultimate.end_by_operator(match_id))
        self.server.flush()
        self.assertTrue(ultimate.locks[match_id].waiting)
        self.assertFalse(ended.called)
        service.writer.store = held.store
        held.release()
        moved = await alice.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), moved)
        self.assertFalse(moved["match_state"]["game_over"])
        final = await alice.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), final)
        self.assertTrue(final["match_state"]["game_over"])
        self.assertIsNone(final["match_state"]["player_won"])
        for client, standing in ((alice, alice_standing), (bob, bob_standing)):
            self.assertEqual((await client.expect("elo_update"))["elo"], standing["elo"])
        match = self.successResultOf(ended)
        self.assertEqual((match.aborted_by, match.extra["end"], match.moves),
                         (-1, "ended by the operator", 1))
        self.assertNotIn(match_id, ultimate.open)
        rated = await self.server.store.run(rating_rows, match_id)
        self.assertEqual(rated, [])

    async def test_end_match_before_both_moved_is_not_rated(self):
        await self.serve()
        alice, bob, carol = await self.users("alice", "bob", "carol")
        update = await challenge(self, alice, bob, "bob")
        carol.send("end_match", {"id": update["id"]})
        await carol.expect("error")
        alice.send("move", move_frame(update["id"], (0, 0, 1, 1)))
        await alice.expect("match_update")
        await bob.expect("match_update")
        alice.send("end_match", {"id": update["id"]})
        ended = await alice.expect("match_update")
        self.assertEqual(await bob.expect("match_update"), ended)
        state = ended["match_state"]
        self.assertEqual((state["game_over"], state["player_won"], state["is_draw"]),
                         (True, None, False))
        self.assertEqual((await alice.expect("elo_update"))["elo"], 1000)
        self.assertEqual((await bob.expect("elo_update"))["elo"], 1000)
        alice.send("match_states_request")
        await alice.nothing_more()

    async def test_friends(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        second = await connect(self, self.server)
        second.send("reconnect", {"id": alice.session})
        for kind in ("reconnect_response", "elo_update", "friends_update"):
            await second.expect(kind)
        alice.send("friend_request", {"user": "Bob"})
        self.assertTrue((await alice.expect("friend_request_response"))["success"])
        expected = {"friends": ["bob"], "elos": [1000]}
        self.assertEqual(await alice.expect("friends_update"), expected)
        self.assertEqual(await second.expect("friends_update"), expected)
        for name in ("bob", "alice", "nobody"):
            alice.send("friend_request", {"user": name})
            self.assertFalse((await alice.expect("friend_request_response"))["success"])
        guest = await connect(self, self.server)
        guest.send("temp_session", {"name": "guest"})
        await guest.expect("login_response")
        alice.send("friend_request", {"user": "guest"})
        self.assertFalse((await alice.expect("friend_request_response"))["success"])
        await bob.nothing_more()

        again, _ = await login(self, self.server, "alice", matches=0)
        # login() consumed the friends_update; check its content through a reconnect
        third = await connect(self, self.server)
        third.send("reconnect", {"id": again.session})
        await third.expect("reconnect_response")
        await third.expect("elo_update")
        self.assertEqual(await third.expect("friends_update"), expected)

        alice.send("unfriend_request", {"user": "bob"})
        self.assertTrue((await alice.expect("unfriend_request_response"))["success"])
        self.assertEqual(await alice.expect("friends_update"), {"friends": [], "elos": []})
        alice.send("unfriend_request", {"user": "bob"})
        self.assertFalse((await alice.expect("unfriend_request_response"))["success"])


class OverlappingRequestTests(MemoryMixin, unittest.TestCase):
    """Store results arrive a turn later, so requests sent together overlap."""

    store_delay = True

    async def test_simultaneous_requests_respect_the_limits(self):
        await self.serve("--uttt-max-open-matches", "2")
        alice, bob, carol, dave = await self.users("alice", "bob", "carol", "dave")
        # Both challenge each other at the same moment: one match, one refusal.
        alice.send("match_request", {"player": "bob"})
        bob.send("match_request", {"player": "alice"})
        frames = [await alice.receive(), await alice.receive(), await bob.receive(),
                  await bob.receive()]
        updates = {frame["data"]["id"] for frame in frames if frame["type"] == "match_update"}
        answers = sorted(frame["data"]["success"] for frame in frames
                         if frame["type"] == "match_request_response")
        self.assertEqual((len(updates), answers), (1, [False, True]))
        await alice.nothing_more()
        await bob.nothing_more()
        # Two requests that each fit alone but not together: only one match.
        carol.send("match_request", {"player": "alice"})
        dave.send("match_request", {"player": "alice"})
        await alice.expect("match_update")
        first = {"carol": await carol.receive(), "dave": await dave.receive()}
        winner = "carol" if first["carol"]["type"] == "match_update" else "dave"
        loser = "dave" if winner == "carol" else "carol"
        self.assertEqual(first[loser]["type"], "match_request_response")
        self.assertIn("alice has too many", first[loser]["data"]["msg"])
        clients = {"carol": carol, "dave": dave}
        self.assertTrue((await clients[winner].expect("match_request_response"))["success"])
        await alice.nothing_more()
        await clients[loser].nothing_more()

    async def test_concurrent_moves_on_one_match(self):
        await self.serve()
        alice, bob = await self.users("alice", "bob")
        second = await connect(self, self.server)
        second.send("reconnect", {"id": alice.session})
        for kind in ("reconnect_response", "elo_update", "friends_update"):
            await second.expect(kind)
        update = await challenge(self, alice, bob, "bob")
        await second.expect("match_update")
        # alice's two sockets and bob all move at once: exactly one move counts
        alice.send("move", move_frame(update["id"], (0, 0, 0, 0)))
        second.send("move", move_frame(update["id"], (2, 2, 2, 2)))
        bob.send("move", move_frame(update["id"], (1, 1, 1, 1)))
        # Five frames in all: the accepted move reaches the three sockets, and
        # each of the two refused ones gets the unchanged state back.
        clients = (alice, second, bob)
        self.assertEqual(sum(len(client.pending()) for client in clients), 5)
        frames = [frame for client in (alice, second, bob) for frame in client.inbox]
        fields = [frame["data"]["match_state"]["complete_field"] for frame in frames]
        marks = {sum(cell != 0 for row in field for cell in row) for field in fields}
        self.assertLessEqual(marks, {0, 1})
        final = fields[-1] if fields else None
        matches = self.server.factory("uttt").service
        game = matches.open[update["id"]].game
        self.assertEqual(sum(cell != 0 for row in game.field for cell in row), 1)
        self.assertIsNotNone(final)


class ClockTests(MemoryMixin, unittest.TestCase):
    """Expiry of temporary sessions and idle matches as the clock moves."""

    async def serve(self, *arguments: str) -> MemoryDaemon:
        """Temporary users expire after an idle hour, checked every 600 s."""
        return await super().serve("--temporary-idle", "3600", "--expiry-interval", "600",
                                   *arguments)

    async def test_temporary_session_expires_after_an_idle_hour(self):
        await self.serve()
        guest = await connect(self, self.server)
        guest.send("temp_session", {"name": "guest"})
        session = (await guest.expect("login_response"))["id"]
        await guest.expect("elo_update")
        await guest.disconnect()

        self.clock.advance(3000)
        again = await connect(self, self.server)
        again.send("reconnect", {"id": session})
        self.assertTrue((await again.expect("reconnect_response"))["success"])
        await again.expect("elo_update")
        await again.disconnect()

        # an hour after its last use the session is gone, and the expiry timer
        # (every 600 s) deletes the user, freeing the name
        self.clock.advance(3601)

        self.server.flush()
        self.assertIsNone(await self.core.accounts.user("guest"))
        late = await connect(self, self.server)
        late.send("reconnect", {"id": session})
        self.assertFalse((await late.expect("reconnect_response"))["success"])
        late.send("temp_session", {"name": "guest"})
        self.assertTrue((await late.expect("login_response"))["success"])
        await late.expect("elo_update")

    async def test_idle_match_is_lost_by_the_player_to_move(self):
        await self.serve("--uttt-match-idle-days", "2", "--uttt-expiry-interval", "3600")
        alice, _ = await login(self, self.server, "alice")
        bob, _ = await login(self, self.server, "bob")
        update = await challenge(self, alice, bob, "bob")
        self.assertEqual(update["revoke_time"], "2023-11-16 22:13:20")   # start + 2 days
        alice.send("move", move_frame(update["id"], (1, 1, 1, 1)))
        moved = await alice.expect("match_update")
        await bob.expect("match_update")
        self.assertEqual(moved["revoke_time"], "2023-11-16 22:13:20")

        self.clock.advance(2 * DAY - 3600)       # one check short of the deadline
        await alice.nothing_more()
        self.clock.advance(3600)
        ended = await bob.expect("match_update")
        self.assertEqual(await alice.expect("match_update"), ended)
        state = ended["match_state"]
        self.assertEqual((state["game_over"], state["player_won"]), (True, "alice"))
        self.assertEqual((await alice.expect("elo_update"))["elo"], 1010)
        self.assertEqual((await bob.expect("elo_update"))["elo"], 990)
        bob.send("match_states_request")
        await bob.nothing_more()
        # The research log says how it ended: the export's matches table reads it.
        await self.server.core.events.flush()
        [end] = await self.server.store.run(select_events, 0, 10, "uttt", ("match_end",))
        data = json.loads(end[-1])
        self.assertEqual((data["end"], data["forfeit"], data["aborted_by"]), ("expired", True, 1))

    async def test_each_move_restarts_the_idle_time(self):
        await self.serve("--uttt-match-idle-days", "2", "--uttt-expiry-interval", "3600")
        alice, _ = await login(self, self.server, "alice")
        bob, _ = await login(self, self.server, "bob")
        update = await challenge(self, alice, bob, "bob")
        self.assertEqual(update["revoke_time"], "2023-11-16 22:13:20")   # start + 2 days
        self.clock.advance(DAY)
        alice.send("move", move_frame(update["id"], (1, 1, 1, 1)))
        moved = await alice.expect("match_update")
        await bob.expect("match_update")
        self.assertEqual(moved["revoke_time"], "2023-11-17 22:13:20")    # the move + 2 days
        self.clock.advance(2 * DAY - 3600)       # past the first deadline, not the second
        await bob.nothing_more()
        self.clock.advance(3600)
        ended = await bob.expect("match_update")
        self.assertEqual(ended["match_state"]["player_won"], "alice")   # bob was to move

    async def test_matches_of_an_expired_temporary_user_end(self):
        # The idle-match check is a day away: only the account expiry can end it.
        await self.serve("--uttt-expiry-interval", str(DAY))
        alice, _ = await login(self, self.server, "alice")
        guest = await connect(self, self.server)
        guest.send("temp_session", {"name": "guest"})
        await guest.expect("login_response")
        await guest.expect("elo_update")
        update = await challenge(self, alice, guest, "guest")
        alice.send("move", move_frame(update["id"], (1, 1, 1, 1)))
        await alice.expect("match_update")
        await guest.expect("match_update")
        await guest.disconnect()

        self.clock.advance(3000)
        await alice.nothing_more()
        self.clock.advance(601)                  # the guest's hour is over
        ended = await alice.expect("match_update")
        self.assertEqual(ended["id"], update["id"])
        state = ended["match_state"]
        self.assertEqual((state["game_over"], state["is_draw"], state["player_won"]),
                         (True, False, "alice"))
        self.assertEqual(state["complete_field"][4][4], 1)
        self.assertEqual((await alice.expect("elo_update"))["elo"], 1000)   # not ranked
        self.assertIsNone(await self.core.accounts.user("guest"))
        self.assertEqual(await self.core.store.run(match_queries.open_matches, "uttt"), [])
        alice.send("match_states_request")
        await alice.nothing_more()

        # The name is free for someone new, who inherits nothing.
        newcomer = await connect(self, self.server)
        newcomer.send("temp_session", {"name": "guest"})
        self.assertTrue((await newcomer.expect("login_response"))["success"])
        await newcomer.expect("elo_update")
        await newcomer.nothing_more()
        alice.send("move", move_frame(update["id"], (1, 1, 0, 0)))
        self.assertTrue((await alice.expect("match_update"))["match_state"]["game_over"])

    async def test_matches_of_users_removed_while_down_end_on_the_next_check(self):
        await self.serve("--uttt-expiry-interval", "600")
        alice, _ = await login(self, self.server, "alice")
        bob, _ = await login(self, self.server, "bob")
        update = await challenge(self, alice, bob, "bob")
        await bob.disconnect()
        # bob's account disappears behind the running service's back
        await self.core.store.run(delete_user, "bob")

        self.clock.advance(600)
        ended = await alice.expect("match_update")
        self.assertEqual(ended["id"], update["id"])
        self.assertEqual(ended["match_state"]["player_won"], "alice")
        self.assertEqual((await alice.expect("elo_update"))["elo"], 1000)   # not rated
        self.assertEqual(await self.core.store.run(match_queries.open_matches, "uttt"), [])


def delete_user(name: str):
    yield Statement("DELETE FROM users WHERE name = ?", (name,))


def rating_rows(match_id: str):
    rows = yield Statement("SELECT user_id FROM rating_changes WHERE match_id = ?", (match_id,))
    return rows
