"""Transactions for matches of any game and their players."""

from __future__ import annotations

from gtserver.store.base import Statement


def insert_match(match_id: str, game: str, source: str, state: str, ranked: bool,
                 finished: bool, now: float, seats: list[tuple[int, int | None, str]]):
    yield Statement(
        "INSERT INTO matches (id, game, source, state, ranked, finished, created, updated) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (match_id, game, source, state, ranked, finished, now, now))
    yield Statement(
        "INSERT INTO match_players (match_id, seat, user_id, name) VALUES (?, ?, ?, ?)",
        [(match_id, seat, user_id, name) for seat, user_id, name in seats], many=True)


def update_matches(rows: list[tuple[str, bool, float, str]]):
    """Store several match states in one transaction (group commit).

    ``rows`` are ``(state, finished, updated, match_id)``.
    """
    if len(rows) == 1:
        yield Statement("UPDATE matches SET state = ?, finished = ?, updated = ? WHERE id = ?",
                        rows[0])
        return
    # One statement for the whole batch: a single round trip on PostgreSQL.
    # VALUES columns are column1..column4 on both engines.
    values = ", ".join(["(?, ?, ?, ?)"] * len(rows))
    yield Statement(
        "UPDATE matches SET state = v.column1, finished = v.column2, updated = v.column3 "
        f"FROM (VALUES {values}) AS v WHERE matches.id = v.column4",
        [value for row in rows for value in row])


def open_matches(source: str):
    """Unfinished matches of a source: rows of
    ``(id, game, state, ranked, created, updated, [(seat, user_id, name), ...])``."""
    matches = yield Statement(
        "SELECT id, game, state, ranked, created, updated FROM matches "
        "WHERE source = ? AND finished = ? ORDER BY created", (source, False))
    players = yield Statement(
        "SELECT p.match_id, p.seat, p.user_id, p.name FROM match_players p "
        "JOIN matches m ON m.id = p.match_id WHERE m.source = ? AND m.finished = ? "
        "ORDER BY p.match_id, p.seat", (source, False))
    seats: dict[str, list[tuple]] = {}
    for match_id, seat, user_id, name in players:
        seats.setdefault(match_id, []).append((seat, user_id, name))
    return [(*row, seats.get(row[0], [])) for row in matches]


def match_by_id(match_id: str):
    """One stored match, finished or not: ``(id, game, source, state, ranked,
    finished, created, updated, [(seat, user_id, name), ...])``, or None."""
    rows = yield Statement(
        "SELECT id, game, source, state, ranked, finished, created, updated FROM matches "
        "WHERE id = ?", (match_id,))
    if not rows:
        return None
    players = yield Statement(
        "SELECT seat, user_id, name FROM match_players WHERE match_id = ? ORDER BY seat",
        (match_id,))
    return (*rows[0], [tuple(player) for player in players])


def open_matches_with_missing_users(source: str):
    """Seats of unfinished matches of a source whose user no longer exists
    (deleting a user sets its seats' ``user_id`` to NULL): rows of
    ``(match_id, seat)``."""
    rows = yield Statement(
        "SELECT p.match_id, p.seat FROM match_players p JOIN matches m ON m.id = p.match_id "
        "WHERE m.source = ? AND m.finished = ? AND p.user_id IS NULL "
        "ORDER BY p.match_id, p.seat", (source, False))
    return [tuple(row) for row in rows]


def _open_seats_of_users(source: str, user_ids: list[int]):
    """``(match_id, user_id)`` of every seat of the unfinished matches of
    ``source`` in which any of ``user_ids`` plays."""
    marks = ", ".join("?" for _ in user_ids)
    rows = yield Statement(
        "SELECT p.match_id, p.user_id FROM match_players p JOIN matches m ON m.id = p.match_id "
        f"WHERE m.source = ? AND m.finished = ? AND p.match_id IN (SELECT match_id FROM "
        f"match_players WHERE user_id IN ({marks})) ORDER BY p.match_id, p.seat",
        (source, False, *user_ids))
    return [tuple(row) for row in rows]


def open_match_players(source: str, user_ids: list[int]):
    """The players of each unfinished match of ``source`` in which any of
    ``user_ids`` plays: ``{match_id: [user_id, ...]}`` (None for a removed user)."""
    if not user_ids:
        return {}
    players: dict[str, list] = {}
    for match_id, user_id in (yield from _open_seats_of_users(source, list(user_ids))):
        players.setdefault(match_id, []).append(user_id)
    return players


def insert_match_within_limits(match_id: str, game: str, source: str, state: str,
                               ranked: bool, finished: bool, now: float,
                               seats: list[tuple[int, int | None, str]], limit: int):
    """:func:`insert_match`, unless two of its players already share an
    unfinished match of ``source`` or one of them has ``limit`` of them.

    The players' user rows are locked first (a no-op update, in id order, so
    two such transactions never deadlock): concurrent creations for one
    user, on any node, are serialised, and each counts the matches the
    others committed. Returns None when the match was inserted, else
    ``("against", None)`` or ``("full", seat)``.
    """
    user_ids = [user_id for _seat, user_id, _name in seats if user_id is not None]
    for user_id in sorted(set(user_ids)):
        yield Statement("UPDATE users SET last_seen = last_seen WHERE id = ?", (user_id,))
    players = yield from open_match_players(source, user_ids)
    if any(len(set(user_ids) & set(others)) > 1 for others in players.values()):
        return ("against", None)
    for seat, user_id, _name in seats:
        if sum(user_id in others for others in players.values()) >= limit:
            return ("full", seat)
    yield from insert_match(match_id, game, source, state, ranked, finished, now, seats)
    return None


def open_matches_of_user(source: str, user_id: int):
    """The unfinished matches of ``source`` in which ``user_id`` plays, as
    rows of :func:`open_matches`."""
    matches = yield Statement(
        "SELECT m.id, m.game, m.state, m.ranked, m.created, m.updated FROM matches m "
        "WHERE m.source = ? AND m.finished = ? AND m.id IN "
        "(SELECT match_id FROM match_players WHERE user_id = ?) ORDER BY m.created",
        (source, False, user_id))
    seats: dict[str, list[tuple]] = {row[0]: [] for row in matches}
    if seats:
        marks = ", ".join("?" for _ in seats)
        players = yield Statement(
            "SELECT match_id, seat, user_id, name FROM match_players "
            f"WHERE match_id IN ({marks}) ORDER BY match_id, seat", tuple(seats))
        for match_id, seat, player, name in players:
            seats[match_id].append((seat, player, name))
    return [(*row, seats[row[0]]) for row in matches]


def idle_open_matches(source: str, before: float):
    """Ids of the unfinished matches of ``source`` unchanged since ``before``."""
    rows = yield Statement(
        "SELECT id FROM matches WHERE source = ? AND finished = ? AND updated <= ? "
        "ORDER BY updated", (source, False, before))
    return [row[0] for row in rows]
