"""Yahtzee: its rules as properties (hypothesis), and real clients playing it to the end."""

from __future__ import annotations

import json
import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from gtserver.client import GameClient, IllegalMove
from gtserver.games import IllegalMove as Refusal
from gtserver.games.yahtzee import CATEGORIES, LOWER, UPPER, Yahtzee, points, total
from tests.support import select_events, start_server

dice_strategy = st.lists(st.integers(1, 6), min_size=5, max_size=5)


def roundtrip(game: Yahtzee) -> Yahtzee:
    return Yahtzee.restore(json.loads(json.dumps(game.to_data())))


def named(players: int, seed: int) -> Yahtzee:
    game = Yahtzee(players, random.Random(seed))
    for seat in range(players):
        game.move(seat, name=f"p{seat}")
    return game


def refused(call, *args, **kwargs) -> str:
    try:
        call(*args, **kwargs)
    except Refusal as refusal:
        assert isinstance(refusal.message, str), refusal.message
        return refusal.message
    raise AssertionError("the move was accepted")


class ScoringProperties(unittest.TestCase):
    @given(dice_strategy)
    def test_categories(self, dice):
        counts = Counter(dice)
        for face, category in enumerate(UPPER, start=1):
            self.assertEqual(points(category, dice), face * counts[face])
        self.assertEqual(points("Chance", dice), sum(dice))
        most = max(counts.values())
        self.assertEqual(points("Three of a Kind", dice), sum(dice) if most >= 3 else 0)
        self.assertEqual(points("Four of a Kind", dice), sum(dice) if most >= 4 else 0)
        self.assertEqual(points("Yahtzee", dice), 50 if most == 5 else 0)
        self.assertIn(points("Full House", dice), (0, 25))
        self.assertEqual(points("Full House", dice) == 25,
                         sorted(counts.values()) == [2, 3])
        large = sorted(dice) in ([1, 2, 3, 4, 5], [2, 3, 4, 5, 6])
        self.assertEqual(points("Large Straight", dice), 40 if large else 0)
        if large:
            self.assertEqual(points("Small Straight", dice), 30)
        small = any(all(face in dice for face in range(start, start + 4))
                    for start in (1, 2, 3))
        self.assertEqual(points("Small Straight", dice), 30 if small else 0)

    @given(st.lists(st.integers(0, 30), min_size=13, max_size=13))
    def test_upper_bonus_at_63(self, values):
        card = dict(zip(CATEGORIES, values, strict=True))
        upper = sum(card[category] for category in UPPER)
        lower = sum(card[category] for category in LOWER)
        self.assertEqual(total(card), upper + lower + (35 if upper >= 63 else 0))

    def test_bonus_edges(self):
        card = dict.fromkeys(CATEGORIES, 0)
        card.update(Ones=3, Twos=6, Threes=9, Fours=12, Fives=15, Sixes=18)    # 63
        self.assertEqual(total(card), 63 + 35)
        card["Ones"] = 2
        self.assertEqual(total(card), 62)


#: One step of a random player: which kind of move, and its details.
step_strategy = st.tuples(st.sampled_from(["roll", "roll", "add", "cross", "junk"]),
                          st.lists(st.integers(-1, 5), max_size=6),
                          st.sampled_from(CATEGORIES + ("Bonus",)))


