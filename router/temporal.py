"""Temporal layers in the stream allocator: which tracks are allocated by frame rate too, and the ladder of
(spatial, temporal) steps such a track moves on.

The rule follows libwebrtc's degradation preferences (``DegradationPreference`` in api/rtp_parameters.h):

- a track with a single spatial layer (no simulcast: mobile and server-side SDK publishers often send one): its
  frame rate is the only lever before a pause, so its steps are (0, t0) < (0, t1) < ... < (0, all);
- a screen share (``source`` "screen_share", libwebrtc's MAINTAIN_RESOLUTION): within each spatial layer its
  temporal steps, lowest spatial layer first, so that a step down drops frame rate before resolution;
- a simulcast camera (MAINTAIN_FRAMERATE, as LiveKit does): spatial layers only, at the full frame rate
  (:func:`allocates_temporal` is false and router/allocator.py works on the producer's layers as before).

A step's rate is its spatial layer's measured rate (router/layer_rates.py) times the share of that layer's bytes
in the pictures of TID <= t over the same window (the Engine's per-TID counters, ``temporal_bytes`` and
``temporal_pictures`` of ``snapshot_producer(h)["layers"][i]``); until a window holds :data:`MIN_PICTURES` pictures
the share is :data:`PRIOR_SHARES` (libwebrtc's rate split between temporal layers, which the `livekit` SDK's L1T3
encodings measure close to: docs/FORWARDING.md, VP8 payload descriptor). A spatial layer carries as many temporal
layers as the highest TID with pictures in the window (+ 1); a layer without TIDs (not VP8, or no T bit) has one
step, "all". The last step of a layer is always "all" (:data:`TID_ALL`): nothing is filtered.

This module keeps only numbers; the allocator samples the Engine and applies the steps
(``Engine.set_consumer_temporal``: a lower cap at the next picture, a higher one at the next layer-sync picture).
"""

from __future__ import annotations

from collections.abc import Sequence

from router.layer_rates import WINDOW_SAMPLES, LayerRates

TID_ALL = -1  # a temporal cap of "all": nothing filtered (Engine.set_consumer_temporal(c, -1))
MAX_TIDS = 4  # the VP8 descriptor's TID is 2 bits (RFC 7741 4.2)
SCREEN_SHARE = "screen_share"  # the producer's source (ProduceRequest.source) that maintains resolution
# Cumulative share of a spatial layer's bytes in TID <= t, by number of temporal layers: libwebrtc's split
# (kLayerRateAllocation, modules/video_coding/utility/simulcast_rate_allocator.cc: 60/40, 40/20/40,
# 25/15/20/40 %), the prior until a window is measured.
PRIOR_SHARES: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (0.6, 1.0),
    3: (0.4, 0.6, 1.0),
    4: (0.25, 0.4, 0.6, 1.0),
}
MIN_PICTURES = 8  # a window's measured split replaces the prior once it holds this many pictures


def carried_layers(pictures: Sequence[int]) -> int:
    """The temporal layers a spatial layer carries, from its pictures per TID over some interval: the highest TID
    with pictures, + 1 (0: none, or no TIDs)."""
    return max((t + 1 for t, n in enumerate(pictures) if n > 0), default=0)


def allocates_temporal(kind: str, source: str, spatial_layers: int) -> bool:
    """Whether a producer's consumers are allocated temporal steps (where it carries temporal layers)."""
    return kind == "video" and (spatial_layers == 1 or source == SCREEN_SHARE)


