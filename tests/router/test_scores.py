"""Connection-quality scoring in the worker (router/scores.py): the scorer's table, the interval deltas of producers
and consumers under an injected clock, and the ScoreKeeper's cadence and change suppression."""

from __future__ import annotations

from typing import Any

import pytest
from livekit.protocol import models

from control.rtc.quality import quality_of
from router.media_router import Consumer, Producer
from router.messages import TransportScores
from router.registry import Registry
from router.scores import (
    LOST_SCORE,
    MAX_SCORE,
    MIN_SCORE,
    NO_REPORT_LOST_S,
    POOR_SCORE,
    ConsumerMeter,
    ProducerMeter,
    ScoreKeeper,
    Scorer,
    Window,
    window_score,
)

Q = models.ConnectionQuality


def steady(window: Window, kind: str = "video", rounds: int = 12) -> float:
    """The score a stream settles at when every interval looks like ``window``."""
    scorer = Scorer()
    for _ in range(rounds):
        scorer.update(window, 10.0 if kind == "video" else 8.0)
    return scorer.score


@pytest.mark.parametrize(
    ("kind", "loss_pct", "jitter_ms", "rtt_ms", "layer_gap", "quality"),
    [
        ("video", 0.0, 0.0, 20.0, 0, Q.EXCELLENT),   # a clean LAN
        ("video", 1.0, 5.0, 50.0, 0, Q.EXCELLENT),   # 100 - 0.9 - 10
        ("video", 2.5, 5.0, 50.0, 0, Q.GOOD),        # LiveKit: 2 % falls to GOOD
        ("video", 5.0, 10.0, 100.0, 0, Q.GOOD),
        ("video", 7.0, 10.0, 100.0, 0, Q.POOR),      # 6 % falls to POOR
        ("video", 50.0, 30.0, 400.0, 0, Q.POOR),     # a capped link: floored at 30, never LOST while packets flow
        ("video", 0.0, 100.0, 300.0, 0, Q.GOOD),     # delay 350 ms: -23
        ("video", 0.0, 200.0, 800.0, 0, Q.POOR),     # delay 800 ms: -68
        ("video", 0.0, 0.0, 20.0, 1, Q.GOOD),        # one simulcast layer below the one wanted
        ("video", 0.0, 0.0, 20.0, 2, Q.POOR),
        ("audio", 2.0, 5.0, 50.0, 0, Q.EXCELLENT),   # Opus weighs loss 8
        ("audio", 4.0, 5.0, 50.0, 0, Q.GOOD),
        ("audio", 9.0, 5.0, 50.0, 0, Q.POOR),
    ],
)
def test_scorer_table(kind: str, loss_pct: float, jitter_ms: float, rtt_ms: float, layer_gap: int,
                      quality: int) -> None:
    window = Window(packets=1000, lost=round(loss_pct * 10), jitter_ms=jitter_ms, rtt_ms=rtt_ms,
                    layer_distance=layer_gap)
    assert quality_of(steady(window, kind)) == quality


def test_scores_fall_fast_and_rise_slowly() -> None:
    scorer = Scorer()
    bad = Window(packets=100, lost=50)
    good = Window(packets=100, lost=0)
    assert quality_of(scorer.update(bad, 10.0)) == Q.POOR  # one bad interval is enough
    assert scorer.score == MIN_SCORE
    rises = [quality_of(scorer.update(good, 10.0)) for _ in range(4)]
    assert rises == [Q.GOOD, Q.GOOD, Q.EXCELLENT, Q.EXCELLENT]  # 58, 74.8, 84.9, 90.9
    assert window_score(good, 10.0) == MAX_SCORE


def layers(*rows: tuple[int, int, int, int, int]) -> dict[str, Any]:
    """A producer snapshot: one (expected, received, rtx_packets, sr_count, jitter) row per layer."""
    return {"clock_rate": 90000, "layers": [
        {"expected": e, "received": r, "rtx_packets": x, "sr_count": s, "jitter": j} for e, r, x, s, j in rows]}


