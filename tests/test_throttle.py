"""The failure throttle, driven by a task.Clock."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from gtserver.core.errors import Throttled
from gtserver.core.throttle import Throttle


class ThrottleTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.throttle = Throttle(self.clock, limit=3, window=60.0)

    def test_blocks_after_limit_failures_within_the_window(self):
        for _ in range(2):
            self.throttle.failure("alice")
        self.throttle.check("alice")
        self.throttle.failure("alice")
        error = self.assertRaises(Throttled, self.throttle.check, "alice")
        self.assertEqual(error.retry_after, 60.0)
        self.throttle.check("bob")

    def test_unblocks_when_the_oldest_failure_leaves_the_window(self):
        for delay in (0, 10, 10):
            self.clock.advance(delay)
            self.throttle.failure("alice")
        self.clock.advance(39)
        self.assertEqual(self.throttle.retry_after("alice"), 1.0)
        self.clock.advance(1)
        self.throttle.check("alice")
        self.throttle.failure("alice")      # two recent failures plus this one
        self.assertRaises(Throttled, self.throttle.check, "alice")

    def test_failures_spread_out_never_block(self):
        for _ in range(10):
            self.throttle.failure("alice")
            self.clock.advance(31)
        self.throttle.check("alice")

    def test_any_blocked_key_blocks_the_attempt(self):
        for name in ("a", "b", "c"):
            self.throttle.failure(("name", name), ("address", "10.0.0.1"))
        self.throttle.check(("name", "a"), ("address", "10.0.0.2"))
        self.assertRaises(Throttled, self.throttle.check, ("name", "d"), ("address", "10.0.0.1"))

    def test_success_clears_a_key(self):
        for _ in range(3):
            self.throttle.failure("alice")
        self.throttle.success("alice")
        self.throttle.check("alice")

    def test_prune_bounds_memory(self):
        throttle = Throttle(self.clock, limit=3, window=60.0, max_keys=10)
        for number in range(10):
            throttle.failure(number)
        self.clock.advance(61)
        throttle.failure("fresh")
        self.assertEqual(list(throttle._attempts), ["fresh"])


class PerCallBudgetTests(unittest.TestCase):
    """Two callers with their own budgets over the same counts."""

    def setUp(self):
        self.clock = Clock()
        self.throttle = Throttle(self.clock, limit=5, window=60.0)

    def test_a_caller_may_ask_with_a_smaller_limit_and_longer_window(self):
        for _ in range(3):
            self.throttle.failure("alice")
            self.clock.advance(30)
        self.throttle.check("alice")                         # two in the last 60 s
        self.assertRaises(Throttled, self.throttle.check, "alice", limit=3, window=100.0)
        self.throttle.check("alice", limit=3, window=50.0)

    def test_a_withdrawn_attempt_no_longer_counts(self):
        stamps = [self.throttle.failure("alice") for _ in range(5)]
        self.assertRaises(Throttled, self.throttle.check, "alice")
        self.throttle.withdraw("alice", stamps[0])
        self.throttle.check("alice")
        self.assertEqual(self.throttle.count("alice"), 4)


class GuardTests(unittest.TestCase):
    """The login guard in memory: what counts, when, and what it logs."""

    def setUp(self):
        from gtserver.core.login import LoginGuard, LoginLimits
        self.clock = Clock()
        self.guard = LoginGuard(self.clock, LoginLimits(
            failures_per_account=3, failures_per_address=5, window=60.0,
            registrations_per_address=2, registration_window=10.0))

    def peer(self, host="10.0.0.1", port=1000):
        from gtserver.core.peers import Peer
        return Peer(host, port)

    def test_guesses_count_when_they_start(self):
        for _ in range(3):
            self.guard.start_guess("alice", self.peer())   # none has finished yet
        error = self.assertRaises(Throttled, self.guard.start_guess, "alice", self.peer())
        self.assertEqual(error.retry_after, 60.0)

    def test_a_right_password_forgets_the_accounts_failures_not_the_addresses(self):
        for _ in range(2):
            self.guard.start_guess("alice", self.peer()).failed("10.0.0.1:1000")
        self.guard.start_guess("alice", self.peer()).succeeded()
        self.assertEqual(self.guard.accounts.count("alice"), 0)
        self.assertEqual(self.guard.addresses.count("10.0.0.1"), 2)

    def test_an_abandoned_check_is_not_a_guess(self):
        for _ in range(3):
            self.guard.start_guess("alice", self.peer()).abandoned()
        self.guard.start_guess("alice", self.peer())
        self.assertEqual(self.guard.addresses.count("10.0.0.1"), 1)

    def test_refused_attempts_are_not_counted(self):
        for _ in range(3):
            self.guard.start_guess("alice", self.peer()).failed(None)
        for _ in range(20):
            self.assertRaises(Throttled, self.guard.start_guess, "alice", self.peer())
        self.assertEqual(self.guard.addresses.count("10.0.0.1"), 3)
        self.guard.start_guess("bob", self.peer()).succeeded()

    def test_a_spent_address_still_logs_in_to_accounts_known_from_it(self):
        self.guard.start_guess("carol", self.peer()).succeeded()
        self.guard.registered("dave", self.peer(port=2000))
        for name in ("a", "b", "c", "d", "e"):
            self.guard.start_guess(name, self.peer()).failed(None)
        self.assertRaises(Throttled, self.guard.start_guess, "bob", self.peer())
        self.guard.start_guess("carol", self.peer(port=3000)).succeeded()
        self.guard.start_guess("dave", self.peer()).succeeded()
        self.guard.start_guess("bob", self.peer("10.0.0.2")).succeeded()
        self.clock.advance(60)
        self.guard.start_guess("bob", self.peer()).succeeded()

    def test_registrations_per_address(self):
        self.guard.start_registration("a", self.peer())
        self.guard.start_registration("b", self.peer(port=2))
        error = self.assertRaises(Throttled, self.guard.start_registration, "c", self.peer())
        self.assertIn("too many new accounts", str(error))
        self.guard.start_registration("c", self.peer("10.0.0.2"))
        self.clock.advance(10)
        self.guard.start_registration("c", self.peer())

    def test_throttling_is_logged_once_per_blocked_spell(self):
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import LogLevel, globalLogPublisher
        observed = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for _ in range(3):
            self.guard.start_guess("alice", self.peer()).failed("10.0.0.1:1000")
        for _ in range(3):
            self.assertRaises(Throttled, self.guard.start_guess, "alice", self.peer())
        warnings = [event for event in observed if event["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual((warnings[0]["throttled"], warnings[0]["name"],
                          warnings[0]["address"]), ("account", "alice", "10.0.0.1:1000"))
        failures = [event for event in observed if event["log_format"].startswith("failed")]
        self.assertEqual(len(failures), 3)
        self.clock.advance(60)
        for _ in range(3):
            self.guard.start_guess("alice", self.peer()).failed(None)
        self.assertRaises(Throttled, self.guard.start_guess, "alice", self.peer())
        self.assertEqual(len([e for e in observed if e["log_level"] == LogLevel.warn]), 2)


# Over real sockets: the daemon with its VR and uttt listeners, real Autobahn clients.

async def vr_client(testcase, port: int, source: str = "127.0.0.1",
                    headers: dict | None = None):
    """A VR client connected from loopback address ``source``."""
    from autobahn.twisted.websocket import WebSocketClientFactory
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint

    from tests.test_vr_client import VRTestClient, disconnect
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/", headers=headers)
    factory.protocol = VRTestClient
    factory.setProtocolOptions(closeHandshakeTimeout=0, serverConnectionDropTimeout=0)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5,
                                  bindAddress=(source, 0))
    client = await endpoint.connect(factory)
    await client.opened
    testcase.addCleanup(disconnect, client)
    return client


async def uttt_client(testcase, port: int, source: str = "127.0.0.1",
                      headers: dict | None = None):
    """A uttt client connected from loopback address ``source``."""
    from autobahn.twisted.websocket import WebSocketClientFactory
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import TCP4ClientEndpoint

    from tests.test_uttt import UtttClient
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/", headers=headers)
    factory.protocol = UtttClient
    factory.opened = Deferred()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0)
                             ).connect(factory)
    client = await factory.opened
    testcase.addCleanup(client.disconnect)
    return client


async def until(predicate, timeout: float = 10.0) -> None:
    """Wait (polling the reactor) until ``predicate()`` is true."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("timed out waiting")
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


