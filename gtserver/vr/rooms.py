"""Chat/VR rooms: membership, history, headset poses and the fixed-rate pose tick.

The room service is protocol-agnostic. A connection takes part as a *sink*
(see :class:`RoomSink`): an object with the user's name, the client address
and a ``deliver`` method. Rooms hand sinks plain Python event dicts; the
adapter owns the wire format.

Fan-out serialises once: every broadcast passes the same ``shared`` dict to
each sink, so the first sink of a given wire format encodes the events and
stores the result there, and the others reuse those bytes.

Room events (join, leave, msg, button, ...) are coalesced: the events of a
room produced within one reactor turn go out together, as one frame per
connection, at the end of the turn (``call_soon``). A burst of logins thus
costs one frame per lobby member per turn instead of one per login. Order is
kept for each connection: a connection that joined during the turn gets only
the events after its join (the earlier ones are in its member list and
history), and :meth:`RoomService.catch_up` sends a connection its pending
events before the adapter sends it anything directly (a reply, a member list),
so every frame still arrives in the order things happened. Events of
different rooms are separate frames, in the order the rooms first had one.

Membership is per user: a user with two connections in a room is one member
with two connections. Others see that user join when the first connection
enters and leave when the last one goes.

Poses are not broadcast when they arrive. One timer for the whole service
ticks ``fps`` times a second; at each tick every room with members gets one
frame holding the latest pose of each member (or, with ``changed_only``, the
poses that changed since the previous tick; a connection that has not seen
the room's poses yet gets the full set once).

A chat line or button press is in the research log before anyone sees it:
:meth:`RoomService.say` puts a barrier in :attr:`RoomService.gate`, through
which the adapters send every frame, so that frame and everything sent after
it wait for the log's group commit (``EventLog.stored``), then go out in
order. Poses are logged later, at the pose log rate (a kill loses at most
that interval of poses).

The research log gets each received pose at most once, with its receive time:
at the ticks due at the pose log rate, every member's newest pose not logged
yet. Those ticks are logged too, one ``tick`` event per room that was sent a
frame, with the tick's own time and the members whose poses it carried.
"""

from __future__ import annotations

import bisect
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gtserver import metrics
from gtserver.core.errors import CoreError
from gtserver.core.events import DeliveryGate
from gtserver.core.presence import Presence

LOBBY = "lobby"
SOURCE = "vr"
MAX_ROOM_NAME = 100

#: Event kinds with a meaning of their own; every other kind is a chat-like message.
JOIN, LEAVE, TRANSFORM, BUTTON, MSG = "join", "leave", "transform", "button", "msg"
#: The research log's record of a logged pose tick (never sent on the wire).
TICK = "tick"
#: The ``user`` of a message the server's operator sends to a room (no
#: member can have it: names are never empty).
SERVER_USER = ""


class RoomError(CoreError):
    """Base of the room service's refusals."""


class AlreadyInRoom(RoomError):
    """This connection is already in the room."""


class NotInRoom(RoomError):
    """This connection is not in the room."""


class InvalidRoomName(RoomError):
    """Room names are non-empty strings of at most MAX_ROOM_NAME storable characters."""


class InvalidKind(RoomError):
    """A message type must be storable text (see :func:`storable`)."""


class BadPose(RoomError):
    """A pose must be ``{"pos": {x, y, z}, "rot": {x, y, z}}`` with numbers."""


class RoomSink(Protocol):
    """One connection's view of the rooms, implemented by wire adapters."""

    #: The logged-in user's name.
    user: str
    #: The client address as recorded in the research log (e.g. ``"10.0.0.5:51234"``).
    address: str | None

    def deliver(self, room: str, events: list[dict], shared: dict, droppable: bool) -> bool:
        """Send ``events`` of ``room`` as one frame.

        ``shared`` is the same dict for every sink of one broadcast (cache the
        encoded frame there). ``droppable`` frames (pose ticks) may be skipped
        when the connection is congested. Returns False if nothing was sent.
        """


