"""Offer/answer negotiation between clients and the router: SDP in, numbers for workers out.

Owns the control side of JSEP (RFC 9429) for an ICE-lite, DTLS-server SFU: ``answer_offer`` answers a
publishing client's offer and returns a ``PublishPlan`` with everything a worker needs (remote ICE and DTLS
parameters, SCTP, and per track codecs, RTX, encodings and the header-extension table of docs/SEAMS.md §1);
``subscriber_offer`` writes the server's offer toward a receiving client with stable m-line order across
renegotiations; ``parse_answer`` reads that client's answer; ``consumer_pt_map`` maps payload types between the
two sides. Follows RFC 3264 (offer/answer), RFC 8843 (BUNDLE), RFC 8839 (ICE, ice-lite), RFC 8842 (DTLS setup
roles), RFC 8285 (extmap), RFC 8851/8853 (rid, simulcast), RFC 8841 (SCTP), RFC 4588 (RTX) and the subscriber
offer shape of docs/PROTOCOL.md (Subscriber offers). Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from control.rtc import sdp
from control.rtc.codecs import (
    ACCEPTED_EXTENSIONS,
    EXT_ID_UNUSED,
    FORWARDED_EXTENSIONS,
    ROUTER_EXTENSIONS,
    SUBSCRIBER_EXTENSIONS,
    SUPPORTED_CODECS,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_RID,
    URI_RRID,
    Codec,
    SupportedCodec,
    find_supported,
    parse_fmtp,
    router_codec,
    same_codec,
)

__all__ = [
    "ROUTER_EXTENSIONS",
    "SUPPORTED_CODECS",
    "EXT_ID_UNUSED",
    "Codec",
    "NegotiationError",
    "TransportParams",
    "SctpParams",
    "TrackPlan",
    "PublishPlan",
    "SubscribedTrack",
    "AnsweredMedia",
    "RemoteParams",
    "answer_offer",
    "subscriber_offer",
    "parse_answer",
    "consumer_pt_map",
    "consumer_rtx_pt_map",
    "answered_rtx",
    "subscriber_codec",
    "subscriber_rtx_pt",
    "next_mid",
]

SCTP_PORT = 5000
MAX_MESSAGE_SIZE = 262144
DEFAULT_REMOTE_MAX_MESSAGE_SIZE = 65536  # RFC 8841 §6: absent a=max-message-size means 64 KiB
HOST_PRIORITY = (126 << 24) | (65535 << 8) | 255  # RFC 8445 §5.1.2.1, host, component 1
# RFC 6544 §4.2: a TCP host candidate's local preference is 2^13 * direction-pref (passive: 4) + other-pref, so
# below every UDP host candidate's: clients try UDP first and fall back to TCP only when UDP fails.
TCP_LOCAL_PREFERENCE = (4 << 13) + 8191
KINDS = ("audio", "video")
DATA_PROTOCOL = "UDP/DTLS/SCTP"
DATA_FORMAT = "webrtc-datachannel"


class NegotiationError(ValueError):
    """An offer or answer that is valid SDP but cannot be negotiated; the message gives the reason."""


# Non-empty and without whitespace (``\s`` is what ``str.isspace`` calls whitespace): one regex match per value.
_TOKEN = re.compile(r"\S+")


def _is_token(value: str) -> bool:
    return bool(value) and _TOKEN.fullmatch(value) is not None


@dataclass(frozen=True)
class TransportParams:
    """The server side of a WebRtcTransport, as a worker reports it."""

    ice_ufrag: str
    ice_pwd: str
    fingerprints: list[tuple[str, str]]
    candidate_ip: str
    candidate_port: int
    # Every candidate as (protocol, ip, port), the primary UDP one first; empty = only the primary one.
    candidates: tuple[tuple[str, str, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.ice_ufrag or not self.ice_pwd:
            raise ValueError("TransportParams needs ice_ufrag and ice_pwd")
        if not self.fingerprints:
            raise ValueError("TransportParams needs at least one DTLS fingerprint")
        if not 0 < self.candidate_port < 65536:
            raise ValueError(f"candidate_port must be in 1..65535, got {self.candidate_port}")

    @property
    def addrtype(self) -> str:
        return "IP6" if ":" in self.candidate_ip else "IP4"

    def sdp_candidates(self) -> list[sdp.Candidate]:
        """Our host candidates (RFC 8839 §5.1): UDP on every announced address, then passive ICE-TCP (RFC 6544),
        each address less preferred than the one before it."""
        listed = self.candidates or (("udp", self.candidate_ip, self.candidate_port),)
        out = []
        rank = {"udp": 0, "tcp": 0}
        for protocol, ip, port in listed:
            foundation = hashlib.sha256(f"{protocol} {ip}".encode()).hexdigest()[:8]
            if protocol == "tcp":
                local = TCP_LOCAL_PREFERENCE - rank["tcp"]
                extensions = [("tcptype", "passive")]
            else:
                local = 65535 - rank["udp"]
                extensions = []
            rank[protocol] += 1
            priority = (126 << 24) | (local << 8) | 255
            out.append(sdp.Candidate(foundation, 1, protocol, priority, ip, port, "host", extensions))
        return out


@dataclass(frozen=True)
class SctpParams:
    """The peer's SCTP endpoint (RFC 8841)."""

    port: int
    max_message_size: int


