"""The Engine's timers (docs/FORWARDING.md, Timers): ``next_due_ms`` says when ``tick`` next has work, and with
``auto_tick_ms`` a ``pump`` that received packets runs the timers itself."""

from __future__ import annotations

import time

import fastpath
from tests import packets
from tests.fastpath.conftest import Rig
from tests.fastpath.test_engine import OUT_SSRC, PUB_SSRC, add_video, send_frames

OPUS = 111


def add_audio(rig: Rig) -> None:
    rig.engine.add_producer(10, 1, fastpath.KIND_AUDIO, b"a", [(b"", PUB_SSRC, 0)], [OPUS], {}, 48000)
    rig.engine.add_consumer(20, 2, 10, OUT_SSRC, {OPUS: OPUS}, False)


def send_audio(rig: Rig, seqs: list[int]) -> None:
    for seq in seqs:
        rig.pub.send_rtp(packets.rtp(OPUS, seq, 960 * seq, PUB_SSRC, b"\xfc" * 40))


def rtcp_types(compounds: list[bytes]) -> list[int]:
    return [p["type"] for c in compounds for p in fastpath.parse_rtcp(c)]


def test_without_transports_nothing_is_due_within_the_horizon(rig: Rig) -> None:
    now = int(time.monotonic() * 1000)
    engine = fastpath.Engine(rig.sock.fileno())
    assert engine.next_due_ms(now) == now + 1000


def test_next_due_is_the_send_rate_window_then_the_reports(rig: Rig) -> None:
    add_audio(rig)
    send_audio(rig, [1, 2, 3])
    rig.pump()
    now = int(time.monotonic() * 1000) + 10
    rig.engine.tick(now)                          # first RR and SR, the send-rate window starts
    assert rig.engine.next_due_ms(now) == now + 500
    rig.engine.tick(now + 500)                    # the window closes; the reports are due a second after now
    assert rig.engine.next_due_ms(now + 500) == now + 1000
    rig.pub.drain()
    rig.sub.drain()
    rig.engine.tick(now + 999)                    # nothing due yet: no report
    assert rtcp_types(rig.pub.drain()[1]) == [] and rtcp_types(rig.sub.drain()[1]) == []
    rig.engine.tick(now + 1000)
    assert 201 in rtcp_types(rig.pub.drain()[1]) and 200 in rtcp_types(rig.sub.drain()[1])


def test_a_pending_nack_makes_every_tick_due(rig: Rig) -> None:
    add_video(rig)
    send_frames(rig, [1, 2, 4, 5])                # seq 3 lost: a NACK waits for its retries
    rig.pump()
    now = int(time.monotonic() * 1000) + 10
    rig.engine.tick(now)
    assert rig.engine.next_due_ms(now) == now + 20


def test_pump_runs_the_timers_only_when_asked_to(rig: Rig) -> None:
    add_audio(rig)
    send_audio(rig, [1])
    rig.pump()
    assert rtcp_types(rig.pub.drain()[1]) == []   # auto_tick_ms 0: only tick() sends reports
    assert rig.engine.last_tick_ms == 0
    rig.engine.auto_tick_ms = 20
    send_audio(rig, [2])
    rig.pump()
    assert 201 in rtcp_types(rig.pub.drain()[1])  # the first receiver report, from pump() itself
    last = rig.engine.last_tick_ms
    assert last > 0 and rig.engine.snapshot_engine()["pump_ticks"] == 1
    send_audio(rig, [3])
    rig.pump()                                    # within auto_tick_ms of the last run: no second one
    assert rig.engine.snapshot_engine()["pump_ticks"] == 1 or rig.engine.last_tick_ms - last >= 20
