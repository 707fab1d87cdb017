"""Transactions for server settings: named text values (the admin password hash)."""

from __future__ import annotations

from gtserver.store.base import Statement


def get_setting(name: str):
    rows = yield Statement("SELECT value FROM settings WHERE name = ?", (name,))
    return rows[0][0] if rows else None


def put_setting(name: str, value: str, now: float):
    yield Statement("DELETE FROM settings WHERE name = ?", (name,))
    yield Statement("INSERT INTO settings (name, value, updated) VALUES (?, ?, ?)",
                    (name, value, now))


def ping():
    """A statement that touches no table: whether the database answers."""
    rows = yield Statement("SELECT 1")
    return bool(rows)
