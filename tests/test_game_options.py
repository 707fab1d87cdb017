"""Options of game plugins: in --help, parsed, and given to each service's own copy."""

from __future__ import annotations

from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial import unittest

from gtserver.client import GameClient
from gtserver.eot.lobby import TableService
from gtserver.registry import PluginError, configured_games, games, wire_protocols
from gtserver.tap import make_options_class
from tests.plugindirs import install_plugins
from tests.support import parse_options, start_server

PILE_NIM = """
    import random

    from zope.interface import implementer

    from gtserver.games import GameFactory, IllegalMove
    from gtserver.interfaces import IGame


    def sticks(text):
        value = int(text)
        if value < 1:
            raise ValueError(f"--pilenim-sticks must be at least 1, got {text!r}")
        return value


    @implementer(IGame)
    class PileNim:
        min_players = max_players = 1

        def __init__(self, players=1, rng=None, sticks=15):
            self.players, self.sticks = players, sticks

        def current(self):
            return [] if self.is_over() else [0]

        def is_over(self):
            return self.sticks == 0

        def move(self, seat, take=1):
            if take not in (1, 2, 3) or take > self.sticks:
                raise IllegalMove("take 1, 2 or 3")
            self.sticks -= take

        def state(self, seat):
            return {"sticks": self.sticks}

        def outcome(self):
            return [1.0] if self.is_over() else None

        def to_data(self):
            return {"sticks": self.sticks}

        @classmethod
        def restore(cls, data):
            return cls(1, None, data["sticks"])


    pile_nim = GameFactory(PileNim, options=[
        ("pilenim-sticks", 15, "Sticks on the pile when a game starts.", sticks,
         ("nim-sticks",)),
    ], setting_names={"pilenim-sticks": "sticks"})
"""

CLASHING = """
    from gtserver.games import GameFactory
    from gtserver.games.tictactoe import TicTacToe

    clashing = GameFactory(TicTacToe, name="OtherRounds", options=[
        ("eot-pd-rounds", 3, "Rounds, declared differently.", int)])
"""

SHADOWING = """
    from gtserver.games import GameFactory
    from gtserver.games.tictactoe import TicTacToe

    shadowing = GameFactory(TicTacToe, name="Shadow", options=[
        ("eot-game-timeout", 3, "Takes the name of an eot option.", int)])
"""

UNCONFIGURABLE = """
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from gtserver.interfaces import IConfigurableGameFactory


    @implementer(IPlugin, IConfigurableGameFactory)
    class Unconfigurable:
        name = "Unconfigurable"
        min_players = max_players = 1
        options = []

        def new_game(self, players, rng):
            raise AssertionError("never played")

        def restore(self, data):
            raise AssertionError("never restored")


    unconfigurable = Unconfigurable()
"""


class ThirdPartyGameOptionTests(unittest.TestCase):
    def setUp(self):
        install_plugins(self, {"my_pile_nim": PILE_NIM})

    def test_help_lists_the_option_with_its_game(self):
        text = " ".join(make_options_class({})().getUsage().split())
        self.assertIn("--pilenim-sticks= [game PileNim] Sticks on the pile when a game "
                      "starts. [default: 15]", text)
        self.assertIn("--nim-sticks= Old name of --pilenim-sticks.", text)

    def test_values_are_checked_by_the_option(self):
        protocols = wire_protocols()
        self.assertEqual(parse_options(protocols=protocols)["pilenim-sticks"], 15)
        self.assertEqual(parse_options("--nim-sticks", "4", protocols=protocols)[
            "pilenim-sticks"], 4)
        error = self.assertRaises(usage.UsageError, parse_options, "--pilenim-sticks", "0",
                                  protocols=protocols)
        self.assertIn("--pilenim-sticks must be at least 1", str(error))

    async def game_over_the_wire(self, *arguments: str) -> tuple[dict, TableService]:
        server = await start_server(self, *arguments, listeners={"eot": None},
                                    protocols=wire_protocols())

        def first_state():
            client = GameClient("127.0.0.1", server.port("eot"), "PileNim", "pile", 1)
            client.join()
            return client.state()

        return await deferToThread(first_state), server.factory("eot").tables

    async def test_each_service_plays_with_its_own_value(self):
        configured, configured_matches = await self.game_over_the_wire("--pilenim-sticks", "7")
        default, default_matches = await self.game_over_the_wire()
        self.assertEqual(configured["sticks"], 7)
        self.assertEqual(default["sticks"], 15)
        self.assertEqual(configured_matches.games["PileNim"].settings, {"sticks": 7})
        self.assertEqual(default_matches.games["PileNim"].settings, {"sticks": 15})
        self.assertEqual(games()["PileNim"].settings, {})     # the plugin object: none

    def test_configured_games_take_defaults_for_absent_options(self):
        table = configured_games({"pilenim-sticks": 3, "eot-pd-rounds": 2})
        self.assertEqual(table["PileNim"].new_game(1).sticks, 3)
        self.assertEqual(table["StagHunt"].new_game(2).rounds, 2)
        self.assertEqual(table["Chat"].settings, {"line_max": 4096, "history_max": 262144})
        self.assertIs(table["TicTacToe"], games()["TicTacToe"])   # nothing to configure


class BrokenGameOptionTests(unittest.TestCase):
    def test_two_games_declaring_one_name_differently(self):
        install_plugins(self, {"my_clashing": CLASHING})
        error = self.assertRaises(PluginError, make_options_class, {})
        self.assertEqual(str(error), "games OtherRounds and PrisonersDilemma declare "
                                     "different options named --eot-pd-rounds")

    def test_a_game_option_may_not_take_a_protocol_option_name(self):
        install_plugins(self, {"my_shadowing": SHADOWING})
        error = self.assertRaises(PluginError, make_options_class)
        self.assertIn("game option --eot-game-timeout clashes", str(error))

    def test_a_configurable_game_must_configure(self):
        install_plugins(self, {"my_unconfigurable": UNCONFIGURABLE})
        error = self.assertRaises(PluginError, games)
        self.assertIn("does not provide IConfigurableGameFactory", str(error))
        self.assertIn("configured_from", str(error))
