"""Transactions for the append-only research event log."""

from __future__ import annotations

from collections.abc import Iterable

from gtserver.store.base import Statement

EVENT_COLUMNS = ("time", "source", "kind", "user_name", "room", "match_id", "address", "data")


def append_events(rows: Iterable[tuple], run_id: int | None = None):
    """Append many events, each a tuple in :data:`EVENT_COLUMNS` order, all
    of run ``run_id`` (None: no run recorded, as in tests of the log alone)."""
    rows = [(*row, run_id) for row in rows]
    if rows:
        yield Statement(
            f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows, many=True)
    return len(rows)


def select_event_page(after_id: int = 0, limit: int = 10000, *, sources: tuple[str, ...] = (),
                      kinds: tuple[str, ...] = (), rooms: tuple[str, ...] = (),
                      match_ids: tuple[str, ...] = (), since: float | None = None,
                      until: float | None = None, with_run: bool = False):
    """One page of events in id order; each filter accepts several values (any may match).

    Rows are ``(id, *EVENT_COLUMNS)``, with the ``run_id`` last if ``with_run``.
    """
    clauses, params = ["id > ?"], [after_id]
    for column, values in (("source", sources), ("kind", kinds), ("room", rooms),
                           ("match_id", match_ids)):
        if values:
            clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
    if since is not None:
        clauses.append("time >= ?")
        params.append(since)
    if until is not None:
        clauses.append("time < ?")
        params.append(until)
    rows = yield Statement(
        f"SELECT id, {', '.join(EVENT_COLUMNS)}{', run_id' if with_run else ''} FROM events "
        f"WHERE {' AND '.join(clauses)} "
        "ORDER BY id LIMIT ?", (*params, limit))
    return rows
