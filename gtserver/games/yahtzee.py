"""Yahtzee for 1 to 8 players, with the original game framework's contract.

*Name phase.* Every player first sends ``name=<str>`` (non-empty, not used by
another player, never changed); all players may move in this phase. Once
everybody has a name, a player drawn at random starts and their dice are
rolled.

*Playing.* The player to move may re-roll with ``roll_dice=[indices]``
(dice 0-4; ``null`` or ``true`` re-rolls all five; an empty list is
refused), at most three rolls per turn counting the automatic first one.
The turn ends with ``score="add points"`` or ``score="cross out"`` and
``category=<name>``: adding points enters what the dice make in that
category (refused for an upper category without a matching die, and for a
used category); crossing out enters 0. The Yahtzee category holding 50 may
take a further Yahtzee, worth 150 more. Then the next player's dice are
rolled. The upper section's bonus is 35 when its categories make 63 or more.

*State* (per player): ``scorecard`` (the player's own, category -> points or
null, always), ``dice`` (the five face values of the player to move, while
playing), ``rolls_left`` (while playing), ``current_name`` (the name of the
player to move, while playing), ``ranking`` (name -> total with the bonus,
once over). The game is over when every scorecard is full.

All chance comes from the ``rng`` given to the game (the match's seeded
generator); its state is part of :meth:`Yahtzee.to_data`, so a restored game
rolls on exactly as the original would.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from zope.interface import implementer

from gtserver.games.base import IllegalMove
from gtserver.interfaces import IGame

UPPER = ("Ones", "Twos", "Threes", "Fours", "Fives", "Sixes")
LOWER = ("Chance", "Three of a Kind", "Four of a Kind", "Full House", "Small Straight",
         "Large Straight", "Yahtzee")
CATEGORIES = UPPER + LOWER
UPPER_BONUS, UPPER_BONUS_AT = 35, 63
YAHTZEE, FURTHER_YAHTZEE = 50, 150
ROLLS_PER_TURN = 3
DICE = 5
ADD, CROSS_OUT = "add points", "cross out"
#: Marks a move argument the client did not send (``null`` is a value).
_ABSENT = object()


def points(category: str, dice: list[int]) -> int:
    """What ``dice`` make in ``category`` (0 when they do not make it)."""
    counts = Counter(dice)
    faces = set(dice)
    if category in UPPER:
        face = UPPER.index(category) + 1
        return face * counts[face]
    if category == "Chance":
        return sum(dice)
    if category == "Three of a Kind":
        return sum(dice) if max(counts.values()) >= 3 else 0
    if category == "Four of a Kind":
        return sum(dice) if max(counts.values()) >= 4 else 0
    if category == "Full House":
        return 25 if sorted(counts.values()) == [2, 3] else 0
    if category == "Small Straight":
        runs = ({1, 2, 3, 4}, {2, 3, 4, 5}, {3, 4, 5, 6})
        return 30 if any(run <= faces for run in runs) else 0
    if category == "Large Straight":
        return 40 if faces in ({1, 2, 3, 4, 5}, {2, 3, 4, 5, 6}) else 0
    if category == "Yahtzee":
        return YAHTZEE if len(faces) == 1 else 0
    raise ValueError(f"no category {category!r}")


def total(card: dict[str, int | None]) -> int:
    """A scorecard's total, the upper bonus included."""
    upper = sum(card[category] or 0 for category in UPPER)
    bonus = UPPER_BONUS if upper >= UPPER_BONUS_AT else 0
    return upper + bonus + sum(card[category] or 0 for category in LOWER)


def _rng_state(rng: random.Random) -> list | None:
    try:
        version, internal, gauss = rng.getstate()
    except NotImplementedError:      # SystemRandom: nothing to restore
        return None
    return [version, list(internal), gauss]


