"""Builds the EOT listener's factory from its settings and the core's services."""

from __future__ import annotations

from typing import Any

from gtserver.core.matches import MatchService
from gtserver.eot.lobby import SessionService
from gtserver.eot.protocol import EOTFactory
from gtserver.eot.settings import EOTSettings
from gtserver.games import GameFactory
from gtserver.games.chat import Chat
from gtserver.games.matrix import MatrixGameFactory, PrisonersDilemma, dilemma_payoffs


def game_settings(factory: Any, settings: EOTSettings) -> dict[str, Any] | None:
    """The settings the EOT options give games of ``factory`` (None: not configurable)."""
    if isinstance(factory, MatrixGameFactory):
        return {"rounds": settings.pd_rounds,
                "payoffs": dilemma_payoffs(*settings.pd_payoffs)
                if issubclass(factory.game_class, PrisonersDilemma) else None}
    if isinstance(factory, GameFactory) and issubclass(factory.game_class, Chat):
        return {"line_max": settings.chat_line_max,
                "history_max": settings.chat_history_max}
    return None


def configure_games(matches: MatchService, settings: EOTSettings) -> None:
    """Give this match service its own copies of the games, configured.

    The installed plugin objects are never changed, so services built with
    other options (a second daemon in one process, the tests) do not share
    settings.
    """
    for name, factory in list(matches.games.items()):
        game = game_settings(factory, settings)
        if game is not None:
            matches.games[name] = factory.configured(**game)


def build_factory(core: Any, settings: EOTSettings) -> EOTFactory:
    """The EOT factory, its lobby attached to ``core`` (a L{gtserver.core.Core})."""
    configure_games(core.matches, settings)
    lobby = core.attach(SessionService(core.matches, core.clock, settings.lobby))
    return EOTFactory(lobby, core.clock, request_size_max=settings.request_size_max,
                      connection_timeout=settings.connection_timeout)
