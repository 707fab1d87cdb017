"""The ``eot`` listener: the turn-based game API (JSON requests ending in EOT\\0)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from gtserver.interfaces import IWireProtocol
from gtserver.option_types import positive

if TYPE_CHECKING:  # the plugin module stays light: Twisted imports it to list plugins
    from twisted.internet.protocol import Factory

    from gtserver.core import Core
    from gtserver.eot.settings import EOTSettings


@implementer(IPlugin, IWireProtocol)
class EOTGameAPI:
    name = "eot"
    description = "turn-based game API, one JSON request per TCP connection"
    default_endpoints = ("tcp:4711",)
    options = [
        ("eot-request-size-max", 1_000_000, "Largest request in bytes (EOT\\0 included).",
         positive(int, "eot-request-size-max")),
        ("eot-connection-timeout", 60.0,
         "Seconds a connection may take to deliver its whole request, and again "
         "to read its answer.", positive(float, "eot-connection-timeout")),
        ("eot-join-timeout", 300.0,
         "Seconds a join waits for the session to fill before it is refused.",
         positive(float, "eot-join-timeout")),
        ("eot-game-timeout", 3600.0,
         "Seconds without requests after which a session ends.",
         positive(float, "eot-game-timeout")),
        ("eot-finished-grace", 60.0,
         "Seconds without requests after which a session whose game is over, and "
         "whose players have all seen the end, is released (a restart within "
         "them keeps it).", positive(float, "eot-finished-grace")),
        ("eot-sessions-max", 10_000,
         "Sessions kept in memory at most; a new one ends the one idle the longest.",
         positive(int, "eot-sessions-max")),
    ]
    flags: list = []

    def settings(self, options: Mapping[str, Any]) -> EOTSettings:
        from gtserver.eot.settings import EOTSettings
        return EOTSettings.from_options(options)

    def build_factory(self, core: Core, settings: EOTSettings) -> Factory:
        from gtserver.eot.configure import build_factory
        return build_factory(core, settings)


eot = EOTGameAPI()
