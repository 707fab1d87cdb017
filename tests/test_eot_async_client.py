"""gtserver.eot.client (the Twisted game API client) against a real server."""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial import unittest

from gtserver.client import GameServerError, IllegalMove
from gtserver.eot.client import AsyncGameClient
from tests.support import start_server


class AsyncGameClientTests(unittest.TestCase):
    async def start(self) -> None:
        server = await start_server(self, listeners={"eot": None})
        self.port = server.port("eot")

    def client(self, game: str, **arguments) -> AsyncGameClient:
        arguments.setdefault("request_timeout", 10.0)   # a test fails rather than hangs
        return AsyncGameClient(reactor, "127.0.0.1", self.port, game, **arguments)

    async def test_echo_moves_state_illegal_and_over(self):
        await self.start()
        echo = self.client("Echo", players=1)
        self.assertEqual(await echo.join(), 0)
        self.assertTrue(echo.session.startswith("auto-"))
        self.assertEqual(echo.request_size_max, 1_000_000)
        self.assertEqual(await echo.state(), {"echo": "", "current": [0], "gameover": False})
        self.assertIsNone(await echo.move(msg="hello"))
        self.assertEqual((await echo.state())["echo"], "hello")
        refused = await self.assertFailure(echo.move(msg="error"), IllegalMove)
        self.assertTrue(refused.args)
        await echo.state()
        await echo.move(msg="quit")
        self.assertTrue((await echo.state())["gameover"])
        await self.assertFailure(echo.move(msg="again"), GameServerError)

    async def test_two_players_meet_in_a_named_session_and_restart(self):
        await self.start()
        first = self.client("TicTacToe", session="lab", players=2, name="ann")
        # Both give the size: whichever comes first starts the session.
        second = self.client("TicTacToe", session="lab", players=2, name="bob")
        ids = await ensureDeferred(_both(first.join(), second.join()))
        self.assertEqual(sorted(ids), [0, 1])
        state = await first.state()
        mover = first if first.player_id in state["current"] else second
        await mover.move(position=4)
        self.assertEqual((await mover.state())["board"][4], mover.player_id)
        await self.assertFailure(mover.move(position=0), GameServerError)  # not its turn
        other = second if mover is first else first
        # The other player has not seen the move yet: neither has its observer.
        watcher = self.client("TicTacToe", session="lab", name=other.name)
        self.assertEqual(await watcher.observe(), other.player_id)
        self.assertEqual((await watcher.state())["board"][4], mover.player_id)
        await self.assertFailure(watcher.move(position=0), GameServerError)
        await first.restart()
        self.assertEqual((await first.state())["board"], [-1] * 9)

    async def test_a_long_wait_is_cut_short_by_the_request_timeout(self):
        await self.start()
        waiting = self.client("TicTacToe", players=2, request_timeout=0.2)
        await self.assertFailure(waiting.join(), TimeoutError)   # nobody else comes

    async def test_requests_need_a_seat_and_a_server(self):
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        client = AsyncGameClient(reactor, "127.0.0.1", port, "Echo", players=1)
        await self.assertFailure(client.state(), GameServerError)
        await self.assertFailure(client.join(), GameServerError)


async def _both(one, other):
    return [await one, await other]