@dataclass(frozen=True)
class RoomSettings:
    """The room part of :class:`gtserver.vr.settings.VRSettings`."""

    #: Pose ticks per second.
    fps: float
    #: Messages kept per room and sent to joiners.
    history: int
    #: Ticks carry only the poses that changed.
    changed_only: bool
    #: Pose records per second in the research log; 0 means at every tick.
    pose_log_rate: float


@dataclass(eq=False, slots=True)
class Member:
    name: str
    joined: float
    sinks: list[Any] = field(default_factory=list)
    #: The member's pose entry as sent in ticks (origin until a pose arrives).
    pose_entry: dict = field(default_factory=dict)
    has_pose: bool = False
    pose_address: str | None = None
    #: The pose as JSON text for the research log, encoded once per pose.
    pose_json: str | None = None
    #: The current pose is in the research log already.
    pose_logged: bool = False
    #: The member's ``join`` entry (shared by every member list; never mutated).
    join: dict = field(init=False)
    #: Adapters' cache for this member's ``join`` entry in their wire format,
    #: keyed by adapter: a member list of thousands is then assembled from
    #: encodings made once per member rather than encoded again per joiner.
    encoded_join: dict = field(default_factory=dict)
    #: When the member last sent anything to the room (a message or a pose).
    last_active: float = 0.0

    def __post_init__(self) -> None:
        self.join = {"time": self.joined, "user": self.name, "type": JOIN, "data": ""}

    def join_entry(self) -> dict:
        return self.join

    @property
    def sort_key(self) -> tuple[str, str]:
        return (self.name.casefold(), self.name)


@dataclass(eq=False)
class Room:
    name: str
    history: deque
    members: dict[str, Member] = field(default_factory=dict)
    #: Every connection in the room, with the member it belongs to.
    sinks: dict[Any, Member] = field(default_factory=dict)
    #: Members whose pose changed since the previous tick, in arrival order.
    changed: dict[str, Member] = field(default_factory=dict)
    #: Connections that must get the full pose set at the next tick.
    needs_full: set = field(default_factory=set)
    #: Events not sent yet (coalesced until the end of the reactor turn).
    pending: list = field(default_factory=list)
    #: Connections that must get only ``pending[start:]``: they joined after
    #: the earlier events, or already got them through ``catch_up``.
    starts: dict = field(default_factory=dict)
    #: ``(casefolded name, name, member)`` of every member, kept sorted, so
    #: member lists need no sorting (names are unique: members never compare).
    order: list = field(default_factory=list)
    #: What ``rooms`` lists for the room: empty for a room created by a join,
    #: as the original server did (see :meth:`RoomService.set_title`).
    title: str = ""
    #: Messages said in the room so far, and pose frames it was sent.
    messages: int = 0
    ticks: int = 0
    #: A paused room gets no pose frames (see :meth:`RoomService.set_paused`).
    paused: bool = False
    created: float = 0.0

    def member_list(self) -> list[dict]:
        """``join`` entries of every member, sorted case-insensitively."""
        return [entry[2].join for entry in self.order]

    def member_entries(self) -> list[tuple[dict, dict]]:
        """The same entries, each with its adapters' cache (``Member.encoded_join``)."""
        return [(entry[2].join, entry[2].encoded_join) for entry in self.order]

    def add_member(self, member: Member) -> None:
        self.members[member.name] = member
        bisect.insort(self.order, (*member.sort_key, member))

    def remove_member(self, member: Member) -> None:
        del self.members[member.name]
        key = member.sort_key
        del self.order[bisect.bisect_left(self.order, key)]


