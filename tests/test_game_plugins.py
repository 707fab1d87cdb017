"""A third-party game installed as a plugin, found by the registry and played over the wire."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile

from twisted.internet.threads import deferToThread
from twisted.plugin import IPlugin, pluginPackagePaths
from twisted.python import usage
from twisted.trial import unittest

import gtserver.plugins
from gtserver.client import GameClient, IllegalMove
from gtserver.interfaces import IGameFactory
from gtserver.registry import games, wire_protocols
from gtserver.tap import make_options_class
from tests.support import parse_options, start_server

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "docs", "adding-a-game.md")


def example_plugin_source() -> str:
    """The first Python block of docs/adding-a-game.md: the Nim plugin module."""
    with open(DOCS, encoding="utf-8") as file:
        return re.search(r"```python\n(.*?)```", file.read(), re.S).group(1)


class GamePluginTests(unittest.TestCase):
    def setUp(self):
        # A directory like a third-party distribution: gtserver/plugins/my_nim.py, and
        # no __init__.py anywhere in it.
        self.root = tempfile.mkdtemp(prefix="gtserver-plugin-")
        plugin_dir = os.path.join(self.root, "gtserver", "plugins")
        os.makedirs(plugin_dir)
        with open(os.path.join(plugin_dir, "my_nim.py"), "w", encoding="utf-8") as file:
            file.write(example_plugin_source())
        sys.path.append(self.root)
        # What gtserver/plugins/__init__.py does when a fresh process imports it.
        added = [path for path in pluginPackagePaths("gtserver.plugins")
                 if path not in gtserver.plugins.__path__]
        gtserver.plugins.__path__.extend(added)
        self.addCleanup(self.uninstall, added)

    def uninstall(self, added):
        sys.path.remove(self.root)
        for path in added:
            gtserver.plugins.__path__.remove(path)
        sys.modules.pop("gtserver.plugins.my_nim", None)
        shutil.rmtree(self.root, ignore_errors=True)

    def test_registry_finds_the_game(self):
        installed = games()
        self.assertIn("Nim", installed)
        factory = installed["Nim"]
        self.assertTrue(IGameFactory.providedBy(factory))
        self.assertTrue(IPlugin.providedBy(factory))
        self.assertEqual((factory.min_players, factory.max_players), (2, 2))
        self.assertIn("TicTacToe", installed)       # the built-ins are still there
        self.assertTrue(os.path.exists(
            os.path.join(self.root, "gtserver", "plugins", "dropin.cache")))

    def test_help_lists_its_option(self):
        text = " ".join(make_options_class()().getUsage().split())
        self.assertIn("--nim-pile-size= [game Nim] Sticks on the pile when a game of Nim "
                      "starts. [default: 15]", text)

    async def test_its_option_sets_the_pile(self):
        for arguments, sticks in (((), 15), (("--nim-pile-size", "4"), 4)):
            server = await start_server(self, *arguments, listeners={"eot": None},
                                        protocols=wire_protocols())
            clients = [GameClient("127.0.0.1", server.port("eot"), "Nim", "pile", 2)
                       for _ in range(2)]
            joins = [deferToThread(client.join) for client in clients]
            for joined in joins:
                await joined
            state = await deferToThread(clients[0].state)
            self.assertEqual(state["sticks"], sticks)
        error = self.assertRaises(usage.UsageError, parse_options, "--nim-pile-size", "0",
                                  protocols=wire_protocols())
        self.assertIn("--nim-pile-size must be at least 1, got '0'", str(error))

    async def test_play_it_over_the_wire(self):
        server = await start_server(self, listeners={"eot": None})
        port = server.port("eot")

        def play(client):
            me = client.join()
            refused = 0
            while True:
                state = client.state()
                if state["gameover"]:
                    return state, refused
                if me in state["current"]:
                    try:
                        client.move(take=4)
                    except IllegalMove:
                        refused += 1
                    client.move(take=min(3, state["sticks"]))

        clients = [GameClient("127.0.0.1", port, "Nim", "nim-1", 2) for _ in range(2)]
        results = [deferToThread(play, client) for client in clients]
        (first, first_refused), (second, second_refused) = [await r for r in results]
        self.assertEqual(first, second)
        self.assertEqual(first["sticks"], 0)
        self.assertIn(first["winner"], (0, 1))
        self.assertGreater(first_refused + second_refused, 0)
