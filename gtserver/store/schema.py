"""Versioned schema migrations, shared by every engine.

Each migration is a list of DDL statements using the markers of
:data:`DDL_MARKERS`; an engine substitutes its own types. Migrations are
applied in id order, each in its own transaction, and recorded in
``schema_migrations``, so running them again is a no-op. Ids leave gaps on
purpose: 1-99 core, 100-199 game matches, 200-299 rooms, 300-399 ratings and
friends, 400-499 server settings, so independent parts of the server can add
migrations without renumbering one another's.

Plugins (wire protocols and games) bring migrations of their own, numbered in
a *namespace* of their own (``protocol:NAME``, ``game:NAME``): see
:func:`check_plugin_migrations`. They are recorded in ``plugin_migrations``
(namespace, version), created by core migration 2, and applied after the
core's, so they may refer to the core's tables. A database from before
migration 2 opens as any other: the migration only adds that table.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    Migration(2, "migrations of plugins, by namespace", (
        """CREATE TABLE plugin_migrations (
            namespace TEXT NOT NULL,
            version INTEGER NOT NULL,
            applied {real} NOT NULL,
            PRIMARY KEY (namespace, version)
        )""",
    )),
    Migration(3, "runs of the daemon, and the run of each event", (
        """CREATE TABLE runs (
            id {serial},
            started {real} NOT NULL,
            gtserver_version TEXT NOT NULL,
            source_commit TEXT,
            options_sha256 TEXT NOT NULL,
            details TEXT NOT NULL
        )""",
        "ALTER TABLE events ADD COLUMN run_id {bigint} REFERENCES runs(id)",
        "CREATE INDEX events_run ON events(run_id)",
    )),
    Migration(4, "leases: which node of a deployment is home to what", (
        """CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            node TEXT NOT NULL,
            expires {real} NOT NULL
        )""",
        "CREATE INDEX leases_node ON leases(node)",
    )),
    Migration(5, "messages between nodes too large for a notification", (
        """CREATE TABLE bus_messages (
            id TEXT PRIMARY KEY,
            channel TEXT NOT NULL,
            body TEXT NOT NULL,
            created {real} NOT NULL
        )""",
        "CREATE INDEX bus_messages_created ON bus_messages(created)",
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
    Migration(101, "a match's listener is its source, as in the event log", (
        "ALTER TABLE matches RENAME COLUMN context TO source",
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


#: The PostgreSQL advisory lock that serialises migrations ("gtsv"): the
#: nodes of a deployment may start at once on a fresh database.
MIGRATION_LOCK = 0x67747376


def lock_migrations(engine: str):
    """Wait until no other daemon migrates this database (until this
    transaction ends); SQLite has a single daemon, nothing to wait for."""
    if engine == "postgresql":
        yield Statement("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))


def migrate(engine: str):
    """Transaction: create ``schema_migrations`` and return the ids pending."""
    yield from lock_migrations(engine)
    yield Statement(render(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied {real} NOT NULL)", engine))
    rows = yield Statement("SELECT id FROM schema_migrations")
    done = {row[0] for row in rows}
    return [m for m in sorted(MIGRATIONS, key=lambda m: m.id) if m.id not in done]


def apply_migration(migration: Migration, engine: str, now: float):
    """Transaction: apply one migration and record it."""
    yield from lock_migrations(engine)
    rows = yield Statement("SELECT id FROM schema_migrations WHERE id = ?", (migration.id,))
    if rows:
        return False
    for sql in migration.statements:
        yield Statement(render(sql, engine))
    yield Statement(
        "INSERT INTO schema_migrations (id, name, applied) VALUES (?, ?, ?)",
        (migration.id, migration.name, now))
    return True


#: One plugin's migrations: (version, DDL statements), versions ascending.
PluginMigrations = tuple[tuple[int, tuple[str, ...]], ...]


def check_plugin_migrations(migrations: Sequence[tuple[int, Sequence[str]]]
                            ) -> PluginMigrations:
    """A plugin's ``migrations`` attribute checked and sorted by version.

    Each item is ``(version, statements)``: a whole number from 1, unique
    within the plugin, and a sequence of DDL strings using the markers of
    :data:`DDL_MARKERS` (``{serial}``, ``{bigint}``, ``{real}``, ``{bool}``;
    braces meant literally are doubled). ValueError says what is wrong.
    """
    checked: dict[int, tuple[str, ...]] = {}
    for item in migrations:
        try:
            version, statements = item
        except (TypeError, ValueError):
            raise ValueError(f"a migration must be (version, statements), got {item!r}"
                             ) from None
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"a migration version must be a whole number from 1, "
                             f"got {version!r}")
        if version in checked:
            raise ValueError(f"migration version {version} is given twice")
        if isinstance(statements, str) or not statements or not all(
                isinstance(sql, str) and sql.strip() for sql in statements):
            raise ValueError(f"migration {version} must give a list of SQL statements, "
                             f"got {statements!r}")
        for sql in statements:
            try:
                render(sql, "sqlite")
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(f"migration {version} has an unknown marker or a single "
                                 f"brace ({error!r}): markers are "
                                 f"{', '.join('{' + m + '}' for m in DDL_MARKERS['sqlite'])}"
                                 ", and literal braces are doubled") from None
        checked[version] = tuple(statements)
    return tuple(sorted(checked.items()))


def plugin_versions(namespace: str):
    """Transaction: the versions of ``namespace`` applied already."""
    rows = yield Statement("SELECT version FROM plugin_migrations WHERE namespace = ?",
                           (namespace,))
    return {row[0] for row in rows}


def apply_plugin_migration(namespace: str, version: int, statements: tuple[str, ...],
                           engine: str, now: float):
    """Transaction: apply one plugin migration and record it (False: done already)."""
    yield from lock_migrations(engine)
    rows = yield Statement(
        "SELECT version FROM plugin_migrations WHERE namespace = ? AND version = ?",
        (namespace, version))
    if rows:
        return False
    for sql in statements:
        yield Statement(render(sql, engine))
    yield Statement(
        "INSERT INTO plugin_migrations (namespace, version, applied) VALUES (?, ?, ?)",
        (namespace, version, now))
    return True
