"""Tables of the EOT game API: seats, keys, long-poll waiters, timeouts.

A *table* is where a fixed number of players play one game, match after match,
with an observer seat per player. Players find each other through a shared
token (or through ``"auto"``); the wire and the original clients call the
table a "session" and the token its session token (the request field
``session``), which has nothing to do with the account sessions of the
other protocols. This module knows no
wire format: requests arrive as plain arguments, answers are plain values or
Deferreds, refusals are :class:`TableError` subclasses (their text is meant
for the player) and the refusals of a move every protocol shares
(:class:`gtserver.core.matches.NotYourTurn`,
:class:`gtserver.core.matches.MatchOver` and the game's
:class:`gtserver.games.IllegalMove`).

Waiting is cheap: a parked ``join`` or ``state`` is one Deferred in a list of
its player; nothing runs until the table changes. Cancelling the Deferred
(the adapter does so when the client disconnects) removes the waiter at once.

State delivery follows a version number per table, bumped by every move
handed to the game (accepted or refused as illegal) and every restart. Each
player, and each player's observer seat (shared by every observer of that
player), remembers the version it last received; ``state`` answers at once
when there is a newer one and parks otherwise. A restart of a finished game
owes that game's final state, once, to every player but the restarter and to
every observer seat; it is delivered before the new game.

A state is computed once per table version and seat and handed to every
viewer of that seat as the same :class:`View` object (and players whose views
are equal, as in Chat, share one object too), so an adapter can encode it once
for all the waiters it releases.

Tables and their matches are kept in memory only; every accepted move goes
to the research event log through the recorder the service is given. Memory
stays bounded: a table ends after ``game_timeout`` seconds without
requests; one whose game is over and whose players have all received its
final state is released sooner, after ``finished_grace`` seconds without
requests (a restart within that time keeps it); and at most
``tables_max`` tables are kept, the one idle the longest making room for
a new one.
"""

from __future__ import annotations

import hmac
import random
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gtserver.core.errors import CoreError
from gtserver.core.matches import EventRecorder, Match, Seat
from gtserver.games import IllegalMove

AUTO = "auto"
SOURCE = "eot"
#: Research-log kinds of a player joining a table and of an observer's key
#: (docs/export.md, "Presence events").
JOIN_TABLE, OBSERVE = "join_table", "observe"


class TableError(CoreError):
    """A refused request; ``str(error)`` is the message for the client."""


class NoSuchGame(TableError):
    def __init__(self, game: str) -> None:
        super().__init__("no such game")
        self.game = game


class BadRequest(TableError):
    """The request's values do not make sense (e.g. a bad player count)."""


class NoSuchTable(TableError):
    pass


class TableFull(TableError):
    pass


class ReservedToken(TableError):
    pass


class NotStarted(TableError):
    pass


class BadKey(TableError):
    """Unknown player id or wrong key."""


class TableReplaced(TableError):
    pass


class TableEnded(TableError):
    """The table ended (idle timeout, server shutdown) while a client waited."""


class JoinTimeout(TableError):
    pass


class NotObservable(TableError):
    pass


class GameFailed(TableError):
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
    #: The table's token (the wire's ``session``).
    token: str


class Viewer:
    """Someone who receives states: a player, or an observer of a player."""

    __slots__ = ("player_id", "key", "seen", "final", "waiters")

    def __init__(self, player_id: int, key: str) -> None:
        self.player_id = player_id
        self.key = key
        #: Table version of the last state this viewer received.
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


class Table:
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
        #: The table this one replaced (its keys get a clear error).
        self.replaced: Table | None = None
        self.ended = False

    @property
    def full(self) -> bool:
        return len(self.players) >= self.size


def _same(key: Any, expected: str) -> bool:
    """Whether ``key`` is ``expected``, in constant time (any string, even one
    with unpaired surrogates, is merely a wrong key)."""
    return isinstance(key, str) and hmac.compare_digest(
        key.encode("utf-8", "surrogatepass"), expected.encode())


