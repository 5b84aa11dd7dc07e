"""Temporal allocation (router/temporal.py, router/allocator.py): a single-layer track steps down its frame rate
before it is paused, a screen share drops frame rate before resolution, a simulcast camera keeps its full frame rate.

The fake Engine counts bytes and pictures per VP8 TID as the fast path does (``temporal_bytes`` and
``temporal_pictures`` of each layer in ``snapshot_producer``): an L1T3 encoder sending 30 pictures/s, 25 / 25 / 50 %
of them on TID 0 / 1 / 2 and 40 / 20 / 40 % of the bytes (docs/FORWARDING.md, VP8 payload descriptor).
"""

from __future__ import annotations

from typing import Any

import pytest

from router.allocator import ALLOCATE_INTERVAL_S, RAISE_HOLD_S, RAISE_TICKS
from router.layer_rates import LayerRates
from router.temporal import PRIOR_SHARES, TID_ALL, Steps, TemporalRates
from tests.router.test_allocator import SIMULCAST, FakeEngine, World

L1T3_BYTES = (0.4, 0.2, 0.4)  # share of a layer's bytes per TID
L1T3_PICTURES = (0.25, 0.25, 0.5)  # share of its pictures per TID
FPS = 30.0
SINGLE = [600_000.0]  # one spatial layer: t0 240 k, t0+t1 360 k, all 600 k
SCREEN = [300_000.0, 1_200_000.0]  # two spatial layers of a screen share


class TemporalEngine(FakeEngine):
    """A fake Engine whose producers carry temporal layers (by handle: byte and picture shares per TID, or none)
    and that records ``set_consumer_temporal``."""

    def __init__(self) -> None:
        super().__init__()
        self.tids: dict[int, tuple[tuple[float, ...], tuple[float, ...]] | None] = {}
        self.clock: Any = None

    def snapshot_producer(self, p: int) -> dict[str, Any]:
        layers = []
        for b in self.bytes[p]:
            split = self.tids.get(p, (L1T3_BYTES, L1T3_PICTURES))
            layer: dict[str, Any] = {"bytes": int(b)}
            if split is not None and b > 0:
                byte_share, picture_share = split
                layer["temporal_bytes"] = [int(b * x) for x in byte_share] + [0] * (4 - len(byte_share))
                pictures = self.clock() * FPS
                layer["temporal_pictures"] = [int(pictures * x) for x in picture_share] \
                    + [0] * (4 - len(picture_share))
            else:
                layer["temporal_bytes"] = layer["temporal_pictures"] = [0, 0, 0, 0]
            layers.append(layer)
        return {"layers": layers}

    def set_consumer_temporal(self, c: int, temporal: int) -> None:
        self.calls.append(("temporal", c, temporal))


def world(estimate: int, rates: list[float], *, source: str = "camera", tids: bool = True
          ) -> tuple[World, TemporalEngine]:
    engine = TemporalEngine()
    w = World(engine)
    engine.clock = lambda: w.now - 1000.0
    w.transport("sub", estimate)
    w.producer("v", "video", rates)
    w.producers.get("v").source = source
    if not tids:
        engine.tids[w.producers.handle("v")] = None
    w.consumer("c", "sub", "v")
    return w, engine


def got(w: World) -> tuple[int, int] | str:
    """What the subscriber gets: "paused" or (the spatial layer asked of the Engine, its TID cap)."""
    c = w.consumers.get("c")
    if c.bw_paused:
        return "paused"
    n = len(w.rates[w.producers.handle("v")])
    return (n - 1 if c.layer_cap < 0 else c.layer_cap), c.allocated_temporal


# Budget = 0.9 x the estimate (no audio).
SINGLE_ROWS = [
    (1_000_000, (0, TID_ALL)),  # 900 k: every picture
    (500_000, (0, 1)),  # 450 k: TID 0 and 1 (360 k), 20 fps, not paused as before
    (300_000, (0, 0)),  # 270 k: TID 0 only (240 k), 7.5 fps
    (200_000, "paused"),  # 180 k: not even TID 0 fits
]


@pytest.mark.parametrize(("estimate", "expected"), SINGLE_ROWS)
def test_single_layer_track_steps_its_frame_rate(estimate: int, expected: tuple[int, int] | str) -> None:
    w, engine = world(estimate, SINGLE)
    w.run(2.0)
    assert got(w) == expected
    if isinstance(expected, tuple) and expected[1] != TID_ALL:
        assert ("temporal", 0, expected[1]) in engine.calls and w.states == []


def test_single_layer_track_without_temporal_layers_is_paused_as_before() -> None:
    w, engine = world(500_000, SINGLE, tids=False)  # no TIDs (H.264, or VP8 without the T bit)
    w.run(2.0)
    assert got(w) == "paused" and w.states == [("c", True)]
    assert not [call for call in engine.calls if call[0] == "temporal"]


