"""Throttling of repeated failures (e.g. password guessing), for any protocol.

A :class:`Throttle` counts failures per key (a user name, a client address,
anything hashable) over a sliding window. Once a key has ``limit`` failures
within ``window`` seconds it is blocked until the oldest of those failures
leaves the window. Time comes from the core's clock, so tests drive it with
``task.Clock``.

Typical use by an adapter::

    throttle.check(("name", name), ("address", host))   # raises Throttled
    ... authenticate ...
    throttle.failure(("name", name), ("address", host)) # on a wrong password
    throttle.success(("name", name))                    # on a good one
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any

from gtserver.core.errors import Throttled


class LoginThrottled(Throttled):
    """Too many failures; ``retry_after`` seconds until the next attempt is allowed."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed attempts, try again in {int(retry_after) + 1} s")
        self.retry_after = retry_after


class Throttle:
    def __init__(self, clock: Any, limit: int = 5, window: float = 300.0,
                 max_keys: int = 100_000) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.clock = clock
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: dict[Hashable, deque[float]] = {}

    def retry_after(self, key: Hashable) -> float:
        """Seconds until ``key`` may try again; 0 when it is not blocked."""
        times = self._recent(key)
        if len(times) < self.limit:
            return 0.0
        return max(0.0, times[-self.limit] + self.window - self.clock.seconds())

    def check(self, *keys: Hashable) -> None:
        """Raise :class:`LoginThrottled` if any of ``keys`` is blocked."""
        wait = max((self.retry_after(key) for key in keys), default=0.0)
        if wait > 0:
            raise LoginThrottled(wait)

    def failure(self, *keys: Hashable) -> None:
        """Count one failure against each of ``keys``."""
        now = self.clock.seconds()
        if len(self._failures) >= self.max_keys:
            self.prune()
        for key in keys:
            times = self._failures.setdefault(key, deque(maxlen=self.limit))
            times.append(now)

    def success(self, *keys: Hashable) -> None:
        """Forget the failures of ``keys``."""
        for key in keys:
            self._failures.pop(key, None)

    def prune(self) -> None:
        """Drop keys whose failures have all left the window (bounds memory)."""
        horizon = self.clock.seconds() - self.window
        for key in [key for key, times in self._failures.items() if times[-1] <= horizon]:
            del self._failures[key]

    def _recent(self, key: Hashable) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        horizon = self.clock.seconds() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
        return times