class GameProperties(unittest.TestCase):
    @settings(max_examples=60, deadline=None)
    @given(st.integers(1, 8), st.integers(0, 2**32), st.lists(step_strategy, max_size=400))
    def test_any_sequence_of_moves_keeps_the_rules(self, players, seed, steps):
        game = named(players, seed)
        replay = named(players, seed)
        self.assertEqual(len(game.current()), 1)
        for kind, indices, category in steps:
            if game.is_over():
                break
            (seat,) = game.current()
            before = json.dumps(game.to_data())
            arguments = {"roll": {"roll_dice": indices}, "add": {"score": "add points",
                                                                "category": category},
                         "cross": {"score": "cross out", "category": category},
                         "junk": {"score": "add points"}}[kind]
            try:
                game.move(seat, **arguments)
            except Refusal as refusal:
                self.assertIsInstance(refusal.message, str)
                # A refused move changes nothing, dice and generator included.
                self.assertEqual(json.dumps(game.to_data()), before)
                continue
            replay.move(seat, **arguments)
            self.check_invariants(game)
        self.assertEqual(game.to_data(), replay.to_data())      # same seed, same game
        self.assertEqual(roundtrip(game).to_data(), game.to_data())

    def check_invariants(self, game: Yahtzee) -> None:
        for seat in range(game.players):
            state = game.state(seat)
            self.assertEqual(set(state["scorecard"]), set(CATEGORIES))
        if game.is_over():
            self.assertEqual(game.current(), [])
            ranking = game.state(0)["ranking"]
            self.assertEqual(list(ranking.values()), sorted(ranking.values(), reverse=True))
            return
        state = game.state(0)
        self.assertEqual(len(state["dice"]), 5)
        self.assertTrue(all(1 <= die <= 6 for die in state["dice"]))
        self.assertIn(state["rolls_left"], (0, 1, 2))
        self.assertEqual(state["current_name"], game.names[game.current()[0]])

    @settings(max_examples=40, deadline=None)
    @given(st.integers(1, 4), st.integers(0, 2**32), st.data())
    def test_played_to_the_end_by_scoring_only(self, players, seed, data):
        game = named(players, seed)
        turns = 0
        while not game.is_over():
            (seat,) = game.current()
            free = [c for c, v in game.cards[seat].items() if v is None]
            category = data.draw(st.sampled_from(free))
            game.move(seat, score="cross out", category=category)
            turns += 1
            restored = roundtrip(game)
            self.assertEqual(restored.to_data(), game.to_data())
        self.assertEqual(turns, 13 * players)
        self.assertEqual(set(game.state(0)["ranking"]), {f"p{s}" for s in range(players)})
        self.assertEqual(game.outcome(), [1.0] if players == 1 else [0.5] * players)
        self.assertNotIn("dice", game.state(0))
        self.assertIn("game is over", refused(game.move, 0, score="cross out",
                                              category="Ones"))

    @given(st.integers(0, 2**32))
    def test_a_restored_game_rolls_on_identically(self, seed):
        game = named(3, seed)
        game.move(game.current()[0], roll_dice=[0, 1])
        copy = roundtrip(game)
        for played in (game, copy):
            played.move(played.current()[0], roll_dice=None)
        self.assertEqual(copy.dice, game.dice)


class RuleTests(unittest.TestCase):
    def test_name_phase(self):
        game = Yahtzee(3, random.Random(1))
        self.assertEqual(game.current(), [0, 1, 2])
        self.assertEqual(game.state(1), {"scorecard": dict.fromkeys(CATEGORIES)})
        self.assertIn("wait until", refused(game.move, 0, roll_dice=[0]))
        self.assertIn("non-empty", refused(game.move, 0, name=" "))
        self.assertIn("non-empty", refused(game.move, 0, name=7))
        game.move(2, name="cy")
        self.assertIn("cannot be changed", refused(game.move, 2, name="cyd"))
        self.assertIn("taken", refused(game.move, 0, name="cy"))
        game.move(0, name="ann")
        self.assertEqual(game.current(), [0, 1, 2])
        game.move(1, name="bob")
        (starter,) = game.current()
        state = game.state(0)
        self.assertEqual(state["current_name"], game.names[starter])
        self.assertEqual(state["rolls_left"], 2)
        self.assertIn("cannot be changed", refused(game.move, starter, name="x"))

    def test_the_starter_is_drawn(self):
        starters = {named(4, seed).current()[0] for seed in range(40)}
        self.assertEqual(starters, {0, 1, 2, 3})

    def test_rolls_and_refusals(self):
        game = named(1, 5)
        for bad in ([], [5], [-1], [0, 0], [True], ["1"], "all", 3):
            self.assertIsInstance(refused(game.move, 0, roll_dice=bad), str)
        kept = list(game.dice)
        game.move(0, roll_dice=[4])
        self.assertEqual(game.dice[:4], kept[:4])
        game.move(0, roll_dice=None)
        self.assertIn("no rolls left", refused(game.move, 0, roll_dice=[0]))
        self.assertIn("one of", refused(game.move, 0, roll_dice=[0], score="cross out"))
        self.assertIn("one of", refused(game.move, 0))
        self.assertIn("category", refused(game.move, 0, score="add points"))
        self.assertIn("no category", refused(game.move, 0, score="add points",
                                             category="Bonus"))
        self.assertIn("score must be", refused(game.move, 0, score="add", category="Ones"))

    def test_scoring(self):
        game = named(1, 2)
        game.dice = [2, 2, 3, 3, 3]
        self.assertIn("no die shows a 1", refused(game.move, 0, score="add points",
                                                  category="Ones"))
        game.move(0, score="add points", category="Full House")
        self.assertEqual(game.cards[0]["Full House"], 25)
        self.assertEqual(game.rolls, 1)        # the next turn's dice are rolled
        self.assertIn("already used", refused(game.move, 0, score="cross out",
                                              category="Full House"))
        game.dice = [6, 6, 6, 6, 6]
        game.move(0, score="add points", category="Yahtzee")
        game.dice = [6, 6, 6, 6, 6]
        game.move(0, score="add points", category="Yahtzee")      # a further one
        self.assertEqual(game.cards[0]["Yahtzee"], 200)
        game.dice = [1, 2, 3, 4, 6]
        self.assertIn("only a further Yahtzee", refused(
            game.move, 0, score="add points", category="Yahtzee"))
        game.move(0, score="add points", category="Small Straight")
        self.assertEqual(game.cards[0]["Small Straight"], 30)
        game.move(0, score="cross out", category="Sixes")
        self.assertEqual(game.cards[0]["Sixes"], 0)
        game.dice = [1, 1, 2, 5, 6]
        game.move(0, score="add points", category="Four of a Kind")  # not made: 0
        self.assertEqual(game.cards[0]["Four of a Kind"], 0)

    def test_crossed_out_yahtzee_takes_no_further_one(self):
        game = named(1, 3)
        game.move(0, score="cross out", category="Yahtzee")
        game.dice = [4] * 5
        self.assertIn("already used", refused(game.move, 0, score="add points",
                                              category="Yahtzee"))


