"""The web monitor listener (``web``), registered like any third-party protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.plugin import IPlugin
from twisted.web.resource import Resource
from zope.interface import implementer

from gtserver.interfaces import IWireProtocol
from gtserver.web.auth import read_token_file

if TYPE_CHECKING:  # the plugin module stays light: Twisted imports it to list plugins
    from twisted.internet.protocol import Factory

    from gtserver.core import Core
    from gtserver.web.settings import WebSettings


def _positive(kind: type, what: str) -> Any:
    def coerce(text: str) -> Any:
        value = kind(text)
        if not 0 < value <= 1e6:
            raise ValueError(f"{what} must be above 0 and at most 1000000")
        return value
    coerce.coerceDoc = f"{what}: above 0."
    return coerce


@implementer(IPlugin, IWireProtocol)
class WebMonitor:
    name = "web"
    description = "web monitor, JSON API, metrics and health (HTTP)"
    default_endpoints = ("tcp:8080:interface=127.0.0.1",)
    options = [
        ("web-token-file", None,
         "File holding the token of the monitor and its API (one line, at least 16 "
         "characters, not readable by every user): typed at the login page, or sent as "
         "Authorization: Bearer TOKEN.", read_token_file),
        ("web-refresh", 1.0, "Seconds between two live updates of the monitor.",
         _positive(float, "web-refresh")),
        ("web-dropout-minutes", 30.0,
         "Minutes a disconnection stays in the monitor's dropout view.",
         _positive(float, "web-dropout-minutes")),
        ("web-session-hours", 12.0,
         "Hours a monitor login lasts without being used.",
         _positive(float, "web-session-hours")),
    ]
    flags = [
        ("web-metrics-token", "Require the --web-token-file token on /metrics."),
    ]

    def settings(self, options: Mapping[str, Any]) -> WebSettings:
        from gtserver.web.settings import WebSettings
        return WebSettings.from_options(options)

    def build_factory(self, core: Core, settings: WebSettings) -> Factory:
        from gtserver.web.auth import WebAuth
        from gtserver.web.monitor import Monitor
        from gtserver.web.site import WebSite

        monitor = Monitor(core, settings.refresh, settings.dropout_window)
        auth = WebAuth(core, settings.token, settings.session_lifetime)
        return WebSite(monitor, auth, operator_resources(
            monitor, settings.token if settings.metrics_token else None),
            core.trusted_proxies)


def operator_resources(monitor: Any, metrics_token: bytes | None) -> dict[bytes, Resource]:
    """``/metrics`` and ``/health`` (:mod:`gtserver.web.metrics`)."""
    from gtserver.web import metrics

    def check() -> Any:  # the service tree exists by the time anyone asks
        return metrics.daemon_health(monitor.core.parent, monitor.core.reactor)()
    return {b"metrics": metrics.MetricsResource(metrics.REGISTRY, metrics_token),
            b"health": metrics.HealthResource(check)}


web = WebMonitor()
