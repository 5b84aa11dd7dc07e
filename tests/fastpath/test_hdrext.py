"""The header extension elements the router writes (fastpath/hdrext.pxd) and the playout delay toward a subscriber
(fastpath/_playout.pxi; docs/FORWARDING.md, Playout delay): golden packets for the writer, and the Engine writing
the element into a video consumer's packets for a while after ``set_playout_delay``.
"""

from __future__ import annotations

import time

import pytest

import fastpath
from tests import packets
from tests.fastpath.conftest import Rig

PD_ID = 7
PAYLOAD = b"\x90\x80\x80\x01\x00" + b"\x42" * 15
HEADER = bytes.fromhex("90600007000003e800001234")


def playout_of(packet: bytes, ext_id: int = PD_ID) -> tuple[int, int] | None:
    """The (min_ms, max_ms) of a packet's playout-delay element, or None."""
    for eid, data in fastpath.parse_rtp(packet)["extensions"]:
        if eid == ext_id:
            assert len(data) == 3
            v = int.from_bytes(data, "big")
            return (v >> 12) * 10, (v & 0xFFF) * 10
    return None


PUT_CASES = [
    # (name, packet, ext_id, data, expected packet or None = refused)
    (
        "no block: one word of block header and one of element",
        packets.rtp(96, 7, 1000, 0x1234, PAYLOAD), 7, b"\x00\xa3\xe8",
        HEADER + bytes.fromhex("bede0001" "7200a3e8") + PAYLOAD,
    ),
    (
        "a 4-byte element in a one-byte block pads to two words",
        packets.rtp(96, 7, 1000, 0x1234, PAYLOAD), 3, b"\x01\x02\x03\x04",
        HEADER + bytes.fromhex("bede0002" "3301020304000000") + PAYLOAD,
    ),
    (
        "appended after what the block holds",
        packets.rtp(96, 7, 1000, 0x1234, PAYLOAD, extensions=[(10, b"\x85"), (5, b"\x00\x01")]),
        7, b"\x00\xa3\xe8",
        HEADER + bytes.fromhex("bede0003" "a0855100" "01000000" "7200a3e8") + PAYLOAD,
    ),
    (
        "a blanked element long enough is reused, its surplus byte padding",
        packets.rtp(96, 7, 1000, 0x1234, PAYLOAD, extensions=[(14, b"\x11\x22\x33\x44")]), 7, b"\x00\xa3\xe8",
        HEADER + bytes.fromhex("bede0002" "7200a3e8" "00000000") + PAYLOAD,
    ),
    (
        "a blanked element too short is left alone",
        packets.rtp(96, 7, 1000, 0x1234, PAYLOAD, extensions=[(14, b"\x11\x22")]), 7, b"\x00\xa3\xe8",
        HEADER + bytes.fromhex("bede0002" "e1112200" "7200a3e8") + PAYLOAD,
    ),
    (
        "an element with the same id is overwritten",
        packets.rtp(96, 7, 1000, 0x1234, PAYLOAD, extensions=[(7, b"\x99\x99\x99")]), 7, b"\x00\xa3\xe8",
        packets.rtp(96, 7, 1000, 0x1234, PAYLOAD, extensions=[(7, b"\x00\xa3\xe8")]),
    ),
    (
        "a two-byte block grows by two words for a 3-byte element",
        packets.rtp(96, 7, 1000, 0x1234, PAYLOAD, extensions=[(10, b"\x85")], two_byte=True), 7, b"\x00\xa3\xe8",
        HEADER + bytes.fromhex("10000003" "0a018500" "070300a3" "e8000000") + PAYLOAD,
    ),
    (
        "an id above 14 opens a two-byte block",
        packets.rtp(96, 7, 1000, 0x1234, PAYLOAD), 200, b"\xab",
        HEADER + bytes.fromhex("10000001" "c801ab00") + PAYLOAD,
    ),
    (
        "an id above 14 does not fit a one-byte block",
        packets.rtp(96, 7, 1000, 0x1234, PAYLOAD, extensions=[(10, b"\x85")]), 200, b"\xab", None,
    ),
    (
        "17 bytes do not fit a one-byte block",
        packets.rtp(96, 7, 1000, 0x1234, PAYLOAD, extensions=[(10, b"\x85")]), 7, bytes(17), None,
    ),
    (
        "a block longer than the packet is refused",
        HEADER[:1] + b"\x60" + HEADER[2:] + bytes.fromhex("bede0009") + PAYLOAD, 7, b"\x00\xa3\xe8", None,
    ),
]