class TemporalRates:
    """Per spatial layer of one producer: how many temporal layers it carries and the cumulative share of its bytes
    up to each TID, over a window of :data:`WINDOW_SAMPLES` samples (sampled with the producer's LayerRates)."""

    __slots__ = ("_bytes", "_pictures", "_head", "_count", "counts", "shares")

    def __init__(self, layers: int) -> None:
        self._bytes = [[[0] * MAX_TIDS for _ in range(layers)] for _ in range(WINDOW_SAMPLES)]
        self._pictures = [[[0] * MAX_TIDS for _ in range(layers)] for _ in range(WINDOW_SAMPLES)]
        self._head = 0
        self._count = 0
        self.counts = [0] * layers  # temporal layers seen in the window (0: no TID)
        self.shares: list[tuple[float, ...]] = [PRIOR_SHARES[1]] * layers  # cumulative, per TID

    def update(self, tid_bytes: Sequence[Sequence[int]], tid_pictures: Sequence[Sequence[int]]) -> None:
        """One sample of the cumulative per-TID byte and picture counters of every spatial layer."""
        head = (self._head + 1) % WINDOW_SAMPLES
        rows_b, rows_p = self._bytes[head], self._pictures[head]
        for s in range(len(rows_b)):
            b = tid_bytes[s] if s < len(tid_bytes) else ()
            p = tid_pictures[s] if s < len(tid_pictures) else ()
            for t in range(MAX_TIDS):
                rows_b[s][t] = int(b[t]) if t < len(b) else 0
                rows_p[s][t] = int(p[t]) if t < len(p) else 0
        self._head = head
        self._count = min(self._count + 1, WINDOW_SAMPLES)
        oldest = (head - self._count + 1) % WINDOW_SAMPLES
        old_b, old_p = self._bytes[oldest], self._pictures[oldest]
        for s in range(len(rows_b)):
            d_b = [max(0, rows_b[s][t] - old_b[s][t]) for t in range(MAX_TIDS)]
            d_p = [max(0, rows_p[s][t] - old_p[s][t]) for t in range(MAX_TIDS)]
            n = self.counts[s] = carried_layers(d_p)
            total = sum(d_b[:n])
            if n < 2:
                self.shares[s] = PRIOR_SHARES[1]
            elif sum(d_p[:n]) < MIN_PICTURES or total <= 0:
                self.shares[s] = PRIOR_SHARES[n]
            else:
                acc = 0
                cumulative = []
                for t in range(n):
                    acc += d_b[t]
                    cumulative.append(acc / total)
                self.shares[s] = tuple(cumulative)


class Steps:
    """A track's ladder, lowest first: step ``i`` forwards spatial layer ``spatial[i]`` up to TID ``temporal[i]``
    (:data:`TID_ALL`: every picture) at ``rates[i]`` bit/s, ``live[i]`` when its spatial layer is. It has the
    fields of LayerRates the allocator reads (``rates``, ``live``, ``layers``), so that a track moves on steps as a
    simulcast camera's moves on layers."""

    __slots__ = ("spatial", "temporal", "rates", "live", "stamp")

    def __init__(self) -> None:
        self.spatial: list[int] = []
        self.temporal: list[int] = []
        self.rates: list[float] = []
        self.live: list[bool] = []
        self.stamp = -1  # the allocator's cycle it was built in

    @property
    def layers(self) -> int:
        return len(self.rates)

    @property
    def temporal_steps(self) -> bool:
        """Some spatial layer has more than one step (else the ladder is the layers', nothing to filter)."""
        return len(self.rates) > len(set(self.spatial))

    def build(self, rates: LayerRates, temporal: TemporalRates) -> None:
        """Every spatial layer's temporal steps in turn (t0 .. t(n-2), then all), from the latest samples."""
        self.spatial.clear()
        self.temporal.clear()
        self.rates.clear()
        self.live.clear()
        for s in range(rates.layers):
            shares = temporal.shares[s]
            n = len(shares)
            for t in range(n):
                self.spatial.append(s)
                self.temporal.append(t if t < n - 1 else TID_ALL)
                self.rates.append(rates.rates[s] * shares[t])
                self.live.append(rates.live[s])

    def cap_for(self, preferred: int) -> int:
        """The highest step at or below control's preferred spatial layer (-1 or beyond the top: the top)."""
        top = len(self.spatial) - 1
        if preferred < 0:
            return top
        for i in range(top, -1, -1):
            if self.spatial[i] <= preferred:
                return i
        return 0

    def index(self, spatial: int, temporal: int) -> int:
        """The step of an allocation (spatial layer, TID cap): the highest step of that layer at or below the cap
        (a cap the layer no longer carries: its "all"); -1 when the ladder has no such layer."""
        found = -1
        tid = 0  # the TID a step forwards up to: "all" is the layer's highest
        for i, s in enumerate(self.spatial):
            if s == spatial:
                if found < 0 or temporal == TID_ALL or tid <= temporal:
                    found = i
                tid += 1
        return found

    def step(self, i: int) -> tuple[int, int]:
        """(spatial layer, TID cap) of step ``i``."""
        return self.spatial[i], self.temporal[i]
