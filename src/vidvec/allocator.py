"""How this process's C heap (glibc malloc) treats the big blocks a run allocates over and over.

Batches, activations and decoded clips are tens to hundreds of MB. By default glibc serves every block above its
mmap threshold (at most 32 MB) with a fresh ``mmap`` and unmaps it when freed, so each batch page-faults its memory
in again, zeroed by the kernel: on CPU that kernel time was as large as the model's own compute (docs/benchmarks.md).
:func:`keep_freed_memory` makes the heap keep freed blocks for the next batch instead, and :class:`HeapTrimmer`
hands the heap's free memory back now and then, so that fragmentation cannot creep a long run's memory up. Both do
nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import sys
import time

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def _glibc() -> ctypes.CDLL | None:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None  # musl has neither


def keep_freed_memory() -> None:
    """Serve every block from the heap (no mmap per block) and never trim it on free: a freed batch's memory is
    reused by the next one without faulting it in again. Call it once in each process that computes or decodes."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
        # Threads (model replicas) would get arenas of their own, made of 64 MB heaps that serve a bigger block
        # by mmap after all: every thread uses the one kept heap.
        libc.mallopt(_M_ARENA_MAX, 1)


class HeapTrimmer:
    """Hands the heap's free memory back to the OS (glibc's malloc_trim) at most every ``interval`` seconds: the
    bound on a long run's memory, at the cost of faulting the freed pages in again once per interval."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last = time.monotonic()
        libc = _glibc()
        self._trim = libc.malloc_trim if libc is not None else None

    def __call__(self) -> None:
        if self._trim is not None and time.monotonic() - self._last >= self.interval:
            self._trim(0)
            self._last = time.monotonic()
