"""The Cython fast path of a mediarouter worker: ``Engine`` plus the test-facing wrappers of its parts.

Build with ``python setup.py build_ext --inplace``. The Engine's contract is docs/SEAMS.md section 1; the
wrappers (``parse_rtp``, ``parse_rtcp``, ``classify``, ``SeqRewriter``, ``TsRewriter``, ``Unwrapper``,
``SrtpContext``, ``is_keyframe``, ``parse_vp8``, ``Vp8Forwarder``, ``TwccRecorder``, ``NackGenerator``,
``SendEstimator``, ``stamp_transport_seq``, ``put_extension``) run the same C code the Engine runs.
Nothing here reads the environment: the caller passes each choice (``Engine(fd, gso=...)``,
``crypto_kernel.install(srtp_crypto=..., hmac_batch=...)``).
"""

from fastpath.counters import DROP_REASON_NAMES
from fastpath.demux import classify
from fastpath.engine import Engine
from fastpath.keyframe import CODECS, is_keyframe
from fastpath.rtcp import NackGenerator, SendEstimator, TwccRecorder, parse_rtcp, put_extension, stamp_transport_seq
from fastpath.rtp import parse_rtp, rewrite_extensions
from fastpath.seq import SeqRewriter, TsRewriter, Unwrapper
from fastpath.srtp import (
    KEY_LENGTHS,
    PROFILE_AEAD_AES_128_GCM,
    PROFILE_AEAD_AES_256_GCM,
    PROFILE_AES128_CM_SHA1_80,
    PROFILE_PLAIN,
    SrtpContext,
    protect_batched,
)
from fastpath.vp8 import Vp8Forwarder, parse_vp8

EXT_ID_UNUSED = 14


KIND_AUDIO = 0
KIND_VIDEO = 1

CODEC_UNKNOWN = CODECS["unknown"]
CODEC_OPUS = CODECS["opus"]
CODEC_VP8 = CODECS["vp8"]
CODEC_VP9 = CODECS["vp9"]
CODEC_H264 = CODECS["h264"]
CODEC_AV1 = CODECS["av1"]

# poll_events() tuples: (EV_NEW_STREAM, p, layer, ssrc), (EV_LAYER_SWITCHED, c, layer),
# (EV_KEY_FRAME_REQUESTED, p, layer, ssrc), (EV_STREAM_RESTARTED, p, layer, ssrc), (EV_PRODUCER_CLOSED, c),
# (EV_SRTP_STREAM_RESET, t, ssrc), (EV_BWE_CHANGED, t, bps, state): the send-side estimate toward t moved by
# more than 10 % (docs/FORWARDING.md, Transport-wide congestion control).
EV_UNKNOWN = 0
EV_NEW_STREAM = 1
EV_LAYER_SWITCHED = 2
EV_KEY_FRAME_REQUESTED = 3
EV_STREAM_RESTARTED = 4
EV_PRODUCER_CLOSED = 5
EV_SRTP_STREAM_RESET = 6
EV_BWE_CHANGED = 7
#: EV_BWE_CHANGED's state (the overuse detector's last verdict), by number.
BWE_STATES = ("normal", "overusing", "underusing")

__all__ = [
    "BWE_STATES", "CODEC_AV1", "CODEC_H264", "CODEC_OPUS", "CODEC_UNKNOWN", "CODEC_VP8", "CODEC_VP9", "CODECS",
    "DROP_REASON_NAMES", "EV_BWE_CHANGED", "EV_KEY_FRAME_REQUESTED", "EV_LAYER_SWITCHED", "EV_NEW_STREAM",
    "EV_PRODUCER_CLOSED", "EV_SRTP_STREAM_RESET", "EV_STREAM_RESTARTED", "EV_UNKNOWN", "EXT_ID_UNUSED",
    "Engine", "KEY_LENGTHS", "KIND_AUDIO", "KIND_VIDEO", "NackGenerator", "PROFILE_AEAD_AES_128_GCM",
    "PROFILE_AEAD_AES_256_GCM", "PROFILE_AES128_CM_SHA1_80",
    "PROFILE_PLAIN", "SendEstimator", "SeqRewriter", "SrtpContext", "TsRewriter",
    "TwccRecorder",
    "Unwrapper", "Vp8Forwarder", "parse_vp8",
    "classify", "is_keyframe", "parse_rtcp", "parse_rtp", "protect_batched", "rewrite_extensions",
    "put_extension",
    "stamp_transport_seq",
]
