"""The plugin registry: every plugin is verified, and names are unique."""

from __future__ import annotations

import os
import sys
import time

from twisted.trial import unittest

from gtserver.registry import PluginError, games, wire_protocols
from tests.plugindirs import install_plugins

SECOND_TICTACTOE = """
    from gtserver.games import GameFactory
    from gtserver.games.tictactoe import TicTacToe

    another_tictactoe = GameFactory(TicTacToe)
"""

SECOND_EOT = """
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from gtserver.interfaces import IWireProtocol


    @implementer(IPlugin, IWireProtocol)
    class Impostor:
        name = "eot"
        description = "another protocol claiming the eot listener"
        default_endpoints = ()
        options = []
        flags = []

        def settings(self, options):

            return None


        def build_factory(self, core, settings):
            raise AssertionError("never built")


    impostor = Impostor()
"""

INCOMPLETE_GAME = """
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from gtserver.interfaces import IGameFactory


    @implementer(IPlugin, IGameFactory)
    class HalfAGame:
        name = "HalfAGame"
        min_players = 1
        max_players = 1

        def new_game(self, players, rng):
            raise AssertionError("never played")


    half_a_game = HalfAGame()
"""

INCOMPLETE_PROTOCOL = """
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from gtserver.interfaces import IWireProtocol


    @implementer(IPlugin, IWireProtocol)
    class Nameless:
        description = "a protocol without a name or factory"
        default_endpoints = ()
        options = []
        flags = []


    nameless = Nameless()
"""

BROKEN_IMPORT = """
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from gtserver.interfaces import IGameFactory


    @implementer(IPlugin, IGameFactory)
    class Loaded:
        name = "Loaded"
        min_players = max_players = 1

        def new_game(self, players, rng):
            raise AssertionError("never played")

        def restore(self, data):
            raise AssertionError("never restored")


    loaded = Loaded()
"""


class DuplicateNameTests(unittest.TestCase):
    def test_a_second_game_with_a_taken_name_is_refused(self):
        install_plugins(self, {"my_copies": SECOND_TICTACTOE})
        error = self.assertRaises(PluginError, games)
        self.assertEqual(str(error), "two game plugins are named 'TicTacToe': "
                         "gtserver.plugins.gtserver_games.tic_tac_toe and "
                         "gtserver.plugins.my_copies.another_tictactoe; remove or rename one")
        self.assertIn("eot", wire_protocols())       # other kinds are unaffected

    def test_a_second_protocol_with_a_taken_name_is_refused(self):
        install_plugins(self, {"my_impostor": SECOND_EOT})
        error = self.assertRaises(PluginError, wire_protocols)
        self.assertEqual(str(error), "two wire protocol plugins are named 'eot': "
                         "gtserver.plugins.gtserver_eot.eot and "
                         "gtserver.plugins.my_impostor.impostor; remove or rename one")

    def test_the_builtins_alone_have_unique_names(self):
        self.assertIn("TicTacToe", games())
        self.assertEqual(sorted(set(wire_protocols()) & {"eot", "uttt", "vr"}),
                         ["eot", "uttt", "vr"])


class VerificationTests(unittest.TestCase):
    def test_a_game_missing_a_method_is_reported(self):
        install_plugins(self, {"my_half": INCOMPLETE_GAME})
        error = self.assertRaises(PluginError, games)
        self.assertIn("game plugin gtserver.plugins.my_half.half_a_game does not provide "
                      "IGameFactory", str(error))
        self.assertIn("restore", str(error))

    def test_a_protocol_missing_attributes_is_reported(self):
        install_plugins(self, {"my_nameless": INCOMPLETE_PROTOCOL})
        error = self.assertRaises(PluginError, wire_protocols)
        message = str(error)
        self.assertIn("wire protocol plugin gtserver.plugins.my_nameless.nameless does not "
                      "provide IWireProtocol", message)
        self.assertIn("build_factory", message)
        self.assertIn("name", message)

    def test_a_plugin_whose_module_breaks_on_load_is_reported(self):
        root = install_plugins(self, {"my_loaded": BROKEN_IMPORT})
        path = os.path.join(root, "gtserver", "plugins", "my_loaded.py")
        long_ago = time.time() - 3600
        os.utime(path, (long_ago, long_ago))
        self.assertIn("Loaded", games())          # found and cached while it worked
        # The module now fails when it is imported again from its cache entry.
        sys.modules.pop("gtserver.plugins.my_loaded")
        with open(path, "a", encoding="utf-8") as file:
            file.write("\nraise RuntimeError('the game lost its rules')\n")
        os.utime(path, (long_ago, long_ago))      # older than the cache: not re-scanned
        error = self.assertRaises(PluginError, games)
        self.assertEqual(str(error), "game plugin gtserver.plugins.my_loaded.loaded cannot be "
                         "loaded: RuntimeError: the game lost its rules")


class OneObjectTwiceTests(unittest.TestCase):
    def test_one_plugin_object_under_two_names_is_one_plugin(self):
        install_plugins(self, {"my_aliased": """
            from gtserver.games import GameFactory
            from gtserver.games.tictactoe import TicTacToe

            noughts = crosses = GameFactory(TicTacToe, name="NoughtsAndCrosses")
        """})
        self.assertEqual(games()["NoughtsAndCrosses"].name, "NoughtsAndCrosses")


class DaemonRefusalTests(unittest.TestCase):
    """The real ``twistd gtserver`` with a clashing plugin installed."""

    async def test_twistd_refuses_to_start_and_says_why(self):
        from twisted.internet.utils import getProcessOutputAndValue

        from tests.test_lifecycle import TWISTD, environment

        root = install_plugins(self, {"my_copies": SECOND_TICTACTOE})
        env = environment()
        env["PYTHONPATH"] += os.pathsep + root
        directory = self.mktemp()
        os.makedirs(directory)
        for arguments in (("--help",), ("--port", "eot=off")):
            out, err, code = await getProcessOutputAndValue(
                sys.executable, ["-c", TWISTD, "-n", "gtserver", *arguments], env=env,
                path=directory)
            output = (out + err).decode()
            self.assertEqual(code, 1, output)
            self.assertIn("cannot start: two game plugins are named 'TicTacToe': "
                          "gtserver.plugins.gtserver_games.tic_tac_toe and "
                          "gtserver.plugins.my_copies.another_tictactoe", output)
            self.assertNotIn("Traceback", output)
            self.assertFalse(os.path.exists(os.path.join(directory, "gtserver.sqlite")))