class TableService(Service):
    """Every EOT table of the daemon.

    ``games`` are the game factories by the name clients use, ``recorder``
    gets the matches' events. A join waits ``join_timeout`` seconds for its
    table to fill; ``game_timeout``, ``finished_grace`` and
    ``tables_max`` bound the tables kept (see the module's docstring).
    ``rng`` draws the seed of each match.
    """

    log = Logger()

    def __init__(self, games: Mapping[str, Any], recorder: EventRecorder,
                 clock: IReactorTime, *, join_timeout: float, game_timeout: float,
                 finished_grace: float, tables_max: int,
                 rng: random.Random | None = None) -> None:
        self.games = games
        self.recorder = recorder
        self.clock = clock
        self.join_timeout = float(join_timeout)
        self.game_timeout = float(game_timeout)
        self.finished_grace = float(finished_grace)
        self.tables_max = int(tables_max)
        self.rng = rng or random.SystemRandom()
        #: Every table by (game, token), least recently requested first.
        self.tables: dict[tuple[str, str], Table] = {}
        #: Open (not yet full) auto tables per game, oldest first.
        self.open_auto: dict[str, list[Table]] = {}

    # requests

    def join(self, game: str, token: str, players: int | None, name: str,
             address: str | None = None) -> Deferred:
        """Join (or start) a table; fires with :class:`Joined` once it is full.

        The join is recorded (``join_table``) before the table can start.
        """
        if game not in self.games:
            raise NoSuchGame(game)
        if token == AUTO:
            table = self._auto_table(game, players)
        elif token.startswith(AUTO):
            raise ReservedToken("session tokens starting with 'auto' are reserved")
        else:
            table = self._named_table(game, token, players)
        player = Player(len(table.players), secrets.token_hex(16), name)
        table.players.append(player)
        self._touch(table)
        self.recorder.record(SOURCE, JOIN_TABLE, user=name or None, address=address,
                             data={"game": game, "session": table.token,
                                   "player": player.player_id, "players": table.size})
        if table.full:
            self._start(table)
            return succeed(Joined(player.player_id, player.key, table.token))
        player.joined = Deferred(lambda d: self._leave(table, player))
        player.join_timer = self.clock.callLater(
            self.join_timeout, self._join_timed_out, table, player)
        return player.joined

    def move(self, game: str, token: str, player_id: int, key: str,
             arguments: dict[str, Any], address: str | None = None) -> None:
        """Apply a move; raises a TableError, MatchOver, NotYourTurn or the
        game's IllegalMove."""
        table = self._table(game, token)
        self._player(table, player_id, key)
        match = self._running_match(table)
        match.check_turn(player_id)
        details = {"game": game, "session": token, "player": player_id}
        try:
            match.play(player_id, arguments, self.clock.seconds())
            match.moved(player_id, arguments, address, details)
        except IllegalMove as refusal:
            match.refused(player_id, arguments, refusal, address, details)
            self._bump(table)     # a refused move is a change for everybody
            raise
        except Exception:
            self.log.failure("game {game} raised on a move", game=game)
            raise GameFailed("internal error in the game") from None
        self._bump(table)

    def state(self, game: str, token: str, player_id: int, key: str,
              observer: bool = False) -> View | Deferred:
        """The state for this viewer now, or a Deferred when it has to wait."""
        table = self._table(game, token)
        viewer = (self._observer(table, player_id, key) if observer
                  else self._player(table, player_id, key))
        self._running_match(table)
        if viewer.final is not None or viewer.seen != table.version:
            return self._deliver(table, viewer)
        waiter = Deferred(lambda d: self._unpark(table, viewer, d))
        viewer.waiters.append(waiter)
        table.parked.add(viewer)
        return waiter

    def observe(self, game: str, token: str, name: str,
                address: str | None = None) -> Joined:
        """An observer key for the player called ``name`` of a running table."""
        if token == AUTO or token.startswith(AUTO):
            raise NotObservable("auto-join sessions cannot be observed")
        if not name:
            raise BadRequest("name the player to observe")
        table = self._table(game, token)
        match = self._running_match(table)
        for player in table.players:
            if player.name == name:
                key = secrets.token_hex(16)
                table.observers[key] = table.seats[player.player_id]
                self.recorder.record(SOURCE, OBSERVE, match=match.id, address=address,
                                     data={"game": game, "session": table.token,
                                           "observed": name, "player": player.player_id})
                return Joined(player.player_id, key, table.token)
        raise BadRequest(f"no player called {name!r} in this session")

    def restart(self, game: str, token: str, player_id: int, key: str) -> None:
        """A fresh game at the same table.

        When the old game was over, every player but the restarter and every
        observer seat get its final state first, once.
        """
        table = self._table(game, token)
        player = self._player(table, player_id, key)
        old = self._running_match(table)
        try:
            if old.finished:
                for viewer in self._viewers(table):
                    if viewer is not player:
                        viewer.final = self._shared_view(table, old, viewer.player_id)
            new = self._new_match(table)
        except TableError:
            raise
        except Exception:
            self.log.failure("game {game} raised on a restart", game=game)
            raise GameFailed("internal error in the game") from None
        old.end(player_id, self.clock.seconds())
        table.match = new
        self._bump(table)

    def _bump(self, table: Table) -> None:
        """A new version: forget the old views, answer everyone parked."""
        table.version += 1
        table.views = {}
        if table.parked:
            self._wake(table)

    # lookups

    def _table(self, game: str, token: str) -> Table:
        table = self.tables.get((game, token))
        if table is None:
            if game not in self.games:
                raise NoSuchGame(game)
            raise NoSuchTable("no such session")
        self._touch(table)
        return table

    def _touch(self, table: Table) -> None:
        """A request for ``table``: it is the most recently used one now."""
        table.touched = self.clock.seconds()
        key = (table.game, table.token)
        if self.tables.get(key) is table:
            del self.tables[key]
            self.tables[key] = table

    def _player(self, table: Table, player_id: int, key: str) -> Player:
        if 0 <= player_id < len(table.players):
            player = table.players[player_id]
            if _same(key, player.key) and player.joined is None:
                return player
        raise self._key_error(table, key)

    def _observer(self, table: Table, player_id: int, key: str) -> Viewer:
        viewer = table.observers.get(key) if isinstance(key, str) else None
        if viewer is not None and viewer.player_id == player_id:
            return viewer
        raise self._key_error(table, key)

    @staticmethod
    def _key_error(table: Table, key: Any) -> TableError:
        old = table.replaced
        if old is not None and isinstance(key, str) and (
                any(_same(key, p.key) for p in old.players) or key in old.observers):
            return TableReplaced("the session was replaced by a new one")
        return BadKey("not joined: unknown player id or wrong key")

    def _running_match(self, table: Table) -> Match:
        if table.match is None:
            raise NotStarted("the session has not started yet")
        return table.match

    def _viewers(self, table: Table):
        yield from table.players
        yield from table.seats

    # tables

    def _auto_table(self, game: str, players: int | None) -> Table:
        waiting = self.open_auto.get(game)
        if waiting:
            return waiting[0]
        if players is None:
            raise NoSuchTable("no open session to join; give the number of players "
                              "to start one")
        table = self._new_table(game, f"{AUTO}-{secrets.token_hex(8)}", players, True)
        self.open_auto.setdefault(game, []).append(table)
        return table

    def _named_table(self, game: str, token: str, players: int | None) -> Table:
        table = self.tables.get((game, token))
        if table is not None and not table.full:
            return table
        if players is None:
            if table is None:
                raise NoSuchTable("no such session; give the number of players to "
                                  "start one")
            raise TableFull("the session is full")
        replacement = self._new_table(game, token, players, False)
        if table is not None:
            self._end(table, TableReplaced("the session was replaced by a new one"))
            table.replaced = None
            replacement.replaced = table
        self.tables[(game, token)] = replacement
        return replacement

    def _new_table(self, game: str, token: str, size: int, auto: bool) -> Table:
        """A new table for ``size`` players.

        The player count is checked only here: a join that enters an open
        table ignores its ``players``, as the protocol says.
        """
        factory = self.games[game]
        if not factory.min_players <= size <= factory.max_players:
            raise BadRequest(f"{game} is played by {factory.min_players} to "
                             f"{factory.max_players} players")
        while len(self.tables) >= self.tables_max:
            idlest = next(iter(self.tables.values()))
            self._end(idlest, TableEnded("the session ended to make room for new ones "
                                         "(the server keeps a bounded number)"))
        table = Table(game, token, size, auto, self.clock.seconds())
        self.tables[(game, token)] = table
        table.timer = self.clock.callLater(self.game_timeout, self._check_idle, table)
        return table

    def _new_match(self, table: Table) -> Match:
        """A new game for the table, with its own seeded random generator.

        The seed is in the match's start event, so a match can be replayed.
        """
        seats = [Seat(player.name or f"player {player.player_id}") for player in table.players]
        seed = self.rng.getrandbits(64)
        match = Match.new(self.games[table.game], seats, SOURCE, self.recorder,
                          self.clock.seconds(), rng=random.Random(seed),
                          extra={"session": table.token, "seed": seed})
        match.started()
        return match

    def _start(self, table: Table) -> None:
        if table.auto:
            waiting = self.open_auto.get(table.game, [])
            if table in waiting:
                waiting.remove(table)
            if not waiting:
                self.open_auto.pop(table.game, None)
        try:
            table.match = self._new_match(table)
        except Exception:
            self.log.failure("game {game} raised on start", game=table.game)
            self._end(table, GameFailed("internal error in the game"))
            raise GameFailed("internal error in the game") from None
        table.version = 1
        table.views = {}
        table.seats = [Viewer(player.player_id, "") for player in table.players]
        for player in table.players:
            self._cancel_join_timer(player)
            joined, player.joined = player.joined, None
            if joined is not None:
                joined.callback(Joined(player.player_id, player.key, table.token))

    def _leave(self, table: Table, player: Player) -> None:
        """A joiner gave up (timeout or disconnect) before the table filled."""
        self._cancel_join_timer(player)
        player.joined = None
        if player in table.players:
            table.players.remove(player)
            for index, other in enumerate(table.players):
                other.player_id = index
        if not table.players:
            self._discard(table)

    def _join_timed_out(self, table: Table, player: Player) -> None:
        player.join_timer = None
        joined = player.joined
        self._leave(table, player)
        if joined is not None:
            joined.errback(JoinTimeout("not enough players joined in time"))

    @staticmethod
    def _cancel_join_timer(player: Player) -> None:
        if player.join_timer is not None and player.join_timer.active():
            player.join_timer.cancel()
        player.join_timer = None

    def _end_seen(self, table: Table) -> bool:
        """Whether the game is over and every player has received its final state."""
        match = table.match
        return (match is not None and match.finished
                and all(player.seen == table.version and player.final is None
                        for player in table.players))

    def _check_idle(self, table: Table) -> None:
        """End the table once idle too long; else look again when it may be."""
        finished = self._end_seen(table)
        limit = min(self.finished_grace, self.game_timeout) if finished else self.game_timeout
        idle = self.clock.seconds() - table.touched
        table.timer = None
        if idle < limit:
            table.timer = self.clock.callLater(limit - idle, self._check_idle, table)
        elif finished:
            self._end(table, TableEnded("the session was released: its game is over "
                                        "and every player has seen the end"))
        else:
            self._end(table, TableEnded(
                f"the session ended after {self.game_timeout:g} s without requests"))

    def _end_delivered(self, table: Table) -> None:
        """A player got the final state: release the table after the grace
        if that was the last one to see it."""
        if table.ended or not self._end_seen(table):
            return
        if table.timer is not None and table.timer.active():
            table.timer.cancel()
        grace = min(self.finished_grace, self.game_timeout)
        table.timer = self.clock.callLater(
            max(0.0, table.touched + grace - self.clock.seconds()),
            self._check_idle, table)

    def _end(self, table: Table, reason: TableError) -> None:
        """End a table: every waiting client gets ``reason``."""
        if table.ended:
            return
        table.ended = True
        self._discard(table)
        if table.timer is not None and table.timer.active():
            table.timer.cancel()
        table.timer = None
        if table.match is not None:
            table.match.end(None, self.clock.seconds())
        for player in table.players:
            self._cancel_join_timer(player)
            joined, player.joined = player.joined, None
            if joined is not None:
                joined.errback(reason)
        for viewer in list(table.parked):
            waiters, viewer.waiters = viewer.waiters, []
            for waiter in waiters:
                waiter.errback(reason)
        table.parked.clear()

    def _discard(self, table: Table) -> None:
        if self.tables.get((table.game, table.token)) is table:
            del self.tables[(table.game, table.token)]
        waiting = self.open_auto.get(table.game)
        if waiting and table in waiting:
            waiting.remove(table)
            if not waiting:
                del self.open_auto[table.game]
        if not table.ended and table.timer is not None and table.timer.active():
            table.timer.cancel()
            table.timer = None

    # states

    def _view(self, match: Match, seat: int) -> View:
        game = match.game
        view = View(game.state(seat))
        view["current"] = list(game.current())
        view["gameover"] = bool(game.is_over())
        return view

    def _shared_view(self, table: Table, match: Match, seat: int) -> View:
        """The view of ``seat`` at the table's version, computed once.

        A seat whose view equals the one computed just before (every seat of
        Chat, say) gets that same object, so it is rendered once for all.
        """
        views = table.views
        view = views.get(seat)
        if view is None:
            view = self._view(match, seat)
            if views:
                previous = next(reversed(views.values()))
                if previous == view:
                    view = previous
            views[seat] = view
        return view

    def _deliver(self, table: Table, viewer: Viewer) -> View:
        """What ``viewer`` is owed now: an old game's final state, else the current one."""
        if viewer.final is not None:
            final, viewer.final = viewer.final, None
            return final
        try:
            view = self._shared_view(table, table.match, viewer.player_id)
        except Exception:
            self.log.failure("game {game} raised in state()", game=table.game)
            raise GameFailed("internal error in the game") from None
        viewer.seen = table.version
        if type(viewer) is Player:
            table.match.sent(viewer.player_id)
            if view["gameover"]:
                self._end_delivered(table)
        return view

    def _wake(self, table: Table) -> None:
        """Answer every parked viewer."""
        parked, table.parked = table.parked, set()
        for viewer in parked:
            waiters, viewer.waiters = viewer.waiters, []
            try:
                view = self._deliver(table, viewer)
            except GameFailed as error:
                for waiter in waiters:
                    waiter.errback(error)
                continue
            for waiter in waiters:
                waiter.callback(view)

    def _unpark(self, table: Table, viewer: Viewer, waiter: Deferred) -> None:
        if waiter in viewer.waiters:
            viewer.waiters.remove(waiter)
        if not viewer.waiters:
            table.parked.discard(viewer)

    # the operator's view and controls (the web monitor)

    def snapshot(self) -> dict[str, Any]:
        """Tables waiting to fill, parked state requests and the live matches,
        as plain data (the wire's word for a table is "session")."""
        now = self.clock.seconds()
        waiting, parked, matches = [], [], []
        for table in self.tables.values():
            if table.match is None:
                waiting.append({"game": table.game, "session": table.token,
                                "players": [player.name for player in table.players],
                                "size": table.size, "idle": now - table.touched})
            elif not table.match.finished:
                matches.append(table.match.view(now))
            requests = sum(len(viewer.waiters) for viewer in table.parked)
            if requests:
                parked.append({"game": table.game, "session": table.token,
                               "requests": requests,
                               "match": table.match.id if table.match else None})
        matches.sort(key=lambda match: -match["age"])
        return {"sessions": len(self.tables), "waiting": waiting, "parked": parked,
                "matches": matches}

    def live_match(self, match_id: str) -> Match | None:
        """The unfinished match ``match_id`` of a table, else None."""
        table = self._table_playing(match_id)
        return table.match if table is not None else None

    def end_match(self, match_id: str) -> bool:
        """End the table playing match ``match_id`` for the operator: its
        clients get a "session ended" error. False if no table plays it."""
        table = self._table_playing(match_id)
        if table is None:
            return False
        self._end(table, TableEnded("the session was ended by the operator"))
        return True

    def _table_playing(self, match_id: str) -> Table | None:
        for table in self.tables.values():
            match = table.match
            if match is not None and match.id == match_id and not match.finished:
                return table
        return None

    # service

    def stopService(self) -> None:
        super().stopService()
        for table in list(self.tables.values()):
            self._end(table, TableEnded("the server is shutting down"))