def test_producer_meter_uses_interval_deltas_and_repairs() -> None:
    meter = ProducerMeter("video")
    assert meter.update(layers((0, 0, 0, 0, 0)), muted=False) == MAX_SCORE  # nothing yet: nothing to judge
    meter.update(layers((1000, 1000, 0, 2, 90)), muted=False)
    before = meter.scorer.score
    # next interval: 1000 expected, 900 arrived, 80 repaired by RTX: 20 lost (2 %), the worst jitter 900 units = 10 ms
    score = meter.update(layers((2000, 1900, 80, 4, 900)), muted=False)
    assert meter.loss_fraction == pytest.approx(0.02)
    assert meter.jitter_ms == pytest.approx(10.0)
    raw = window_score(Window(packets=1000, lost=20, jitter_ms=10.0), 10.0)
    assert score == pytest.approx(0.8 * raw + 0.2 * before)
    # the earlier loss is history: an interval without loss only climbs
    assert meter.update(layers((3000, 2900 + 80, 80, 6, 0)), muted=False) > score


def test_producer_meter_simulcast_top_layer_and_restart() -> None:
    meter = ProducerMeter("video")
    meter.update(layers((100, 100, 0, 1, 0), (100, 100, 0, 1, 0), (0, 0, 0, 0, 0)), muted=False)
    meter.update(layers((200, 200, 0, 2, 0), (200, 200, 0, 2, 0), (0, 0, 0, 0, 0)), muted=False)
    assert meter.top_layer == 1  # the high layer sends nothing
    # layer 0 restarts (a new SSRC): its counters start again and count from zero, not as a loss
    score = meter.update(layers((50, 50, 0, 0, 0), (300, 300, 0, 3, 0), (0, 0, 0, 0, 0)), muted=False)
    assert score == MAX_SCORE and meter.loss_fraction == 0.0


def test_producer_meter_dry_lost_and_muted() -> None:
    meter = ProducerMeter("audio")
    meter.update(layers((500, 500, 0, 1, 0)), muted=False)
    assert meter.update(layers((500, 500, 0, 2, 0)), muted=False) == POOR_SCORE  # sender reports, no media
    assert meter.update(layers((500, 500, 0, 2, 0)), muted=False) == LOST_SCORE  # nothing at all
    assert meter.update(layers((500, 500, 0, 2, 0)), muted=True) == LOST_SCORE  # muting does not hide LOST
    assert quality_of(meter.update(layers((1000, 1000, 0, 3, 0)), muted=False)) == Q.GOOD  # climbs back: 52
    meter.scorer.set(POOR_SCORE)
    assert meter.update(layers((1000, 1000, 0, 3, 0)), muted=True) == MAX_SCORE  # muted: excellent at once


def rr(packets: int, count: int, lost: int, highest: int, *, jitter: int = 0, rtt: int = 0, current: int = 0,
       target: int = 0, paused: int = 0) -> dict[str, Any]:
    return {"packets": packets, "rr_count": count, "rr_cumulative_lost": lost, "rr_highest_seq": highest,
            "rr_jitter": jitter, "rtt_ms": rtt, "current_layer": current, "target_layer": target, "paused": paused}


def test_consumer_meter_loss_from_receiver_report_deltas() -> None:
    meter = ConsumerMeter("video")
    now = 100.0
    assert meter.update(rr(500, 1, 3, 70_000), now, muted=False) == MAX_SCORE  # the first report: baseline only
    # 1000 more expected, 100 more lost: 10 % on the subscriber's link
    score = meter.update(rr(1500, 3, 103, 71_000), now + 2, muted=False)
    assert quality_of(score) == Q.POOR
    # the same report numbers again (no new report) with packets flowing: the score holds
    assert meter.update(rr(2500, 3, 103, 71_000), now + 4, muted=False) == score


def test_consumer_meter_discounts_the_publishers_loss_and_jitter() -> None:
    upstream = ProducerMeter("video", loss_fraction=0.1, jitter_ms=20.0, clock_rate=90000)
    meter = ConsumerMeter("video")
    meter.update(rr(500, 1, 0, 1000), 0.0, muted=False)
    # 100 of 1000 lost, but the publisher's uplink lost 10 % of the same packets; 25 ms of jitter of which 20 upstream
    score = meter.update(rr(1500, 2, 100, 2000, jitter=2250, rtt=0), 2.0, muted=False, upstream=upstream)
    assert score == pytest.approx(0.8 * window_score(Window(packets=1000, lost=0, jitter_ms=5.0), 10.0)
                                  + 0.2 * MAX_SCORE)
    assert quality_of(score) == Q.EXCELLENT