@dataclass
class TrackPlan:
    """One accepted inbound m-line: what ``MediaClient.produce`` sends to the worker.

    ``codecs`` holds the chosen media codec (first) with the peer's payload type; RTX is in ``rtx_apt``
    (rtx pt -> media pt). ``encodings`` is [(rid, ssrc, rtx_ssrc)] from the lowest layer up; '' and 0 mean
    "learn from RID/MID". ``extensions`` maps the URIs accepted on this m-line to the peer's ids. ``id_map``
    and the four peer ids are transport-wide (the union of all accepted m-lines, which BUNDLE requires to
    agree, RFC 8843 §9.2), since ``Engine.set_extension_map`` is per transport.
    """

    mid: str
    kind: str
    codecs: list[Codec]
    rtx_apt: dict[int, int]
    encodings: list[tuple[str, int, int]]
    extensions: dict[str, int]
    msid: tuple[str, str | None] | None
    cname: str | None
    id_map: bytes
    mid_id: int = 0
    rid_id: int = 0
    rrid_id: int = 0
    audio_level_id: int = 0
    # The publication's source (LiveKit's TrackSource, lower-case, as router/messages.py TrackSource), set when
    # the m-line is bound to its AddTrackRequest: the worker's stream allocator treats a screen share apart.
    source: str = "unknown"

    @property
    def simulcast(self) -> bool:
        return len(self.encodings) > 1


@dataclass
class PublishPlan:
    """The result of answering a publishing client's offer."""

    ice_ufrag: str
    ice_pwd: str
    fingerprints: list[tuple[str, str]]
    remote_dtls_role: str  # "client" or "server": the peer's DTLS role
    sctp: SctpParams | None
    tracks: list[TrackPlan]
    id_map: bytes
    mid_id: int = 0
    rid_id: int = 0
    rrid_id: int = 0
    audio_level_id: int = 0

    @property
    def local_dtls_role(self) -> str:
        """The worker's DTLS role (``MediaClient.connect(role=...)``)."""
        return "server" if self.remote_dtls_role == "client" else "client"

    def track(self, mid: str) -> TrackPlan:
        for t in self.tracks:
            if t.mid == mid:
                return t
        raise KeyError(mid)


@dataclass(frozen=True)
class SubscribedTrack:
    """One outbound m-line of a subscriber offer: a consumer's stream as the receiving client sees it.

    With ``rtx_pt`` and ``rtx_ssrc`` (video) the m-line also offers RTX (RFC 4588): an ``rtx`` payload type whose
    ``apt`` is ``codec``'s and the retransmission SSRC paired with ``out_ssrc`` by ``a=ssrc-group:FID``.
    """

    mid: str
    kind: str
    codec: Codec
    out_ssrc: int
    stream_id: str
    track_id: str
    cname: str
    rtx_pt: int | None = None
    rtx_ssrc: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"SubscribedTrack kind must be audio or video, got {self.kind!r}")
        if not _is_token(self.mid):
            raise ValueError(f"SubscribedTrack mid {self.mid!r} must be a non-empty token")
        if not 0 < self.out_ssrc <= 0xFFFFFFFF:
            raise ValueError(f"out_ssrc must be in 1..2^32-1, got {self.out_ssrc}")
        for name in ("stream_id", "track_id", "cname"):
            value = getattr(self, name)
            if not _is_token(value):
                raise ValueError(f"SubscribedTrack {name} {value!r} must be a non-empty token")
        if (self.rtx_pt is None) != (self.rtx_ssrc == 0):
            raise ValueError("SubscribedTrack needs both rtx_pt and rtx_ssrc, or neither")
        if self.rtx_pt is not None:
            if self.kind != "video":
                raise ValueError("only video m-lines offer RTX")
            if not 0 < self.rtx_ssrc <= 0xFFFFFFFF or self.rtx_ssrc == self.out_ssrc:
                raise ValueError(f"rtx_ssrc must be in 1..2^32-1 and differ from out_ssrc, got {self.rtx_ssrc}")
            if self.rtx_pt == self.codec.pt:
                raise ValueError(f"rtx_pt {self.rtx_pt} is the media payload type")

    @property
    def rtx(self) -> bool:
        """True when this m-line offers RTX."""
        return self.rtx_pt is not None


