"""Deadlines for WebSocket connections, for any Autobahn server protocol.

A connection that never finishes its opening handshake, never logs in, or
sends one message a byte at a time would otherwise hold its socket and
buffers forever. :class:`WebSocketDeadlines` is a mixin for an Autobahn
``WebSocketServerProtocol`` (it knows nothing of any protocol's messages)
that bounds:

* the opening handshake: ``handshake`` seconds from the TCP connection to
  the open WebSocket, else the TCP connection is aborted (there is no
  WebSocket yet to close);
* the login: ``login`` seconds from the open WebSocket until the adapter
  calls :meth:`~WebSocketDeadlines.authenticated`, else
  :meth:`~WebSocketDeadlines.login_deadline_passed` (by default: close 1008);
* each incoming message: ``message`` seconds from its first byte to the end
  of its last frame, control frames and partial frame headers included, else
  :meth:`~WebSocketDeadlines.message_deadline_passed` (by default: close 1008).

Use::

    class MyProtocol(WebSocketDeadlines, WebSocketServerProtocol):
        def onOpen(self):
            self.opened()             # the login deadline starts
        ... self.authenticated()      # once logged in

    factory.deadlines = Deadlines(clock, handshake=10, login=30, message=10)
    factory.setProtocolOptions(openHandshakeTimeout=0)  # the mixin bounds it

Time comes from ``deadlines.clock`` (an ``IReactorTime``), so tests drive it
with ``task.Clock``. A connection holds at most two timers, and the message
timer is never cancelled and re-made per frame: when it fires it checks
whether a message is still incomplete and since when, and reschedules itself
if a newer one started.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.logger import Logger

_OPEN = WebSocketProtocol.STATE_OPEN
_CONNECTING = WebSocketProtocol.STATE_CONNECTING
#: WebSocket close code "policy violation".
CLOSE_POLICY = 1008


@dataclass(frozen=True)
class Deadlines:
    """The limits, in seconds; ``None`` or 0 turns one off."""

    clock: Any
    handshake: float | None = 10.0
    login: float | None = 30.0
    message: float | None = 10.0


class WebSocketDeadlines:
    """Mixin (before ``WebSocketServerProtocol`` in the bases): see the module."""

    deadline_log = Logger()
    factory: Any
    transport: Any
    state: int

    _setup_call: Any = None
    _message_call: Any = None
    #: When the message being received began arriving (None: none is incomplete).
    _incomplete_since: float | None = None

    # hooks from Autobahn/Twisted

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[misc]
        deadlines = self.factory.deadlines
        if deadlines.handshake:
            self._setup_call = deadlines.clock.callLater(deadlines.handshake,
                                                         self._handshake_deadline)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)  # type: ignore[misc]
        self.watch_input()

    def connectionLost(self, reason: Any = None) -> None:
        self._cancel_setup()
        if self._message_call is not None and self._message_call.active():
            self._message_call.cancel()
        self._message_call = None
        self._incomplete_since = None
        super().connectionLost(reason)  # type: ignore[misc]

    @property
    def incomplete_since(self) -> float | None:
        """When the message being received began to arrive; None between messages."""
        return self._incomplete_since

    # called by the adapter

    def opened(self) -> None:
        """The opening handshake is done (call from ``onOpen``): the login clock starts."""
        self._cancel_setup()
        deadlines = self.factory.deadlines
        if deadlines.login:
            self._setup_call = deadlines.clock.callLater(deadlines.login,
                                                         self._login_deadline)

    def authenticated(self) -> None:
        """The connection logged in: no login deadline any more."""
        self._cancel_setup()

    def watch_input(self) -> None:
        """Note whether a message is incomplete; call after Autobahn consumed input.

        Only needed by a protocol that overrides ``dataReceived`` without
        calling the mixin's.
        """
        if self.state != _OPEN:
            return
        incomplete = (self.current_frame is not None or self.inside_message
                      or bool(self.data))
        if not incomplete:
            self._incomplete_since = None
        elif self._incomplete_since is None:
            deadlines = self.factory.deadlines
            if not deadlines.message:
                return
            self._incomplete_since = deadlines.clock.seconds()
            if self._message_call is None:
                self._message_call = deadlines.clock.callLater(deadlines.message,
                                                               self._message_deadline)

    # what happens when one passes (adapters may override)

    def login_deadline_passed(self) -> None:
        """No login in time: close with 1008."""
        self.close_for_deadline(f"no login within {self.factory.deadlines.login:g} s")

    def message_deadline_passed(self) -> None:
        """A message is still incomplete: close with 1008."""
        self.close_for_deadline(
            f"a message took longer than {self.factory.deadlines.message:g} s to arrive")

    def close_for_deadline(self, reason: str) -> None:
        self.deadline_log.info("closing WebSocket connection from {peer}: {reason}",
                               peer=getattr(self, "peer", None), reason=reason)
        if self.state == _OPEN:
            self.sendCloseFrame(code=CLOSE_POLICY,  # type: ignore[attr-defined]
                                reasonUtf8=reason.encode()[:123])
        else:
            self.transport.abortConnection()

    # internals

    def _cancel_setup(self) -> None:
        if self._setup_call is not None and self._setup_call.active():
            self._setup_call.cancel()
        self._setup_call = None

    def _handshake_deadline(self) -> None:
        self._setup_call = None
        if self.state == _CONNECTING:
            self.deadline_log.info(
                "dropping connection from {peer}: no WebSocket handshake within {limit:g} s",
                peer=getattr(self, "peer", None), limit=self.factory.deadlines.handshake)
            self.transport.abortConnection()

    def _login_deadline(self) -> None:
        self._setup_call = None
        if self.state == _OPEN:
            self.login_deadline_passed()

    def _message_deadline(self) -> None:
        self._message_call = None
        since = self._incomplete_since
        if since is None or self.state != _OPEN:
            return
        deadlines = self.factory.deadlines
        left = since + deadlines.message - deadlines.clock.seconds()
        if left > 0:  # this message began after the one the timer was set for
            self._message_call = deadlines.clock.callLater(left, self._message_deadline)
            return
        self._incomplete_since = None
        self.message_deadline_passed()