def test_consumer_meter_lost_when_reports_stop_and_hold_when_idle() -> None:
    meter = ConsumerMeter("video")
    meter.update(rr(100, 1, 0, 1000), 0.0, muted=False)
    meter.update(rr(200, 2, 0, 1100), 2.0, muted=False)
    t = 2.0
    while t < 2.0 + NO_REPORT_LOST_S - 2:  # packets go out, reports stop: waiting
        t += 2
        assert meter.update(rr(200 + int(t) * 100, 2, 0, 1100), t, muted=False) == MAX_SCORE
    t += 2
    assert meter.update(rr(200 + int(t) * 100, 2, 0, 1100), t, muted=False) == LOST_SCORE
    # nothing sent (the publisher is silent): the subscriber's link is not judged
    idle = ConsumerMeter("audio")
    idle.update(rr(100, 1, 0, 1000), 0.0, muted=False)
    assert idle.update(rr(100, 1, 0, 1000), 60.0, muted=False) == MAX_SCORE
    # paused by the subscriber: excellent
    meter.scorer.set(POOR_SCORE)
    assert meter.update(rr(9999, 2, 0, 1100, paused=1), t + 2, muted=False) == MAX_SCORE
    # paused by the stream allocator (nothing fits the subscriber's estimate): poor, however good it was
    assert meter.update(rr(9999, 2, 0, 1100, paused=1), t + 4, muted=False, congested=True) == POOR_SCORE
    assert quality_of(POOR_SCORE) == Q.POOR


def test_consumer_meter_layer_gap() -> None:
    upstream = ProducerMeter("video", top_layer=2, clock_rate=90000)
    meter = ConsumerMeter("video")
    meter.update(rr(100, 1, 0, 1000, current=0), 0.0, muted=False, upstream=upstream)
    # wants the highest (the publisher sends layer 2) but gets layer 0: two layers missing
    score = meter.update(rr(1100, 2, 0, 2000, current=0), 2.0, muted=False, upstream=upstream)
    assert score == pytest.approx(0.8 * (MAX_SCORE - 70) + 0.2 * MAX_SCORE)
    # asked for layer 0 (set_video_quality(LOW)): no gap
    asked_low = ConsumerMeter("video")
    asked_low.update(rr(100, 1, 0, 1000, current=0), 0.0, muted=False, upstream=upstream, preferred=0)
    assert asked_low.update(rr(1100, 2, 0, 2000, current=0), 2.0, muted=False, upstream=upstream,
                            preferred=0) == MAX_SCORE


def pictures(*rows: tuple[int, ...]) -> dict[str, Any]:
    """A producer snapshot whose layers delivered 100 packets each and these cumulative pictures per TID."""
    return {"clock_rate": 90000, "layers": [
        {"expected": 100, "received": 100, "rtx_packets": 0, "sr_count": 1, "jitter": 0,
         "temporal_pictures": list(row)} for row in rows]}


def test_producer_meter_counts_the_temporal_layers_each_spatial_layer_carries() -> None:
    meter = ProducerMeter("video")
    meter.update(pictures((0, 0, 0, 0), (0, 0, 0, 0)), muted=False)
    assert meter.temporal_layers == [0, 0]  # nothing seen yet
    # layer 0: L1T3 at 3 fps (TID 0 2 1 2 ...), layer 1: TID 0 and 1 only this interval
    meter.update(pictures((2, 1, 3, 0), (15, 15, 0, 0)), muted=False)
    assert meter.temporal_layers == [3, 2]
    assert (meter.carried_temporal(0), meter.carried_temporal(1), meter.carried_temporal(2)) == (3, 2, 0)
    # an interval where layer 1 sent no picture keeps what it carried; one where it sent TID 0 only counts 1
    meter.update(pictures((4, 2, 6, 0), (15, 15, 0, 0)), muted=False)
    assert meter.temporal_layers == [3, 2]
    meter.update(pictures((6, 3, 9, 0), (30, 15, 0, 0)), muted=False)
    assert meter.temporal_layers == [3, 1]
    # a layer without the T bit (or not VP8) counts no pictures: no temporal layers
    plain = ProducerMeter("video")
    plain.update(layers((100, 100, 0, 1, 0)), muted=False)
    assert plain.temporal_layers == [0]


