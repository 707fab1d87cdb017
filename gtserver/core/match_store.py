"""Matches kept in the store: create, save, and bring them back after a restart.

:class:`MatchStore` is the persistence part of matches, for a protocol whose
matches must survive a restart (ultimate tic-tac-toe). It writes states
through a :class:`GroupCommit`, so that concurrent moves share transactions,
and keeps one :class:`Match` object per live match id (a match loaded twice
is the same object). It holds no lock and tells nobody: the protocol
serialises the changes of a match and tells its players once
:meth:`MatchStore.save` returned.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gtserver.core.errors import CoreError
from gtserver.core.group_commit import GroupCommit
from gtserver.core.matches import EventRecorder, Match, Seat
from gtserver.store import Store, Unstorable
from gtserver.store import matches as queries


class UnknownGame(CoreError):
    """No installed game has this name."""


class MatchLimit(CoreError):
    """A match was not created: two of its players already share an open
    match (``reason`` ``"against"``), or the player in ``seat`` has too many
    (``"full"``)."""

    def __init__(self, reason: str, seat: int | None) -> None:
        super().__init__(f"match limit: {reason}")
        self.reason = reason
        self.seat = seat


class MatchStore:
    log = Logger()

    def __init__(self, store: Store, games: Mapping[str, Any], recorder: EventRecorder,
                 clock: IReactorTime, max_batch: int = 500) -> None:
        self.store = store
        #: The games by name (their factories), to start and restore matches.
        self.games = games
        self.recorder = recorder
        self.clock = clock
        #: Live matches by id: created or loaded, not yet forgotten.
        self.matches: dict[str, Match] = {}
        #: Coalesces the state writes of concurrent moves into shared transactions.
        self.writer = GroupCommit(store, max_batch)

    def factory(self, game_name: str) -> Any:
        try:
            return self.games[game_name]
        except KeyError:
            raise UnknownGame(game_name) from None

    async def create(self, game_name: str, seats: list[Seat], source: str,
                     ranked: bool = False, rng: random.Random | None = None,
                     extra: dict[str, Any] | None = None, limit: int | None = None) -> Match:
        """Start a match; it is stored (and its start recorded) before it is returned.

        With a ``limit``, the store checks in the same transaction that no
        two players already share an open match of ``source`` and that none
        has ``limit`` of them (else :class:`MatchLimit`): a check that holds
        across every node of a deployment.
        """
        match = Match.new(self.factory(game_name), seats, source, self.recorder,
                          self.clock.seconds(), ranked, rng, extra)
        rows = [(i, s.user_id, s.name) for i, s in enumerate(match.seats)]
        if limit is None:
            await self.store.run(queries.insert_match, match.id, game_name, source,
                                 match.stored_state(), ranked, False, match.created, rows)
        else:
            refused = await self.store.run(
                queries.insert_match_within_limits, match.id, game_name, source,
                match.stored_state(), ranked, False, match.created, rows, limit)
            if refused is not None:
                raise MatchLimit(*refused)
        self.matches[match.id] = match
        match.started()
        return match

    def get(self, match_id: str) -> Match | None:
        return self.matches.get(match_id)

    def save(self, match: Match) -> Any:
        """Store the match as it is now; a Deferred firing once it is committed."""
        return self.writer.save(match.id, match.stored_state(), match.finished, match.updated)

    def forget(self, match: Match) -> None:
        """Drop a finished match from the live ones."""
        self.matches.pop(match.id, None)

    async def load_open(self, source: str) -> list[Match]:
        """The stored unfinished matches of ``source``, live from now on."""
        loaded = []
        for row in await self.store.run(queries.open_matches, source):
            match_id, game_name, state, ranked, created, updated, seats = row
            match = self.matches.get(match_id)
            if match is None:
                match = self._restored(match_id, game_name, source, state, ranked, created,
                                       updated, seats)
                if match is None:
                    continue
                self.matches[match_id] = match
            loaded.append(match)
        return loaded

    async def load_of_user(self, source: str, user_id: int) -> list[Match]:
        """The stored unfinished matches of ``source`` in which ``user_id``
        plays: the live object where there is one, else a copy restored from
        the store (not made live)."""
        loaded = []
        for row in await self.store.run(queries.open_matches_of_user, source, user_id):
            match_id, game_name, state, ranked, created, updated, seats = row
            match = self.matches.get(match_id) or self._restored(
                match_id, game_name, source, state, ranked, created, updated, seats)
            if match is not None:
                loaded.append(match)
        return loaded

    async def load_live(self, match_id: str) -> Match | None:
        """The match ``match_id`` as stored now, made live (replacing a live
        object of it), if it is unfinished; else None. For a node of a
        deployment taking a match over: the store has its latest state."""
        try:
            row = await self.store.run(queries.match_by_id, match_id)
        except Unstorable:
            return None
        if row is None:
            return None
        match_id, game_name, source, state, ranked, finished, created, updated, seats = row
        if finished:
            return None
        match = self._restored(match_id, game_name, source, state, ranked, created, updated,
                               seats)
        if match is not None:
            self.matches[match_id] = match
        return match

    async def open_players(self, source: str, user_ids: list[int]) -> dict[str, list]:
        """``{match_id: [user_id, ...]}`` of the unfinished matches of
        ``source`` in which any of ``user_ids`` plays."""
        return await self.store.run(queries.open_match_players, source, list(user_ids))

    async def idle(self, source: str, before: float) -> list[str]:
        """Ids of the unfinished matches of ``source`` unchanged since ``before``."""
        return await self.store.run(queries.idle_open_matches, source, before)

    async def load(self, match_id: str) -> Match | None:
        """A match by id, finished or not: the live one, else the stored one
        (not made live), else None. For answering late requests about
        matches that were finished and forgotten."""
        if match_id in self.matches:
            return self.matches[match_id]
        try:
            row = await self.store.run(queries.match_by_id, match_id)
        except Unstorable:  # an id the database cannot even hold names no match
            return None
        if row is None:
            return None
        match_id, game_name, source, state, ranked, _finished, created, updated, seats = row
        return self._restored(match_id, game_name, source, state, ranked, created, updated,
                              seats)

    async def seats_without_user(self, source: str) -> list[tuple[str, int]]:
        """``(match_id, seat)`` of the unfinished matches of ``source`` whose
        player's account no longer exists."""
        return await self.store.run(queries.open_matches_with_missing_users, source)

    def _restored(self, match_id: str, game_name: str, source: str, state: str, ranked: Any,
                  created: float, updated: float, seats: list[tuple]) -> Match | None:
        try:
            snapshot = json.loads(state)
            factory = self.factory(game_name)
            game = factory.restore(snapshot["game"])
        except Exception:
            self.log.failure("cannot restore match {id}", id=match_id)
            return None
        return Match(match_id, game_name, factory, game, source,
                     [Seat(name, user_id) for _seat, user_id, name in seats], self.recorder,
                     bool(ranked), created, updated, snapshot.get("aborted_by"),
                     snapshot.get("extra", {}))
