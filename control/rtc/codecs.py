"""What the router can carry: codecs, their payload types and feedback, and router-wide RTP header extensions.

Owns the capability tables that negotiation answers and offers with, and the rules for when two codec
descriptions are the same codec: by name and clock rate, and for H.264 by profile and packetization mode
(RFC 6184 §8.1, level ignored as with level-asymmetry-allowed), for VP9 by profile-id, for AV1 by profile.
Payload types avoid 64-95 so that no RTP packet looks like RTCP (RFC 5761 §4). Header extension ids follow
RFC 8285; the router-wide ids are the ids every packet carries after ingress normalisation (docs/FORWARDING.md,
Ingress normalisation; docs/SEAMS.md §1) and the ids every subscriber offer negotiates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --- header extensions --------------------------------------------------------------------------------------

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_RRID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
URI_VIDEO_ORIENTATION = "urn:3gpp:video-orientation"
URI_PLAYOUT_DELAY = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
URI_ABS_CAPTURE_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time"
URI_TOFFSET = "urn:ietf:params:rtp-hdrext:toffset"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_VIDEO_CONTENT_TYPE = "http://www.webrtc.org/experiments/rtp-hdrext/video-content-type"

#: Router-wide one-byte ids (RFC 8285 §4.2) of the extensions the router uses or forwards. 14 is EXT_ID_UNUSED
#: (what the fast path renumbers non-forwarded elements to) and 15 is reserved, so neither appears here.
ROUTER_EXTENSIONS: dict[str, int] = {
    URI_MID: 1,
    URI_RID: 2,
    URI_RRID: 3,
    URI_ABS_SEND_TIME: 4,
    URI_TRANSPORT_CC: 5,
    URI_VIDEO_ORIENTATION: 6,
    URI_PLAYOUT_DELAY: 7,
    URI_ABS_CAPTURE_TIME: 8,
    URI_TOFFSET: 9,
    URI_AUDIO_LEVEL: 10,
    URI_VIDEO_CONTENT_TYPE: 11,
}
EXT_ID_UNUSED = 14

#: Extensions accepted from publishers, per media kind.
ACCEPTED_EXTENSIONS: dict[str, frozenset[str]] = {
    "audio": frozenset({URI_MID, URI_RID, URI_ABS_SEND_TIME, URI_TRANSPORT_CC, URI_AUDIO_LEVEL, URI_ABS_CAPTURE_TIME}),
    "video": frozenset(
        {
            URI_MID,
            URI_RID,
            URI_RRID,
            URI_ABS_SEND_TIME,
            URI_TRANSPORT_CC,
            URI_VIDEO_ORIENTATION,
            URI_PLAYOUT_DELAY,
            URI_ABS_CAPTURE_TIME,
            URI_TOFFSET,
            URI_VIDEO_CONTENT_TYPE,
        }
    ),
}

#: Extensions whose publisher values stay meaningful for receivers: the fast path keeps them (renumbered to the
#: router-wide id) and subscriber offers negotiate them. MID/RID/RRID, abs-send-time and transport-cc describe
#: the publisher's transport, so they are blanked on ingress instead.
FORWARDED_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "audio": (URI_AUDIO_LEVEL, URI_ABS_CAPTURE_TIME),
    "video": (URI_VIDEO_ORIENTATION, URI_PLAYOUT_DELAY, URI_ABS_CAPTURE_TIME, URI_TOFFSET, URI_VIDEO_CONTENT_TYPE),
}

#: Extensions every subscriber m-line offers besides the forwarded ones: transport-cc, whose sequence the fast path
#: writes into every packet toward a subscriber transport (at the router-wide id, which the answer keeps).
SUBSCRIBER_EXTENSIONS: tuple[str, ...] = (URI_TRANSPORT_CC,)
#: The transport-cc id of every subscriber offer: what the worker stamps (router/messages.py ``ConsumeRequest``).
SUBSCRIBER_TWCC_ID = ROUTER_EXTENSIONS[URI_TRANSPORT_CC]
#: The playout-delay id of every subscriber video offer (forwarded from publishers that send it, and written by the
#: worker while a subscriber's link needs repairs: router/playout.py).
SUBSCRIBER_PLAYOUT_DELAY_ID = ROUTER_EXTENSIONS[URI_PLAYOUT_DELAY]

# --- codecs -------------------------------------------------------------------------------------------------

FEEDBACK_VIDEO = ("nack", "nack pli", "ccm fir", "goog-remb", "transport-cc")
FEEDBACK_AUDIO = ("nack", "transport-cc")
#: Feedback a receiver may send us: the fast path answers NACK (plain retransmission) and PLI/FIR, and estimates the
#: receiver's bandwidth from its transport-wide CC feedback, or from its REMB when it has no transport-cc
#: (docs/FORWARDING.md, Transport-wide congestion control).
FEEDBACK_SUBSCRIBER = ("nack", "nack pli", "ccm fir", "goog-remb", "transport-cc")


@dataclass(frozen=True)
class Codec:
    """One negotiated RTP payload format (RFC 8866 §6.6 rtpmap, §6.15 fmtp; RFC 4585 rtcp-fb)."""

    name: str
    pt: int
    clock_rate: int
    channels: int = 1
    fmtp: dict[str, str] = field(default_factory=dict)
    rtcp_fb: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() or c == "/" for c in self.name):
            raise ValueError(f"codec name {self.name!r} is not an SDP encoding name")
        if not 0 <= self.pt <= 127 or 64 <= self.pt <= 95:
            raise ValueError(f"payload type {self.pt} must be in 0..63 or 96..127 (RFC 5761 §4)")
        if self.clock_rate <= 0 or self.channels <= 0:
            raise ValueError(f"codec {self.name}: clock rate and channels must be positive")

    @property
    def fmtp_line(self) -> str | None:
        """The fmtp parameters as written after ``a=fmtp:<pt>``, or None when there are none."""
        if not self.fmtp:
            return None
        return ";".join(f"{k}={v}" if v != "" else k for k, v in self.fmtp.items())

    def with_pt(self, pt: int) -> Codec:
        return Codec(self.name, pt, self.clock_rate, self.channels, dict(self.fmtp), self.rtcp_fb)


@dataclass(frozen=True)
class SupportedCodec:
    """A codec the router forwards, with the payload types it uses toward subscribers."""

    kind: str
    codec: Codec
    rtx_pt: int | None = None


def parse_fmtp(text: str | None) -> dict[str, str]:
    """``a=fmtp`` parameters (``k=v;k2=v2``) as an ordered dict; flags without ``=`` map to ''."""
    params: dict[str, str] = {}
    for item in (text or "").split(";"):
        item = item.strip()
        if item:
            key, _, value = item.partition("=")
            params[key.strip()] = value.strip()
    return params


SUPPORTED_CODECS: tuple[SupportedCodec, ...] = (
    SupportedCodec("audio", Codec("opus", 111, 48000, 2, {"minptime": "10", "useinbandfec": "1"}, FEEDBACK_AUDIO)),
    SupportedCodec("video", Codec("VP8", 96, 90000, 1, {}, FEEDBACK_VIDEO), rtx_pt=97),
    SupportedCodec(
        "video",
        Codec(
            "H264",
            102,
            90000,
            1,
            {"level-asymmetry-allowed": "1", "packetization-mode": "1", "profile-level-id": "42e01f"},
            FEEDBACK_VIDEO,
        ),
        rtx_pt=103,
    ),
    SupportedCodec(
        "video",
        Codec(
            "H264",
            104,
            90000,
            1,
            {"level-asymmetry-allowed": "1", "packetization-mode": "1", "profile-level-id": "42001f"},
            FEEDBACK_VIDEO,
        ),
        rtx_pt=105,
    ),
    SupportedCodec("video", Codec("VP9", 98, 90000, 1, {"profile-id": "0"}, FEEDBACK_VIDEO), rtx_pt=99),
    SupportedCodec("video", Codec("AV1", 45, 90000, 1, {}, FEEDBACK_VIDEO), rtx_pt=46),
)


def _h264_profile(fmtp: dict[str, str]) -> str | None:
    """'cb' (constrained baseline) or 'b' (baseline) from profile-level-id (RFC 6184 §8.1), else None."""
    pli = fmtp.get("profile-level-id", "42000a").lower()
    if len(pli) != 6:
        return None
    try:
        profile_idc, constraints = int(pli[0:2], 16), int(pli[2:4], 16)
    except ValueError:
        return None
    if profile_idc == 0x42:
        return "cb" if constraints & 0x40 else "b"
    if profile_idc == 0x4D and constraints & 0x80:
        return "cb"  # Main with constraint_set0 is decodable as constrained baseline (RFC 6184 Table 5)
    return None


def codec_key(name: str, clock_rate: int, channels: int, fmtp: dict[str, str]) -> tuple[object, ...]:
    """What must be equal for two payload format descriptions to be the same codec."""
    lower = name.lower()
    if lower == "h264":
        return (lower, clock_rate, _h264_profile(fmtp), fmtp.get("packetization-mode", "0"))
    if lower == "vp9":
        return (lower, clock_rate, fmtp.get("profile-id", "0"))
    if lower == "av1":
        return (lower, clock_rate, fmtp.get("profile", "0"))
    if lower == "opus":
        return (lower, clock_rate, 2)
    return (lower, clock_rate, channels)


def same_codec(a: Codec, b: Codec) -> bool:
    return codec_key(a.name, a.clock_rate, a.channels, a.fmtp) == codec_key(b.name, b.clock_rate, b.channels, b.fmtp)


def find_supported(kind: str, name: str, clock_rate: int, channels: int, fmtp: dict[str, str]) -> SupportedCodec | None:
    """The router codec matching a remote payload format, or None."""
    key = codec_key(name, clock_rate, channels, fmtp)
    if key[0] == "h264" and key[2] is None:
        return None
    for s in SUPPORTED_CODECS:
        c = s.codec
        if s.kind == kind and codec_key(c.name, c.clock_rate, c.channels, c.fmtp) == key:
            return s
    return None


def router_codec(codec: Codec, kind: str) -> Codec:
    """The codec a subscriber is offered for a publisher's ``codec``: the router's payload type and fmtp, the
    feedback the router answers, and Opus stereo kept when the publisher negotiated it."""
    supported = find_supported(kind, codec.name, codec.clock_rate, codec.channels, codec.fmtp)
    if supported is None:
        raise ValueError(f"{kind} codec {codec.name}/{codec.clock_rate} {codec.fmtp_line or ''} is not supported")
    base = supported.codec
    fmtp = dict(base.fmtp)
    if base.name == "opus" and (codec.fmtp.get("stereo") == "1" or codec.fmtp.get("sprop-stereo") == "1"):
        fmtp.update({"stereo": "1", "sprop-stereo": "1"})
    feedback = tuple(fb for fb in base.rtcp_fb if fb in FEEDBACK_SUBSCRIBER)
    return Codec(base.name, base.pt, base.clock_rate, base.channels, fmtp, feedback)
