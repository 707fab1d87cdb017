"""The VR rooms listener (``vr``), registered like any third-party protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from gtserver.interfaces import IWireProtocol

if TYPE_CHECKING:  # the plugin module stays light: Twisted imports it to list plugins
    from twisted.internet.protocol import Factory

    from gtserver.core import Core
    from gtserver.vr.settings import VRSettings


def _ranged(kind, low, high, what):
    def coerce(text):
        value = kind(text)
        if not low < value <= high:
            raise ValueError(f"{what} must be above {low} and at most {high}")
        return value
    coerce.coerceDoc = f"{what}: above {low}, at most {high}."
    return coerce


def _at_least(kind, low, what):
    def coerce(text):
        value = kind(text)
        if value < low:
            raise ValueError(f"{what} must be at least {low}")
        return value
    coerce.coerceDoc = f"{what}: at least {low}."
    return coerce


@implementer(IPlugin, IWireProtocol)
class VRRooms:
    name = "vr"
    description = "VR rooms, WebSocket"
    default_endpoints = ("tcp:42069",)
    options = [
        ("vr-fps", 1.0, "Pose ticks per second (fractions allowed).",
         _ranged(float, 0, 1000, "vr-fps"), ("fps",)),
        ("vr-history", 50, "Messages kept per room and sent to joiners.",
         _at_least(int, 0, "vr-history")),
        ("vr-max-frame", 65536,
         "Largest incoming message in bytes; a larger one gets 400 and a close (1009).",
         _ranged(int, 0, 64 * 1024 * 1024, "vr-max-frame")),
        ("vr-max-rate", 300.0, "Most frames a second per connection; more closes (1008).",
         _ranged(float, 0, 1e9, "vr-max-rate")),
        ("vr-send-buffer", 1048576,
         "Bytes that may wait for a client that does not read; more closes (1008).",
         _ranged(int, 0, 1 << 34, "vr-send-buffer")),
        ("vr-pose-log-rate", 0.0,
         "Pose records per second in the event log; 0 records every tick.",
         _at_least(float, 0, "vr-pose-log-rate")),
        ("vr-login-failures", None,
         "Wrong passwords for one account (counted over every listener) after which VR "
         "refuses its logins; default --login-failures-per-account",
         _at_least(int, 1, "vr-login-failures")),
        ("vr-login-window", None,
         "Seconds those wrong passwords count for VR; default --login-window",
         _ranged(float, 0, 1e9, "vr-login-window")),
        ("vr-login-timeout", 30.0,
         "Seconds a connection has to log in once open; then it is closed (1008).",
         _ranged(float, 0, 1e6, "vr-login-timeout")),
        ("vr-frame-timeout", 10.0,
         "Seconds the opening handshake, and each incoming message, may take to arrive; "
         "a slower one closes the connection (1008).",
         _ranged(float, 0, 1e6, "vr-frame-timeout")),
        ("vr-csv-log", None,
         "Also append events to this file as timestamp;ip;nick;room;action;message.", None),
    ]
    flags = [
        ("vr-any-password", "Accept any password, no accounts (demo mode)."),
        ("vr-changed-poses-only",
         "Ticks carry only the poses that changed (joiners get the full set once)."),
    ]

    def settings(self, options: Mapping[str, Any]) -> VRSettings:
        from gtserver.vr.settings import VRSettings
        return VRSettings.from_options(options)

    def build_factory(self, core: Core, settings: VRSettings) -> Factory:
        from gtserver.vr.adapter import VRServerFactory
        from gtserver.vr.rooms import RoomService

        reactor = core.reactor
        # Coalesced room events go out at the end of the reactor's turn.
        rooms = core.attach(RoomService(core.clock, core.events, settings.rooms,
                                        call_soon=lambda function: reactor.callLater(0, function),
                                        presence=core.presence))
        if settings.csv_log:
            from gtserver.vr.csvlog import CsvEventFile
            core.attach(CsvEventFile(settings.csv_log, core.clock, rooms))
        return VRServerFactory(core.accounts, rooms, core.clock, settings, core.trusted_proxies,
                               reactor=reactor)


vr = VRRooms()
