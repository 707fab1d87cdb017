"""The ultimate tic-tac-toe WebSocket protocol (PROTOCOLS.md section 2).

Every frame is ``{"type": T, "data": {...}}``. This module only parses frames,
calls the core (accounts, :class:`UltimateMatches`, ratings, friends) and
renders replies; it keeps per-connection state only. Frames of one connection
are handled strictly in order, one at a time. Connection limits (frame size,
rate, slow readers, login and frame timeouts) are :mod:`gtserver.websocket`.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

from gtserver import jsontext, metrics
from gtserver.core.accounts import Accounts
from gtserver.core.errors import (
    BadCredentials,
    InvalidName,
    NameTaken,
    Throttled,
    UnknownSession,
)
from gtserver.core.friends import FriendList, FriendRefused, Friends
from gtserver.core.login import LoginPolicy
from gtserver.core.matches import Match
from gtserver.core.peers import Peer, TrustedProxies
from gtserver.core.ratings import Ratings, Standing
from gtserver.store import StoreError, Unstorable
from gtserver.uttt.matchmaking import (
    SOURCE,
    MatchRefused,
    MoveRefused,
    NotYourMatch,
    UltimateMatches,
    UnknownMatch,
    seat_to_move,
    winner,
)
from gtserver.uttt.settings import UtttSettings
from gtserver.websocket import GuardedServerProtocol, Limits, guard_factory

NAME = re.compile(r"[a-z0-9_-]{3,16}")   # used with fullmatch: "$" would allow a final "\n"
#: Frames larger than this get an error reply (and are never buffered).
MAX_FRAME = 64 * 1024
#: Frames waiting behind the one being handled; more closes the connection (1008).
MAX_BACKLOG = 256
#: A connection's session is marked used at most this often (seconds), which
#: keeps a busy temporary session from expiring while it plays.
SESSION_TOUCH_INTERVAL = 300.0
MOVE_FIELDS = ("sub_x", "sub_y", "x", "y")
IDENTITY_TYPES = ("login", "temp_session", "reconnect")
_METRICS = metrics.ListenerMetrics("uttt")


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
        message = jsontext.loads(payload.decode("utf-8"))
    except jsontext.NonFinite as number:
        problem = "is not JSON" if number.constant else "is too large"
        raise BadFrame(f"numbers must be finite ({number.text[:32]} {problem})") from None
    except (UnicodeDecodeError, ValueError):
        raise BadFrame("the frame is not valid JSON") from None
    except RecursionError:
        raise BadFrame("the frame is nested too deeply") from None
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


def encodable(text: str) -> bool:
    """True unless ``text`` holds a lone UTF-16 surrogate (legal in JSON, not in UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(text: str) -> bool:
    """True for text every store can keep: UTF-8 encodable and without NUL
    (PostgreSQL refuses NUL in text). Nothing stored is anything else, so a
    name or id that is not storable names nothing."""
    return "\x00" not in text and encodable(text)


class UtttServerProtocol(GuardedServerProtocol):
    logger = Logger()
    kind = "uttt"
    frames_sent = _METRICS.sent
    factory: UtttServerFactory

    def __init__(self) -> None:
        super().__init__()
        self.user: Any = None
        self.session: str | None = None
        #: The client (behind a trusted proxy, the one it names).
        self.peer: Peer | None = None
        self.address: str | None = None
        self._inbox: deque[bytes] = deque()
        self._busy = False
        self._closed = False
        self._last_touch = 0.0
        #: The request being handled and how it went, for /metrics.
        self._request_kind = "invalid"
        self._outcome = "ok"

    # connection events

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.connections.add(self)
        _METRICS.connections.value += 1

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.connections.discard(self)
        _METRICS.connections.value -= 1
        super().connectionLost(reason)

    def describe_peer(self) -> str:
        """Who the connection is, for log lines."""
        return f"{self.user.name if self.user else 'nobody'} at {self.address}"

    def onConnect(self, request: Any) -> None:
        # TCP_NODELAY is set for every listener by gtserver.service.
        self.peer = self.factory.trusted_proxies.client(
            Peer.of(self.transport), request.headers.get("x-forwarded-for"))
        self.address = self.peer.address

    def onMessage(self, payload: bytes | None, isBinary: bool) -> None:
        _METRICS.received.value += 1
        if self._closed:
            return
        if len(self._inbox) >= MAX_BACKLOG:
            self.close_connection(f"more than {MAX_BACKLOG} frames waiting to be handled")
            return
        self._inbox.append(payload)
        if not self._busy:
            self._busy = True
            ensureDeferred(self._drain())

    def onRefusedMessage(self, size: int) -> None:
        self.onMessage(None, False)   # answered in turn, after the frames before it

    def onOversizedMessage(self, size: int) -> None:
        self.error(f"frame too large (at most {self.limits.max_message} bytes)")

    def onClosing(self) -> None:
        # Frames already received are not handled: the connection is going.
        self._closed = True
        self._inbox.clear()

    def onClose(self, wasClean: bool, code: int, reason: str) -> None:
        self._closed = True
        self._inbox.clear()
        if self.user is not None:
            self.factory.service.disconnect(self.user, self)

    # sink (pushes from the core)

    def match_changed(self, match: Match) -> None:
        if not self._closed:
            self.send_bytes(self.factory.match_frame(match))

    def standing_changed(self, standing: Standing) -> None:
        self.send("elo_update", render_standing(standing))

    def friends_changed(self, friends: FriendList) -> None:
        self.send("friends_update", render_friends(friends))

    # frames

    def send(self, kind: str, data: Any) -> None:
        """Send a frame; nothing happens once the connection is closing: the
        client's close frame may arrive while its request is being handled."""
        if not self._closed:
            self.send_bytes(frame(kind, data))

    def error(self, message: str, kind: str | None = None) -> None:
        self._outcome = "refused"
        data = {"msg": message}
        if kind is not None:
            data["request"] = kind
        self.send("error", data)

    async def _drain(self) -> None:
        try:
            while self._inbox and not self._closed:
                payload = self._inbox.popleft()
                self._request_kind, self._outcome = "invalid", "ok"
                try:
                    await self._handle(payload)
                except Unstorable as problem:
                    # Text the database cannot hold that slipped past the
                    # checks at the edge: bad input, not an outage.
                    self.logger.info("uttt: request refused: {problem}", problem=problem)
                    self.error("the request holds text the server cannot store")
                except StoreError as problem:
                    # The database is down or the server is stopping: say so,
                    # the client may retry; nothing here is a bug.
                    self.logger.warn("uttt: request failed: {problem}", problem=problem)
                    self.error("the server cannot reach its database, try again later")
                    self._outcome = "store_error"
                    _METRICS.error("store")
                except Exception:
                    self.logger.failure("uttt: request failed")
                    self.error("internal server error")
                    self._outcome = "internal_error"
                    _METRICS.error("internal")
                _METRICS.request(self._request_kind, self._outcome)
        finally:
            self._busy = False

    async def _handle(self, payload: bytes | None) -> None:
        if payload is None or len(payload) > self.limits.refuse_above:
            self.error(f"frame too large (at most {self.limits.refuse_above} bytes)")
            return
        try:
            kind, data = parse(payload)
        except BadFrame as problem:
            self.error(str(problem))
            return
        self._request_kind = kind if kind in _KNOWN_KINDS else "other"
        if self.user is None:
            await self._identify(kind, data)
            return
        self._touch_session()
        handler = self.handlers.get(kind)
        if handler is not None:
            await handler(self, data)
        elif kind in IDENTITY_TYPES:
            response = {"success": False, "id": None, "registered": False,
                        "msg": f"already logged in as {self.user.name}"}
            if kind == "reconnect":
                self.send("reconnect_response", {**response, "user": None})
            else:
                self.send("login_response", response)
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
        self._outcome = "refused"
        self.send("login_response", {"success": False, "id": None, "registered": False,
                                     "msg": message})
        self.sendClose(code=1000, reason="login failed")
        # Frames already received behind the refused one are not handled: a
        # connection that is closing must not register or log in anyone.
        self._closed = True
        self._inbox.clear()

    async def _login(self, name: Any, password: Any) -> None:
        if password is None:
            password = ""
        if not isinstance(password, str):
            self._refuse_login("the password must be a string")
            return
        if not encodable(password):
            self._refuse_login("the password must be valid Unicode text")
            return
        accounts, policy = self.factory.accounts, self.factory.login_policy
        try:
            name = uttt_name(name)
        except InvalidName as refusal:
            accounts.record_refusal(refusal, name, self.peer, policy)
            self._refuse_login(str(refusal))
            return
        try:
            if password:
                user, _registered_now = await accounts.login(name, password, self.peer, policy)
            else:
                user = await accounts.create_temporary(name, self.peer, policy)
        except (InvalidName, Throttled) as refusal:
            self._refuse_login(str(refusal))
            return
        except BadCredentials:
            self._refuse_login("wrong name or password")
            return
        except NameTaken:
            self._refuse_login(f"the name {name} is taken")
            return
        except Unstorable:
            self._refuse_login("the name or password holds text the server cannot store")
            return
        except StoreError as problem:
            self._refuse_login(self._store_down("login", problem))
            return
        try:
            session = await accounts.open_session(user)
        except StoreError as problem:
            self._refuse_login(self._store_down("login", problem))
            return
        self.send("login_response", {"success": True, "id": session,
                                     "registered": not user.temporary, "msg": "logged in"})
        await self._start_session(user, session)

    def _store_down(self, request: str, problem: Exception) -> str:
        """Log an unreachable database; the message for the client."""
        self._outcome = "store_error"
        _METRICS.error("store")
        self.logger.warn("uttt: {request} of {peer} failed: {problem}", request=request,
                         peer=self.describe_peer(), problem=problem)
        return "the server cannot reach its database, try again later"

    async def _reconnect(self, data: dict[str, Any]) -> None:
        token = data.get("id")
        # The connection stays open after a failed reconnect, so the client
        # can log in on it instead.
        refusal = {"success": False, "id": None, "user": None, "registered": False}
        try:
            if isinstance(token, str) and not storable(token):
                raise UnknownSession(token)
            user = await self.factory.accounts.resume(token, self.peer,
                                                      self.factory.login_policy)
        except UnknownSession:
            self.send("reconnect_response", {**refusal, "msg": "unknown or expired session"})
            return
        except StoreError as problem:
            self.send("reconnect_response", {**refusal,
                                             "msg": self._store_down("reconnect", problem)})
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
        self.authenticated()
        self._last_touch = self.factory.clock.seconds()
        matches = await service.connect_loaded(user, self)
        self.standing_changed(await self.factory.ratings.standing(user.id))
        if not user.temporary:
            self.friends_changed(await self.factory.friends.list(user))
        for match in matches:
            self.match_changed(match)

    def _touch_session(self) -> None:
        now = self.factory.clock.seconds()
        if now - self._last_touch >= SESSION_TOUCH_INTERVAL:
            self._last_touch = now
            d = ensureDeferred(self.factory.accounts.resume(self.session))
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
                opponent = (await self.factory.accounts.user(opponent_name)
                            if storable(opponent_name) else None)
                await service.challenge(self.user, opponent, opponent_name)
                message = "match started"
            else:
                raise MatchRefused("'player' must be a name or null")
        except MatchRefused as refusal:
            self.send("match_request_response", {"success": False, "msg": str(refusal)})
            return
        self.send("match_request_response", {"success": True, "msg": message})

    @staticmethod
    def _match_id(data: dict[str, Any]) -> Any:
        """The request's match id; UnknownMatch for text no match id can be."""
        match_id = data.get("id")
        if isinstance(match_id, str) and not storable(match_id):
            raise UnknownMatch("there is no match with that id")
        return match_id

    async def _move(self, data: dict[str, Any]) -> None:
        arguments = {field: data.get(field) for field in MOVE_FIELDS}
        try:
            await self.factory.service.move(self.user, self._match_id(data), arguments,
                                            address=self.address)
        except MoveRefused as refusal:
            self.match_changed(refusal.match)
        except (UnknownMatch, NotYourMatch) as refusal:
            self.error(str(refusal), "move")

    async def _end_match(self, data: dict[str, Any]) -> None:
        try:
            await self.factory.service.abort(self.user, self._match_id(data))
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
            if not storable(name):
                raise FriendRefused("there is no registered user with that name")
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

    def close_connection(self, reason: str, *args: Any, **kwargs: Any) -> None:
        if self.state == self.STATE_OPEN:
            _METRICS.error("policy_close")
        super().close_connection(reason, *args, **kwargs)


#: Request types counted under their own name in /metrics (others: "other").
_KNOWN_KINDS = frozenset(UtttServerProtocol.handlers) | frozenset(IDENTITY_TYPES)


def limits_from(settings: UtttSettings) -> Limits:
    """The connection limits of the ``--uttt-...`` options."""
    return Limits(
        max_message=settings.max_frame,
        refuse_above=min(MAX_FRAME, settings.max_frame),
        max_rate=settings.max_rate,
        send_buffer=settings.send_buffer,
        handshake_timeout=settings.handshake_timeout,
        login_timeout=settings.login_timeout,
        message_timeout=settings.frame_timeout)


def uttt_name(name: Any) -> str:
    """The uttt name rule: lower-cased, 3 to 16 of ``a-z 0-9 _ -``."""
    if not isinstance(name, str) or not NAME.fullmatch(name.lower()):
        raise InvalidName("names are 3 to 16 letters, digits, '_' or '-'")
    return name.lower()


class UtttServerFactory(WebSocketServerFactory):
    protocol = UtttServerProtocol

    def __init__(self, accounts: Accounts, service: UltimateMatches, ratings: Ratings,
                 friends: Friends, clock: Any, settings: UtttSettings,
                 trusted_proxies: TrustedProxies, reactor: Any = None) -> None:
        super().__init__(reactor=reactor)
        self.accounts = accounts
        self.clock = clock
        self.service = service
        self.ratings = ratings
        self.friends = friends
        self.settings = settings
        self.login_policy = LoginPolicy(
            uttt_name, failures_per_account=settings.login_failures,
            window=settings.login_window, listener=SOURCE)
        self.trusted_proxies = trusted_proxies
        self._last_match_frame: tuple[tuple, bytes] | None = None
        self.connections: set[UtttServerProtocol] = set()
        guard_factory(self, limits_from(settings), clock)
        # UTF-8 is checked by the parser, so that bad text gets an error reply
        # instead of Autobahn failing the connection.
        self.setProtocolOptions(utf8validateIncoming=False)

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
