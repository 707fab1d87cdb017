"""Transactions for users and session tokens."""

from __future__ import annotations

from gtserver.store.base import Statement

USER_COLUMNS = "id, name, password_hash, temporary, created, last_seen"


def user_by_name(name: str):
    rows = yield Statement(f"SELECT {USER_COLUMNS} FROM users WHERE name = ?", (name,))
    return rows[0] if rows else None


def insert_user(name: str, password_hash: str | None, temporary: bool, now: float):
    rows = yield Statement(
        "INSERT INTO users (name, password_hash, temporary, created, last_seen) "
        f"VALUES (?, ?, ?, ?, ?) RETURNING {USER_COLUMNS}",
        (name, password_hash, temporary, now, now))
    return rows[0]


def replace_temporary_user(name: str, now: float):
    """Reuse the name of a temporary user that has no live session left."""
    rows = yield Statement(
        "SELECT u.id FROM users u WHERE u.name = ? AND u.temporary = ? AND NOT EXISTS "
        "(SELECT 1 FROM sessions s WHERE s.user_id = u.id)", (name, True))
    if rows:
        yield Statement("DELETE FROM users WHERE id = ?", (rows[0][0],))
    return bool(rows)


def insert_session(token: str, user_id: int, temporary: bool, now: float):
    yield Statement(
        "INSERT INTO sessions (token, user_id, temporary, created, last_used) "
        "VALUES (?, ?, ?, ?, ?)", (token, user_id, temporary, now, now))
    yield Statement("UPDATE users SET last_seen = ? WHERE id = ?", (now, user_id))


def resume_session(token: str, now: float, session_idle: float, temporary_idle: float):
    """Find a live session, mark it used; None when unknown or expired."""
    rows = yield Statement(
        f"SELECT s.temporary, s.last_used, u.{USER_COLUMNS.replace(', ', ', u.')} "
        "FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token = ?", (token,))
    if not rows:
        return None
    temporary, last_used, *user = rows[0]
    if last_used < now - (temporary_idle if temporary else session_idle):
        return None
    yield Statement("UPDATE sessions SET last_used = ? WHERE token = ?", (now, token))
    yield Statement("UPDATE users SET last_seen = ? WHERE id = ?", (now, user[0]))
    return (*user[:5], now)


def touch_user(user_id: int, now: float):
    yield Statement("UPDATE users SET last_seen = ? WHERE id = ?", (now, user_id))


def expire(now: float, account_idle: float, session_idle: float, temporary_idle: float):
    """Delete idle sessions, temporary users without sessions, and idle accounts.

    Returns the number of (sessions, users) removed.
    """
    sessions = yield Statement(
        "DELETE FROM sessions WHERE (temporary = ? AND last_used < ?) "
        "OR (temporary = ? AND last_used < ?) RETURNING token",
        (True, now - temporary_idle, False, now - session_idle))
    users = yield Statement(
        "DELETE FROM users WHERE ((temporary = ? AND last_seen < ?) OR last_seen < ?) "
        "AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.user_id = users.id "
        "AND s.last_used >= ?) RETURNING id",
        (True, now - temporary_idle, now - account_idle, now - session_idle))
    return len(sessions), len(users)
