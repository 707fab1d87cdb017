"""A Twisted client for the VR rooms listener (``vr``, PROTOCOLS.md §1).

Every call returns a Deferred, so it can be awaited in an ``async def`` run
with ``ensureDeferred`` (or ``twisted.internet.task.react``)::

    from gtserver.vr.client import VRClient

    async def main(reactor):
        client = await VRClient.connect("ws://127.0.0.1:42069/", reactor)
        members = await client.login("alice", "secret")     # the lobby's members
        await client.join("table-1")
        await client.msg("table-1", "hello")
        event = await client.next_event("msg", room="table-1")
        print(event.user, event.data)
        await client.close()

Frames the server sends are decoded and kept in arrival order; the helpers
take the first one that fits (a reply, a member list, an event), so pushes
that arrive in between stay available to :meth:`VRClient.next_event` and
:meth:`VRClient.next_frame`. See docs/clients.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed

from gtserver.wsclient import (
    ConnectionClosed,
    FrameClient,
    FrameConnection,
    Taken,
)

ACCESS_GRANTED, LISTING, PONG = 202, 212, 220


@dataclass(frozen=True)
class Reply:
    """A system (code below 400) or error reply."""

    code: int
    msg: str
    detail: Any
    time: float

    @property
    def is_error(self) -> bool:
        return self.code >= 400


@dataclass(frozen=True)
class Event:
    """One entry of a room frame's payload (join, leave, msg, button, transform...)."""

    room: str
    user: str
    type: str
    data: Any
    time: float


