"""Chat: up to 100 players post messages; everybody may move at any time.

Move ``name=<str>`` sets the mover's display name (non-empty, not used by
another player); move ``message=<str>`` posts a line (a name is needed first;
blank messages are ignored). Both may come in one move: the name is set first.
The state is ``{"messages": [[name, text], ...]}`` with the latest
:attr:`Chat.history` lines. The game never ends.
"""

from __future__ import annotations

import random
from typing import Any

from zope.interface import implementer

from gtserver.games.base import IllegalMove
from gtserver.interfaces import IGame


@implementer(IGame)
class Chat:
    min_players = 1
    max_players = 100
    #: Lines kept in the state; older ones are dropped.
    history = 1000

    def __init__(self, players: int = 1, rng: random.Random | None = None) -> None:
        if not self.min_players <= players <= self.max_players:
            raise ValueError("Chat takes 1 to 100 players")
        self.players = players
        self.names: list[str | None] = [None] * players
        self.messages: list[list[str]] = []

    def current(self) -> list[int]:
        return list(range(self.players))

    def is_over(self) -> bool:
        return False

    def move(self, seat: int, name: Any = None, message: Any = None, **extra: Any) -> None:
        if extra:
            raise IllegalMove(f"unexpected move arguments: {', '.join(sorted(extra))}")
        if name is None and message is None:
            raise IllegalMove("send name=... or message=...")
        if name is not None:
            self._rename(seat, name)
        if message is not None:
            self._post(seat, message)

    def _rename(self, seat: int, name: Any) -> None:
        if not isinstance(name, str) or not name.strip():
            raise IllegalMove("the name must be a non-empty string")
        if any(other == name for index, other in enumerate(self.names) if index != seat):
            raise IllegalMove(f"the name {name!r} is taken")
        self.names[seat] = name

    def _post(self, seat: int, message: Any) -> None:
        if not isinstance(message, str):
            raise IllegalMove("the message must be a string")
        if self.names[seat] is None:
            raise IllegalMove("choose a name first")
        if message.strip():
            self.messages.append([self.names[seat], message])
            del self.messages[:-self.history]

    def state(self, seat: int | None = None) -> dict[str, Any]:
        return {"messages": [list(line) for line in self.messages]}

    def outcome(self) -> list[float] | None:
        return None

    def to_data(self) -> dict[str, Any]:
        return {"players": self.players, "names": self.names, "messages": self.messages}

    @classmethod
    def restore(cls, data: dict[str, Any]) -> Chat:
        game = cls(data["players"])
        game.names = list(data["names"])
        game.messages = [list(line) for line in data["messages"]]
        return game
