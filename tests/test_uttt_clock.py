"""Expiry of temporary sessions and idle matches, with the core on a task.Clock
and real Autobahn clients on real sockets."""

from __future__ import annotations

from dataclasses import replace

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from gtserver.core import Core
from gtserver.core.accounts import DAY, Lifetimes
from gtserver.core.passwords import PasswordHasher
from gtserver.core.settings import CoreSettings
from gtserver.registry import wire_protocols
from gtserver.service import GtserverService, ListenerService
from gtserver.store import matches as match_queries
from gtserver.store import open_store
from gtserver.store.base import Statement
from tests.support import LOOPBACK, parse_options, sqlite_url
from tests.test_uttt import (
    challenge,
    connect,
    login,
    move_frame,
    settle_websocket_timers,
    sleep,
)


async def eventually(check, limit: float = 5.0) -> None:
    waited = 0.0
    while not await check():
        if waited > limit:
            raise AssertionError("condition not reached")
        await sleep(0.02)
        waited += 0.02


class ClockedServerTests(unittest.TestCase):
    async def serve(self, *arguments: str) -> None:
        """The daemon's services with the core's time on ``self.clock``."""
        self.addCleanup(settle_websocket_timers)
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        options = parse_options("--port", "uttt=off", *arguments)
        store = open_store(sqlite_url(self), reactor)
        lifetimes = Lifetimes(temporary=3600.0, check_interval=600.0)
        settings = replace(CoreSettings.from_options(options), lifetimes=lifetimes)
        self.core = Core(store, self.clock, settings, PasswordHasher(log2_n=4))
        uttt = wire_protocols()["uttt"]
        factory = uttt.build_factory(self.core, uttt.settings(options))
        listener = ListenerService("uttt", "uttt", LOOPBACK, factory, reactor)
        service = GtserverService(store, self.core, [listener])
        service.startService()
        self.addCleanup(service.stopService)
        await service.started
        self.port = listener.port.getHost().port

    async def test_temporary_session_expires_after_an_idle_hour(self):
        await self.serve()
        guest = await connect(self, self.port)
        guest.send("temp_session", {"name": "guest"})
        session = (await guest.expect("login_response"))["id"]
        await guest.expect("elo_update")
        await guest.disconnect()

        self.clock.advance(3000)
        again = await connect(self, self.port)
        again.send("reconnect", {"id": session})
        self.assertTrue((await again.expect("reconnect_response"))["success"])
        await again.expect("elo_update")
        await again.disconnect()

        # an hour after its last use the session is gone, and the expiry timer
        # (every 600 s) deletes the user, freeing the name
        self.clock.advance(3601)

        async def user_gone():
            return await self.core.accounts.user("guest") is None

        await eventually(user_gone)
        late = await connect(self, self.port)
        late.send("reconnect", {"id": session})
        self.assertFalse((await late.expect("reconnect_response"))["success"])
        late.send("temp_session", {"name": "guest"})
        self.assertTrue((await late.expect("login_response"))["success"])
        await late.expect("elo_update")

    async def test_idle_match_is_lost_by_the_player_to_move(self):
        await self.serve("--uttt-match-idle-days", "2", "--uttt-expiry-interval", "3600")
        alice, _ = await login(self, self.port, "alice")
        bob, _ = await login(self, self.port, "bob")
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

    async def test_each_move_restarts_the_idle_time(self):
        await self.serve("--uttt-match-idle-days", "2", "--uttt-expiry-interval", "3600")
        alice, _ = await login(self, self.port, "alice")
        bob, _ = await login(self, self.port, "bob")
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
        alice, _ = await login(self, self.port, "alice")
        guest = await connect(self, self.port)
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
        newcomer = await connect(self, self.port)
        newcomer.send("temp_session", {"name": "guest"})
        self.assertTrue((await newcomer.expect("login_response"))["success"])
        await newcomer.expect("elo_update")
        await newcomer.nothing_more()
        alice.send("move", move_frame(update["id"], (1, 1, 0, 0)))
        self.assertTrue((await alice.expect("match_update"))["match_state"]["game_over"])

    async def test_matches_of_users_removed_while_down_end_on_the_next_check(self):
        await self.serve("--uttt-expiry-interval", "600")
        alice, _ = await login(self, self.port, "alice")
        bob, _ = await login(self, self.port, "bob")
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
