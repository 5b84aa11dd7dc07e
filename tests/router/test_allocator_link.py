"""The stream allocator (router/allocator.py) in a loop with the Engine's estimator (fastpath.SendEstimator) and a
simulated subscriber link: what the subscriber gets over time, not one rule at a time.

Every 20 ms tick the subscriber's video goes out at the rate of the layer the allocator gives it (1,200-byte
packets; none while paused), topped up with padding while a probe runs (as the Engine's tick does: 295-byte packets
up to the probe rate, stopped at an overuse the cluster's own feedback showed), into a drop-tail link of a given
capacity behind a 200 ms queue (the bench's token-bucket downlink, ``fanout --downlink-cap``); the subscriber
reports every 100 ms with transport-wide CC feedback. The allocator reads the estimator's figures as it reads the
Engine's ``snapshot_transport`` (``EngineEstimates``). Before the first feedback nothing is managed, so the top
layer floods the link, as at a subscriber's join.
"""

from __future__ import annotations

from typing import Any

import fastpath
from router.allocator import ALLOCATE_INTERVAL_S, EngineEstimates
from tests.router.fakes import estimate_of
from tests.router.test_allocator import ProbingEngine, World

TICK_S = 0.02
MEDIA_SIZE = 1200
PAD_SIZE = 295
# `python -m bench fanout --simulcast --rate 300`: 1,200-byte packets, 300 per second on the top layer.
BENCH_LAYERS = [288_000.0, 960_000.0, 2_880_000.0]


class Link:
    """The estimator (the Engine's send side) and the subscriber's capped link with its feedback."""

    def __init__(self, capacity_bps: float, queue_s: float = 0.2) -> None:
        self.bwe = fastpath.SendEstimator(5)
        self.rec = fastpath.TwccRecorder()
        self.capacity = capacity_bps
        self.queue_us = queue_s * 1e6
        self.free_us = 0.0
        self.next_report_us = 0.0
        self.probe_bps = 0.0
        self.probe_until_us = 0.0
        self.probe_packets = 0
        self.probe_fed = False  # feedback came since the probe started (an overuse is the probe's own)
        self.media_credit = 0.0
        self.rtx_bytes = 0
        self.nacked: list[tuple[float, float, Any]] = []  # (resend at, first sent at, layer) of lost media

    def snapshot_transport(self, t: int) -> dict[str, Any]:
        return {**self.bwe.stats, "rtx_bytes": self.rtx_bytes}  # the keys of the Engine's snapshot_transport

    def transport_estimate(self, t: int) -> tuple[int, str, float, int, int, int, int] | None:
        return estimate_of(self.snapshot_transport(t))

    def send(self, at_us: float, size: int, padding: bool = False) -> bool:
        seq = self.bwe.sent(int(at_us), size, padding)
        start = max(at_us, self.free_us)
        if start - at_us > self.queue_us:  # the queue is full: dropped
            return False
        self.free_us = start + size * 8e6 / self.capacity
        self.rec.record(seq, int(self.free_us + 20_000))
        return True

    def tick(self, now_us: float, media_bps: float, layer: Any) -> None:
        """One 20 ms tick: media of ``layer`` at ``media_bps``; a media packet the link dropped is NACKed and
        resent once 100 ms later (as the Engine answers NACKs: not once 1 s old or of a layer the consumer left)."""
        self.media_credit += media_bps * TICK_S / 8
        sent = 0
        due = [n for n in self.nacked if n[0] <= now_us]
        self.nacked = [n for n in self.nacked if n[0] > now_us]
        for _, first, was in due:
            if was == layer and now_us - first <= 1e6:
                self.send(now_us + sent * 100, MEDIA_SIZE)
                self.rtx_bytes += MEDIA_SIZE
                sent += 1
        while self.media_credit >= MEDIA_SIZE:
            if not self.send(now_us + sent * 100, MEDIA_SIZE):
                self.nacked.append((now_us + 100_000, now_us, layer))
            self.media_credit -= MEDIA_SIZE
            sent += 1
        if now_us < self.probe_until_us and not (self.bwe.stats["bwe_state"] == "overusing" and self.probe_fed):
            deficit = self.probe_bps * TICK_S / 8 - sent * MEDIA_SIZE
            while deficit > 0:
                self.send(now_us + sent * 100, PAD_SIZE, True)
                self.probe_packets += 1
                deficit -= PAD_SIZE
                sent += 1
        else:
            self.probe_until_us = 0.0
        self.bwe.expire_probe(int(now_us))
        if now_us >= self.next_report_us:
            for fb in self.rec.build(0xABC):
                self.bwe.feedback(fb, int(now_us))
                self.probe_fed = True
            self.next_report_us = now_us + 100_000


