"""The connection guard of every WebSocket listener, whatever protocol it speaks.

:class:`GuardedServerProtocol` is an Autobahn server protocol that enforces
its factory's :class:`Limits` (``factory.limits``), with every timer on
``factory.clock`` (an ``IReactorTime``, so tests can use ``task.Clock``). Call
:func:`guard_factory` on the factory once. Per connection:

* the opening handshake must be done within ``handshake_timeout`` seconds,
  or the TCP connection is dropped (there is no WebSocket yet to close);
* until the protocol calls :meth:`~GuardedServerProtocol.authenticated`, the
  connection is closed (1008) ``login_timeout`` seconds after it opened
  (:meth:`~GuardedServerProtocol.onLoginTimeout` may wait for a login that is
  being checked);
* one message must arrive within ``message_timeout`` seconds from its first
  byte to its last, control frames and partial headers included (a client
  trickling a frame is closed with 1008 and its TCP connection ended);
* a message over ``refuse_above`` bytes is not buffered: at its end the
  protocol's :meth:`~GuardedServerProtocol.onRefusedMessage` is called
  instead of ``onMessage``; one over ``max_message`` bytes gets
  :meth:`~GuardedServerProtocol.onOversizedMessage` as soon as a frame header
  announces the size, and the connection is closed with 1009;
* more than ``max_rate`` messages (and pings) a second, with a burst of two
  seconds' worth, close the connection with 1008;
* the connection is a streaming producer of its transport, so it learns when
  the client stops reading. While the transport's buffer is full, messages
  sent as *droppable* (superseded by the next one, like a pose tick) are
  skipped, and past ``send_buffer`` bytes of the others the connection is
  closed with 1008;
* a peer that does not answer our close frame within ``close_timeout``
  seconds has its TCP connection aborted.

Sending on a connection that is closing or closed is a silent no-op
(:meth:`~GuardedServerProtocol.send_bytes`,
:meth:`~GuardedServerProtocol.send_prepared`): a reply that was on its way
when the client left is nobody's error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from gtserver.metrics import Tally

#: WebSocket close code "policy violation".
CLOSE_POLICY = 1008
#: WebSocket close code "message too big".
CLOSE_TOO_BIG = 1009
_OPEN = WebSocketProtocol.STATE_OPEN
_CONNECTING = WebSocketProtocol.STATE_CONNECTING


@dataclass(frozen=True)
class Limits:
    """Per-connection limits; a timeout of 0 turns that timeout off."""

    max_message: int = 1 << 20
    refuse_above: int = 1 << 20
    max_rate: float = 100.0
    send_buffer: int = 1 << 20
    handshake_timeout: float = 10.0
    login_timeout: float = 30.0
    message_timeout: float = 10.0
    close_timeout: float = 2.0

    @property
    def burst(self) -> float:
        """Messages a connection may send at once after being quiet."""
        return max(2.0 * self.max_rate, 10.0)


def guard_factory(factory: Any, limits: Limits, clock: Any) -> None:
    """Give a WebSocket server factory its limits and clock.

    Autobahn's own size limits and handshake timeouts are turned off: its size
    limits drop the TCP connection without a close frame, and its timers run
    on the global reactor instead of ``clock``.
    """
    factory.limits = limits
    factory.clock = clock
    factory.setProtocolOptions(maxFramePayloadSize=0, maxMessagePayloadSize=0,
                               failByDrop=False, openHandshakeTimeout=0,
                               closeHandshakeTimeout=0)


@implementer(IPushProducer)
class _SendGate:
    """Told by the transport when its write buffer is over/under its limit."""

    def __init__(self, connection: GuardedServerProtocol) -> None:
        self.connection = connection

    def pauseProducing(self) -> None:
        self.connection.congested = True

    def resumeProducing(self) -> None:
        self.connection.congested = False
        self.connection.sent_while_congested = 0

    def stopProducing(self) -> None:
        self.connection.congested = True


class GuardedServerProtocol(WebSocketServerProtocol):
    """A WebSocket server protocol that enforces ``factory.limits``.

    Subclasses call ``super()`` in the Autobahn callbacks they override
    (``connectionMade``, ``onOpen``, ``connectionLost``, ``dataReceived``,
    the ``onMessage*`` and ``onFrame*`` hooks) and send with
    :meth:`send_bytes` or :meth:`send_prepared`.
    """

    # Not ``log``: that would replace Autobahn's own logger, whose disabled
    # debug calls are free, with one that emits every one of them.
    logger = Logger()
    #: Named in log lines.
    kind = "WebSocket"
    #: Counts the messages sent (a subclass binds its listener's /metrics counter).
    frames_sent: Tally = Tally()

    def __init__(self) -> None:
        super().__init__()
        #: The transport's write buffer is full: the client is not reading.
        self.congested = False
        #: Bytes sent since the buffer filled up (reset when it drains).
        self.sent_while_congested = 0
        self._tokens = 0.0
        self._refilled = 0.0
        self._handshake_timer: Any = None
        self._login_timer: Any = None
        self._message_timer: Any = None
        self._close_timer: Any = None
        #: When the message being received began to arrive (None between messages).
        self._partial_since: float | None = None
        #: Messages (and control frames outside a message) received in full.
        self._completed = 0
        #: The message arriving now is over ``refuse_above``: its data is dropped.
        self._refused = False
        self._refused_size = 0
        self._oversized = False

    @property
    def limits(self) -> Limits:
        return self.factory.limits

    @property
    def incomplete_since(self) -> float | None:
        """When the message being received began to arrive; None between messages."""
        return self._partial_since

    def describe_peer(self) -> str:
        """Who the connection is, for log lines."""
        return str(self.peer)

    # lifecycle

    def connectionMade(self) -> None:
        super().connectionMade()
        self._handshake_timer = self._later(self.limits.handshake_timeout,
                                            self._handshake_timeout_passed)

    def onOpen(self) -> None:
        self._handshake_timer = _cancel(self._handshake_timer)
        self.transport.registerProducer(_SendGate(self), True)
        self._tokens = self.limits.burst
        self._refilled = self.factory.clock.seconds()
        self._login_timer = self._later(self.limits.login_timeout, self._login_timeout_passed)

    def authenticated(self) -> None:
        """The client has identified itself: the login timeout no longer applies."""
        self._login_timer = _cancel(self._login_timer)

    def connectionLost(self, reason: Any = None) -> None:
        for name in ("_handshake_timer", "_login_timer", "_message_timer", "_close_timer"):
            setattr(self, name, _cancel(getattr(self, name)))
        self._partial_since = None
        super().connectionLost(reason)

    # timers

    def _later(self, delay: float, function: Any) -> Any:
        return self.factory.clock.callLater(delay, function) if delay > 0 else None

    def _handshake_timeout_passed(self) -> None:
        self._handshake_timer = None
        if self.state == _CONNECTING:
            self.logger.info("dropping {kind} connection of {peer}: no handshake within "
                             "{timeout:g} s", kind=self.kind, peer=self.describe_peer(),
                             timeout=self.limits.handshake_timeout)
            self.transport.abortConnection()

    def _login_timeout_passed(self) -> None:
        self._login_timer = None
        if self.state == _OPEN:
            self.onLoginTimeout()

    def onLoginTimeout(self) -> None:
        """No login within ``login_timeout``: by default, :meth:`close_late_login`.

        A protocol checking a login that arrived in time may instead wait for
        its outcome, and call :meth:`close_late_login` if it fails.
        """
        self.close_late_login()

    def close_late_login(self) -> None:
        """Close (1008) a connection that did not log in within ``login_timeout``."""
        self.close_connection(f"no login within {self.limits.login_timeout:g} s",
                              warn=False)

    def _message_timeout_passed(self) -> None:
        """The one message timer fired: close, or wait for a message begun since.

        The timer is not moved for every message (that would cost two heap
        operations per read that ends inside a frame); it checks when the
        message now arriving began and reschedules itself if that was later.
        """
        self._message_timer = None
        since = self._partial_since
        if since is None or self.state != _OPEN:
            return
        timeout = self.limits.message_timeout
        left = since + timeout - self.factory.clock.seconds()
        if left > 0:
            self._message_timer = self.factory.clock.callLater(left, self._message_timeout_passed)
            return
        self._partial_since = None
        # The peer's answer to our close frame would be read as the rest of
        # the unfinished message: no handshake, the TCP connection ends too.
        self.close_connection(f"a message took longer than {timeout:g} s to arrive",
                              then_drop=True)

    # incoming data

    def dataReceived(self, data: bytes) -> None:
        """Autobahn's ``dataReceived`` without its debug line (formatted on
        every read even when debug logging is off, about a tenth of the CPU
        of a VR pose stream), then the message clock.

        A message's clock starts with the read that brought its first byte:
        the read that ended the previous message, or the first read after a
        quiet spell.
        """
        completed = self._completed
        self._dataReceived(data)
        if self.state != _OPEN or not (self.data or self.current_frame is not None
                                       or self.inside_message):
            self._partial_since = None
        elif self._partial_since is None or self._completed != completed:
            self._partial_since = self.factory.clock.seconds()
            if self._message_timer is None and self.limits.message_timeout > 0:
                self._message_timer = self.factory.clock.callLater(
                    self.limits.message_timeout, self._message_timeout_passed)

    def onFrameEnd(self) -> Any:
        result = super().onFrameEnd()
        if not self.inside_message:
            self._completed += 1
        return result

    def onMessageBegin(self, isBinary: bool) -> None:
        super().onMessageBegin(isBinary)
        self._refused = self._oversized = False
        self._refused_size = 0

    def onMessageFrameBegin(self, length: int) -> None:
        super().onMessageFrameBegin(length)
        size = self.message_data_total_length
        if size > self.limits.max_message and not self._oversized:
            self._oversized = self._refused = True
            self.message_data = []
            self.onOversizedMessage(size)
            self.close_connection(f"message over {self.limits.max_message} bytes",
                                  code=CLOSE_TOO_BIG)
        elif size > self.limits.refuse_above and not self._refused:
            self._refused = True
            self.message_data = []
        self._refused_size = size

    def onMessageFrameData(self, payload: bytes) -> None:
        if not self._refused:
            super().onMessageFrameData(payload)

    def onMessageEnd(self) -> None:
        if not self._admit():
            self.message_data = None
            return
        if not self._refused:
            super().onMessageEnd()
            return
        self.message_data = None
        if not self._oversized and self.state == _OPEN:
            self.onRefusedMessage(self._refused_size)

    def onPing(self, payload: bytes) -> None:
        if self._admit():
            super().onPing(payload)

    def onRefusedMessage(self, size: int) -> None:
        """A message over ``refuse_above`` (at most ``max_message``) bytes ended."""

    def onOversizedMessage(self, size: int) -> None:
        """A message grew past ``max_message`` bytes; the connection closes next
        (a reply sent now goes out before the close frame)."""

    def _admit(self) -> bool:
        """Token bucket: False (and the connection closing) for a flooding client."""
        if self.state != _OPEN:
            return False
        limits = self.limits
        now = self.factory.clock.seconds()
        self._tokens = min(limits.burst, self._tokens + (now - self._refilled) * limits.max_rate)
        self._refilled = now
        if self._tokens < 1.0:
            self.close_connection(f"flood: more than {limits.max_rate:g} messages a second")
            return False
        self._tokens -= 1.0
        return True

    # outgoing data

    def send_bytes(self, payload: bytes, droppable: bool = False) -> bool:
        """Send a text message; False (and nothing sent) when the connection is
        closing or closed, or the message was dropped or was one too many for
        a client that is not reading (see :meth:`send_prepared`)."""
        if self.state != _OPEN:
            return False
        if self.congested and not self._may_queue(len(payload), droppable):
            return False
        self.sendMessage(payload)
        self.frames_sent.value += 1
        return True

    def send_prepared(self, prepared: Any, droppable: bool = False) -> bool:
        """Send an Autobahn prepared message (the same bytes for many connections).

        While the client is not reading, a ``droppable`` message (one the next
        supersedes) is skipped; any other counts against ``send_buffer``, and
        past that the connection is closed. Returns False if nothing was sent.
        """
        if self.state != _OPEN:
            return False
        frame = prepared.payloadHybi
        if self.congested and not self._may_queue(len(frame), droppable):
            return False
        if self._perMessageCompress is None:
            # What sendPreparedMessage does without compression, minus its
            # per-call debug formatting.
            self.transport.write(frame)
        else:
            self.sendPreparedMessage(prepared)
        self.frames_sent.value += 1
        return True

    def _may_queue(self, size: int, droppable: bool) -> bool:
        """Whether a message of ``size`` bytes may join a full send buffer."""
        if droppable:
            return False
        self.sent_while_congested += size
        if self.sent_while_congested > self.limits.send_buffer:
            self.close_connection(
                f"too slow: {self.sent_while_congested} bytes waiting to be sent")
            return False
        return True

    # closing

    def close_connection(self, reason: str, code: int = CLOSE_POLICY, warn: bool = True,
                         then_drop: bool = False) -> None:
        """Close with ``code`` (sendClose only takes 1000 and 3000-4999) and a
        log line; with ``then_drop``, end the TCP connection once the close
        frame is sent instead of waiting for the peer's answer."""
        if self.state != _OPEN:
            return
        log = self.logger.warn if warn else self.logger.info
        log("closing {kind} connection of {peer}: {reason}", kind=self.kind,
            peer=self.describe_peer(), reason=reason)
        self.onClosing()
        self.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:123])
        if then_drop:
            self.transport.loseConnection()

    def onClosing(self) -> None:
        """The server is closing the connection: stop handling its requests."""

    def sendCloseFrame(self, code: int | None = None, reasonUtf8: bytes | None = None,
                       isReply: bool = False) -> None:
        """Close, and abort the TCP connection if the peer does not answer in time."""
        was_open = self.state == _OPEN
        super().sendCloseFrame(code=code, reasonUtf8=reasonUtf8, isReply=isReply)
        if was_open and not isReply and self._close_timer is None:
            self._close_timer = self._later(self.limits.close_timeout,
                                            self.transport.abortConnection)


def _cancel(call: Any) -> None:
    """Cancel a pending delayed call (None or already run is fine); returns None."""
    if call is not None and call.active():
        call.cancel()
    return None
