"""Repeated two-player matrix games: both players choose at once, every round.

Both players are in ``current`` until both have chosen; then the round is
scored and the next one begins. A player's state shows every finished round
(both choices and payoffs), the running totals, and its own choice in the
round in progress, never the opponent's.

:class:`PrisonersDilemma` (``choice="cooperate"`` or ``"defect"``) takes its
payoffs from the classic T > R > P > S; :class:`StagHunt` (``choice="stag"``
or ``"hare"``) rewards trust. Rounds and payoffs are game settings
(``rounds``, ``payoffs``: see :meth:`GameFactory.configured`), set from the
daemon's options ``--eot-pd-rounds`` and ``--eot-pd-payoffs`` (:data:`ROUNDS`,
:data:`PAYOFFS`; the option names date from when only the EOT listener
played these games).
"""

from __future__ import annotations

import random
from typing import Any

from zope.interface import implementer

from gtserver.games.base import GameFactory, IllegalMove
from gtserver.interfaces import IGame
from gtserver.option_types import positive

#: Payoffs of the row player for (own choice, other's choice).
Payoffs = dict[tuple[str, str], float]


@implementer(IGame)
class MatrixGame:
    min_players = 2
    max_players = 2
    choices: tuple[str, str] = ("", "")
    default_rounds = 5

    @classmethod
    def default_payoffs(cls) -> Payoffs:
        raise NotImplementedError

    def __init__(self, players: int = 2, rng: random.Random | None = None,
                 rounds: int | None = None, payoffs: Payoffs | None = None) -> None:
        if players != 2:
            raise ValueError(f"{type(self).__name__} is a two-player game")
        self.players = 2
        self.rounds = rounds if rounds is not None else self.default_rounds
        if self.rounds < 1:
            raise ValueError("a matrix game needs at least one round")
        self.payoffs = dict(payoffs or self.default_payoffs())
        self.history: list[dict[str, list]] = []
        self.pending: list[str | None] = [None, None]
        self.totals = [0.0, 0.0]

    def current(self) -> list[int]:
        if self.is_over():
            return []
        return [seat for seat in (0, 1) if self.pending[seat] is None]

    def is_over(self) -> bool:
        return len(self.history) >= self.rounds

    def move(self, seat: int, choice: Any = None, **extra: Any) -> None:
        if self.is_over():
            raise IllegalMove("the game is over")
        if extra:
            raise IllegalMove(f"unexpected move arguments: {', '.join(sorted(extra))}")
        if choice not in self.choices:
            raise IllegalMove(f"choice must be {self.choices[0]!r} or {self.choices[1]!r}")
        if self.pending[seat] is not None:
            raise IllegalMove("you already chose this round")
        self.pending[seat] = choice
        if None not in self.pending:
            self._score()

    def _score(self) -> None:
        first, second = self.pending
        payoffs = [self.payoffs[(first, second)], self.payoffs[(second, first)]]
        self.history.append({"choices": [first, second], "payoffs": payoffs})
        self.totals = [self.totals[0] + payoffs[0], self.totals[1] + payoffs[1]]
        self.pending = [None, None]

    def state(self, seat: int | None = None) -> dict[str, Any]:
        return {
            "round": min(len(self.history) + 1, self.rounds),
            "rounds": self.rounds,
            "history": [{"choices": list(r["choices"]), "payoffs": list(r["payoffs"])}
                        for r in self.history],
            "totals": list(self.totals),
            "my_choice": self.pending[seat] if seat in (0, 1) else None,
            "payoff_matrix": [[own, other, value]
                              for (own, other), value in sorted(self.payoffs.items())],
        }

    def outcome(self) -> list[float] | None:
        if not self.is_over():
            return None
        first, second = self.totals
        if first == second:
            return [0.5, 0.5]
        return [1.0, 0.0] if first > second else [0.0, 1.0]

    def to_data(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "history": self.history, "pending": self.pending,
                "totals": self.totals,
                "payoffs": [[own, other, value] for (own, other), value in self.payoffs.items()]}

    @classmethod
    def restore(cls, data: dict[str, Any]) -> MatrixGame:
        payoffs = {(own, other): value for own, other, value in data["payoffs"]}
        game = cls(2, None, data["rounds"], payoffs)
        game.history = data["history"]
        game.pending = list(data["pending"])
        game.totals = list(data["totals"])
        return game


def dilemma_payoffs(temptation: float = 5, reward: float = 3, punishment: float = 1,
                    sucker: float = 0) -> Payoffs:
    """The prisoner's dilemma matrix from T, R, P, S."""
    return {("cooperate", "cooperate"): reward, ("cooperate", "defect"): sucker,
            ("defect", "cooperate"): temptation, ("defect", "defect"): punishment}


class PrisonersDilemma(MatrixGame):
    """Repeated prisoner's dilemma (default 5 rounds, T=5, R=3, P=1, S=0)."""

    choices = ("cooperate", "defect")

    @classmethod
    def default_payoffs(cls) -> Payoffs:
        return dilemma_payoffs()


class StagHunt(MatrixGame):
    """Repeated stag hunt: stag together 4 each, a lone stag hunter 0, hare 3."""

    choices = ("stag", "hare")

    @classmethod
    def default_payoffs(cls) -> Payoffs:
        return {("stag", "stag"): 4, ("stag", "hare"): 0, ("hare", "stag"): 3,
                ("hare", "hare"): 3}


def parse_payoffs(text: str) -> Payoffs:
    """``"T,R,P,S"`` as a prisoner's dilemma payoff matrix."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"payoffs must be four numbers T,R,P,S, got {text!r}") from None
    if len(values) != 4:
        raise ValueError(f"payoffs must be four numbers T,R,P,S, got {text!r}")
    return dilemma_payoffs(*values)


def payoffs_option(text: str) -> str:
    """Check ``--eot-pd-payoffs``: four numbers T,R,P,S (kept as text)."""
    try:
        parse_payoffs(text)
    except ValueError:
        raise ValueError(f"--eot-pd-payoffs wants four numbers T,R,P,S, got {text!r}") from None
    return text


#: The option that sets the rounds of every matrix game.
ROUNDS = ("eot-pd-rounds", 5, "Rounds of a matrix game.",
          positive(int, "eot-pd-rounds"), ("pd-rounds",))
#: The option that sets the prisoner's dilemma payoffs.
PAYOFFS = ("eot-pd-payoffs", "5,3,1,0", "Payoffs T,R,P,S of the prisoner's dilemma.",
           payoffs_option, ("pd-payoffs",))


class MatrixGameFactory(GameFactory):
    """The factory of a matrix game: its settings are ``rounds`` and ``payoffs``
    (``options`` among :data:`ROUNDS` and :data:`PAYOFFS`)."""

    def __init__(self, game_class: type[MatrixGame], name: str | None = None,
                 options: tuple[tuple, ...] = (ROUNDS,)) -> None:
        super().__init__(game_class, name, options=options,
                         setting_names={ROUNDS[0]: "rounds", PAYOFFS[0]: "payoffs"})

    def settings_from_options(self, values: Any) -> dict[str, Any]:
        settings = super().settings_from_options(values)
        if isinstance(settings.get("payoffs"), str):
            settings["payoffs"] = parse_payoffs(settings["payoffs"])
        return settings

    def check_settings(self) -> None:
        rounds = self.settings.get("rounds")
        if rounds is not None and rounds < 1:
            raise ValueError("rounds must be at least 1")
        super().check_settings()
