"""Building blocks for game rules."""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from gtserver.interfaces import IConfigurableGameFactory


class IllegalMove(Exception):
    """The game refuses a move.

    ``message`` is any JSON value shown to the player (the EOT protocol sends it
    as the ``illegalmove`` message).
    """

    def __init__(self, message: Any = "illegal move") -> None:
        super().__init__(message)
        self.message = message


@implementer(IPlugin, IConfigurableGameFactory)
class GameFactory:
    """Registers a game class as a plugin.

    The class is built as ``game_class(players, rng, **settings)`` for a new
    game and restored with ``game_class.restore(data)``. ``settings`` are
    keyword arguments of the class; the installed plugin object keeps none,
    and :meth:`configured` makes a copy with some, so that every daemon
    service configures its own copy.

    ``options`` are the game's command-line options (see
    :class:`IConfigurableGameFactory`); the value of each reaches the class
    as the keyword ``setting_names[long name]`` (by default the long name
    with dashes turned into underscores). ``migrations`` add tables of the
    game's own (see :func:`gtserver.store.schema.check_plugin_migrations`).
    """

    def __init__(self, game_class: type, name: str | None = None,
                 min_players: int | None = None, max_players: int | None = None,
                 settings: Mapping[str, Any] | None = None,
                 options: Sequence[tuple] = (),
                 setting_names: Mapping[str, str] | None = None,
                 migrations: Sequence[tuple[int, Sequence[str]]] = ()) -> None:
        self.game_class = game_class
        self.name = name or game_class.__name__
        self.min_players = min_players if min_players is not None else game_class.min_players
        self.max_players = max_players if max_players is not None else game_class.max_players
        self.settings: dict[str, Any] = dict(settings or {})
        self.options: tuple[tuple, ...] = tuple(options)
        self.setting_names: dict[str, str] = dict(setting_names or {})
        #: Tables of the game's own: (version, statements), see docs/adding-a-game.md.
        self.migrations = tuple(migrations)

    def settings_from_options(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword settings that the values of :attr:`options` give."""
        return {self.setting_names.get(long_name, long_name.replace("-", "_")):
                values[long_name] for long_name, *_ in self.options}

    def configured_from(self, values: Mapping[str, Any]) -> GameFactory:
        """A copy configured with the values of its options (by long name)."""
        return self.configured(**self.settings_from_options(values))

    def configured(self, **settings: Any) -> GameFactory:
        """A copy of this factory whose games get ``settings`` (None: the default)."""
        factory = copy.copy(self)
        factory.settings = {**self.settings, **settings}
        factory.settings = {key: value for key, value in factory.settings.items()
                            if value is not None}
        factory.check_settings()
        return factory

    def check_settings(self) -> None:
        """Raise ValueError for settings the game cannot take (building one game)."""
        self.new_game(self.min_players, random.Random(0))

    def new_game(self, players: int, rng: random.Random | None = None) -> Any:
        return self.game_class(players, rng or random.Random(), **self.settings)

    def restore(self, data: dict) -> Any:
        return self.game_class.restore(data)

    def __repr__(self) -> str:
        return f"<GameFactory {self.name}>"


class AlternatingGame:
    """Bookkeeping of a two-player game in which the seats take turns.

    Subclasses set ``to_move`` (seat 0 unless they draw it), call
    :meth:`check_turn` at the top of ``move``, :meth:`finish` when the game
    ends, and hand the turn over with :meth:`pass_turn`.
    """

    min_players = 2
    max_players = 2

    def __init__(self, players: int = 2, first: int = 0) -> None:
        if players != 2:
            raise ValueError(f"{type(self).__name__} is a two-player game")
        self.players = 2
        self.to_move = first
        self.winner: int | None = None
        self.over = False

    def current(self) -> list[int]:
        return [] if self.over else [self.to_move]

    def is_over(self) -> bool:
        return self.over

    def outcome(self) -> list[float] | None:
        if not self.over:
            return None
        if self.winner is None:
            return [0.5, 0.5]
        return [1.0 if seat == self.winner else 0.0 for seat in range(2)]

    def check_turn(self, seat: int, extra: dict[str, Any]) -> None:
        """Refuse a move after the end, out of turn, or with unknown arguments."""
        if self.over:
            raise IllegalMove("the game is over")
        if seat != self.to_move:
            raise IllegalMove("it is not your turn")
        if extra:
            raise IllegalMove(f"unexpected move arguments: {', '.join(sorted(extra))}")

    def finish(self, winner: int | None) -> None:
        """End the game; ``winner`` None is a draw."""
        self.winner, self.over = winner, True

    def pass_turn(self) -> None:
        self.to_move = 1 - self.to_move
