"""Key-frame peeks (fastpath.keyframe) for VP8, VP9, H.264 and AV1 payloads."""

from __future__ import annotations

import pytest

import fastpath
from tests import packets


@pytest.mark.parametrize(("codec", "payload", "key"), [
    (fastpath.CODEC_VP8, packets.vp8_payload(True), True),
    (fastpath.CODEC_VP8, packets.vp8_payload(False), False),
    (fastpath.CODEC_VP8, bytes([0x10, 0x00]), True),                 # no X: S=1, PID=0, P=0
    (fastpath.CODEC_VP8, bytes([0x00, 0x00]), False),                # not the start of a partition
    (fastpath.CODEC_VP8, bytes([0x90, 0x80]), False),                # truncated descriptor
    (fastpath.CODEC_VP9, bytes([0x08, 0x00]), True),                 # P=0, B=1
    (fastpath.CODEC_VP9, bytes([0x48, 0x00]), False),                # P=1
    (fastpath.CODEC_VP9, bytes([0xA8, 0x01, 0x02]), False),          # I, L with SID=1
    (fastpath.CODEC_H264, bytes([0x67, 0x42]), True),                # SPS
    (fastpath.CODEC_H264, bytes([0x41, 0x9A]), False),               # non-IDR slice
    (fastpath.CODEC_H264, bytes([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68]), True),   # STAP-A
    (fastpath.CODEC_H264, bytes([0x78, 0x00, 0x09, 0x67]), False),   # STAP-A with a bad size
    (fastpath.CODEC_H264, bytes([0x7C, 0x87, 0x00]), True),          # FU-A start, inner SPS
    (fastpath.CODEC_AV1, bytes([0x18, 0x0A, 0x0B]), True),           # N=1, W=1, sequence header OBU
    (fastpath.CODEC_AV1, bytes([0x08, 0x02, 0x0A, 0x00]), True),     # N=1, W=0, LEB128 size 2
    (fastpath.CODEC_AV1, bytes([0x10, 0x0A]), False),                # N=0
    (fastpath.CODEC_VP8, b"", False),
])
def test_keyframe(codec: int, payload: bytes, key: bool) -> None:
    assert fastpath.is_keyframe(codec, payload) is key


def test_codec_without_detection() -> None:
    assert fastpath.is_keyframe(fastpath.CODEC_OPUS, b"\xfc") is None
    with pytest.raises(ValueError, match="unknown codec 99"):
        fastpath.is_keyframe(99, b"\x00")
