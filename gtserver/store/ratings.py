"""Transactions for ELO ratings and their history."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gtserver.store.base import Statement


def _ensure(user_id: int, start: int, now: float):
    """Give a registered user a rating row; returns False for temporary/unknown users."""
    rows = yield Statement("SELECT temporary FROM users WHERE id = ?", (user_id,))
    if not rows or rows[0][0]:
        return False
    yield Statement(
        "INSERT INTO ratings (user_id, elo, updated) VALUES (?, ?, ?) "
        "ON CONFLICT (user_id) DO NOTHING", (user_id, start, now))
    return True


def standings(user_ids: Sequence[int | None], start: int, top: int, now: float):
    """Each user's ``(elo, rank)`` (``(None, None)`` unless registered) and the top list.

    Returns ``([(elo, rank), ...], [(name, elo), ...])``. The rank is one more
    than the number of users rated higher; the top list is one query.
    """
    ranked = []
    for user_id in user_ids:
        if user_id is None or not (yield from _ensure(user_id, start, now)):
            ranked.append((None, None))
            continue
        rows = yield Statement(
            "SELECT r.elo, (SELECT COUNT(*) FROM ratings h WHERE h.elo > r.elo) "
            "FROM ratings r WHERE r.user_id = ?", (user_id,))
        ranked.append((rows[0][0], rows[0][1] + 1))
    best = yield Statement(
        "SELECT u.name, r.elo FROM ratings r JOIN users u ON u.id = r.user_id "
        "ORDER BY r.elo DESC, u.name LIMIT ?", (top,))
    return ranked, [tuple(row) for row in best]


def rating_changes(user_id: int):
    """The rating history of one user, oldest first: ``(match_id, old, new, time)``."""
    rows = yield Statement(
        "SELECT match_id, old_elo, new_elo, time FROM rating_changes WHERE user_id = ? "
        "ORDER BY id", (user_id,))
    return [tuple(row) for row in rows]


def _ratings_of(user_ids: Sequence[int | None], start: int, now: float):
    """``{user_id: elo}`` of the registered users among ``user_ids``, giving
    those without a rating row one at ``start``; few statements for all."""
    ids = sorted({user_id for user_id in user_ids if user_id is not None})
    if not ids:
        return {}
    marks = ", ".join(["?"] * len(ids))
    rows = yield Statement(
        "SELECT u.id, u.temporary, r.elo FROM users u LEFT JOIN ratings r ON r.user_id = u.id "
        f"WHERE u.id IN ({marks})", ids)
    elos = {user_id: elo for user_id, temporary, elo in rows if not temporary}
    missing = [user_id for user_id, elo in elos.items() if elo is None]
    if missing:
        yield Statement(
            "INSERT INTO ratings (user_id, elo, updated) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id) DO NOTHING", [(user_id, start, now) for user_id in missing],
            many=True)
        marks = ", ".join(["?"] * len(missing))
        rows = yield Statement(
            f"SELECT user_id, elo FROM ratings WHERE user_id IN ({marks})", missing)
        elos.update((user_id, elo) for user_id, elo in rows)
    return elos


def finish_and_rank(match_id: str, user_ids: Sequence[int | None], start: int, top: int,
                    now: float, compute: Callable[[list[int]], list[int]] | None):
    """The end of a match in one transaction: apply its result (when
    ``compute`` is given and every player is registered: ``compute`` maps the
    old ratings, in seat order, to the new ones, and every change is kept in
    ``rating_changes`` with its match), then the players' standings (as in
    :func:`standings`).

    Returns ``(changes, ranked, best)``: ``[(old, new), ...]`` by seat or None
    when nothing was rated, ``[(elo, rank), ...]`` by seat, ``[(name, elo), ...]``.
    """
    elos = yield from _ratings_of(user_ids, start, now)
    changes = None
    if compute is not None and all(user_id in elos for user_id in user_ids):
        old = [elos[user_id] for user_id in user_ids]
        new = compute(old)
        for user_id, after in zip(user_ids, new, strict=True):
            yield Statement("UPDATE ratings SET elo = ?, updated = ? WHERE user_id = ?",
                            (after, now, user_id))
        yield Statement(
            "INSERT INTO rating_changes (user_id, match_id, old_elo, new_elo, time) "
            "VALUES (?, ?, ?, ?, ?)",
            [(user_id, match_id, before, after, now)
             for user_id, before, after in zip(user_ids, old, new, strict=True)], many=True)
        changes = list(zip(old, new, strict=True))
    ranks = {}
    if elos:
        marks = ", ".join(["?"] * len(elos))
        rows = yield Statement(
            "SELECT r.user_id, r.elo, (SELECT COUNT(*) FROM ratings h WHERE h.elo > r.elo) "
            f"FROM ratings r WHERE r.user_id IN ({marks})", sorted(elos))
        ranks = {user_id: (elo, higher + 1) for user_id, elo, higher in rows}
    best = yield Statement(
        "SELECT u.name, r.elo FROM ratings r JOIN users u ON u.id = r.user_id "
        "ORDER BY r.elo DESC, u.name LIMIT ?", (top,))
    ranked = [ranks.get(user_id, (None, None)) for user_id in user_ids]
    return changes, ranked, [tuple(row) for row in best]
