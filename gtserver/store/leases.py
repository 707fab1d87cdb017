"""Transactions for leases: a name (a room, a session, a queue) held by one
node of a deployment until it stops renewing it.

Times are the nodes' own clocks (seconds since the epoch): the nodes of one
deployment must keep their clocks in step (NTP) to well under a lease's
lifetime.
"""

from __future__ import annotations

from collections.abc import Sequence

from gtserver.store.base import Statement


def claim(name: str, node: str, now: float, expires: float):
    """Take ``name`` for ``node`` if it is free, expired or already ``node``'s;
    returns the holder afterwards (``node`` if the claim succeeded)."""
    yield Statement(
        "INSERT INTO leases (name, node, expires) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET node = excluded.node, expires = excluded.expires "
        "WHERE leases.expires < ? OR leases.node = excluded.node",
        (name, node, expires, now))
    rows = yield Statement("SELECT node FROM leases WHERE name = ?", (name,))
    return rows[0][0]


def holder(name: str, now: float):
    """The node holding ``name`` now, else None (never held, or expired)."""
    rows = yield Statement("SELECT node FROM leases WHERE name = ? AND expires >= ?",
                           (name, now))
    return rows[0][0] if rows else None


def renew(names: Sequence[str], node: str, expires: float):
    """Extend ``node``'s leases on ``names``; returns the names it still holds."""
    held: list[str] = []
    for start in range(0, len(names), 500):
        part = list(names[start:start + 500])
        marks = ", ".join("?" for _ in part)
        yield Statement(f"UPDATE leases SET expires = ? WHERE node = ? AND name IN ({marks})",
                        (expires, node, *part))
        rows = yield Statement(
            f"SELECT name FROM leases WHERE node = ? AND name IN ({marks})", (node, *part))
        held.extend(row[0] for row in rows)
    return held


def release(names: Sequence[str], node: str):
    """Give up ``node``'s leases on ``names`` (others' are left alone)."""
    for name in names:
        yield Statement("DELETE FROM leases WHERE name = ? AND node = ?", (name, node))


def held_with_prefix(prefix: str, now: float):
    """``(name, node)`` of every live lease whose name starts with ``prefix``."""
    rows = yield Statement(
        "SELECT name, node FROM leases WHERE substr(name, 1, ?) = ? AND expires >= ? "
        "ORDER BY name", (len(prefix), prefix, now))
    return [(name, node) for name, node in rows]


def last_holder(name: str):
    """``(node, expires)`` of the lease row of ``name``, live or expired (a
    node that stopped renewing leaves its rows behind), else None (never
    held, or released)."""
    rows = yield Statement("SELECT node, expires FROM leases WHERE name = ?", (name,))
    return (rows[0][0], rows[0][1]) if rows else None


def forget_expired(prefix: str, before: float):
    """Delete the rows of leases starting with ``prefix`` that expired before
    ``before`` (rows a stopped node left behind); returns how many."""
    rows = yield Statement(
        "SELECT COUNT(*) FROM leases WHERE substr(name, 1, ?) = ? AND expires < ?",
        (len(prefix), prefix, before))
    yield Statement("DELETE FROM leases WHERE substr(name, 1, ?) = ? AND expires < ?",
                    (len(prefix), prefix, before))
    return rows[0][0]
