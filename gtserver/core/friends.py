"""Friend lists of registered users (one-way, like following someone)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gtserver.core.errors import CoreError
from gtserver.core.ratings import START
from gtserver.store import friends as queries


class FriendRefused(CoreError):
    """A friend list change was refused; the message says why."""


@dataclass(frozen=True)
class FriendList:
    names: list[str]
    elos: list[int]


class Friends:
    """The shared instance is ``core.friends``."""

    def __init__(self, store: Any, clock: Any) -> None:
        self.store = store
        self.clock = clock

    async def add(self, user: Any, name: str) -> None:
        """Add the registered user ``name`` to ``user``'s list, else FriendRefused."""
        self._check(user, name)
        outcome = await self.store.run(queries.add_friend, user.id, name, self.clock.seconds())
        if outcome == "unknown":
            raise FriendRefused(f"there is no registered user {name}")
        if outcome == "already":
            raise FriendRefused(f"{name} is already your friend")

    async def remove(self, user: Any, name: str) -> None:
        self._check(user, name)
        if await self.store.run(queries.remove_friend, user.id, name) == "absent":
            raise FriendRefused(f"{name} is not your friend")

    async def list(self, user: Any) -> FriendList:
        if user.temporary:
            return FriendList([], [])
        rows = await self.store.run(queries.friends_of, user.id, START)
        return FriendList([name for name, _ in rows], [elo for _, elo in rows])

    @staticmethod
    def _check(user: Any, name: str) -> None:
        if user.temporary:
            raise FriendRefused("temporary users cannot have friends")
        if name == user.name:
            raise FriendRefused("you cannot befriend yourself")
