"""A match of any game: seats, turns, moves and their events.

A :class:`Match` is pure: it knows the game, its seats and whose turn it is,
checks a move (the turn, the game being over, the arguments against the
game's ``move`` signature), plays it on the rules and records it through the
:class:`EventRecorder` it was given. It does no I/O, holds no lock and reads
no clock (the caller passes the time). Keeping a match (memory, the store)
and serialising changes to it are the protocols' business: the EOT game API
plays matches in memory, ultimate tic-tac-toe stores each change before it
tells the players (:mod:`gtserver.core.match_store`,
:mod:`gtserver.uttt.matchmaking`).

Every protocol refuses a move with the same three errors, each adapter
mapping them to its own replies: :class:`MatchOver`, :class:`NotYourTurn` and
the game's own :class:`gtserver.games.IllegalMove` (also raised for arguments
the game's ``move`` does not take).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import random
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

from gtserver import metrics
from gtserver.core.errors import CoreError
from gtserver.games import IllegalMove

#: Kind of the event recording that a seat was sent a state in which it is to move.
TURN_SENT = "turn_sent"


class MatchOver(CoreError):
    """The match is over (its game ended, or it was ended)."""

    def __init__(self, match_id: str) -> None:
        super().__init__("the match is over")
        self.match_id = match_id


class NotYourTurn(CoreError):
    """The seat that moved is not one of the seats to move."""

    def __init__(self) -> None:
        super().__init__("it is not your turn")


class EventRecorder(Protocol):
    """What a match needs of the research event log (:class:`gtserver.core.events.EventLog`)."""

    def record(self, source: str, kind: str, *, user: str | None = None,
               match: str | None = None, address: str | None = None,
               data: Any = None) -> None: ...


@functools.lru_cache(maxsize=256)
def move_signature(game_class: type) -> inspect.Signature:
    """The signature of a game class's ``move``, through any decorators.

    Decorators made with :func:`functools.wraps` expose the function they
    wrap as ``__wrapped__``, which :func:`inspect.signature` follows; the
    move's arguments are checked against it before the game runs, so a
    TypeError raised inside the game stays the game's own error.
    """
    return inspect.signature(game_class.move)


@dataclass(frozen=True)
class MoveKeywords:
    """What keyword arguments a game's ``move`` takes, for a check that costs a
    set operation instead of a signature binding."""

    names: frozenset[str]
    required: frozenset[str]
    any_keyword: bool
    #: The names of ``self`` and the seat, which a move may not give again.
    taken: frozenset[str]

    def accepts(self, arguments: dict[str, Any]) -> bool:
        given = arguments.keys()
        return (self.required <= given and not self.taken & given
                and (self.any_keyword or given <= self.names))


@functools.lru_cache(maxsize=256)
def move_keywords(game_class: type) -> MoveKeywords:
    """The keyword arguments of ``move`` after ``self`` and the seat (None
    where a parameter cannot be given by keyword: then only binding decides)."""
    every = list(move_signature(game_class).parameters.values())
    taken, parameters = frozenset(p.name for p in every[:2]), every[2:]
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = frozenset(p.name for p in parameters if p.kind in keyword_kinds)
    required = frozenset(p.name for p in parameters if p.kind in keyword_kinds
                         and p.default is inspect.Parameter.empty)
    if any(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in parameters):
        required |= {"\0positional"}  # never given: every move goes to binding
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    return MoveKeywords(names, required, any_keyword, taken)


@dataclass
class Seat:
    name: str
    user_id: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """A match as it was before a change, for :meth:`Match.rollback`."""

    game: str
    updated: float
    aborted_by: int | None
    extra: dict[str, Any]


@dataclass(eq=False)
class Match:
    id: str
    game_name: str
    #: The game's factory (``new_game``, ``restore``), used to roll back.
    factory: Any
    game: Any
    source: str
    seats: list[Seat]
    recorder: EventRecorder = field(repr=False)
    ranked: bool = False
    created: float = 0.0
    updated: float = 0.0
    #: The seat that ended the match early, -1 for the server, None if not ended.
    aborted_by: int | None = None
    #: Protocol-specific facts kept with the match (JSON-ready).
    extra: dict[str, Any] = field(default_factory=dict)
    #: Moves recorded since the match was created or loaded (not stored).
    moves: int = 0
    #: Refusals recorded since the last recorded move, or since the match was
    #: created or loaded (not stored): each move and the end record it, so
    #: that a replay notices a refusal missing from the log.
    refusals_since_move: int = 0
    #: Seats sent a state in which they are to move, since their last move
    #: (each is recorded once: ``turn_sent``, where decision times start).
    turn_sent_to: set[int] = field(default_factory=set, repr=False)

    @classmethod
    def new(cls, factory: Any, seats: list[Seat], source: str, recorder: EventRecorder,
            now: float, ranked: bool = False, rng: random.Random | None = None,
            extra: dict[str, Any] | None = None) -> Match:
        """A new match of ``factory``'s game (its start is not recorded yet:
        call :meth:`started` once it counts).

        Without ``rng`` the match gets a generator of its own, seeded from
        :mod:`secrets`, and its seed goes into ``extra`` (and so into the
        start event), so that the match can be replayed; a caller giving
        ``rng`` puts its seed into ``extra["seed"]`` itself.
        """
        extra = dict(extra or {})
        if rng is None:
            seed = extra.setdefault("seed", secrets.randbits(64))
            rng = random.Random(seed)
        game = factory.new_game(len(seats), rng)
        return cls(secrets.token_hex(12), factory.name, factory, game, source, list(seats),
                   recorder, ranked, now, now, extra=extra)

    @property
    def finished(self) -> bool:
        return self.aborted_by is not None or self.game.is_over()

    # checks and changes (no events)

    def check_turn(self, seat: int) -> None:
        """Raise MatchOver or NotYourTurn unless ``seat`` may move now."""
        if self.finished:
            raise MatchOver(self.id)
        if seat not in self.game.current():
            raise NotYourTurn()

    def check_arguments(self, seat: int, arguments: dict[str, Any]) -> None:
        """Raise IllegalMove unless the game's ``move`` takes these arguments."""
        if move_keywords(type(self.game)).accepts(arguments):
            return
        try:  # binding finds the reason (and decides the unusual signatures)
            move_signature(type(self.game)).bind(self.game, seat, **arguments)
        except TypeError as error:
            raise IllegalMove(f"bad move arguments: {error}") from None

    def apply(self, seat: int, arguments: dict[str, Any], now: float) -> None:
        """Check and play one move on the rules; :meth:`moved` records it.

        Raises MatchOver, NotYourTurn or IllegalMove (the match unchanged);
        anything else the game raises propagates.
        """
        self.check_turn(seat)
        self.play(seat, arguments, now)

    def play(self, seat: int, arguments: dict[str, Any], now: float) -> None:
        """:meth:`apply` for a seat that passed :meth:`check_turn` just now."""
        self.check_arguments(seat, arguments)
        self.game.move(seat, **arguments)
        self.updated = now

    def abort(self, by_seat: int | None, now: float) -> None:
        """End the match early; ``by_seat`` is who ended it (None: the server).
        Raises MatchOver when it is over already; :meth:`ended` records it."""
        if self.finished:
            raise MatchOver(self.id)
        self.aborted_by = -1 if by_seat is None else by_seat
        self.updated = now

    def snapshot(self) -> Snapshot:
        """The match as it is now, to :meth:`rollback` a change that must not count."""
        # Serialised, because to_data() may share the game's own lists.
        return Snapshot(json.dumps(self.game.to_data()), self.updated, self.aborted_by,
                        dict(self.extra))

    def rollback(self, snapshot: Snapshot) -> None:
        """Undo every change since ``snapshot`` (the game becomes a new object)."""
        self.game = self.factory.restore(json.loads(snapshot.game))
        self.updated = snapshot.updated
        self.aborted_by = snapshot.aborted_by
        self.extra = dict(snapshot.extra)

    def stored_state(self) -> str:
        """The state kept in the store (the game, the abort, ``extra``) as JSON."""
        return json.dumps({"game": self.game.to_data(), "aborted_by": self.aborted_by,
                           "extra": self.extra})

    def view(self, now: float) -> dict[str, Any]:
        """The match as plain data for the operator (the web monitor)."""
        try:
            turn = [] if self.finished else list(self.game.current())
        except Exception:  # a game's bug must not hide the other matches
            turn = []
        return {"id": self.id, "game": self.game_name, "source": self.source,
                "players": [seat.name for seat in self.seats],
                "turn": [self.seats[seat].name for seat in turn if 0 <= seat < len(self.seats)],
                "moves": self.moves, "ranked": self.ranked, "finished": self.finished,
                "age": now - self.created,
                "last_move_age": (now - self.updated) if self.moves else None}

    # events

    def started(self) -> None:
        """Record the start of the match, with the game's parameters (the
        settings of its factory) and, in ``extra``, its seed."""
        metrics.MATCHES_STARTED(self.source, self.game_name)
        self.recorder.record(self.source, "match_start", match=self.id,
                             data={"game": self.game_name,
                                   "players": [seat.name for seat in self.seats],
                                   "ranked": self.ranked,
                                   "parameters": encode_parameters(
                                       getattr(self.factory, "settings", {})),
                                   **self.extra})

    def moved(self, seat: int, arguments: dict[str, Any], address: str | None = None,
              details: dict[str, Any] | None = None) -> None:
        """Record an applied move (and the end of the match it may have ended)."""
        self.moves += 1
        metrics.MOVES(self.source, self.game_name)
        self.recorder.record(self.source, "move", user=self.seats[seat].name,
                             match=self.id, address=address,
                             data={"seat": seat, "move": arguments, **(details or {}),
                                   "state_hash": state_hash(self.game),
                                   "refusals_before": self.refusals_since_move})
        self.refusals_since_move = 0
        self.turn_sent_to.discard(seat)
        if self.finished:
            self.ended()

    def refused(self, seat: int, arguments: dict[str, Any], refusal: IllegalMove,
                address: str | None = None, details: dict[str, Any] | None = None) -> None:
        """Record a move the game refused (the match is unchanged by it)."""
        self.recorder.record(self.source, "move_refused", user=self.seats[seat].name,
                             match=self.id, address=address,
                             data={"seat": seat, "move": arguments, **(details or {}),
                                   "message": loggable(refusal.message),
                                   "state_hash": state_hash(self.game)})
        self.refusals_since_move += 1

    def sent(self, seat: int) -> None:
        """``seat`` was sent the match's state: if it is to move and was not
        told so since its last move, record ``turn_sent`` (the moment it
        could first know it is its turn; the export's decision times start
        there)."""
        if self.finished or seat in self.turn_sent_to:
            return
        try:
            to_move = seat in self.game.current()
        except Exception:  # a game's bug must not stop the delivery
            return
        if to_move:
            self.turn_sent_to.add(seat)
            self.recorder.record(self.source, TURN_SENT, user=self.seats[seat].name,
                                 match=self.id, data={"seat": seat})

    def ended(self) -> None:
        """Record the end of the match."""
        metrics.MATCHES_FINISHED(self.source, self.game_name,
                                 "over" if self.aborted_by is None else "aborted")
        # How it ended and whether that forfeits, where the listener said so.
        told = {key: self.extra[key] for key in ("end", "forfeit") if key in self.extra}
        self.recorder.record(self.source, "match_end", match=self.id,
                             data={"outcome": self.game.outcome(),
                                   "aborted_by": self.aborted_by,
                                   "refusals_before": self.refusals_since_move, **told})

    # both at once, for matches kept in memory only

    def move(self, seat: int, arguments: dict[str, Any], now: float,
             address: str | None = None, details: dict[str, Any] | None = None) -> None:
        """:meth:`apply` a move and record it with ``details``."""
        self.apply(seat, arguments, now)
        self.moved(seat, arguments, address, details)

    def end(self, by_seat: int | None, now: float) -> None:
        """End the match if it is still open, and record its end."""
        if not self.finished:
            self.abort(by_seat, now)
            self.ended()


