"""The stream allocator's rules (router/allocator.py) on an injected clock, a fake Engine and fixed estimates.

Producers "send" at given per-layer rates: the fake Engine's byte counters grow by them between passes, so the
allocator measures the rates as it does in a worker. Each test asserts what the subscriber gets (the layer the
Engine is asked for, or paused) and what control hears.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from router.allocator import (
    ALLOCATE_INTERVAL_S,
    PAUSE_HOLD_S,
    PROBE_BACKOFF_FACTOR,
    PROBE_BACKOFF_MAX_S,
    PROBE_BACKOFF_S,
    PROBE_CLEAN_PASSES,
    PROBE_DURATION_S,
    PROBE_RESUME_BACKOFF_MAX_S,
    PROBE_RESUME_BACKOFF_S,
    PROBE_RESUME_DURATION_S,
    PROBE_STABLE_S,
    RAISE_HOLD_S,
    RAISE_MARGIN,
    VIDEO_SHARE,
    EngineEstimates,
    Estimate,
    FixedEstimates,
    StreamAllocator,
    TransportAllocation,
    probe_rate,
)
from router.layer_rates import LayerRates
from router.media_router import Consumer, Producer
from router.registry import Registry
from tests.router.fakes import estimate_of

SIMULCAST = [150_000.0, 450_000.0, 1_700_000.0]  # the 720p publisher: 320, 640 and 1280 px
OPUS = [64_000.0]


@dataclass
class FakeTransport:
    id: str
    handle: int
    consumer_ids: set[str] = field(default_factory=set)


class FakeEngine:
    """Byte counters per producer handle; records the consumer calls."""

    def __init__(self) -> None:
        self.bytes: dict[int, list[float]] = {}
        self.calls: list[tuple[str, int, int]] = []

    def snapshot_producer(self, p: int) -> dict[str, Any]:
        return {"layers": [{"bytes": int(b)} for b in self.bytes[p]]}

    def set_consumer_layer(self, c: int, spatial: int) -> None:
        self.calls.append(("layer", c, spatial))

    def pause_consumer(self, c: int) -> None:
        self.calls.append(("pause", c, 0))

    def resume_consumer(self, c: int) -> None:
        self.calls.append(("resume", c, 0))


class ProbingEngine(FakeEngine):
    """A fake Engine that can probe: records (time, transport, bps, duration_ms); ``on_probe`` may change the
    world (a link with room: the estimate rises); ``accept`` False = no RTX consumer to pad on."""

    def __init__(self) -> None:
        super().__init__()
        self.probes: list[tuple[float, int, int, int]] = []
        self.accept = True
        self.on_probe: Any = None
        self.clock: Any = None

    def probe(self, t: int, bps: int, duration_ms: int) -> bool:
        if not self.accept:
            return False
        self.probes.append((self.clock(), t, bps, duration_ms))
        if self.on_probe is not None:
            self.on_probe(bps)
        return True


class World:
    def __init__(self, engine: FakeEngine | None = None) -> None:
        self.engine = engine if engine is not None else FakeEngine()
        if isinstance(self.engine, ProbingEngine):
            self.engine.clock = lambda: self.now
        self.estimates = FixedEstimates()
        self.transports: Registry[FakeTransport] = Registry("transport")
        self.producers: Registry[Producer] = Registry("producer")
        self.consumers: Registry[Consumer] = Registry("consumer")
        self.states: list[tuple[str, bool]] = []
        self.allocator = StreamAllocator(self.engine, self.estimates, self.transports,  # type: ignore[arg-type]
                                         self.producers, self.consumers,
                                         lambda c, paused: self.states.append((c.id, paused)))
        self.rates: dict[int, list[float]] = {}
        self.now = 1000.0

    def producer(self, pid: str, kind: str, rates: list[float]) -> None:
        h = self.producers.add(pid, Producer(pid, "pub", kind, "0"))
        self.rates[h] = list(rates)
        self.engine.bytes[h] = [0.0] * len(rates)

    def transport(self, tid: str, estimate_bps: int | None = None) -> None:
        h = self.transports.add(tid, FakeTransport(tid, len(self.transports)))
        self.estimate(tid, estimate_bps)
        assert self.transports.handle(tid) == h

    def estimate(self, tid: str, bps: int | None, state: str = "normal", loss: float = 0.0) -> None:
        h = self.transports.handle(tid)
        if bps is None:
            self.estimates.estimates.pop(h, None)
        else:
            self.estimates.estimates[h] = Estimate(bps, state, loss)

    def consumer(self, cid: str, tid: str, pid: str, *, preferred: int = -1, priority: int = 1) -> int:
        kind = self.producers.get(pid).kind
        h = self.consumers.add(cid, Consumer(cid, tid, pid, kind, preferred_layer=preferred, priority=priority))
        self.transports.get(tid).consumer_ids.add(cid)
        return h

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / ALLOCATE_INTERVAL_S)):
            self.now += ALLOCATE_INTERVAL_S
            for h, rates in self.rates.items():
                counters = self.engine.bytes[h]
                for i, bps in enumerate(rates):
                    counters[i] += bps / 8 * ALLOCATE_INTERVAL_S
            self.allocator.tick(self.now)

    def got(self, cid: str) -> int | str:
        """What the subscriber gets: "paused" or the layer the Engine forwards (highest <= its cap)."""
        c = self.consumers.get(cid)
        if c.bw_paused:
            return "paused"
        n = len(self.rates[self.producers.handle(c.producer_id)])
        return n - 1 if c.layer_cap < 0 else c.layer_cap


def test_layer_rates_measure_bitrate_and_liveness() -> None:
    rates = LayerRates(2)
    rates.update(0.0, [1000, 0])
    assert not rates.ready and rates.live == [False, False]  # a stale counter is not evidence of life
    rates.update(0.5, [1000 + 62_500, 0])
    assert rates.ready and rates.rates == [1_000_000.0, 0.0] and rates.live == [True, False]
    for i in range(1, 5):
        rates.update(0.5 + i * 0.5, [1000 + 62_500, 0])
    assert rates.live == [False, False] and rates.rates[0] == 0.0  # nothing for 2 s: not live


# (estimate bit/s, [(preferred, priority)] of the video consumers, with audio?) -> what each gets
ROWS = [
    (5_000_000, [(-1, 1)], False, [2]),  # everything fits: the top layer, as today
    (1_000_000, [(-1, 1)], False, [1]),  # 0.9 x 1 M = 900 k: 640 px
    (400_000, [(-1, 1)], False, [0]),  # 360 k: 320 px
    (100_000, [(-1, 1)], False, ["paused"]),  # not even 150 k fits
    (5_000_000, [(1, 1)], False, [1]),  # never above the preferred layer
    (1_200_000, [(-1, 1), (-1, 1)], False, [1, 1]),  # 1.08 M: both at 640 px, not one at 1280 and one paused
    (400_000, [(-1, 1), (-1, 2)], False, [0, 0]),  # 360 k: both at their lowest
    (250_000, [(-1, 1), (-1, 2)], False, ["paused", 0]),  # 225 k: only the higher priority gets its lowest
    (220_000, [(-1, 1)], False, [0]),  # 198 k: fits without audio ...
    (220_000, [(-1, 1)], True, ["paused"]),  # ... but audio (64 k) is served first
    (250_000, [(-1, 1)], True, [0]),  # 225 k - 64 k = 161 k: the lowest layer fits next to audio
]


@pytest.mark.parametrize(("estimate", "video", "audio", "expected"), ROWS)
def test_allocation_table(estimate: int, video: list[tuple[int, int]], audio: bool, expected: list[int | str]
                          ) -> None:
    w = World()
    w.transport("sub", estimate)
    for i, (preferred, priority) in enumerate(video):
        w.producer(f"v{i}", "video", SIMULCAST)
        w.consumer(f"c{i}", "sub", f"v{i}", preferred=preferred, priority=priority)
    if audio:
        w.producer("a", "audio", OPUS)
        w.consumer("ca", "sub", "a")
    w.run(2.0)
    assert [w.got(f"c{i}") for i in range(len(video))] == expected
    if audio:
        assert w.got("ca") == 0 and not w.consumers.get("ca").bw_paused


def test_no_estimate_leaves_the_preferred_layer() -> None:
    w = World()
    w.transport("sub")
    w.producer("v", "video", SIMULCAST)
    w.consumer("c", "sub", "v", preferred=1)
    w.run(5.0)
    assert w.engine.calls == [] and w.states == [] and w.got("c") == 1


def test_lowers_within_a_second_of_a_drop_and_goes_back_to_preferred_without_estimate() -> None:
    w = World()
    w.transport("sub", 5_000_000)
    w.producer("v", "video", SIMULCAST)
    h = w.consumer("c", "sub", "v")
    w.run(3.0)
    assert w.got("c") == 2 and w.engine.calls == []
    w.estimate("sub", 300_000)
    w.run(1.0)
    assert w.got("c") == 0 and w.engine.calls == [("layer", h, 0)]  # 270 k: only the 150 k layer fits
    w.estimate("sub", None)  # the estimator went away: today's behaviour again
    w.run(0.5)
    assert w.got("c") == 2 and w.engine.calls[-1] == ("layer", h, -1)


def test_no_flapping_around_a_threshold_then_a_slow_raise() -> None:
    w = World()
    w.transport("sub", 5_000_000)
    w.producer("v", "video", SIMULCAST)
    h = w.consumer("c", "sub", "v")
    w.run(2.0)
    # Where the estimate just carries 1280 px: below it the layer no longer fits (between it and 1280 px / 0.9
    # a link without overuse or loss keeps what it carries: the headroom is asked of a raise only)
    threshold = SIMULCAST[2]
    for i in range(40):  # 20 s of an estimate wobbling 3 % around it
        w.estimate("sub", int(threshold * (0.97 if i % 2 == 0 else 1.03)))
        w.run(0.5)
    assert w.engine.calls == [("layer", h, 1)]  # lowered once, never raised back
    w.estimate("sub", 2_500_000)
    w.run(0.5 * 2)
    assert w.got("c") == 1  # three passes of headroom needed
    w.run(1.0)
    assert w.got("c") == 2 and w.engine.calls[-1] == ("layer", h, 2)


def test_raise_waits_after_a_bandwidth_driven_lowering() -> None:
    w = World()
    w.transport("sub", 5_000_000)
    w.producer("v", "video", SIMULCAST)
    w.consumer("c", "sub", "v")
    w.run(2.0)
    w.estimate("sub", 1_000_000)
    w.run(0.5)
    assert w.got("c") == 1
    lowered = w.now
    w.estimate("sub", 5_000_000)
    while w.got("c") != 2:
        w.run(0.5)
    assert w.now - lowered >= RAISE_HOLD_S


def test_pause_when_nothing_fits_and_resume_layer_by_layer() -> None:
    w = World()
    w.transport("sub", 5_000_000)
    w.producer("v", "video", SIMULCAST)
    w.producer("a", "audio", OPUS)
    h = w.consumer("c", "sub", "v")
    w.consumer("ca", "sub", "a")
    w.run(2.0)
    w.estimate("sub", 100_000)
    w.run(0.5)
    assert w.got("c") == "paused" and w.states == [("c", True)] and ("pause", h, 0) in w.engine.calls
    assert w.got("ca") == 0  # audio keeps flowing
    w.run(10.0)
    assert w.states == [("c", True)]  # no flapping while it does not fit
    w.estimate("sub", 5_000_000)  # the hold after the lowering is over: three passes of headroom
    w.run(1.0)
    assert w.got("c") == "paused"
    w.run(0.5)
    assert w.got("c") == 0 and w.states == [("c", True), ("c", False)]
    assert w.engine.calls[-2:] == [("layer", h, 0), ("resume", h, 0)]
    w.run(1.5)
    assert w.got("c") == 1
    w.run(1.5)
    assert w.got("c") == 2


def test_lowest_layers_for_all_before_more_for_any_when_raising() -> None:
    w = World()
    w.transport("sub", 100_000)
    handles = []
    for i in range(3):
        w.producer(f"v{i}", "video", SIMULCAST)
        handles.append(w.consumer(f"c{i}", "sub", f"v{i}"))
    w.run(2.0)
    assert [w.got(f"c{i}") for i in range(3)] == ["paused"] * 3
    w.estimate("sub", 1_500_000)  # 1.35 M: 3 x 150 k, then 450 k for two of them fit with the margin
    w.run(30.0)
    resumed = [c for kind, c, _ in w.engine.calls if kind == "resume"]
    first_raise = next(i for i, (kind, _, layer) in enumerate(w.engine.calls) if kind == "layer" and layer == 1)
    assert sorted(resumed) == sorted(handles)
    assert all(w.engine.calls.index(("resume", h, 0)) < first_raise for h in handles)
    assert sorted(w.got(f"c{i}") for i in range(3)) == [0, 1, 1]


def test_control_pause_and_preference_are_kept_apart_from_the_allocation() -> None:
    w = World()
    w.transport("sub", 1_000_000)
    w.producer("v", "video", SIMULCAST)
    w.consumer("c", "sub", "v")
    w.run(2.0)
    c = w.consumers.get("c")
    assert c.allocated_layer == 1 and c.layer_cap == 1
    c.preferred_layer = 0
    assert c.layer_cap == 0  # the lower of the two
    c.preferred_layer = 2
    assert c.layer_cap == 1
    w.allocator.preference_changed(c, 2)  # the bandwidth limit (1 < 2) stays
    assert c.layer_cap == 1
    c.preferred_layer, c.allocated_layer = 2, 0
    w.allocator.preference_changed(c, 0)  # a limit that only followed the old preference goes
    assert c.layer_cap == 2


def test_engine_estimates_read_the_snapshot_keys_when_present() -> None:
    class Snapshots:
        def __init__(self, snap: dict[str, Any]) -> None:
            self.snap = snap

        def transport_estimate(self, t: int) -> tuple[int, str, float, int, int, int, int] | None:
            return estimate_of(self.snap)  # the Engine's, for a transport whose snapshot_transport is snap

    assert EngineEstimates(Snapshots({"tx_bytes": 1})).estimate(0) is None  # an Engine without estimation
    assert EngineEstimates(Snapshots({"bwe_bps": 0, "bwe_state": "normal"})).estimate(0) is None  # unknown yet
    snap = {"bwe_bps": 480_000, "bwe_state": "overusing", "bwe_loss": 0.05, "sent_bps": 600_000,
            "twcc_feedback_packets": 0, "remb_packets": 0}
    # No feedback yet (a peer that did not take transport-cc never sends any): the starting guess manages nothing.
    assert EngineEstimates(Snapshots(snap)).estimate(0) is None
    assert EngineEstimates(Snapshots({**snap, "twcc_feedback_packets": 3})).estimate(0) == Estimate(
        480_000, "overusing", 0.05)
    assert EngineEstimates(Snapshots({**snap, "remb_packets": 1})).estimate(0) == Estimate(480_000, "overusing", 0.05)


def test_overuse_holds_raises() -> None:
    w = World()
    w.transport("sub", 100_000)
    w.producer("v", "video", SIMULCAST)
    w.consumer("c", "sub", "v")
    w.run(RAISE_HOLD_S + 2.0)
    assert w.got("c") == "paused"
    w.estimate("sub", 5_000_000, state="overusing")
    w.run(5.0)
    assert w.got("c") == "paused"
    w.estimate("sub", 5_000_000)
    w.run(1.5)
    assert w.got("c") == 0


# ---- probing (docs/FORWARDING.md, Probing) ---------------------------------------------------------------------


def probing_world(estimate_bps: int, **estimate: Any) -> tuple[World, ProbingEngine]:
    engine = ProbingEngine()
    w = World(engine)
    w.transport("sub", estimate_bps)
    w.estimate("sub", estimate_bps, **estimate)
    w.producer("v", "video", SIMULCAST)
    w.consumer("c", "sub", "v")
    return w, engine


def top_goal() -> float:
    """The estimate the 1280 px layer needs (with the raise margin, inside the video share)."""
    return SIMULCAST[2] * RAISE_MARGIN / VIDEO_SHARE


def test_first_allocation_probes_before_lowering_from_the_start_estimate() -> None:
    w, engine = probing_world(1_000_000)  # the Engine's start value, below what the top layer needs
    engine.on_probe = lambda bps: w.estimate("sub", int(bps * 0.95))  # a clean link: the probe lifts it
    w.run(3.0)
    assert len(engine.probes) == 1
    _, t, bps, duration_ms = engine.probes[0]
    assert (t, duration_ms) == (w.transports.handle("sub"), PROBE_DURATION_S * 1000)
    assert bps == pytest.approx(probe_rate(top_goal()), rel=0.05)
    assert w.got("c") == 2 and ("layer", 0, 1) not in engine.calls  # never lowered
    w.run(10.0)
    assert w.got("c") == 2 and len(engine.probes) == 1  # nothing more to probe for


def test_a_failed_first_probe_lowers_and_later_probes_back_off() -> None:
    w, engine = probing_world(1_000_000)
    w.run(2.0)
    assert len(engine.probes) == 1 and w.got("c") == 1  # the probe changed nothing: 640 px fits 900 k
    w.run(60.0)
    times = [p[0] for p in engine.probes]
    gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
    assert len(gaps) >= 5 and max(gaps) <= PROBE_BACKOFF_MAX_S + PROBE_DURATION_S + 2 * ALLOCATE_INTERVAL_S
    # Each gap: the probe's own 0.5 s, the backoff (3 s, x1.5 after each failure), rounded up to a pass.
    for i, gap in enumerate(gaps):
        wait = min(PROBE_BACKOFF_S * PROBE_BACKOFF_FACTOR ** (i + 1), PROBE_BACKOFF_MAX_S)
        assert wait + PROBE_DURATION_S <= gap <= wait + PROBE_DURATION_S + 2 * ALLOCATE_INTERVAL_S
    assert all(p[2] == pytest.approx(probe_rate(top_goal() + 0), rel=0.2) for p in engine.probes[1:])
    assert w.got("c") == 1


def test_a_successful_probe_raises_at_once_and_resets_the_backoff() -> None:
    w, engine = probing_world(1_000_000)
    w.run(20.0)  # a few failures: the backoff has grown
    failures = len(engine.probes)
    assert failures >= 3 and w.got("c") == 1
    engine.on_probe = lambda bps: w.estimate("sub", int(bps))
    start = w.now
    w.run(12.0)
    raised_after = len(engine.probes)
    assert raised_after == failures + 1 and w.got("c") == 2
    probe_time = engine.probes[-1][0]
    assert probe_time - start <= PROBE_BACKOFF_S * PROBE_BACKOFF_FACTOR ** failures
    # The raise followed one pass after the result, not RAISE_TICKS: the layer call is at most 1.5 s later.
    # The raise holds PROBE_STABLE_S; then congestion: lowered, held, and the next probe comes right after the
    # hold (the backoff was reset).
    w.run(PROBE_STABLE_S + 1.0)
    raised_after = len(engine.probes)
    engine.on_probe = None
    w.estimate("sub", 1_000_000)
    w.run(0.5)
    assert w.got("c") == 1
    lowered = w.now
    w.run(RAISE_HOLD_S + 1.5)
    assert len(engine.probes) == raised_after + 1
    assert engine.probes[-1][0] - lowered <= RAISE_HOLD_S + 1.0


def test_a_successful_probe_needs_one_pass_to_raise() -> None:
    w, engine = probing_world(400_000)
    w.run(2.0)  # the first probe fails: 320 px
    assert w.got("c") == 0
    engine.on_probe = lambda bps: w.estimate("sub", int(bps))
    raises = []
    for _ in range(40):
        before = w.got("c")
        w.run(ALLOCATE_INTERVAL_S)
        if w.got("c") != before:
            raises.append(w.now)
    assert w.got("c") == 2
    probes = [p[0] for p in engine.probes[1:]]
    assert len(probes) == 2 and len(raises) == 2  # one probe per layer up
    for probe_at, raised_at in zip(probes, raises, strict=True):
        # The pass that reads the result raises: one pass, not RAISE_TICKS.
        assert raised_at - probe_at == pytest.approx(ALLOCATE_INTERVAL_S)


@pytest.mark.parametrize(("state", "loss"), [("overusing", 0.0), ("normal", 0.15)], ids=["overusing", "15 % loss"])
def test_no_probe_on_a_congested_link(state: str, loss: float) -> None:
    w, engine = probing_world(1_000_000)
    w.run(2.0)  # first probe failed: 640 px
    assert len(engine.probes) == 1
    w.estimate("sub", 1_000_000, state, loss)
    w.run(30.0)
    assert len(engine.probes) == 1


@pytest.mark.parametrize("states", [["underusing"], ["underusing", "normal"]], ids=["draining", "wavering"])
def test_an_underusing_link_is_probed(states: list[str]) -> None:
    # A queue draining after a cap was lifted reads as underuse (or a verdict that wavers between it and normal):
    # not congestion, so the raise that needs a probe gets one.
    w, engine = probing_world(1_000_000)
    w.run(2.0)  # first probe failed: 640 px
    assert len(engine.probes) == 1
    for i in range(int(30.0 / ALLOCATE_INTERVAL_S)):
        w.estimate("sub", 1_000_000, states[i % len(states)], 0.0)
        w.run(ALLOCATE_INTERVAL_S)
    assert len(engine.probes) > 1


def test_without_an_rtx_consumer_nothing_probes_and_the_rules_are_as_before() -> None:
    w, engine = probing_world(1_000_000)
    engine.accept = False
    w.run(2.0)
    assert w.got("c") == 1 and engine.probes == []


def test_an_all_paused_transport_probes_despite_a_stale_loss() -> None:
    w, engine = probing_world(100_000)
    w.run(2.0)
    assert w.got("c") == "paused"
    w.estimate("sub", 100_000, loss=0.3)  # the last loss reported before the video stopped: nothing is sent now
    engine.on_probe = lambda bps: w.estimate("sub", int(bps))
    w.run(RAISE_HOLD_S + PROBE_BACKOFF_S + 3.0)
    assert w.got("c") != "paused"


def test_a_paused_track_resumes_on_a_link_that_holds_its_lowest_layer_with_little_room() -> None:
    # A 240 kbit/s link: the 150 kbit/s layer fits (a 183 kbit/s estimate), a probe above the link's rate ends in
    # overuse. The resume probe stays below the link (1.2x the goal, not the goal + 200 kbit/s of a raise's).
    w, engine = probing_world(100_000)
    w.run(2.0)
    assert w.got("c") == "paused"

    def link(bps: float) -> None:
        if bps <= 240_000:
            w.estimate("sub", int(bps * 0.95))
        else:
            w.estimate("sub", 200_000, "overusing")

    engine.on_probe = link
    w.run(RAISE_HOLD_S + PROBE_BACKOFF_S + 3.0)
    goal = SIMULCAST[0] * RAISE_MARGIN / VIDEO_SHARE
    resumes = [p for p in engine.probes[1:] if p[2] < 240_000]
    assert resumes and resumes[0][2] == pytest.approx(probe_rate(goal, resume=True), rel=0.05)
    assert w.got("c") == 0  # (a later probe for 640 px ends in overuse; 320 px stays)


def test_an_all_paused_transport_probes_despite_a_stale_overuse_and_resumes_on_a_fresh_verdict() -> None:
    w, engine = probing_world(100_000)
    w.run(2.0)
    assert w.got("c") == "paused"
    w.estimate("sub", 5_000_000, state="overusing")  # the verdict of the last feedback before the pause
    engine.on_probe = lambda bps: w.estimate("sub", int(bps))  # the probe's feedback: normal, room
    w.run(RAISE_HOLD_S + 2.0)
    assert len(engine.probes) >= 2  # the first allocation's, then one for the lowest layer
    assert engine.probes[1][2] == pytest.approx(probe_rate(SIMULCAST[0] * RAISE_MARGIN / VIDEO_SHARE, resume=True),
                                                rel=0.05)
    assert w.got("c") != "paused"


def test_a_transport_without_video_tracks_and_a_stale_overuse_is_left_alone() -> None:
    state = TransportAllocation("sub")
    probes: list[float] = []
    for i in range(20):  # raised before: no video track is not "every video track paused"
        assert state.decide(1000.0 + i, Estimate(100_000, "overusing"), 64_000, [], probes.append) == []
    assert probes == []


def test_a_lowering_soon_after_a_probed_raise_backs_off_the_next_probe() -> None:
    # A lossy link: every probe "succeeds", every raise is undone a few seconds later. The probes space out.
    w, engine = probing_world(1_000_000)
    w.run(2.0)
    engine.on_probe = lambda bps: w.estimate("sub", int(bps))
    for _ in range(5):
        before = len(engine.probes)
        for _ in range(200):
            w.run(ALLOCATE_INTERVAL_S)
            if len(engine.probes) > before and w.got("c") == 2:
                break
        w.run(3.0)
        w.estimate("sub", 1_000_000)  # the raise did not hold
        w.run(ALLOCATE_INTERVAL_S)
        assert w.got("c") == 1
    times = [p[0] for p in engine.probes[1:]]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0] + PROBE_BACKOFF_S


def test_a_probe_needs_passes_in_a_row_without_congestive_loss() -> None:
    w, engine = probing_world(1_000_000)
    w.run(2.0)
    assert len(engine.probes) == 1
    for i in range(60):  # 15 % loss in every other window: congestion, never probed
        w.estimate("sub", 1_000_000, loss=0.15 if i % 2 else 0.0)
        w.run(ALLOCATE_INTERVAL_S)
    assert len(engine.probes) == 1
    w.estimate("sub", 1_000_000)
    w.run(ALLOCATE_INTERVAL_S * (PROBE_CLEAN_PASSES + 1))
    assert len(engine.probes) == 2


def test_steady_random_loss_that_retransmission_repairs_does_not_hold_a_probe() -> None:
    # 5 % loss in every window (NACK/RTX repairs it; it does not grow with the rate): the raise is probed for.
    w, engine = probing_world(1_000_000)
    w.run(2.0)
    assert len(engine.probes) == 1 and w.got("c") == 1
    engine.on_probe = lambda bps: w.estimate("sub", int(bps * 0.95), loss=0.05)
    w.estimate("sub", 1_000_000, loss=0.05)
    w.run(RAISE_HOLD_S + PROBE_BACKOFF_S + 3.0)
    assert len(engine.probes) >= 2 and w.got("c") == 2


def test_retransmissions_come_off_the_budget_but_never_pause_a_track_by_themselves() -> None:
    w = World()
    w.transport("sub", 600_000)
    w.producer("v", "video", SIMULCAST)
    w.consumer("c", "sub", "v")
    w.run(2.0)
    assert w.got("c") == 1  # 540 k of video budget: 640 px (450 k)
    h = w.transports.handle("sub")
    sent = 0

    def retransmit(bps: float, seconds: float) -> None:
        nonlocal sent
        for _ in range(round(seconds / ALLOCATE_INTERVAL_S)):
            sent += int(bps / 8 * ALLOCATE_INTERVAL_S)
            w.estimates.estimates[h] = Estimate(600_000, rtx_bytes=sent)
            w.run(ALLOCATE_INTERVAL_S)

    retransmit(80_000, 2.0)
    assert w.got("c") == 1  # 460 k left: still fits
    retransmit(200_000, 2.0)
    assert w.got("c") == 0  # 340 k left: 320 px
    retransmit(5_000_000, 3.0)
    assert w.got("c") == 0  # at most a quarter of the budget goes to retransmissions: 405 k, not paused
    retransmit(0, RAISE_HOLD_S + 3.0)
    assert w.got("c") == 1  # the losses stopped: back up


def test_retransmissions_never_pause_a_track_whose_lowest_layer_fits_without_them() -> None:
    # `fanout --simulcast --rate 300 --downlink-cap 500`: a 288 kbit/s lowest layer, a 400 kbit/s estimate after the
    # join's flood (360 k of video budget) and the flood's losses being retransmitted. A quarter of the budget off
    # for them would leave 270 k: the track was paused by its retransmissions.
    w = World()
    w.transport("sub", 5_000_000)
    w.producer("v", "video", [288_000.0, 960_000.0, 2_880_000.0])
    w.consumer("c", "sub", "v")
    w.run(2.0)
    h = w.transports.handle("sub")
    sent = 0
    for _ in range(8):
        sent += int(300_000 / 8 * ALLOCATE_INTERVAL_S)
        w.estimates.estimates[h] = Estimate(400_000, rtx_bytes=sent)
        w.run(ALLOCATE_INTERVAL_S)
        assert w.got("c") == 0
    assert w.states == []


def paused_by_a_flood(**estimate: Any) -> tuple[World, ProbingEngine, float]:
    """A subscriber paused by a low estimate after its join (the estimate and loss stay as the last feedback
    before the pause left them); returns when it was paused."""
    w, engine = probing_world(100_000, **estimate)
    for _ in range(8):
        w.run(ALLOCATE_INTERVAL_S)
        if w.got("c") == "paused":
            return w, engine, w.now
    raise AssertionError("not paused")


def test_a_paused_transport_probes_to_resume_within_seconds_despite_the_floods_stale_loss() -> None:
    # The flood's loss (80 %) stays in the estimate: padding does not renew it. The resume probe's result must be
    # awaited and judged by the estimate and the delay-based verdict, not by that loss.
    w, engine, paused_at = paused_by_a_flood(loss=0.8)
    probes_before = len(engine.probes)
    engine.on_probe = lambda bps: w.estimates.estimates.update(
        {w.transports.handle("sub"): Estimate(int(bps * 0.95), "normal", 0.8, probing=True)})
    resumed_at = None
    for _ in range(40):
        w.run(ALLOCATE_INTERVAL_S)
        h = w.transports.handle("sub")
        e = w.estimates.estimates[h]
        if e.probing:  # the cluster's feedback came: its result is in
            w.estimates.estimates[h] = Estimate(e.bps, e.state, e.loss)
        if w.got("c") != "paused":
            resumed_at = w.now
            break
    assert resumed_at is not None
    first = engine.probes[probes_before][0]
    assert first - paused_at <= PAUSE_HOLD_S + ALLOCATE_INTERVAL_S
    # The probe's own time, its result's pass, and one pass to resume (a successful probe boosts the next raise).
    assert resumed_at - first <= PROBE_RESUME_DURATION_S + 3 * ALLOCATE_INTERVAL_S
    assert len(engine.probes) == probes_before + 1
    # Longer than a raise's probe: the idle link's bottleneck may let a short cluster through in its burst.
    assert engine.probes[probes_before][3] == PROBE_RESUME_DURATION_S * 1000 > PROBE_DURATION_S * 1000


def test_failed_probes_to_resume_back_off_to_a_few_seconds_at_most() -> None:
    w, engine, paused_at = paused_by_a_flood()
    probes_before = len(engine.probes)
    engine.on_probe = lambda bps: w.estimate("sub", 100_000, "overusing")  # the link holds nothing yet
    w.run(30.0)
    times = [p[0] for p in engine.probes[probes_before:]]
    assert times[0] - paused_at <= PAUSE_HOLD_S + ALLOCATE_INTERVAL_S
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) >= 6
    for i, gap in enumerate(gaps):
        wait = min(PROBE_RESUME_BACKOFF_S * PROBE_BACKOFF_FACTOR ** i, PROBE_RESUME_BACKOFF_MAX_S)
        assert wait + PROBE_RESUME_DURATION_S <= gap <= wait + PROBE_RESUME_DURATION_S + 2 * ALLOCATE_INTERVAL_S, \
            (i, gaps)
    assert w.got("c") == "paused"
    # The cap is lifted: the next probe finds the room and the track resumes within the capped backoff.
    engine.on_probe = lambda bps: w.estimate("sub", int(bps))
    lifted = w.now
    for _ in range(20):
        w.run(ALLOCATE_INTERVAL_S)
        if w.got("c") != "paused":
            break
    assert w.got("c") != "paused"
    assert w.now - lifted <= PROBE_RESUME_BACKOFF_MAX_S + PROBE_RESUME_DURATION_S + 3 * ALLOCATE_INTERVAL_S


def test_a_resume_paused_again_soon_counts_as_a_failed_probe_and_one_that_holds_resets_the_backoff() -> None:
    # A probe can succeed on a link that cannot carry the lowest layer (a token bucket's burst let it through): the
    # track resumes, the link congests, and it is paused again. Each such flap waits longer before the next probe
    # to resume (as a failed probe does), so the subscriber is not shown a frame or two every couple of seconds.
    w, engine, paused_at = paused_by_a_flood()
    h = w.transports.handle("sub")

    def flap() -> tuple[float, float]:
        """The next resume probe succeeds, the track resumes, then congestion pauses it again; returns when the
        probe was sent and when the track was paused again."""
        engine.on_probe = lambda bps: w.estimate("sub", int(bps))
        count = len(engine.probes)
        for _ in range(40):
            w.run(ALLOCATE_INTERVAL_S)
            if w.got("c") != "paused":
                break
        assert w.got("c") != "paused" and len(engine.probes) == count + 1
        engine.on_probe = None
        w.estimates.estimates[h] = Estimate(60_000, "overusing", 0.3)
        for _ in range(10):
            w.run(ALLOCATE_INTERVAL_S)
            if w.got("c") == "paused":
                return engine.probes[-1][0], w.now
        raise AssertionError("not paused again")

    _, again = flap()
    waits = []
    for _ in range(3):
        probed, again_next = flap()
        waits.append(probed - again)
        again = again_next
    # The hold after a pause, then the resume backoff growing as after failed probes.
    for i, wait in enumerate(waits):
        backoff = min(PROBE_RESUME_BACKOFF_S * PROBE_BACKOFF_FACTOR ** i, PROBE_RESUME_BACKOFF_MAX_S)
        assert max(PAUSE_HOLD_S, backoff) <= wait <= max(PAUSE_HOLD_S, backoff) + 2 * ALLOCATE_INTERVAL_S, waits
    assert waits[-1] > waits[0]
    # A resume that holds PROBE_STABLE_S is a success: the backoff starts again from the shortest.
    engine.on_probe = lambda bps: w.estimate("sub", int(bps))
    for _ in range(40):
        w.run(ALLOCATE_INTERVAL_S)
        if w.got("c") != "paused":
            break
    w.estimate("sub", 2_000_000)
    w.run(PROBE_STABLE_S + 1.0)
    engine.on_probe = None
    w.estimates.estimates[h] = Estimate(60_000, "overusing", 0.3)
    for _ in range(10):
        w.run(ALLOCATE_INTERVAL_S)
        if w.got("c") == "paused":
            break
    paused = w.now
    count = len(engine.probes)
    engine.on_probe = lambda bps: w.estimate("sub", int(bps))
    for _ in range(20):
        w.run(ALLOCATE_INTERVAL_S)
        if len(engine.probes) > count:
            break
    assert engine.probes[count][0] - paused <= PAUSE_HOLD_S + ALLOCATE_INTERVAL_S


class LoweringEngine(FakeEngine):
    """A fake Engine with ``lower_consumer_layer`` (a congestion downswitch that stops the current layer at once)."""

    def lower_consumer_layer(self, c: int, spatial: int) -> None:
        self.calls.append(("lower", c, spatial))


def test_a_lowering_stops_the_current_layer_at_once_and_a_raise_does_not() -> None:
    w = World(LoweringEngine())
    w.transport("sub", 5_000_000)
    w.producer("v", "video", SIMULCAST)
    h = w.consumer("c", "sub", "v")
    w.run(3.0)
    w.estimate("sub", 600_000)
    w.run(1.0)
    assert w.got("c") == 1 and w.engine.calls == [("lower", h, 1)]
    w.estimate("sub", 5_000_000)
    w.run(RAISE_HOLD_S + 3.0)
    assert w.got("c") == 2 and w.engine.calls[1:] == [("layer", h, 2)]


def test_a_fallen_estimate_wakes_the_next_pass_at_once() -> None:
    w = World()
    w.transport("sub", 5_000_000)
    w.producer("v", "video", SIMULCAST)
    h = w.consumer("c", "sub", "v")
    w.run(3.0)
    w.estimate("sub", 300_000)
    w.now += 0.02  # one worker tick later, well inside the pass interval
    w.allocator.tick(w.now)
    assert w.engine.calls == []  # not due yet
    w.allocator.wake()
    w.now += 0.02
    w.allocator.tick(w.now)
    assert w.engine.calls == [("layer", h, 0)]


@pytest.mark.parametrize(("estimate", "state", "loss", "rtx_bps", "expected"), [
    (104_000_000, "normal", 0.0, 0, 0),  # carries the 96 Mbit/s stream (not with VIDEO_SHARE's headroom): kept
    (104_000_000, "normal", 0.05, 0, 0),  # loss that NACK repairs is not congestion: kept
    (104_000_000, "overusing", 0.0, 0, "paused"),  # the estimator's verdict: the only layer does not fit
    (104_000_000, "normal", 0.2, 0, "paused"),  # ... or congestive loss
    (104_000_000, "normal", 0.0, 10_000_000, "paused"),  # media and retransmissions above the estimate
    (95_000_000, "normal", 0.0, 0, "paused"),  # an estimate below what is sent
])
def test_a_single_layer_stream_the_estimate_carries_is_lowered_only_for_congestion(
        estimate: int, state: str, loss: float, rtx_bps: int, expected: int | str) -> None:
    w = World(ProbingEngine())
    w.transport("sub", 200_000_000)
    w.producer("v", "video", [96_000_000.0])
    w.consumer("c", "sub", "v")
    w.run(2.0)
    assert w.got("c") == 0
    h = w.transports.handle("sub")
    sent = 0
    for _ in range(6):
        sent += int(rtx_bps / 8 * ALLOCATE_INTERVAL_S)
        w.estimates.estimates[h] = Estimate(estimate, state, loss, rtx_bytes=sent)
        w.run(ALLOCATE_INTERVAL_S)
    assert w.got("c") == expected


KEY_FRAME_BYTES = 75_000  # the 1280 px layer's key frame asked for by the switch: about ten of its 7 KB frames
SWITCH_RTX_BPS = 100_000  # ... and the retransmissions of the switch's lost packets in the pass after it


def raised_on_a_probed_goal() -> tuple[World, int, int]:
    """640 px, then a probe that lifts the estimate just to its goal (no more headroom than the raise asks) and
    the raise to 1280 px in the pass after it: the world, the producer's and the transport's handles."""
    w, engine = probing_world(1_000_000)
    w.run(2.0)  # the first probe fails: 640 px
    assert w.got("c") == 1
    engine.on_probe = lambda bps: w.estimate("sub", int(top_goal()) + 1)
    for _ in range(100):
        w.run(ALLOCATE_INTERVAL_S)
        if w.got("c") == 2:
            break
    assert w.got("c") == 2
    return w, w.producers.handle("v"), w.transports.handle("sub")


@pytest.mark.parametrize(("estimate", "state", "loss", "expected"), [
    (0, "normal", 0.0, [2] * 6),  # the same estimate: the raise's own transient, kept
    (0, "underusing", 0.05, [2] * 6),  # a draining queue, loss that NACK repairs: kept
    (-1, "normal", 0.0, [1] * 6),  # the estimate fell below what is sent: lowered at once
    (0, "overusing", 0.0, [1] * 6),  # congestion: lowered at once
    (0, "normal", 0.2, [1] * 6),  # ... or congestive loss
], ids=["same", "draining", "fallen", "overusing", "lossy"])
def test_a_raise_is_not_undone_by_its_own_key_frame_and_retransmissions(
        estimate: int, state: str, loss: float, expected: list[int]) -> None:
    # After a raise the switch asks the publisher for a key frame on the new layer: it sits in that layer's
    # measured rate (~1.5 s window, shared by every subscriber) and its lost packets are retransmitted, so for a
    # pass or more what is sent is above an estimate that just carried the raise. That is no reason to lower;
    # a fallen estimate or congestion is.
    w, hp, ht = raised_on_a_probed_goal()
    bps = int(top_goal()) + 1 + estimate * 200_000
    w.engine.bytes[hp][2] += KEY_FRAME_BYTES
    sent = int(SWITCH_RTX_BPS / 8 * ALLOCATE_INTERVAL_S)
    got = []
    for _ in range(6):  # 3 s: the key frame leaves the window
        w.estimates.estimates[ht] = Estimate(bps, state, loss, rtx_bytes=sent)
        w.run(ALLOCATE_INTERVAL_S)
        got.append(w.got("c"))
    assert got == expected


def test_a_raised_layer_that_stays_above_the_estimate_is_lowered_once_the_switch_settled() -> None:
    # Not a transient: the publisher's 1280 px layer really sends more than the estimate from the raise on.
    w, hp, ht = raised_on_a_probed_goal()
    w.rates[hp][2] = top_goal() * 1.1
    got = []
    for _ in range(8):
        w.run(ALLOCATE_INTERVAL_S)
        got.append(w.got("c"))
    assert got[0] == 2 and got[-1] == 1
