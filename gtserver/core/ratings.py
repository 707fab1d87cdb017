"""ELO ratings: the arithmetic as pure functions, and the rating service.

Ratings follow the ultimate tic-tac-toe reference: everyone starts at 1000,
K = 20, the expected score of a player rated ``own`` against ``opponent`` is
``1 / (1 + 10 ** ((opponent - own) / 400))``, a draw scores 0.5, and the new
rating ``own + K * (score - expected)`` is rounded half up to an integer.
Only registered users are rated; temporary users have no rating and no rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gtserver.store import ratings as queries

START = 1000
K_FACTOR = 20
TOP = 100


def expected_score(own: float, opponent: float) -> float:
    """The score ``own`` is expected to make against ``opponent`` (0 to 1)."""
    return 1.0 / (1.0 + 10.0 ** ((opponent - own) / 400.0))


def updated_rating(own: int, opponent: int, score: float, k: float = K_FACTOR) -> int:
    """``own`` after scoring ``score`` (1 win, 0.5 draw, 0 loss) against ``opponent``."""
    return math.floor(own + k * (score - expected_score(own, opponent)) + 0.5)


def updated_pair(ratings: Sequence[int], scores: Sequence[float],
                 k: float = K_FACTOR) -> list[int]:
    """New ratings of the two players of one match, both computed from the old ones."""
    first, second = ratings
    return [updated_rating(first, second, scores[0], k),
            updated_rating(second, first, scores[1], k)]


@dataclass(frozen=True)
class Standing:
    """A user's rating and rank (None for temporary users) and the top list."""

    elo: int | None
    rank: int | None
    top_names: list[str]
    top_elos: list[int]


class Ratings:
    """Rating look-ups and result recording against the store.

    The shared instance is ``core.ratings``.
    """

    def __init__(self, store: Any, clock: Any, events: Any, start: int = START,
                 k: float = K_FACTOR, top: int = TOP) -> None:
        self.store = store
        self.clock = clock
        self.events = events
        self.start = start
        self.k = k
        self.top = top

    async def standings(self, user_ids: Sequence[int | None]) -> list[Standing]:
        """The standing of each user (None: no user), sharing one top-list query."""
        ranked, best = await self.store.run(queries.standings, list(user_ids), self.start,
                                            self.top, self.clock.seconds())
        names = [name for name, _elo in best]
        elos = [elo for _name, elo in best]
        return [Standing(elo, rank, names, elos) for elo, rank in ranked]

    async def standing(self, user_id: int | None) -> Standing:
        return (await self.standings([user_id]))[0]

    async def finish(self, match_id: str, user_ids: Sequence[int | None],
                     scores: Sequence[float] | None, source: str,
                     names: Sequence[str] = ()) -> list[Standing]:
        """Rate a finished two-player match (unless ``scores`` is None or a
        player is not registered) and return the players' standings, all in
        one transaction. Every rating change is stored with its match and
        written to the event log."""
        k = self.k
        compute = None
        if scores is not None:
            def compute(old: list[int]) -> list[int]:
                return updated_pair(old, scores, k)

        changes, ranked, best = await self.store.run(
            queries.finish_and_rank, match_id, list(user_ids), self.start, self.top,
            self.clock.seconds(), compute)
        for seat, (old, new) in enumerate(changes or ()):
            self.events.record(source, "rating_change", match=match_id,
                               user=names[seat] if seat < len(names) else None,
                               data={"old": old, "new": new, "score": scores[seat]})
        top_names = [name for name, _elo in best]
        top_elos = [elo for _name, elo in best]
        return [Standing(elo, rank, top_names, top_elos) for elo, rank in ranked]

    async def history(self, user_id: int) -> list[tuple]:
        """``(match_id, old, new, time)`` of every rating change of a user."""
        return await self.store.run(queries.rating_changes, user_id)
