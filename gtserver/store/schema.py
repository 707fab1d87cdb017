"""Versioned schema migrations, shared by every engine.

Each migration is a list of DDL statements using the markers of
:data:`DDL_MARKERS`; an engine substitutes its own types. Migrations are
applied in id order, each in its own transaction, and recorded in
``schema_migrations``, so running them again is a no-op. Ids leave gaps on
purpose: 1-99 core, 100-199 game matches, 200-299 rooms, 300-399 ratings and
friends, 400-499 server settings, so independent parts of the server can add
migrations without renumbering one another's.
"""

from __future__ import annotations

from dataclasses import dataclass

from gtserver.store.base import Statement

#: Dialect markers usable in DDL, with their SQLite and PostgreSQL spellings.
DDL_MARKERS = {
    "sqlite": {
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "bigint": "INTEGER",
        "real": "REAL",
        "bool": "BOOLEAN",
    },
    "postgresql": {
        "serial": "BIGSERIAL PRIMARY KEY",
        "bigint": "BIGINT",
        "real": "DOUBLE PRECISION",
        "bool": "BOOLEAN",
    },
}


@dataclass(frozen=True)
class Migration:
    id: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: list[Migration] = [
    Migration(1, "accounts, sessions and the research event log", (
        """CREATE TABLE users (
            id {serial},
            name TEXT NOT NULL UNIQUE,
            password_hash TEXT,
            temporary {bool} NOT NULL DEFAULT FALSE,
            created {real} NOT NULL,
            last_seen {real} NOT NULL
        )""",
        """CREATE TABLE sessions (
            token TEXT PRIMARY KEY,
            user_id {bigint} NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            temporary {bool} NOT NULL DEFAULT FALSE,
            created {real} NOT NULL,
            last_used {real} NOT NULL
        )""",
        "CREATE INDEX sessions_user ON sessions(user_id)",
        """CREATE TABLE events (
            id {serial},
            time {real} NOT NULL,
            source TEXT NOT NULL,
            kind TEXT NOT NULL,
            user_name TEXT,
            room TEXT,
            match_id TEXT,
            address TEXT,
            data TEXT
        )""",
        "CREATE INDEX events_time ON events(time)",
        "CREATE INDEX events_room ON events(room)",
        "CREATE INDEX events_match ON events(match_id)",
    )),
    Migration(100, "matches of any game", (
        """CREATE TABLE matches (
            id TEXT PRIMARY KEY,
            game TEXT NOT NULL,
            context TEXT NOT NULL,
            state TEXT NOT NULL,
            ranked {bool} NOT NULL DEFAULT FALSE,
            finished {bool} NOT NULL DEFAULT FALSE,
            created {real} NOT NULL,
            updated {real} NOT NULL
        )""",
        "CREATE INDEX matches_open ON matches(context, finished)",
        """CREATE TABLE match_players (
            match_id TEXT NOT NULL REFERENCES matches(id) ON DELETE CASCADE,
            seat INTEGER NOT NULL,
            user_id {bigint} REFERENCES users(id) ON DELETE SET NULL,
            name TEXT NOT NULL,
            PRIMARY KEY (match_id, seat)
        )""",
        "CREATE INDEX match_players_user ON match_players(user_id)",
    )),
    Migration(300, "ratings and friends", (
        """CREATE TABLE ratings (
            user_id {bigint} PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
            elo INTEGER NOT NULL,
            updated {real} NOT NULL
        )""",
        "CREATE INDEX ratings_elo ON ratings(elo)",
        """CREATE TABLE rating_changes (
            id {serial},
            user_id {bigint} NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            match_id TEXT,
            old_elo INTEGER NOT NULL,
            new_elo INTEGER NOT NULL,
            time {real} NOT NULL
        )""",
        """CREATE TABLE friends (
            user_id {bigint} NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            friend_id {bigint} NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created {real} NOT NULL,
            PRIMARY KEY (user_id, friend_id)
        )""",
    )),
    Migration(400, "server settings (the web monitor's admin password)", (
        """CREATE TABLE settings (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated {real} NOT NULL
        )""",
    )),
]


def render(sql: str, engine: str) -> str:
    """Substitute the dialect markers of one DDL statement."""
    return sql.format(**DDL_MARKERS[engine])


def migrate(engine: str):
    """Transaction: create ``schema_migrations`` and return the ids pending."""
    yield Statement(render(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied {real} NOT NULL)", engine))
    rows = yield Statement("SELECT id FROM schema_migrations")
    done = {row[0] for row in rows}
    return [m for m in sorted(MIGRATIONS, key=lambda m: m.id) if m.id not in done]


def apply_migration(migration: Migration, engine: str, now: float):
    """Transaction: apply one migration and record it."""
    rows = yield Statement("SELECT id FROM schema_migrations WHERE id = ?", (migration.id,))
    if rows:
        return False
    for sql in migration.statements:
        yield Statement(render(sql, engine))
    yield Statement(
        "INSERT INTO schema_migrations (id, name, applied) VALUES (?, ?, ?)",
        (migration.id, migration.name, now))
    return True
