"""glibc's allocator knobs, where there is glibc: give large blocks back to the OS.

glibc serves a large allocation with its own ``mmap`` and returns it when
freed, but after the first such block is freed it raises that threshold to
the block's size ("dynamic mmap threshold"), so the next blocks of that size
come from the allocating thread's arena and stay resident there when freed:
the 16 MiB of every scrypt hash at the default cost, once per thread that
ever hashed. ``malloc_trim`` does not get that memory back while anything
allocated later sits above it in the arena.

:func:`mmap_blocks_from` fixes the threshold instead, so that blocks that
large always go back to the system when freed. :data:`malloc_trim` is
glibc's function (used by the VR heap trimmer). On other C libraries both
do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

#: ``mallopt`` parameter number of the mmap threshold (glibc's ``M_MMAP_THRESHOLD``).
M_MMAP_THRESHOLD = -3
#: The largest threshold glibc accepts (``HEAP_MAX_SIZE / 2`` on 64-bit systems).
MAX_MMAP_THRESHOLD = 32 << 20
#: Below this, glibc's own dynamic threshold is left alone: what a thread may
#: keep is small, and frequent mid-sized blocks (large frames) stay cheap.
MIN_MMAP_THRESHOLD = 1 << 20


def _libc_function(name: str, argtypes: list[Any]) -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        function = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


malloc_trim = _libc_function("malloc_trim", [ctypes.c_size_t])
_mallopt = _libc_function("mallopt", [ctypes.c_int, ctypes.c_int])
_threshold: int | None = None


def mmap_blocks_from(size: int) -> bool:
    """Serve blocks of ``size`` bytes and more with ``mmap`` from now on (process-wide).

    Only ever lowers a threshold set before; False where the C library cannot
    or ``size`` is under :data:`MIN_MMAP_THRESHOLD`.
    """
    global _threshold
    if _mallopt is None or size < MIN_MMAP_THRESHOLD:
        return False
    size = min(size, MAX_MMAP_THRESHOLD)
    if _threshold is not None and _threshold <= size:
        return True
    if not _mallopt(M_MMAP_THRESHOLD, size):
        return False
    _threshold = size
    return True
