"""The worker's C heap after churn: glibc statistics and giving free pages back (``malloc_trim``).

Owns :class:`HeapTrimmer`, which the media service ticks. Why it exists (docs/RELIABILITY.md, K7): a transport with
its producers and consumers holds hundreds of KiB of Engine state (packet stores for retransmission, send history
for bandwidth estimation) plus its SRTP and DTLS contexts. When a crowd leaves, every byte is freed (the Engine's
own counter, ``snapshot_engine()["c_bytes"]``, and tracemalloc come back to their baseline) but glibc keeps the
freed pages mapped as a high-water mark for the next crowd, so the worker's RSS stayed where the peak left it. Every
``interval_s`` the trimmer reads how much the heap holds free (``mallinfo2().fordblks``, all arenas) and, when that
grew by ``min_free_bytes`` over its lowest value since the last trim, calls ``malloc_trim(0)``, which returns the
free pages of every arena to the kernel (the chunks stay free in malloc's bins, so ``fordblks`` does not drop: hence
"grew since", not "is above"). The trim runs on a thread of its own (ctypes releases the GIL): on a heap a 300-
participant crowd had left (93 MB free) it took 57 ms on a loaded 2-core host, a pause the event loop would
otherwise take. Off glibc (no ``mallinfo2``) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

log = logging.getLogger("router.heap")

MIN_FREE_BYTES = 16 << 20
INTERVAL_S = 5.0


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, libc's among them (no find_library subprocess)
        libc.mallinfo2.restype = _Mallinfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def heap_stats() -> dict[str, int]:
    """glibc's view of the heap: ``heap_in_use`` (handed out, mmapped blocks included) and ``heap_free`` (held
    free in the arenas); empty off glibc."""
    if _LIBC is None:
        return {}
    info = _LIBC.mallinfo2()
    return {"heap_in_use": int(info.uordblks + info.hblkhd), "heap_free": int(info.fordblks)}


def malloc_trim() -> bool:
    """Give every arena's free pages back to the kernel; True if glibc released any."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


class HeapTrimmer:
    """``tick(now)`` from a periodic loop; trims at most every ``interval_s`` and only with much free."""

    def __init__(self, *, min_free_bytes: int = MIN_FREE_BYTES, interval_s: float = INTERVAL_S) -> None:
        self.min_free_bytes = min_free_bytes
        self.interval_s = interval_s
        self.trims = 0
        self.trimmed_free_bytes = 0  # growth of the free heap that each trim answered, summed
        self._last = 0.0
        self._low = 0  # the least free heap seen since the last trim
        self._thread: threading.Thread | None = None

    def tick(self, now: float) -> bool:
        if now - self._last < self.interval_s or _LIBC is None:
            return False
        self._last = now
        free = heap_stats()["heap_free"]
        self._low = min(self._low, free)
        if free - self._low < self.min_free_bytes or (self._thread is not None and self._thread.is_alive()):
            return False
        self._thread = threading.Thread(target=malloc_trim, name="heap-trim", daemon=True)
        self._thread.start()
        self.trims += 1
        self.trimmed_free_bytes += free - self._low
        log.debug("heap trim: %d bytes free, %d more than before", free, free - self._low)
        self._low = free
        return True

    def join(self, timeout: float | None = None) -> None:
        """Wait for the trim in progress, if any."""
        if self._thread is not None:
            self._thread.join(timeout)

    def counters(self) -> dict[str, int]:
        """For the worker's heartbeat."""
        return {"heap_trims": self.trims, **heap_stats()}