class LinkEngine(ProbingEngine):
    """The fake Engine whose probes start a cluster on the link."""

    def __init__(self, link: Link) -> None:
        super().__init__()
        self.link = link

    def probe(self, t: int, bps: int, duration_ms: int) -> bool:
        super().probe(t, bps, duration_ms)
        now_us = self.clock() * 1e6
        self.link.probe_bps, self.link.probe_until_us = bps, now_us + duration_ms * 1000
        self.link.probe_fed = False
        self.link.bwe.probe(int(now_us), duration_ms * 1000)
        return True


def run_link(capacity_bps: float, seconds: float, layers: list[float]) -> tuple[World, Link, list[tuple[float, Any]]]:
    """One simulcast track to one subscriber over the link; returns the world, the link and the subscriber's layer
    ("paused" or a spatial layer) after every pass, with its time since the start."""
    link = Link(capacity_bps)
    engine = LinkEngine(link)
    w = World(engine)
    w.allocator.estimates = EngineEstimates(link)
    w.producer("v", "video", layers)
    w.transport("sub")
    w.consumer("c", "sub", "v")
    start = w.now
    timeline: list[tuple[float, Any]] = []
    next_pass = start
    while w.now - start < seconds:
        w.now += TICK_S
        h = w.producers.handle("v")
        for i, bps in enumerate(layers):
            engine.bytes[h][i] += bps / 8 * TICK_S
        got = w.got("c")
        link.tick(w.now * 1e6, 0.0 if got == "paused" else layers[int(got)], got)
        w.allocator.tick(w.now)
        if w.now >= next_pass:
            timeline.append((round(w.now - start, 2), w.got("c")))
            next_pass += ALLOCATE_INTERVAL_S
    return w, link, timeline


def paused_seconds(timeline: list[tuple[float, Any]], since: float = 0.0) -> float:
    return sum(ALLOCATE_INTERVAL_S for t, got in timeline if t >= since and got == "paused")


def test_after_the_join_flood_a_capped_subscriber_gets_its_lowest_layer_within_a_few_seconds() -> None:
    # `fanout --simulcast --rate 300 --downlink-cap 500`: a 288 kbit/s lowest layer under a 500 kbit/s cap. The
    # join's flood (the 2.9 Mbit/s top layer before any feedback) ends in heavy loss and overuse, and the track
    # may be paused; it must be back on the lowest layer within a few seconds and stay there.
    w, link, timeline = run_link(500_000, 20.0, BENCH_LAYERS)
    resumed = [t for t, got in timeline if got == 0]
    assert resumed, timeline
    assert resumed[0] <= 6.0, timeline
    assert paused_seconds(timeline, since=resumed[0]) == 0.0, timeline
    assert timeline[-1][1] == 0


def test_a_link_that_holds_the_lowest_layer_is_not_left_paused_for_long() -> None:
    # 400 kbit/s: the 288 kbit/s layer fits with little room; a probe above the link fails, the next comes soon.
    w, link, timeline = run_link(400_000, 20.0, BENCH_LAYERS)
    assert paused_seconds(timeline, since=8.0) == 0.0, timeline
    assert timeline[-1][1] == 0
