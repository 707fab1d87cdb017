"""A Twisted client for the ultimate tic-tac-toe listener (``uttt``, PROTOCOLS.md §2).

Every call returns a Deferred, to be awaited in an ``async def`` run with
``ensureDeferred`` (or ``twisted.internet.task.react``)::

    from gtserver.uttt.client import UtttClient

    async def main(reactor):
        client = await UtttClient.connect("ws://127.0.0.1:5556/", reactor)
        greeting = await client.login("alice", "secret")
        await client.match_request("bob")            # bob must have an account
        match = client.matches[...]                   # every open match, kept current
        update = await client.move(match_id, sub_x=1, sub_y=1, x=0, y=2)
        push = await client.next_push("match_update")   # bob's answer
        await client.close()

The client keeps what the server pushed last: :attr:`UtttClient.matches`
(open and finished matches by id), :attr:`UtttClient.elo` and
:attr:`UtttClient.friends`. Pushes also stay queued in arrival order for
:meth:`UtttClient.next_push`. See docs/clients.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

from gtserver.wsclient import (
    ConnectionClosed,
    FrameClient,
    FrameConnection,
    Taken,
)

#: A request the server refuses without any effect (an empty name), sent after
#: a request whose answer has no end marker (login greeting, match states): its
#: response marks the end, since the server handles a connection's frames in order.
_BARRIER = {"type": "friend_request", "data": {"user": ""}}


class UtttError(Exception):
    """The server refused a request; ``data`` is its response (or error) frame's data."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.data = data


class MoveRefused(UtttError):
    """The server sent the match back unchanged; ``update`` is that match_update."""

    def __init__(self, update: dict) -> None:
        super().__init__("move refused", update)
        self.update = update


@dataclass
class Greeting:
    """What a successful login, temp_session or reconnect brought."""

    session: str
    user: str
    registered: bool
    msg: str
    elo: dict | None = None
    friends: dict | None = None
    matches: list[dict] = field(default_factory=list)


def mark_of(update: dict, user: str) -> int:
    """The cell value of ``user`` in a match_update: 1 for player_a, 2 for player_b."""
    state = update["match_state"]
    return 1 if state["player_a"] == user else 2 if state["player_b"] == user else 0


def legal_moves(update: dict) -> list[tuple[int, int, int, int]]:
    """Every ``(sub_x, sub_y, x, y)`` the player to move may play in this match."""
    state = update["match_state"]
    if state["game_over"]:
        return []
    cells, boards = state["complete_field"], state["global_field"]
    last = state.get("last_move")
    forced = None
    if last is not None:
        target = (int(last["x"]), int(last["y"]))
        if boards[target[1]][target[0]] == 0 and any(
                cells[target[1] * 3 + y][target[0] * 3 + x] == 0
                for x in range(3) for y in range(3)):
            forced = target
    moves = []
    for sub_y in range(3):
        for sub_x in range(3):
            if boards[sub_y][sub_x] != 0 or (forced is not None and forced != (sub_x, sub_y)):
                continue
            for y in range(3):
                for x in range(3):
                    if cells[sub_y * 3 + y][sub_x * 3 + x] == 0:
                        moves.append((sub_x, sub_y, x, y))
    return moves


