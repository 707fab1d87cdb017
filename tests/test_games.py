"""Rules of the built-in games, without any network."""

from __future__ import annotations

import json
import random

from twisted.trial import unittest

from gtserver.games import IllegalMove
from gtserver.games.chat import Chat
from gtserver.games.echo import Echo
from gtserver.games.matrix import PrisonersDilemma, StagHunt, dilemma_payoffs
from gtserver.games.tictactoe import TicTacToe
from gtserver.interfaces import IGame
from gtserver.registry import games


def roundtrip(game):
    """The game rebuilt from its JSON snapshot."""
    return type(game).restore(json.loads(json.dumps(game.to_data())))


class RegistryTests(unittest.TestCase):
    def test_built_in_games_are_plugins(self):
        installed = games()
        for name in ("Echo", "Chat", "TicTacToe", "UltimateTicTacToe", "PrisonersDilemma",
                     "StagHunt", "Yahtzee"):
            self.assertIn(name, installed)
            game = installed[name].new_game(installed[name].min_players, random.Random(1))
            self.assertTrue(IGame.providedBy(game), name)
            json.dumps(game.state(0))


class EchoTests(unittest.TestCase):
    def test_contract(self):
        game = Echo(1, random.Random())
        self.assertEqual(game.state(0), {"echo": ""})
        game.move(0, msg="hi")
        self.assertEqual(game.state(0), {"echo": "hi"})
        self.assertRaises(IllegalMove, game.move, 0, msg="error")
        self.assertEqual(game.state(0), {"echo": "error"})
        self.assertRaises(IllegalMove, game.move, 0)
        self.assertRaises(IllegalMove, game.move, 0, msg=5)
        self.assertFalse(game.is_over())
        game.move(0, msg="quit")
        self.assertTrue(game.is_over())
        self.assertEqual(game.current(), [])
        self.assertEqual(roundtrip(game).state(0), {"echo": "quit"})


class ChatTests(unittest.TestCase):
    def test_names_and_messages(self):
        game = Chat(3)
        self.assertEqual(game.current(), [0, 1, 2])
        self.assertRaises(IllegalMove, game.move, 0, message="hello")
        game.move(0, name="ann")
        self.assertRaises(IllegalMove, game.move, 1, name="ann")
        self.assertRaises(IllegalMove, game.move, 1, name=" ")
        self.assertRaises(IllegalMove, game.move, 1)
        game.move(1, name="bob", message="hi")
        game.move(0, message="  ")
        game.move(0, name="ann", message="hey")       # keeping one's own name is fine
        self.assertEqual(game.state(2), {"messages": [["bob", "hi"], ["ann", "hey"]]})
        self.assertFalse(game.is_over())
        self.assertEqual(roundtrip(game).state(0), game.state(0))

    def test_history_is_bounded_in_bytes_and_restored(self):
        game = Chat(1, None, line_max=8, history_max=30)
        game.move(0, name="ab")
        self.assertRaises(IllegalMove, game.move, 0, message="ëëëëë")     # 10 bytes
        for index in range(10):
            game.move(0, message=f"{index:06}")                           # 8 bytes a line
        self.assertEqual(game.state(0)["messages"], [["ab", f"{i:06}"] for i in (7, 8, 9)])
        restored = roundtrip(game)
        self.assertEqual((restored.line_max, restored.history_max, restored.size),
                         (8, 30, 24))
        self.assertRaises(ValueError, Chat, 1, None, 0)

    def test_history_is_bounded(self):
        game = Chat(1)
        game.move(0, name="a")
        for index in range(Chat.history + 5):
            game.move(0, message=str(index))
        self.assertEqual(len(game.state(0)["messages"]), Chat.history)
        self.assertEqual(game.state(0)["messages"][-1], ["a", str(Chat.history + 4)])


class TicTacToeTests(unittest.TestCase):
    def test_random_starter_and_win(self):
        starters = {TicTacToe(2, random.Random(seed)).current()[0] for seed in range(20)}
        self.assertEqual(starters, {0, 1})
        game = TicTacToe(2, random.Random(0))
        first = game.current()[0]
        second = 1 - first
        for mine, theirs in ((0, 3), (1, 4)):
            game.move(first, position=mine)
            game.move(second, position=theirs)
        game.move(first, position=2)
        self.assertEqual(game.state(0)["winner"], first)
        self.assertTrue(game.is_over())
        self.assertEqual(game.outcome()[first], 1.0)
        self.assertEqual(roundtrip(game).state(1), game.state(1))

    def test_illegal_moves(self):
        game = TicTacToe(2, random.Random(0))
        seat = game.current()[0]
        for bad in (None, "4", 4.0, True, -1, 9):
            self.assertRaises(IllegalMove, game.move, seat, position=bad)
        game.move(seat, position=4)
        self.assertRaises(IllegalMove, game.move, 1 - seat, position=4)
        self.assertEqual(game.state(0)["board"].count(-1), 8)

    def test_draw(self):
        game = TicTacToe(2, random.Random(0))
        first = game.current()[0]
        order = [0, 1, 2, 4, 3, 5, 7, 6, 8]     # x o x / o o x / x x o: nobody wins
        for index, position in enumerate(order):
            game.move(first if index % 2 == 0 else 1 - first, position=position)
        self.assertTrue(game.is_over())
        self.assertIsNone(game.state(0)["winner"])
        self.assertEqual(game.outcome(), [0.5, 0.5])


class MatrixGameTests(unittest.TestCase):
    def test_prisoners_dilemma_rounds_and_secrecy(self):
        game = PrisonersDilemma(2, random.Random(), rounds=2)
        self.assertEqual(game.current(), [0, 1])
        game.move(0, choice="defect")
        self.assertEqual(game.current(), [1])
        self.assertIsNone(game.state(1)["my_choice"])
        self.assertEqual(game.state(0)["my_choice"], "defect")
        self.assertEqual(game.state(1)["history"], [])
        self.assertRaises(IllegalMove, game.move, 0, choice="cooperate")
        self.assertRaises(IllegalMove, game.move, 1, choice="maybe")
        game.move(1, choice="cooperate")
        self.assertEqual(game.state(1)["history"],
                         [{"choices": ["defect", "cooperate"], "payoffs": [5, 0]}])
        self.assertEqual(game.state(0)["round"], 2)
        game.move(1, choice="defect")
        game.move(0, choice="defect")
        self.assertTrue(game.is_over())
        self.assertEqual(game.state(0)["totals"], [6, 1])
        self.assertEqual(game.outcome(), [1.0, 0.0])
        self.assertEqual(roundtrip(game).state(0), game.state(0))

    def test_defaults_and_custom_payoffs(self):
        game = PrisonersDilemma(2)
        self.assertEqual(game.rounds, 5)
        custom = PrisonersDilemma(2, None, 1, dilemma_payoffs(7, 4, 2, 1))
        custom.move(0, choice="cooperate")
        custom.move(1, choice="cooperate")
        self.assertEqual(custom.state(0)["totals"], [4, 4])

    def test_stag_hunt(self):
        game = StagHunt(2, rounds=1)
        game.move(0, choice="stag")
        game.move(1, choice="hare")
        self.assertEqual(game.state(0)["history"][0]["payoffs"], [0, 3])
