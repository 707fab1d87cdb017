"""The settings of the ``vr`` listener, built once from its options
(:data:`gtserver.vr.plugin.VRRooms.options`, the one place of their defaults
and checks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gtserver.vr.rooms import RoomSettings


@dataclass(frozen=True)
class VRSettings:
    rooms: RoomSettings
    #: Accept any password, no accounts (demo mode).
    any_password: bool
    #: This listener's wrong passwords per account and their window (None: the daemon's).
    login_failures: int | None
    login_window: float | None
    #: Largest incoming message in bytes.
    max_frame: int
    #: Most frames a second per connection.
    max_rate: float
    #: Bytes that may wait for a client that does not read.
    send_buffer: int
    #: Seconds to log in once open; seconds for the handshake and each message.
    login_timeout: float
    frame_timeout: float
    #: A CSV file that mirrors the room events, if any.
    csv_log: str | None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> VRSettings:
        return cls(
            rooms=RoomSettings(fps=options["vr-fps"], history=options["vr-history"],
                               changed_only=bool(options["vr-changed-poses-only"]),
                               pose_log_rate=options["vr-pose-log-rate"]),
            any_password=bool(options["vr-any-password"]),
            login_failures=options["vr-login-failures"],
            login_window=options["vr-login-window"],
            max_frame=options["vr-max-frame"],
            max_rate=options["vr-max-rate"],
            send_buffer=options["vr-send-buffer"],
            login_timeout=options["vr-login-timeout"],
            frame_timeout=options["vr-frame-timeout"],
            csv_log=options["vr-csv-log"] or None)
