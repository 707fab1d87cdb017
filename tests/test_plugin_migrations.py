"""Plugins bring tables of their own: migrations per namespace, on both engines."""

from __future__ import annotations

import os
import re

from twisted.internet import reactor
from twisted.trial import unittest

from gtserver.games import GameFactory
from gtserver.games.tictactoe import TicTacToe
from gtserver.registry import PluginError, games, plugin_migrations, wire_protocols
from gtserver.store import Statement, StoreError, open_store
from gtserver.store.schema import MIGRATIONS
from tests.pgcluster import postgres_url
from tests.plugindirs import install_plugins
from tests.support import sqlite_url, start_server

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "docs", "adding-a-game.md")

#: A game that keeps a high-score table, grown by a second migration.
SCORED_GAME = """
    from gtserver.games import GameFactory
    from gtserver.games.tictactoe import TicTacToe

    scored = GameFactory(TicTacToe, name="ScoredTicTacToe", migrations=[
        (1, ["CREATE TABLE scored_best (user_id {bigint} REFERENCES users(id) "
             "ON DELETE CASCADE, points {real} NOT NULL)"]),
        (2, ["ALTER TABLE scored_best ADD COLUMN note TEXT",
             "CREATE INDEX scored_best_points ON scored_best(points)"]),
    ])
"""

#: A wire protocol (its listener off in these tests) with a table of its own.
LOGGING_PROTOCOL = """
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from gtserver.interfaces import IWireProtocol


    @implementer(IPlugin, IWireProtocol)
    class Audited:
        name = "audited"
        description = "a protocol with an audit table"
        default_endpoints = ()
        options = []
        flags = []
        migrations = [(1, ["CREATE TABLE audited_log (id {serial}, line TEXT NOT NULL)"])]

        def settings(self, options):

            return None


        def build_factory(self, core, settings):
            raise AssertionError("not served here")


    audited = Audited()
"""


def insert_score(points: float, note: str):
    yield Statement("INSERT INTO scored_best (user_id, points, note) VALUES (NULL, ?, ?)",
                    (points, note))


def scores():
    rows = yield Statement("SELECT points, note FROM scored_best ORDER BY points")
    return [tuple(row) for row in rows]


def insert_audit(line: str):
    yield Statement("INSERT INTO audited_log (line) VALUES (?)", (line,))
    rows = yield Statement("SELECT id, line FROM audited_log")
    return [tuple(row) for row in rows]


def recorded():
    rows = yield Statement("SELECT namespace, version, applied FROM plugin_migrations "
                           "ORDER BY namespace, version")
    return [tuple(row) for row in rows]


def core_migrations():
    rows = yield Statement("SELECT id FROM schema_migrations ORDER BY id")
    return [row[0] for row in rows]


def make_old_database():
    """What a database of a gtserver before plugin migrations holds."""
    yield Statement("DROP TABLE plugin_migrations")
    yield Statement("DELETE FROM schema_migrations WHERE id = 2")
    yield Statement("INSERT INTO users (name, temporary, created, last_seen) "
                    "VALUES ('veteran', FALSE, 1.0, 1.0)")


def user_names():
    rows = yield Statement("SELECT name FROM users ORDER BY name")
    return [row[0] for row in rows]


def count_rows(table: str):
    rows = yield Statement(f"SELECT COUNT(*) FROM {table}")
    return rows[0][0]