def test_single_layer_track_raises_one_temporal_step_at_a_time() -> None:
    w, engine = world(300_000, SINGLE)
    w.run(2.0)
    assert got(w) == (0, 0)
    w.estimate("sub", 1_000_000)
    steps = [got(w)]
    for _ in range(round(RAISE_HOLD_S / ALLOCATE_INTERVAL_S) + 4 * RAISE_TICKS):
        w.run(ALLOCATE_INTERVAL_S)
        if got(w) != steps[-1]:
            steps.append(got(w))
    assert steps == [(0, 0), (0, 1), (0, TID_ALL)]  # t0 -> t1 -> all, each after RAISE_TICKS passes
    assert [call[2] for call in engine.calls if call[0] == "temporal"] == [0, 1, TID_ALL]
    assert {call[2] for call in engine.calls if call[0] == "layer"} == {0}  # its one layer: never a switch


def test_single_layer_track_paused_then_resumed_at_its_lowest_step() -> None:
    w, engine = world(200_000, SINGLE)
    w.run(2.0)
    assert got(w) == "paused" and w.states == [("c", True)]
    w.estimate("sub", 300_000)
    w.run(RAISE_HOLD_S + 2.0)
    assert got(w) == (0, 0) and w.states == [("c", True), ("c", False)]


SCREEN_ROWS = [
    (2_000_000, (1, TID_ALL)),  # 1.8 M: everything
    (1_000_000, (1, 1)),  # 900 k: full resolution at 2/3 of the bytes (720 k); a camera would get layer 0
    (600_000, (1, 0)),  # 540 k: full resolution, TID 0 only (480 k)
    (400_000, (0, TID_ALL)),  # 360 k: the small layer at its full frame rate (300 k)
    (150_000, (0, 0)),  # 135 k: the small layer, TID 0 (120 k)
    (100_000, "paused"),
]


@pytest.mark.parametrize(("estimate", "expected"), SCREEN_ROWS)
def test_screen_share_drops_frame_rate_before_resolution(estimate: int, expected: tuple[int, int] | str) -> None:
    w, _ = world(estimate, SCREEN, source="screen_share")
    w.run(2.0)
    assert got(w) == expected


def test_screen_share_steps_down_temporal_then_spatial_on_congestion() -> None:
    w, engine = world(2_000_000, SCREEN, source="screen_share")
    w.run(2.0)
    assert got(w) == (1, TID_ALL)
    seen = []
    for estimate in (1_000_000, 600_000, 400_000):
        w.estimate("sub", estimate)
        w.run(1.0)
        seen.append(got(w))
    assert seen == [(1, 1), (1, 0), (0, TID_ALL)]
    # The spatial cap: layer 1 (where it was) from the first allocation on, layer 0 at the last step only.
    assert [call for call in engine.calls if call[0] == "layer"] == [("layer", 0, 1), ("layer", 0, 0)]


CAMERA_ROWS = [
    (5_000_000, (2, TID_ALL)),
    (1_000_000, (1, TID_ALL)),  # 900 k: 640 px at its full frame rate, not 1280 px at a lower one
    (400_000, (0, TID_ALL)),
    (100_000, "paused"),  # the pause a 100 kbit/s link expects (not 320 px at 7.5 fps)
]


@pytest.mark.parametrize(("estimate", "expected"), CAMERA_ROWS)
def test_simulcast_camera_moves_on_spatial_layers_only(estimate: int, expected: tuple[int, int] | str) -> None:
    w, engine = world(estimate, SIMULCAST, source="camera")
    w.run(2.0)
    assert got(w) == expected
    assert not [call for call in engine.calls if call[0] == "temporal"]


def test_preference_caps_the_spatial_layer_of_a_ladder() -> None:
    w, _ = world(2_000_000, SCREEN, source="screen_share")
    w.consumers.get("c").preferred_layer = 0  # the subscriber asked for LOW
    w.run(2.0)
    assert got(w) == (0, TID_ALL)


def test_temporal_rates_measure_the_split_and_fall_back_to_the_prior() -> None:
    rates = LayerRates(1)
    temporal = TemporalRates(1)
    temporal.update([[0, 0, 0, 0]], [[0, 0, 0, 0]])
    rates.update(0.0, [0])
    temporal.update([[1000, 3000, 6000, 0]], [[2, 2, 3, 0]])  # 7 pictures: too few to measure, L1T3 prior
    rates.update(0.5, [10_000])
    assert temporal.counts == [3] and temporal.shares[0] == PRIOR_SHARES[3]
    temporal.update([[2000, 6000, 12_000, 0]], [[4, 4, 8, 0]])  # 16 pictures: 10 / 30 / 60 % of the bytes
    rates.update(1.0, [20_000])
    assert temporal.shares[0] == pytest.approx((0.1, 0.4, 1.0))
    steps = Steps()
    steps.build(rates, temporal)
    assert [steps.step(i) for i in range(steps.layers)] == [(0, 0), (0, 1), (0, TID_ALL)]
    assert steps.rates == pytest.approx([16_000.0, 64_000.0, 160_000.0]) and steps.temporal_steps
    assert steps.index(0, 1) == 1 and steps.index(0, 3) == 2 and steps.index(0, TID_ALL) == 2
    temporal.update([[2000, 6000, 12_000, 0]] * 1, [[4, 4, 8, 0]])
    for _ in range(3):  # no pictures move for a window: no temporal layers, one step
        temporal.update([[2000, 6000, 12_000, 0]], [[4, 4, 8, 0]])
    steps.build(rates, temporal)
    assert temporal.counts == [0] and steps.layers == 1 and not steps.temporal_steps
