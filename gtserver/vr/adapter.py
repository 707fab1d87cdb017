"""The VR rooms listener: Autobahn WebSocket in front of the room service.

One :class:`VRServerProtocol` per connection parses frames, calls
:class:`~gtserver.vr.rooms.RoomService` and the shared accounts, and renders
replies. It is the room service's *sink* for that connection: room frames are
encoded once per broadcast (an Autobahn prepared message) and the same bytes
go to every member.

Protection against slow and hostile clients, per connection:

* outgoing bytes: the connection registers as a streaming producer on its
  transport, so it learns when the transport's buffer is full. While it is,
  pose ticks are dropped (the next one supersedes them anyway) and every other
  frame counts against ``send_buffer`` bytes; past that the connection is
  closed with code 1008 and a log line. Its memory stays bounded and nobody
  else waits for it.
* incoming frames: a message larger than ``max_frame`` bytes is answered
  with 400 as soon as its frame header announces the size, and the
  connection is closed with code 1009 (its data is never buffered). More
  than ``max_rate`` frames a second
  (with a burst of two seconds' worth) close the connection with code 1008.
* time (:mod:`gtserver.core.deadlines`): the opening handshake and each
  incoming message must arrive within ``frame_timeout`` seconds, and a
  connection must log in within ``login_timeout`` seconds of opening; else it
  is closed with code 1008 (a handshake that never ends is cut off).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from gtserver.core.deadlines import Deadlines, WebSocketDeadlines
from gtserver.core.errors import CoreError, InvalidName
from gtserver.core.login import LoginPolicy
from gtserver.core.peers import Peer, TrustedProxies
from gtserver.store import StoreError, Unstorable
from gtserver.vr import wire
from gtserver.vr.memory import HeapTrimmer
from gtserver.vr.rooms import (
    LOBBY,
    TRANSFORM,
    AlreadyInRoom,
    BadPose,
    InvalidKind,
    InvalidRoomName,
    NotInRoom,
    RoomService,
    storable,
)
from gtserver.web import metrics

CLOSE_POLICY = 1008
#: WebSocket close code for a message over the size limit ("message too big").
CLOSE_TOO_BIG = 1009
#: Seconds a peer has to answer our close frame before the TCP connection is aborted.
CLOSE_TIMEOUT = 2.0
MAX_NAME = 64
#: Frames queued while a login is in progress; more than this is a flood.
MAX_BACKLOG = 256
_OPEN = WebSocketProtocol.STATE_OPEN
_METRICS = metrics.ListenerMetrics("vr")
#: Bound once: it is counted for every frame to every member.
_SENT = _METRICS.sent
#: Room message types counted under their own name in /metrics (others: "say").
_ROOM_KINDS = frozenset(("join", "leave", "list", TRANSFORM))
#: System commands counted under their own name in /metrics (others: "other").
_SYSTEM_KINDS = frozenset(("ping", "login", "rooms"))


@implementer(IPushProducer)
class _SendGate:
    """Told by the transport when its write buffer is over/under its limit."""

    def __init__(self, connection: VRServerProtocol) -> None:
        self.connection = connection

    def pauseProducing(self) -> None:
        self.connection.congested = True

    def resumeProducing(self) -> None:
        self.connection.congested = False
        self.connection.queued_while_congested = 0

    def stopProducing(self) -> None:
        self.connection.congested = True


class VRServerProtocol(WebSocketDeadlines, WebSocketServerProtocol):
    # Not ``log``: that would replace Autobahn's own logger, whose disabled
    # debug calls are free, with one that builds an event for every frame.
    logger = Logger()

    factory: VRServerFactory

    def __init__(self) -> None:
        super().__init__()
        self.user: str | None = None
        #: The client (behind a trusted proxy, the one it names).
        self.peer: Peer | None = None
        self.address: str | None = None
        self.congested = False
        self.queued_while_congested = 0
        self._backlog: deque[bytes | None] = deque()
        self._busy = False
        self._tokens = 0.0
        self._refilled = 0.0
        self._close_timer: Any = None
        #: The message arriving now is over ``max_frame``: its data is dropped.
        self._oversized = False
        #: The login deadline passed while a login was being checked.
        self._login_overdue = False

    # connection lifecycle

    def connectionMade(self) -> None:
        super().connectionMade()
        _METRICS.connections.value += 1

    def onConnect(self, request: Any) -> None:
        self.peer = self.factory.trusted_proxies.client(
            Peer.of(self.transport), request.headers.get("x-forwarded-for"))
        self.address = self.peer.address
        return None

    def onOpen(self) -> None:
        self.opened()  # the login deadline starts
        self.transport.registerProducer(_SendGate(self), True)
        self._tokens = self.factory.burst
        self._refilled = self.factory.clock.seconds()
        self.factory.connections.add(self)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.connections.discard(self)
        self._backlog.clear()
        if self.user is not None:
            self.factory.rooms.disconnect(self)

    # incoming frames

    def dataReceived(self, data: bytes) -> None:
        """Autobahn's ``dataReceived`` without its debug line.

        Autobahn formats that line's arguments on every read even when debug
        logging is off, which costs about a tenth of the CPU of a pose stream.
        """
        self._dataReceived(data)
        self.watch_input()

    # Autobahn's own size limits are off: they would drop the connection
    # without a word. These hooks notice a message growing past ``max_frame``
    # as soon as its frame header says so, answer 400 and close with 1009,
    # never buffering the excess.

    def onMessageBegin(self, isBinary: bool) -> None:
        super().onMessageBegin(isBinary)
        self._oversized = False

    def onMessageFrameBegin(self, length: int) -> None:
        super().onMessageFrameBegin(length)
        if self.message_data_total_length > self.factory.max_frame and not self._oversized:
            self._oversized = True
            self.message_data = []
            self._reply(wire.BAD_REQUEST)
            self._close_for_policy(
                f"message over {self.factory.max_frame} bytes", code=CLOSE_TOO_BIG)

    def onMessageFrameData(self, payload: bytes) -> None:
        if not self._oversized:
            super().onMessageFrameData(payload)

    def onMessageEnd(self) -> None:
        if not self._oversized:
            super().onMessageEnd()
            return
        self._oversized = False
        self.message_data = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        _METRICS.received.value += 1
        if not self._admit():
            return
        if self._busy:
            if len(self._backlog) >= MAX_BACKLOG:
                self._close_for_policy("too many frames while logging in")
                return
            self._backlog.append(payload)
            return
        self._handle(payload)

    def _admit(self) -> bool:
        """Token bucket: False (and the connection closing) for a flooding client."""
        factory = self.factory
        now = factory.clock.seconds()
        self._tokens = min(factory.burst, self._tokens + (now - self._refilled) * factory.max_rate)
        self._refilled = now
        if self._tokens < 1.0:
            self._close_for_policy(f"flood: more than {factory.max_rate:g} frames a second")
            return False
        self._tokens -= 1.0
        return True

    def _handle(self, payload: bytes) -> None:
        try:
            message = wire.decode(payload)
        except wire.BadFrame:
            _METRICS.request("invalid", "invalid_structure")
            self._reply(wire.INVALID_STRUCTURE)
            return
        except wire.BadValue:
            _METRICS.request("invalid", "bad_request")
            self._reply(wire.BAD_REQUEST)
            return
        try:
            if not isinstance(message, dict):
                _METRICS.request("invalid", "bad_request" if self.user else "denied")
                self._reply(wire.BAD_REQUEST if self.user else wire.ACCESS_DENIED)
            elif "system" in message:
                self._system(message)
            elif self.user is None:
                _METRICS.request("room", "denied")
                self._reply(wire.ACCESS_DENIED)
            else:
                self._room_message(message)
        except Exception:
            _METRICS.error("internal")
            self.logger.failure("VR frame from {address} failed", address=self.address)
            self._reply(wire.INTERNAL_ERROR)

    def _system(self, message: dict) -> None:
        command = message["system"]
        if command != "login":      # logins are counted with their outcome
            known = isinstance(command, str) and command in _SYSTEM_KINDS
            _METRICS.request(command if known else "other",
                             "ok" if command == "ping" else "denied" if self.user is None
                             else "ok" if known else "not_recognized")
        if command == "ping":
            self._reply(wire.PONG)
        elif command == "login":
            self._login(message.get("options"))
        elif self.user is None:
            self._reply(wire.ACCESS_DENIED)
        elif command == "rooms":
            self._reply(wire.LISTING, self.factory.rooms.room_titles())
        else:
            self._reply(wire.NOT_RECOGNIZED)

    def _room_message(self, message: dict) -> None:
        room, kind = message.get("room"), message.get("type")
        if kind is None:
            kind = "msg"  # absent, or null as some JSON writers put an unset field
        if not isinstance(room, str) or "data" not in message or not isinstance(kind, str):
            self._reply(wire.BAD_REQUEST)
            return
        rooms = self.factory.rooms
        outcome = "ok"
        try:
            if kind == "join":
                self._send_join_sequence(room, rooms.join(self, room))
            elif kind == "leave":
                rooms.leave(self, room)
            elif kind == "list":
                self._send_frame(wire.member_list_frame(room, rooms.member_entries(self, room)))
            elif kind == TRANSFORM:
                rooms.set_pose(self, room, message["data"])
            else:
                rooms.say(self, room, kind, message["data"])
        except AlreadyInRoom:
            outcome = "conflict"
            self._reply(wire.CONFLICT)
        except NotInRoom:
            outcome = "not_in_room"
            self._reply(wire.UNAUTHORIZED)
        except (InvalidRoomName, InvalidKind, BadPose):
            outcome = "bad_request"
            self._reply(wire.BAD_REQUEST)
        _METRICS.request(kind if kind in _ROOM_KINDS else "say", outcome)

    # login

    def _login(self, options: Any) -> None:
        if self.user is not None:
            _METRICS.request("login", "conflict")
            self._reply(wire.CONFLICT)
            return
        credentials = _credentials(options)
        if credentials is None:
            _METRICS.request("login", "bad_request")
            self._reply(wire.BAD_REQUEST)
            return
        self._busy = True
        d = ensureDeferred(self._authenticate(*credentials))
        d.addErrback(self._login_failed)
        d.addBoth(self._drain_backlog)

    async def _authenticate(self, name: str, password: str) -> None:
        factory = self.factory
        if not factory.any_password:
            try:
                await factory.core.accounts.login(name, password, self.peer,
                                                  factory.login_policy)
            except CoreError:  # wrong password, throttled and the like
                _METRICS.request("login", "denied")
                self._reply(wire.ACCESS_DENIED)
                return
            except Unstorable:  # text the database cannot hold: bad input
                _METRICS.request("login", "bad_request")
                self._reply(wire.BAD_REQUEST)
                return
            except StoreError as error:
                _METRICS.request("login", "store_error")
                _METRICS.error("store")
                self.logger.warn("VR login of {name} failed: {error}", name=name, error=error)
                self._reply(wire.INTERNAL_ERROR)
                return
        if self.state != _OPEN:
            return  # gone while the password was being checked
        self.user = name
        _METRICS.request("login", "ok")
        self.authenticated()
        self._reply(wire.ACCESS_GRANTED)
        self._send_join_sequence(LOBBY, factory.rooms.join(self, LOBBY))

    def _login_failed(self, failure: Any) -> None:
        _METRICS.error("internal")
        self.logger.failure("VR login failed", failure)
        self._reply(wire.INTERNAL_ERROR)

    def login_deadline_passed(self) -> None:
        if self._busy:  # a login sent in time is being checked: its outcome decides
            self._login_overdue = True
            return
        self._close_for_policy(f"no login within {self.factory.deadlines.login:g} s")

    def message_deadline_passed(self) -> None:
        self._close_for_policy(
            f"a message took longer than {self.factory.deadlines.message:g} s to arrive")

    def _drain_backlog(self, _: Any) -> None:
        self._busy = False
        if self._login_overdue and self.user is None and self.state == _OPEN:
            self._close_for_policy(f"no login within {self.factory.deadlines.login:g} s")
            return
        while self._backlog and not self._busy and self.state == _OPEN:
            self._handle(self._backlog.popleft())

    # outgoing frames

    def deliver(self, room: str, events: list[dict], shared: dict, droppable: bool) -> bool:
        """The room service's sink interface: one frame of room events."""
        prepared = shared.get(VRServerFactory)
        if prepared is None:
            prepared = shared[VRServerFactory] = self.factory.prepareMessage(
                wire.room_frame(room, events))
        return self._send_prepared(prepared, droppable)

    def _send_join_sequence(self, room: str, sequence: Any) -> None:
        self._send_frame(wire.member_list_frame(room, sequence.member_entries))
        if sequence.history:
            self._send_frame(wire.room_frame(room, sequence.history))

    def _send_frame(self, frame: bytes) -> None:
        """A frame for this connection only (member list, history): large, sent once."""
        self.factory.rooms.catch_up(self)
        prepared = self.factory.prepareMessage(frame)
        self.factory.heap.wrote(len(prepared.payloadHybi))
        self._send_prepared(prepared, False)

    def _reply(self, code: int, detail: Any = None) -> None:
        if self.user is not None:
            self.factory.rooms.catch_up(self)  # room events that came first go first
        data = wire.reply(code, self.factory.clock.seconds(), detail)
        self._send_prepared(self.factory.prepareMessage(data), False)

    def _send_prepared(self, prepared: Any, droppable: bool) -> bool:
        if self.state != _OPEN:
            return False
        frame = prepared.payloadHybi
        if self.congested:
            if droppable:
                return False
            self.queued_while_congested += len(frame)
            if self.queued_while_congested > self.factory.send_buffer:
                self._close_for_policy(
                    f"too slow: {self.queued_while_congested} bytes waiting to be sent")
                return False
        # The prepared frame's bytes straight to the transport: this is what
        # sendPreparedMessage does without compression (never negotiated here),
        # minus its per-call debug formatting.
        self.transport.write(frame)
        _SENT.value += 1
        return True

    def sendCloseFrame(self, code: int | None = None, reasonUtf8: bytes | None = None,
                       isReply: bool = False) -> None:
        """Close, and abort the TCP connection if the peer does not answer in time.

        The factory turns Autobahn's own close timeout off and this timer
        replaces it, because it can be cancelled once the connection is gone.
        """
        super().sendCloseFrame(code=code, reasonUtf8=reasonUtf8, isReply=isReply)
        if not isReply and self._close_timer is None:
            self._close_timer = self.factory.reactor.callLater(
                CLOSE_TIMEOUT, self.transport.abortConnection)

    def connectionLost(self, reason: Any = None) -> None:
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        _METRICS.connections.value -= 1
        super().connectionLost(reason)

    def going_away(self) -> None:
        """The server is shutting down."""
        self.factory.connections.discard(self)
        if self.user is not None:
            self.factory.rooms.disconnect(self)
            self.user = None
        if self.state == _OPEN:
            self.sendCloseFrame(code=1001, reasonUtf8=b"server shutting down")
        self.transport.loseConnection()

    def _close_for_policy(self, reason: str, code: int = CLOSE_POLICY) -> None:
        _METRICS.error("policy_close")
        self.logger.warn("closing VR connection of {user} at {address}: {reason}",
                      user=self.user, address=self.address, reason=reason)
        self._backlog.clear()
        if self.user is not None:
            self.factory.rooms.disconnect(self)  # others see it leave now
        if self.state == _OPEN:
            # sendClose only takes 1000 and 3000-4999; 1008 is the standard
            # "policy violation" code. Autobahn drops the TCP connection if the
            # peer does not answer within closeHandshakeTimeout.
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:123])