# Built once: json.dumps with options would build an encoder for every move.
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def state_hash(game: Any) -> str:
    """The sha256 (hex) of the canonical JSON of ``game.to_data()``: sorted
    keys, no spaces, ASCII only, so that a replay can compare every state."""
    return hashlib.sha256(_canonical(game.to_data()).encode("ascii")).hexdigest()


def loggable(message: Any) -> Any:
    """A refusal's message as the log can hold it: as it is if JSON can
    carry it, else its text."""
    try:
        json.dumps(message)
    except (TypeError, ValueError):
        return str(message)
    return message


#: The key of a mapping with keys that are not strings, in :func:`encode_parameters`.
PAIRS = "$pairs"


def encode_parameters(value: Any) -> Any:
    """A game's settings as JSON: tuples become lists, and a mapping with keys
    that are not all strings (a payoff matrix keyed by pairs of choices)
    becomes ``{"$pairs": [[key, value], ...]}``. :func:`decode_parameters`
    undoes it."""
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value) and PAIRS not in value:
            return {key: encode_parameters(item) for key, item in value.items()}
        return {PAIRS: [[encode_parameters(key), encode_parameters(item)]
                        for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        return [encode_parameters(item) for item in value]
    return value


def decode_parameters(value: Any) -> Any:
    """The settings that :func:`encode_parameters` encoded (lists in a key's
    place become tuples, so that they can be keys again)."""
    if isinstance(value, dict):
        if set(value) == {PAIRS}:
            return {_as_key(decode_parameters(key)): decode_parameters(item)
                    for key, item in value[PAIRS]}
        return {key: decode_parameters(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_parameters(item) for item in value]
    return value


def _as_key(value: Any) -> Any:
    return tuple(_as_key(item) for item in value) if isinstance(value, list) else value