@implementer(IGame)
class Yahtzee:
    min_players = 1
    max_players = 8

    def __init__(self, players: int = 1, rng: random.Random | None = None) -> None:
        if not self.min_players <= players <= self.max_players:
            raise ValueError("Yahtzee takes 1 to 8 players")
        self.players = players
        self.rng = rng or random.Random()
        self.names: list[str | None] = [None] * players
        self.cards: list[dict[str, int | None]] = [dict.fromkeys(CATEGORIES)
                                                   for _ in range(players)]
        self.to_move: int | None = None     # None during the name phase
        self.dice: list[int] = []
        self.rolls = 0

    # IGame

    def current(self) -> list[int]:
        if self.is_over():
            return []
        if self.to_move is None:
            return list(range(self.players))
        return [self.to_move]

    def is_over(self) -> bool:
        return all(value is not None for card in self.cards for value in card.values())

    def move(self, seat: int, name: Any = _ABSENT, roll_dice: Any = _ABSENT,
             score: Any = _ABSENT, category: Any = _ABSENT) -> None:
        given = [key for key, value in (("name", name), ("roll_dice", roll_dice),
                                        ("score", score)) if value is not _ABSENT]
        if len(given) != 1:
            raise IllegalMove("send one of name=..., roll_dice=[...] or score=... "
                              "with category=...")
        if category is not _ABSENT and score is _ABSENT:
            raise IllegalMove("category goes with score=...")
        if self.is_over():
            raise IllegalMove("the game is over")
        if name is not _ABSENT:
            self._name(seat, name)
        elif self.to_move is None:
            raise IllegalMove("wait until every player has a name")
        elif roll_dice is not _ABSENT:
            self._roll(roll_dice)
        else:
            self._score(seat, score, category)

    def state(self, seat: int | None = None) -> dict[str, Any]:
        card = self.cards[seat] if seat is not None and 0 <= seat < self.players else \
            dict.fromkeys(CATEGORIES)
        state: dict[str, Any] = {"scorecard": dict(card)}
        if self.is_over():
            state["ranking"] = {self.names[index]: total(self.cards[index])
                                for index in self._ranked()}
        elif self.to_move is not None:
            state["dice"] = list(self.dice)
            state["rolls_left"] = ROLLS_PER_TURN - self.rolls
            state["current_name"] = self.names[self.to_move]
        return state

    def outcome(self) -> list[float] | None:
        if not self.is_over():
            return None
        totals = [total(card) for card in self.cards]
        best = max(totals)
        winners = totals.count(best)
        return [(1.0 if winners == 1 else 0.5) if value == best else 0.0 for value in totals]

    def to_data(self) -> dict[str, Any]:
        return {"players": self.players, "names": self.names, "cards": self.cards,
                "to_move": self.to_move, "dice": self.dice, "rolls": self.rolls,
                "rng": _rng_state(self.rng)}

    @classmethod
    def restore(cls, data: dict[str, Any]) -> Yahtzee:
        rng = random.Random()
        if data.get("rng") is not None:
            version, internal, gauss = data["rng"]
            rng.setstate((version, tuple(internal), gauss))
        game = cls(data["players"], rng)
        game.names = list(data["names"])
        game.cards = [dict(card) for card in data["cards"]]
        game.to_move = data["to_move"]
        game.dice = list(data["dice"])
        game.rolls = data["rolls"]
        return game

    # rules

    def _name(self, seat: int, name: Any) -> None:
        if self.names[seat] is not None:
            raise IllegalMove("your name is set and cannot be changed")
        if not isinstance(name, str) or not name.strip():
            raise IllegalMove("the name must be a non-empty string")
        if name in self.names:
            raise IllegalMove(f"the name {name!r} is taken")
        self.names[seat] = name
        if None not in self.names:
            self._start_turn(self.rng.randrange(self.players))

    def _roll(self, indices: Any) -> None:
        if indices is None or indices is True:
            indices = list(range(DICE))
        if not isinstance(indices, list):
            raise IllegalMove("roll_dice takes a list of dice indices 0-4")
        if not indices:
            raise IllegalMove("name at least one die to roll")
        if any(isinstance(index, bool) or not isinstance(index, int)
               or not 0 <= index < DICE for index in indices):
            raise IllegalMove("dice indices must be integers 0-4")
        if len(set(indices)) != len(indices):
            raise IllegalMove("each die may be named once")
        if self.rolls >= ROLLS_PER_TURN:
            raise IllegalMove(f"no rolls left: {ROLLS_PER_TURN} per turn")
        for index in indices:
            self.dice[index] = self._die()
        self.rolls += 1

    def _score(self, seat: int, score: Any, category: Any) -> None:
        if score not in (ADD, CROSS_OUT):
            raise IllegalMove(f"score must be {ADD!r} or {CROSS_OUT!r}")
        if category is _ABSENT:
            raise IllegalMove("name the category to score in")
        if category not in CATEGORIES:
            raise IllegalMove(f"no category {category!r}; the categories are "
                              + ", ".join(CATEGORIES))
        card = self.cards[seat]
        entered = card[category]
        if score == CROSS_OUT:
            if entered is not None:
                raise IllegalMove(f"{category} is already used")
            card[category] = 0
        else:
            made = points(category, self.dice)
            if category == "Yahtzee" and entered is not None and entered >= YAHTZEE:
                if not made:
                    raise IllegalMove("Yahtzee is already used; only a further Yahtzee "
                                      "may be added to it")
                card[category] = entered + FURTHER_YAHTZEE
            elif entered is not None:
                raise IllegalMove(f"{category} is already used")
            elif category in UPPER and not made:
                raise IllegalMove(f"no die shows a {UPPER.index(category) + 1}: "
                                  f"cross {category} out instead")
            else:
                card[category] = made
        self._next_turn()

    def _next_turn(self) -> None:
        if self.is_over():
            self.dice, self.rolls = [], 0
            return
        seat = self.to_move
        for _ in range(self.players):      # the next player with room on the card
            seat = (seat + 1) % self.players
            if any(value is None for value in self.cards[seat].values()):
                break
        self._start_turn(seat)

    def _start_turn(self, seat: int) -> None:
        self.to_move = seat
        self.dice = [self._die() for _ in range(DICE)]
        self.rolls = 1

    def _die(self) -> int:
        return self.rng.randint(1, 6)

    def _ranked(self) -> list[int]:
        return sorted(range(self.players), key=lambda index: -total(self.cards[index]))
