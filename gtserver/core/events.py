"""The research event log: every user action, with server time, for analysis.

Callers record events without waiting; events are buffered and written in
batches. An event whose effect clients see (a move, a chat line) must be
stored before they see it: its caller waits for :meth:`EventLog.stored`,
which writes the buffer at the end of the reactor turn (every event recorded
in that turn in one transaction, the next turn's while it is in flight) and
fires once everything recorded before the call is stored: group commit, as
for match states. While the store is unavailable those waits end at once,
unfulfilled (``False``), so that a failing store never stops a room or a
match; the events stay buffered and are written when it is back. If the store is down the buffer
keeps filling up to ``max_buffer`` events, then the oldest are dropped (and
counted in the log): a failing store never blocks a room or a match.

A batch the store refuses for any other reason than being unavailable (most
often one event holding text the database cannot encode) is split in halves
until the refused events are found; everything else is written in order, and
each refused event is replaced by an ``unstorable_event`` that keeps its
time and an exactly reversible, ASCII-only copy of its fields. So no event can
stop the log for the others.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger

from gtserver import metrics
from gtserver.store import Store, StoreUnavailable
from gtserver.store import events as queries

#: Kind of the event stored in place of one the store refused (docs/export.md).
UNSTORABLE_KIND = "unstorable_event"

#: Characters some engine cannot store in a text column: NUL (PostgreSQL) and
#: lone UTF-16 surrogates (either engine; they have no UTF-8 encoding).
_UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


class EventLog(Service):
    log = Logger()

    def __init__(self, store: Store, clock: Any, flush_delay: float = 0.2,
                 batch_size: int = 1000, max_buffer: int = 1_000_000,
                 reactor: Any = None) -> None:
        """
        @param reactor: schedules the write at the end of the reactor turn
            for :meth:`stored` (I/O scheduling, so it must not wait for a
            test's ``task.Clock``); by default ``clock``.
        """
        self.store = store
        self.clock = clock
        self.reactor = reactor if reactor is not None else clock
        self.flush_delay = flush_delay
        self.batch_size = batch_size
        self._buffer: deque[tuple] = deque(maxlen=max_buffer)
        self._timer = None
        self._soon: Any = None
        self._writing: Deferred | None = None
        self.dropped = 0
        #: Every event dropped since start (``dropped`` counts since the last warning).
        self.dropped_total = 0
        self.written = 0
        #: Events the store refused, stored as ``unstorable_event`` instead.
        self.refused = 0
        #: Refused events whose stand-in could not be stored either: lost.
        self.lost = 0
        #: When the store became unavailable to the log (None: it is not).
        self._unavailable_since: float | None = None
        #: The run (``runs`` table) every event written belongs to; the daemon
        #: sets it once the run is recorded, before anything can be logged.
        self.run_id: int | None = None
        #: Events recorded so far, and those of them being written now.
        self.recorded = 0
        self._inflight = 0
        #: ``stored()`` waiters: (events recorded before the call, Deferred).
        self._waiters: deque[tuple[int, Deferred]] = deque()

    def record(self, source: str, kind: str, *, user: str | None = None,
               room: str | None = None, match: str | None = None,
               address: str | None = None, data: Any = None,
               time: float | None = None) -> None:
        """Queue one event; ``data`` is stored as JSON (strings as they are)."""
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
            self.dropped_total += 1
            metrics.EVENTS_DROPPED.inc()
        encoded = data if isinstance(data, str) or data is None else json.dumps(data)
        self._buffer.append((self.clock.seconds() if time is None else time, source, kind,
                             user, room, match, address, encoded))
        self.recorded += 1
        if len(self._buffer) >= self.batch_size:
            self._write_soon(0)
        else:
            self._write_soon(self.flush_delay)

    def stored(self) -> Deferred:
        """Fires with True once every event recorded so far is stored; with
        False at once while the store is unavailable (they are kept and
        retried, but not durable yet)."""
        if self._unavailable_since is not None:
            return succeed(False)
        if self.settled >= self.recorded:
            return succeed(True)
        waiter: Deferred = Deferred()
        self._waiters.append((self.recorded, waiter))
        if self._writing is None:
            self._write_now()
        return waiter

    def _write_now(self) -> None:
        """Write at the end of this reactor turn (with everything recorded in it)."""
        if self._soon is None or not self._soon.active():
            self._soon = self.reactor.callLater(0, self._soon_write)

    def _soon_write(self) -> None:
        self._soon = None
        if self._writing is None and self._buffer:
            self._write()

    @property
    def settled(self) -> int:
        """Events recorded so far that are no longer waiting to be written
        (stored, stood in for, lost or dropped)."""
        return self.recorded - len(self._buffer) - self._inflight

    def _release(self, durable: bool) -> None:
        """Fire the waiters whose events are settled (all of them, with
        False, if the store became unavailable)."""
        while self._waiters and (not durable or self._waiters[0][0] <= self.settled):
            _count, waiter = self._waiters.popleft()
            waiter.callback(durable)

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

    @property
    def backlog(self) -> int:
        """Events recorded but not written yet."""
        return len(self._buffer)

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
        self._inflight = len(batch)
        d = ensureDeferred(self._store_batch(batch))
        self._writing = d

        def done(succeeded):
            self._writing = None
            self._inflight = 0
            self._release(succeeded is True)
            if self.dropped:
                self.log.warn("event log buffer full: {count} events dropped", count=self.dropped)
                self.dropped = 0
            if self._buffer and self._waiters:
                self._write_now()
            elif self._buffer and self.running:
                self._write_soon(self.flush_delay)
            return succeeded

        d.addBoth(done)
        return d

    async def _store_batch(self, batch: list[tuple]) -> bool:
        """Write ``batch`` in order, splitting it around refused events.

        True once every event is stored (or stood in for); False if the store
        became unavailable, with the unwritten rest back at the front of the
        buffer, in order, for a later retry.
        """
        chunks = [batch]  # a stack: the next chunk to write is the last one
        refused: list[tuple[tuple, Exception]] = []
        try:
            while chunks:
                chunk = chunks[-1]
                try:
                    self.written += await self.store.run(queries.append_events, chunk, self.run_id)
                except StoreUnavailable:
                    raise
                except Exception as error:
                    if len(chunk) > 1:
                        middle = len(chunk) // 2
                        chunks[-1:] = [chunk[middle:], chunk[:middle]]
                        continue
                    await self._stand_in(chunk[0], error)
                    refused.append((chunk[0], error))
                chunks.pop()
        except StoreUnavailable as error:
            unwritten = [row for chunk in reversed(chunks) for row in chunk]
            self._buffer.extendleft(reversed(unwritten))
            if self._unavailable_since is None:  # one line per outage, not per retry
                self._unavailable_since = self.clock.seconds()
                self.log.warn("event log cannot write, keeping events and retrying: {error}",
                              error=error)
            return False
        finally:
            if refused:
                self._report_refused(refused)
        if self._unavailable_since is not None:
            self.log.info("event log writing again after {seconds:.1f} s without the store",
                          seconds=self.clock.seconds() - self._unavailable_since)
            self._unavailable_since = None
        return True

    async def _stand_in(self, row: tuple, error: Exception) -> None:
        """Store the ``unstorable_event`` for a refused row (or count it lost).

        Raises StoreUnavailable if the store went away meanwhile: then the
        original row is retried later, like any other.
        """
        try:
            self.written += await self.store.run(
                queries.append_events, [stand_in(row, error, self.clock.seconds())],
                self.run_id)
        except StoreUnavailable:
            raise
        except Exception as again:
            self.lost += 1
            self.log.warn("event log: a refused {kind!r} event could not be stood in for "
                          "and is lost: {error}", kind=escape_text(row[2]), error=again)
            return
        self.refused += 1

    def _report_refused(self, refused: list[tuple[tuple, Exception]]) -> None:
        kinds = sorted({escape_text(row[2]) for row, _error in refused})
        self.log.warn(
            "event log: the store refused {count} event(s) of kind {kinds} "
            "({error}); stored as " + UNSTORABLE_KIND + " instead",
            count=len(refused), kinds=", ".join(kinds), error=refused[0][1])


def escape_text(value: Any) -> str | None:
    """``value`` as text every engine stores: NUL and lone surrogates become
    ``\\uXXXX`` escapes (so the result is readable, though not reversible)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return _UNSTORABLE_CHARACTERS.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def stand_in(row: tuple, error: Exception, now: float) -> tuple:
    """The ``unstorable_event`` row stored in place of a refused event row.

    Its columns hold escaped copies (so filters by source, room or match still
    find it); ``data`` holds every original column but the time as ASCII-only
    JSON, from which the exact original values can be read back.
    """
    time, source, kind, user, room, match, address, data = row
    original = {"source": source, "kind": kind, "user_name": user, "room": room,
                "match_id": match, "address": address, "data": data}
    details = {"error": escape_text(str(error)), "original": original}
    finite_time = isinstance(time, (int, float)) and math.isfinite(time)
    return (time if finite_time else now, escape_text(source) or "", UNSTORABLE_KIND,
            escape_text(user), escape_text(room), escape_text(match), escape_text(address),
            json.dumps(details, ensure_ascii=True, default=repr))


class DeliveryGate:
    """Keeps a feature's output in order behind the durability of its events.

    :meth:`hold` puts a barrier in the output: what is sent after it (through
    :meth:`send`) waits until the barrier's Deferred (an ``EventLog.stored()``)
    fires, then goes out in the order it was sent. With no barrier pending,
    :meth:`send` sends at once. Barriers release in the order they were put
    in, so one slow commit never lets later output overtake earlier output.
    """

    log = Logger()

    def __init__(self) -> None:
        #: Barriers (a one-item list: fired yet?) and held sends, in order.
        self._queue: deque[Any] = deque()
        #: Sends held so far (for tests and the monitor).
        self.held = 0

    def hold(self, stored: Deferred) -> None:
        """Output sent from now on waits until ``stored`` fires."""
        if stored.called:
            return
        barrier = [False]
        self._queue.append(barrier)

        def released(result: Any) -> Any:
            barrier[0] = True
            self._drain()
            return result

        stored.addBoth(released)

    @property
    def holding(self) -> bool:
        """Whether output sent now would wait."""
        return bool(self._queue)

    def send(self, function: Any, *arguments: Any) -> Any:
        """Call ``function(*arguments)`` now if nothing is held, else later
        (then it returns True: the output is accepted)."""
        if not self._queue:
            return function(*arguments)
        self._queue.append((function, arguments))
        self.held += 1
        return True

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            head = queue[0]
            if isinstance(head, list):
                if not head[0]:
                    return
                queue.popleft()
                continue
            queue.popleft()
            function, arguments = head
            try:
                function(*arguments)
            except Exception:
                self.log.failure("held output could not be sent")
