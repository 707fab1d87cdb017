"""Accounts and sessions on both store engines, with time driven by task.Clock.

The core's clock is a ``task.Clock`` (so lifetimes and the expiry timer are
driven by the test), while the store and the password hasher use the real
reactor's threads and sockets.
"""

from __future__ import annotations

from twisted.internet import reactor, task
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial import unittest

from gtserver.core import Core
from gtserver.core.accounts import DAY, Lifetimes
from gtserver.core.errors import BadCredentials, NameTaken, UnknownSession
from gtserver.core.passwords import PasswordHasher
from gtserver.core.settings import CoreSettings
from gtserver.store import Statement, open_store
from tests.pgcluster import postgres_url
from tests.support import sqlite_url

START = 1_000_000.0


def users_and_sessions():
    users = yield Statement("SELECT name FROM users ORDER BY name")
    sessions = yield Statement("SELECT COUNT(*) FROM sessions")
    return [row[0] for row in users], sessions[0][0]


def delete_session(token: str):
    """What leaves a temporary user without a session (a gone client's row removed)."""
    yield Statement("DELETE FROM sessions WHERE token = ?", (token,))


def password_hashes():
    rows = yield Statement("SELECT password_hash FROM users ORDER BY id")
    return [row[0] for row in rows]


class AccountTestsMixin:
    def make_url(self) -> str:
        raise NotImplementedError

    async def start_core(self, url: str | None = None) -> Core:
        self.url = url or getattr(self, "url", None) or self.make_url()
        store = open_store(self.url, reactor)
        await store.start()
        self.clock = task.Clock()
        self.clock.advance(START)
        core = Core(store, self.clock, CoreSettings(lifetimes=Lifetimes(
            account=45 * DAY, session=20 * DAY, temporary=3600.0, check_interval=3600.0)),
            PasswordHasher(log2_n=4))
        core.startService()

        async def stop() -> None:
            if core.running:
                await core.stopService()
            await store.close()

        self.addCleanup(lambda: ensureDeferred(stop()))
        self.core, self.accounts, self.store = core, core.accounts, store
        return core

    async def run_expiry_timer(self, seconds: float) -> None:
        """Advance the clock; wait for the expiry run the timer started."""
        before = self.accounts.expiry_run
        self.clock.advance(seconds)
        self.assertIsNot(self.accounts.expiry_run, before, "the expiry timer did not fire")
        await self.accounts.expiry_run

    async def test_register_and_authenticate(self):
        await self.start_core()
        user = await self.accounts.register("alice", "secret")
        self.assertEqual((user.name, user.temporary, user.created), ("alice", False, START))
        self.assertEqual(await self.accounts.authenticate("alice", "secret"), user)
        with self.assertRaises(NameTaken):
            await self.accounts.register("alice", "other")

    async def test_wrong_password_and_unknown_user(self):
        await self.start_core()
        await self.accounts.register("alice", "secret")
        with self.assertRaises(BadCredentials):
            await self.accounts.authenticate("alice", "Secret")
        with self.assertRaises(BadCredentials):
            await self.accounts.authenticate("nobody", "secret")
        with self.assertRaises(BadCredentials):
            await self.accounts.login("alice", "wrong")

    async def test_login_registers_unknown_names(self):
        await self.start_core()
        user, registered = await self.accounts.login("bob", "pw")
        self.assertTrue(registered)
        again, registered = await self.accounts.login("bob", "pw")
        self.assertEqual((again.id, registered), (user.id, False))

    async def test_hashes_are_salted_and_slow(self):
        await self.start_core()
        await self.accounts.register("alice", "same")
        await self.accounts.register("bob", "same")
        first, second = await self.store.run(password_hashes)
        self.assertNotEqual(first, second)
        self.assertTrue(first.startswith("scrypt$4$"))
        self.assertNotIn("same", first)

    async def test_temporary_users(self):
        await self.start_core()
        guest = await self.accounts.create_temporary("guest")
        self.assertTrue(guest.temporary)
        token = await self.accounts.open_session(guest)
        with self.assertRaises(NameTaken):
            await self.accounts.create_temporary("guest")
        with self.assertRaises(NameTaken):
            await self.accounts.register("guest", "pw")
        await self.accounts.register("alice", "pw")
        with self.assertRaises(NameTaken):
            await self.accounts.create_temporary("alice")
        with self.assertRaises(BadCredentials):
            await self.accounts.authenticate("guest", "")
        # A temporary name without a live session may be taken by a real account.
        await self.store.run(delete_session, token)
        user = await self.accounts.register("guest", "pw")
        self.assertFalse(user.temporary)

    async def test_sessions_resume(self):
        await self.start_core()
        user = await self.accounts.register("alice", "pw")
        token = await self.accounts.open_session(user)
        other = await self.accounts.open_session(user)
        self.assertNotEqual(token, other)
        self.assertGreaterEqual(len(token) * 6, 128)  # url-safe base64: 6 bits a character
        self.clock.advance(60)
        resumed = await self.accounts.resume(token)
        self.assertEqual((resumed.id, resumed.last_seen), (user.id, START + 60))
        for bad in ("", "not-a-token", None):
            with self.assertRaises(UnknownSession):
                await self.accounts.resume(bad)
        self.assertEqual((await self.accounts.resume(other)).name, "alice")

    async def test_temporary_session_expires_after_an_idle_hour(self):
        await self.start_core()
        guest = await self.accounts.create_temporary("guest")
        token = await self.accounts.open_session(guest)
        self.clock.advance(3000)
        await self.accounts.resume(token)  # use keeps it alive
        await self.run_expiry_timer(3000)  # first timer run, at START + 3600
        self.assertEqual(await self.store.run(users_and_sessions), (["guest"], 1))
        await self.run_expiry_timer(3600)  # 4200 s idle
        with self.assertRaises(UnknownSession):
            await self.accounts.resume(token)
        self.assertEqual(await self.store.run(users_and_sessions), ([], 0))

    async def test_sessions_and_accounts_expire_when_idle(self):
        await self.start_core()
        alice = await self.accounts.register("alice", "pw")
        token = await self.accounts.open_session(alice)
        await self.run_expiry_timer(19 * DAY)
        await self.accounts.resume(token)
        await self.run_expiry_timer(20 * DAY + 3600)
        with self.assertRaises(UnknownSession):
            await self.accounts.resume(token)
        self.assertEqual(await self.store.run(users_and_sessions), (["alice"], 0))
        await self.run_expiry_timer(25 * DAY)  # 45 days + since the last use
        self.assertEqual(await self.store.run(users_and_sessions), ([], 0))
        self.assertIsNone(await self.accounts.user("alice"))

    async def test_accounts_survive_a_restart(self):
        await self.start_core()
        alice = await self.accounts.register("alice", "pw")
        token = await self.accounts.open_session(alice)
        await self.core.stopService()
        await self.store.close()
        await self.start_core(self.url)
        self.assertEqual((await self.accounts.resume(token)).id, alice.id)
        self.assertEqual((await self.accounts.authenticate("alice", "pw")).id, alice.id)


    async def test_login_with_a_peer_and_a_name_rule(self):
        from gtserver.core.errors import InvalidName, Throttled
        from gtserver.core.login import LoginPolicy
        from gtserver.core.peers import Peer
        from gtserver.store import StoreUnavailable

        def lower_case(name):
            if not name.isalnum():
                raise InvalidName("letters and digits only")
            return name.lower()
        policy, lab = LoginPolicy(lower_case), Peer("10.0.0.1", 4000)
        await self.start_core()
        with self.assertRaises(InvalidName):
            await self.accounts.login("a b", "pw", lab, policy)
        user, registered = await self.accounts.login("Alice", "pw", lab, policy)
        self.assertEqual((user.name, registered), ("alice", True))
        for _ in range(5):
            with self.assertRaises(BadCredentials):
                await self.accounts.login("ALICE", "wrong", lab, policy)
        with self.assertRaises(Throttled):
            await self.accounts.login("alice", "pw", Peer("10.0.0.2", 1), policy)
        # The same address logs other people in, and registers new ones.
        self.assertTrue((await self.accounts.login("bob", "pw", lab, policy))[1])
        self.assertFalse((await self.accounts.login("bob", "pw", lab, policy))[1])
        self.clock.advance(300)
        self.assertEqual((await self.accounts.login("alice", "pw", lab, policy))[0].id, user.id)

        # A check the database could not finish is not a guess.
        with self.assertRaises(BadCredentials):
            await self.accounts.login("alice", "wrong", lab, policy)

        def unavailable(password, encoded):
            raise StoreUnavailable("database down")
        self.patch(self.accounts.hasher, "verify", unavailable)
        for _ in range(10):
            with self.assertRaises(StoreUnavailable):
                await self.accounts.login("alice", "pw", lab, policy)
        self.assertEqual(self.accounts.guard.accounts.count("alice"), 1)
        self.assertEqual(self.accounts.guard.addresses.count("10.0.0.1"), 1)