@dataclass(frozen=True)
class JoinSequence:
    """What a joining connection is sent: the member list, then the history."""

    room: Room
    history: list[dict]

    @property
    def members(self) -> list[dict]:
        return self.room.member_list()

    @property
    def member_entries(self) -> list[tuple[dict, dict]]:
        """The member list with each entry's cache (see :meth:`Room.member_entries`)."""
        return self.room.member_entries()


def origin_pose() -> dict:
    return {"pos": {"x": 0.0, "y": 0.0, "z": 0.0}, "rot": {"x": 0.0, "y": 0.0, "z": 0.0}}


def normalize_pose(data: Any) -> dict:
    """``{"pos": {x,y,z}, "rot": {x,y,z}}`` of floats; missing parts become 0.0."""
    if not isinstance(data, dict):
        raise BadPose("a pose is an object with pos and rot")
    pose = {}
    for part in ("pos", "rot"):
        vector = data.get(part)
        if vector is None:
            vector = {}
        if not isinstance(vector, dict):
            raise BadPose(f"{part} must be an object")
        x, y, z = vector.get("x"), vector.get("y"), vector.get("z")
        # The usual case, three finite floats, without the per-axis checks
        # (x - x is 0.0 for every finite float, NaN for infinities and NaN).
        if (type(x) is float and type(y) is float and type(z) is float
                and (x - x) + (y - y) + (z - z) == 0.0):
            pose[part] = {"x": x, "y": y, "z": z}
            continue
        coordinates = {}
        for axis in ("x", "y", "z"):
            value = vector.get(axis, 0.0)
            if value is None:
                value = 0.0
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadPose(f"{part}.{axis} must be a number")
            try:
                value = float(value)
            except OverflowError:  # an integer beyond the largest float
                raise BadPose(f"{part}.{axis} is too large") from None
            if not math.isfinite(value):
                raise BadPose(f"{part}.{axis} must be finite")
            coordinates[axis] = value
        pose[part] = coordinates
    return pose


def pose_json(pose: dict) -> str:
    """A normalised pose as compact JSON, the same text ``json.dumps`` gives, faster.

    Every coordinate is a finite float (see :func:`normalize_pose`), and JSON
    writes floats with ``float.__repr__``.
    """
    p, r = pose["pos"], pose["rot"]
    return (f'{{"pos":{{"x":{p["x"]!r},"y":{p["y"]!r},"z":{p["z"]!r}}},'
            f'"rot":{{"x":{r["x"]!r},"y":{r["y"]!r},"z":{r["z"]!r}}}}}')


def storable(text: str) -> bool:
    """Whether ``text`` can be a text column of the event log on every engine.

    PostgreSQL refuses NUL characters in text, and a lone UTF-16 surrogate
    has no UTF-8 encoding (SQLite and the wire both need one).
    """
    if text.isascii():
        return "\0" not in text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\0" not in text


def check_room_name(name: Any) -> str:
    if (not isinstance(name, str) or not name or len(name) > MAX_ROOM_NAME
            or not storable(name)):
        raise InvalidRoomName(name)
    return name


Recorder = Callable[..., None]


