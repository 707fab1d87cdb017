"""Game sessions of the EOT game API: seats, keys, long-poll waiters, timeouts.

A *session* is a match of one game for a fixed number of players who find each
other through a shared token (or through ``"auto"``). This module knows no
wire format: requests arrive as plain arguments, answers are plain values or
Deferreds, refusals are :class:`SessionError` subclasses (their text is meant
for the player) and :class:`gtserver.games.IllegalMove` (the game's message).

Waiting is cheap: a parked ``join`` or ``state`` is one Deferred in a list of
its player; nothing runs until the session changes. Cancelling the Deferred
(the adapter does so when the client disconnects) removes the waiter at once.

State delivery follows a version number per session, bumped by every move
handed to the game (accepted or refused as illegal) and every restart. Each
player, and each player's observer seat (shared by every observer of that
player), remembers the version it last received; ``state`` answers at once
when there is a newer one and parks otherwise. A restart of a finished game
owes that game's final state, once, to every player but the restarter and to
every observer seat; it is delivered before the new game.

A state is computed once per session version and seat and handed to every
viewer of that seat as the same :class:`View` object (and players whose views
are equal, as in Chat, share one object too), so an adapter can encode it once
for all the waiters it releases.

Sessions are kept in memory only; every accepted move goes to the research
event log through the match service. Memory stays bounded: a session ends
after ``game_timeout`` seconds without requests; one whose game is over and
whose players have all received its final state is released sooner, after
``finished_grace`` seconds without requests (a restart within that time
keeps it); and at most ``sessions_max`` sessions are kept, the one idle the
longest making room for a new one.
"""

from __future__ import annotations

import hmac
import random
import secrets
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from gtserver.core.errors import CoreError
from gtserver.core.matches import Match, MatchClosed, MatchService, Seat
from gtserver.games import IllegalMove

AUTO = "auto"
CONTEXT = "eot"


class SessionError(CoreError):
    """A refused request; ``str(error)`` is the message for the client."""


class NoSuchGame(SessionError):
    def __init__(self, game: str) -> None:
        super().__init__("no such game")
        self.game = game


class BadRequest(SessionError):
    """The request's values do not make sense (e.g. a bad player count)."""


class NoSuchSession(SessionError):
    pass


class SessionFull(SessionError):
    pass


class ReservedToken(SessionError):
    pass


class NotStarted(SessionError):
    pass


class BadKey(SessionError):
    """Unknown player id or wrong key."""


class SessionReplaced(SessionError):
    pass


class SessionEnded(SessionError):
    """The session ended (idle timeout, server shutdown) while a client waited."""


class JoinTimeout(SessionError):
    pass


class NotYourTurn(SessionError):
    pass


class GameOver(SessionError):
    pass


class NotObservable(SessionError):
    pass


class GameFailed(SessionError):
    """The game's code raised; the traceback is in the log."""


class View(dict):
    """A delivered game state: read-only once delivered, shared by its viewers.

    ``rendering`` is a slot for the adapter that sends the view: it may keep
    its encoding there so that a view sent to many clients is encoded once.
    """

    __slots__ = ("rendering",)

    def __init__(self, *args: Any, **fields: Any) -> None:
        super().__init__(*args, **fields)
        self.rendering: Any = None


@dataclass(frozen=True)
class Joined:
    player_id: int
    key: str
    session: str


class Viewer:
    """Someone who receives states: a player, or an observer of a player."""

    __slots__ = ("player_id", "key", "seen", "final", "waiters")

    def __init__(self, player_id: int, key: str) -> None:
        self.player_id = player_id
        self.key = key
        #: Session version of the last state this viewer received.
        self.seen = 0
        #: The previous game's final state, owed once after a restart.
        self.final: View | None = None
        self.waiters: list[Deferred] = []


class Player(Viewer):
    __slots__ = ("name", "joined", "join_timer")

    def __init__(self, player_id: int, key: str, name: str) -> None:
        super().__init__(player_id, key)
        self.name = name
        self.joined: Deferred | None = None
        self.join_timer: Any = None


