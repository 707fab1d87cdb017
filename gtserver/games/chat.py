"""Chat: up to 100 players post messages; everybody may move at any time.

Move ``name=<str>`` sets the mover's display name (non-empty, not used by
another player); move ``message=<str>`` posts a line (a name is needed first;
blank messages are ignored). Both may come in one move: the name is set first.
The state is ``{"messages": [[name, text], ...]}`` with the latest lines:
at most :attr:`Chat.history` of them and at most ``history_max`` bytes of
names and texts (UTF-8), so one player cannot make a session, and every
state reply of it, arbitrarily large. A name or message longer than
``line_max`` bytes is refused. The game never ends.
"""

from __future__ import annotations

import random
from typing import Any

from zope.interface import implementer

from gtserver.games.base import IllegalMove
from gtserver.interfaces import IGame
from gtserver.option_types import positive


@implementer(IGame)
class Chat:
    min_players = 1
    max_players = 100
    #: Lines kept in the state; older ones are dropped.
    history = 1000
    #: Default bound of one name or message, in UTF-8 bytes.
    default_line_max = 4096
    #: Default bound of the kept lines (names and texts), in UTF-8 bytes.
    default_history_max = 256 * 1024

    def __init__(self, players: int = 1, rng: random.Random | None = None,
                 line_max: int | None = None, history_max: int | None = None) -> None:
        if not self.min_players <= players <= self.max_players:
            raise ValueError("Chat takes 1 to 100 players")
        self.line_max = self.default_line_max if line_max is None else line_max
        self.history_max = self.default_history_max if history_max is None else history_max
        if self.line_max < 1 or self.history_max < 1:
            raise ValueError("Chat's line and history bounds must be at least 1 byte")
        self.players = players
        self.names: list[str | None] = [None] * players
        self.messages: list[list[str]] = []
        #: UTF-8 bytes of the kept lines (name and text of each).
        self.size = 0

    def current(self) -> list[int]:
        return list(range(self.players))

    def is_over(self) -> bool:
        return False

    def move(self, seat: int, name: Any = None, message: Any = None, **extra: Any) -> None:
        if extra:
            raise IllegalMove(f"unexpected move arguments: {', '.join(sorted(extra))}")
        if name is None and message is None:
            raise IllegalMove("send name=... or message=...")
        if name is not None:
            self._rename(seat, name)
        if message is not None:
            self._post(seat, message)

    def _rename(self, seat: int, name: Any) -> None:
        if not isinstance(name, str) or not name.strip():
            raise IllegalMove("the name must be a non-empty string")
        if _bytes(name) > self.line_max:
            raise IllegalMove(f"the name is longer than {self.line_max} bytes")
        if any(other == name for index, other in enumerate(self.names) if index != seat):
            raise IllegalMove(f"the name {name!r} is taken")
        self.names[seat] = name

    def _post(self, seat: int, message: Any) -> None:
        if not isinstance(message, str):
            raise IllegalMove("the message must be a string")
        if self.names[seat] is None:
            raise IllegalMove("choose a name first")
        if _bytes(message) > self.line_max:
            raise IllegalMove(f"the message is longer than {self.line_max} bytes")
        if message.strip():
            line = [self.names[seat], message]
            if _line_bytes(line) > self.history_max:
                raise IllegalMove(f"name and message are longer than the chat history "
                                  f"holds ({self.history_max} bytes)")
            self.messages.append(line)
            self.size += _line_bytes(line)
            self._trim()

    def _trim(self) -> None:
        """Drop the oldest lines beyond the line count or the byte bound."""
        dropped = 0
        while len(self.messages) - dropped > self.history or self.size > self.history_max:
            self.size -= _line_bytes(self.messages[dropped])
            dropped += 1
        if dropped:
            del self.messages[:dropped]

    def state(self, seat: int | None = None) -> dict[str, Any]:
        return {"messages": [list(line) for line in self.messages]}

    def outcome(self) -> list[float] | None:
        return None

    def to_data(self) -> dict[str, Any]:
        return {"players": self.players, "names": self.names, "messages": self.messages,
                "line_max": self.line_max, "history_max": self.history_max}

    @classmethod
    def restore(cls, data: dict[str, Any]) -> Chat:
        game = cls(data["players"], None, data.get("line_max"), data.get("history_max"))
        game.names = list(data["names"])
        game.messages = [list(line) for line in data["messages"]]
        game.size = sum(_line_bytes(line) for line in game.messages)
        return game


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _line_bytes(line: list[str]) -> int:
    return _bytes(line[0]) + _bytes(line[1])


#: Chat's command-line options (named for the EOT listener, which first served Chat).
OPTIONS = (
    ("eot-chat-line-max", Chat.default_line_max,
     "Longest name or message, in UTF-8 bytes.", positive(int, "eot-chat-line-max")),
    ("eot-chat-history-max", Chat.default_history_max,
     "History kept per game (names and texts), in UTF-8 bytes.",
     positive(int, "eot-chat-history-max")),
)
#: The keyword of :class:`Chat` that each option sets.
SETTING_NAMES = {"eot-chat-line-max": "line_max", "eot-chat-history-max": "history_max"}
