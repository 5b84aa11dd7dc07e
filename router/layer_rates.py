"""Measured bitrate and liveness of each spatial layer of a producer, from the Engine's per-layer byte counters.

The stream allocator (router/allocator.py) needs what each layer costs: the publisher's encoder decides that, not
the SDP, so it is measured as LiveKit and mediasoup do, from the bytes received per layer over a sliding window
(``snapshot_producer(h)["layers"][i]["bytes"]``, sampled about every 0.5 s, window about 1.5 s). A layer whose byte
counter has not moved for :data:`LIVE_TIMEOUT_S` is not live (the Engine uses the same 1.5 s for its own layer
choice, fastpath ``STREAM_ACTIVE_MS``). This module keeps only numbers; it never talks to the Engine itself.
"""

from __future__ import annotations

from collections.abc import Sequence

WINDOW_SAMPLES = 4  # samples kept: 3 intervals of ~0.5 s = a ~1.5 s window
SAMPLE_INTERVAL_S = 0.45  # a producer is sampled at most this often (the allocator runs every 0.5 s)
LIVE_TIMEOUT_S = 1.5  # a layer with no new bytes for this long is not live


class LayerRates:
    """Bitrates (bit/s) and liveness of one producer's layers; ``update`` feeds it the byte counters.

    Fixed-size rings, no allocation per sample once built. ``ready`` is false until the window spans two samples
    (before that a rate of 0 would mean "unknown", not "free").
    """

    __slots__ = ("_times", "_bytes", "_head", "_count", "rates", "live", "_changed", "last_sample", "stamp")

    def __init__(self, layers: int) -> None:
        self._times = [0.0] * WINDOW_SAMPLES
        self._bytes = [[0] * layers for _ in range(WINDOW_SAMPLES)]
        self._head = 0  # index of the newest sample
        self._count = 0
        self.rates = [0.0] * layers
        self.live = [False] * layers
        self._changed = [-1.0] * layers  # when each counter last moved (-1: never)
        self.last_sample = -1e9
        self.stamp = 0  # the allocator's cycle that last used it (for pruning)

    @property
    def layers(self) -> int:
        return len(self.rates)

    @property
    def ready(self) -> bool:
        return self._count >= 2

    def due(self, now: float) -> bool:
        return now - self.last_sample >= SAMPLE_INTERVAL_S

    def update(self, now: float, layer_bytes: Sequence[int]) -> None:
        """One sample of the cumulative byte counters (one per layer) at ``now`` (seconds, monotonic)."""
        n = len(self.rates)
        prev = self._bytes[self._head]
        head = (self._head + 1) % WINDOW_SAMPLES
        row = self._bytes[head]
        first = self._count == 0
        for i in range(n):
            b = layer_bytes[i] if i < len(layer_bytes) else 0
            if not first and b != prev[i]:  # liveness needs movement seen, not a stale counter
                self._changed[i] = now
            row[i] = b
        self._times[head] = now
        self._head = head
        self._count = min(self._count + 1, WINDOW_SAMPLES)
        self.last_sample = now
        oldest = (head - self._count + 1) % WINDOW_SAMPLES
        span = now - self._times[oldest]
        old = self._bytes[oldest]
        for i in range(n):
            self.rates[i] = (row[i] - old[i]) * 8.0 / span if span > 0 else 0.0
            self.live[i] = self._changed[i] >= 0 and now - self._changed[i] < LIVE_TIMEOUT_S
