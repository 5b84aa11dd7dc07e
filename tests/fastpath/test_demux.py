"""RFC 7983 first-byte demultiplexing over all 256 first bytes (fastpath.demux)."""

from __future__ import annotations

import pytest

import fastpath

COOKIE = b"\x21\x12\xa4\x42"


def expected(b0: int, b1: int) -> str:
    if b0 <= 3:
        return "stun"
    if 20 <= b0 <= 63:
        return "dtls"
    if 128 <= b0 <= 191:
        return "rtcp" if 192 <= b1 <= 223 else "rtp"
    return "unknown"


@pytest.mark.parametrize("b0", range(256))
def test_every_first_byte(b0: int) -> None:
    media = bytes([b0, 96]) + bytes(2) + COOKIE + bytes(16)     # 24 bytes, STUN cookie in place
    assert fastpath.classify(media) == expected(b0, 96)
    rtcp = bytes([b0, 201]) + bytes(2) + COOKIE + bytes(16)
    assert fastpath.classify(rtcp) == expected(b0, 201)


def test_stun_needs_cookie_and_length() -> None:
    assert fastpath.classify(b"\x00\x01" + bytes(18)) == "unknown"
    assert fastpath.classify(b"\x00\x01\x00\x00" + COOKIE + bytes(11)) == "unknown"


def test_minimum_sizes() -> None:
    assert fastpath.classify(b"") == "unknown"
    assert fastpath.classify(b"\x80\x60" + bytes(9)) == "unknown"        # RTP < 12
    assert fastpath.classify(b"\x80\xc8\x00") == "unknown"                # RTCP < 4
    assert fastpath.classify(b"\x16" + bytes(11)) == "unknown"            # DTLS < 13
    assert fastpath.classify(b"\x80\xc8\x00\x00") == "rtcp"
