"""Playout delay floors per video consumer (router/playout.py): the decision from retransmission windows and the
round-trip time, table rows with an injected clock; and MediaService watching exactly the video consumers whose
subscribers were offered the element, forgetting them when they close.
"""

from __future__ import annotations

import pytest

from router.media_service import MediaService
from router.messages import ConsumeRequest
from router.playout import (
    CEILING_MS,
    HOLD_S,
    MAX_DELAY_MS,
    MIN_DELAY_MS,
    PlayoutDelay,
    PlayoutDelays,
    repair_delay_ms,
)
from router.protocol import Empty, Method
from tests.router.fakes import FakeChannel
from tests.router.test_media_service import AUDIO, VIDEO, call, create_transport, service  # noqa: F401


@pytest.mark.parametrize(("rtt_ms", "expected"), [
    (-1, 260),            # not measured yet: 100 ms assumed
    (0, 260),
    (10, MIN_DELAY_MS),   # 80 ms would leave no room for the receiver's own jitter
    (50, 160),            # two repairs on a 50 ms path and a margin
    (120, 300),
    (500, MAX_DELAY_MS),  # bounded: beyond this a key frame beats waiting
])
def test_repair_delay_covers_two_round_trips(rtt_ms: int, expected: int) -> None:
    assert repair_delay_ms(rtt_ms) == expected


def snap(packets: int, retransmits: int, rtt_ms: int = 50) -> dict[str, int]:
    return {"packets": packets, "retransmits": retransmits, "rtt_ms": rtt_ms}


def run(rows: list[tuple[float, int, int]], delay: PlayoutDelay | None = None) -> list[tuple[int, int] | None]:
    """Feed (now, packets sent in the window, retransmitted in it) windows; the change each one asked for."""
    delay = delay or PlayoutDelay()
    packets = retransmits = 0
    out = [delay.update(snap(0, 0), 0.0)]
    for now, sent, resent in rows:
        packets, retransmits = packets + sent, retransmits + resent
        out.append(delay.update(snap(packets, retransmits), now))
    return out


def test_a_clean_link_never_gets_a_floor() -> None:
    assert run([(2.0 * i, 500, 2) for i in range(1, 20)]) == [None] * 20  # 0.4 % resent: below the lossy share


def test_a_lossy_window_raises_at_once_and_the_floor_holds() -> None:
    got = run([(2.0, 500, 25), (4.0, 500, 25), (6.0, 500, 1)])
    assert got == [None, (160, CEILING_MS), None, None]


def test_after_the_hold_the_floor_steps_down_to_nothing() -> None:
    delay = PlayoutDelay()
    run([(2.0, 500, 25)], delay)
    assert delay.sent_ms == 160
    steps = []
    packets, retransmits = 1000, 25
    for i in range(2, 12):
        packets += 500
        steps.append(delay.update(snap(packets, retransmits), 2.0 + 2.0 * i))
    # Quiet windows before HOLD_S change nothing; then 160 -> 110 -> none (below the smallest floor).
    first = next(i for i, s in enumerate(steps) if s is not None)
    assert 2.0 + 2.0 * (first + 2) - 2.0 >= HOLD_S
    assert [s for s in steps if s is not None] == [(110, CEILING_MS), (0, CEILING_MS)]
    assert delay.sent_ms == 0


def test_a_longer_round_trip_raises_the_floor_and_a_shorter_one_does_not_lower_it() -> None:
    delay = PlayoutDelay()
    assert delay.update(snap(0, 0, 50), 0.0) is None
    assert delay.update(snap(500, 25, 50), 2.0) == (160, CEILING_MS)
    assert delay.update(snap(1000, 50, 120), 4.0) == (300, CEILING_MS)
    assert delay.update(snap(1500, 75, 10), 6.0) is None
    assert delay.sent_ms == 300


def test_nacks_the_worker_could_not_serve_count_as_repairs() -> None:
    # Loss before the worker (the publisher's uplink): the subscriber NACKs, the worker has nothing to resend, and
    # the packet comes late, repaired from the publisher.
    delay = PlayoutDelay()
    assert delay.update({"packets": 0, "retransmits": 0, "nack_rx": 0, "rtt_ms": 50}, 0.0) is None
    assert delay.update({"packets": 500, "retransmits": 0, "nack_rx": 4, "rtt_ms": 50}, 2.0) is None
    assert delay.update({"packets": 1000, "retransmits": 0, "nack_rx": 14, "rtt_ms": 50}, 4.0) == (160, CEILING_MS)


def test_nothing_sent_changes_nothing() -> None:
    assert run([(2.0, 0, 0), (4.0, 0, 3)]) == [None, None, None]


class RecordingEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int, int]] = []

    def set_playout_delay(self, c: int, ext_id: int, min_ms: int, max_ms: int) -> None:
        self.calls.append((c, ext_id, min_ms, max_ms))


def test_the_keeper_tells_the_engine_only_for_watched_consumers() -> None:
    engine = RecordingEngine()
    delays = PlayoutDelays(engine)
    delays.watch("v", 3, 7)
    for now, packets, resent in ((0.0, 0, 0), (2.0, 500, 30)):
        delays.observe("v", snap(packets, resent), now)
        delays.observe("other", snap(packets, resent), now)
    assert engine.calls == [(3, 7, 160, CEILING_MS)]
    assert delays.floor_ms("v") == 160
    delays.forget("v")
    assert delays.floor_ms("v") == 0


async def test_video_consumers_offered_the_element_are_watched_until_they_close(
        service: tuple[MediaService, FakeChannel]) -> None:  # noqa: F811 (the fixture imported above)
    media, ch = service
    await call(ch, Method.MEDIA_ROUTER_CREATE, "r", Empty())
    for tid in ("pub", "sub"):
        await create_transport(ch, "r", tid)
    for producer in (VIDEO, AUDIO):
        await call(ch, Method.TRANSPORT_PRODUCE, "pub", producer)
    for cid, pid, pt, ext in (("cv", "p-video", 96, 7), ("ca", "p-audio", 111, 7), ("cv0", "p-video", 96, 0)):
        await call(ch, Method.TRANSPORT_CONSUME, "sub", ConsumeRequest(
            consumer_id=cid, producer_id=pid, out_ssrc=hash(cid) & 0xFFFF, pt_map=[(pt, pt)], playout_delay_id=ext))
    assert set(media.playout._delays) == {"cv"}
    await call(ch, Method.CONSUMER_CLOSE, "cv", Empty())
    assert media.playout._delays == {}
