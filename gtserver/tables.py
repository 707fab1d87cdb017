"""The tidy tables of ``gtserver-export --table``: rows derived from the event log.

Each table is a :class:`Table`: its columns (name, type, unit, meaning) and a
*deriver* that is fed the log's events one at a time, in id order, and yields
the table's rows as dicts as soon as they are known. Derivers keep state per
match (the game, the start, the last accepted move, the match row until the
export ends), never per event, so memory grows with the number of matches, not
with the length of the log. The ``moves`` table's argument columns
(``arg_NAME``) depend on the games in the log: :func:`argument_columns` finds
them in a first pass. docs/export.md describes every table.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from gtserver.core.matches import TURN_SENT

#: An event as the export reads it (the store's page row, by name).
Event = dict[str, Any]

#: Game sources whose matches have turns (decision times are derived for them).
TURN_SOURCES = ("uttt", "eot")
CHAT_KINDS = ("msg", "button")
POSE_KINDS = ("transform",)
PRESENCE_KINDS = ("login", "logout", "login_failed", "login_throttled", "reconnect", "join",
                  "leave", "join_table", "observe")
MATCH_KINDS = ("match_start", "move", "move_refused", "match_end", "rating_change",
               "operator_end_match")
MOVE_KINDS = ("match_start", "move", "move_refused", "turn_sent")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Column:
    name: str
    type: str          # "int", "float", "str", "bool", "json" (JSON text)
    unit: str
    meaning: str


@dataclass
class Table:
    name: str
    meaning: str
    kinds: tuple[str, ...] | None       # the event kinds it reads (None: every event)
    columns: list[Column]
    #: Given the output columns, a new deriver for one export.
    derive: Callable[[list[Column]], Deriver]
    notes: list[str] = field(default_factory=list)


class Deriver:
    """Turns events, fed one at a time in id order, into rows."""

    def __init__(self, columns: list[Column]) -> None:
        self.columns = columns

    def feed(self, event: Event) -> Iterable[dict]:
        """The rows this event completes."""
        raise NotImplementedError

    def finish(self) -> Iterable[dict]:
        """The rows still held once the log is read."""
        return ()


class PerEvent(Deriver):
    """One row per event, by ``row``."""

    def __init__(self, columns: list[Column], row: Callable[[Event], dict]) -> None:
        super().__init__(columns)
        self.row = row

    def feed(self, event: Event) -> Iterable[dict]:
        return (self.row(event),)


def per_event(row: Callable[[Event], dict]) -> Callable[[list[Column]], Deriver]:
    return lambda columns: PerEvent(columns, row)


def _time_columns(what: str) -> list[Column]:
    return [Column("time", "str", "ISO 8601, UTC", f"{what} (server clock)"),
            Column("epoch", "float", "seconds since 1970-01-01 UTC", "the same instant")]


RUN = Column("run", "int", "", "id of the daemon run that recorded the event "
             "(the provenance file's runs); empty before runs were recorded")
ADDRESS = Column("address", "str", "host:port",
                 "the client's address (dropped with --pseudonymize)")


def decode_data(text: str | None) -> Any:
    """An event's data column as a value (text that is not JSON as itself)."""
    if text is None or text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _base(event: Event) -> dict[str, Any]:
    return {"time": iso(event["time"]), "epoch": float(event["time"])}


# events

def event_row(event: Event) -> dict:
    return {"id": event["id"], **_base(event), "source": event["source"],
            "type": event["kind"], "user": event["user"], "room": event["room"],
            "match": event["match"], "address": event.get("address"),
            "data": event["data"], "run": event["run"]}


# moves

@dataclass
class _MatchClock:
    game: str | None = None
    started: float | None = None
    last_accepted: float | None = None
    accepted: int = 0
    #: When each seat was first sent a state in which it is to move, since
    #: its last accepted move (``turn_sent`` events).
    told: dict = field(default_factory=dict)


def argument_columns(arguments: Iterable[dict]) -> list[Column]:
    """One ``arg_NAME`` column per move argument seen, typed by its values:
    ``int``/``float``/``bool``/``str`` when every value is of that kind
    (ints and floats: ``float``), ``str`` for other mixed scalars (``1`` and
    ``"1"`` both ``"1"``), ``json`` (JSON text) when any is nested."""
    kinds: dict[str, set[str]] = {}
    for move in arguments:
        if not isinstance(move, dict):
            continue
        for name, value in move.items():
            kinds.setdefault(name, set()).add(scalar_kind(value))
    columns = []
    for name in sorted(kinds):
        seen = kinds[name] - {"none"}
        if seen == {"int", "float"}:
            seen = {"float"}
        if len(seen) == 1:
            kind = seen.pop()
        else:   # mixed scalars as text (1 and "1" both "1"), else JSON
            kind = "json" if "json" in seen else "str"
        note = {"json": " (JSON text)", "str": " (numbers as their JSON text where mixed "
                "with text)"}.get(kind, "")
        columns.append(Column(f"arg_{name}", kind, "", f"the move's argument {name!r}{note}"))
    return columns


