"""Counting attempts per key over a sliding window, for any protocol.

A :class:`Throttle` keeps the times of recent attempts per key (an account
name, a client host, anything hashable). Once a key has ``limit`` attempts
within ``window`` seconds it is blocked until the oldest of those leaves the
window. A caller may ask with its own ``limit`` and ``window`` (two listeners
with different budgets over the same counts). Time comes from the core's
clock, so tests drive it with ``task.Clock``.

An attempt is counted when it *starts* (:meth:`Throttle.failure` returns its
time stamp) so that attempts running at the same time see each other; an
attempt that turns out not to count (a right password, a database outage) is
taken back with :meth:`Throttle.withdraw` or :meth:`Throttle.success`::

    throttle.check(key)              # raises LoginThrottled
    stamp = throttle.failure(key)    # counted from now on
    ... check the password ...
    throttle.success(key)            # right: forget the key's failures
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any

from gtserver.core.errors import Throttled

#: Time stamps kept per key at least; a caller's larger limit counts as the larger
#: of this and the throttle's own.
MAX_STAMPS = 1024


class LoginThrottled(Throttled):
    """Too many attempts; ``retry_after`` seconds until the next one is allowed."""

    def __init__(self, retry_after: float, what: str = "failed attempts",
                 budget: str | None = None) -> None:
        super().__init__(f"too many {what}, try again in {int(retry_after) + 1} s")
        self.retry_after = retry_after
        #: Which budget was spent (``account``, ``address``, ``registrations``).
        self.budget = budget


class Throttle:
    def __init__(self, clock: Any, limit: int = 5, window: float = 300.0,
                 max_keys: int = 100_000) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.clock = clock
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        #: The longest window any caller asked about: what pruning keeps.
        self._horizon = window
        self._attempts: dict[Hashable, deque[float]] = {}

    def retry_after(self, key: Hashable, limit: int | None = None,
                    window: float | None = None) -> float:
        """Seconds until ``key`` may try again; 0 when it is not blocked."""
        limit, window = self._budget(limit, window)
        times = self._attempts.get(key)
        if not times or len(times) < limit:
            return 0.0
        now = self.clock.seconds()
        recent = [stamp for stamp in times if stamp > now - window]
        if len(recent) < limit:
            return 0.0
        return max(0.0, recent[-limit] + window - now)

    def check(self, *keys: Hashable, limit: int | None = None,
              window: float | None = None) -> None:
        """Raise :class:`LoginThrottled` if any of ``keys`` is blocked."""
        wait = max((self.retry_after(key, limit, window) for key in keys), default=0.0)
        if wait > 0:
            raise LoginThrottled(wait)

    def failure(self, *keys: Hashable) -> float:
        """Count one attempt against each of ``keys``; returns its time stamp."""
        now = self.clock.seconds()
        if len(self._attempts) >= self.max_keys:
            self.prune()
        for key in keys:
            times = self._attempts.get(key)
            if times is None:
                times = self._attempts[key] = deque(maxlen=max(self.limit, MAX_STAMPS))
            times.append(now)
        return now

    def withdraw(self, key: Hashable, stamp: float) -> None:
        """Take back one attempt counted at ``stamp`` (it did not count after all)."""
        times = self._attempts.get(key)
        if times is None:
            return
        try:
            times.remove(stamp)
        except ValueError:
            return
        if not times:
            del self._attempts[key]

    def success(self, *keys: Hashable) -> None:
        """Forget every attempt of ``keys``."""
        for key in keys:
            self._attempts.pop(key, None)

    def count(self, key: Hashable, window: float | None = None) -> int:
        """Attempts of ``key`` within ``window`` (default: this throttle's)."""
        window = self.window if window is None else window
        horizon = self.clock.seconds() - window
        return sum(1 for stamp in self._attempts.get(key, ()) if stamp > horizon)

    def prune(self) -> None:
        """Drop keys whose attempts have all left every window (bounds memory)."""
        horizon = self.clock.seconds() - self._horizon
        for key in [key for key, times in self._attempts.items() if times[-1] <= horizon]:
            del self._attempts[key]

    def _budget(self, limit: int | None, window: float | None) -> tuple[int, float]:
        limit = self.limit if limit is None else max(1, min(limit, max(self.limit, MAX_STAMPS)))
        window = self.window if window is None else window
        if window > self._horizon:
            self._horizon = window
        return limit, window
