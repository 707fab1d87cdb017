"""The daemon's log: where twistd's options send it, as text or JSON lines,
reopened on SIGHUP.

twistd builds its log observer from ``--logfile`` and ``--nodaemon`` unless
the application carries an ``ILogObserver`` component. ``twistd gtserver``
sets that component to an observer writing to the very same place (standard
output, or a :class:`~twisted.python.logfile.LogFile`), so that it can reopen
the file when an external tool such as logrotate has moved it, and write JSON
when ``--log-format json`` asks for it. ``--logger`` and ``--syslog`` are left
to twistd.

The JSON form is one object per line, for journald and log shippers::

    {"time": 1700000000.25, "timestamp": "2023-11-14T22:13:20.250000+00:00",
     "level": "info", "namespace": "gtserver.core.accounts.Accounts",
     "message": "login refused for alice: wrong name or password",
     "fields": {"user": "alice"}}

``fields`` holds the event's own keys (values that are not JSON as their
text); a logged failure adds ``traceback``.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver, formatEvent, textFileLogObserver
from twisted.python.logfile import LogFile

FORMATS = ("text", "json")
#: What events of twisted.python.log carry besides their fields, already in
#: the record's time, level, message and traceback.
LEGACY_KEYS = frozenset({"message", "time", "isError", "format", "failure"})


def event_as_json_line(event: dict[str, Any]) -> str:
    """One log event as a line of JSON (see the module docstring)."""
    level = event.get("log_level")
    moment = event.get("log_time")
    legacy = event.get("log_namespace") == "log_legacy"
    record: dict[str, Any] = {
        "time": moment,
        "timestamp": (datetime.fromtimestamp(moment, timezone.utc).isoformat()
                      if isinstance(moment, (int, float)) else None),
        "level": getattr(level, "name", None),
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
        "fields": {str(key): json_value(value) for key, value in event.items()
                   if not str(key).startswith("log_")
                   and not (legacy and key in LEGACY_KEYS)},
    }
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:  # a failure that cannot format itself still gets a line
            record["traceback"] = repr(failure)
    # ASCII escapes keep a line valid UTF-8 whatever a client sent (lone surrogates)
    return json.dumps(record, allow_nan=False, default=str) + "\n"


def json_value(value: Any) -> Any:
    """``value`` if it is plain JSON, else its text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    return str(value)


def json_file_observer(out: IO[str]) -> ILogObserver:
    return FileLogObserver(out, event_as_json_line)


def json_observer() -> ILogObserver:
    """JSON lines on standard output: ``twistd --logger gtserver.logs.json_observer``."""
    return json_file_observer(sys.stdout)


class DaemonLog:
    """The log file (or standard output) of one daemon, and its observer."""

    def __init__(self, out: IO[str], log_format: str = "text") -> None:
        if log_format not in FORMATS:
            raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
        self.out = out
        self.log_format = log_format
        self.observer: ILogObserver = (json_file_observer(out) if log_format == "json"
                                       else textFileLogObserver(out))

    @classmethod
    def from_twistd_options(cls, twistd: Any, log_format: str) -> DaemonLog | None:
        """The log twistd's options describe, or None where twistd keeps the
        choice (``--logger``, ``--syslog``, a daemon told to log to ``-``)."""
        if twistd is None or twistd.get("logger") or twistd.get("syslog"):
            return None
        path, foreground = twistd.get("logfile"), twistd.get("nodaemon")
        if path == "-" and not foreground:
            return None  # twistd refuses this itself
        if path == "-" or (foreground and not path):
            return cls(sys.stdout, log_format)
        log_file = LogFile.fromFullPath(path or "twistd.log")
        rotate_on_sigusr1(log_file)
        return cls(log_file, log_format)

    @property
    def path(self) -> str | None:
        """The log file's path, or None for standard output."""
        return self.out.path if isinstance(self.out, LogFile) else None

    def reopen(self) -> bool:
        """Reopen the log file (moved away by logrotate, say); False for
        standard output, which has nothing to reopen."""
        if not isinstance(self.out, LogFile):
            return False
        self.out.reopen()
        return True


def rotate_on_sigusr1(log_file: LogFile) -> None:
    """Keep twistd's own behaviour for its log files: SIGUSR1 rotates."""
    if signal.getsignal(signal.SIGUSR1):
        return

    def rotate(number: int, frame: Any) -> None:
        from twisted.internet import reactor
        reactor.callFromThread(log_file.rotate)

    signal.signal(signal.SIGUSR1, rotate)
