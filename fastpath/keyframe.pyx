"""Python face of the key-frame peeks in ``keyframe.pxd`` (VP8, VP9, H.264, AV1)."""

from libc.stdint cimport uint8_t

from fastpath.keyframe cimport (
    CODEC_AV1,
    CODEC_H264,
    CODEC_OPUS,
    CODEC_UNKNOWN,
    CODEC_VP8,
    CODEC_VP9,
    keyframe_detect,
)

CODECS = {"unknown": CODEC_UNKNOWN, "opus": CODEC_OPUS, "vp8": CODEC_VP8, "vp9": CODEC_VP9,
          "h264": CODEC_H264, "av1": CODEC_AV1}


def is_keyframe(int codec, const uint8_t[:] payload):
    """True/False for a payload of ``codec`` (a CODEC_* value); None if the codec has no detection."""
    if codec not in CODECS.values():
        raise ValueError(f"unknown codec {codec}")
    if payload.shape[0] == 0:
        return False if codec in (CODEC_VP8, CODEC_VP9, CODEC_H264, CODEC_AV1) else None
    rc = keyframe_detect(<uint8_t>codec, &payload[0], <int>payload.shape[0])
    return None if rc < 0 else bool(rc)
