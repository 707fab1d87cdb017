"""Hand the memory of a burst of large frames back to the operating system.

A login burst sends every joiner a member list of everyone (2,000 members are
about 130 KB of JSON), and those buffers are freed right after they are
written. glibc's allocator keeps freed heap memory for reuse instead of
returning it, and the long-lived per-connection objects allocated in between
pin the heap, so the process would keep the burst's peak size for good.
After enough bytes were written, :class:`HeapTrimmer` asks glibc
(``malloc_trim``) to release its free pages, once the burst has gone quiet
for a moment. On other C libraries it does nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from gtserver.core.memory import malloc_trim as _malloc_trim


class HeapTrimmer:
    log = Logger()

    def __init__(self, clock: Any, threshold: int = 32 << 20, quiet: float = 3.0,
                 trim: Any = _malloc_trim) -> None:
        self.clock = clock
        self.threshold = threshold
        self.quiet = quiet
        self._trim = trim
        self._written = 0
        self._call: Any = None
        self.trims = 0

    def wrote(self, nbytes: int) -> None:
        """Count bytes of large one-off frames; after ``threshold`` of them, trim soon."""
        if self._trim is None:
            return
        self._written += nbytes
        if self._written >= self.threshold and self._call is None:
            self._call = self.clock.callLater(self.quiet, self._trim_when_quiet,
                                              self._written)

    def _trim_when_quiet(self, written_before: int) -> None:
        self._call = None
        if self._written != written_before:  # the burst goes on: look again later
            self._call = self.clock.callLater(self.quiet, self._trim_when_quiet,
                                              self._written)
            return
        self.trim()

    def trim(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._written = 0
        self.trims += 1
        try:
            self._trim(0)
        except Exception:
            self.log.failure("malloc_trim failed")

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
