"""Group commit of match states (used by the match service for every move)."""

from twisted.internet.defer import Deferred
from twisted.trial import unittest

from gtserver.core.group_commit import GroupCommit
from gtserver.store import StoreError


class FakeStore:
    """Records transactions and lets the test decide when each one commits."""

    def __init__(self):
        self.calls = []

    def run(self, function, rows):
        d = Deferred()
        self.calls.append((function.__name__, list(rows), d))
        return d


class GroupCommitTests(unittest.TestCase):
    def test_saves_during_a_write_share_the_next_transaction(self):
        store = FakeStore()
        writer = GroupCommit(store)
        first = writer.save("m1", "s1", False, 1.0)
        later = [writer.save(f"m{n}", f"s{n}", n == 3, 2.0) for n in (2, 3)]
        self.assertEqual(len(store.calls), 1)
        self.assertEqual(store.calls[0][:2], ("update_matches", [("s1", False, 1.0, "m1")]))
        self.assertNoResult(first)
        store.calls[0][2].callback(None)
        self.successResultOf(first)
        self.assertEqual(len(store.calls), 2)
        self.assertEqual(store.calls[1][1], [("s2", False, 2.0, "m2"), ("s3", True, 2.0, "m3")])
        for waiter in later:
            self.assertNoResult(waiter)
        store.calls[1][2].callback(None)
        for waiter in later:
            self.successResultOf(waiter)
        self.assertEqual((writer.batches, writer.states), (2, 3))

    def test_a_failed_transaction_fails_each_of_its_saves(self):
        store = FakeStore()
        writer = GroupCommit(store)
        first = writer.save("m1", "s1", False, 1.0)
        second = writer.save("m2", "s2", False, 1.0)
        store.calls[0][2].errback(StoreError("disk full"))
        self.failureResultOf(first, StoreError)
        store.calls[1][2].errback(StoreError("disk full"))
        self.failureResultOf(second, StoreError)
        third = writer.save("m3", "s3", False, 1.0)
        self.assertEqual(len(store.calls), 3)
        store.calls[2][2].callback(None)
        self.successResultOf(third)

    def test_batches_are_capped(self):
        store = FakeStore()
        writer = GroupCommit(store, max_batch=2)
        waiters = [writer.save(f"m{n}", "s", False, 1.0) for n in range(6)]
        store.calls[0][2].callback(None)
        self.assertEqual([len(call[1]) for call in store.calls], [1, 2])
        store.calls[1][2].callback(None)
        store.calls[2][2].callback(None)
        self.assertEqual([len(call[1]) for call in store.calls], [1, 2, 2, 1])
        store.calls[3][2].callback(None)
        for waiter in waiters:
            self.successResultOf(waiter)
