"""The settings of the ``eot`` listener, built once from its options
(:data:`gtserver.eot.plugin.EOTGameAPI.options`, the one place of their
defaults and checks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def parse_payoffs(text: str) -> tuple[float, float, float, float]:
    """``--eot-pd-payoffs`` ``"T,R,P,S"`` as four numbers (ValueError if not)."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ValueError(f"--eot-pd-payoffs wants four numbers T,R,P,S, got {text!r}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class LobbySettings:
    #: Seconds a join waits for its game to fill.
    join_timeout: float
    #: Seconds without requests after which a game ends.
    game_timeout: float
    #: Seconds after which a finished game everyone has seen is released.
    finished_grace: float
    #: Games kept in memory at most.
    sessions_max: int


@dataclass(frozen=True)
class EOTSettings:
    lobby: LobbySettings
    #: Largest request in bytes (EOT\0 included).
    request_size_max: int
    #: Seconds to deliver the whole request, and again to read the answer.
    connection_timeout: float
    #: Rounds of PrisonersDilemma and StagHunt.
    pd_rounds: int
    #: PrisonersDilemma payoffs T, R, P, S.
    pd_payoffs: tuple[float, float, float, float]
    #: Longest Chat name or message, and Chat history per game, in UTF-8 bytes.
    chat_line_max: int
    chat_history_max: int

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> EOTSettings:
        return cls(
            lobby=LobbySettings(join_timeout=options["eot-join-timeout"],
                                game_timeout=options["eot-game-timeout"],
                                finished_grace=options["eot-finished-grace"],
                                sessions_max=options["eot-sessions-max"]),
            request_size_max=options["eot-request-size-max"],
            connection_timeout=options["eot-connection-timeout"],
            pd_rounds=options["eot-pd-rounds"],
            pd_payoffs=parse_payoffs(options["eot-pd-payoffs"]),
            chat_line_max=options["eot-chat-line-max"],
            chat_history_max=options["eot-chat-history-max"])
