"""The settings of the ``eot`` listener, built once from its options
(:data:`gtserver.eot.plugin.EOTGameAPI.options`, the one place of their
defaults and checks). The games' own settings come with the games
(:func:`gtserver.registry.configured_games`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TableSettings:
    #: Seconds a join waits for its game to fill.
    join_timeout: float
    #: Seconds without requests after which a game ends.
    game_timeout: float
    #: Seconds after which a finished game everyone has seen is released.
    finished_grace: float
    #: Tables kept in memory at most.
    tables_max: int


@dataclass(frozen=True)
class EOTSettings:
    tables: TableSettings
    #: Largest request in bytes (EOT\0 included).
    request_size_max: int
    #: Seconds to deliver the whole request, and again to read the answer.
    connection_timeout: float

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> EOTSettings:
        return cls(
            tables=TableSettings(join_timeout=options["eot-join-timeout"],
                                 game_timeout=options["eot-game-timeout"],
                                 finished_grace=options["eot-finished-grace"],
                                 tables_max=options["eot-sessions-max"]),
            request_size_max=options["eot-request-size-max"],
            connection_timeout=options["eot-connection-timeout"])
