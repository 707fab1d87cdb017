"""Builds the EOT listener's factory from the daemon's configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gtserver.core.matches import MatchService
from gtserver.eot.lobby import SessionService
from gtserver.eot.protocol import EOTFactory
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


def configure_games(matches: MatchService, config: Mapping[str, Any]) -> None:
    """Apply the game settings of the configuration to the installed games."""
    rounds = config.get("eot_pd_rounds")
    payoffs = config.get("eot_pd_payoffs")
    for factory in matches.games.values():
        if isinstance(factory, MatrixGameFactory):
            factory.configure(
                rounds, parse_payoffs(payoffs)
                if payoffs and factory.game_class is PrisonersDilemma else None)


def build_factory(core: Any, config: Mapping[str, Any]) -> EOTFactory:
    sessions = core.component(SessionService)
    configure_games(sessions.matches, config)
    return EOTFactory(sessions, core.clock,
                      request_size_max=int(config.get("eot_request_size_max", 1_000_000)),
                      connection_timeout=float(config.get("eot_connection_timeout", 60.0)))