class Session:
    __slots__ = ("game", "token", "size", "auto", "players", "observers", "seats", "match",
                 "version", "views", "touched", "timer", "parked", "replaced", "ended")

    def __init__(self, game: str, token: str, size: int, auto: bool, now: float) -> None:
        self.game = game
        self.token = token
        self.size = size
        self.auto = auto
        self.players: list[Player] = []
        #: Observer keys, each mapped to the observer seat of its player.
        self.observers: dict[str, Viewer] = {}
        #: One observer seat per player, shared by all of that player's observers.
        self.seats: list[Viewer] = []
        self.match: Match | None = None
        self.version = 0
        #: The views of the current version by seat (shared by its viewers).
        self.views: dict[int, View] = {}
        self.touched = now
        self.timer: Any = None
        #: Viewers with at least one parked state request.
        self.parked: set[Viewer] = set()
        #: The session this one replaced (its keys get a clear error).
        self.replaced: Session | None = None
        self.ended = False

    @property
    def full(self) -> bool:
        return len(self.players) >= self.size


def _same(key: Any, expected: str) -> bool:
    """Whether ``key`` is ``expected``, in constant time (any string, even one
    with unpaired surrogates, is merely a wrong key)."""
    return isinstance(key, str) and hmac.compare_digest(
        key.encode("utf-8", "surrogatepass"), expected.encode())


