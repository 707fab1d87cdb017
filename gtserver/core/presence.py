"""Who is connected now, and who disconnected recently (the dropout view).

Services that hold logged-in connections tell the core's instance
(``core.presence``, passed to them by their plugins) when a connection
arrives and when it is gone (the room service and the ultimate tic-tac-toe
matchmaking do, from their own connect and disconnect calls, so no wire
adapter needs to know about it). The web monitor reads
:meth:`Presence.snapshot` over its own dropout window and can close a
user's connections.

A connection is any object; what is kept about it is plain data. Closing
one asks it for a WebSocket close (``sendClose``) when it has one, else
drops its transport.

With an event log, every logged-in connection that ends is recorded there as
a ``logout`` of its listener, with how long it lasted (docs/export.md): the
one place every connection end of the logged-in listeners passes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

#: Default length of the dropout view, in minutes.
DEFAULT_DROPOUT_MINUTES = 30.0
#: Dropouts kept at most, whatever the window (a flood of short connections
#: must not grow memory).
MAX_DROPOUTS = 10_000
#: Event kind of a logged-in connection's end in the research log.
LOGOUT = "logout"
#: WebSocket close code sent to a connection closed by the operator (an
#: application code: clients see why in the reason).
CLOSE_BY_OPERATOR = 4000


@dataclass
class Connection:
    source: str
    user: str
    address: str | None
    since: float


@dataclass(frozen=True)
class Dropout:
    source: str
    user: str
    address: str | None
    connected: float
    left: float


class Presence:
    """The shared instance is ``core.presence``."""

    def __init__(self, clock: IReactorTime, events: Any = None) -> None:
        """``events`` is the research log (its ``record`` method), or None."""
        self.clock = clock
        self.events = events
        self.connections: dict[Any, Connection] = {}
        self.dropouts: deque[Dropout] = deque(maxlen=MAX_DROPOUTS)

    def arrived(self, connection: Any, source: str, user: str, address: str | None) -> None:
        """A logged-in connection; a second call for the same one changes nothing."""
        if connection not in self.connections:
            self.connections[connection] = Connection(source, user, address,
                                                      self.clock.seconds())

    def gone(self, connection: Any, **details: Any) -> None:
        """The connection closed (any reason); it enters the dropout view.

        ``details`` (JSON values, e.g. the rooms or matches it was in) are
        added to its ``logout`` event's data.
        """
        entry = self.connections.pop(connection, None)
        if entry is None:
            return
        now = self.clock.seconds()
        self.dropouts.append(Dropout(entry.source, entry.user, entry.address,
                                     entry.since, now))
        if self.events is not None:
            self.events.record(entry.source, LOGOUT, user=entry.user, address=entry.address,
                               data={"since": entry.since, "seconds": now - entry.since,
                                     **details},
                               time=now)

    def of_user(self, user: str, source: str | None = None) -> list[Any]:
        """Connections of ``user`` (on listener ``source`` only, if given)."""
        return [connection for connection, entry in self.connections.items()
                if entry.user == user and source in (None, entry.source)]

    def close(self, connection: Any, reason: str) -> None:
        """Close one connection as the operator asked."""
        if hasattr(connection, "sendClose"):
            # The protocol's own close timeout drops a peer that never answers.
            connection.sendClose(code=CLOSE_BY_OPERATOR, reason=reason)
        else:
            connection.transport.loseConnection()

    def recent_dropouts(self, window: float) -> list[Dropout]:
        """Disconnections within the last ``window`` seconds, newest first."""
        horizon = self.clock.seconds() - window
        return [entry for entry in reversed(self.dropouts) if entry.left >= horizon]

    def snapshot(self, window: float = 60.0 * DEFAULT_DROPOUT_MINUTES) -> dict[str, Any]:
        """Who is connected, and who left within the last ``window`` seconds."""
        now = self.clock.seconds()
        connected = sorted(self.connections.values(), key=lambda entry: entry.since)
        return {
            "window_minutes": window / 60.0,
            "connected": [{"source": entry.source, "user": entry.user,
                           "address": entry.address, "since": entry.since,
                           "seconds": now - entry.since} for entry in connected],
            "dropouts": [{"source": entry.source, "user": entry.user,
                          "address": entry.address, "connected": entry.connected,
                          "left": entry.left, "ago": now - entry.left,
                          "stayed": entry.left - entry.connected}
                         for entry in self.recent_dropouts(window)],
        }