class SQLiteAccountTests(AccountTestsMixin, unittest.TestCase):
    def make_url(self) -> str:
        return sqlite_url(self)


class PostgresAccountTests(AccountTestsMixin, unittest.TestCase):
    def make_url(self) -> str:
        return postgres_url(self)


class PasswordHasherTests(unittest.TestCase):
    async def test_verify(self):
        hasher = PasswordHasher(log2_n=4)
        encoded = await hasher.hash("pässword")
        self.assertTrue(await hasher.verify("pässword", encoded))
        self.assertFalse(await hasher.verify("password", encoded))
        for broken in (None, "", "md5$x", "scrypt$4$8$1$!!$!!", hasher.dummy_hash):
            self.assertFalse(await hasher.verify("pässword", broken))
        hasher.stop()

    async def test_hashes_run_in_a_small_pool_of_their_own(self):
        import threading
        import time

        running, seen, names = [], [], set()
        real_derive = PasswordHasher._derive

        def derive(*arguments):
            running.append(threading.current_thread().name)
            names.add(running[-1])
            seen.append(len(running))
            time.sleep(0.01)            # let the others pile up, in their threads
            running.pop()
            return real_derive(*arguments)
        self.patch(PasswordHasher, "_derive", staticmethod(derive))
        for threads in (1, 2):
            hasher = PasswordHasher(log2_n=4, threads=threads)
            seen.clear()
            await gatherResults([hasher.hash(str(number)) for number in range(6)])
            self.assertEqual(max(seen), threads)
            hasher.stop()
        self.assertTrue(names)
        self.assertTrue(all("gtserver-passwords" in name for name in names), names)

    def test_hash_sized_blocks_go_back_to_the_system(self):
        from gtserver.core import memory
        if memory._mallopt is None:
            raise unittest.SkipTest("not glibc")
        calls = []
        self.patch(memory, "_mallopt", lambda *arguments: calls.append(arguments) or 1)
        self.patch(memory, "_threshold", None)
        small = PasswordHasher(log2_n=10)          # 1 MiB blocks: left to glibc
        small.verify("x", None).addBoth(lambda _: None)
        hasher = PasswordHasher(log2_n=14)
        self.assertEqual(calls, [])             # nothing changes until a hash runs
        hasher.verify("x", None).addBoth(lambda _: None)
        self.assertEqual(calls, [(memory.M_MMAP_THRESHOLD, 8 << 20)])
        larger = PasswordHasher(log2_n=16)
        larger.verify("x", None).addBoth(lambda _: None)   # 8 MiB blocks still included
        self.assertEqual(len(calls), 1)
        for each in (small, hasher, larger):
            each.stop()