class LoginThrottleOverSocketsTests(unittest.TestCase):
    async def serve(self, *arguments: str):
        from tests.support import start_server
        from tests.test_uttt import settle_websocket_timers
        self.addCleanup(settle_websocket_timers)
        self.server = await start_server(self, "--fps", "0.001", *arguments,
                                         listeners={"vr": None, "uttt": None})
        self.clock = Clock()
        self.server.core.accounts.guard.use_clock(self.clock)
        self.vr_port, self.uttt_port = self.server.port("vr"), self.server.port("uttt")

    async def vr_login(self, name: str, password: str, source: str = "127.0.0.1") -> int:
        client = await vr_client(self, self.vr_port, source)
        client.send({"system": "login", "options": {"user": name, "pass": password}})
        return await client.code()

    async def uttt_login(self, name: str, password: str, source: str = "127.0.0.1",
                         kind: str = "login") -> dict:
        client = await uttt_client(self, self.uttt_port, source)
        client.send(kind, {"name": name, "pw": password})
        return await client.expect("login_response")

    async def test_another_accounts_right_password_after_many_failures(self):
        await self.serve()
        for name in ("alice", "bob"):
            self.assertEqual(await self.vr_login(name, "right", "127.0.0.2"), 202)
        for _ in range(20):     # one typist, one account, the same lab address
            self.assertEqual(await self.vr_login("alice", "wrong", "127.0.0.4"), 403)
        self.assertEqual(await self.vr_login("alice", "right", "127.0.0.4"), 403)
        # Everybody else behind that address is unaffected, on every listener.
        self.assertEqual(await self.vr_login("bob", "right", "127.0.0.4"), 202)
        self.assertTrue((await self.uttt_login("bob", "right", "127.0.0.4"))["success"])
        self.assertEqual(await self.vr_login("carol", "new", "127.0.0.4"), 202)
        self.assertTrue((await self.uttt_login("guest", "", "127.0.0.4",
                                               "temp_session"))["success"])
        # Refused attempts were not counted: the address spent only five.
        self.assertEqual(self.server.core.accounts.guard.addresses.count("127.0.0.4"), 5)

    async def test_account_lockout_counts_over_every_listener(self):
        await self.serve("--login-failures-per-account", "3")
        self.assertTrue((await self.uttt_login("alice", "right", "127.0.0.2"))["success"])
        for _ in range(3):
            self.assertEqual(await self.vr_login("alice", "wrong", "127.0.0.3"), 403)
        for source in ("127.0.0.2", "127.0.0.5"):
            response = await self.uttt_login("alice", "right", source)
            self.assertFalse(response["success"])
            self.assertIn("too many failed logins", response["msg"])
        self.clock.advance(300)
        self.assertTrue((await self.uttt_login("alice", "right", "127.0.0.2"))["success"])

    async def test_a_listeners_own_option_is_its_budget_over_the_shared_count(self):
        await self.serve("--vr-login-failures", "2")
        self.assertTrue((await self.uttt_login("alice", "right"))["success"])
        for _ in range(2):
            self.assertFalse((await self.uttt_login("alice", "wrong"))["success"])
        self.assertEqual(await self.vr_login("alice", "right"), 403)   # VR's budget: 2
        self.assertTrue((await self.uttt_login("alice", "right"))["success"])  # uttt's: 5

    async def test_a_burst_of_guesses_is_cut_at_the_budget(self):
        from twisted.internet.defer import Deferred
        await self.serve()
        self.assertEqual(await self.vr_login("alice", "right"), 202)
        hasher = self.server.core.accounts.hasher
        real_verify, held = hasher.verify, []

        def held_verify(password, encoded):
            held.append((Deferred(), password, encoded))
            return held[-1][0]
        self.patch(hasher, "verify", held_verify)
        clients = [await vr_client(self, self.vr_port) for _ in range(41)]
        for client in clients[:40]:         # forty guesses at once
            client.send({"system": "login", "options": {"user": "alice", "pass": "wrong"}})
        codes = []
        for client in clients[:40]:
            client.inbox.get().addCallback(lambda frame: codes.append(frame["response"]))
        await until(lambda: len(codes) == 35)
        self.assertEqual(len(held), 5)      # only the budget's worth is being checked
        self.assertEqual({response["code"] for response in codes}, {403})
        # The right password, while those five are still being checked, is refused.
        clients[40].send({"system": "login", "options": {"user": "alice", "pass": "right"}})
        self.assertEqual(await clients[40].code(), 403)
        for d, password, encoded in held:
            real_verify(password, encoded).chainDeferred(d)
        await until(lambda: len(codes) == 40)
        self.assertEqual({response["code"] for response in codes}, {403})
        self.assertEqual(len(held), 5)

    async def test_registrations_are_throttled_per_address(self):
        await self.serve("--registrations-per-address", "3", "--registration-window", "60")
        for name in ("one", "two", "three"):
            self.assertTrue((await self.uttt_login(name, "pw", "127.0.0.4"))["success"])
        response = await self.uttt_login("four", "pw", "127.0.0.4")
        self.assertFalse(response["success"])
        self.assertIn("too many new accounts", response["msg"])
        self.assertEqual(await self.vr_login("four", "pw", "127.0.0.4"), 403)
        self.assertIsNone(await self.server.core.accounts.user("four"))
        # Logins to existing accounts and other addresses are not affected.
        self.assertTrue((await self.uttt_login("one", "pw", "127.0.0.4"))["success"])
        self.assertEqual(await self.vr_login("four", "pw", "127.0.0.5"), 202)
        self.clock.advance(60)
        self.assertTrue((await self.uttt_login("five", "pw", "127.0.0.4"))["success"])

    async def test_throttling_is_logged_with_name_and_address(self):
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import LogLevel, globalLogPublisher
        await self.serve("--login-failures-per-account", "2")
        observed = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.assertEqual(await self.vr_login("alice", "right"), 202)
        for _ in range(2):
            self.assertEqual(await self.vr_login("alice", "wrong", "127.0.0.4"), 403)
        self.assertFalse((await self.uttt_login("alice", "right", "127.0.0.6"))["success"])
        warnings = [event for event in observed if event["log_level"] == LogLevel.warn
                    and event.get("throttled")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual((warnings[0]["throttled"], warnings[0]["name"]), ("account", "alice"))
        self.assertRegex(warnings[0]["address"], r"^127\.0\.0\.6:\d+$")
        failed = [event["address"] for event in observed
                  if event["log_format"].startswith("failed login")]
        self.assertEqual(len(failed), 2)
        self.assertTrue(all(address.startswith("127.0.0.4:") for address in failed))
