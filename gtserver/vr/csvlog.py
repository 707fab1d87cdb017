"""The original server's live research file, as an option (``--vr-csv-log PATH``).

One line per room event, ``timestamp;ip;nick;room;action;message``, appended
to PATH. Lines are buffered in memory and appended once a second by a thread,
so the reactor never waits for the disk; at most one write is in flight.
The database event log (exported with ``gtserver-export``) is the complete
record; this file is for tools that read the original format.
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime, timezone
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from gtserver.vr.rooms import RoomService

HEADER = ("timestamp", "ip", "nick", "room", "action", "message")


def _append_lines(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8", newline="") as output:
        output.write(text)


class CsvEventFile(Service):
    """Mirrors every recorded room event of ``rooms`` into the CSV file at ``path``."""

    log = Logger()

    def __init__(self, path: str, clock: Any, rooms: RoomService,
                 flush_interval: float = 1.0, run_in_thread: Any = deferToThread) -> None:
        self.path = path
        self.clock = clock
        self.flush_interval = flush_interval
        self._run_in_thread = run_in_thread
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, delimiter=";", lineterminator="\n")
        self._writing: Deferred | None = None
        self._timer: LoopingCall | None = None
        rooms.recorders.append(self.record)

    def record(self, *, kind: str, user: str, room: str, address: str | None, data: Any,
               time: float) -> None:
        if data is None:
            message = ""
        elif isinstance(data, str):
            message = data
        else:
            message = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        stamp = datetime.fromtimestamp(time, timezone.utc).isoformat(timespec="milliseconds")
        self._writer.writerow((stamp, address or "", user, room, kind, message))

    def startService(self) -> None:
        super().startService()
        self._timer = LoopingCall(self.flush)
        self._timer.clock = self.clock
        self._timer.start(self.flush_interval, now=False)

    def stopService(self) -> Deferred:
        super().stopService()
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        return self.flush_all()

    def flush(self) -> Deferred:
        """Append what is buffered, unless a write is still in flight."""
        if self._writing is not None:
            return self._writing
        text = self._buffer.getvalue()
        if not text:
            return succeed(None)
        self._buffer.seek(0)
        self._buffer.truncate()
        d = self._run_in_thread(self._append_with_header, text)
        self._writing = d

        def done(result: Any) -> None:
            self._writing = None
            return result

        def failed(failure: Any) -> None:
            self.log.warn("cannot append to {path}: {error}", path=self.path,
                          error=failure.value)

        return d.addErrback(failed).addBoth(done)

    async def _flush_all(self) -> None:
        while self._writing is not None or self._buffer.tell():
            await self.flush()

    def flush_all(self) -> Deferred:
        return ensureDeferred(self._flush_all())

    def _append_with_header(self, text: str) -> None:
        """Runs in a thread: append, writing the header first to a new file."""
        if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
            text = ";".join(HEADER) + "\n" + text
        _append_lines(self.path, text)
