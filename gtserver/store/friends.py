"""Transactions for friend lists (one-way: a user's list of people they follow)."""

from __future__ import annotations

from gtserver.store.base import Statement


def _registered_id(name: str):
    rows = yield Statement("SELECT id FROM users WHERE name = ? AND temporary = ?",
                           (name, False))
    return rows[0][0] if rows else None


def add_friend(user_id: int, friend_name: str, now: float):
    """Add a registered user to a friend list: "added", "unknown" or "already"."""
    friend_id = yield from _registered_id(friend_name)
    if friend_id is None:
        return "unknown"
    rows = yield Statement(
        "INSERT INTO friends (user_id, friend_id, created) VALUES (?, ?, ?) "
        "ON CONFLICT (user_id, friend_id) DO NOTHING RETURNING friend_id",
        (user_id, friend_id, now))
    return "added" if rows else "already"


def remove_friend(user_id: int, friend_name: str):
    """Remove a name from a friend list: "removed" or "absent"."""
    rows = yield Statement(
        "DELETE FROM friends WHERE user_id = ? AND friend_id IN "
        "(SELECT id FROM users WHERE name = ?) RETURNING friend_id",
        (user_id, friend_name))
    return "removed" if rows else "absent"


def friends_of(user_id: int, start: int):
    """``[(name, elo), ...]`` of a user's friends, by name; unrated friends have ``start``."""
    rows = yield Statement(
        "SELECT u.name, COALESCE(r.elo, ?) FROM friends f "
        "JOIN users u ON u.id = f.friend_id LEFT JOIN ratings r ON r.user_id = f.friend_id "
        "WHERE f.user_id = ? ORDER BY u.name", (start, user_id))
    return [tuple(row) for row in rows]
