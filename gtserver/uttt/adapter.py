"""The ultimate tic-tac-toe WebSocket protocol (PROTOCOLS.md section 2).

Every frame is ``{"type": T, "data": {...}}``. This module only parses frames,
calls the core (accounts, :class:`UltimateMatches`, ratings, friends) and
renders replies; it keeps per-connection state only. Frames of one connection
are handled strictly in order, one at a time.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

from gtserver.core.errors import BadCredentials, NameTaken, Throttled, UnknownSession
from gtserver.core.friends import FriendList, FriendRefused, Friends
from gtserver.core.matches import Match
from gtserver.core.ratings import Ratings, Standing
from gtserver.core.throttle import Throttle
from gtserver.store import StoreError
from gtserver.uttt.matchmaking import (
    MatchRefused,
    MoveRefused,
    NotYourMatch,
    UltimateMatches,
    UnknownMatch,
    seat_to_move,
    winner,
)

NAME = re.compile(r"[a-z0-9_-]{3,16}")   # used with fullmatch: "$" would allow a final "\n"
#: Largest frame answered with an error reply; larger ones close the connection.
MAX_FRAME = 64 * 1024
HARD_MAX_FRAME = 1024 * 1024
#: A connection's session is marked used at most this often (seconds), which
#: keeps a busy temporary session from expiring while it plays.
SESSION_TOUCH_INTERVAL = 300.0
MOVE_FIELDS = ("sub_x", "sub_y", "x", "y")
IDENTITY_TYPES = ("login", "temp_session", "reconnect")


def frame(kind: str, data: Any) -> bytes:
    return json.dumps({"type": kind, "data": data}, separators=(",", ":")).encode("utf-8")


def format_time(seconds: float) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def render_match(match: Match, revoke_time: float) -> dict[str, Any]:
    """The ``match_update`` data of a match."""
    names = [seat.name for seat in match.seats]
    state = match.game.state(None)
    won = winner(match)
    to_move = names[seat_to_move(match)]
    state.update(
        game_over=match.finished,
        is_draw=match.game.is_over() and won is None,
        player_won=names[won] if won is not None else None,
        active_player=to_move,
        current_player=None if match.finished else to_move,
        player_a=names[0],
        player_b=names[1])
    return {"id": match.id, "revoke_time": format_time(revoke_time),
            "ranked": bool(match.ranked), "match_state": state}


def render_standing(standing: Standing) -> dict[str, Any]:
    return {"elo": standing.elo, "rank": standing.rank, "top_names": standing.top_names,
            "top_elos": standing.top_elos}


def render_friends(friends: FriendList) -> dict[str, Any]:
    return {"friends": friends.names, "elos": friends.elos}


class BadFrame(ValueError):
    """A frame that is not ``{"type": str, "data": object}``."""


def parse(payload: bytes) -> tuple[str, dict[str, Any]]:
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadFrame("the frame is not valid JSON") from None
    if not isinstance(message, dict):
        raise BadFrame("the frame must be a JSON object")
    kind, data = message.get("type"), message.get("data", {})
    if not isinstance(kind, str):
        raise BadFrame("the frame needs a string 'type'")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BadFrame("'data' must be an object")
    return kind, data


class UtttServerProtocol(WebSocketServerProtocol):
    # Not named ``log``: that would replace Autobahn's own logger, whose debug
    # calls (several per frame) are no-ops, with one that emits every one.
    logger = Logger()
    factory: UtttServerFactory

    def __init__(self) -> None:
        super().__init__()
        self.user: Any = None
        self.session: str | None = None
        self.address: str | None = None
        self._inbox: deque[bytes] = deque()
        self._busy = False
        self._closed = False
        self._last_touch = 0.0

    # connection events

    def onConnect(self, request: Any) -> None:
        # TCP_NODELAY is set for every listener by gtserver.service.
        peer = self.transport.getPeer()
        self.address = getattr(peer, "host", None) or str(peer)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._closed:
            return
        self._inbox.append(payload)
        if not self._busy:
            self._busy = True
            ensureDeferred(self._drain())

    def onClose(self, wasClean: bool, code: int, reason: str) -> None:
        self._closed = True
        self._inbox.clear()
        if self.user is not None:
            self.factory.service.disconnect(self.user, self)

    # sink (pushes from the core)

    def match_changed(self, match: Match) -> None:
        if not self._closed:
            self.sendMessage(self.factory.match_frame(match))

    def standing_changed(self, standing: Standing) -> None:
        self.send("elo_update", render_standing(standing))

    def friends_changed(self, friends: FriendList) -> None:
        self.send("friends_update", render_friends(friends))

    # frames

    def send(self, kind: str, data: Any) -> None:
        if not self._closed:
            self.sendMessage(frame(kind, data))

    def error(self, message: str, kind: str | None = None) -> None:
        data = {"msg": message}
        if kind is not None:
            data["request"] = kind
        self.send("error", data)

    async def _drain(self) -> None:
        try:
            while self._inbox and not self._closed:
                payload = self._inbox.popleft()
                try:
                    await self._handle(payload)
                except StoreError as problem:
                    # The database is down or the server is stopping: say so,
                    # the client may retry; nothing here is a bug.
                    self.logger.warn("uttt: request failed: {problem}", problem=problem)
                    self.error("the server cannot reach its database, try again later")
                except Exception:
                    self.logger.failure("uttt: request failed")
                    self.error("internal server error")
        finally:
            self._busy = False

    async def _handle(self, payload: bytes) -> None:
        if len(payload) > self.factory.max_frame:
            self.error(f"frame too large (at most {self.factory.max_frame} bytes)")
            return
        try:
            kind, data = parse(payload)
        except BadFrame as problem:
            self.error(str(problem))
            return
        if self.user is None:
            await self._identify(kind, data)
            return
        self._touch_session()
        handler = self.handlers.get(kind)
        if handler is not None:
            await handler(self, data)
        elif kind in IDENTITY_TYPES:
            response = "reconnect_response" if kind == "reconnect" else "login_response"
            self.send(response, {"success": False, "msg": "already logged in"})
        # other types after login are ignored, as the protocol asks

    # identity

    async def _identify(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "reconnect":
            await self._reconnect(data)
        elif kind == "login":
            await self._login(data.get("name"), data.get("pw"))
        elif kind == "temp_session":
            await self._login(data.get("name"), "")
        else:
            self._refuse_login("log in first (login, temp_session or reconnect)")

    def _refuse_login(self, message: str) -> None:
        self.send("login_response", {"success": False, "id": None, "registered": False,
                                     "msg": message})
        self.sendClose(code=1000, reason="login failed")
        # Frames already received behind the refused one are not handled: a
        # connection that is closing must not register or log in anyone.
        self._closed = True
        self._inbox.clear()

    async def _login(self, name: Any, password: Any) -> None:
        if not isinstance(name, str) or not NAME.fullmatch(name.lower()):
            self._refuse_login("names are 3 to 16 letters, digits, '_' or '-'")
            return
        if password is None:
            password = ""
        if not isinstance(password, str):
            self._refuse_login("the password must be a string")
            return
        name = name.lower()
        accounts, throttle = self.factory.core.accounts, self.factory.throttle
        keys = (("name", name), ("address", self.address))
        try:
            throttle.check(*keys)
            if password:
                user, _registered_now = await accounts.login(name, password)
            else:
                user = await accounts.create_temporary(name)
        except Throttled as refusal:
            self._refuse_login(str(refusal))
            return
        except BadCredentials:
            throttle.failure(*keys)
            self._refuse_login("wrong name or password")
            return
        except NameTaken:
            self._refuse_login(f"the name {name} is taken")
            return
        throttle.success(keys[0])
        session = await accounts.open_session(user)
        self.send("login_response", {"success": True, "id": session,
                                     "registered": not user.temporary, "msg": "logged in"})
        await self._start_session(user, session)

    async def _reconnect(self, data: dict[str, Any]) -> None:
        token = data.get("id")
        try:
            user = await self.factory.core.accounts.resume(token)
        except UnknownSession:
            # The connection stays open so the client can log in on it instead.
            self.send("reconnect_response", {"success": False, "id": None, "user": None,
                                             "registered": False,
                                             "msg": "unknown or expired session"})
            return
        self.send("reconnect_response", {"success": True, "id": token, "user": user.name,
                                         "registered": not user.temporary,
                                         "msg": "reconnected"})
        await self._start_session(user, token)

    async def _start_session(self, user: Any, session: str) -> None:
        """Attach the connection to the user, then send standing, friends, matches."""
        service = self.factory.service
        await service.ready()
        if self._closed:
            return
        self.user, self.session = user, session
        self._last_touch = self.factory.core.clock.seconds()
        matches = service.connect(user, self)
        self.standing_changed(await self.factory.ratings.standing(user.id))
        if not user.temporary:
            self.friends_changed(await self.factory.friends.list(user))
        for match in matches:
            self.match_changed(match)

    def _touch_session(self) -> None:
        now = self.factory.core.clock.seconds()
        if now - self._last_touch >= SESSION_TOUCH_INTERVAL:
            self._last_touch = now
            d = ensureDeferred(self.factory.core.accounts.resume(self.session))
            d.addErrback(lambda _failure: None)   # an expired session just stays expired

    # requests after login

    async def _match_request(self, data: dict[str, Any]) -> None:
        service = self.factory.service
        opponent_name = data.get("player")
        try:
            if opponent_name is None:
                match = await service.request_random(self.user)
                message = "match started" if match else "waiting for an opponent"
            elif isinstance(opponent_name, str):
                opponent_name = opponent_name.lower()
                opponent = await self.factory.core.accounts.user(opponent_name)
                await service.challenge(self.user, opponent, opponent_name)
                message = "match started"
            else:
                raise MatchRefused("'player' must be a name or null")
        except MatchRefused as refusal:
            self.send("match_request_response", {"success": False, "msg": str(refusal)})
            return
        self.send("match_request_response", {"success": True, "msg": message})

    async def _move(self, data: dict[str, Any]) -> None:
        arguments = {field: data.get(field) for field in MOVE_FIELDS}
        try:
            await self.factory.service.move(self.user, data.get("id"), arguments,
                                            address=self.address)
        except MoveRefused as refusal:
            self.match_changed(refusal.match)
        except (UnknownMatch, NotYourMatch) as refusal:
            self.error(str(refusal), "move")

    async def _end_match(self, data: dict[str, Any]) -> None:
        try:
            await self.factory.service.abort(self.user, data.get("id"))
        except MoveRefused as refusal:
            self.match_changed(refusal.match)
        except (UnknownMatch, NotYourMatch) as refusal:
            self.error(str(refusal), "end_match")

    async def _match_states(self, data: dict[str, Any]) -> None:
        for match in self.factory.service.open_matches(self.user):
            self.match_changed(match)

    async def _friend_request(self, data: dict[str, Any]) -> None:
        await self._change_friends(data, "friend_request_response", Friends.add)

    async def _unfriend_request(self, data: dict[str, Any]) -> None:
        await self._change_friends(data, "unfriend_request_response", Friends.remove)

    async def _change_friends(self, data: dict[str, Any], response: str, change: Any) -> None:
        name = data.get("user")
        friends = self.factory.friends
        try:
            if not isinstance(name, str) or not name:
                raise FriendRefused("'user' must be a name")
            await change(friends, self.user, name.lower())
        except FriendRefused as refusal:
            self.send(response, {"success": False, "msg": str(refusal)})
            return
        self.send(response, {"success": True, "msg": "ok"})
        self.factory.service.push_friends(self.user, await friends.list(self.user))

    handlers = {
        "match_request": _match_request,
        "move": _move,
        "end_match": _end_match,
        "match_states_request": _match_states,
        "friend_request": _friend_request,
        "unfriend_request": _unfriend_request,
    }


class UtttServerFactory(WebSocketServerFactory):
    protocol = UtttServerProtocol

    def __init__(self, core: Any, config: Any) -> None:
        super().__init__()
        self.core = core
        self.service = core.component(UltimateMatches)
        self.ratings = core.component(Ratings)
        self.friends = core.component(Friends)
        self.throttle = Throttle(core.clock, limit=int(config.get("uttt_login_failures", 5)),
                                 window=float(config.get("uttt_login_window", 300.0)))
        self.max_frame = MAX_FRAME
        self._last_match_frame: tuple[tuple, bytes] | None = None
        # UTF-8 is checked by the parser, so that bad text gets an error reply
        # instead of Autobahn failing the connection.
        self.setProtocolOptions(maxFramePayloadSize=HARD_MAX_FRAME,
                                maxMessagePayloadSize=HARD_MAX_FRAME,
                                utf8validateIncoming=False)

    def match_frame(self, match: Match) -> bytes:
        """The ``match_update`` frame of ``match`` as it is now.

        A push reaches every socket of both players in a row, so the frame
        last encoded is kept and reused while the match is unchanged: a move
        replaces the game's ``last_move`` object, an abort sets
        ``aborted_by``, a failed store write replaces the game, and each of
        them changes ``updated`` as well.
        """
        game = match.game
        version = (match, game, game.last_move, match.aborted_by, match.updated)
        cached = self._last_match_frame
        if cached is not None and _same_version(cached[0], version):
            return cached[1]
        encoded = frame("match_update", render_match(match, self.service.revoke_time(match)))
        self._last_match_frame = (version, encoded)
        return encoded


def _same_version(old: tuple, new: tuple) -> bool:
    old_match, old_game, old_last, old_aborted, old_updated = old
    match, game, last, aborted, updated = new
    return (old_match is match and old_game is game and old_last is last
            and old_aborted == aborted and old_updated == updated)
