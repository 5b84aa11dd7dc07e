"""Transport-wide CC feedback toward publishers (draft-holmer-rmcat-transport-wide-cc-extensions-01 3.1).

``TwccRecorder`` runs the Engine's C arrival ring and feedback builder; packets are checked byte for byte
against hand-built goldens and decoded back with the small reference decoder below (written from the draft,
not from the builder). The Engine tests send SRTP packets with a transport-cc extension over loopback and
read the protected feedback the publisher receives.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

import pytest

import fastpath
from tests import packets
from tests.fastpath.conftest import Rig
from tests.kernel_stamps import SO_TIMESTAMPNS, wait_for_kernel_stamping

SENDER = 0x01020304
MEDIA = 0xAABBCCDD
TWCC_ID = 5
PUB_SSRC = 0x1111
RTX_SSRC = 0x2222
VP8 = 96
RTX = 97


@dataclass
class Feedback:
    sender: int
    media: int
    base: int
    count: int
    ref: int
    fb_count: int
    chunks: list[int]
    symbols: list[int]
    arrivals_us: dict[int, int] = field(default_factory=dict)   # seq -> reference time + deltas

    @property
    def received(self) -> list[int]:
        return list(self.arrivals_us)

    @property
    def lost(self) -> list[int]:
        return [(self.base + i) & 0xFFFF for i, s in enumerate(self.symbols) if s == 0]


def decode(pkt: bytes) -> Feedback:
    """Reference decoder: header, chunks (run length, 1-bit and 2-bit vectors), deltas, RFC 3550 padding."""
    b0, pt, words = struct.unpack("!BBH", pkt[:4])
    assert b0 >> 6 == 2 and pt == 205 and b0 & 0x1F == 15
    assert len(pkt) == (words + 1) * 4
    end = len(pkt) - (pkt[-1] if b0 & 0x20 else 0)
    sender, media, base, count = struct.unpack("!IIHH", pkt[4:16])
    ref = int.from_bytes(pkt[16:19], "big")
    pos, chunks, symbols = 20, [], []
    while len(symbols) < count:
        (chunk,) = struct.unpack("!H", pkt[pos:pos + 2])
        pos += 2
        chunks.append(chunk)
        if not chunk & 0x8000:
            assert (chunk >> 13) & 3 != 3, "reserved symbol in a run"
            symbols += [(chunk >> 13) & 3] * (chunk & 0x1FFF)
        elif not chunk & 0x4000:
            symbols += [(chunk >> (13 - i)) & 1 for i in range(14)]
        else:
            symbols += [(chunk >> (12 - 2 * i)) & 3 for i in range(7)]
    symbols = symbols[:count]
    fb = Feedback(sender, media, base, count, ref, pkt[19], chunks, symbols)
    t = ref * 64000
    for i, sym in enumerate(symbols):
        if sym == 0:
            continue
        assert sym in (1, 2)
        if sym == 1:
            delta = pkt[pos]
            pos += 1
        else:
            (delta,) = struct.unpack("!h", pkt[pos:pos + 2])
            pos += 2
        t += delta * 250
        fb.arrivals_us[(base + i) & 0xFFFF] = t
    assert pos <= end and end - pos < 4, "bytes left after the deltas"
    return fb


def recorder(arrivals: list[tuple[int, int]]) -> fastpath.TwccRecorder:
    r = fastpath.TwccRecorder()
    for seq, at in arrivals:
        r.record(seq, at, MEDIA)
    return r


# ---- golden packets ----

def test_in_order_arrivals_make_one_run_length_chunk() -> None:
    r = recorder([(100 + i, 641000 + 1000 * i) for i in range(5)])
    (pkt,) = r.build(SENDER)
    assert pkt == bytes.fromhex("afcd0006" "01020304" "aabbccdd" "0064" "0005" "00000a" "00"
                                "2005" "0404040404" "01")
    fb = decode(pkt)
    assert fb.arrivals_us == {100 + i: 641000 + 1000 * i for i in range(5)}
    assert r.pending == 0 and r.build(SENDER) == []


def test_loss_and_large_delta_use_a_two_bit_vector() -> None:
    r = recorder([(0, 0), (1, 500), (3, 100500)])
    (pkt,) = r.build(SENDER)
    assert pkt == bytes.fromhex("afcd0006" "01020304" "aabbccdd" "0000" "0004" "000000" "00"
                                "d480" "00" "02" "0190" "0002")
    fb = decode(pkt)
    assert fb.lost == [2] and fb.arrivals_us == {0: 0, 1: 500, 3: 100500}


def test_loss_with_small_deltas_uses_a_one_bit_vector() -> None:
    r = recorder([(7, 1000), (9, 2000), (10, 2250)])
    (pkt,) = r.build(SENDER)
    fb = decode(pkt)
    assert fb.chunks == [0x8000 | 1 << 13 | 1 << 11 | 1 << 10]
    assert fb.base == 7 and fb.lost == [8] and fb.arrivals_us == {7: 1000, 9: 2000, 10: 2250}


def test_long_loss_run_is_one_run_length_chunk() -> None:
    r = recorder([(0, 0), (101, 5000)])
    fb = decode(r.build(SENDER)[0])
    assert fb.chunks == [0x8000 | 1 << 13, 0x0000 | 87, 0x2001]     # 1-bit vector, run of 87 losses, run
    assert fb.count == 102 and len(fb.lost) == 100 and fb.arrivals_us == {0: 0, 101: 5000}


def test_reordered_arrival_is_a_negative_two_byte_delta() -> None:
    r = recorder([(10, 1000), (12, 2000), (11, 3000)])
    (pkt,) = r.build(SENDER)
    assert pkt[20:] == bytes.fromhex("d600" "04" "08" "fffc" "0002")   # 2-bit vector, deltas 4, 8, -4, padding
    assert decode(pkt).arrivals_us == {10: 1000, 11: 3000, 12: 2000}


def test_sequence_wrap_keeps_one_window() -> None:
    r = recorder([(65534, 10_000), (65535, 11_000), (1, 12_000), (2, 13_000)])
    (pkt,) = r.build(SENDER)
    fb = decode(pkt)
    assert (fb.base, fb.count) == (65534, 5)
    assert fb.lost == [0] and fb.received == [65534, 65535, 1, 2]


def test_only_the_first_arrival_counts() -> None:
    r = recorder([(5, 1000), (5, 9000), (6, 2000)])
    assert decode(r.build(SENDER)[0]).arrivals_us == {5: 1000, 6: 2000}
    assert r.counters["duplicates"] == 1 and r.counters["packets"] == 2


def test_late_packet_moves_the_window_start_back() -> None:
    r = recorder([(1, 1000), (3, 2000)])
    first = decode(r.build(SENDER)[0])
    assert (first.base, first.count, first.lost) == (1, 3, [2])
    r.record(2, 30_000, MEDIA)
    r.record(4, 31_000, MEDIA)
    second = decode(r.build(SENDER)[0])
    assert (second.base, second.count) == (2, 3)
    assert second.arrivals_us == {2: 30_000, 3: 2000, 4: 31_000}
    assert (first.fb_count, second.fb_count) == (0, 1)


def test_delta_overflow_splits_into_packets_with_their_own_reference_time() -> None:
    r = recorder([(1, 0), (2, 10_000_000), (3, 10_001_000)])     # 10 s = 40000 ticks > int16
    a, b = (decode(p) for p in r.build(SENDER))
    assert (a.base, a.count, a.fb_count) == (1, 1, 0)
    assert (b.base, b.count, b.fb_count, b.ref) == (2, 2, 1, 10_000_000 // 64000)
    assert b.arrivals_us == {2: 10_000_000, 3: 10_001_000}


def test_size_limit_splits_and_covers_every_seq_once() -> None:
    # 100 ms between packets: every delta needs 2 bytes, so 1000 packets cannot fit in one feedback.
    arrivals = [((60000 + i) & 0xFFFF, 100_000 * i) for i in range(1000)]
    r = recorder(arrivals)
    out = r.build(SENDER)
    assert len(out) >= 2 and all(len(p) <= 1200 for p in out)
    decoded = [decode(p) for p in out]
    got: dict[int, int] = {}
    expect_base = 60000
    for fb in decoded:
        assert fb.base == expect_base & 0xFFFF
        expect_base += fb.count
        got.update(fb.arrivals_us)
    assert got == dict(arrivals)
    assert [fb.fb_count for fb in decoded] == list(range(len(decoded)))
    small = recorder(arrivals[:100]).build(SENDER, max_bytes=100)
    assert all(len(p) <= 100 for p in small)
    assert sum(decode(p).count for p in small) == 100


def test_window_is_bounded_by_the_ring() -> None:
    r = recorder([(0, 0), (5000, 1000)])
    fb = decode(r.build(SENDER)[0])
    assert fb.count == 2048 and fb.received == [5000]
    assert r.record(1, 2000) == 0 and r.counters["too_old"] == 1


def test_bad_input_is_refused() -> None:
    r = fastpath.TwccRecorder()
    with pytest.raises(ValueError, match="seq must be in 0..65535"):
        r.record(70000, 0)
    with pytest.raises(ValueError, match="arrival_us must be >= 0"):
        r.record(1, -5)
    with pytest.raises(ValueError, match="max_bytes must be in 32..2048"):
        r.build(SENDER, max_bytes=8)


# ---- Engine over loopback ----

def twcc_ext(seq: int) -> list[tuple[int, bytes]]:
    return [(TWCC_ID, struct.pack("!H", seq & 0xFFFF))]


def enable_twcc(rig: Rig, twcc_id: int = TWCC_ID) -> None:
    ids = bytearray(256)
    ids[1], ids[2], ids[3] = 1, 2, 3                     # transport-cc itself is blanked, as control does
    rig.engine.set_extension_map(1, 1, 2, 3, 0, bytes(ids), twcc_id=twcc_id)
    rig.engine.add_producer(10, 1, fastpath.KIND_VIDEO, b"0", [(b"", PUB_SSRC, RTX_SSRC)], [VP8], {RTX: VP8},
                            90000, codecs={VP8: fastpath.CODEC_VP8})


def feedback_of(rtcp: list[bytes]) -> list[Feedback]:
    """The TWCC feedback datagrams (each goes out alone, not in a compound)."""
    out = []
    for compound in rtcp:
        parsed = fastpath.parse_rtcp(compound)
        if parsed[0]["type"] == 205 and parsed[0]["count"] == 15:
            assert len(parsed) == 1
            out.append(decode(compound))
    return out


def now_ms() -> int:
    return int(time.monotonic() * 1000)


def test_publisher_receives_feedback_covering_every_packet(rig: Rig) -> None:
    enable_twcc(rig)
    for i in range(8):
        if i == 5:
            continue                                         # transport-wide seq 105 is lost
        rig.pub.send_rtp(packets.rtp(VP8, 300 + i, 9000, PUB_SSRC, packets.vp8_payload(key=i == 0),
                                     extensions=twcc_ext(100 + i)))
    # Dropped packets still count: a padding-only probe, an empty RTX probe and an unknown SSRC.
    rig.pub.send_rtp(packets.rtp(VP8, 308, 9000, PUB_SSRC, b"", extensions=twcc_ext(108), padding=200))
    rig.pub.send_rtp(packets.rtp(RTX, 7, 9000, RTX_SSRC, b"", extensions=twcc_ext(109), padding=200))
    rig.pub.send_rtp(packets.rtp(VP8, 1, 9000, 0, b"", extensions=twcc_ext(110), padding=200))
    rig.pump()
    rig.pub.drain(0.05)
    rig.engine.tick(now_ms() + 1000)
    _, rtcp = rig.pub.drain()
    (fb,) = feedback_of(rtcp)
    assert (fb.base, fb.count) == (100, 11)
    assert fb.lost == [105]
    assert fb.received == [s for s in range(100, 111) if s != 105]
    times = list(fb.arrivals_us.values())
    assert times == sorted(times)                            # sent in order over loopback
    assert fb.media in (PUB_SSRC, RTX_SSRC, 0)
    snap = rig.engine.snapshot_transport(1)
    assert snap["twcc_packets"] == 10 and snap["twcc_feedbacks"] == 1 and snap["twcc_pending"] == 0
    rig.engine.tick(now_ms() + 2000)                         # nothing new: no feedback
    assert feedback_of(rig.pub.drain(0.05)[1]) == []


def test_feedback_count_advances_and_next_window_continues(rig: Rig) -> None:
    enable_twcc(rig)
    rig.pub.send_rtp(packets.rtp(VP8, 1, 1, PUB_SSRC, packets.vp8_payload(key=True), extensions=twcc_ext(65535)))
    rig.pump()
    rig.engine.tick(now_ms() + 1000)
    rig.pub.send_rtp(packets.rtp(VP8, 2, 1, PUB_SSRC, packets.vp8_payload(key=False), extensions=twcc_ext(0)))
    rig.pump()
    rig.engine.tick(now_ms() + 2000)
    fbs = feedback_of(rig.pub.drain()[1])
    assert [(f.base, f.count, f.fb_count) for f in fbs] == [(65535, 1, 0), (0, 1, 1)]


def test_many_pending_packets_are_reported_without_a_tick(rig: Rig) -> None:
    enable_twcc(rig)
    for i in range(600):
        rig.pub.send_rtp(packets.rtp(VP8, i, 1, PUB_SSRC, packets.vp8_payload(key=i == 0, size=20),
                                     extensions=twcc_ext(i)))
        if i % 100 == 99:
            rig.pump()
    rig.pump()
    fbs = feedback_of(rig.pub.drain()[1])
    assert fbs and fbs[0].base == 0
    assert set().union(*(f.received for f in fbs)) >= set(range(512))


def test_no_feedback_without_negotiated_transport_cc(rig: Rig) -> None:
    enable_twcc(rig, twcc_id=0)
    rig.pub.send_rtp(packets.rtp(VP8, 1, 1, PUB_SSRC, packets.vp8_payload(key=True), extensions=twcc_ext(1)))
    rig.pump()
    rig.engine.tick(now_ms() + 1000)
    assert feedback_of(rig.pub.drain()[1]) == []
    assert "twcc_packets" not in rig.engine.snapshot_transport(1)


def test_twcc_id_out_of_range_is_refused(rig: Rig) -> None:
    with pytest.raises(ValueError, match="twcc_id must be in 0..255"):
        rig.engine.set_extension_map(1, 1, 2, 3, 0, bytes(256), twcc_id=300)


def test_a_jump_beyond_half_the_seq_space_restarts_the_window() -> None:
    r = recorder([(0, 0), (1, 1000)])
    r.build(SENDER)
    for i in range(64):                                 # 40000 ahead reads as a step back: too old ...
        r.record(40000 + i, 2000 + i)
    assert r.counters["too_old"] == 64 and r.counters["resyncs"] == 1
    fb = decode(r.build(SENDER)[0])                     # ... until the 64th restarts the window there
    assert (fb.base, fb.count, fb.received) == (40063, 1, [40063])
    r.record(40064, 3000)
    assert decode(r.build(SENDER)[0]).received == [40064]


def test_arrival_times_are_the_kernels_not_the_read_time(rig: Rig) -> None:
    """Packets that wait in the socket buffer keep their own receive times (SO_TIMESTAMPNS, which the Engine asks
    for only once a transport wants TWCC feedback)."""
    assert rig.engine.snapshot_engine()["kernel_timestamps"] == 0
    enable_twcc(rig)
    assert rig.engine.snapshot_engine()["kernel_timestamps"] == 1
    wait_for_kernel_stamping()
    for i in range(4):
        if i:
            time.sleep(0.03)
        rig.pub.send_rtp(packets.rtp(VP8, i, 1, PUB_SSRC, packets.vp8_payload(key=i == 0), extensions=twcc_ext(i)))
    rig.pump()                                               # one read for all four
    rig.engine.tick(now_ms() + 1000)
    (fb,) = feedback_of(rig.pub.drain()[1])
    times = list(fb.arrivals_us.values())
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) == 3 and all(g >= 25_000 for g in gaps), gaps   # the sender slept >= 30 ms between them


def test_kernel_timestamps_are_on_while_any_transport_wants_twcc(rig: Rig) -> None:
    """Asking the kernel for receive timestamps makes it stamp every packet the host receives, so the Engine asks
    only while a transport wants TWCC feedback, the one user of arrival times; the socket option follows."""
    def on() -> tuple[int, int]:
        kernel = rig.sock.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS)
        return rig.engine.snapshot_engine()["kernel_timestamps"], kernel

    assert on() == (0, 0)
    enable_twcc(rig)
    rig.engine.set_extension_map(2, 1, 2, 3, 0, bytes(256), twcc_id=TWCC_ID)
    assert on() == (1, 1)
    rig.engine.set_extension_map(2, 1, 2, 3, 0, bytes(256), twcc_id=TWCC_ID)   # set again: counted once
    rig.engine.remove_transport(1)
    assert on() == (1, 1)
    rig.engine.remove_transport(2)
    assert on() == (0, 0)


def test_two_byte_extension_form_and_a_second_produce_keep_one_window(rig: Rig) -> None:
    enable_twcc(rig)
    rig.pub.send_rtp(packets.rtp(VP8, 1, 1, PUB_SSRC, packets.vp8_payload(key=True),
                                 extensions=[(TWCC_ID, struct.pack("!H", 700))], two_byte=True))
    rig.pump()
    ids = bytearray(256)
    ids[1] = 1
    rig.engine.set_extension_map(1, 1, 2, 3, 0, bytes(ids), twcc_id=TWCC_ID)   # the next track's produce
    rig.pub.send_rtp(packets.rtp(VP8, 2, 1, PUB_SSRC, packets.vp8_payload(key=False), extensions=twcc_ext(701)))
    rig.pump()
    rig.engine.tick(now_ms() + 1000)
    (fb,) = feedback_of(rig.pub.drain()[1])
    assert (fb.base, fb.count, fb.received) == (700, 2, [700, 701])
