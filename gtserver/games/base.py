"""Building blocks for game rules."""

from __future__ import annotations

import random
from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from gtserver.interfaces import IGameFactory


class IllegalMove(Exception):
    """The game refuses a move.

    ``message`` is any JSON value shown to the player (the EOT protocol sends it
    as the ``illegalmove`` message).
    """

    def __init__(self, message: Any = "illegal move") -> None:
        super().__init__(message)
        self.message = message


@implementer(IPlugin, IGameFactory)
class GameFactory:
    """Registers a game class as a plugin.

    The class is built as ``game_class(players, rng)`` for a new game and
    restored with ``game_class.restore(data)``.
    """

    def __init__(self, game_class: type, name: str | None = None,
                 min_players: int | None = None, max_players: int | None = None) -> None:
        self.game_class = game_class
        self.name = name or game_class.__name__
        self.min_players = min_players if min_players is not None else game_class.min_players
        self.max_players = max_players if max_players is not None else game_class.max_players

    def new_game(self, players: int, rng: random.Random | None = None) -> Any:
        return self.game_class(players, rng or random.Random())

    def restore(self, data: dict) -> Any:
        return self.game_class.restore(data)

    def __repr__(self) -> str:
        return f"<GameFactory {self.name}>"
