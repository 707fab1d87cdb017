"""``gtserver-replay``: rebuild matches from the research event log and check them.

For each match it reads the log alone, in id order and in pages, through the
store layer: the ``match_start`` event's ``seed`` and ``parameters`` give a
fresh game from the installed game factory (configured with those
parameters, drawing from ``random.Random(seed)``); every ``move`` and
``move_refused`` event is played on it again, in order. The replay checks
that every refused move is refused again with the same message, every
accepted move is accepted, the state after each (``state_hash``) is the
logged one, and the outcome at ``match_end`` is the game's. It prints a
summary and exits 1 at the first divergence (match, event id, what
differed), 2 for bad usage. See docs/replay.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from gtserver.core.matches import Match, Seat, decode_parameters, loggable, state_hash
from gtserver.export import database_problem
from gtserver.games import IllegalMove
from gtserver.store import events as queries
from gtserver.store import open_store

PAGE = 10000
#: The events a replay reads.
KINDS = ("match_start", "move", "move_refused", "match_end")


class Divergence(Exception):
    """The log and its replay differ."""

    def __init__(self, match: str, event_id: int, what: str) -> None:
        super().__init__(f"match {match}, event {event_id}: {what}")
        self.match, self.event_id, self.what = match, event_id, what


class NullRecorder:
    """Replayed matches record nothing."""

    def record(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class Summary:
    matches: int = 0
    finished: int = 0
    moves: int = 0
    refusals: int = 0
    skipped: int = 0

    def text(self) -> str:
        return (f"{self.matches} matches checked ({self.finished} finished), "
                f"{self.moves} moves, {self.refusals} refusals"
                + (f", {self.skipped} matches of other games skipped" if self.skipped else ""))


@dataclass
class Replayer:
    """Replays the events of a log, one after another (any matches interleaved)."""

    games: Mapping[str, Any]
    only_game: str | None = None
    summary: Summary = field(default_factory=Summary)
    #: Matches being replayed, by id (dropped at their end).
    live: dict[str, Match] = field(default_factory=dict)
    #: Matches not replayed (another game than --game) or already ended.
    skipped: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    #: Per live match: the run of its last event, and the refusals read since
    #: its last move in that run (the daemon counts them per process).
    refusals: dict[str, list] = field(default_factory=dict)

    def event(self, event_id: int, kind: str, match_id: str | None, data: Any,
              run: int | None = None) -> None:
        if match_id is None:
            return
        if kind == "match_start":
            self.start(event_id, match_id, data)
            if match_id in self.live:
                self.refusals[match_id] = [run, 0]
            return
        if match_id in self.skipped:
            return
        match = self.live.get(match_id)
        if match is None:
            if match_id in self.ended:
                raise Divergence(match_id, event_id, f"{kind} after the match ended")
            if self.only_game is not None:
                return  # a match started before what was read: not one to check
            raise Divergence(match_id, event_id, f"{kind} of a match without match_start")
        counted = self.refusals[match_id]
        if counted[0] != run:      # a new daemon process counts afresh
            counted[:] = [run, 0]
        if kind == "move":
            self.move(event_id, match, data)
        elif kind == "move_refused":
            self.refusal(event_id, match, data)
        elif kind == "match_end":
            self.end(event_id, match, data)

    def start(self, event_id: int, match_id: str, data: Any) -> None:
        game_name = data.get("game")
        if self.only_game is not None and game_name != self.only_game:
            self.skipped.add(match_id)
            self.summary.skipped += 1
            return
        if match_id in self.live or match_id in self.ended:
            raise Divergence(match_id, event_id, "a second match_start")
        factory = self.games.get(game_name)
        if factory is None:
            raise Divergence(match_id, event_id, f"no installed game {game_name!r}")
        if "seed" not in data:
            raise Divergence(match_id, event_id, "match_start holds no seed")
        seed = data["seed"]
        try:
            parameters = decode_parameters(data.get("parameters") or {})
            if parameters:
                factory = factory.configured(**parameters)
            players = data["players"]
            game = factory.new_game(len(players), random.Random(seed))
        except Exception as error:
            raise Divergence(match_id, event_id,
                             f"cannot start {game_name} from the logged seed and "
                             f"parameters: {error}") from None
        self.live[match_id] = Match(match_id, game_name, factory, game, "replay",
                                    [Seat(str(name)) for name in players], NullRecorder())
        self.summary.matches += 1

    def move(self, event_id: int, match: Match, data: Any) -> None:
        seat, arguments = self._seat_and_arguments(event_id, match, data)
        try:
            match.apply(seat, arguments, 0.0)
        except IllegalMove as refusal:
            raise Divergence(match.id, event_id, f"logged as accepted, refused on replay: "
                                                 f"{refusal.message!r}") from None
        except Exception as error:
            raise Divergence(match.id, event_id, f"logged as accepted, refused on replay: "
                                                 f"{error}") from None
        match.moves += 1
        self.summary.moves += 1
        self._check_state(event_id, match, data)
        self._check_refusals(event_id, match, data, "move")

    def refusal(self, event_id: int, match: Match, data: Any) -> None:
        seat, arguments = self._seat_and_arguments(event_id, match, data)
        try:
            match.apply(seat, arguments, 0.0)
        except IllegalMove as refusal:
            message = _plain(loggable(refusal.message))
            if message != data.get("message"):
                raise Divergence(match.id, event_id,
                                 f"refused with {message!r} on replay, logged "
                                 f"{data.get('message')!r}") from None
        except Exception as error:
            raise Divergence(match.id, event_id,
                             f"logged refusal {data.get('message')!r}, on replay: "
                             f"{error}") from None
        else:
            raise Divergence(match.id, event_id, f"logged as refused "
                                                 f"({data.get('message')!r}), accepted on replay")
        self.summary.refusals += 1
        self.refusals[match.id][1] += 1
        self._check_state(event_id, match, data)

    def end(self, event_id: int, match: Match, data: Any) -> None:
        aborted_by = data.get("aborted_by")
        if aborted_by is None and not match.game.is_over():
            raise Divergence(match.id, event_id,
                             "the log ends the game, the replayed game is not over")
        if aborted_by is not None and match.game.is_over():
            raise Divergence(match.id, event_id, "the log ends the match early, the "
                                                 "replayed game was over already")
        outcome = _plain(match.game.outcome())
        if outcome != data.get("outcome"):
            raise Divergence(match.id, event_id, f"outcome {data.get('outcome')!r} logged, "
                                                 f"{outcome!r} on replay")
        self._check_refusals(event_id, match, data, "end")
        del self.live[match.id]
        del self.refusals[match.id]
        self.ended.add(match.id)
        self.summary.finished += 1

    @staticmethod
    def _seat_and_arguments(event_id: int, match: Match, data: Any) -> tuple[int, dict]:
        seat, arguments = data.get("seat"), data.get("move")
        if not isinstance(seat, int) or not 0 <= seat < len(match.seats) \
                or not isinstance(arguments, dict):
            raise Divergence(match.id, event_id, "the event holds no valid seat and move")
        return seat, arguments

    def _check_refusals(self, event_id: int, match: Match, data: Any, what: str) -> None:
        """The refusals the daemon counted before this move or end are the ones
        read (a deleted or added ``move_refused`` shows here)."""
        logged, read = data.get("refusals_before"), self.refusals[match.id][1]
        if logged != read:
            raise Divergence(match.id, event_id,
                             f"{logged} refusals recorded before this {what}, {read} "
                             f"move_refused events in the log")
        self.refusals[match.id][1] = 0

    @staticmethod
    def _check_state(event_id: int, match: Match, data: Any) -> None:
        logged = data.get("state_hash")
        if logged is None:
            raise Divergence(match.id, event_id, "the event holds no state_hash")
        replayed = state_hash(match.game)
        if replayed != logged:
            raise Divergence(match.id, event_id,
                             f"state hash {logged} logged, {replayed} on replay")


def _plain(value: Any) -> Any:
    """``value`` as the log holds it (through JSON: tuples become lists)."""
    return json.loads(json.dumps(value))


def installed_games() -> dict[str, Any]:
    """The installed game factories by the name a match records (the factory's)."""
    from gtserver.registry import games
    return {getattr(factory, "name", name): factory for name, factory in games().items()}


async def replay(reactor: Any, options: argparse.Namespace,
                 games: Mapping[str, Any] | None = None) -> Summary:
    """Replay the matches the options choose; raises :class:`Divergence`."""
    replayer = Replayer(installed_games() if games is None else games, options.game)
    store = open_store(options.db, reactor)
    await store.start()
    try:
        after = 0
        while True:
            rows = await store.run(queries.select_event_page, after, PAGE, kinds=KINDS,
                                   match_ids=tuple(options.match), with_run=True)
            for (event_id, _time, _source, kind, _user, _room, match_id, _address, data,
                 run) in rows:
                try:
                    decoded = json.loads(data) if data else {}
                except ValueError:
                    raise Divergence(match_id, event_id, "the event's data is not JSON") \
                        from None
                if not isinstance(decoded, dict):
                    raise Divergence(match_id, event_id, "the event's data is not an object")
                replayer.event(event_id, kind, match_id, decoded, run)
            if len(rows) < PAGE:
                break
            after = rows[-1][0]
    finally:
        await store.close()
    missing = [match for match in options.match
               if match not in replayer.live and match not in replayer.ended]
    if missing:
        raise Divergence(missing[0], 0, "no such match in the log")
    return replayer.summary


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gtserver-replay",
        description="Rebuild matches from gtserver's research event log and check that "
                    "every move, refusal, state and outcome comes out the same.")
    database = parser.add_mutually_exclusive_group()
    database.add_argument("--db", default="sqlite:gtserver.sqlite",
                          help="database URL, as for the daemon (default: %(default)s)")
    database.add_argument("--db-file", metavar="PATH",
                          help="file holding the database URL, as for the daemon")
    chosen = parser.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--match", action="append", default=[], metavar="ID",
                        help="replay this match (repeatable)")
    chosen.add_argument("--all", action="store_true", help="replay every match")
    chosen.add_argument("--game", metavar="G", help="replay every match of game G")
    return parser


def run(argv: Sequence[str], reactor: Any, output: TextIO, errors: TextIO) -> Any:
    """Parse ``argv``, replay; a Deferred firing with the exit status."""
    from twisted.internet.defer import ensureDeferred, succeed

    options = argument_parser().parse_args(list(argv))
    problem = database_problem(options)
    if problem:
        print(f"gtserver-replay: {problem}", file=errors)
        return succeed(2)

    async def checked() -> int:
        try:
            summary = await replay(reactor, options)
        except Divergence as divergence:
            print(f"gtserver-replay: divergence in match {divergence.match} at event "
                  f"{divergence.event_id}: {divergence.what}", file=errors)
            return 1
        print(f"gtserver-replay: {summary.text()}: no divergence", file=output)
        return 0

    return ensureDeferred(checked())


def main(argv: Sequence[str] | None = None) -> None:
    from twisted.internet import task

    arguments = list(sys.argv[1:] if argv is None else argv)
    status: list[int] = []

    def go(reactor: Any) -> Any:
        return run(arguments, reactor, sys.stdout, sys.stderr).addCallback(status.append)

    try:
        task.react(go)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
    raise SystemExit(status[0] if status else 1)


if __name__ == "__main__":
    main()
