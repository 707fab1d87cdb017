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
