"""Disciplined retransmission toward subscribers (fastpath/_rtx.pxi, docs/FORWARDING.md, NACK and retransmission).

A NACKed packet is resent at most once per RTT (RESEND_DEFAULT_RTT_MS = 100 ms before any receiver report), at
most three times, and not once it aged out (1 s for video, 500 ms for audio); each refusal has its drop counter.
With RTX negotiated the resend is an RFC 4588 packet (own SSRC, RTX payload type, own sequence counter, the
rewritten sequence number as the first two payload bytes), checked byte for byte; without, it is the media packet.
"""

from __future__ import annotations

import struct
import time

import pytest

import fastpath
from tests import packets
from tests.fastpath.conftest import Rig

PUB_SSRC = 0x1111
AUDIO_SSRC = 0x3333
OUT_SSRC = 0x5555
RTX_OUT_SSRC = 0x6666
AUDIO_OUT_SSRC = 0x7777
VP8, OPUS = 96, 111
OUT_VP8, OUT_RTX = 100, 101


def header(packet: bytes) -> tuple[int, int, int, int]:
    """(pt, seq, ts, ssrc) of an RTP packet."""
    _, b1, seq, ts, ssrc = struct.unpack("!BBHII", packet[:12])
    return b1 & 0x7F, seq, ts, ssrc


def add_video(rig: Rig, *, rtx: bool = False) -> None:
    rig.engine.add_producer(10, 1, fastpath.KIND_VIDEO, b"0", [(b"", PUB_SSRC, 0)], [VP8], {}, 90000,
                            codecs={VP8: fastpath.CODEC_VP8})
    if rtx:
        rig.engine.add_consumer(20, 2, 10, OUT_SSRC, {VP8: OUT_VP8}, True, rtx_ssrc=RTX_OUT_SSRC,
                                rtx_pt_map={OUT_VP8: OUT_RTX})
    else:
        rig.engine.add_consumer(20, 2, 10, OUT_SSRC, {VP8: OUT_VP8}, True)


def add_audio(rig: Rig) -> None:
    rig.engine.add_producer(11, 1, fastpath.KIND_AUDIO, b"1", [(b"", AUDIO_SSRC, 0)], [OPUS], {}, 48000)
    rig.engine.add_consumer(21, 2, 11, AUDIO_OUT_SSRC, {OPUS: OPUS}, True)


