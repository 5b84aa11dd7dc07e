"""NACK generation toward publishers (RFC 4585 6.2.1 generic NACK; docs/FORWARDING.md, NACK and retransmission).

``NackGenerator`` runs the Engine's C generator on explicit times; its packets are parsed with aiortc's
RTCP parser (an independent implementation). The Engine tests send SRTP video with gaps over loopback and
read the NACKs the publisher receives, driving the Engine's timers with ``tick(now_ms)``.
"""

from __future__ import annotations

import struct
import time

import pytest
from aiortc.rtp import RtcpPacket, RtcpRtpfbPacket

import fastpath
from tests import packets
from tests.fastpath.conftest import Rig

SENDER = 0x0A0B0C0D
MEDIA = 0x1111
PUB_SSRC = 0x1111
RTX_SSRC = 0x2222
VP8 = 96
RTX = 97


def lost_of(pkts: list[bytes], media: int = MEDIA) -> list[int]:
    """Seqs requested by generic NACKs for `media`, decoded by aiortc (which adds BLP offsets to the PID
    without the 16-bit wrap, hence the mask)."""
    lost: list[int] = []
    for data in pkts:
        for p in RtcpPacket.parse(data):
            if isinstance(p, RtcpRtpfbPacket) and p.fmt == 1 and p.media_ssrc == media:
                lost.extend(s & 0xFFFF for s in p.lost)
    return lost


def gen_with(received: list[int], at_ms: int = 0) -> fastpath.NackGenerator:
    g = fastpath.NackGenerator()
    for s in received:
        assert not g.receive(s, at_ms)
    return g


# ---- the generator ----

def test_first_nack_waits_for_reordering_then_names_exactly_the_gap() -> None:
    g = gen_with([100, 101, 104, 105, 107])
    assert g.nack(5, 0, SENDER, MEDIA) == []                  # younger than 10 ms: may be reordered
    out = g.nack(10, 0, SENDER, MEDIA)
    assert lost_of(out) == [102, 103, 106]
    assert out == [bytes.fromhex("81cd0003" "0a0b0c0d" "00001111" "0066" "0009")]   # PID 102, BLP 103, 106
    assert g.counters["requested"] == 3 and g.counters["packets"] == 1


def test_retries_every_max_rtt_40ms_up_to_ten_tries() -> None:
    g = gen_with([1, 3])
    sent_at = [t for t in range(10, 2000, 5) if lost_of(g.nack(t, 0, SENDER, MEDIA))]
    assert sent_at == [10 + 40 * i for i in range(10)]
    assert g.pending == [] and g.counters["expired"] == 1

    g = gen_with([1, 3])
    sent_at = [t for t in range(10, 1000, 5) if lost_of(g.nack(t, 150, SENDER, MEDIA))]
    assert sent_at[:3] == [10, 160, 310]


def test_entries_older_than_one_second_are_dropped() -> None:
    g = gen_with([1, 3])
    assert lost_of(g.nack(10, 400, SENDER, MEDIA)) == [2]
    assert lost_of(g.nack(1001, 400, SENDER, MEDIA)) == []
    assert g.pending == [] and g.counters["expired"] == 1


def test_late_and_recovered_packets_leave_the_list() -> None:
    g = gen_with([10, 14])
    assert lost_of(g.nack(10, 0, SENDER, MEDIA)) == [11, 12, 13]
    g.receive(12, 20)                                        # e.g. repaired by RTX
    assert g.pending == [11, 13]
    assert lost_of(g.nack(60, 0, SENDER, MEDIA)) == [11, 13]
    g.receive(11, 61)
    g.receive(13, 61)
    assert lost_of(g.nack(200, 0, SENDER, MEDIA)) == []
    assert g.counters["recovered"] == 3


def test_sequence_wrap() -> None:
    g = gen_with([65533, 1])
    assert lost_of(g.nack(10, 0, SENDER, MEDIA)) == [65534, 65535, 0]


def test_fci_packing_pid_blp() -> None:
    received = [9, 11] + list(range(13, 26)) + [29, 30]      # missing 10, 12, 26, 27, 28
    (pkt,) = gen_with(received).nack(10, 0, SENDER, MEDIA)
    fcis = [struct.unpack("!HH", pkt[i:i + 4]) for i in range(12, len(pkt), 4)]
    assert fcis == [(10, 0x8002), (27, 0x0001)]              # 12 and 26 (16 after 10) share PID 10; 27 cannot
    assert lost_of([pkt]) == [10, 12, 26, 27, 28]


