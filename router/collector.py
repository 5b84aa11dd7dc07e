"""The garbage collector of control and of each worker: start-up objects frozen, full collections paced.

CPython (3.11) collects the young generation every 700 net container allocations and the middle one every 10 of
those; a full collection (the oldest generation) is considered after 10 middle ones and runs when the objects
promoted since the last one reach a quarter of the long-lived heap. A full collection walks every tracked object
and blocks the event loop meanwhile: with 1,000 participants in control (a few hundred tracked objects each) one
took 70-140 ms of CPU, and while a room of 1,000 filled up the heap grew by a quarter four or five times, so full
collections came back every few seconds and were control's longest stalls (docs/PERFORMANCE.md, "Large rooms:
joins"). A worker's full collections took 50-110 ms during the same fill (its consumers, transports and
DTLS state), holding up the packets and handshakes of every participant on it. Control (control/app.py) and each
worker (router/worker.py) pace theirs here while they serve:

- the objects alive once the process is up (modules, control's application and workers' clients, a worker's
  Engine and sockets) are frozen
  (:func:`gc.freeze`): no collection walks them again;
- a full collection is considered after :data:`FULL_AFTER_MIDDLE` middle collections instead of 10 (CPython's
  quarter-of-the-heap rule still applies on top), so a burst of joins does not set off one after another. Cyclic
  garbage that survived two young collections waits longer for the full collection that frees it; the young and
  middle generations (most garbage, and short pauses) are collected as before.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

FULL_AFTER_MIDDLE = 100  # middle-generation collections before a full one is considered (CPython: 10)


@contextmanager
def paced_collector() -> Iterator[None]:
    """Freezes what is alive now and paces full collections until the block ends; then restores both."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(before[0], before[1], FULL_AFTER_MIDDLE)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
