"""The in-memory daemon of tests.memory: what the protocol tests rely on."""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.trial import unittest

from gtserver.store.base import Statement
from tests.memory import JSONClient, MemoryDaemon


def login_frame(name: str) -> bytes:
    return json.dumps({"type": "login", "data": {"name": name, "pw": "pw"}}).encode()


def count_users():
    rows = yield Statement("SELECT COUNT(*) FROM users")
    return rows[0][0]


class MemoryDaemonTests(unittest.TestCase):
    def test_a_waiting_message_fails_the_nothing_more_assertion(self):
        server = MemoryDaemon(self)
        alice = server.connect("uttt", JSONClient)
        alice.sendMessage(login_frame("alice"))
        with self.assertRaises(AssertionError):
            alice.assert_nothing_more()
        self.assertEqual([message["type"] for message in alice.pending()],
                         ["login_response", "elo_update", "friends_update"])
        alice.inbox.clear()
        alice.assert_nothing_more()
        with self.assertRaises(AssertionError):
            alice.take()

    def test_every_timer_runs_on_the_daemon_clock(self):
        before = list(reactor.getDelayedCalls())
        server = MemoryDaemon(self, listeners=("uttt", "vr", "eot"))
        self.assertIs(server.core.clock, server.clock)
        for name in ("uttt", "vr"):
            self.assertIs(server.factory(name).reactor, server.clock)
        alice = server.connect("uttt", JSONClient)
        alice.sendMessage(login_frame("alice"))
        alice.pending()
        idle = server.connect("uttt", JSONClient)
        visitor = server.connect("vr", JSONClient)
        visitor.sendClose()
        self.assertEqual(visitor.closed_with(), 1000)
        self.assertEqual(list(reactor.getDelayedCalls()), before)
        server.advance(30)           # the uttt login timeout, on the daemon's clock
        self.assertEqual(idle.closed_with(), 1008)
        self.assertFalse(alice.closed.called)

    def test_store_results_arrive_on_a_later_turn_when_delayed(self):
        server = MemoryDaemon(self, store_delay=True)
        pending = server.store.run(count_users)
        self.assertNoResult(pending)
        server.flush()
        self.assertEqual(self.successResultOf(pending), 0)
        self.assertEqual(self.successResultOf(MemoryDaemon(self).store.run(count_users)), 0)

    def test_a_stream_connection_is_lost_once_the_server_closes(self):
        server = MemoryDaemon(self, listeners=("eot",))
        connection = server.stream("eot")
        factory = server.factory("eot")
        self.assertIn(connection.protocol, factory.pending)
        connection.write(b'{"type": "nonsense"}EOT\0')
        self.assertEqual(json.loads(self.successResultOf(connection.closed))["status"], "error")
        self.assertNotIn(connection.protocol, factory.pending)
