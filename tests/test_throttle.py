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