class SessionService(Service):
    """Every EOT session of the daemon (a core component)."""

    log = Logger()

    def __init__(self, core: Any, join_timeout: float | None = None,
                 game_timeout: float | None = None, rng: random.Random | None = None,
                 finished_grace: float | None = None,
                 sessions_max: int | None = None) -> None:
        config = core.config
        self.clock = core.clock
        self.matches: MatchService = core.component(MatchService)
        self.join_timeout = float(join_timeout if join_timeout is not None
                                  else config.get("eot_join_timeout", 300.0))
        self.game_timeout = float(game_timeout if game_timeout is not None
                                  else config.get("eot_game_timeout", 3600.0))
        self.finished_grace = float(finished_grace if finished_grace is not None
                                    else config.get("eot_finished_grace", 60.0))
        self.sessions_max = int(sessions_max if sessions_max is not None
                                else config.get("eot_sessions_max", 10_000))
        self.rng = rng or random.SystemRandom()
        #: Every session by (game, token), least recently requested first.
        self.sessions: dict[tuple[str, str], Session] = {}
        #: Open (not yet full) auto sessions per game, oldest first.
        self.open_auto: dict[str, list[Session]] = {}

    # requests

    def join(self, game: str, token: str, players: int | None, name: str) -> Deferred:
        """Join (or start) a session; fires with :class:`Joined` once it is full."""
        if game not in self.matches.games:
            raise NoSuchGame(game)
        if token == AUTO:
            session = self._auto_session(game, players)
        elif token.startswith(AUTO):
            raise ReservedToken("session tokens starting with 'auto' are reserved")
        else:
            session = self._named_session(game, token, players)
        player = Player(len(session.players), secrets.token_hex(16), name)
        session.players.append(player)
        self._touch(session)
        if session.full:
            self._start(session)
            return succeed(Joined(player.player_id, player.key, session.token))
        player.joined = Deferred(lambda d: self._leave(session, player))
        player.join_timer = self.clock.callLater(
            self.join_timeout, self._join_timed_out, session, player)
        return player.joined

    def move(self, game: str, token: str, player_id: int, key: str,
             arguments: dict[str, Any], address: str | None = None) -> None:
        """Apply a move; raises a SessionError or the game's IllegalMove."""
        session = self._session(game, token)
        self._player(session, player_id, key)
        match = self._running_match(session)
        if match.finished:
            raise GameOver("the game is over")
        if player_id not in match.game.current():
            raise NotYourTurn("it is not your turn")
        try:
            self.matches.move_transient(
                match, player_id, arguments, address,
                {"game": game, "session": token, "player": player_id})
        except IllegalMove:
            self._bump(session)     # a refused move is a change for everybody
            raise
        except MatchClosed:
            raise GameOver("the game is over") from None
        except Exception:
            self.log.failure("game {game} raised on a move", game=game)
            raise GameFailed("internal error in the game") from None
        self._bump(session)

    def state(self, game: str, token: str, player_id: int, key: str,
              observer: bool = False) -> View | Deferred:
        """The state for this viewer now, or a Deferred when it has to wait."""
        session = self._session(game, token)
        viewer = (self._observer(session, player_id, key) if observer
                  else self._player(session, player_id, key))
        self._running_match(session)
        if viewer.final is not None or viewer.seen != session.version:
            return self._deliver(session, viewer)
        waiter = Deferred(lambda d: self._unpark(session, viewer, d))
        viewer.waiters.append(waiter)
        session.parked.add(viewer)
        return waiter

    def observe(self, game: str, token: str, name: str) -> Joined:
        """An observer key for the player called ``name`` of a running session."""
        if token == AUTO or token.startswith(AUTO):
            raise NotObservable("auto-join sessions cannot be observed")
        if not name:
            raise BadRequest("name the player to observe")
        session = self._session(game, token)
        self._running_match(session)
        for player in session.players:
            if player.name == name:
                key = secrets.token_hex(16)
                session.observers[key] = session.seats[player.player_id]
                return Joined(player.player_id, key, session.token)
        raise BadRequest(f"no player called {name!r} in this session")

    def restart(self, game: str, token: str, player_id: int, key: str) -> None:
        """A fresh game in the same session.

        When the old game was over, every player but the restarter and every
        observer seat get its final state first, once.
        """
        session = self._session(game, token)
        player = self._player(session, player_id, key)
        old = self._running_match(session)
        try:
            if old.finished:
                for viewer in self._viewers(session):
                    if viewer is not player:
                        viewer.final = self._shared_view(session, old, viewer.player_id)
            new = self._new_match(session)
        except SessionError:
            raise
        except Exception:
            self.log.failure("game {game} raised on a restart", game=game)
            raise GameFailed("internal error in the game") from None
        self.matches.end_transient(old, player_id)
        session.match = new
        self._bump(session)

    def _bump(self, session: Session) -> None:
        """A new version: forget the old views, answer everyone parked."""
        session.version += 1
        session.views = {}
        if session.parked:
            self._wake(session)

    # lookups

    def _session(self, game: str, token: str) -> Session:
        session = self.sessions.get((game, token))
        if session is None:
            if game not in self.matches.games:
                raise NoSuchGame(game)
            raise NoSuchSession("no such session")
        self._touch(session)
        return session

    def _touch(self, session: Session) -> None:
        """A request for ``session``: it is the most recently used one now."""
        session.touched = self.clock.seconds()
        key = (session.game, session.token)
        if self.sessions.get(key) is session:
            del self.sessions[key]
            self.sessions[key] = session

    def _player(self, session: Session, player_id: int, key: str) -> Player:
        if 0 <= player_id < len(session.players):
            player = session.players[player_id]
            if _same(key, player.key) and player.joined is None:
                return player
        raise self._key_error(session, key)

    def _observer(self, session: Session, player_id: int, key: str) -> Viewer:
        viewer = session.observers.get(key) if isinstance(key, str) else None
        if viewer is not None and viewer.player_id == player_id:
            return viewer
        raise self._key_error(session, key)

    @staticmethod
    def _key_error(session: Session, key: Any) -> SessionError:
        old = session.replaced
        if old is not None and isinstance(key, str) and (
                any(_same(key, p.key) for p in old.players) or key in old.observers):
            return SessionReplaced("the session was replaced by a new one")
        return BadKey("not joined: unknown player id or wrong key")

    def _running_match(self, session: Session) -> Match:
        if session.match is None:
            raise NotStarted("the session has not started yet")
        return session.match

    def _viewers(self, session: Session):
        yield from session.players
        yield from session.seats

    # sessions

    def _auto_session(self, game: str, players: int | None) -> Session:
        waiting = self.open_auto.get(game)
        if waiting:
            return waiting[0]
        if players is None:
            raise NoSuchSession("no open session to join; give the number of players "
                                "to start one")
        session = self._new_session(game, f"{AUTO}-{secrets.token_hex(8)}", players, True)
        self.open_auto.setdefault(game, []).append(session)
        return session

    def _named_session(self, game: str, token: str, players: int | None) -> Session:
        session = self.sessions.get((game, token))
        if session is not None and not session.full:
            return session
        if players is None:
            if session is None:
                raise NoSuchSession("no such session; give the number of players to "
                                    "start one")
            raise SessionFull("the session is full")
        replacement = self._new_session(game, token, players, False)
        if session is not None:
            self._end(session, SessionReplaced("the session was replaced by a new one"))
            session.replaced = None
            replacement.replaced = session
        self.sessions[(game, token)] = replacement
        return replacement

    def _new_session(self, game: str, token: str, size: int, auto: bool) -> Session:
        """A new session for ``size`` players.

        The player count is checked only here: a join that enters an open
        session ignores its ``players``, as the protocol says.
        """
        factory = self.matches.games[game]
        if not factory.min_players <= size <= factory.max_players:
            raise BadRequest(f"{game} is played by {factory.min_players} to "
                             f"{factory.max_players} players")
        while len(self.sessions) >= self.sessions_max:
            idlest = next(iter(self.sessions.values()))
            self._end(idlest, SessionEnded("the session ended to make room for new ones "
                                           "(the server keeps a bounded number)"))
        session = Session(game, token, size, auto, self.clock.seconds())
        self.sessions[(game, token)] = session
        session.timer = self.clock.callLater(self.game_timeout, self._check_idle, session)
        return session

    def _new_match(self, session: Session) -> Match:
        """A new game for the session, with its own seeded random generator.

        The seed is in the match's start event, so a match can be replayed.
        """
        seats = [Seat(player.name or f"player {player.player_id}") for player in session.players]
        seed = self.rng.getrandbits(64)
        return self.matches.create_transient(session.game, seats, CONTEXT,
                                             random.Random(seed),
                                             {"session": session.token, "seed": seed})

    def _start(self, session: Session) -> None:
        if session.auto:
            waiting = self.open_auto.get(session.game, [])
            if session in waiting:
                waiting.remove(session)
            if not waiting:
                self.open_auto.pop(session.game, None)
        try:
            session.match = self._new_match(session)
        except Exception:
            self.log.failure("game {game} raised on start", game=session.game)
            self._end(session, GameFailed("internal error in the game"))
            raise GameFailed("internal error in the game") from None
        session.version = 1
        session.views = {}
        session.seats = [Viewer(player.player_id, "") for player in session.players]
        for player in session.players:
            self._cancel_join_timer(player)
            joined, player.joined = player.joined, None
            if joined is not None:
                joined.callback(Joined(player.player_id, player.key, session.token))

    def _leave(self, session: Session, player: Player) -> None:
        """A joiner gave up (timeout or disconnect) before the session filled."""
        self._cancel_join_timer(player)
        player.joined = None
        if player in session.players:
            session.players.remove(player)
            for index, other in enumerate(session.players):
                other.player_id = index
        if not session.players:
            self._discard(session)

    def _join_timed_out(self, session: Session, player: Player) -> None:
        player.join_timer = None
        joined = player.joined
        self._leave(session, player)
        if joined is not None:
            joined.errback(JoinTimeout("not enough players joined in time"))

    @staticmethod
    def _cancel_join_timer(player: Player) -> None:
        if player.join_timer is not None and player.join_timer.active():
            player.join_timer.cancel()
        player.join_timer = None

    def _end_seen(self, session: Session) -> bool:
        """Whether the game is over and every player has received its final state."""
        match = session.match
        return (match is not None and match.finished
                and all(player.seen == session.version and player.final is None
                        for player in session.players))

    def _check_idle(self, session: Session) -> None:
        """End the session once idle too long; else look again when it may be."""
        finished = self._end_seen(session)
        limit = min(self.finished_grace, self.game_timeout) if finished else self.game_timeout
        idle = self.clock.seconds() - session.touched
        session.timer = None
        if idle < limit:
            session.timer = self.clock.callLater(limit - idle, self._check_idle, session)
        elif finished:
            self._end(session, SessionEnded("the session was released: its game is over "
                                            "and every player has seen the end"))
        else:
            self._end(session, SessionEnded(
                f"the session ended after {self.game_timeout:g} s without requests"))

    def _end_delivered(self, session: Session) -> None:
        """A player got the final state: release the session after the grace
        if that was the last one to see it."""
        if session.ended or not self._end_seen(session):
            return
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        grace = min(self.finished_grace, self.game_timeout)
        session.timer = self.clock.callLater(
            max(0.0, session.touched + grace - self.clock.seconds()),
            self._check_idle, session)

    def _end(self, session: Session, reason: SessionError) -> None:
        """End a session: every waiting client gets ``reason``."""
        if session.ended:
            return
        session.ended = True
        self._discard(session)
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        session.timer = None
        if session.match is not None:
            self.matches.end_transient(session.match, None)
        for player in session.players:
            self._cancel_join_timer(player)
            joined, player.joined = player.joined, None
            if joined is not None:
                joined.errback(reason)
        for viewer in list(session.parked):
            waiters, viewer.waiters = viewer.waiters, []
            for waiter in waiters:
                waiter.errback(reason)
        session.parked.clear()

    def _discard(self, session: Session) -> None:
        if self.sessions.get((session.game, session.token)) is session:
            del self.sessions[(session.game, session.token)]
        waiting = self.open_auto.get(session.game)
        if waiting and session in waiting:
            waiting.remove(session)
            if not waiting:
                del self.open_auto[session.game]
        if not session.ended and session.timer is not None and session.timer.active():
            session.timer.cancel()
            session.timer = None

    # states

    def _view(self, match: Match, seat: int) -> View:
        game = match.game
        view = View(game.state(seat))
        view["current"] = list(game.current())
        view["gameover"] = bool(game.is_over())
        return view

    def _shared_view(self, session: Session, match: Match, seat: int) -> View:
        """The view of ``seat`` at the session's version, computed once.

        A seat whose view equals the one computed just before (every seat of
        Chat, say) gets that same object, so it is rendered once for all.
        """
        views = session.views
        view = views.get(seat)
        if view is None:
            view = self._view(match, seat)
            if views:
                previous = next(reversed(views.values()))
                if previous == view:
                    view = previous
            views[seat] = view
        return view

    def _deliver(self, session: Session, viewer: Viewer) -> View:
        """What ``viewer`` is owed now: an old game's final state, else the current one."""
        if viewer.final is not None:
            final, viewer.final = viewer.final, None
            return final
        try:
            view = self._shared_view(session, session.match, viewer.player_id)
        except Exception:
            self.log.failure("game {game} raised in state()", game=session.game)
            raise GameFailed("internal error in the game") from None
        viewer.seen = session.version
        if view["gameover"] and type(viewer) is Player:
            self._end_delivered(session)
        return view

    def _wake(self, session: Session) -> None:
        """Answer every parked viewer."""
        parked, session.parked = session.parked, set()
        for viewer in parked:
            waiters, viewer.waiters = viewer.waiters, []
            try:
                view = self._deliver(session, viewer)
            except GameFailed as error:
                for waiter in waiters:
                    waiter.errback(error)
                continue
            for waiter in waiters:
                waiter.callback(view)

    def _unpark(self, session: Session, viewer: Viewer, waiter: Deferred) -> None:
        if waiter in viewer.waiters:
            viewer.waiters.remove(waiter)
        if not viewer.waiters:
            session.parked.discard(viewer)

    # the operator's view and controls (the web monitor)

    def snapshot(self) -> dict[str, Any]:
        """Sessions waiting to fill and parked state requests, as plain data."""
        now = self.clock.seconds()
        waiting, parked = [], []
        for session in self.sessions.values():
            if session.match is None:
                waiting.append({"game": session.game, "session": session.token,
                                "players": [player.name for player in session.players],
                                "size": session.size, "idle": now - session.touched})
            requests = sum(len(viewer.waiters) for viewer in session.parked)
            if requests:
                parked.append({"game": session.game, "session": session.token,
                               "requests": requests,
                               "match": session.match.id if session.match else None})
        return {"sessions": len(self.sessions), "waiting": waiting, "parked": parked}

    def end_match(self, match_id: str) -> bool:
        """End the session playing match ``match_id`` for the operator: its
        clients get a "session ended" error. False if no session plays it."""
        for session in list(self.sessions.values()):
            if session.match is not None and session.match.id == match_id:
                self._end(session, SessionEnded("the session was ended by the operator"))
                return True
        return False

    # service

    def stopService(self) -> None:
        super().stopService()
        for session in list(self.sessions.values()):
            self._end(session, SessionEnded("the server is shutting down"))