def test_more_than_250_fcis_split_into_packets() -> None:
    received = [s for s in range(6020) if s % 20 != 5]      # 301 isolated losses: one FCI each
    out = gen_with(received).nack(10, 0, SENDER, MEDIA)
    assert [(len(p) - 12) // 4 for p in out] == [250, 51]
    assert lost_of(out) == [s for s in range(6020) if s % 20 == 5]


def test_overflow_clears_the_list_and_asks_for_a_key_frame() -> None:
    g = gen_with([0, 600])
    assert len(g.pending) == 599
    assert g.receive(1200, 0)                                # 599 + 599 > 1000
    assert g.pending == [] and g.counters["overflows"] == 1
    assert lost_of(g.nack(10, 0, SENDER, MEDIA)) == []


def test_overflow_first_drops_entries_before_the_last_key_frame() -> None:
    g = gen_with([0, 600, 601])
    g.key_frame(601)
    assert not g.receive(1200, 0)
    assert g.pending == list(range(602, 1200)) and g.counters["overflows"] == 0


def test_entries_more_than_10000_seqs_old_are_dropped() -> None:
    g = gen_with([0, 2])
    for s in range(3, 10003):
        g.receive(s, 0)
    assert lost_of(g.nack(10, 0, SENDER, MEDIA)) == []
    assert g.counters["expired"] == 1


def test_bad_input_is_refused() -> None:
    g = fastpath.NackGenerator()
    with pytest.raises(ValueError, match="seq must be in 0..65535"):
        g.receive(-1, 0)
    with pytest.raises(ValueError, match="rtt_ms must be >= 0"):
        g.nack(0, -1, SENDER, MEDIA)


# ---- Engine over loopback ----

def now_ms() -> int:
    return int(time.monotonic() * 1000)


def add_video(rig: Rig, *, consumer: bool = True) -> None:
    rig.engine.add_producer(10, 1, fastpath.KIND_VIDEO, b"0", [(b"", PUB_SSRC, RTX_SSRC)], [VP8], {RTX: VP8},
                            90000, codecs={VP8: fastpath.CODEC_VP8})
    if consumer:
        rig.engine.add_consumer(20, 2, 10, 0x5555, {VP8: 100}, True)


def video(seq: int, key: bool = False) -> bytes:
    return packets.rtp(VP8, seq, 3000 * (seq // 3), PUB_SSRC, packets.vp8_payload(key=key))


def nacks_after_tick(rig: Rig, at_ms: int) -> list[int]:
    rig.pub.drain(0.02)
    rig.engine.tick(at_ms)
    return lost_of(rig.pub.drain(0.1)[1], PUB_SSRC)


def test_gap_gets_nacked_once_per_interval_and_not_after_arrival(rig: Rig) -> None:
    add_video(rig)
    for s in range(100, 110):
        if s not in (103, 106):
            rig.pub.send_rtp(video(s, key=s == 100))
    rig.pump()
    t0 = now_ms()
    assert nacks_after_tick(rig, t0 + 20) == [103, 106]
    assert nacks_after_tick(rig, t0 + 30) == []               # retry only after max(RTT, 40 ms)
    assert nacks_after_tick(rig, t0 + 130) == [103, 106]      # default RTT 100 ms
    rig.pub.send_rtp(video(103))
    rig.pub.send_rtp(packets.rtp(RTX, 500, 3000 * 35, RTX_SSRC, packets.rtx_payload(106, video(106)[12:])))
    rig.pump()
    assert nacks_after_tick(rig, t0 + 300) == []
    layer = rig.engine.snapshot_producer(10)["layers"][0]
    assert layer["nack_requested"] == 4 and layer["nack_packets"] == 2
    assert layer["nack_recovered"] == 2 and layer["nack_pending"] == 0
    got, _ = rig.sub.drain()
    assert len(got) == 10                                     # the repaired packets were forwarded too


def test_audio_gaps_are_not_nacked(rig: Rig) -> None:
    rig.engine.add_producer(11, 1, fastpath.KIND_AUDIO, b"1", [(b"", 0x3333, 0)], [111], {}, 48000)
    for s in (1, 2, 5):
        rig.pub.send_rtp(packets.rtp(111, s, 960 * s, 0x3333, b"\xfc" * 40))
    rig.pump()
    rig.pub.drain(0.02)
    rig.engine.tick(now_ms() + 50)
    assert lost_of(rig.pub.drain(0.1)[1], 0x3333) == []
    assert "nack_requested" not in rig.engine.snapshot_producer(11)["layers"][0]


def test_burst_loss_beyond_the_list_requests_a_key_frame_instead(rig: Rig) -> None:
    add_video(rig, consumer=False)
    rig.pub.send_rtp(video(1, key=True))
    rig.pub.send_rtp(video(1500))                             # 1498 missing > 1000 entries
    rig.pump()
    _, rtcp = rig.pub.drain()
    plis = [p for c in rtcp for p in fastpath.parse_rtcp(c) if p["type"] == 206 and p["count"] == 1]
    assert len(plis) == 1 and plis[0]["media_ssrc"] == PUB_SSRC
    assert nacks_after_tick(rig, now_ms() + 50) == []
    assert rig.engine.snapshot_producer(10)["layers"][0]["nack_overflows"] == 1


def test_rtt_from_the_publishers_dlrr_spaces_the_retries(rig: Rig) -> None:
    add_video(rig)
    for s in (1, 2, 4):
        rig.pub.send_rtp(video(s, key=s == 1))
    rig.pump()
    rig.pub.drain(0.02)
    t0 = now_ms()
    rig.engine.tick(t0 - 300)                                   # the RR compound with our RRTR, "300 ms ago"
    _, rtcp = rig.pub.drain()
    xr = [p for c in rtcp for p in fastpath.parse_rtcp(c) if p["type"] == 207]
    assert len(xr) == 1
    engine_ssrc, bt, _, words, ntp_sec, ntp_frac = struct.unpack("!IBBHII", xr[0]["body"])
    assert (bt, words) == (4, 2)
    lrr = ((ntp_sec & 0xFFFF) << 16) | (ntp_frac >> 16)
    dlrr = 65536 // 10                                          # the publisher held it for 100 ms
    rig.pub.send_rtcp(packets.rtcp_header(0, 207, struct.pack("!IBBHIII", 0x7777, 5, 0, 3, engine_ssrc, lrr, dlrr)))
    rig.pump()
    rtt = rig.engine.snapshot_transport(1)["rtt_ms"]
    assert 200 <= rtt < 1200                                    # 300 ms ago - 100 ms held, plus this test's run time
    t1 = now_ms()
    assert nacks_after_tick(rig, t1 + 20) == [3]
    assert nacks_after_tick(rig, t1 + 20 + rtt - 5) == []       # not before one RTT
    assert nacks_after_tick(rig, t1 + 20 + rtt) == [3]