@pytest.mark.parametrize(("name", "packet", "ext_id", "data", "expected"), PUT_CASES,
                         ids=[c[0] for c in PUT_CASES])
def test_put_extension_writes_the_element(name: str, packet: bytes, ext_id: int, data: bytes,
                                          expected: bytes | None) -> None:
    got = fastpath.put_extension(packet, ext_id, data)
    assert got == expected
    if got is not None:
        parsed, before = fastpath.parse_rtp(got), fastpath.parse_rtp(packet)
        assert (ext_id, data) in parsed["extensions"]
        assert parsed["payload"] == before["payload"]


def test_put_extension_without_room_is_refused_and_bad_arguments_raise() -> None:
    packet = packets.rtp(96, 7, 1000, 0x1234, PAYLOAD)
    assert fastpath.put_extension(packet, 7, b"\x00\x00\x00", room=7) is None
    assert fastpath.put_extension(packet, 7, b"\x00\x00\x00", room=8) is not None
    with pytest.raises(ValueError):
        fastpath.put_extension(packet, 0, b"\x00")
    with pytest.raises(ValueError):
        fastpath.put_extension(packet, 7, b"")


# ---- the Engine ---------------------------------------------------------------------------------------------


def add_video(rig: Rig) -> None:
    rig.engine.add_producer(10, 1, fastpath.KIND_VIDEO, b"0", [(b"", 0x1111, 0)], [96], {}, 90000,
                            codecs={96: fastpath.CODEC_VP8})
    rig.engine.add_consumer(20, 2, 10, 0x5555, {96: 100}, True)


def send_video(rig: Rig, seqs: list[int]) -> list[bytes]:
    for i, seq in enumerate(seqs):
        rig.pub.send_rtp(packets.rtp(96, seq, 3000 * seq, 0x1111, packets.vp8_payload(key=i == 0)))
    rig.pump()
    got, _ = rig.sub.drain()
    return got


def test_engine_writes_the_playout_delay_after_it_is_set(rig: Rig) -> None:
    add_video(rig)
    before = send_video(rig, [100, 101])
    assert [playout_of(p) for p in before] == [None, None]
    rig.engine.set_playout_delay(20, PD_ID, 160, 10_000)
    got = send_video(rig, [102, 103, 104])
    assert [playout_of(p) for p in got] == [(160, 10_000)] * 3
    # The element is added to the header; the payload (picture ids rewritten per packet) keeps its size.
    assert [len(fastpath.parse_rtp(p)["payload"]) for p in got] == [len(fastpath.parse_rtp(before[0])["payload"])] * 3
    assert rig.engine.snapshot_consumer(20)["playout_stamped"] == 3
    rig.engine.set_playout_delay(20, PD_ID, 0, 10_000)
    assert [playout_of(p) for p in send_video(rig, [105])] == [(0, 10_000)]


def test_engine_writes_each_value_for_about_a_second(rig: Rig) -> None:
    add_video(rig)
    rig.engine.set_playout_delay(20, PD_ID, 250, 10_000)
    assert playout_of(send_video(rig, [100])[0]) == (250, 10_000)
    time.sleep(1.1)  # PLAYOUT_STAMP_US: the receiver keeps the last value it saw
    assert [playout_of(p) for p in send_video(rig, [101, 102])] == [None, None]
    assert rig.engine.snapshot_consumer(20)["playout_stamped"] == 1


def test_engine_stops_writing_when_told_and_refuses_bad_values(rig: Rig) -> None:
    add_video(rig)
    rig.engine.set_playout_delay(20, 0, 0, 0)
    assert [playout_of(p) for p in send_video(rig, [100, 101])] == [None, None]
    assert rig.engine.snapshot_consumer(20)["playout_stamped"] == 0
    with pytest.raises(ValueError):
        rig.engine.set_playout_delay(20, PD_ID, 200, 100)
    with pytest.raises(ValueError):
        rig.engine.set_playout_delay(20, PD_ID, 0, 50_000)
    with pytest.raises(ValueError):
        rig.engine.set_playout_delay(20, 300, 0, 100)
