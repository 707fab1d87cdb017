"""The research event log: every user action, with server time, for analysis.

Callers record events without waiting; events are buffered and written in
batches, so logging never delays delivery. If the store is down the buffer
keeps filling up to ``max_buffer`` events, then the oldest are dropped (and
counted in the log): a failing store never blocks a room or a match.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from gtserver.store import Store
from gtserver.store import events as queries


class EventLog(Service):
    log = Logger()

    def __init__(self, store: Store, clock: Any, flush_delay: float = 0.2,
                 batch_size: int = 1000, max_buffer: int = 1_000_000) -> None:
        self.store = store
        self.clock = clock
        self.flush_delay = flush_delay
        self.batch_size = batch_size
        self._buffer: deque[tuple] = deque(maxlen=max_buffer)
        self._timer = None
        self._writing: Deferred | None = None
        self.dropped = 0
        self.written = 0

    def record(self, source: str, kind: str, *, user: str | None = None,
               room: str | None = None, match: str | None = None,
               address: str | None = None, data: Any = None,
               time: float | None = None) -> None:
        """Queue one event; ``data`` is stored as JSON (strings as they are)."""
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        encoded = data if isinstance(data, str) or data is None else json.dumps(data)
        self._buffer.append((self.clock.seconds() if time is None else time, source, kind,
                             user, room, match, address, encoded))
        if len(self._buffer) >= self.batch_size:
            self._write_soon(0)
        else:
            self._write_soon(self.flush_delay)

    def flush(self) -> Deferred:
        """Write everything buffered; fires once it is stored (or a write failed)."""
        return ensureDeferred(self._flush())

    async def _flush(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        while True:
            if self._writing is not None:
                await self._writing
            elif not self._buffer or not await self._write():
                return

    def stopService(self):
        super().stopService()
        return self.flush()

    def _write_soon(self, delay: float) -> None:
        if self._timer is None or not self._timer.active():
            if self._writing is None:
                self._timer = self.clock.callLater(delay, self._timed_write)

    def _timed_write(self) -> None:
        self._timer = None
        if self._writing is None and self._buffer:
            self._write()

    def _write(self) -> Deferred:
        batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
        d = self.store.run(queries.append_events, batch)
        self._writing = d

        def written(count):
            self.written += count
            return True

        def failed(failure):
            # Put the batch back at the front, keeping order, and retry later.
            self._buffer.extendleft(reversed(batch))
            self.log.warn("event log write failed, will retry: {error}", error=failure.value)
            return False

        def done(succeeded):
            self._writing = None
            if self.dropped:
                self.log.warn("event log buffer full: {count} events dropped", count=self.dropped)
                self.dropped = 0
            if self._buffer and self.running:
                self._write_soon(self.flush_delay)
            return succeeded

        d.addCallbacks(written, failed)
        d.addBoth(done)
        return d