def send_and_forward(rig: Rig, kind: str, count: int = 6, **rtp: object) -> tuple[list[bytes], list[bytes]]:
    """Publish count packets of kind and return (what was sent, what the subscriber got)."""
    sent = []
    for i in range(count):
        if kind == "video":
            pkt = packets.rtp(VP8, 300 + i, 9000 + 3000 * (i // 2), PUB_SSRC, packets.vp8_payload(key=i == 0),
                              **rtp)  # type: ignore[arg-type]
        else:
            pkt = packets.rtp(OPUS, 300 + i, 960 * i, AUDIO_SSRC, b"\x78" * 40)
        rig.pub.send_rtp(pkt)
        sent.append(pkt)
    rig.pump()
    got, _ = rig.sub.drain()
    assert len(got) == count
    return sent, got


# Each case: the packet's kind, the delays (ms) before each NACK of the same packet (the first counted from the
# original send), the resends the subscriber receives and the drop counters that say why the others were refused.
CASES = {
    "second NACK within the RTT is dropped": ("video", [0, 0], 1, {"drop_nack_too_soon": 1}),
    "a NACK one RTT later is resent": ("video", [0, 130], 2, {}),
    "a video packet older than 1 s is not resent": ("video", [1050], 0, {"drop_nack_too_old": 1}),
    "at most three resends": ("video", [0, 130, 130, 130], 3, {"drop_nack_limit": 1}),
    "audio is resent within 500 ms": ("audio", [400], 1, {}),
    "audio older than 500 ms is not resent": ("audio", [550], 0, {"drop_nack_too_old": 1}),
}


@pytest.mark.parametrize("kind, delays, resends, drops", list(CASES.values()), ids=list(CASES))
def test_resend_discipline(rig: Rig, kind: str, delays: list[int], resends: int, drops: dict[str, int]) -> None:
    add_audio(rig) if kind == "audio" else add_video(rig)
    consumer, out_ssrc = (21, AUDIO_OUT_SSRC) if kind == "audio" else (20, OUT_SSRC)
    _, got = send_and_forward(rig, kind)
    lost = header(got[3])[1]
    received = []
    for delay in delays:
        time.sleep(delay / 1000)
        rig.sub.forget_received()
        rig.sub.send_rtcp(packets.rtcp_nack(0xABC, out_ssrc, [lost]))
        rig.pump()
        received += rig.sub.drain(0.05)[0]
    assert received == [got[3]] * resends
    c = rig.engine.snapshot_consumer(consumer)
    assert c["retransmits"] == resends and c["nack_rx"] == len(delays)
    assert {k: v for k, v in c.items() if k.startswith("drop_nack")} == drops


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_an_unrepairable_video_nack_asks_the_publisher_for_a_key_frame_once_per_second(rig: Rig, kind: str) -> None:
    """A NACK that will not be resent leaves the subscriber's decoder stuck until a key frame: the Engine asks the
    publisher for one at once (a libwebrtc receiver would after about 3 s), at most once per second per consumer;
    audio needs none."""
    add_audio(rig) if kind == "audio" else add_video(rig)
    consumer, out_ssrc = (21, AUDIO_OUT_SSRC) if kind == "audio" else (20, OUT_SSRC)
    _, got = send_and_forward(rig, kind)
    rig.pub.drain(0.05)
    time.sleep(1.05)                                       # older than either kind's retransmission age
    for lost in (header(got[3])[1], header(got[4])[1]):
        rig.sub.send_rtcp(packets.rtcp_nack(0xABC, out_ssrc, [lost]))
    rig.pump()
    _, rtcp = rig.pub.drain(0.05)
    plis = [p for r in rtcp for p in fastpath.parse_rtcp(r) if p["type"] == 206 and p["count"] == 1]
    c = rig.engine.snapshot_consumer(consumer)
    assert c["drop_nack_too_old"] == 2
    assert (c["hole_keyframes"], len(plis)) == ((1, 1) if kind == "video" else (0, 0))


def test_each_packet_has_its_own_budget(rig: Rig) -> None:
    add_video(rig)
    _, got = send_and_forward(rig, "video")
    first, second = header(got[1])[1], header(got[2])[1]
    rig.sub.forget_received()
    rig.sub.send_rtcp(packets.rtcp_nack(0xABC, OUT_SSRC, [first]))
    rig.sub.send_rtcp(packets.rtcp_nack(0xABC, OUT_SSRC, [first, second]))
    rig.pump()
    again, _ = rig.sub.drain()
    assert [header(p)[1] for p in again] == [first, second]
    assert rig.engine.snapshot_consumer(20)["drop_nack_too_soon"] == 1


@pytest.mark.parametrize("rtx", [True, False], ids=["rtx", "no-rtx"])
def test_retransmission_layout(rig: Rig, rtx: bool) -> None:
    add_video(rig, rtx=rtx)
    _, got = send_and_forward(rig, "video", marker=True, extensions=[(3, b"ab")])
    lost = [header(got[2])[1], header(got[4])[1]]
    rig.sub.forget_received()
    rig.sub.send_rtcp(packets.rtcp_nack(0xABC, OUT_SSRC, lost))
    rig.pump()
    again, _ = rig.sub.drain()
    assert len(again) == 2
    snap = rig.engine.snapshot_consumer(20)
    assert snap["retransmits"] == 2
    if not rtx:
        assert again == [got[2], got[4]]                  # the media packet again: same SSRC, PT, seq and ts
        assert (snap["rtx_ssrc"], snap["rtx_packets"]) == (0, 0)
        return
    first_rtx_seq = header(again[0])[1]
    assert header(again[1])[1] == (first_rtx_seq + 1) & 0xFFFF   # the RTX stream's own counter
    for original, repair, rtx_seq in zip((got[2], got[4]), again, (first_rtx_seq, first_rtx_seq + 1), strict=True):
        header_len = fastpath.parse_rtp(original)["header_len"]
        expected = bytearray(original[:header_len])
        expected[1] = 0x80 | OUT_RTX                       # marker kept, RTX payload type
        expected[2:4] = struct.pack("!H", rtx_seq & 0xFFFF)
        expected[8:12] = struct.pack("!I", RTX_OUT_SSRC)  # timestamp (4:8) unchanged
        expected += original[2:4] + original[header_len:]  # OSN, then the original payload (RFC 4588 4)
        assert repair == bytes(expected)
    assert (snap["rtx_ssrc"], snap["rtx_packets"]) == (RTX_OUT_SSRC, 2)


def test_rtx_consumer_arguments_are_checked(rig: Rig) -> None:
    add_video(rig)
    with pytest.raises(ValueError, match="rtx_ssrc 21845 is already used"):
        rig.engine.add_consumer(22, 2, 10, 0x9999, {VP8: OUT_VP8}, True, rtx_ssrc=OUT_SSRC, rtx_pt_map={100: 101})
    with pytest.raises(ValueError, match="rtx_ssrc needs a non-empty rtx_pt_map"):
        rig.engine.add_consumer(22, 2, 10, 0x9999, {VP8: OUT_VP8}, True, rtx_ssrc=0x9998)
    with pytest.raises(ValueError, match="rtx_pt_map entry 100->200 out of range"):
        rig.engine.add_consumer(22, 2, 10, 0x9999, {VP8: OUT_VP8}, True, rtx_ssrc=0x9998, rtx_pt_map={100: 200})


def test_packets_of_a_layer_left_at_a_switch_are_not_resent(rig: Rig) -> None:
    # Down from the 1280 px layer at a 320 px key frame: the large layer's losses from before the switch are useless
    # to the decoder after the key frame and, on the congested link that caused the switch, only deepen its queue.
    e = rig.engine
    e.add_producer(10, 1, fastpath.KIND_VIDEO, b"v", [(b"lo", 0, 0), (b"hi", 0, 0)], [VP8], {}, 90000,
                   codecs={VP8: fastpath.CODEC_VP8})
    e.add_consumer(20, 2, 10, OUT_SSRC, {VP8: OUT_VP8}, True)

    def send(rid: bytes, ssrc: int, seqs: list[int], ts: int, key: bool) -> None:
        for i, s in enumerate(seqs):
            rig.pub.send_rtp(packets.rtp(VP8, s, ts, ssrc, packets.vp8_payload(key=key and i == 0),
                                         extensions=[(1, b"v"), (2, rid)]))

    send(b"lo", 0xA, [100], 1000, True)
    send(b"hi", 0xB, [5000, 5001, 5002], 7000, True)
    rig.pump()
    before, _ = rig.sub.drain()
    e.set_consumer_layer(20, 0)
    send(b"lo", 0xA, [101, 102], 4000, True)                  # the switch
    rig.pump()
    after, _ = rig.sub.drain()
    assert len(before) == 3 and len(after) == 2
    old, new = header(before[1])[1], header(after[1])[1]
    rig.sub.forget_received()
    rig.sub.send_rtcp(packets.rtcp_nack(0xABC, OUT_SSRC, [old, new]))
    rig.pump()
    again, _ = rig.sub.drain()
    assert again == [after[1]]
    c = e.snapshot_consumer(20)
    assert c["retransmits"] == 1 and c["drop_nack_other_layer"] == 1
