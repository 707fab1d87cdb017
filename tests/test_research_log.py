"""The research log over real sockets: no player can stop it for the others.

An EOT player whose name the database cannot store (a lone surrogate, or a NUL
on PostgreSQL) plays moves; players of another session play after them. The
daemon stops cleanly, and the stored log holds every later move, in order.
(Whether the adapter refuses such a name at the door or lets it through, the
log must go on: if the name gets through, its events stand in as
``unstorable_event``.)
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.trial import unittest

from gtserver.core.events import UNSTORABLE_KIND
from gtserver.store import open_store
from tests.pgcluster import postgres_url
from tests.support import select_events, sqlite_url, start_server
from tests.test_eot import Player, call, join_request, joined_so_far, start_call, until


def all_events():
    return (yield from select_events(limit=100_000))


class PoisonedLogTestsMixin:
    #: Unstorable characters to try on this engine.
    bad_characters: tuple[str, ...] = ()

    def make_url(self) -> str:
        raise NotImplementedError

    async def play_two_moves(self, server, port: int, session: str, names: list[str]) -> bool:
        """Both players of a TicTacToe session move once; False if the
        server refused to seat them."""
        first = start_call(port, join_request("TicTacToe", session, 2, names[0]))
        await until(lambda: first.called or joined_so_far(server, "TicTacToe", session) == 1)
        if first.called:  # refused: the session never filled
            self.assertNotEqual((await first)["status"], "ok")
            return False
        second = await call(port, join_request("TicTacToe", session, 2, names[1]))
        players = [Player(port, "TicTacToe", await first), Player(port, "TicTacToe", second)]
        state = (await players[0].state())["data"]
        mover = state["current"][0]
        for seat, position in ((mover, 0), (1 - mover, 1)):
            self.assertEqual(await players[seat].move(position=position),
                             {"status": "ok", "data": None})
        return True

    async def test_moves_after_a_poisoned_name_are_stored(self):
        url = self.make_url()
        server = await start_server(self, db=url, listeners={"eot": None})
        port = server.port("eot")
        accepted = {}
        for index, bad in enumerate(self.bad_characters):
            evil = f"evil{bad}{index}"
            accepted[evil] = await self.play_two_moves(
                server, port, f"poisoned{index}", [evil, f"bystander{index}"])
        await self.play_two_moves(server, port, "clean", ["ann", "bob"])
        await server.stop()

        store = open_store(url, reactor)
        await store.start()
        self.addCleanup(store.close)
        rows = await store.run(all_events)
        moves = [row[4] for row in rows if row[3] == "move"]
        self.assertEqual(sorted(moves[-2:]), ["ann", "bob"])  # the last moves, all there
        stand_ins = [json.loads(row[8])["original"] for row in rows
                     if row[3] == UNSTORABLE_KIND]
        for evil, seated in accepted.items():
            evil_moves = [original for original in stand_ins
                          if original["kind"] == "move" and original["user_name"] == evil]
            self.assertEqual(len(evil_moves), 1 if seated else 0, evil)
        self.assertEqual(server.core.events.lost, 0)


class SQLitePoisonedLogTests(PoisonedLogTestsMixin, unittest.TestCase):
    bad_characters = ("\ud800", "\udfff")

    def make_url(self) -> str:
        return sqlite_url(self)


class PostgresPoisonedLogTests(PoisonedLogTestsMixin, unittest.TestCase):
    bad_characters = ("\ud800", "\x00")

    def make_url(self) -> str:
        return postgres_url(self)
