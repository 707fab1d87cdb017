"""Live matches of any game: seats, turns, persistence and the research log.

The match service is shared by every protocol that plays games. It applies
moves to the pure game rules, stores the new state *before* the caller is told
(so an acknowledged move is never lost), and records every accepted move in
the event log. Moves on one match are serialised.
"""

from __future__ import annotations

import functools
import inspect
import json
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from gtserver.core.errors import CoreError
from gtserver.core.group_commit import GroupCommit
from gtserver.games import IllegalMove
from gtserver.registry import games as installed_games
from gtserver.store import Unstorable
from gtserver.store import matches as queries
from gtserver.web import metrics


@functools.lru_cache(maxsize=256)
def move_signature(game_class: type) -> inspect.Signature:
    """The signature of a game class's ``move``, through any decorators.

    Decorators made with :func:`functools.wraps` expose the function they
    wrap as ``__wrapped__``, which :func:`inspect.signature` follows; the
    move's arguments are checked against it before the game runs, so a
    TypeError raised inside the game stays the game's own error.
    """
    return inspect.signature(game_class.move)


class UnknownGame(CoreError):
    """No installed game has this name."""


class MatchClosed(CoreError):
    """The match is over or was ended."""


@dataclass
class Seat:
    name: str
    user_id: int | None = None


@dataclass(eq=False)
class Match:
    id: str
    game_name: str
    game: Any
    context: str
    seats: list[Seat]
    ranked: bool = False
    persistent: bool = True
    created: float = 0.0
    updated: float = 0.0
    aborted_by: int | None = None
    #: Protocol-specific facts kept with the match (JSON-ready).
    extra: dict[str, Any] = field(default_factory=dict)
    lock: DeferredLock = field(default_factory=DeferredLock, repr=False)

    @property
    def finished(self) -> bool:
        return self.aborted_by is not None or self.game.is_over()

    def seat_of(self, name: str) -> int | None:
        for index, seat in enumerate(self.seats):
            if seat.name == name:
                return index
        return None

    def snapshot(self) -> str:
        return json.dumps({"game": self.game.to_data(), "aborted_by": self.aborted_by,
                           "extra": self.extra})


