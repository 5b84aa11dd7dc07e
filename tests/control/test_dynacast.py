"""Dynacast decisions (control/rtc/dynacast.py) with a manual clock: the subscribers' wishes -> the qualities the
publisher is told, the pause delay before a layer goes off, no repeated updates; and the SubscribedQualityUpdate
builder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from livekit.protocol import models

from control.rtc import lk_messages as lk
from control.rtc.dynacast import (
    HIGH,
    INITIAL_WAIT_S,
    LOW,
    MEDIUM,
    OFF,
    Dynacast,
    TrackDynacast,
    Wish,
    enabled_layers,
    max_quality,
    quality_of_layer,
)

DELAY = 5.0


@dataclass
class ManualClock:
    """A Scheduler whose time moves only when the test says so."""

    now: float = 0.0
    timers: list[_Timer] = field(default_factory=list)

    def schedule(self, delay_s: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self.now + delay_s, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            due = sorted((t for t in self.timers if not t.cancelled and t.when <= end), key=lambda t: t.when)
            if not due:
                break
            timer = due[0]
            self.timers.remove(timer)
            self.now = timer.when
            timer.callback()
        self.now = end

    def pending(self) -> int:
        return sum(1 for t in self.timers if not t.cancelled)


@dataclass
class _Timer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


def track(clock: ManualClock, *, delay: float = DELAY, muted: bool = False) -> tuple[TrackDynacast, list[int]]:
    sent: list[int] = []
    return TrackDynacast(sent.append, pause_delay_s=delay, muted=muted, schedule=clock.schedule), sent


# ---- what the track wants --------------------------------------------------------------------------


@pytest.mark.parametrize(("wishes", "wanted"), [
    ([], OFF),
    ([Wish(LOW)], LOW),
    ([Wish(LOW), Wish(HIGH)], HIGH),
    ([Wish(MEDIUM), Wish(OFF)], MEDIUM),  # a disabled subscription counts as nothing
    ([Wish(OFF), Wish(OFF)], OFF),
    ([Wish(HIGH, allocated=LOW)], LOW),  # the allocator gives less: only that is needed
    ([Wish(HIGH, allocated=LOW), Wish(MEDIUM)], MEDIUM),
    ([Wish(LOW, allocated=HIGH)], LOW),  # never more than asked
    ([Wish(HIGH, allocated=OFF), Wish(LOW)], LOW),  # a paused track counts as nothing
    ([Wish(HIGH, allocated=None)], HIGH),  # no allocation yet: as asked
])
def test_max_quality_of_the_wishes(wishes: list[Wish], wanted: int) -> None:
    assert max_quality(wishes) == wanted


@pytest.mark.parametrize(("quality", "enabled"), [
    (OFF, [False, False, False]),
    (LOW, [True, False, False]),
    (MEDIUM, [True, True, False]),
    (HIGH, [True, True, True]),
])
def test_enabled_layers_up_to_the_wanted_quality(quality: int, enabled: list[bool]) -> None:
    assert enabled_layers(quality) == list(zip((LOW, MEDIUM, HIGH), enabled, strict=True))


def test_quality_of_layer() -> None:
    layers = [models.VideoLayer(quality=q) for q in (LOW, MEDIUM, HIGH)]
    assert [quality_of_layer(layers, s) for s in (-1, 0, 1, 2, 7)] == [HIGH, LOW, MEDIUM, HIGH, HIGH]
    two = [models.VideoLayer(quality=LOW), models.VideoLayer(quality=MEDIUM)]
    assert quality_of_layer(two, -1) == MEDIUM
    assert quality_of_layer([], -1) == HIGH and quality_of_layer([], 0) == HIGH  # one encoding, no layers


# ---- what the publisher is told, and when --------------------------------------------------------------


# Each row: steps of (seconds to wait first, subscriber, requested quality or None = leaves) -> every update sent
# with the time it went out. The pause delay is 5 s.
ROWS = [
    ("first subscriber sent at once", [(1, "a", HIGH)], [(1, HIGH)]),
    ("first subscriber wanting LOW sent at once", [(1, "a", LOW)], [(1, LOW)]),
    ("raise is immediate", [(0, "a", LOW), (2, "a", HIGH)], [(0, LOW), (2, HIGH)]),
    ("lowering waits the delay", [(0, "a", HIGH), (1, "a", LOW)], [(0, HIGH), (6, LOW)]),
    ("lowering then raising back sends nothing", [(0, "a", HIGH), (1, "a", LOW), (2, "a", HIGH)], [(0, HIGH)]),
    ("the delay counts from the first lowering", [(0, "a", HIGH), (1, "a", MEDIUM), (3, "a", LOW)],
     [(0, HIGH), (6, LOW)]),
    ("a raise during the delay wins at once", [(0, "a", MEDIUM), (1, "a", LOW), (1, "a", HIGH)],
     [(0, MEDIUM), (2, HIGH)]),
    ("the highest subscriber decides", [(0, "a", LOW), (0, "b", HIGH), (1, "b", MEDIUM)],
     [(0, LOW), (0, HIGH), (6, MEDIUM)]),
    ("a lower second subscriber changes nothing", [(0, "a", HIGH), (1, "b", LOW)], [(0, HIGH)]),
    ("the last subscriber leaving turns everything off after the delay", [(0, "a", MEDIUM), (1, "a", None)],
     [(0, MEDIUM), (6, OFF)]),
    ("disabled counts as nothing", [(0, "a", HIGH), (0, "b", LOW), (1, "a", OFF)], [(0, HIGH), (6, LOW)]),
    ("re-enabling is immediate", [(0, "a", HIGH), (1, "a", OFF), (6, "a", HIGH)], [(0, HIGH), (6, OFF), (7, HIGH)]),
    ("the same wish again sends nothing", [(0, "a", LOW), (1, "a", LOW), (1, "b", LOW)], [(0, LOW)]),
]


@pytest.mark.parametrize(("steps", "expected"), [(s, e) for _, s, e in ROWS], ids=[r[0] for r in ROWS])
def test_updates_sent_for_the_subscribers_wishes(steps: list[tuple[float, str, int | None]],
                                                 expected: list[tuple[float, int]]) -> None:
    clock = ManualClock()
    got: list[tuple[float, int]] = []
    dc = TrackDynacast(lambda q: got.append((clock.now, q)), pause_delay_s=DELAY, schedule=clock.schedule)
    for wait, who, quality in steps:
        clock.advance(wait)
        if quality is None:
            dc.remove(who)
        else:
            dc.set_requested(who, quality)
    clock.advance(30)
    assert got == expected
    assert [q for _, q in got] == [q for i, (_, q) in enumerate(got) if i == 0 or got[i - 1][1] != q]  # no repeats


def test_nobody_subscribes_everything_off_after_the_initial_wait() -> None:
    clock = ManualClock()
    dc, sent = track(clock)
    clock.advance(INITIAL_WAIT_S - 0.1)
    assert sent == []
    clock.advance(0.2)
    assert sent == [OFF]
    dc.set_requested("a", LOW)  # a subscriber then: on at once
    assert sent == [OFF, LOW]


def test_first_subscriber_cancels_the_initial_wait() -> None:
    clock = ManualClock()
    dc, sent = track(clock)
    dc.set_requested("a", HIGH)
    clock.advance(INITIAL_WAIT_S * 3)
    assert sent == [HIGH] and clock.pending() == 0


def test_zero_pause_delay_lowers_at_once() -> None:
    clock = ManualClock()
    dc, sent = track(clock, delay=0)
    dc.set_requested("a", HIGH)
    dc.set_requested("a", LOW)
    assert sent == [HIGH, LOW]


def test_allocation_caps_what_is_asked() -> None:
    clock = ManualClock()
    dc, sent = track(clock)
    dc.set_allocated("a", LOW)  # nobody asked yet: nothing to cap
    assert sent == [] and "a" not in dc.wishes
    dc.set_requested("a", HIGH)
    dc.set_allocated("a", MEDIUM)
    clock.advance(DELAY)
    assert sent == [HIGH, MEDIUM]
    dc.set_requested("a", HIGH)  # asking again keeps the allocation
    assert dc.wishes["a"] == Wish(HIGH, MEDIUM) and sent == [HIGH, MEDIUM]
    dc.set_allocated("a", None)
    assert sent == [HIGH, MEDIUM, HIGH]


def test_muted_track_sends_nothing_and_unmute_sends_the_state() -> None:
    clock = ManualClock()
    dc, sent = track(clock, muted=True)
    dc.set_requested("a", MEDIUM)
    clock.advance(DELAY * 3)
    assert sent == []
    dc.set_muted(False)
    assert sent == [MEDIUM]
    dc.set_muted(True)
    dc.set_requested("a", HIGH)
    dc.set_muted(False)
    assert sent == [MEDIUM, HIGH]
    dc.set_muted(True)
    dc.set_muted(False)  # unmuting re-sends what the publisher may have lost (LiveKit's ForceUpdate)
    assert sent == [MEDIUM, HIGH, HIGH]


def test_closed_track_sends_nothing() -> None:
    clock = ManualClock()
    dc, sent = track(clock)
    dc.set_requested("a", HIGH)
    dc.set_requested("a", LOW)
    dc.close()
    clock.advance(60)
    assert sent == [HIGH] and clock.pending() == 0


def test_room_dynacast_routes_by_track_and_forgets_subscribers() -> None:
    clock = ManualClock()
    room = Dynacast(pause_delay_s=DELAY, schedule=clock.schedule)
    got: dict[str, list[int]] = {"TR_a": [], "TR_b": []}
    room.add_track("TR_a", got["TR_a"].append)
    room.add_track("TR_b", got["TR_b"].append)
    room.set_requested("TR_a", "PA_x", HIGH)
    room.set_requested("TR_b", "PA_x", LOW)
    room.set_requested("TR_b", "PA_y", MEDIUM)
    room.set_requested("TR_gone", "PA_x", HIGH)  # an unknown track is ignored
    room.remove_subscriber("PA_x")
    clock.advance(DELAY)
    assert got == {"TR_a": [HIGH, OFF], "TR_b": [LOW, MEDIUM]}
    room.remove_track("TR_a")
    room.set_requested("TR_a", "PA_y", HIGH)
    assert got["TR_a"] == [HIGH, OFF]


# ---- the message ------------------------------------------------------------------------------------


def test_subscribed_quality_update_message() -> None:
    msg = lk.subscribed_quality_update("TR_abc", "video/VP8", enabled_layers(MEDIUM)).subscribed_quality_update
    assert msg.track_sid == "TR_abc"
    flags = [(q.quality, q.enabled) for q in msg.subscribed_qualities]
    assert flags == [(LOW, True), (MEDIUM, True), (HIGH, False)]
    assert [c.codec for c in msg.subscribed_codecs] == ["vp8"]  # LiveKit's spelling, what the SDKs compare
    assert [(q.quality, q.enabled) for q in msg.subscribed_codecs[0].qualities] == flags
    with pytest.raises(ValueError, match="OFF is not a layer"):
        lk.subscribed_quality_update("TR_abc", "vp8", [(OFF, False)])
    with pytest.raises(ValueError):
        lk.subscribed_quality_update("PA_abc", "vp8", [])
