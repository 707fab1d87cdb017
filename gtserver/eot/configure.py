"""Builds the EOT listener's factory from the daemon's configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gtserver.eot.lobby import TableService
from gtserver.eot.protocol import EOTFactory
from gtserver.games import GameFactory
from gtserver.games.chat import Chat
from gtserver.games.matrix import MatrixGameFactory, PrisonersDilemma, dilemma_payoffs


def parse_payoffs(text: str) -> dict:
    """``"T,R,P,S"`` as a prisoner's dilemma payoff matrix."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"payoffs must be four numbers T,R,P,S, got {text!r}") from None
    if len(values) != 4:
        raise ValueError(f"payoffs must be four numbers T,R,P,S, got {text!r}")
    return dilemma_payoffs(*values)


def game_settings(factory: Any, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The settings the configuration gives games of ``factory`` (None: not configurable)."""
    if isinstance(factory, MatrixGameFactory):
        payoffs = config.get("eot_pd_payoffs")
        return {"rounds": config.get("eot_pd_rounds"),
                "payoffs": parse_payoffs(payoffs)
                if payoffs and issubclass(factory.game_class, PrisonersDilemma) else None}
    if isinstance(factory, GameFactory) and issubclass(factory.game_class, Chat):
        return {"line_max": config.get("eot_chat_line_max"),
                "history_max": config.get("eot_chat_history_max")}
    return None


def configure_games(games: dict[str, Any], config: Mapping[str, Any]) -> None:
    """Replace the games of one service by configured copies.

    The installed plugin objects are never changed, so services built with
    other options (a second daemon in one process, the tests) do not share
    settings.
    """
    for name, factory in list(games.items()):
        settings = game_settings(factory, config)
        if settings is not None:
            games[name] = factory.configured(**settings)


def build_factory(core: Any, config: Mapping[str, Any]) -> EOTFactory:
    tables = core.component(TableService)
    configure_games(tables.games, config)
    return EOTFactory(tables, core.clock,
                      request_size_max=int(config.get("eot_request_size_max", 1_000_000)),
                      connection_timeout=float(config.get("eot_connection_timeout", 60.0)))