@dataclass
class AnsweredMedia:
    """One m-line of a subscriber's answer."""

    mid: str
    kind: str
    rejected: bool
    direction: str
    codecs: list[Codec]
    extensions: dict[str, int]


@dataclass
class RemoteParams:
    """What the worker needs from a subscriber's answer."""

    ice_ufrag: str
    ice_pwd: str
    fingerprints: list[tuple[str, str]]
    remote_dtls_role: str
    sctp: SctpParams | None
    media: dict[str, AnsweredMedia]

    @property
    def local_dtls_role(self) -> str:
        return "server" if self.remote_dtls_role == "client" else "client"


# --- shared helpers ------------------------------------------------------------------------------------------


def _session_id(seed: str) -> str:
    return str(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") >> 2)


def _new_session(session_id: str, version: int) -> sdp.SessionDescription:
    if version < 0:
        raise ValueError(f"session_version must be >= 0, got {version}")
    return sdp.SessionDescription(origin=sdp.Origin("-", session_id, version, "IN", "IP4", "0.0.0.0"), ice_lite=True)


def _transport_attributes(m: sdp.MediaSection, local: TransportParams, setup: str, live: bool) -> None:
    """ICE/DTLS attributes and our host candidates (RFC 8839 §5.1, RFC 8445 §5.1.2, RFC 6544)."""
    m.connection = f"IN {local.addrtype} {local.candidate_ip}"
    m.ice_ufrag = local.ice_ufrag
    m.ice_pwd = local.ice_pwd
    m.fingerprints = [sdp.Fingerprint(alg.lower(), value.upper()) for alg, value in local.fingerprints]
    m.setup = setup
    if live:
        m.candidates = local.sdp_candidates()
        m.end_of_candidates = True


def _codec_from(m: sdp.MediaSection, pt: int, feedback: Iterable[str] | None = None) -> Codec:
    p = m.payloads[pt]
    if p.encoding is None or p.clock_rate is None:
        raise NegotiationError(f"mid {m.mid}: payload type {pt} has no a=rtpmap")
    fb = list(p.rtcp_fb) + list(m.rtcp_fb_all)
    if feedback is not None:
        allowed = set(feedback)
        fb = [f for f in fb if f in allowed]
    return Codec(p.encoding, pt, p.clock_rate, p.channels or 1, parse_fmtp(p.fmtp), tuple(dict.fromkeys(fb)))


def _apt(m: sdp.MediaSection, pt: int) -> int | None:
    p = m.payloads[pt]
    if p.encoding is None or p.encoding.lower() != "rtx":
        return None
    apt = parse_fmtp(p.fmtp).get("apt", "")
    return int(apt) if apt.isdigit() else None


def _add_payload(m: sdp.MediaSection, codec: Codec) -> None:
    m.formats.append(str(codec.pt))
    m.payloads[codec.pt] = sdp.PayloadType(
        codec.pt,
        codec.name,
        codec.clock_rate,
        codec.channels if codec.channels != 1 else None,
        codec.fmtp_line,
        list(codec.rtcp_fb),
    )


def _echo_first_format(offer: sdp.MediaSection, answer: sdp.MediaSection) -> None:
    """A rejected or inactive m-line still lists one format (RFC 3264 §6); echo the offer's first."""
    answer.formats = offer.formats[:1]
    if offer.is_rtp and offer.formats:
        pt = int(offer.formats[0])
        p = offer.payloads[pt]
        answer.payloads = {pt: sdp.PayloadType(pt, p.encoding, p.clock_rate, p.channels, p.fmtp)}


def _tag_section(desc: sdp.SessionDescription, live: Sequence[sdp.MediaSection]) -> sdp.MediaSection | None:
    for mid in desc.bundle:
        m = desc.media_by_mid(mid)
        if m is not None and any(m is x for x in live):
            return m
    return live[0] if live else None


def _transport_of(
    desc: sdp.SessionDescription, m: sdp.MediaSection, who: str
) -> tuple[str, str, list[tuple[str, str]], str]:
    ufrag = m.ice_ufrag or desc.ice_ufrag
    pwd = m.ice_pwd or desc.ice_pwd
    fingerprints = m.fingerprints or desc.fingerprints
    setup = m.setup or desc.setup
    if not ufrag or not pwd:
        raise NegotiationError(f"{who} has no a=ice-ufrag/a=ice-pwd (RFC 8839 §5.4)")
    if not fingerprints:
        raise NegotiationError(f"{who} has no a=fingerprint (RFC 8122 §5)")
    if setup is None:
        raise NegotiationError(f"{who} has no a=setup (RFC 8842 §5)")
    return ufrag, pwd, [(f.algorithm, f.value) for f in fingerprints], setup


# --- publisher side: answer a client's offer ----------------------------------------------------------------


def _choose_codec(
    m: sdp.MediaSection, allow_video_codecs: set[str] | None
) -> tuple[SupportedCodec, Codec, int | None] | None:
    """The first offered payload format the router supports, with its RTX pt (RFC 4588 §8.6) if offered."""
    for pt in m.payload_types():
        p = m.payloads[pt]
        if p.encoding is None or p.clock_rate is None or p.encoding.lower() in ("rtx", "red", "ulpfec"):
            continue
        if m.kind == "video" and allow_video_codecs is not None and p.encoding.lower() not in allow_video_codecs:
            continue
        supported = find_supported(m.kind, p.encoding, p.clock_rate, p.channels or 1, parse_fmtp(p.fmtp))
        if supported is None:
            continue
        codec = _codec_from(m, pt, supported.codec.rtcp_fb)
        rtx = next((r for r in m.payload_types() if _apt(m, r) == pt), None) if m.kind == "video" else None
        return supported, codec, rtx
    return None


def _accepted_extensions(desc: sdp.SessionDescription, m: sdp.MediaSection) -> list[sdp.ExtMap]:
    """Offered extensions we understand and receive: sendonly/sendrecv from the offerer (RFC 8285 §6)."""
    out: list[sdp.ExtMap] = []
    seen: set[str] = set()
    for e in [*m.extmaps, *desc.extmaps]:
        if e.uri in seen or e.uri not in ACCEPTED_EXTENSIONS[m.kind] or e.direction in ("recvonly", "inactive"):
            continue
        if e.id > 14:
            continue  # two-byte ids need extmap-allow-mixed, which we do not answer (RFC 8285 §4.3)
        seen.add(e.uri)
        out.append(sdp.ExtMap(e.id, e.uri, None if e.direction is None else "recvonly"))
    return out


def _encodings(m: sdp.MediaSection, rids: list[str]) -> list[tuple[str, int, int]]:
    """[(rid, ssrc, rtx_ssrc)] lowest layer first, from rids, a SIM group, or the plain ssrc lines (RFC 5576)."""
    fid = {g.ssrcs[0]: g.ssrcs[1] for g in m.ssrc_groups if g.semantics == "FID" and len(g.ssrcs) == 2}
    if rids:
        return [(rid, 0, 0) for rid in rids]
    sim = next((g for g in m.ssrc_groups if g.semantics == "SIM"), None)
    if sim is not None:
        return [("", s, fid.get(s, 0)) for s in sim.ssrcs]
    repairs = set(fid.values())
    media = [s for s in m.ssrc_list() if s not in repairs]
    if media:
        return [("", media[0], fid.get(media[0], 0))]
    return [("", 0, 0)]


def _simulcast_rids(m: sdp.MediaSection, rid_negotiated: bool) -> tuple[list[str], list[list[str]]]:
    """Accepted send rids in layer order and the streams for ``a=simulcast:recv`` (RFC 8853 §5.3)."""
    if m.simulcast is None or not m.simulcast.send or not rid_negotiated:
        return [], []
    offered = {r.id for r in m.rids if r.direction == "send"}
    streams: list[list[str]] = []
    rids: list[str] = []
    for alternatives in m.simulcast.send:
        kept = [a for a in alternatives if a.lstrip("~") in offered]
        if kept:
            streams.append(kept)
            rids.append(kept[0].lstrip("~"))
    return rids, streams


def _msid_and_cname(m: sdp.MediaSection) -> tuple[tuple[str, str | None] | None, str | None]:
    msid: tuple[str, str | None] | None = (m.msids[0].stream, m.msids[0].track) if m.msids else None
    cname = None
    for ssrc in m.ssrc_list():
        if cname is None:
            cname = m.ssrc_attribute(ssrc, "cname")
        if msid is None and (value := m.ssrc_attribute(ssrc, "msid")):
            parts = value.split()
            msid = (parts[0], parts[1] if len(parts) > 1 else None)
    return msid, cname


def _answer_rtp(
    desc: sdp.SessionDescription,
    m: sdp.MediaSection,
    a: sdp.MediaSection,
    allow_video_codecs: set[str] | None,
) -> TrackPlan | None:
    """Fill the answer m-line ``a`` for an audio/video offer ``m``; a TrackPlan when we receive media."""
    chosen = _choose_codec(m, allow_video_codecs)
    offered_direction = m.direction or "sendrecv"
    if chosen is None:
        _echo_first_format(m, a)
        a.direction = "inactive"
        return None
    _, codec, rtx = chosen
    _add_payload(a, codec)
    rtx_apt: dict[int, int] = {}
    if rtx is not None:
        _add_payload(a, _codec_from(m, rtx, ()))
        rtx_apt[rtx] = codec.pt
    a.extmaps = _accepted_extensions(desc, m)
    a.rtcp_rsize = m.rtcp_rsize
    if offered_direction not in ("sendonly", "sendrecv"):
        a.direction = "inactive"
        return None
    a.direction = "recvonly"
    extensions = {e.uri: e.id for e in a.extmaps}
    rids, streams = _simulcast_rids(m, URI_RID in extensions)
    if rids:
        a.rids = [sdp.Rid(r, "recv") for r in rids]
        a.simulcast = sdp.Simulcast(recv=streams)
    msid, cname = _msid_and_cname(m)
    return TrackPlan(
        mid=m.mid or "",
        kind=m.kind,
        codecs=[codec],
        rtx_apt=rtx_apt,
        encodings=_encodings(m, rids),
        extensions=extensions,
        msid=msid,
        cname=cname,
        id_map=bytes(256),
    )


def _extension_table(tracks: list[TrackPlan]) -> tuple[bytes, dict[str, int]]:
    """The transport-wide peer id -> router id table and the peer's ids by URI (BUNDLE: one id space)."""
    by_id: dict[int, str] = {}
    for t in tracks:
        for uri, ext_id in t.extensions.items():
            if by_id.setdefault(ext_id, uri) != uri:
                raise NegotiationError(
                    f"extension id {ext_id} means both {by_id[ext_id]} and {uri} in one BUNDLE group"
                )
    forwarded = {uri for uris in FORWARDED_EXTENSIONS.values() for uri in uris}
    table = bytearray(256)
    for ext_id, uri in by_id.items():
        if uri in forwarded:
            table[ext_id] = ROUTER_EXTENSIONS[uri]
    return bytes(table), {uri: ext_id for ext_id, uri in by_id.items()}


def answer_offer(
    offer_sdp: str,
    local: TransportParams,
    *,
    allow_video_codecs: Iterable[str] | None = None,
    session_version: int = 1,
) -> tuple[str, PublishPlan]:
    """Answer a publishing client's offer as an ICE-lite DTLS server; return the answer SDP and the plan.

    ``allow_video_codecs`` (names, any case) restricts the video codecs accepted; the first offered codec
    that is supported and allowed wins. Unsupported audio/video m-lines are answered inactive inside the
    BUNDLE; m-lines outside the offer's BUNDLE group (all but the first when there is none) are rejected with
    port 0, as one transport serves the client. Raises ``sdp.SdpError`` for malformed SDP and
    ``NegotiationError`` when nothing usable is offered or the offer lacks ICE/DTLS parameters.
    """
    desc = sdp.parse(offer_sdp)
    allow = {n.lower() for n in allow_video_codecs} if allow_video_codecs is not None else None
    if not desc.media:
        raise NegotiationError("offer has no m= sections")
    bundle = desc.bundle
    seen_mids: set[str] = set()
    for index, m in enumerate(desc.media):
        if m.mid is None:
            raise NegotiationError(f"m-line {index} has no a=mid (RFC 9429 §5.2.1)")
        if m.mid in seen_mids:
            raise NegotiationError(f"mid {m.mid} is used by two m-lines (RFC 8843 §7.2.1)")
        seen_mids.add(m.mid)
    live = [m for m in desc.media if m.port != 0 or (m.bundle_only and m.mid in bundle)]
    live_mids = {m.mid for m in live}
    tag = _tag_section(desc, live)
    if tag is None:
        raise NegotiationError("every m-line of the offer is rejected (port 0)")
    ufrag, pwd, fingerprints, setup = _transport_of(desc, tag, "offer")
    if setup == "holdconn":
        raise NegotiationError("offer has a=setup:holdconn; a DTLS connection is required")
    remote_role = "server" if setup == "passive" else "client"
    local_setup = "active" if setup == "passive" else "passive"

    answer = _new_session(_session_id(local.ice_ufrag), session_version)
    tracks: list[TrackPlan] = []
    sctp: SctpParams | None = None
    accepted: list[str] = []
    for m in desc.media:
        a = sdp.MediaSection(kind=m.kind, port=0, protocol=m.protocol, formats=[], mid=m.mid)
        answer.media.append(a)
        bundled = m.mid in live_mids and (m is tag or m.mid in bundle)
        if m.kind in KINDS and m.is_rtp and "SAVP" in m.protocol and m.rtcp_mux and bundled:
            _transport_attributes(a, local, local_setup, live=True)
            a.port = local.candidate_port
            a.rtcp_mux = True
            plan = _answer_rtp(desc, m, a, allow)
            if plan is not None:
                tracks.append(plan)
            accepted.append(m.mid or "")
        elif (
            m.kind == "application"
            and m.protocol == DATA_PROTOCOL
            and DATA_FORMAT in m.formats
            and bundled
            and sctp is None
        ):
            _transport_attributes(a, local, local_setup, live=True)
            a.port = local.candidate_port
            a.formats = [DATA_FORMAT]
            a.sctp_port = SCTP_PORT
            a.max_message_size = MAX_MESSAGE_SIZE
            sctp = SctpParams(m.sctp_port or SCTP_PORT, m.max_message_size or DEFAULT_REMOTE_MAX_MESSAGE_SIZE)
            accepted.append(m.mid or "")
        else:
            if m is tag:
                raise NegotiationError(f"cannot accept the first bundled m-line (mid {m.mid}, {m.kind} {m.protocol})")
            _transport_attributes(a, local, local_setup, live=False)
            _echo_first_format(m, a)
            if m.is_rtp:
                a.direction = "inactive"
    if not tracks and sctp is None:
        raise NegotiationError("offer has neither a supported sending track nor a data channel")
    if bundle:
        answer.groups.append(sdp.Group("BUNDLE", accepted))

    id_map, ids = _extension_table(tracks)
    transport_ids = {
        "mid_id": ids.get(URI_MID, 0),
        "rid_id": ids.get(URI_RID, 0),
        "rrid_id": ids.get(URI_RRID, 0),
        "audio_level_id": ids.get(URI_AUDIO_LEVEL, 0),
    }
    for t in tracks:
        t.id_map = id_map
        t.mid_id, t.rid_id = transport_ids["mid_id"], transport_ids["rid_id"]
        t.rrid_id, t.audio_level_id = transport_ids["rrid_id"], transport_ids["audio_level_id"]
    plan = PublishPlan(ufrag, pwd, fingerprints, remote_role, sctp, tracks, id_map, **transport_ids)
    return sdp.serialize(answer), plan


# --- subscriber side: the server's offer and the client's answer -------------------------------------------


def _track_section(track: SubscribedTrack, local: TransportParams) -> sdp.MediaSection:
    m = sdp.MediaSection(kind=track.kind, port=local.candidate_port, protocol="UDP/TLS/RTP/SAVPF", formats=[])
    _transport_attributes(m, local, "actpass", live=True)
    m.mid = track.mid
    m.extmaps = [
        sdp.ExtMap(ROUTER_EXTENSIONS[uri], uri) for uri in (*FORWARDED_EXTENSIONS[track.kind], *SUBSCRIBER_EXTENSIONS)
    ]
    m.direction = "sendonly"
    m.msids = [sdp.Msid(track.stream_id, track.track_id)]
    m.rtcp_mux = True
    _add_payload(m, track.codec)
    ssrcs = [track.out_ssrc]
    if track.rtx_pt is not None:
        _add_payload(m, Codec("rtx", track.rtx_pt, track.codec.clock_rate, 1, {"apt": str(track.codec.pt)}))
        ssrcs.append(track.rtx_ssrc)
        m.ssrc_groups = [sdp.SsrcGroup("FID", ssrcs)]
    m.ssrcs = [
        attribute
        for ssrc in ssrcs
        for attribute in (
            sdp.SsrcAttribute(ssrc, "cname", track.cname),
            sdp.SsrcAttribute(ssrc, "msid", f"{track.stream_id} {track.track_id}"),
        )
    ]
    return m


def _data_section(mid: str, local: TransportParams) -> sdp.MediaSection:
    m = sdp.MediaSection(kind="application", port=local.candidate_port, protocol=DATA_PROTOCOL, formats=[DATA_FORMAT])
    _transport_attributes(m, local, "actpass", live=True)
    m.mid = mid
    m.sctp_port = SCTP_PORT
    m.max_message_size = MAX_MESSAGE_SIZE
    return m


def _closed_section(previous: sdp.MediaSection, local: TransportParams) -> sdp.MediaSection:
    """A removed m-line kept in place: port 0, same mid, inactive (RFC 9429 §5.2.2)."""
    m = sdp.MediaSection(kind=previous.kind, port=0, protocol=previous.protocol, formats=[], mid=previous.mid)
    _transport_attributes(m, local, "actpass", live=False)
    _echo_first_format(previous, m)
    if m.is_rtp:
        m.direction = "inactive"
        m.rtcp_mux = True
    return m


def next_mid(previous: str | None, tracks: Iterable[SubscribedTrack] = ()) -> str:
    """The smallest decimal mid used neither by ``previous``'s m-lines nor by ``tracks``."""
    used = {t.mid for t in tracks}
    if previous is not None:
        used |= {m.mid for m in sdp.parse(previous).media if m.mid is not None}
    n = 0
    while str(n) in used:
        n += 1
    return str(n)


def subscriber_offer(
    local: TransportParams,
    tracks: list[SubscribedTrack],
    *,
    data_channel: bool,
    session_version: int,
    previous: str | None = None,
) -> str:
    """The server's offer toward a receiving client (ICE-lite, actpass, BUNDLE, one sendonly m-line per track).

    With ``previous`` (our last offer to this client) the m-line order is kept: a track still present stays
    in its slot, a removed track's slot becomes port 0 and inactive with the same mid, a slot that was already
    port 0 is recycled by the next new track of the same kind (RFC 9429 §5.2.2), other new tracks and a new
    data channel are appended. The data channel's mid is kept from ``previous`` or is ``next_mid``.
    """
    mids = [t.mid for t in tracks]
    if len(set(mids)) != len(mids):
        raise NegotiationError(f"duplicate mids in subscribed tracks: {mids}")
    prev = sdp.parse(previous) if previous is not None else None
    session_id = prev.origin.session_id if prev is not None else _session_id(local.ice_ufrag)
    if prev is not None and session_version <= prev.origin.session_version:
        raise NegotiationError(
            f"session_version {session_version} must exceed the previous offer's {prev.origin.session_version}"
        )
    offer = _new_session(session_id, session_version)
    offer.attributes.append(("msid-semantic", "WMS *"))
    by_mid = {t.mid: t for t in tracks}
    placed: set[str] = set()
    pending = [t for t in tracks if prev is None or prev.media_by_mid(t.mid) is None]
    data_mid: str | None = None
    for pm in prev.media if prev is not None else []:
        if pm.kind == "application":
            if data_channel and data_mid is None:
                data_mid = pm.mid or next_mid(previous, tracks)
                offer.media.append(_data_section(data_mid, local))
            else:
                offer.media.append(_closed_section(pm, local))
            continue
        track = by_mid.get(pm.mid or "")
        if track is not None:
            if track.kind != pm.kind:
                raise NegotiationError(f"mid {track.mid} was {pm.kind} and cannot become {track.kind}")
            offer.media.append(_track_section(track, local))
            placed.add(track.mid)
            continue
        recycle = next((t for t in pending if t.kind == pm.kind), None) if pm.port == 0 else None
        if recycle is not None:
            pending.remove(recycle)
            offer.media.append(_track_section(recycle, local))
            placed.add(recycle.mid)
        else:
            offer.media.append(_closed_section(pm, local))
    if data_channel and data_mid is None:
        data_mid = next_mid(previous, tracks)
        offer.media.append(_data_section(data_mid, local))
    offer.media += [_track_section(t, local) for t in tracks if t.mid not in placed]
    all_mids = [m.mid for m in offer.media]
    if len(set(all_mids)) != len(all_mids):
        raise NegotiationError(f"a subscribed track reuses a mid still present in the previous offer: {all_mids}")
    live = [m.mid or "" for m in offer.media if m.port != 0]
    if live:
        offer.groups.append(sdp.Group("BUNDLE", live))
    return sdp.serialize(offer)


def parse_answer(answer_sdp: str) -> RemoteParams:
    """Read a receiving client's answer to ``subscriber_offer``."""
    desc = sdp.parse(answer_sdp)
    live = [m for m in desc.media if m.port != 0]
    tag = _tag_section(desc, live)
    if tag is None:
        raise NegotiationError("answer rejects every m-line")
    ufrag, pwd, fingerprints, setup = _transport_of(desc, tag, "answer")
    if setup not in ("active", "passive"):
        raise NegotiationError(f"answer must have a=setup active or passive, got {setup} (RFC 8842 §5.3)")
    sctp = None
    media: dict[str, AnsweredMedia] = {}
    for index, m in enumerate(desc.media):
        if m.mid is None:
            raise NegotiationError(f"answer m-line {index} has no a=mid")
        rejected = m.port == 0 and not (m.bundle_only and m.mid in desc.bundle)
        codecs = (
            [_codec_from(m, pt) for pt in m.payload_types() if m.payloads[pt].encoding is not None]
            if not rejected
            else []
        )
        if m.kind == "application" and not rejected and sctp is None:
            sctp = SctpParams(m.sctp_port or SCTP_PORT, m.max_message_size or DEFAULT_REMOTE_MAX_MESSAGE_SIZE)
        direction = "inactive" if rejected else (m.direction or "sendrecv")
        extensions = {e.uri: e.id for e in m.extmaps} if not rejected else {}
        media[m.mid] = AnsweredMedia(m.mid, m.kind, rejected, direction, codecs, extensions)
    return RemoteParams(ufrag, pwd, fingerprints, "client" if setup == "active" else "server", sctp, media)


def subscriber_codec(track: TrackPlan) -> Codec:
    """The codec (router payload type) to offer subscribers of ``track``."""
    if not track.codecs:
        raise NegotiationError(f"track {track.mid} has no codec")
    return router_codec(track.codecs[0], track.kind)


def subscriber_rtx_pt(track: TrackPlan) -> int | None:
    """The RTX payload type (RFC 4588) to offer subscribers of a video ``track`` next to ``subscriber_codec``'s,
    None for audio or a codec without one."""
    if track.kind != "video" or not track.codecs:
        return None
    codec = track.codecs[0]
    supported = find_supported(track.kind, codec.name, codec.clock_rate, codec.channels, codec.fmtp)
    return supported.rtx_pt if supported is not None else None


def consumer_rtx_pt_map(subscriber: SubscribedTrack) -> dict[int, int]:
    """Subscriber media payload type -> its RTX payload type, for the worker's consumer; {} without RTX."""
    return {subscriber.codec.pt: subscriber.rtx_pt} if subscriber.rtx_pt is not None else {}


def answered_rtx(media: AnsweredMedia) -> bool:
    """True when a subscriber's answered m-line kept an ``rtx`` payload type whose ``apt`` is a media codec of it."""
    media_pts = {c.pt for c in media.codecs if c.name.lower() != "rtx"}
    return any(c.name.lower() == "rtx" and c.fmtp.get("apt", "").isdigit() and int(c.fmtp["apt"]) in media_pts
               for c in media.codecs)


def consumer_pt_map(track: TrackPlan, subscriber: SubscribedTrack) -> dict[int, int]:
    """Publisher payload type -> subscriber payload type for the codecs both sides share."""
    if track.kind != subscriber.kind:
        raise NegotiationError(f"cannot consume a {track.kind} track as {subscriber.kind}")
    pt_map = {c.pt: subscriber.codec.pt for c in track.codecs if same_codec(c, subscriber.codec)}
    if not pt_map:
        names = ", ".join(f"{c.name}/{c.pt}" for c in track.codecs)
        raise NegotiationError(f"subscriber codec {subscriber.codec.name} matches none of the track's ({names})")
    return pt_map