class MatchService(Service):
    log = Logger()

    def __init__(self, core: Any) -> None:
        self.core = core
        self.store = core.store
        self.clock = core.clock
        self.events = core.events
        self.games = installed_games()
        self.matches: dict[str, Match] = {}
        #: Coalesces the state writes of concurrent moves into shared transactions.
        self.writer = GroupCommit(self.store)

    def factory(self, game_name: str) -> Any:
        try:
            return self.games[game_name]
        except KeyError:
            raise UnknownGame(game_name) from None

    async def create(self, game_name: str, seats: list[Seat], context: str,
                     ranked: bool = False, persistent: bool = True,
                     rng: random.Random | None = None,
                     extra: dict[str, Any] | None = None) -> Match:
        """Start a match; stored before it is returned when ``persistent``."""
        match = self._new_match(game_name, seats, context, ranked, persistent, rng, extra)
        if persistent:
            await self.store.run(
                queries.insert_match, match.id, game_name, context, match.snapshot(), ranked,
                False, match.created, [(i, s.user_id, s.name) for i, s in enumerate(seats)])
        self._opened(match)
        return match

    def _new_match(self, game_name: str, seats: list[Seat], context: str, ranked: bool,
                   persistent: bool, rng: random.Random | None,
                   extra: dict[str, Any] | None) -> Match:
        game = self.factory(game_name).new_game(len(seats), rng or random.Random())
        now = self.clock.seconds()
        return Match(secrets.token_hex(12), game_name, game, context, list(seats), ranked,
                     persistent, now, now, extra=dict(extra or {}))

    def _opened(self, match: Match) -> None:
        self.matches[match.id] = match
        metrics.MATCHES_STARTED(match.context, match.game_name)
        self.events.record(match.context, "match_start", match=match.id,
                           data={"game": match.game_name,
                                 "players": [s.name for s in match.seats],
                                 "ranked": match.ranked, **match.extra})

    def get(self, match_id: str) -> Match | None:
        return self.matches.get(match_id)

    async def move(self, match: Match, seat: int, arguments: dict[str, Any],
                   address: str | None = None,
                   stored: Callable[[Match], None] | None = None) -> None:
        """Apply and store one move; IllegalMove or MatchClosed when refused.

        ``stored(match)`` runs once the move is stored and before the next
        change of the match may start: tell the players there. (Releasing the
        lock starts a waiting change at once, so by the time this coroutine's
        caller resumes, the match may already hold a later, unstored state.)
        """
        await match.lock.acquire()
        try:
            # Serialised, because to_data() may share the game's own lists.
            before = json.dumps(match.game.to_data()) if match.persistent else None
            updated = match.updated
            self._apply(match, seat, arguments)
            try:
                await self._save(match)
            except Exception:
                match.game = self.factory(match.game_name).restore(json.loads(before))
                match.updated = updated
                raise
            self._moved(match, seat, arguments, address)
            if stored is not None:
                stored(match)
        finally:
            match.lock.release()

    def _apply(self, match: Match, seat: int, arguments: dict[str, Any]) -> None:
        """Check the turn and play the move on the rules (in memory only)."""
        if match.finished:
            raise MatchClosed(match.id)
        if seat not in match.game.current():
            raise IllegalMove("it is not your turn")
        try:
            move_signature(type(match.game)).bind(match.game, seat, **arguments)
        except TypeError as error:
            raise IllegalMove(f"bad move arguments: {error}") from None
        match.game.move(seat, **arguments)
        match.updated = self.clock.seconds()

    def _moved(self, match: Match, seat: int, arguments: dict[str, Any],
               address: str | None, details: dict[str, Any] | None = None) -> None:
        """Record an accepted move (and the end of the match it may have ended)."""
        metrics.MOVES(match.context, match.game_name)
        self.events.record(match.context, "move", user=match.seats[seat].name,
                           match=match.id, address=address,
                           data={"seat": seat, "move": arguments, **(details or {})})
        if match.finished:
            self._record_end(match)

    async def end(self, match: Match, by_seat: int | None,
                  stored: Callable[[Match], None] | None = None) -> None:
        """End (abort) a match; ``by_seat`` is who ended it (None: the server).
        ``stored`` as for :meth:`move`."""
        await match.lock.acquire()
        try:
            if match.finished:
                raise MatchClosed(match.id)
            updated = match.updated
            match.aborted_by = -1 if by_seat is None else by_seat
            match.updated = self.clock.seconds()
            try:
                await self._save(match)
            except Exception:
                match.aborted_by, match.updated = None, updated
                raise
            self._record_end(match)
            if stored is not None:
                stored(match)
        finally:
            match.lock.release()

    async def save(self, match: Match) -> None:
        """Store a match whose ``extra`` or game changed outside :meth:`move`."""
        await match.lock.run(self._save, match)

    def forget(self, match: Match) -> None:
        """Drop a finished match from memory."""
        self.matches.pop(match.id, None)

    async def load_open(self, context: str) -> list[Match]:
        """Bring the stored unfinished matches of ``context`` back into memory."""
        loaded = []
        for row in await self.store.run(queries.open_matches, context):
            match_id, game_name, state, ranked, created, updated, seats = row
            if match_id in self.matches:
                loaded.append(self.matches[match_id])
                continue
            try:
                snapshot = json.loads(state)
                game = self.factory(game_name).restore(snapshot["game"])
            except Exception:
                self.log.failure("cannot restore match {id}", id=match_id)
                continue
            match = Match(match_id, game_name, game, context,
                          [Seat(name, user_id) for _seat, user_id, name in seats],
                          bool(ranked), True, created, updated,
                          snapshot.get("aborted_by"), snapshot.get("extra", {}))
            self.matches[match_id] = match
            loaded.append(match)
        return loaded

    async def load(self, match_id: str) -> Match | None:
        """A match by id, finished or not: the one in memory, else the stored
        one (not kept in memory), else None. For answering late requests
        about matches that were finished and forgotten."""
        if match_id in self.matches:
            return self.matches[match_id]
        try:
            row = await self.store.run(queries.match_by_id, match_id)
        except Unstorable:  # an id the database cannot even hold names no match
            return None
        if row is None:
            return None
        match_id, game_name, context, state, ranked, finished, created, updated, seats = row
        try:
            snapshot = json.loads(state)
            game = self.factory(game_name).restore(snapshot["game"])
        except Exception:
            self.log.failure("cannot restore match {id}", id=match_id)
            return None
        return Match(match_id, game_name, game, context,
                     [Seat(name, user_id) for _seat, user_id, name in seats],
                     bool(ranked), True, created, updated,
                     snapshot.get("aborted_by"), snapshot.get("extra", {}))

    # Transient matches: kept in memory only, played synchronously.
    #
    # A protocol whose matches need not survive a restart (the EOT game API)
    # uses these: no store write and no lock, so a move costs no Deferred and
    # its reply is not delayed. Moves are still recorded in the event log.

    def create_transient(self, game_name: str, seats: list[Seat], context: str,
                         rng: random.Random | None = None,
                         extra: dict[str, Any] | None = None) -> Match:
        """Start a match kept only in memory (``persistent=False``), at once."""
        match = self._new_match(game_name, seats, context, False, False, rng, extra)
        self._opened(match)
        return match

    def move_transient(self, match: Match, seat: int, arguments: dict[str, Any],
                       address: str | None = None,
                       details: dict[str, Any] | None = None) -> None:
        """Apply one move of a transient match at once; log it with ``details``.

        Raises IllegalMove or MatchClosed like :meth:`move`; anything else the
        game raises propagates unchanged.
        """
        if match.persistent:
            raise ValueError("move_transient is for matches created with create_transient")
        self._apply(match, seat, arguments)
        self._moved(match, seat, arguments, address, details)

    def end_transient(self, match: Match, by_seat: int | None) -> None:
        """End a transient match (if still open) and forget it."""
        if not match.finished:
            match.aborted_by = -1 if by_seat is None else by_seat
            match.updated = self.clock.seconds()
            self._record_end(match)
        self.forget(match)

    async def _save(self, match: Match) -> None:
        if match.persistent:
            await self.writer.save(match.id, match.snapshot(), match.finished, match.updated)

    def _record_end(self, match: Match) -> None:
        metrics.MATCHES_FINISHED(match.context, match.game_name,
                                  "over" if match.aborted_by is None else "aborted")
        self.events.record(match.context, "match_end", match=match.id,
                           data={"outcome": match.game.outcome(),
                                 "aborted_by": match.aborted_by})
