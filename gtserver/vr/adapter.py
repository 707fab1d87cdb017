"""The VR rooms listener: Autobahn WebSocket in front of the room service.

One :class:`VRServerProtocol` per connection parses frames, calls
:class:`~gtserver.vr.rooms.RoomService` and the shared accounts, and renders
replies. It is the room service's *sink* for that connection: room frames are
encoded once per broadcast (an Autobahn prepared message) and the same bytes
go to every member.

Protection against slow and hostile clients is the connection guard of
:mod:`gtserver.websocket`, with the ``--vr-...`` limits (:func:`vr_limits`):

* outgoing bytes: while a client's socket buffer is full, pose ticks to it
  are dropped (sent as droppable: the next one supersedes them anyway) and
  every other frame counts against ``--vr-send-buffer`` bytes; past that the
  connection is closed with code 1008 and leaves its rooms at once. Its
  memory stays bounded and nobody else waits for it.
* incoming frames: a message larger than ``--vr-max-frame`` bytes is
  answered with 400 as soon as its frame header announces the size, and the
  connection is closed with code 1009 (its data is never buffered). More
  than ``--vr-max-rate`` frames a second (with a burst of two seconds'
  worth) close the connection with code 1008.
* time: the opening handshake and each incoming message must arrive within
  ``--vr-frame-timeout`` seconds, and a connection must log in within
  ``--vr-login-timeout`` seconds of opening; else it is closed with code
  1008 (a handshake that never ends is cut off). A login being checked when
  the time is up decides.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

from gtserver import metrics
from gtserver.core.accounts import LOGIN, Accounts
from gtserver.core.errors import CoreError, InvalidName
from gtserver.core.login import LoginPolicy
from gtserver.core.peers import Peer, TrustedProxies
from gtserver.store import StoreError, Unstorable
from gtserver.vr import wire
from gtserver.vr.memory import HeapTrimmer
from gtserver.vr.rooms import (
    LOBBY,
    SOURCE,
    TRANSFORM,
    AlreadyInRoom,
    BadPose,
    InvalidKind,
    InvalidRoomName,
    NotInRoom,
    RoomService,
    storable,
)
from gtserver.vr.settings import VRSettings
from gtserver.websocket import GuardedServerProtocol, Limits, guard_factory

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


class VRServerProtocol(GuardedServerProtocol):
    logger = Logger()
    kind = "VR"
    frames_sent = _SENT

    factory: VRServerFactory

    def __init__(self) -> None:
        super().__init__()
        self.user: str | None = None
        #: The client (behind a trusted proxy, the one it names).
        self.peer: Peer | None = None
        self.address: str | None = None
        self._backlog: deque[bytes | None] = deque()
        self._busy = False
        #: The login timeout passed while a login was being checked.
        self._login_overdue = False

    # connection lifecycle

    def connectionMade(self) -> None:
        super().connectionMade()
        _METRICS.connections.value += 1

    def connectionLost(self, reason: Any = None) -> None:
        _METRICS.connections.value -= 1
        super().connectionLost(reason)

    def onConnect(self, request: Any) -> None:
        self.peer = self.factory.trusted_proxies.client(
            Peer.of(self.transport), request.headers.get("x-forwarded-for"))
        self.address = self.peer.address
        return None

    def describe_peer(self) -> str:
        """Who the connection is, for log lines."""
        return f"{self.user} at {self.address}"

    def onOpen(self) -> None:
        super().onOpen()
        self.factory.connections.add(self)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.connections.discard(self)
        self._backlog.clear()
        if self.user is not None:
            self.factory.rooms.disconnect(self)

    # incoming frames

    def onOversizedMessage(self, size: int) -> None:
        self._reply(wire.BAD_REQUEST)  # before the close frame (1009)

    def close_connection(self, reason: str, *args: Any, **kwargs: Any) -> None:
        if self.state == _OPEN:
            _METRICS.error("policy_close")
        super().close_connection(reason, *args, **kwargs)

    def onClosing(self) -> None:
        self._backlog.clear()
        if self.user is not None:
            self.factory.rooms.disconnect(self)  # others see it leave now

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        _METRICS.received.value += 1
        if self._busy:
            if len(self._backlog) >= MAX_BACKLOG:
                self.close_connection("too many frames while logging in")
                return
            self._backlog.append(payload)
            return
        self._handle(payload)

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
                await factory.accounts.login(name, password, self.peer,
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
        if factory.any_password:    # else the accounts service recorded it
            factory.accounts.record_login(LOGIN, name, self.peer, factory.login_policy,
                                          any_password=True)
        _METRICS.request("login", "ok")
        self.authenticated()
        self._reply(wire.ACCESS_GRANTED)
        self._send_join_sequence(LOBBY, factory.rooms.join(self, LOBBY))

    def _login_failed(self, failure: Any) -> None:
        _METRICS.error("internal")
        self.logger.failure("VR login failed", failure)
        self._reply(wire.INTERNAL_ERROR)

    def onLoginTimeout(self) -> None:
        if self._busy:  # a login sent in time is being checked: its outcome decides
            self._login_overdue = True
            return
        self.close_late_login()

    def _drain_backlog(self, _: Any) -> None:
        self._busy = False
        if self._login_overdue and self.user is None and self.state == _OPEN:
            self.close_late_login()
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
        return self.send_prepared(prepared, droppable)

    def send_prepared(self, prepared: Any, droppable: bool = False) -> bool:
        """Every frame waits behind the chat lines and buttons not yet stored
        in the research log (see ``RoomService.gate``); a held pose frame is
        sent when released, not dropped, so no tick delta goes missing."""
        gate = self.factory.rooms.gate
        if gate.holding:
            return gate.send(super().send_prepared, prepared, False)
        return super().send_prepared(prepared, droppable)

    def _send_join_sequence(self, room: str, sequence: Any) -> None:
        self._send_frame(wire.member_list_frame(room, sequence.member_entries))
        if sequence.history:
            self._send_frame(wire.room_frame(room, sequence.history))

    def _send_frame(self, frame: bytes) -> None:
        """A frame for this connection only (member list, history): large, sent once."""
        self.factory.rooms.catch_up(self)
        prepared = self.factory.prepareMessage(frame)
        self.factory.heap.wrote(len(prepared.payloadHybi))
        self.send_prepared(prepared)

    def _reply(self, code: int, detail: Any = None) -> None:
        if self.user is not None:
            self.factory.rooms.catch_up(self)  # room events that came first go first
        data = wire.reply(code, self.factory.clock.seconds(), detail)
        self.send_prepared(self.factory.prepareMessage(data))

    def going_away(self) -> None:
        """The server is shutting down."""
        self.factory.connections.discard(self)
        if self.user is not None:
            self.factory.rooms.disconnect(self)
            self.user = None
        if self.state == _OPEN:
            self.sendCloseFrame(code=1001, reasonUtf8=b"server shutting down")
        self.transport.loseConnection()


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


def vr_limits(settings: VRSettings) -> Limits:
    """The connection limits of the ``--vr-...`` options."""
    return Limits(max_message=settings.max_frame, refuse_above=settings.max_frame,
                  max_rate=settings.max_rate, send_buffer=settings.send_buffer,
                  handshake_timeout=settings.frame_timeout,
                  login_timeout=settings.login_timeout,
                  message_timeout=settings.frame_timeout)


class VRServerFactory(WebSocketServerFactory):
    """Serves the VR rooms protocol on every endpoint of the ``vr`` listener."""

    protocol = VRServerProtocol

    def __init__(self, accounts: Accounts, rooms: RoomService, clock: Any,
                 settings: VRSettings, trusted_proxies: TrustedProxies,
                 reactor: Any = None) -> None:
        super().__init__(reactor=reactor)
        self.accounts = accounts
        self.clock = clock
        self.rooms = rooms
        self.settings = settings
        self.any_password = settings.any_password
        self.login_policy = LoginPolicy(
            vr_name, failures_per_account=settings.login_failures,
            window=settings.login_window, listener=SOURCE)
        self.trusted_proxies = trusted_proxies
        guard_factory(self, vr_limits(settings), self.clock)
        self.connections: set[VRServerProtocol] = set()
        self.heap = HeapTrimmer(self.clock)

    def stopFactory(self) -> None:
        """The last endpoint stopped listening: close every connection.

        Members leave their rooms now, while the core (and its event log)
        still runs; clients get close code 1001 (going away).
        """
        self.heap.stop()
        for connection in list(self.connections):
            connection.going_away()
