"""RTP header and extension parsing (fastpath.rtp) against golden packets built byte by byte."""

from __future__ import annotations

import pytest

import fastpath
from tests import packets

# V=2, X=1, CC=1, M=1, PT=96, seq 0x1234, ts 0xDEADBEEF, ssrc 0x01020304, csrc 0x0A0B0C0D,
# one-byte extensions: id 1 "ab" (MID), id 2 "h" (RID), padding byte; payload "xyz" + 2 bytes padding (P=1).
GOLDEN_ONE_BYTE = bytes.fromhex(
    "b1e01234deadbeef01020304" "0a0b0c0d" "bede0002" "116162" "2068" "000000" "78797a" "0002"
)
GOLDEN_ONE_BYTE = bytes([GOLDEN_ONE_BYTE[0] | 0x20]) + GOLDEN_ONE_BYTE[1:]

# Two-byte form (profile 0x1000): id 200 "xyz", id 1 "" (empty element), padded to 4.
GOLDEN_TWO_BYTE = bytes.fromhex("9060000100000064000000aa" "10000002" "c80378797a" "0100" "00" "ff")


def test_one_byte_golden_packet() -> None:
    d = fastpath.parse_rtp(GOLDEN_ONE_BYTE)
    assert (d["marker"], d["payload_type"], d["sequence_number"], d["timestamp"], d["ssrc"]) == (
        True, 96, 0x1234, 0xDEADBEEF, 0x01020304)
    assert d["csrc_count"] == 1 and d["extension_profile"] == 0xBEDE
    assert d["extensions"] == [(1, b"ab"), (2, b"h")]
    assert d["payload"] == b"xyz" and d["padding_len"] == 2 and d["header_len"] == 12 + 4 + 4 + 8


def test_two_byte_golden_packet() -> None:
    d = fastpath.parse_rtp(GOLDEN_TWO_BYTE)
    assert d["extension_profile"] == 0x1000
    assert d["extensions"] == [(200, b"xyz"), (1, b"")]
    assert d["payload"] == b"\xff"


def test_builder_matches_golden() -> None:
    assert packets.rtp(96, 0x1234, 0xDEADBEEF, 0x01020304, b"xyz", marker=True,
                       extensions=[(1, b"ab"), (2, b"h")], csrcs=(0x0A0B0C0D,), padding=2) == GOLDEN_ONE_BYTE


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x60\x00", "rtp: too short"),
        (b"\x40" + bytes(11), "rtp: bad version"),
        (b"\x8f" + bytes(11), "rtp: csrc list exceeds packet"),
        (b"\x90" + bytes(11) + b"\xbe\xde", "rtp: extension exceeds packet"),
        (b"\x90" + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4), "rtp: extension exceeds packet"),
        (b"\xa0" + bytes(11) + b"\x00", "rtp: bad padding"),
        (b"\xa0" + bytes(11) + b"\x01\x05", "rtp: bad padding"),
        (b"\x90" + bytes(11) + b"\xbe\xde\x00\x01\x15\x00\x00\x00", "rtp: extension element exceeds block"),
        (b"\x90" + bytes(11) + b"\x10\x00\x00\x01\x05\x09\x00\x00", "rtp: extension element exceeds block"),
    ],
    ids=["short", "version", "csrc", "ext-header", "ext-body", "pad-zero", "pad-long", "one-byte-elem",
         "two-byte-elem"],
)
def test_bad_packets_rejected_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{reason}$"):
        fastpath.parse_rtp(data)


def test_rewrite_renumbers_and_reads_mid_rid() -> None:
    pkt = packets.rtp(96, 1, 2, 3, b"p", extensions=[(3, b"m0"), (4, b"hi"), (7, b"\x85"), (9, b"zz")])
    ids = bytearray(256)
    ids[3], ids[4], ids[7] = 1, 10, 12
    out, found = fastpath.rewrite_extensions(pkt, bytes(ids), mid_id=3, rid_id=4, audio_level_id=7)
    assert found == {"mid": b"m0", "rid": b"hi", "rrid": None, "audio_level": 0x85}
    assert fastpath.parse_rtp(out)["extensions"] == [(1, b"m0"), (10, b"hi"), (12, b"\x85"),
                                                     (fastpath.EXT_ID_UNUSED, b"zz")]
    assert out[:12] == pkt[:12] and out[-1:] == b"p" and len(out) == len(pkt)


def test_rewrite_two_byte_form() -> None:
    pkt = packets.rtp(96, 1, 2, 3, b"p", extensions=[(100, b"mid"), (3, b"")], two_byte=True)
    ids = bytearray(256)
    ids[100] = 1
    out, found = fastpath.rewrite_extensions(pkt, bytes(ids), mid_id=100)
    assert found["mid"] == b"mid"
    assert fastpath.parse_rtp(out)["extensions"] == [(1, b"mid"), (fastpath.EXT_ID_UNUSED, b"")]


def test_rewrite_rejects_bad_id_map() -> None:
    with pytest.raises(ValueError, match="id_map must be 256 bytes"):
        fastpath.rewrite_extensions(packets.rtp(96, 1, 2, 3), b"\x00" * 10)
