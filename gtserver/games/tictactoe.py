"""TicTacToe for two players; the starting player is drawn at random.

Move ``position=<int 0-8>`` (row by row). The state is ``{"board": [9 ints],
"winner": id | null}`` where a cell is -1 when empty, else the id of the player
who took it. Wrong types, positions out of range and taken cells are illegal.
"""

from __future__ import annotations

import random
from typing import Any

from zope.interface import implementer

from gtserver.games.base import AlternatingGame, IllegalMove
from gtserver.interfaces import IGame

EMPTY = -1
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8),
         (0, 4, 8), (2, 4, 6))


@implementer(IGame)
class TicTacToe(AlternatingGame):
    def __init__(self, players: int = 2, rng: random.Random | None = None) -> None:
        super().__init__(players, first=(rng or random.Random()).randrange(2))
        self.board = [EMPTY] * 9

    def move(self, seat: int, position: Any = None, **extra: Any) -> None:
        self.check_turn(seat, extra)
        if isinstance(position, bool) or not isinstance(position, int):
            raise IllegalMove("position must be an integer 0-8")
        if not 0 <= position <= 8:
            raise IllegalMove("position must be between 0 and 8")
        if self.board[position] != EMPTY:
            raise IllegalMove("that position is taken")
        self.board[position] = seat
        if any(all(self.board[cell] == seat for cell in line) for line in LINES):
            self.finish(seat)
        elif EMPTY not in self.board:
            self.finish(None)
        self.pass_turn()

    def state(self, seat: int | None = None) -> dict[str, Any]:
        return {"board": list(self.board), "winner": self.winner}

    def to_data(self) -> dict[str, Any]:
        return {"board": self.board, "to_move": self.to_move, "winner": self.winner,
                "over": self.over}

    @classmethod
    def restore(cls, data: dict[str, Any]) -> TicTacToe:
        game = cls(2, random.Random(0))
        game.board = list(data["board"])
        game.to_move, game.winner, game.over = data["to_move"], data["winner"], data["over"]
        return game