def scalar_kind(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


def refusal_text(data: Any) -> str | None:
    """The message of a ``move_refused`` event's data."""
    if not isinstance(data, dict):
        return None if data is None else str(data)
    for key in ("message", "error", "reason", "refusal"):
        if data.get(key) is not None:
            return str(data[key])
    return None


class MoveDeriver(Deriver):
    def __init__(self, columns: list[Column]) -> None:
        super().__init__(columns)
        self.clocks: dict[str, _MatchClock] = {}
        self.arguments = {c.name[len("arg_"):]: c for c in columns
                          if c.name.startswith("arg_")}

    def feed(self, event: Event) -> Iterable[dict]:
        match = event["match"]
        if match is None:
            return ()
        clock = self.clocks.setdefault(match, _MatchClock())
        data = decode_data(event["data"])
        data = data if isinstance(data, dict) else {}
        if event["kind"] == "match_start":
            clock.game, clock.started = data.get("game"), event["time"]
            return ()
        seat = data.get("seat", data.get("player"))
        if event["kind"] == TURN_SENT:
            clock.told.setdefault(seat, event["time"])
            return ()
        accepted = event["kind"] == "move"
        arguments = data.get("move")
        arguments = arguments if isinstance(arguments, dict) else {}
        decision, measured_from = self.decision(clock, seat, event)
        row = {"match": match, "game": clock.game or data.get("game"),
               "source": event["source"], "move_number": clock.accepted + 1,
               "seat": data.get("seat", data.get("player")), "user": event["user"],
               "accepted": accepted, "refusal": None if accepted else refusal_text(data),
               **_base(event), "decision_seconds": decision, "decision_from": measured_from,
               "address": event.get("address"),
               "move": json.dumps(arguments, sort_keys=True), "run": event["run"]}
        for name, column in self.arguments.items():
            value = arguments.get(name)
            if value is not None and column.type == "json":
                value = json.dumps(value, sort_keys=True)
            elif value is not None and column.type == "float":
                value = float(value)
            elif value is not None and column.type == "str" and not isinstance(value, str):
                value = json.dumps(value)
            row[column.name] = value
        if accepted:
            clock.accepted += 1
            clock.last_accepted = event["time"]
            clock.told.pop(seat, None)
        return (row,)

    @staticmethod
    def decision(clock: _MatchClock, seat: Any, event: Event) -> tuple[float | None, str | None]:
        """Seconds from the state that told the mover it was its turn (else,
        in logs without ``turn_sent``, from the previous accepted move or the
        start) to the move, and which of those it was measured from."""
        if event["source"] not in TURN_SOURCES:
            return None, None
        if seat in clock.told:
            return event["time"] - clock.told[seat], TURN_SENT
        if clock.last_accepted is not None:
            return event["time"] - clock.last_accepted, "move"
        if clock.started is not None:
            return event["time"] - clock.started, "match_start"
        return None, None


# matches

def end_kind(end: dict[str, Any] | None, by_operator: bool) -> str:
    """How a match ended, from its ``match_end`` data (docs/export.md)."""
    if end is None:
        return "open"
    if by_operator:
        return "operator"
    how = end.get("end")
    if how in ("expired", "player expired"):
        return "expired"
    aborted_by = end.get("aborted_by")
    if aborted_by is not None:
        if aborted_by == -1:
            return "server"
        return "forfeit" if end.get("forfeit", True) else "aborted"
    outcome = end.get("outcome")
    if not isinstance(outcome, list) or not outcome:
        return "over"
    if len(set(outcome)) == 1:
        return "draw"
    return "win" if max(outcome) == 1.0 and outcome.count(1.0) == 1 else "scored"


START_FIELDS = ("game", "players", "ranked")


class MatchDeriver(Deriver):
    """Matches in order of their start; every row once the log is read
    (rating changes follow a match's end)."""

    def __init__(self, columns: list[Column]) -> None:
        super().__init__(columns)
        self.rows: dict[str, dict[str, Any]] = {}
        self.operator_ended: set[str] = set()

    def feed(self, event: Event) -> Iterable[dict]:
        match, kind = event["match"], event["kind"]
        if match is None:
            return ()
        data = decode_data(event["data"])
        data = data if isinstance(data, dict) else {}
        if kind == "operator_end_match":
            self.operator_ended.add(match)
            return ()
        row = self.rows.get(match)
        if row is None:
            row = self.rows[match] = {
                "match": match, "source": event["source"], "game": None, "ranked": None,
                "parameters": None, "players": [], "start": None, "end": None, "moves": 0,
                "refused_moves": 0, "end_data": None, "ratings": {}, "run": event["run"]}
        if kind == "match_start":
            row.update(game=data.get("game"), ranked=data.get("ranked"),
                       players=list(data.get("players") or []), start=event["time"],
                       parameters={k: v for k, v in data.items() if k not in START_FIELDS})
        elif kind == "move":
            row["moves"] += 1
            row["game"] = row["game"] or data.get("game")
        elif kind == "move_refused":
            row["refused_moves"] += 1
        elif kind == "match_end":
            row.update(end=event["time"], end_data=data,
                       operator=match in self.operator_ended)
        elif kind == "rating_change":
            row["ratings"][event["user"]] = data
        return ()

    def finish(self) -> Iterable[dict]:
        wanted = {c.name for c in self.columns}
        return (_match_row(row, wanted) for row in self.rows.values())


def _match_row(row: dict[str, Any], wanted: set[str]) -> dict[str, Any]:
    end = row["end_data"]
    outcome = end.get("outcome") if end else None
    result = {"match": row["match"], "game": row["game"], "source": row["source"],
              "ranked": row["ranked"],
              "parameters": None if row["parameters"] is None
              else json.dumps(row["parameters"], sort_keys=True),
              "players": json.dumps(row["players"]),
              "start_time": None if row["start"] is None else iso(row["start"]),
              "start_epoch": row["start"],
              "end_time": None if row["end"] is None else iso(row["end"]),
              "end_epoch": row["end"],
              "duration_seconds": (row["end"] - row["start"])
              if row["end"] is not None and row["start"] is not None else None,
              "moves": row["moves"], "refused_moves": row["refused_moves"],
              "ended": end_kind(end, row.get("operator", False)),
              "aborted_by": end.get("aborted_by") if end else None,
              "outcome": None if outcome is None else json.dumps(outcome),
              "run": row["run"]}
    seat = 0
    while f"player_{seat}" in wanted:
        name = row["players"][seat] if seat < len(row["players"]) else None
        change = row["ratings"].get(name) if name is not None else None
        score = outcome[seat] if isinstance(outcome, list) and seat < len(outcome) else None
        result.update({f"player_{seat}": name,
                       f"outcome_{seat}": None if score is None else float(score),
                       f"rating_before_{seat}": change.get("old") if change else None,
                       f"rating_after_{seat}": change.get("new") if change else None})
        seat += 1
    return result


def seat_columns(seats: int) -> list[Column]:
    columns = []
    for seat in range(seats):
        columns += [
            Column(f"player_{seat}", "str", "", f"the user in seat {seat} (0 moves first "
                   "where the game has an order)"),
            Column(f"outcome_{seat}", "float", "score", f"seat {seat}'s score from the game's "
                   "outcome: 1 win, 0.5 draw, 0 loss (a game's own payoff otherwise)"),
            Column(f"rating_before_{seat}", "int", "ELO", f"seat {seat}'s rating before the "
                   "match (rated matches of registered users only)"),
            Column(f"rating_after_{seat}", "int", "ELO", f"seat {seat}'s rating after it")]
    return columns


# chat, poses, presence

def chat_row(event: Event) -> dict:
    text = decode_data(event["data"])
    return {"id": event["id"], **_base(event), "room": event["room"],
            "user": event["user"], "type": event["kind"],
            "text": text if isinstance(text, str) else json.dumps(text),
            "address": event.get("address"), "run": event["run"]}


def pose_row(event: Event) -> dict:
    pose = decode_data(event["data"])
    pose = pose if isinstance(pose, dict) else {}
    row = {"id": event["id"], **_base(event), "room": event["room"], "user": event["user"]}
    for prefix, key in (("", "pos"), ("r", "rot")):
        part = pose.get(key) if isinstance(pose.get(key), dict) else {}
        for axis in "xyz":
            value = part.get(axis)
            row[prefix + axis] = (float(value) if isinstance(value, (int, float))
                                  and not isinstance(value, bool) else None)
    row.update(address=event.get("address"), run=event["run"])
    return row


def presence_row(event: Event) -> dict:
    data = decode_data(event["data"])
    data = data if isinstance(data, dict) else {}
    return {"id": event["id"], **_base(event), "source": event["source"],
            "type": event["kind"], "user": event["user"], "room": event["room"],
            "match": event["match"], "reason": data.get("reason") or data.get("budget"),
            "session_seconds": data.get("seconds"),
            "data": event["data"], "address": event.get("address"), "run": event["run"]}


TABLES: dict[str, Table] = {
    "events": Table(
        "events", "every event of the log, one row each, as recorded", None,
        [Column("id", "int", "", "increasing with the order events were recorded"),
         *_time_columns("when the event was recorded"),
         Column("source", "str", "", "vr, uttt, eot or web (the listener or the monitor)"),
         Column("type", "str", "", "the event kind (see event kinds)"),
         Column("user", "str", "", "the user it concerns"),
         Column("room", "str", "", "the VR room"), Column("match", "str", "", "the match id"),
         ADDRESS, Column("data", "json", "", "the event's data as JSON text"), RUN],
        per_event(event_row)),
    "moves": Table(
        "moves", "one row per move of any game on any protocol, accepted or refused",
        MOVE_KINDS,
        [Column("match", "str", "", "the match id"), Column("game", "str", "", "the game"),
         Column("source", "str", "", "the protocol: uttt or eot"),
         Column("move_number", "int", "count", "1 for the match's first accepted move; a "
                "refused move has the number the move would have had"),
         Column("seat", "int", "", "the mover's seat (EOT: player id)"),
         Column("user", "str", "", "the mover"),
         Column("accepted", "bool", "", "true for an applied move, false for a refused one"),
         Column("refusal", "str", "", "why a refused move was refused (the server's message)"),
         *_time_columns("when the server received the move"),
         Column("decision_seconds", "float", "seconds",
                "uttt and EOT: time from the moment the server sent the mover the state in "
                "which it was to move (the first since its previous move) to this move's "
                "arrival at the server; see decision_from"),
         Column("decision_from", "str", "",
                "what decision_seconds is measured from: turn_sent (the state that told "
                "the mover), else, for logs without turn_sent events, move (the match's "
                "previous accepted move: an upper bound) or match_start"),
         ADDRESS, Column("move", "json", "", "the move's arguments as one JSON object"), RUN],
        MoveDeriver,
        ["Then one `arg_NAME` column per argument of any move in the export, typed by its "
         "values (JSON text where nested or mixed); empty where a move has no such "
         "argument."]),
    "matches": Table(
        "matches", "one row per match, in the order the matches started", MATCH_KINDS,
        [Column("match", "str", "", "the match id"), Column("game", "str", "", "the game"),
         Column("source", "str", "", "the protocol: uttt or eot"),
         Column("ranked", "bool", "", "whether the match was rated"),
         Column("parameters", "json", "", "the game's parameters as recorded at the start "
                "(match_start data other than game, players, ranked; empty object if none)"),
         Column("players", "json", "", "the users by seat, as a JSON list"),
         Column("start_time", "str", "ISO 8601, UTC", "when the match started"),
         Column("start_epoch", "float", "seconds since 1970-01-01 UTC", "the same"),
         Column("end_time", "str", "ISO 8601, UTC", "when it ended (empty: still open)"),
         Column("end_epoch", "float", "seconds since 1970-01-01 UTC", "the same"),
         Column("duration_seconds", "float", "seconds", "end minus start"),
         Column("moves", "int", "count", "accepted moves"),
         Column("refused_moves", "int", "count", "refused moves (move_refused events)"),
         Column("ended", "str", "", "how it ended: win, draw, scored (another outcome), over "
                "(no outcome), forfeit (a player ended it or left), aborted (ended without "
                "a loss), expired (idle too long), server (ended by the server, e.g. an EOT "
                "table closed), operator (ended from the web monitor), open (no end logged)"),
         Column("aborted_by", "int", "", "the seat that ended it early, -1 the server"),
         Column("outcome", "json", "", "the game's outcome, one score per seat (JSON list)"),
         RUN],
        MatchDeriver,
        ["Then per seat N (as many as the largest match): `player_N`, `outcome_N`, "
         "`rating_before_N`, `rating_after_N`."]),
    "chat": Table(
        "chat", "VR chat lines (msg) and buttons, one row each", CHAT_KINDS,
        [Column("id", "int", "", "the event id"), *_time_columns("when the server received it"),
         Column("room", "str", "", "the VR room"), Column("user", "str", "", "the sender"),
         Column("type", "str", "", "msg (a chat line) or button"),
         Column("text", "str", "", "the line or the button's value, as sent (kept by "
                "--pseudonymize)"), ADDRESS, RUN],
        per_event(chat_row)),
    "poses": Table(
        "poses", "one row per recorded VR pose (at the pose log rate)", POSE_KINDS,
        [Column("id", "int", "", "the event id"), *_time_columns("when the server received it"),
         Column("room", "str", "", "the VR room"), Column("user", "str", "", "the member"),
         *[Column(axis, "float", "scene units", f"position {axis}") for axis in "xyz"],
         *[Column("r" + axis, "float", "as sent (the client's rotation units)",
                  f"rotation about {axis}") for axis in "xyz"],
         ADDRESS, RUN],
        per_event(pose_row)),
    "presence": Table(
        "presence", "logins, logouts, failed and throttled logins, reconnects, VR room "
        "joins and leaves, EOT table joins and observes: the dropout record",
        PRESENCE_KINDS,
        [Column("id", "int", "", "the event id"), *_time_columns("when it happened"),
         Column("source", "str", "", "the listener: vr, uttt, eot"),
         Column("type", "str", "", "login, logout, login_failed, login_throttled, "
                "reconnect, join, leave, join_table, observe"),
         Column("user", "str", "", "the user (for failures: the name tried)"),
         Column("room", "str", "", "the VR room joined or left"),
         Column("match", "str", "", "the match observed"),
         Column("reason", "str", "", "login_failed: the reason; login_throttled: the budget"),
         Column("session_seconds", "float", "seconds", "logout: how long the connection "
                "was logged in"),
         Column("data", "json", "", "the event's data (docs/export.md, Presence events)"),
         ADDRESS, RUN],
        per_event(presence_row)),
}

EVENT_KINDS = {
    "login": "a login (vr, uttt)", "logout": "a logged-in connection ended",
    "login_failed": "a refused login", "login_throttled": "a login refused by throttling",
    "reconnect": "a uttt session resumed", "join": "a VR room joined",
    "leave": "a VR room left", "join_table": "an EOT join", "observe": "an EOT observe",
    "msg": "a VR chat line", "button": "a VR button", "transform": "a VR pose",
    "tick": "a logged VR tick", "match_start": "a match started (game, players, parameters)",
    "move": "an accepted move", "move_refused": "a refused move",
    TURN_SENT: "a player was sent a state in which it is to move (uttt, eot)",
    "match_end": "a match ended (outcome, aborted_by)",
    "rating_change": "a rating changed after a rated match (old, new, score)",
    "operator_*": "a control used in the web monitor",
    "unstorable_event": "an event the database could not store as is",
}


# pseudonyms

NAME_KEYS = ("user", "user_name", "name", "observed", "who")
NAME_LIST_KEYS = ("players", "users", "names")


class Pseudonyms:
    """Stable pseudonyms: ``p_`` and the first 16 hex digits of
    HMAC-SHA256(key, name); addresses dropped."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the pseudonym key file is empty")
        self.key = key
        self.cache: dict[str, str] = {}

    def name(self, name: Any) -> Any:
        if not isinstance(name, str):
            return name
        pseudonym = self.cache.get(name)
        if pseudonym is None:
            digest = hmac.new(self.key, name.encode("utf-8", "surrogatepass"), hashlib.sha256)
            pseudonym = self.cache[name] = "p_" + digest.hexdigest()[:16]
            if len(self.cache) > 100000:
                self.cache.clear()
        return pseudonym

    def data(self, value: Any) -> Any:
        """Names in nested event data pseudonymized, addresses removed; other
        values (chat text, move arguments) kept."""
        if not isinstance(value, dict):
            return value
        result = {}
        for key, item in value.items():
            if key == "address":
                continue
            if key in NAME_KEYS and isinstance(item, str):
                item = self.name(item)
            elif key in NAME_LIST_KEYS and isinstance(item, list):
                item = [self.name(entry) for entry in item]
            elif key != "move" and isinstance(item, dict):
                item = self.data(item)
            result[key] = item
        return result

    def event(self, event: Event) -> Event:
        changed = dict(event, user=self.name(event["user"]), address=None)
        text = event["data"]
        if text and text[0] == "{":
            decoded = decode_data(text)
            if isinstance(decoded, dict):
                changed["data"] = json.dumps(self.data(decoded))
        return changed