@pytest.mark.parametrize(
    ("carried", "current", "cap", "preferred", "distance", "quality"),
    [
        ((3,), 0, 3, -1, 0.0, Q.EXCELLENT),         # a single-layer L1T3 track, nothing filtered
        ((3,), 0, 2, -1, 0.0, Q.EXCELLENT),         # TID <= 2 is all of L1T3
        ((3,), 0, 1, -1, 1 / 3, Q.EXCELLENT),       # half the frame rate: one of three temporal layers, 88
        ((3,), 0, 0, -1, 2 / 3, Q.GOOD),            # a quarter of the frame rate: 77
        ((2,), 0, 0, -1, 1 / 2, Q.EXCELLENT),       # L1T2 at half its frame rate: 82.5
        ((1,), 0, 0, -1, 0.0, Q.EXCELLENT),         # the publisher sends TID 0 only: nothing is missing
        ((0,), 0, 0, -1, 0.0, Q.EXCELLENT),         # no TIDs (not VP8, no T bit): a cap filters nothing
        ((3, 3), 1, 0, -1, 2 / 3, Q.GOOD),          # a screen share's top layer at a quarter of its frame rate
        ((3, 3), 0, 3, -1, 1.0, Q.GOOD),            # its lower layer at its full frame rate: one layer down
        ((3, 3), 0, 0, -1, 1 + 2 / 3, Q.GOOD),      # both: 41.7
        ((3, 3), 0, 0, 0, 2 / 3, Q.GOOD),           # asked for the lower layer: only the frame rate is missing
        ((1, 3), 0, 0, -1, 1.0, Q.GOOD),            # the forwarded layer's own temporal layers count, not the top's
        ((2, 2, 2), 0, 0, -1, 2.5, Q.POOR),         # a simulcast camera two layers and half its frame rate down
    ],
)
def test_consumer_meter_temporal_gap_table(carried: tuple[int, ...], current: int, cap: int, preferred: int,
                                           distance: float, quality: int) -> None:
    upstream = ProducerMeter("video", top_layer=len(carried) - 1, clock_rate=90000, temporal_layers=list(carried))
    meter = ConsumerMeter("video")
    snapshot = {**rr(0, 0, 0, 0, current=current), "temporal_layer": cap}
    assert meter._layer_distance(snapshot, upstream, preferred) == pytest.approx(distance)
    assert quality_of(steady(Window(packets=1000, lost=0, rtt_ms=20.0, layer_distance=distance))) == quality


def test_consumer_meter_scores_a_lowered_tid_cap() -> None:
    """A screen share forwarded at TID 0 of its three temporal layers (the stream allocator's cap under a capped
    link) scores below one forwarded whole, from the Engine's snapshots alone."""
    upstream = ProducerMeter("video")
    upstream.update(pictures((2, 1, 3, 0), (10, 5, 10, 0)), muted=False)
    upstream.update(pictures((4, 2, 6, 0), (20, 10, 20, 0)), muted=False)
    capped, whole = ConsumerMeter("video"), ConsumerMeter("video")
    for meter, cap in ((capped, 0), (whole, 3)):
        meter.update({**rr(100, 1, 0, 1000, current=1), "temporal_layer": cap}, 0.0, muted=False, upstream=upstream)
        meter.update({**rr(1100, 2, 0, 2000, current=1), "temporal_layer": cap}, 2.0, muted=False, upstream=upstream)
    assert whole.scorer.score == MAX_SCORE
    assert capped.scorer.score == pytest.approx(0.8 * (MAX_SCORE - 35 * 2 / 3) + 0.2 * MAX_SCORE)


# ------------------------------------------------------------------------------------------ ScoreKeeper


class FakeTransport:
    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.producer_ids: set[str] = set()
        self.consumer_ids: set[str] = set()


