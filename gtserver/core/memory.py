"""glibc's ``malloc_trim``, where there is one: hand free heap pages back to the OS.

glibc keeps freed memory in its arenas (one per thread that allocated) for
reuse; a large one-off allocation, such as the 16 MiB an scrypt hash uses,
would stay resident in its thread for good. :func:`trim_heap` releases the
free pages of every arena. On other C libraries it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any


def find_malloc_trim() -> Any:
    """``malloc_trim`` of the C library, or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


malloc_trim = find_malloc_trim()


def trim_heap() -> bool:
    """Release free heap pages now; False where the C library cannot."""
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True