class PluginMigrationTestsMixin:
    def make_url(self) -> str:
        raise NotImplementedError

    def setUp(self):
        self.url = self.make_url()

    async def open(self, migrations: dict | None = None):
        store = open_store(self.url, reactor)
        for namespace, declared in (migrations or {}).items():
            store.add_migrations(namespace, declared)
        await store.start()
        self.addCleanup(store.close)
        return store

    async def test_the_daemon_applies_every_plugins_migrations_once(self):
        install_plugins(self, {"my_scored": SCORED_GAME, "my_audited": LOGGING_PROTOCOL})
        protocols = wire_protocols()
        server = await start_server(self, db=self.url, protocols=protocols)
        await server.store.run(insert_score, 12.5, "first")
        self.assertEqual(await server.store.run(insert_audit, "kept"), [(1, "kept")])
        first = await server.store.run(recorded)
        self.assertEqual([row[:2] for row in first],
                         [("game:ScoredTicTacToe", 1), ("game:ScoredTicTacToe", 2),
                          ("protocol:audited", 1)])
        await server.stop()
        again = await start_server(self, db=self.url, protocols=protocols)
        self.assertEqual(await again.store.run(recorded), first)    # nothing re-applied
        self.assertEqual(await again.store.run(scores), [(12.5, "first")])
        self.assertEqual(await again.store.run(insert_audit, "more"),
                         [(1, "kept"), (2, "more")])

    async def test_a_new_version_of_a_plugin_adds_only_its_new_migrations(self):
        declared = plugin_migrations({}, {"ScoredTicTacToe": self.scored_game()})
        (namespace, both), = declared.items()
        store = await self.open({namespace: both[:1]})
        await store.run(lambda: (yield Statement(
            "INSERT INTO scored_best (user_id, points) VALUES (NULL, 3)")))
        await store.close()
        store = await self.open({namespace: both})
        self.assertEqual(await store.run(scores), [(3.0, None)])
        self.assertEqual([row[:2] for row in await store.run(recorded)],
                         [(namespace, 1), (namespace, 2)])

    def scored_game(self):
        install_plugins(self, {"my_scored": SCORED_GAME})
        return games()["ScoredTicTacToe"]

    async def test_an_old_database_opens_and_keeps_its_data(self):
        store = await self.open()
        await store.run(make_old_database)
        self.assertEqual(await store.run(core_migrations),
                         sorted(m.id for m in MIGRATIONS if m.id != 2))
        await store.close()
        store = await self.open({"game:ScoredTicTacToe": [
            (1, ["CREATE TABLE scored_best (user_id {bigint}, points {real}, note TEXT)"])]})
        self.assertEqual(await store.run(core_migrations), sorted(m.id for m in MIGRATIONS))
        self.assertEqual(await store.run(user_names), ["veteran"])
        self.assertEqual([row[:2] for row in await store.run(recorded)],
                         [("game:ScoredTicTacToe", 1)])
        await store.run(insert_score, 1.0, "new table")

    async def test_the_documented_example(self):
        store = await self.open({"game:Nim": documented_migrations()})
        self.assertEqual(await store.run(insert_record, "ada", 7), [("ada", 7)])

    async def test_a_failing_migration_stops_the_start_and_leaves_nothing(self):
        broken = {"protocol:broken": [
            (1, ["CREATE TABLE broken_half (id INTEGER)", "CREATE TABLE broken_half (id TEXT)"]),
        ]}
        store = open_store(self.url, reactor)
        store.add_migrations(*broken.popitem())
        with self.assertRaises(StoreError):
            await store.start()
        await store.close()
        store = await self.open()
        with self.assertRaises(StoreError):       # its first statement was rolled back
            await store.run(count_rows, "broken_half")
        self.assertEqual(await store.run(recorded), [])


def documented_migrations() -> list:
    """The migrations of the example in docs/adding-a-game.md ("Tables of your own")."""
    with open(DOCS, encoding="utf-8") as file:
        blocks = re.findall(r"```python\n(.*?)```", file.read(), re.S)
    (example,) = [block for block in blocks if "migrations=[" in block]
    namespace = {"GameFactory": GameFactory, "Nim": TicTacToe}
    exec(example, namespace)
    return list(namespace["nim"].migrations)


def insert_record(name: str, moves: int):
    yield Statement("INSERT INTO users (name, temporary, created, last_seen) "
                    "VALUES (?, FALSE, 1.0, 1.0)", (name,))
    yield Statement("INSERT INTO nim_records (user_id, fewest_moves) "
                    "SELECT id, ? FROM users WHERE name = ?", (moves, name))
    rows = yield Statement("SELECT u.name, r.fewest_moves FROM nim_records r "
                           "JOIN users u ON u.id = r.user_id")
    return [tuple(row) for row in rows]


class SQLitePluginMigrationTests(PluginMigrationTestsMixin, unittest.TestCase):
    def make_url(self) -> str:
        return sqlite_url(self)


class PostgresPluginMigrationTests(PluginMigrationTestsMixin, unittest.TestCase):
    def make_url(self) -> str:
        return postgres_url(self)


class DeclarationTests(unittest.TestCase):
    def check(self, migrations) -> str:
        plugin = type("Declared", (), {"migrations": migrations})()
        error = self.assertRaises(PluginError, plugin_migrations, {"audited": plugin}, {})
        return str(error)

    def test_malformed_declarations_are_refused_naming_the_plugin(self):
        for migrations, reason in (
                ([(0, ["CREATE TABLE t (a INTEGER)"])], "whole number from 1, got 0"),
                ([("1", ["CREATE TABLE t (a INTEGER)"])], "whole number from 1, got '1'"),
                ([(1, ["CREATE TABLE t (a INTEGER)"]), (1, ["DROP TABLE t"])],
                 "version 1 is given twice"),
                ([(1, "CREATE TABLE t (a INTEGER)")], "must give a list of SQL statements"),
                ([(1, [])], "must give a list of SQL statements"),
                ([(1, ["CREATE TABLE t (a {integer})"])], "unknown marker"),
                ([(1, ["CREATE TABLE t (a INTEGER)"], "extra")], "(version, statements)")):
            message = self.check(migrations)
            self.assertIn("protocol plugin 'audited' declares bad migrations: ", message)
            self.assertIn(reason, message)

    def test_versions_are_applied_in_order_and_plugins_without_any_are_skipped(self):
        plugin = type("Declared", (), {"migrations": [(3, ["C"]), (1, ["A", "B"])]})()
        self.assertEqual(plugin_migrations({}, {"Late": plugin, "TicTacToe": object()}),
                         {"game:Late": ((1, ("A", "B")), (3, ("C",)))})

    def test_migrations_of_a_namespace_are_added_once(self):
        store = open_store("sqlite::memory:", reactor)
        store.add_migrations("game:X", [(1, ["CREATE TABLE x (a INTEGER)"])])
        self.assertRaises(ValueError, store.add_migrations, "game:X", [])