class VRError(Exception):
    """The server answered a request with an error reply (or an unexpected code)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"{reply.code} {reply.msg}")
        self.reply = reply
        self.code = reply.code


def as_reply(frame: Any) -> Reply | None:
    """The reply in ``frame``, or None if it is not a system/error reply."""
    if not isinstance(frame, dict) or frame.get("info") not in ("system", "error"):
        return None
    response = frame.get("response")
    if not isinstance(response, dict):
        return None
    return Reply(response.get("code"), response.get("msg"), response.get("detail"),
                 response.get("time"))


def as_events(frame: Any) -> list[Event] | None:
    """The events of a room frame, or None if ``frame`` is not one."""
    if not isinstance(frame, dict) or frame.get("info") != "user":
        return None
    payload = frame.get("payload")
    if not isinstance(payload, list):
        return None
    room = frame.get("room")
    return [Event(room, entry.get("user"), entry.get("type"), entry.get("data"),
                  entry.get("time")) for entry in payload if isinstance(entry, dict)]


def _vector(value: Any) -> dict[str, float]:
    if isinstance(value, Mapping):
        return {axis: float(value.get(axis, 0.0)) for axis in "xyz"}
    if isinstance(value, Sequence) and len(value) == 3:
        return dict(zip("xyz", (float(v) for v in value), strict=True))
    raise ValueError("a position or rotation is {x, y, z} or three numbers")


class VRClient(FrameClient):
    """One connection to a ``vr`` listener.

    Build it with :meth:`connect`. ``user`` is the logged-in name (None
    before login); ``connection`` is the underlying
    :class:`gtserver.wsclient.FrameConnection` (counters, raw frames).
    """

    def __init__(self, connection: FrameConnection) -> None:
        super().__init__(connection)
        self.user: str | None = None

    # system commands

    def login(self, user: str, password: str) -> Deferred:
        """Log in; fires with the lobby's member list (:class:`Event` entries of
        type ``join``, the new member included) once the server sent it. The
        lobby's history, if any, follows as a room frame. Fails with
        :class:`VRError` (403 bad credentials, 400, 409...)."""
        async def logging_in() -> list[Event]:
            sent = self._send({"system": "login",
                               "options": {"user": user, "pass": password}})
            reply = await self._reply(sent)
            if reply.code != ACCESS_GRANTED:
                raise VRError(reply)
            self.user = user
            return await self._member_list("lobby", sent)
        return ensureDeferred(logging_in())

    def ping(self) -> Deferred:
        """Fires with the pong :class:`Reply`; allowed before login. Like
        :meth:`sync`, fails with an error reply that came before the pong."""
        return ensureDeferred(self._ping())

    def rooms(self) -> Deferred:
        """Fires with ``{room name: title}`` of every open room."""
        async def listing() -> dict[str, str]:
            return (await self._command({"system": "rooms"}, LISTING)).detail
        return ensureDeferred(listing())

    def sync(self) -> Deferred:
        """Fires once the server has handled everything sent before (a ping
        round trip); fails with :class:`VRError` if it refused one of those
        requests first (e.g. a message to a room not joined: 401). Every
        reply up to the pong is taken, so none is left for later calls."""
        return ensureDeferred(self._ping())

    # rooms

    def join(self, room: str) -> Deferred:
        """Join (or create) ``room``; fires with its member list, you included.
        Its history, if any, follows as a room frame (see :meth:`next_event`).
        Fails with :class:`VRError` 409 if already in it."""
        sent = self._send({"room": room, "type": "join", "data": ""})
        return ensureDeferred(self._member_list(room, sent))

    def leave(self, room: str, confirm: bool = False) -> Deferred:
        """Leave ``room`` (the server does not answer; ``confirm`` waits for
        :meth:`sync`, failing with 401 if you were not in it)."""
        return self.say(room, "leave", "", confirm)

    def members(self, room: str) -> Deferred:
        """Fires with the member list of ``room`` (the ``list`` request)."""
        sent = self._send({"room": room, "type": "list", "data": ""})
        return ensureDeferred(self._member_list(room, sent))

    def msg(self, room: str, data: Any, confirm: bool = False) -> Deferred:
        """Chat ``data`` to everyone in ``room`` (you get it back as an event)."""
        return self.say(room, "msg", data, confirm)

    def button(self, room: str, data: Any, confirm: bool = False) -> Deferred:
        """Like :meth:`msg`, not kept in the room's history (e.g. a choice)."""
        return self.say(room, "button", data, confirm)

    def transform(self, room: str, pos: Any = (0.0, 0.0, 0.0), rot: Any = (0.0, 0.0, 0.0),
                  confirm: bool = False) -> Deferred:
        """Send a headset pose (``{x, y, z}`` mappings or three numbers each);
        the server broadcasts the latest pose of every member at each tick."""
        return self.say(room, "transform", {"pos": _vector(pos), "rot": _vector(rot)},
                        confirm)

    def say(self, room: str, kind: str, data: Any, confirm: bool = False) -> Deferred:
        """Send a room message of any ``type``. Fires at once, or with
        ``confirm`` once the server has handled it (see :meth:`sync`)."""
        self.connection.send({"room": room, "type": kind, "data": data})
        return self.sync() if confirm else succeed(None)

    # receiving

    def next_frame(self, timeout: float | None = None) -> Deferred:
        """The next decoded frame not yet taken, whatever it is."""
        return self.connection.take(None, timeout)

    def next_reply(self, timeout: float | None = None) -> Deferred:
        """The next system or error :class:`Reply` (room frames stay queued)."""
        return self.connection.take(lambda frame: _taken(as_reply(frame)), timeout)

    def next_event(self, kind: str | None = None, room: str | None = None,
                   user: str | None = None, timeout: float | None = None) -> Deferred:
        """The next room :class:`Event` of that ``kind`` (type), ``room`` and
        ``user`` (each None for any); the frame's other events stay queued."""
        def pick(frame: Any) -> Taken | None:
            events = as_events(frame)
            if not events:
                return None
            for index, event in enumerate(events):
                if ((kind is None or event.type == kind) and (room is None or event.room == room)
                        and (user is None or event.user == user)):
                    del frame["payload"][index]
                    return Taken(event, keep=bool(frame["payload"]))
            return None
        return self.connection.take(pick, timeout)

    def send(self, frame: Any, binary: bool = False) -> None:
        """Send any JSON value as a frame (no waiting)."""
        self.connection.send(frame, binary)

    def close(self) -> Deferred:
        """Close the connection; fires with the close code."""
        return self.connection.close()

    def abort(self) -> Deferred:
        """Drop the connection without a close handshake (the server sees a disconnect)."""
        return self.connection.abort()

    # internals

    def _send(self, frame: dict) -> int:
        """Send a request; returns the number of frames received before it."""
        before = self.connection.frames_received
        self.connection.send(frame)
        return before

    async def _reply(self, after: int = 0) -> Reply:
        return await self.connection.take(lambda frame: _taken(as_reply(frame)), after=after)

    async def _command(self, frame: dict, expected: int) -> Reply:
        reply = await self._reply(self._send(frame))
        if reply.code != expected:
            raise VRError(reply)
        return reply

    async def _ping(self) -> Reply:
        self.connection.send({"system": "ping"})
        refusal = None
        while True:
            reply = await self._reply()
            if reply.code == PONG:
                if refusal is not None:
                    raise VRError(refusal)
                return reply
            refusal = refusal or reply

    async def _member_list(self, room: str, after: int) -> list[Event]:
        """The member list of ``room`` (a room frame of joins naming this user)
        or the error reply that came instead."""
        def pick(frame: Any) -> Taken | None:
            reply = as_reply(frame)
            if reply is not None and reply.is_error:
                return Taken(reply)
            events = as_events(frame)
            if (events and frame.get("room") == room and all(e.type == "join" for e in events)
                    and any(e.user == self.user for e in events)):
                return Taken(events)
            return None
        found = await self.connection.take(pick, after=after)
        if isinstance(found, Reply):
            raise VRError(found)
        return found


def _taken(value: Any) -> Taken | None:
    return None if value is None else Taken(value)


__all__ = ["ConnectionClosed", "Event", "Reply", "VRClient", "VRError"]
