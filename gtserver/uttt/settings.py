"""The settings of the ``uttt`` listener, built once from its options
(:data:`gtserver.uttt.plugin.UltimateTicTacToeListener.options`, the one place
of their defaults and checks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gtserver.core.accounts import DAY


@dataclass(frozen=True)
class MatchmakingSettings:
    #: Seconds without a move after which a match is lost by the player to move.
    match_idle: float
    #: Open matches a user may have at once.
    max_open_matches: int
    #: Seconds between idle-match checks.
    expiry_interval: float


@dataclass(frozen=True)
class UtttSettings:
    matchmaking: MatchmakingSettings
    #: This listener's wrong passwords per account and their window (None: the daemon's).
    login_failures: int | None
    login_window: float | None
    #: Largest incoming frame in bytes; most frames a second; bytes waiting for a reader.
    max_frame: int
    max_rate: float
    send_buffer: int
    #: Seconds (0: no limit) to log in, for one frame, for the opening handshake.
    login_timeout: float
    frame_timeout: float
    handshake_timeout: float

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> UtttSettings:
        return cls(
            matchmaking=MatchmakingSettings(
                match_idle=options["uttt-match-idle-days"] * DAY,
                max_open_matches=options["uttt-max-open-matches"],
                expiry_interval=options["uttt-expiry-interval"]),
            login_failures=options["uttt-login-failures"],
            login_window=options["uttt-login-window"],
            max_frame=options["uttt-max-frame"],
            max_rate=options["uttt-max-rate"],
            send_buffer=options["uttt-send-buffer"],
            login_timeout=options["uttt-login-timeout"],
            frame_timeout=options["uttt-frame-timeout"],
            handshake_timeout=options["uttt-handshake-timeout"])