def yahtzee_player(client: GameClient, name: str) -> dict:
    """A simple client: names itself, then on each turn re-rolls every die that
    does not show its most frequent face once, and scores the best category
    (crossing out the first free one when nothing scores)."""
    me = client.join()
    client.move(name=name)
    refusals = 0
    while True:
        state = client.state()
        if state["gameover"]:
            return {"me": me, "state": state, "refusals": refusals}
        if state.get("current_name") != name:
            continue
        dice, card = state["dice"], state["scorecard"]
        if state["rolls_left"] == 2:
            common = Counter(dice).most_common(1)[0][0]
            rest = [index for index, die in enumerate(dice) if die != common]
            try:
                client.move(roll_dice=rest)     # an empty list is refused
            except IllegalMove:
                refusals += 1
                client.move(roll_dice=None)
            continue
        free = [category for category, value in card.items() if value is None]
        best = max(free, key=lambda category: points(category, dice))
        if points(best, dice) > 0:
            client.move(score="add points", category=best)
        else:
            client.move(score="cross out", category=free[0])


class YahtzeeOverTheWireTests(unittest.TestCase):
    async def test_three_clients_play_to_the_end(self):
        server = await start_server(self, listeners={"eot": None})
        port = server.port("eot")
        names = ["ann", "bob", "cy"]
        clients = [GameClient("127.0.0.1", port, "Yahtzee", session="dice", players=3)
                   for _ in names]
        results = [deferToThread(yahtzee_player, client, name)
                   for client, name in zip(clients, names, strict=True)]
        finals = [await result for result in results]
        states = [final["state"] for final in finals]
        ranking = states[0]["ranking"]
        self.assertEqual(set(ranking), set(names))
        self.assertEqual(list(ranking.values()), sorted(ranking.values(), reverse=True))
        for client, final in zip(clients, finals, strict=True):
            card = final["state"]["scorecard"]
            self.assertTrue(all(value is not None for value in card.values()))
            self.assertEqual(final["state"]["ranking"], ranking)
            self.assertEqual(ranking[names[clients.index(client)]], total(card))
            self.assertEqual(final["state"]["current"], [])
        # Every move is in the research log, with the seed in the match's start.
        await server.core.events.flush()
        starts = await server.store.run(select_events, 0, 10, "eot",
                                        ("match_start",))
        self.assertIsInstance(json.loads(starts[0][-1])["seed"], int)