def _credentials(options: Any) -> tuple[str, str] | None:
    if not isinstance(options, dict):
        return None
    name, password = options.get("user"), options.get("pass")
    if isinstance(password, (int, float)) and not isinstance(password, bool):
        password = str(password)  # the original accepted numeric passwords
    try:
        vr_name(name)
    except InvalidName:
        return None
    if not isinstance(password, str):
        return None
    return name, password


def vr_name(name: Any) -> str:
    """The VR name rule: 1 to ``MAX_NAME`` characters, not all blank, as given."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise InvalidName(f"a name is 1 to {MAX_NAME} characters, not all blank")
    if not storable(name):
        raise InvalidName("a name may not hold a NUL or a lone surrogate")
    return name


class VRServerFactory(WebSocketServerFactory):
    """Serves the VR rooms protocol on every endpoint of the ``vr`` listener."""

    protocol = VRServerProtocol

    def __init__(self, core: Any, config: Mapping[str, Any] | None = None,
                 reactor: Any = None) -> None:
        config = dict(core.config if config is None else config)
        super().__init__(reactor=reactor)
        self.core = core
        self.clock = core.clock
        self.rooms = core.component(RoomService)
        # Coalesced room events go out at the end of this reactor's turn.
        self.rooms.call_soon = lambda function: self.reactor.callLater(0, function)
        self.any_password = bool(config.get("vr_any_password", False))
        self.login_policy = LoginPolicy(
            vr_name, failures_per_account=config.get("vr_login_failures"),
            window=config.get("vr_login_window"))
        self.trusted_proxies = TrustedProxies(config.get("trusted_proxy") or ())
        self.send_buffer = int(config.get("vr_send_buffer") or 1 << 20)
        self.max_rate = float(config.get("vr_max_rate") or 300.0)
        self.burst = max(2.0 * self.max_rate, 10.0)
        self.max_frame = int(config.get("vr_max_frame") or 64 * 1024)
        frame_timeout = float(config.get("vr_frame_timeout") or 10.0)
        self.deadlines = Deadlines(self.clock, handshake=frame_timeout,
                                   login=float(config.get("vr_login_timeout") or 30.0),
                                   message=frame_timeout)
        self.connections: set[VRServerProtocol] = set()
        self.heap = HeapTrimmer(self.clock)
        self.setProtocolOptions(maxFramePayloadSize=0, maxMessagePayloadSize=0,
                                failByDrop=False, closeHandshakeTimeout=0,
                                openHandshakeTimeout=0)  # self.deadlines bounds it
        if config.get("vr_csv_log"):
            from gtserver.vr.csvlog import CsvEventFile
            core.component(CsvEventFile)

    def stopFactory(self) -> None:
        """The last endpoint stopped listening: close every connection.

        Members leave their rooms now, while the core (and its event log)
        still runs; clients get close code 1001 (going away).
        """
        self.heap.stop()
        for connection in list(self.connections):
            connection.going_away()
