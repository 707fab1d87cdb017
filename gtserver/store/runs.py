"""Transactions for the daemon's runs (one row per start) and the schema version."""

from __future__ import annotations

from collections.abc import Iterable

from gtserver.store.base import Statement

RUN_COLUMNS = ("id", "started", "gtserver_version", "source_commit", "options_sha256",
               "details")

#: How each engine names the version of the database server (or library).
_DATABASE_VERSION = {
    "sqlite": "SELECT sqlite_version()",
    "postgresql": "SHOW server_version",
}


def database_version(engine: str):
    """The database server's version, e.g. ``3.40.1`` (SQLite) or ``16.2`` (PostgreSQL)."""
    rows = yield Statement(_DATABASE_VERSION[engine])
    return str(rows[0][0])


def insert_run(started: float, gtserver_version: str, source_commit: str | None,
               options_sha256: str, details: str):
    """Record one run; returns its id. ``details`` is the run's JSON text."""
    rows = yield Statement(
        "INSERT INTO runs (started, gtserver_version, source_commit, options_sha256, details) "
        "VALUES (?, ?, ?, ?, ?) RETURNING id",
        (started, gtserver_version, source_commit, options_sha256, details))
    return rows[0][0]


def runs_by_id(run_ids: Iterable[int]):
    """The runs of ``run_ids`` in id order, as rows in :data:`RUN_COLUMNS` order."""
    wanted = sorted(set(run_ids))
    found: list[tuple] = []
    for start in range(0, len(wanted), 500):  # within every engine's parameter limit
        part = wanted[start:start + 500]
        found += yield Statement(
            f"SELECT {', '.join(RUN_COLUMNS)} FROM runs "
            f"WHERE id IN ({', '.join('?' for _ in part)}) ORDER BY id", part)
    return found


def all_runs():
    """Every run, in id order (rows in :data:`RUN_COLUMNS` order)."""
    rows = yield Statement(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY id")
    return rows


def schema_version():
    """``(core, applied, plugins)``: the highest core migration applied, every
    core migration applied (ids ascending), and the highest version applied of
    each plugin namespace."""
    core = yield Statement("SELECT id FROM schema_migrations ORDER BY id")
    plugins = yield Statement(
        "SELECT namespace, MAX(version) FROM plugin_migrations GROUP BY namespace "
        "ORDER BY namespace")
    applied = [row[0] for row in core]
    return (applied[-1] if applied else None, applied,
            {namespace: version for namespace, version in plugins})
