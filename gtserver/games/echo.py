"""Echo: the one-player demo game of the EOT API.

Move ``msg=<str>``; the state is ``{"echo": <last message>}`` (``""`` at the
start). ``msg="error"`` is refused as an illegal move although the state shows
it, ``msg="quit"`` ends the game, a move without ``msg`` is illegal.
"""

from __future__ import annotations

import random
from typing import Any

from zope.interface import implementer

from gtserver.games.base import IllegalMove
from gtserver.interfaces import IGame


@implementer(IGame)
class Echo:
    min_players = 1
    max_players = 1

    def __init__(self, players: int = 1, rng: random.Random | None = None) -> None:
        if players != 1:
            raise ValueError("Echo is a one-player game")
        self.players = 1
        self.echo = ""
        self.over = False

    def current(self) -> list[int]:
        return [] if self.over else [0]

    def is_over(self) -> bool:
        return self.over

    def move(self, seat: int, msg: Any = None, **extra: Any) -> None:
        if self.over:
            raise IllegalMove("the game is over")
        if msg is None:
            raise IllegalMove("missing argument: msg")
        if extra:
            raise IllegalMove(f"unexpected move arguments: {', '.join(sorted(extra))}")
        if not isinstance(msg, str):
            raise IllegalMove("msg must be a string")
        self.echo = msg
        if msg == "error":
            raise IllegalMove("you sent 'error'")
        if msg == "quit":
            self.over = True

    def state(self, seat: int | None = None) -> dict[str, Any]:
        return {"echo": self.echo}

    def outcome(self) -> list[float] | None:
        return [1.0] if self.over else None

    def to_data(self) -> dict[str, Any]:
        return {"echo": self.echo, "over": self.over}

    @classmethod
    def restore(cls, data: dict[str, Any]) -> Echo:
        game = cls()
        game.echo, game.over = data["echo"], data["over"]
        return game
