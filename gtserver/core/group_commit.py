"""Group commit of match states: many concurrent moves, one transaction.

Every accepted move must be stored before anyone is told about it. Storing
each move in a transaction of its own makes the database round trip (and, on
SQLite, the single database thread) the limit of the whole server. A
:class:`GroupCommit` writes at most one batch at a time: states saved while a
batch is in flight wait for the next batch, which carries all of them in one
transaction. Each caller's Deferred fires only once the batch holding its
state has committed (or fails with the batch's error), so "stored before
told" holds for every caller, while a busy server commits far less often.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from gtserver.store import matches as queries


class GroupCommit:
    def __init__(self, store: Any, max_batch: int = 500) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: list[tuple[tuple, Deferred]] = []
        self._writing = False
        #: Statistics: transactions written and states stored.
        self.batches = 0
        self.states = 0

    def save(self, match_id: str, state: str, finished: bool, updated: float) -> Deferred:
        """Deferred firing once this match state is committed."""
        waiter: Deferred = Deferred()
        self._pending.append(((state, finished, updated, match_id), waiter))
        if not self._writing:
            self._write()
        return waiter

    def _write(self) -> None:
        batch = self._pending[:self.max_batch]
        del self._pending[:self.max_batch]
        self._writing = True
        d = self.store.run(queries.update_matches, [row for row, _waiter in batch])

        def written(result: Any) -> None:
            self._writing = False
            if self._pending:
                self._write()
            self.batches += 1
            self.states += len(batch)
            for _row, waiter in batch:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(None)

        d.addBoth(written)
