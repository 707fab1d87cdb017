"""The ultimate tic-tac-toe WebSocket listener, registered as a wire-protocol plugin."""

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
    from gtserver.uttt.settings import UtttSettings


def _ranged(kind, low, high, what, low_allowed=False):
    def coerce(text):
        value = kind(text)
        if not (low <= value if low_allowed else low < value) or not value <= high:
            raise ValueError(f"{what} must be {'at least' if low_allowed else 'above'} {low}"
                             f" and at most {high}")
        return value
    coerce.coerceDoc = f"{what}: {'at least' if low_allowed else 'above'} {low}, at most {high}."
    return coerce


def _timeout(what):
    coerce = _ranged(float, 0, 1e9, what, low_allowed=True)
    coerce.coerceDoc = f"{what}: seconds, 0 for no limit."
    return coerce


@implementer(IPlugin, IWireProtocol)
class UltimateTicTacToeListener:
    name = "uttt"
    description = "ultimate tic-tac-toe, WebSocket"
    default_endpoints = ("tcp:5556",)
    options = [
        ("uttt-match-idle-days", 7.0,
         "Days without a move after which a match is lost by the player to move.",
         positive(float, "uttt-match-idle-days")),
        ("uttt-max-open-matches", 5, "Open matches a user may have at once.",
         positive(int, "uttt-max-open-matches")),
        ("uttt-expiry-interval", 3600.0, "Seconds between idle-match checks.",
         positive(float, "uttt-expiry-interval")),
        ("uttt-login-failures", None,
         "Wrong passwords for one account (counted over every listener) after which uttt "
         "refuses its logins; default --login-failures-per-account",
         positive(int, "uttt-login-failures")),
        ("uttt-login-window", None,
         "Seconds those wrong passwords count for uttt; default --login-window",
         positive(float, "uttt-login-window")),
        ("uttt-max-frame", 1048576,
         "Largest incoming frame in bytes; a larger one gets an error and a close (1009).",
         _ranged(int, 0, 64 * 1024 * 1024, "uttt-max-frame")),
        ("uttt-max-rate", 100.0, "Most frames a second per connection; more closes (1008).",
         _ranged(float, 0, 1e9, "uttt-max-rate")),
        ("uttt-send-buffer", 1048576,
         "Bytes that may wait for a client that does not read; more closes (1008).",
         _ranged(int, 0, 1 << 34, "uttt-send-buffer")),
        ("uttt-login-timeout", 30.0,
         "Seconds a connection may stay open without logging in (then 1008).",
         _timeout("uttt-login-timeout")),
        ("uttt-frame-timeout", 10.0,
         "Seconds one frame may take from its first byte to its last (then 1008).",
         _timeout("uttt-frame-timeout")),
        ("uttt-handshake-timeout", 10.0,
         "Seconds the WebSocket opening handshake may take (then the TCP connection drops).",
         _timeout("uttt-handshake-timeout")),
    ]
    flags = []

    def settings(self, options: Mapping[str, Any]) -> UtttSettings:
        from gtserver.uttt.settings import UtttSettings
        return UtttSettings.from_options(options)

    def build_factory(self, core: Core, settings: UtttSettings) -> Factory:
        from gtserver.uttt.adapter import UtttServerFactory
        from gtserver.uttt.matchmaking import UltimateMatches

        if core.bus is None:
            matchmaking = core.attach(UltimateMatches(core.match_store, core.ratings,
                                                      core.accounts, core.clock,
                                                      settings.matchmaking,
                                                      presence=core.presence))
        else:  # a node of a deployment
            from gtserver.uttt.cluster import ClusterMatches
            matchmaking = core.attach(ClusterMatches(
                core.match_store, core.ratings, core.accounts, core.clock,
                settings.matchmaking, core.presence, core.bus, core.leases, core.calls))
        return UtttServerFactory(core.accounts, matchmaking, core.ratings, core.friends,
                                 core.clock, settings, core.trusted_proxies,
                                 reactor=core.reactor)


uttt = UltimateTicTacToeListener()
