"""The settings of the ``web`` listener, built once from its options
(:data:`gtserver.web.plugin.WebMonitor.options`, the one place of their
defaults and checks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WebSettings:
    #: The token of the monitor and its API (from --web-token-file), if any.
    token: bytes | None
    #: Seconds between two live updates of the monitor.
    refresh: float
    #: Seconds a disconnection stays in the dropout view.
    dropout_window: float
    #: Seconds a monitor login lasts without being used.
    session_lifetime: float
    #: Whether /metrics asks for the token.
    metrics_token: bool

    def __post_init__(self) -> None:
        if self.metrics_token and self.token is None:
            raise ValueError("--web-metrics-token needs --web-token-file")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> WebSettings:
        return cls(token=options["web-token-file"],
                   refresh=options["web-refresh"],
                   dropout_window=60.0 * options["web-dropout-minutes"],
                   session_lifetime=3600.0 * options["web-session-hours"],
                   metrics_token=bool(options["web-metrics-token"]))
