"""A Twisted client for the game API (``eot`` listener): :class:`gtserver.client.GameClient`
with Deferreds instead of blocking calls, for code that runs in a reactor
(bots, load tests)::

    from gtserver.eot.client import AsyncGameClient

    async def play(reactor):
        game = AsyncGameClient(reactor, "127.0.0.1", 4711, "TicTacToe", players=2)
        me = await game.join()
        state = await game.state()
        ...

The requests, their answers and errors (:class:`gtserver.client.GameServerError`,
:class:`gtserver.client.IllegalMove`) are those of ``GameClient``.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from gtserver.client import TERMINATOR, GameServerError, IllegalMove, read_answer


class _Exchange(Protocol):
    """Sends one request, collects the answer until the server closes."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.chunks: list[bytes] = []
        self.answered: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Any) -> None:
        if not self.answered.called:     # not cut short by a timeout
            self.answered.callback(b"".join(self.chunks))


class AsyncGameClient:
    """One player's seat, like :class:`gtserver.client.GameClient`.

    :param timeout: seconds allowed for connecting; ``request_timeout`` bounds
        a whole request (None: ``join`` and ``state`` wait as long as the
        server makes them); a request cut short fails with ``TimeoutError``
    """

    def __init__(self, reactor: Any, server: str, port: int, game: str,
                 session: str = "auto", players: int | None = None, name: str = "",
                 timeout: float = 5.0, request_timeout: float | None = None) -> None:
        self.reactor = reactor
        self.server, self.port, self.game = server, port, game
        self.session, self.players, self.name = session, players, name
        self.timeout, self.request_timeout = timeout, request_timeout
        self.player_id: int | None = None
        self.key: str | None = None
        self.observer = False
        self.request_size_max = 1_000_000

    def join(self) -> Deferred:
        """Join or start a session; fires with your player id once it is full."""
        async def joining() -> int:
            data = await self._request({"type": "join", "game": self.game,
                                        "session": self.session, "players": self.players,
                                        "name": self.name})
            self.player_id, self.key = data["player_id"], data["key"]
            self.session, self.request_size_max = data["session"], data["request_size_max"]
            self.observer = False
            return self.player_id
        return ensureDeferred(joining())

    def observe(self) -> Deferred:
        """Watch the player called ``name`` in a running named session; fires
        with that player's id. Afterwards :meth:`state` returns what they get."""
        async def observing() -> int:
            if not self.name:
                raise GameServerError("give the name of the player to observe")
            data = await self._request({"type": "observe", "game": self.game,
                                        "session": self.session, "name": self.name})
            self.player_id, self.key, self.observer = data["player_id"], data["key"], True
            return self.player_id
        return ensureDeferred(observing())

    def move(self, **arguments: Any) -> Deferred:
        """Make a move (keyword arguments of the game); IllegalMove if refused."""
        return ensureDeferred(self._seated("move", move=arguments))

    def state(self) -> Deferred:
        """The game state with ``current`` and ``gameover`` (long-polls like GameClient)."""
        return ensureDeferred(self._seated("state", observer=self.observer))

    def restart(self) -> Deferred:
        """A fresh game in the same session."""
        return ensureDeferred(self._seated("restart"))

    async def _seated(self, kind: str, **fields: Any) -> Any:
        """A request of the joined player."""
        if self.player_id is None:
            raise GameServerError("join a game first")
        if self.observer and kind != "state":
            raise GameServerError(f"observers cannot {kind}")
        return await self._request({"type": kind, "game": self.game, "session": self.session,
                                    "player_id": self.player_id, "key": self.key, **fields})

    async def _request(self, request: dict[str, Any]) -> Any:
        payload = json.dumps(request).encode() + TERMINATOR
        if len(payload) > self.request_size_max:
            raise GameServerError("the request is larger than the server accepts")
        exchange = _Exchange(payload)
        endpoint = HostnameEndpoint(self.reactor, self.server, self.port, timeout=self.timeout)
        try:
            await connectProtocol(endpoint, exchange)
        except Exception as error:
            raise GameServerError(f"cannot connect to {self.server}:{self.port}: {error}") \
                from None
        answered = exchange.answered
        if self.request_timeout is not None:
            answered.addTimeout(self.request_timeout, self.reactor,
                                onTimeoutCancel=lambda *_: _timed_out(exchange))
        answer = await answered
        if not answer:
            raise GameServerError("the server closed the connection without an answer")
        return read_answer(answer)


def _timed_out(exchange: _Exchange) -> None:
    if exchange.transport is not None:
        exchange.transport.abortConnection()
    raise TimeoutError("no answer in time")


__all__ = ["AsyncGameClient", "GameServerError", "IllegalMove"]
