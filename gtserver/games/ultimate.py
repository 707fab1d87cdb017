"""Ultimate tic-tac-toe: nine tic-tac-toe boards in a three-by-three board.

Seat 0 (``player_a``) moves first. A move names a sub-board (``sub_x``,
``sub_y``) and a cell in it (``x``, ``y``), each 0-2. The cell played sends the
opponent to the sub-board at the same position, unless that sub-board is
already decided (won or full); then any open cell of an undecided sub-board
may be played. Three decided-by-one-player sub-boards in a row win; when every
sub-board is decided without such a line, the game is a draw.

Cell values: 0 empty, 1 seat 0, 2 seat 1; a drawn sub-board is 3 in the
global field.
"""

from __future__ import annotations

import random
from typing import Any

from zope.interface import implementer

from gtserver.games.base import AlternatingGame, IllegalMove
from gtserver.interfaces import IGame

DRAWN = 3
LINES = (
    ((0, 0), (1, 0), (2, 0)), ((0, 1), (1, 1), (2, 1)), ((0, 2), (1, 2), (2, 2)),
    ((0, 0), (0, 1), (0, 2)), ((1, 0), (1, 1), (1, 2)), ((2, 0), (2, 1), (2, 2)),
    ((0, 0), (1, 1), (2, 2)), ((2, 0), (1, 1), (0, 2)),
)


def line_winner(cell) -> int:
    """The mark (1 or 2) owning a full line of a 3x3 board, else 0.

    ``cell(x, y)`` reads the board.
    """
    for line in LINES:
        first = cell(*line[0])
        if first in (1, 2) and all(cell(x, y) == first for x, y in line[1:]):
            return first
    return 0


def coordinate(value: Any, name: str) -> int:
    """A board coordinate 0-2 from an int or a string of digits."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())   # ASCII only: int() rejects some other Unicode digits
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2:
        raise IllegalMove(f"{name} must be 0, 1 or 2")
    return value


@implementer(IGame)
class UltimateTicTacToe(AlternatingGame):
    def __init__(self, players: int = 2, rng: random.Random | None = None) -> None:
        super().__init__(players)
        self.field = [[0] * 9 for _ in range(9)]   # field[row][column]
        self.board = [[0] * 3 for _ in range(3)]   # board[sub_y][sub_x]
        self.last_move: dict[str, int] | None = None

    # IGame

    def move(self, seat: int, sub_x: Any = None, sub_y: Any = None, x: Any = None,
             y: Any = None, **extra: Any) -> None:
        self.check_turn(seat, extra)
        sub_x, sub_y = coordinate(sub_x, "sub_x"), coordinate(sub_y, "sub_y")
        x, y = coordinate(x, "x"), coordinate(y, "y")
        if (sub_x, sub_y) not in self.open_boards():
            raise IllegalMove("you must play in the highlighted sub-board")
        row, column = sub_y * 3 + y, sub_x * 3 + x
        if self.field[row][column]:
            raise IllegalMove("that cell is taken")
        self.field[row][column] = seat + 1
        self.last_move = {"sub_x": sub_x, "sub_y": sub_y, "x": x, "y": y}
        self._settle(sub_x, sub_y)
        self.pass_turn()

    def state(self, seat: int | None = None) -> dict[str, Any]:
        return {
            "complete_field": [row[:] for row in self.field],
            "global_field": [row[:] for row in self.board],
            "last_move": dict(self.last_move) if self.last_move else None,
            "game_over": self.over,
            "is_draw": self.over and self.winner is None,
            "player_won": self.winner,
            "current_player": None if self.over else self.to_move,
        }

    def to_data(self) -> dict[str, Any]:
        return {"field": self.field, "board": self.board, "to_move": self.to_move,
                "last_move": self.last_move, "winner": self.winner, "over": self.over}

    @classmethod
    def restore(cls, data: dict[str, Any]) -> UltimateTicTacToe:
        game = cls()
        game.field = [list(row) for row in data["field"]]
        game.board = [list(row) for row in data["board"]]
        game.to_move = data["to_move"]
        game.last_move = data["last_move"]
        game.winner = data["winner"]
        game.over = data["over"]
        return game

    # rules

    def open_boards(self) -> list[tuple[int, int]]:
        """Sub-boards (sub_x, sub_y) the player to move may play in."""
        if self.over:
            return []
        if self.last_move is not None:
            target = (self.last_move["x"], self.last_move["y"])
            if not self.board[target[1]][target[0]]:
                return [target]
        return [(sx, sy) for sy in range(3) for sx in range(3) if not self.board[sy][sx]]

    def _settle(self, sub_x: int, sub_y: int) -> None:
        """Decide the sub-board just played in, then the whole game."""
        top, left = sub_y * 3, sub_x * 3
        won = line_winner(lambda x, y: self.field[top + y][left + x])
        if won:
            self.board[sub_y][sub_x] = won
        elif all(self.field[top + y][left + x] for y in range(3) for x in range(3)):
            self.board[sub_y][sub_x] = DRAWN
        overall = line_winner(lambda x, y: self.board[y][x])
        if overall:
            self.finish(overall - 1)
        elif all(cell for row in self.board for cell in row):
            self.finish(None)