class UtttClient(FrameClient):
    """One connection to a ``uttt`` listener; build it with :meth:`connect`.

    ``user``, ``session`` and ``registered`` are set by a successful login;
    ``connection`` is the underlying :class:`gtserver.wsclient.FrameConnection`.
    """

    def __init__(self, connection: FrameConnection) -> None:
        super().__init__(connection)
        self.user: str | None = None
        self.session: str | None = None
        self.registered = False
        self.matches: dict[str, dict] = {}
        self.elo: dict | None = None
        self.friends: dict | None = None
        connection.listen(self._track)

    # identity (the first frame of a connection)

    def login(self, name: str, password: str) -> Deferred:
        """Log in, registering an unknown name; an empty password asks for a
        temporary account. Fires with a :class:`Greeting` once the server sent
        the standing, friends and open matches; fails with :class:`UtttError`
        (the server then closes the connection)."""
        return ensureDeferred(self._identify("login", {"name": name, "pw": password},
                                             "login_response", name.lower()))

    def temp_session(self, name: str) -> Deferred:
        """Log in as a temporary user (no password, not ranked, no friends)."""
        return ensureDeferred(self._identify("temp_session", {"name": name},
                                             "login_response", name.lower()))

    def reconnect(self, session: str) -> Deferred:
        """Resume a session by the id an earlier login gave (``Greeting.session``)."""
        return ensureDeferred(self._identify("reconnect", {"id": session},
                                             "reconnect_response", None))

    # requests

    def match_request(self, player: str | None = None) -> Deferred:
        """Challenge ``player`` by name, or queue for a random opponent (None).

        Fires with the response's ``msg`` (``"match started"`` or ``"waiting
        for an opponent"``); a new match is in :attr:`matches` by then if it
        started. A queued request's match arrives later as a push (see
        :meth:`next_match`). Fails with :class:`UtttError` when refused.
        """
        async def requesting() -> str:
            sent = self._send("match_request", {"player": player})
            response = await self._response("match_request_response", sent)
            if not response.get("success"):
                raise UtttError(response.get("msg", "match request refused"), response)
            return response.get("msg")
        return ensureDeferred(requesting())

    def move(self, match_id: str, sub_x: int, sub_y: int, x: int, y: int) -> Deferred:
        """Play cell (x, y) of sub-board (sub_x, sub_y); fires with the new
        match_update. Fails with :class:`MoveRefused` (carrying the unchanged
        match) or :class:`UtttError` (unknown match, not yours)."""
        async def moving() -> dict:
            sent = self._send("move", {"id": match_id, "sub_x": sub_x, "sub_y": sub_y,
                                       "x": x, "y": y})
            update = await self._match_answer(match_id, "move", sent)
            state = update["match_state"]
            played = {"sub_x": sub_x, "sub_y": sub_y, "x": x, "y": y}
            last = state.get("last_move")
            cell = state["complete_field"][sub_y * 3 + y][sub_x * 3 + x]
            if (last is None or {k: int(v) for k, v in last.items()} != played
                    or cell != mark_of(update, self.user)):
                raise MoveRefused(update)
            return update
        return ensureDeferred(moving())

    def end_match(self, match_id: str) -> Deferred:
        """Abort a match; fires with its final match_update (``game_over`` true)."""
        async def ending() -> dict:
            sent = self._send("end_match", {"id": match_id})
            update = await self._match_answer(match_id, "end_match", sent)
            if not update["match_state"]["game_over"]:
                raise MoveRefused(update)
            return update
        return ensureDeferred(ending())

    def match_states(self) -> Deferred:
        """Fires with a match_update for every open match (match_states_request)."""
        async def asking() -> list[dict]:
            sent = self._send("match_states_request", {})
            return await self._until_barrier(sent)
        return ensureDeferred(asking())

    def friend(self, user: str) -> Deferred:
        """Add ``user`` as a friend; fires with the new friends_update data."""
        return ensureDeferred(self._change_friends("friend_request", user))

    def unfriend(self, user: str) -> Deferred:
        """Remove ``user`` from your friends; fires with the new friends_update data."""
        return ensureDeferred(self._change_friends("unfriend_request", user))

    # receiving

    def next_push(self, kind: str | None = None, timeout: float | None = None) -> Deferred:
        """The data of the next frame of type ``kind`` (any if None) not yet
        taken; fires with ``(type, data)`` when ``kind`` is None."""
        def pick(frame: Any) -> Taken | None:
            if not isinstance(frame, dict):
                return None
            if kind is None:
                return Taken((frame.get("type"), frame.get("data")))
            return Taken(frame.get("data")) if frame.get("type") == kind else None
        return self.connection.take(pick, timeout)

    def next_match(self, match_id: str | None = None, timeout: float | None = None) -> Deferred:
        """The next match_update (of ``match_id``, or of any match)."""
        def pick(frame: Any) -> Taken | None:
            if _is_update(frame, match_id):
                return Taken(frame["data"])
            return None
        return self.connection.take(pick, timeout)

    def send(self, kind: str, data: Any = None) -> None:
        """Send any ``{"type": kind, "data": data}`` frame (no waiting)."""
        self.connection.send({"type": kind, "data": {} if data is None else data})

    def open_matches(self) -> list[dict]:
        """The last update of every match not over, as far as pushes told."""
        return [update for update in self.matches.values()
                if not update["match_state"]["game_over"]]

    def close(self) -> Deferred:
        """Close the connection; fires with the close code."""
        return self.connection.close()

    def abort(self) -> Deferred:
        """Drop the connection without a close handshake."""
        return self.connection.abort()

    # internals

    def _track(self, frame: Any) -> None:
        if not isinstance(frame, dict) or not isinstance(frame.get("data"), dict):
            return
        kind, data = frame.get("type"), frame["data"]
        if kind == "match_update" and "id" in data:
            self.matches[data["id"]] = data
        elif kind == "elo_update":
            self.elo = data
        elif kind == "friends_update":
            self.friends = data

    async def _identify(self, kind: str, data: dict, response_type: str,
                        user: str | None) -> Greeting:
        sent = self._send(kind, data)
        response = await self._response(response_type, sent)
        if not response.get("success"):
            raise UtttError(response.get("msg") or f"{kind} refused", response)
        self.user = response.get("user") or user
        self.session, self.registered = response.get("id"), bool(response.get("registered"))
        greeting = Greeting(self.session, self.user, self.registered, response.get("msg"))
        # Sent only now: a barrier behind a refused reconnect would be taken
        # as the connection's first frame.
        for frame in await self._until_barrier(sent, everything=True):
            if frame["type"] == "elo_update":
                greeting.elo = frame["data"]
            elif frame["type"] == "friends_update":
                greeting.friends = frame["data"]
            elif frame["type"] == "match_update":
                greeting.matches.append(frame["data"])
        return greeting

    def _send(self, kind: str, data: dict) -> int:
        """Send a request; returns the number of frames received before it."""
        before = self.connection.frames_received
        self.connection.send({"type": kind, "data": data})
        return before

    async def _until_barrier(self, after: int, everything: bool = False) -> list:
        """The match_updates (every frame, with ``everything``) received after
        ``after`` frames, up to the barrier's answer."""
        self.connection.send(_BARRIER)
        taken = []
        while True:
            frame = await self.connection.take(
                lambda f: everything or _is_update(f) or _is_barrier(f), after=after)
            if _is_barrier(frame):
                return taken
            taken.append(frame if everything else frame["data"])

    async def _response(self, kind: str, after: int) -> dict:
        return await self.connection.take(
            lambda frame: Taken(frame["data"]) if _typed(frame, kind) else None, after=after)

    async def _match_answer(self, match_id: str, request: str, after: int) -> dict:
        def pick(frame: Any) -> Taken | None:
            if _is_update(frame, match_id):
                return Taken(frame["data"])
            if _typed(frame, "error") and frame["data"].get("request") == request:
                return Taken(UtttError(frame["data"].get("msg", "refused"), frame["data"]))
            return None
        answer = await self.connection.take(pick, after=after)
        if isinstance(answer, UtttError):
            raise answer
        return answer

    async def _change_friends(self, kind: str, user: str) -> dict:
        sent = self._send(kind, {"user": user})
        response = await self._response(f"{kind}_response", sent)
        if not response.get("success"):
            raise UtttError(response.get("msg", f"{kind} refused"), response)
        return await self.connection.take(
            lambda frame: Taken(frame["data"]) if _typed(frame, "friends_update") else None,
            after=sent)


def _typed(frame: Any, kind: str) -> bool:
    return (isinstance(frame, dict) and frame.get("type") == kind
            and isinstance(frame.get("data"), dict))


def _is_update(frame: Any, match_id: str | None = None) -> bool:
    return _typed(frame, "match_update") and (match_id is None
                                              or frame["data"].get("id") == match_id)


def _is_barrier(frame: Any) -> bool:
    return _typed(frame, "friend_request_response") and not frame["data"].get("success")


__all__ = ["ConnectionClosed", "Greeting", "MoveRefused", "UtttClient", "UtttError",
           "legal_moves", "mark_of"]