class FakeEngine:
    def __init__(self) -> None:
        self.producers: dict[int, dict[str, Any]] = {}
        self.consumers: dict[int, dict[str, Any]] = {}
        self.reads = 0

    def snapshot_transport(self, t: int) -> dict[str, Any]:
        return {"rtt_ms": 0}

    def snapshot_producer(self, p: int) -> dict[str, Any]:
        self.reads += 1
        return self.producers[p]

    def snapshot_consumer(self, c: int) -> dict[str, Any]:
        self.reads += 1
        return self.consumers[c]


class Keeper:
    """A ScoreKeeper over fakes: transport "pub" with producer "p", transport "sub" with consumer "c" of it."""

    def __init__(self) -> None:
        self.engine = FakeEngine()
        self.transports: Registry[FakeTransport] = Registry("transport")
        self.producers: Registry[Producer] = Registry("producer")
        self.consumers: Registry[Consumer] = Registry("consumer")
        self.sent: list[tuple[float, str, TransportScores]] = []
        self.now = 0.0
        self.keeper = ScoreKeeper(self.engine, self.transports, self.producers, self.consumers,
                                  lambda t, s: self.sent.append((self.now, t, s)), interval_s=2.0)
        pub = self.transports.create("pub", FakeTransport)
        sub = self.transports.create("sub", FakeTransport)
        producer = Producer("p", "pub", "video", "0", consumers={"c"})
        self.engine.producers[self.producers.add("p", producer)] = layers((0, 0, 0, 0, 0))
        pub.producer_ids.add("p")
        self.engine.consumers[self.consumers.add("c", Consumer("c", "sub", "p", "video"))] = rr(0, 0, 0, 0)
        sub.consumer_ids.add("c")

    def run(self, until: float, step: float = 0.02) -> None:
        while self.now < until:
            self.now = round(self.now + step, 6)
            self.keeper.tick(self.now)


def test_keeper_scores_each_transport_once_per_interval_and_sends_only_changes() -> None:
    k = Keeper()
    k.run(2.1)  # the first tick's sweep spreads both transports over the next interval
    first = [(t, s) for _, t, s in k.sent]
    assert first == [("pub", TransportScores(producers=[("p", 100)])), ("sub", TransportScores(consumers=[("c", 100)]))]
    assert (k.sent[0][0], k.sent[1][0]) == (1.02, 2.02)  # their own phases, not the same tick
    reads = k.engine.reads
    k.run(10.1)
    assert len(k.sent) == 2  # unchanged scores are not sent again
    assert k.engine.reads - reads == 8  # each of the two read once per 2 s: 4 rounds each in 8 s
    # the subscriber reports heavy loss: the next round of "sub" sends POOR, "pub" stays quiet
    k.engine.consumers[k.consumers.handle("c")] = rr(1000, 1, 0, 5000)
    k.run(12.1)
    k.engine.consumers[k.consumers.handle("c")] = rr(2000, 2, 300, 6000)
    k.run(14.1)
    assert [(t, s) for _, t, s in k.sent[2:]] == [("sub", TransportScores(consumers=[("c", 30)]))]


def test_keeper_sends_when_an_entity_goes_and_forgets_closed_transports() -> None:
    k = Keeper()
    k.run(4.1)
    k.consumers.remove("c")
    k.transports.get("sub").consumer_ids.discard("c")
    k.run(6.1)
    assert (k.sent[-1][1], k.sent[-1][2]) == ("sub", TransportScores())
    assert "c" not in k.keeper.consumer_meters
    k.transports.remove("sub")
    k.run(10.1)
    assert "sub" not in k.keeper._scheduled and all(t != "sub" for _, t in k.keeper._due)


def test_keeper_mutes_a_video_producer_nobody_receives() -> None:
    k = Keeper()
    k.run(4.1)
    k.consumers.get("c").paused = True  # the only subscriber paused it: dynacast may stop the publisher
    k.engine.producers[k.producers.handle("p")] = layers((100, 100, 0, 1, 0))
    k.run(6.1)
    k.engine.producers[k.producers.handle("p")] = layers((100, 100, 0, 1, 0))  # nothing more arrives
    k.run(10.1)
    assert k.keeper.producer_meters["p"].scorer.score == MAX_SCORE
    k.consumers.get("c").paused = False
    k.run(12.1)
    assert k.keeper.producer_meters["p"].scorer.score == LOST_SCORE
