"""RTCP compound walking (fastpath.rtcp) with golden packets and exact reasons for bad ones."""

from __future__ import annotations

import pytest

import fastpath
from tests import packets

# RR from 0x01020304 with one block about 0x0A0B0C0D: 25/256 lost, cumulative -2, highest 0x00010005,
# jitter 7, LSR 0x11223344, DLSR 0x00010000.
GOLDEN_RR = bytes.fromhex(
    "81c90007" "01020304" "0a0b0c0d" "19fffffe" "00010005" "00000007" "11223344" "00010000"
)


def test_golden_rr() -> None:
    [rr] = fastpath.parse_rtcp(GOLDEN_RR)
    assert rr["type"] == 201 and rr["ssrc"] == 0x01020304
    assert rr["reports"] == [{"ssrc": 0x0A0B0C0D, "fraction_lost": 25, "cumulative_lost": -2,
                              "highest_seq": 0x10005, "jitter": 7, "lsr": 0x11223344, "dlsr": 0x10000}]
    assert packets.rtcp_rr(0x01020304, [(0x0A0B0C0D, 25, -2, 0x10005, 7, 0x11223344, 0x10000)]) == GOLDEN_RR


def test_compound_sr_sdes_nack_pli_fir() -> None:
    compound = (packets.rtcp_sr(5, 1, 2, 3, 4, 5) + packets.rtcp_sdes(5, b"cname")
                + packets.rtcp_nack(5, 9, [100, 101, 116, 200]) + packets.rtcp_pli(5, 9)
                + packets.rtcp_fir(5, 9, 3))
    sr, sdes, nack, pli, fir = fastpath.parse_rtcp(compound)
    assert (sr["ssrc"], sr["ntp_sec"], sr["ntp_frac"], sr["rtp_ts"], sr["packets"], sr["octets"]) == (
        5, 1, 2, 3, 4, 5)
    assert sdes["chunks"] == [(5, b"cname")]
    assert nack["media_ssrc"] == 9 and nack["lost"] == [100, 101, 116, 200]
    assert (pli["type"], pli["count"], pli["media_ssrc"]) == (206, 1, 9)
    assert fir["fir"] == [(9, 3)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x81\xc9\x00", "rtcp: too short"),
        (b"\x41\xc9\x00\x01\x00\x00\x00\x00", "rtcp: bad version"),
        (b"\x81\xc9\x00\x07\x00\x00\x00\x00", "rtcp: length exceeds packet"),
        (packets.rtcp_pli(1, 2) + b"\x80\xc9", "rtcp: too short"),
        (b"\x81\xc9\x00\x01\x00\x00\x00\x00", "rtcp: report block exceeds packet"),
    ],
    ids=["short", "version", "length", "trailing", "block"],
)
def test_bad_compounds_rejected_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{reason}$"):
        fastpath.parse_rtcp(data)
