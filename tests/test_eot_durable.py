"""Nothing acknowledged is lost: an EOT move (accepted or refused as illegal)
is in the research log's store before the mover is answered and before any
parked ``state`` sees it. In memory, on the daemon's clock: with the store's
results a turn late, with the log's writes cut (as if the process died while
committing), and with the store unavailable (games go on)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest

from gtserver.store import events as event_queries
from tests.memory import MemoryDaemon, StreamConnection
from tests.test_eot import encode
from tests.test_eot_memory import Player, join_all


class HeldWrites:
    """The event log's path to the store, cut: its writes never complete
    until :meth:`release` (every other transaction goes through)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.held: list[tuple[Any, tuple, Deferred]] = []
        self.cut = True

    def run(self, function: Any, *arguments: Any) -> Deferred:
        if self.cut and function is event_queries.append_events:
            waiter: Deferred = Deferred()
            self.held.append((function, arguments, waiter))
            return waiter
        return self.store.run(function, *arguments)

    def release(self) -> None:
        """The held writes go through, and every later one."""
        self.cut = False
        held, self.held = self.held, []
        for function, arguments, waiter in held:
            self.store.run(function, *arguments).chainDeferred(waiter)


def logged_moves(server: MemoryDaemon) -> list[str]:
    """The kinds of the EOT move events in the daemon's database now."""
    rows = server.store._connection.execute(
        "SELECT kind FROM events WHERE source = 'eot' AND kind IN ('move', 'move_refused') "
        "ORDER BY id").fetchall()
    return [kind for (kind,) in rows]


def send(server: MemoryDaemon, request: dict[str, Any]) -> StreamConnection:
    """Deliver ``request`` on a new connection without letting the clock run."""
    connection = server.stream("eot")
    connection.protocol.dataReceived(encode(request))
    return connection


class DurableMoveTests(unittest.TestCase):
    def echo(self, server: MemoryDaemon) -> Player:
        (player,) = join_all(self, server, "Echo", "durable", 1)
        self.assertEqual(player.state()["data"]["echo"], "")
        return player

    def test_answers_are_written_only_once_the_move_is_stored(self):
        """The store's results come a turn late: on the turn the move arrives
        nothing is answered; when the mover and the parked state are answered,
        the move's event (a refusal's too) is in the database and the log has
        been told so."""
        server = MemoryDaemon(self, listeners=("eot",), store_delay=True)
        player = self.echo(server)
        log = server.core.events
        for message, kind in (("hello", "move"), ("error", "move_refused")):
            parked = send(server, player.request("state", observer=False))
            mover = send(server, player.request("move", move={"msg": message}))
            recorded = log.recorded
            when_told = []
            for connection in (parked, mover):
                self.record_writes(connection, lambda kind=kind, recorded=recorded: (
                    logged_moves(server).count(kind), log.settled >= recorded), when_told)
            self.assertEqual((parked.received, mover.received), (b"", b""))
            self.assertEqual(logged_moves(server).count(kind), 0)
            server.flush()
            self.assertEqual(when_told, [(1, True), (1, True)])
            self.assertEqual(json.loads(parked.received)["data"]["echo"], message)
            status = json.loads(mover.received)["status"]
            self.assertEqual(status, "ok" if kind == "move" else "illegalmove")

    @staticmethod
    def record_writes(connection: StreamConnection, probe: Any, into: list) -> None:
        """Append ``probe()`` to ``into`` whenever the server writes to ``connection``."""
        write = connection.transport.write

        def probed(data: bytes) -> None:
            into.append(probe())
            write(data)
        connection.transport.write = probed

    def test_nothing_is_told_while_the_log_cannot_commit(self):
        """The log's writes hang (the process dies mid-commit): the mover,
        the parked state and a state asked afterwards all wait; when the
        daemon is killed nobody was told of a move the store does not hold."""
        server = MemoryDaemon(self, listeners=("eot",), store_delay=True)
        players = join_all(self, server, "TicTacToe", "cut", 2)
        starter = players[0].state()["data"]["current"][0]
        players[1].state()
        mover, other = players[starter], players[1 - starter]
        cut = HeldWrites(server.store)
        server.core.events.store = cut
        parked = other.start_state()
        moved = server.stream("eot")
        moved.write(encode(mover.request("move", move={"position": 4})))
        server.advance(10.0)
        asked = mover.start_state()
        server.advance(10.0)
        self.assertTrue(cut.held)
        self.assertEqual(logged_moves(server), [])
        self.assertEqual(moved.received, b"")
        self.assertNoResult(parked)
        self.assertNoResult(asked)
        # kill -9: every connection drops unanswered; the log never commits.
        for connection in server.streams:
            connection.lose()
        self.assertEqual(moved.received, b"")
        self.failureResultOf(parked)
        self.failureResultOf(asked)
        server.service.stopService()
        server.stop = lambda: succeed(None)

    def test_once_the_log_commits_the_waiting_are_told(self):
        server = MemoryDaemon(self, listeners=("eot",), store_delay=True)
        player = self.echo(server)
        cut = HeldWrites(server.store)
        server.core.events.store = cut
        parked = player.start_state()
        moved = server.stream("eot")
        moved.write(encode(player.request("move", move={"msg": "late"})))
        server.advance(5.0)
        self.assertEqual((moved.received, logged_moves(server)), (b"", []))
        cut.release()
        server.flush()
        self.assertEqual(logged_moves(server), ["move"])
        self.assertEqual(json.loads(moved.received)["status"], "ok")
        self.assertEqual(self.successResultOf(parked)["data"]["echo"], "late")

    def test_while_the_store_is_unavailable_games_go_on(self):
        """An outage of the store does not stop games: moves are answered at
        once (not yet durable) and their events are written once it is back."""
        server = MemoryDaemon(self, listeners=("eot",))
        player = self.echo(server)
        server.store.killed = True      # every transaction fails as unavailable
        self.assertEqual(player.move(msg="first")["status"], "ok")
        self.assertEqual(player.move(msg="second")["status"], "ok")
        self.assertEqual(player.state()["data"]["echo"], "second")
        self.assertEqual(logged_moves(server), [])
        server.store.killed = False
        server.advance(1.0)
        self.assertEqual(logged_moves(server), ["move", "move"])

    def test_refusals_behind_an_unstored_move_get_the_same_answers(self):
        """A move queued behind one not yet stored is refused through the
        Deferred, with exactly the answer a refusal raised at once gets."""
        server = MemoryDaemon(self, listeners=("eot",), store_delay=True)
        players = join_all(self, server, "TicTacToe", "queued", 2)
        starter = players[0].state()["data"]["current"][0]
        mover = players[starter]
        first = send(server, mover.request("move", move={"position": 0}))
        again = send(server, mover.request("move", move={"position": 1}))
        wrong_key = send(server, {**mover.request("move", move={"position": 1}), "key": "x"})
        self.assertEqual((first.received, again.received), (b"", b""))
        server.flush()
        self.assertEqual(json.loads(first.received)["status"], "ok")
        at_once = mover.move(position=1)
        self.assertEqual(json.loads(again.received), at_once)
        self.assertEqual(at_once["message"], "framework: it is not your turn")
        self.assertIn("wrong key", json.loads(wrong_key.received)["message"])