class RoomService(Service):
    """Every room of the server and the one pose timer."""

    log = Logger()

    def __init__(self, clock: Any, events: Any, settings: RoomSettings,
                 call_soon: Callable[[Callable[[], None]], Any] | None = None,
                 presence: Presence | None = None) -> None:
        """
        @param events: the research log (its ``record`` method is used).
        @param presence: told of every connection that joins a room.
        @param call_soon: runs a function after the current reactor turn (the
            coalesced room events go out then); the adapter passes its
            reactor's ``callLater(0, ...)``: it is I/O scheduling, not a timer,
            so it must not wait for a test's ``task.Clock``. By default the
            clock's ``callLater(0, ...)``.
        """
        self.clock = clock
        self.events = events
        self.settings = settings
        self.rooms: dict[str, Room] = {LOBBY: self._new_room(LOBBY)}
        #: Rooms each connection is in, in the order it joined them.
        self._rooms_of: dict[Any, dict[str, Room]] = {}
        #: Extra observers of every recorded event (e.g. a CSV file), called
        #: with the same keyword arguments as ``EventLog.record``.
        self.recorders: list[Recorder] = []
        self._ticker: LoopingCall | None = None
        #: Rooms with pending events, in the order they got their first one.
        self._dirty: dict[Room, None] = {}
        self._flush_call: Any = None
        self.call_soon: Callable[[Callable[[], None]], Any] = call_soon or (
            lambda function: self.clock.callLater(0, function))
        self._next_pose_log = 0.0
        self.ticks = 0
        #: Told of every connection that joins a room (a private one if None).
        self.presence = presence if presence is not None else Presence(clock)
        #: When the previous tick ran (clock seconds), for its lateness metric.
        self._last_tick: float | None = None
        #: Every frame of the rooms' connections passes here (the adapters
        #: send through it): a chat line or button press is stored in the
        #: research log before anyone sees it, and nothing overtakes it.
        self.gate = DeliveryGate()

    # lifecycle

    def startService(self) -> None:
        super().startService()
        self._ticker = LoopingCall(self._tick_safely)
        self._last_tick = None
        self._ticker.clock = self.clock
        self._ticker.start(1.0 / self.settings.fps, now=False)

    def stopService(self):
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
        self.flush()
        return super().stopService()

    # queries

    def room_titles(self) -> dict[str, str]:
        return {name: room.title for name, room in self.rooms.items()}

    def set_title(self, room_name: str, title: str) -> None:
        """Give an open room a title (kept until the room closes); KeyError if none.

        ValueError for text that could not be sent (see :func:`storable`).
        """
        if not isinstance(title, str):
            raise TypeError("a room title is a string")
        if not storable(title):
            raise ValueError("a room title may not hold NUL or a lone surrogate")
        self.rooms[room_name].title = title

    def rooms_of(self, sink: Any) -> list[str]:
        return list(self._rooms_of.get(sink, ()))

    def member_list(self, sink: Any, room_name: str) -> list[dict]:
        return self._room_of(sink, room_name).member_list()

    def member_entries(self, sink: Any, room_name: str) -> list[tuple[dict, dict]]:
        return self._room_of(sink, room_name).member_entries()

    # membership

    def join(self, sink: Any, room_name: str) -> JoinSequence:
        """Put ``sink`` in the room (created if missing); AlreadyInRoom if it is."""
        check_room_name(room_name)
        joined = self._rooms_of.setdefault(sink, {})
        if room_name in joined:
            raise AlreadyInRoom(room_name)
        self.presence.arrived(sink, SOURCE, sink.user, sink.address)
        room = self.rooms.get(room_name)
        if room is None:
            room = self.rooms[room_name] = self._new_room(room_name)
        member = room.members.get(sink.user)
        if member is None:
            now = self.clock.seconds()
            member = Member(sink.user, now, pose_entry=self._pose_entry(sink.user, now,
                                                                          origin_pose()),
                            last_active=now)
            self._queue(room, member.join)
            room.add_member(member)
            self._record(JOIN, sink, room_name, None, now)
        member.sinks.append(sink)
        room.sinks[sink] = member
        room.needs_full.add(sink)
        if room.pending:
            room.starts[sink] = len(room.pending)  # the join sequence covers the rest
        joined[room_name] = room
        return JoinSequence(room, list(room.history))

    def leave(self, sink: Any, room_name: str) -> None:
        """Take ``sink`` out of the room; NotInRoom if it is not there."""
        room = self._room_of(sink, room_name)
        self._catch_up_room(room, sink)  # what happened before it left
        del self._rooms_of[sink][room_name]
        if not self._rooms_of[sink]:
            del self._rooms_of[sink]
        self._detach(room, sink)

    def disconnect(self, sink: Any) -> None:
        """The connection is gone: it leaves every room it was in, then logs out."""
        rooms = list(self._rooms_of.pop(sink, {}).values())
        for room in rooms:
            self._detach(room, sink)
        self.presence.gone(sink, rooms=[room.name for room in rooms])

    # messages

    def say(self, sink: Any, room_name: str, kind: str, data: Any) -> None:
        """Broadcast a message to every member, the sender included.

        Every kind but ``button`` is kept in the room's history. ``data``
        must be JSON-encodable without lone surrogates (the adapter checks);
        it is recorded as JSON text, so a NUL in it is stored as its escape.
        """
        if not storable(kind):
            raise InvalidKind(kind)
        room = self._room_of(sink, room_name)
        now = self.clock.seconds()
        event = {"time": now, "user": sink.user, "type": kind, "data": data}
        if kind != BUTTON:
            room.history.append(event)
        room.messages += 1
        room.sinks[sink].last_active = now
        self._queue(room, event)
        self._record(kind, sink, room_name, data, now)
        self.gate.hold(self.events.stored())

    def set_pose(self, sink: Any, room_name: str, data: Any) -> None:
        """Store the member's latest pose; it goes out with the next tick."""
        room = self._room_of(sink, room_name)
        pose = normalize_pose(data)
        member = room.sinks[sink]
        member.pose_entry = self._pose_entry(member.name, self.clock.seconds(), pose)
        member.last_active = member.pose_entry["time"]
        member.has_pose = True
        member.pose_json = None
        member.pose_logged = False
        member.pose_address = sink.address
        room.changed[member.name] = member

    # coalesced room events

    def catch_up(self, sink: Any) -> None:
        """Send ``sink`` its pending events now (before a frame sent to it directly)."""
        if not self._dirty:
            return
        for room in tuple(self._dirty):
            if sink in room.sinks:
                self._catch_up_room(room, sink)

    def flush(self) -> None:
        """Send every room's pending events: one frame per connection and room."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        while self._dirty:
            rooms = tuple(self._dirty)
            self._dirty.clear()
            for room in rooms:
                self._flush_room(room)

    def _flush_soon(self) -> None:
        self._flush_call = None
        self.flush()

    def _queue(self, room: Room, event: dict) -> None:
        if not room.sinks:
            return  # nobody to tell
        room.pending.append(event)
        if room not in self._dirty:
            self._dirty[room] = None
            if self._flush_call is None:
                self._flush_call = self.call_soon(self._flush_soon)

    def _flush_room(self, room: Room) -> None:
        events, starts = room.pending, room.starts
        room.pending, room.starts = [], {}
        if not starts:
            self._broadcast(room, events)
            return
        shared_by_start: dict[int, dict] = {}
        for sink in tuple(room.sinks):
            start = starts.get(sink, 0)
            if start < len(events):
                shared = shared_by_start.setdefault(start, {})
                self._deliver(sink, room.name, events[start:] if start else events, shared,
                              False)

    def _catch_up_room(self, room: Room, sink: Any) -> None:
        start = room.starts.get(sink, 0)
        if start < len(room.pending):
            room.starts[sink] = len(room.pending)
            self._deliver(sink, room.name, room.pending[start:], {}, False)

    # ticks

    def tick(self) -> None:
        """Send every room with members its pose frame; log poses when due."""
        self.flush()  # events before the poses that follow them
        self.ticks += 1
        log_poses = self._pose_log_due()
        now = self.clock.seconds()
        for room in list(self.rooms.values()):
            if room.paused:
                continue  # its changes wait for the tick after it resumes
            if room.sinks:
                room.ticks += 1
                if self.settings.changed_only:
                    carried = self._tick_changed(room)
                else:
                    carried = self._tick_full(room)
                if log_poses:
                    self._log_poses(room)
                    if carried:
                        self._log_tick(room, carried, now)
            room.changed.clear()

    def _tick_full(self, room: Room) -> list[dict]:
        """Sends every member's pose; returns the entries sent."""
        room.needs_full.clear()
        entries = [member.pose_entry for member in room.members.values()]
        self._broadcast(room, entries, droppable=True)
        return entries

    def _tick_changed(self, room: Room) -> list[dict]:
        """Sends the changed poses (the full set to who needs it); returns the
        entries sent, the full set if any connection got it."""
        delta = [member.pose_entry for member in room.changed.values()]
        full: list[dict] | None = None
        shared_delta: dict = {}
        shared_full: dict = {}
        delta_sent = False
        for sink in tuple(room.sinks):
            if sink in room.needs_full:
                if full is None:
                    full = [m.pose_entry for m in room.members.values() if m.has_pose]
                if not full or self._deliver(sink, room.name, full, shared_full, True):
                    room.needs_full.discard(sink)
            elif delta:
                delta_sent = True
                if not self._deliver(sink, room.name, delta, shared_delta, True):
                    # It missed a change: bring it up to date with the full set.
                    room.needs_full.add(sink)
        if full:
            return full
        return delta if delta_sent else []

    def _pose_log_due(self) -> bool:
        rate = self.settings.pose_log_rate
        if rate <= 0 or rate >= self.settings.fps:
            return True
        now = self.clock.seconds()
        interval = 1.0 / rate
        # Tolerate half a tick of jitter so the log keeps its own fixed rate.
        if now + 0.5 / self.settings.fps < self._next_pose_log:
            return False
        self._next_pose_log += interval
        if self._next_pose_log <= now:  # first log, or fell behind: restart the schedule
            self._next_pose_log = now + interval
        return True

    def _log_poses(self, room: Room) -> None:
        """Each member's newest pose, once, with its receive time."""
        for member in room.members.values():
            if member.has_pose and not member.pose_logged:
                member.pose_logged = True
                entry = member.pose_entry
                if member.pose_json is None:
                    member.pose_json = pose_json(entry["data"])
                self._record_raw(TRANSFORM, member.name, room.name, member.pose_address,
                                 entry["data"], entry["time"], member.pose_json)

    def _log_tick(self, room: Room, carried: list[dict], now: float) -> None:
        """The tick itself: its time and whose poses it carried (not the poses)."""
        # Only the research log: the CSV recorders keep the original server's rows.
        users = [entry["user"] for entry in carried]
        self.events.record(SOURCE, TICK, user=None, room=room.name, address=None,
                           data={"tick": room.ticks, "users": users}, time=now)

    def _tick_safely(self) -> None:
        now, started = self.clock.seconds(), time.perf_counter()
        if self._last_tick is not None:
            metrics.VR_TICK_LATENESS.observe(
                max(now - self._last_tick - 1.0 / self.settings.fps, 0.0))
        self._last_tick = now
        try:
            self.tick()
        except Exception:
            # A LoopingCall stops for good on an error; one bad tick must not.
            self.log.failure("room tick failed")
        metrics.VR_TICK_DURATION.observe(time.perf_counter() - started)

    # the operator's view and controls (the web monitor)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every room as plain data: members, their connections and activity."""
        now = self.clock.seconds()
        rooms = []
        for room in self.rooms.values():
            members = []
            for entry in room.order:
                member: Member = entry[2]
                addresses = sorted({sink.address for sink in member.sinks if sink.address})
                members.append({
                    "user": member.name, "connections": len(member.sinks),
                    "addresses": addresses, "joined": member.joined,
                    "idle": now - member.last_active,
                    "pose_age": (now - member.pose_entry["time"]) if member.has_pose else None,
                })
            rooms.append({"name": room.name, "title": room.title, "members": members,
                          "connections": len(room.sinks), "history": len(room.history),
                          "messages": room.messages, "ticks": room.ticks,
                          "paused": room.paused, "age": now - room.created})
        return rooms

    def announce(self, room_name: str, text: str) -> None:
        """Send a message from the server (user ``""``) to everyone in a room.

        KeyError for a room that is not open; ValueError for text that could
        not be stored. The message is kept in the history like any other.
        """
        room = self.rooms[room_name]
        if not isinstance(text, str) or not text or not storable(text):
            raise ValueError("a message is non-empty text without NUL or lone surrogates")
        now = self.clock.seconds()
        event = {"time": now, "user": SERVER_USER, "type": MSG, "data": text}
        room.history.append(event)
        room.messages += 1
        self._queue(room, event)
        self._record_raw(MSG, SERVER_USER, room_name, None, text, now)

    def close_room(self, room_name: str, reason: str = "") -> int:
        """Take every connection out of a room (its members are told it
        closed first, with ``reason``); returns how many were in it. KeyError
        for a room that is not open; the lobby cannot be closed (ValueError).
        """
        if room_name == LOBBY:
            raise ValueError("the lobby cannot be closed")
        room = self.rooms[room_name]
        if reason:
            self.announce(room_name, reason)
        sinks = list(room.sinks)
        for sink in sinks:
            self.leave(sink, room_name)
        self.rooms.pop(room_name, None)
        self.flush()
        return len(sinks)

    def set_paused(self, room_name: str, paused: bool) -> None:
        """Stop (or resume) the pose frames of one room; KeyError if not open."""
        self.rooms[room_name].paused = paused

    # internals

    def _new_room(self, name: str) -> Room:
        return Room(name, deque(maxlen=max(self.settings.history, 0)),
                    created=self.clock.seconds())

    def _room_of(self, sink: Any, room_name: str) -> Room:
        room = self._rooms_of.get(sink, {}).get(room_name)
        if room is None:
            raise NotInRoom(room_name)
        return room

    def _detach(self, room: Room, sink: Any) -> None:
        member = room.sinks.pop(sink)
        room.needs_full.discard(sink)
        room.starts.pop(sink, None)
        member.sinks.remove(sink)
        if member.sinks:
            return  # the user is still here through another connection
        room.remove_member(member)
        room.changed.pop(member.name, None)
        now = self.clock.seconds()
        self._queue(room, {"time": now, "user": member.name, "type": LEAVE, "data": ""})
        self._record(LEAVE, sink, room.name, None, now)
        if not room.members and room.name != LOBBY:
            del self.rooms[room.name]
            self._dirty.pop(room, None)

    def _broadcast(self, room: Room, events: list[dict], droppable: bool = False) -> None:
        shared: dict = {}
        for sink in tuple(room.sinks):
            self._deliver(sink, room.name, events, shared, droppable)

    def _deliver(self, sink: Any, room_name: str, events: list[dict], shared: dict,
                 droppable: bool) -> bool:
        try:
            return sink.deliver(room_name, events, shared, droppable)
        except Exception:
            # One broken connection must not cost the others their frame.
            self.log.failure("delivery to {user} failed", user=getattr(sink, "user", None))
            return False

    @staticmethod
    def _pose_entry(user: str, time: float, pose: dict) -> dict:
        return {"time": time, "user": user, "type": TRANSFORM, "data": pose}

    def _record(self, kind: str, sink: Any, room_name: str, data: Any, time: float) -> None:
        self._record_raw(kind, sink.user, room_name, sink.address, data, time)

    def _record_raw(self, kind: str, user: str, room_name: str, address: str | None,
                    data: Any, time: float, encoded: str | None = None) -> None:
        # Stored as JSON text even for strings, so that a chat line that looks
        # like JSON stays distinguishable from structured data.
        if encoded is None and data is not None:
            encoded = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        self.events.record(SOURCE, kind, user=user, room=room_name, address=address,
                                data=encoded, time=time)
        for recorder in self.recorders:
            try:
                recorder(kind=kind, user=user, room=room_name, address=address, data=data,
                         time=time)
            except Exception:
                self.log.failure("room event recorder failed")
