"""SDP text <-> dataclasses for WebRTC offers and answers.

Owns the SDP grammar in the control process: ``parse`` turns a session description into ``SessionDescription``
and ``serialize`` writes it back. Follows RFC 8866 (SDP) plus the WebRTC attributes: RFC 8843 (BUNDLE groups),
RFC 8839 (ICE ufrag/pwd/options, candidates, ice-lite, end-of-candidates), RFC 8122 + RFC 4145 (fingerprint,
setup), RFC 8285 (extmap, extmap-allow-mixed), RFC 8830 (msid), RFC 5576 (ssrc, ssrc-group), RFC 8851 (rid),
RFC 8853 (simulcast), RFC 8841 (sctp-port, max-message-size), RFC 5761 (rtcp-mux), RFC 5506 (rtcp-rsize),
RFC 4585 (rtcp-fb), RFC 3605 (rtcp).

The model is typed, not textual: known attributes become fields and are written in one canonical order,
unknown attributes are kept in order in ``attributes``. Hence ``parse(serialize(x)) == x`` for any parsed
``x``, while ``serialize(parse(text))`` may order lines differently from ``text``. Bad input raises
``SdpError`` naming the 1-based line number and the reason. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
SETUP_ROLES = ("actpass", "active", "passive", "holdconn")
RID_DIRECTIONS = ("send", "recv")
MAX_SSRC = 0xFFFFFFFF
_SINGLE_MEDIA_ATTRIBUTES = frozenset(
    ("mid", "rtcp", "ice-ufrag", "ice-pwd", "ice-options", "setup", "sctp-port", "max-message-size")
    + ("simulcast",)
)


class SdpError(ValueError):
    """Malformed SDP. ``line`` is the 1-based line number (None when the problem is not on one line)."""

    def __init__(self, reason: str, line: int | None = None, text: str | None = None) -> None:
        self.reason = reason
        self.line = line
        self.text = text
        where = f"line {line}: " if line is not None else ""
        shown = f" ({text!r})" if text is not None else ""
        super().__init__(f"{where}{reason}{shown}")


@dataclass
class Origin:
    """``o=`` (RFC 8866 §5.2)."""

    username: str = "-"
    session_id: str = "0"
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"


@dataclass
class Group:
    """``a=group:<semantics> <mid>...`` (RFC 5888, RFC 8843)."""

    semantics: str
    mids: list[str] = field(default_factory=list)


@dataclass
class Fingerprint:
    """``a=fingerprint:<hash function> <hex value>`` (RFC 8122)."""

    algorithm: str
    value: str


@dataclass
class PayloadType:
    """One RTP payload format: its ``a=rtpmap``, ``a=fmtp`` and ``a=rtcp-fb`` lines."""

    pt: int
    encoding: str | None = None
    clock_rate: int | None = None
    channels: int | None = None
    fmtp: str | None = None
    rtcp_fb: list[str] = field(default_factory=list)


@dataclass
class ExtMap:
    """``a=extmap:<id>[/<direction>] <uri> [<attributes>]`` (RFC 8285)."""

    id: int
    uri: str
    direction: str | None = None
    attributes: str | None = None


@dataclass
class Msid:
    """``a=msid:<stream id> [<track id>]`` (RFC 8830)."""

    stream: str
    track: str | None = None


@dataclass
class SsrcAttribute:
    """``a=ssrc:<ssrc> <attribute>[:<value>]`` (RFC 5576)."""

    ssrc: int
    attribute: str
    value: str | None = None


@dataclass
class SsrcGroup:
    """``a=ssrc-group:<semantics> <ssrc>...`` (RFC 5576), e.g. FID (RTX) or SIM (simulcast)."""

    semantics: str
    ssrcs: list[int] = field(default_factory=list)


@dataclass
class Rid:
    """``a=rid:<id> <send|recv> [<restrictions>]`` (RFC 8851)."""

    id: str
    direction: str
    restrictions: str | None = None


@dataclass
class Simulcast:
    """``a=simulcast:`` (RFC 8853). Each stream lists alternative rids; a leading ``~`` means paused."""

    send: list[list[str]] = field(default_factory=list)
    recv: list[list[str]] = field(default_factory=list)

    @staticmethod
    def first_choice(streams: list[list[str]]) -> list[tuple[str, bool]]:
        """The first alternative of each stream as (rid, paused)."""
        return [(s[0].lstrip("~"), s[0].startswith("~")) for s in streams if s]


@dataclass
class Candidate:
    """``a=candidate:`` (RFC 8839 §5.1); ``extensions`` keeps raddr/rport/generation/... pairs in order."""

    foundation: str
    component: int
    transport: str
    priority: int
    ip: str
    port: int
    type: str
    extensions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class MediaSection:
    """One ``m=`` section with its attributes."""

    kind: str
    port: int
    protocol: str
    formats: list[str]
    port_count: int | None = None
    info: str | None = None
    connection: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    mid: str | None = None
    direction: str | None = None
    rtcp: str | None = None
    rtcp_mux: bool = False
    rtcp_rsize: bool = False
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: str | None = None
    fingerprints: list[Fingerprint] = field(default_factory=list)
    setup: str | None = None
    payloads: dict[int, PayloadType] = field(default_factory=dict)
    rtcp_fb_all: list[str] = field(default_factory=list)
    extmaps: list[ExtMap] = field(default_factory=list)
    extmap_allow_mixed: bool = False
    msids: list[Msid] = field(default_factory=list)
    ssrc_groups: list[SsrcGroup] = field(default_factory=list)
    ssrcs: list[SsrcAttribute] = field(default_factory=list)
    rids: list[Rid] = field(default_factory=list)
    simulcast: Simulcast | None = None
    sctp_port: int | None = None
    max_message_size: int | None = None
    candidates: list[Candidate] = field(default_factory=list)
    end_of_candidates: bool = False
    bundle_only: bool = False
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.protocol

    def payload_types(self) -> list[int]:
        """The m= line formats as RTP payload types, in preference order."""
        return [int(f) for f in self.formats] if self.is_rtp else []

    def ssrc_attribute(self, ssrc: int, name: str) -> str | None:
        for a in self.ssrcs:
            if a.ssrc == ssrc and a.attribute == name:
                return a.value
        return None

    def ssrc_list(self) -> list[int]:
        """Distinct SSRCs of the ``a=ssrc`` lines in order of first appearance."""
        seen: list[int] = []
        for a in self.ssrcs:
            if a.ssrc not in seen:
                seen.append(a.ssrc)
        return seen


@dataclass
class SessionDescription:
    """A whole session description: session-level fields and the media sections in order."""

    origin: Origin = field(default_factory=Origin)
    name: str = "-"
    info: str | None = None
    connection: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    timing: str = "0 0"
    other_lines: list[tuple[str, str]] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    ice_lite: bool = False
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: str | None = None
    fingerprints: list[Fingerprint] = field(default_factory=list)
    setup: str | None = None
    extmap_allow_mixed: bool = False
    extmaps: list[ExtMap] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaSection] = field(default_factory=list)

    @property
    def bundle(self) -> list[str]:
        """The mids of the first BUNDLE group (empty when there is none)."""
        for g in self.groups:
            if g.semantics == "BUNDLE":
                return g.mids
        return []

    def media_by_mid(self, mid: str) -> MediaSection | None:
        for m in self.media:
            if m.mid == mid:
                return m
        return None


# --- parsing ------------------------------------------------------------------------------------------


def _int(text: str, what: str, line: int, raw: str, lo: int = 0, hi: int | None = None) -> int:
    if not text.isdigit():
        raise SdpError(f"{what} is not a non-negative integer", line, raw)
    value = int(text)
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise SdpError(f"{what} {value} out of range {bound}", line, raw)
    return value


def _split_attribute(value: str) -> tuple[str, str | None]:
    name, sep, rest = value.partition(":")
    return name, (rest if sep else None)


def _parse_fingerprint(value: str, line: int, raw: str) -> Fingerprint:
    parts = value.split()
    if len(parts) != 2:
        raise SdpError("a=fingerprint needs '<hash function> <value>'", line, raw)
    return Fingerprint(parts[0].lower(), parts[1].upper())


def _parse_setup(value: str, line: int, raw: str) -> str:
    if value not in SETUP_ROLES:
        raise SdpError(f"a=setup must be one of {', '.join(SETUP_ROLES)}", line, raw)
    return value


def _parse_group(value: str, line: int, raw: str) -> Group:
    parts = value.split()
    if not parts:
        raise SdpError("a=group needs a semantics token", line, raw)
    return Group(parts[0], parts[1:])


def _parse_extmap(value: str, line: int, raw: str) -> ExtMap:
    parts = value.split(None, 2)
    if len(parts) < 2:
        raise SdpError("a=extmap needs '<id>[/<direction>] <uri>'", line, raw)
    ident, _, direction = parts[0].partition("/")
    ext_id = _int(ident, "extmap id", line, raw, 1, 255)
    if ext_id == 15:
        raise SdpError("extmap id 15 is reserved (RFC 8285 §4.2)", line, raw)
    if direction and direction not in DIRECTIONS:
        raise SdpError(f"extmap direction must be one of {', '.join(DIRECTIONS)}", line, raw)
    return ExtMap(ext_id, parts[1], direction or None, parts[2] if len(parts) > 2 else None)


def _parse_candidate(value: str, line: int, raw: str) -> Candidate:
    parts = value.split()
    if len(parts) < 8 or parts[6] != "typ":
        grammar = "'<foundation> <component> <transport> <priority> <ip> <port> typ <type>'"
        raise SdpError(f"a=candidate needs {grammar}", line, raw)
    rest = parts[8:]
    if len(rest) % 2:
        raise SdpError("a=candidate extensions must be name/value pairs", line, raw)
    return Candidate(
        foundation=parts[0],
        component=_int(parts[1], "candidate component", line, raw, 1, 256),
        transport=parts[2],
        priority=_int(parts[3], "candidate priority", line, raw, 0, 2**32 - 1),
        ip=parts[4],
        port=_int(parts[5], "candidate port", line, raw, 0, 65535),
        type=parts[7],
        extensions=[(rest[i], rest[i + 1]) for i in range(0, len(rest), 2)],
    )


def _parse_simulcast(value: str, line: int, raw: str) -> Simulcast:
    parts = value.split()
    if not parts or len(parts) % 2:
        raise SdpError("a=simulcast needs '<send|recv> <rid list>' pairs", line, raw)
    sim = Simulcast()
    for i in range(0, len(parts), 2):
        direction, streams = parts[i], parts[i + 1]
        if direction not in RID_DIRECTIONS:
            raise SdpError("a=simulcast direction must be send or recv", line, raw)
        target = sim.send if direction == "send" else sim.recv
        if target:
            raise SdpError(f"a=simulcast lists direction {direction} twice", line, raw)
        for stream in streams.split(";"):
            alternatives = stream.split(",")
            if any(not a.lstrip("~") for a in alternatives):
                raise SdpError("a=simulcast has an empty rid", line, raw)
            target.append(alternatives)
    return sim


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.session = SessionDescription()
        self.media: MediaSection | None = None
        self.seen: set[str] = set()

    def once(self, key: str, line: int, raw: str) -> None:
        scope = f"{id(self.media)}:{key}"
        if scope in self.seen:
            raise SdpError(f"duplicate {key}", line, raw)
        self.seen.add(scope)

    def run(self) -> SessionDescription:
        lines = self.text.replace("\r\n", "\n").split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            raise SdpError("empty session description")
        required = {"v": False, "o": False, "s": False, "t": False}
        for number, raw in enumerate(lines, start=1):
            if len(raw) < 2 or raw[1] != "=" or not raw[0].isalpha():
                raise SdpError("expected '<type>=<value>'", number, raw)
            kind, value = raw[0], raw[2:]
            if number == 1 and (kind != "v" or value != "0"):
                raise SdpError("the first line must be v=0", number, raw)
            if self.media is None and kind in required:
                if required[kind]:
                    raise SdpError(f"duplicate {kind}= line", number, raw)
                required[kind] = True
            if kind == "m":
                missing = [k for k, present in required.items() if not present]
                if missing and self.media is None:
                    names = ", ".join(k + "=" for k in missing)
                    raise SdpError(f"m= before the session's {names}", number, raw)
                self.media = self.parse_m(value, number, raw)
                self.session.media.append(self.media)
            elif self.media is None:
                self.session_line(kind, value, number, raw)
            else:
                self.media_line(self.media, kind, value, number, raw)
        missing = [k for k, present in required.items() if not present]
        if missing:
            raise SdpError(f"missing the session's {', '.join(k + '=' for k in missing)} line")
        return self.session

    def parse_m(self, value: str, line: int, raw: str) -> MediaSection:
        parts = value.split()
        if len(parts) < 4:
            raise SdpError("m= needs '<media> <port> <proto> <fmt>...'", line, raw)
        port_text, _, count_text = parts[1].partition("/")
        port = _int(port_text, "m= port", line, raw, 0, 65535)
        count = _int(count_text, "m= port count", line, raw, 1) if count_text else None
        m = MediaSection(kind=parts[0], port=port, port_count=count, protocol=parts[2], formats=parts[3:])
        if m.is_rtp:
            for f in m.formats:
                pt = _int(f, "payload type", line, raw, 0, 127)
                if pt in m.payloads:
                    raise SdpError(f"payload type {pt} listed twice", line, raw)
                m.payloads[pt] = PayloadType(pt)
        return m

    def session_line(self, kind: str, value: str, line: int, raw: str) -> None:
        s = self.session
        if kind == "v":
            return
        if kind == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SdpError("o= needs 6 fields", line, raw)
            s.origin = Origin(
                parts[0], parts[1], _int(parts[2], "session version", line, raw), parts[3], parts[4], parts[5]
            )
        elif kind == "s":
            s.name = value
        elif kind == "i":
            s.info = value
        elif kind == "c":
            s.connection = value
        elif kind == "b":
            s.bandwidths.append(value)
        elif kind == "t":
            s.timing = value
        elif kind == "a":
            self.session_attribute(value, line, raw)
        else:
            s.other_lines.append((kind, value))

    def session_attribute(self, value: str, line: int, raw: str) -> None:
        s = self.session
        name, arg = _split_attribute(value)
        handlers: dict[str, Callable[[str], None]] = {
            "group": lambda a: s.groups.append(_parse_group(a, line, raw)),
            "fingerprint": lambda a: s.fingerprints.append(_parse_fingerprint(a, line, raw)),
            "extmap": lambda a: s.extmaps.append(_parse_extmap(a, line, raw)),
        }
        if name in handlers and arg is not None:
            handlers[name](arg)
        elif name == "ice-lite" and arg is None:
            self.once("a=ice-lite", line, raw)
            s.ice_lite = True
        elif name == "extmap-allow-mixed" and arg is None:
            self.once("a=extmap-allow-mixed", line, raw)
            s.extmap_allow_mixed = True
        elif name in ("ice-ufrag", "ice-pwd", "ice-options", "setup") and arg is not None:
            self.once(f"a={name}", line, raw)
            if name == "ice-ufrag":
                s.ice_ufrag = arg
            elif name == "ice-pwd":
                s.ice_pwd = arg
            elif name == "ice-options":
                s.ice_options = arg
            else:
                s.setup = _parse_setup(arg, line, raw)
        else:
            s.attributes.append((name, arg))

    def media_line(self, m: MediaSection, kind: str, value: str, line: int, raw: str) -> None:
        if kind == "i":
            m.info = value
        elif kind == "c":
            m.connection = value
        elif kind == "b":
            m.bandwidths.append(value)
        elif kind == "a":
            self.media_attribute(m, value, line, raw)
        else:
            raise SdpError(f"unexpected {kind}= line in a media section", line, raw)

    def payload(self, m: MediaSection, text: str, line: int, raw: str) -> PayloadType:
        pt = _int(text, "payload type", line, raw, 0, 127)
        if pt not in m.payloads:
            raise SdpError(f"payload type {pt} is not in the m= line", line, raw)
        return m.payloads[pt]

    def media_attribute(self, m: MediaSection, value: str, line: int, raw: str) -> None:
        name, arg = _split_attribute(value)
        if arg is None:
            self.media_flag(m, name, line, raw)
            return
        if name in _SINGLE_MEDIA_ATTRIBUTES:
            self.once(f"a={name}", line, raw)
        if name == "mid":
            if not arg:
                raise SdpError("a=mid is empty", line, raw)
            m.mid = arg
        elif name == "rtcp":
            m.rtcp = arg
        elif name == "ice-ufrag":
            m.ice_ufrag = arg
        elif name == "ice-pwd":
            m.ice_pwd = arg
        elif name == "ice-options":
            m.ice_options = arg
        elif name == "setup":
            m.setup = _parse_setup(arg, line, raw)
        elif name == "fingerprint":
            m.fingerprints.append(_parse_fingerprint(arg, line, raw))
        elif name == "rtpmap" and m.is_rtp:
            self.rtpmap(m, arg, line, raw)
        elif name == "fmtp" and m.is_rtp:
            pt_text, _, params = arg.partition(" ")
            p = self.payload(m, pt_text, line, raw)
            if p.fmtp is not None:
                raise SdpError(f"duplicate a=fmtp for payload type {p.pt}", line, raw)
            p.fmtp = params.strip()
        elif name == "rtcp-fb" and m.is_rtp:
            pt_text, _, fb = arg.partition(" ")
            if not fb.strip():
                raise SdpError("a=rtcp-fb needs '<pt> <feedback>'", line, raw)
            if pt_text == "*":
                m.rtcp_fb_all.append(fb.strip())
            else:
                self.payload(m, pt_text, line, raw).rtcp_fb.append(fb.strip())
        elif name == "extmap":
            m.extmaps.append(_parse_extmap(arg, line, raw))
        elif name == "msid":
            parts = arg.split()
            if not 1 <= len(parts) <= 2:
                raise SdpError("a=msid needs '<stream id> [<track id>]'", line, raw)
            m.msids.append(Msid(parts[0], parts[1] if len(parts) > 1 else None))
        elif name == "ssrc":
            ssrc_text, _, attribute = arg.partition(" ")
            ssrc = _int(ssrc_text, "ssrc", line, raw, 0, MAX_SSRC)
            attr_name, _, attr_value = attribute.strip().partition(":")
            if not attr_name:
                raise SdpError("a=ssrc needs '<ssrc> <attribute>[:<value>]'", line, raw)
            has_value = ":" in attribute
            m.ssrcs.append(SsrcAttribute(ssrc, attr_name, attr_value if has_value else None))
        elif name == "ssrc-group":
            parts = arg.split()
            if len(parts) < 2:
                raise SdpError("a=ssrc-group needs '<semantics> <ssrc>...'", line, raw)
            m.ssrc_groups.append(
                SsrcGroup(parts[0], [_int(p, "ssrc", line, raw, 0, MAX_SSRC) for p in parts[1:]])
            )
        elif name == "rid":
            parts = arg.split(None, 2)
            if len(parts) < 2 or parts[1] not in RID_DIRECTIONS:
                raise SdpError("a=rid needs '<id> <send|recv> [<restrictions>]'", line, raw)
            if any(r.id == parts[0] for r in m.rids):
                raise SdpError(f"duplicate a=rid {parts[0]}", line, raw)
            m.rids.append(Rid(parts[0], parts[1], parts[2] if len(parts) > 2 else None))
        elif name == "simulcast":
            m.simulcast = _parse_simulcast(arg, line, raw)
        elif name == "sctp-port":
            m.sctp_port = _int(arg, "a=sctp-port", line, raw, 0, 65535)
        elif name == "max-message-size":
            m.max_message_size = _int(arg, "a=max-message-size", line, raw)
        elif name == "candidate":
            m.candidates.append(_parse_candidate(arg, line, raw))
        else:
            m.attributes.append((name, arg))

    def rtpmap(self, m: MediaSection, arg: str, line: int, raw: str) -> None:
        pt_text, _, encoding = arg.partition(" ")
        p = self.payload(m, pt_text, line, raw)
        parts = encoding.strip().split("/")
        if len(parts) not in (2, 3) or not parts[0]:
            raise SdpError("a=rtpmap needs '<pt> <encoding>/<clock rate>[/<channels>]'", line, raw)
        if p.encoding is not None:
            raise SdpError(f"duplicate a=rtpmap for payload type {p.pt}", line, raw)
        p.encoding = parts[0]
        p.clock_rate = _int(parts[1], "rtpmap clock rate", line, raw, 1)
        p.channels = _int(parts[2], "rtpmap channels", line, raw, 1) if len(parts) == 3 else None

    def media_flag(self, m: MediaSection, name: str, line: int, raw: str) -> None:
        if name in DIRECTIONS:
            if m.direction is not None:
                raise SdpError("more than one direction attribute", line, raw)
            m.direction = name
            return
        flags = {
            "rtcp-mux": "rtcp_mux",
            "rtcp-rsize": "rtcp_rsize",
            "end-of-candidates": "end_of_candidates",
            "extmap-allow-mixed": "extmap_allow_mixed",
            "bundle-only": "bundle_only",
        }
        if name in flags:
            self.once(f"a={name}", line, raw)
            setattr(m, flags[name], True)
        else:
            m.attributes.append((name, None))


def parse(text: str) -> SessionDescription:
    """Parse an SDP text (CRLF or LF line ends). Raises ``SdpError`` with the line number on bad input."""
    if not isinstance(text, str):
        raise SdpError(f"SDP must be str, got {type(text).__name__}")
    return _Parser(text).run()


# --- serialisation ------------------------------------------------------------------------------------


def _attr(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


def _extmap_line(e: ExtMap) -> str:
    ident = f"{e.id}/{e.direction}" if e.direction else str(e.id)
    tail = f" {e.attributes}" if e.attributes is not None else ""
    return f"a=extmap:{ident} {e.uri}{tail}"


def _simulcast_value(s: Simulcast) -> str:
    parts = []
    for direction, streams in (("send", s.send), ("recv", s.recv)):
        if streams:
            parts.append(f"{direction} " + ";".join(",".join(alts) for alts in streams))
    return " ".join(parts)


def _candidate_value(c: Candidate) -> str:
    tail = "".join(f" {k} {v}" for k, v in c.extensions)
    return f"{c.foundation} {c.component} {c.transport} {c.priority} {c.ip} {c.port} typ {c.type}{tail}"


def _media_lines(m: MediaSection) -> list[str]:
    port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
    out = [f"m={m.kind} {port} {m.protocol} {' '.join(m.formats)}"]
    if m.info is not None:
        out.append(f"i={m.info}")
    if m.connection is not None:
        out.append(f"c={m.connection}")
    out += [f"b={b}" for b in m.bandwidths]
    if m.rtcp is not None:
        out.append(f"a=rtcp:{m.rtcp}")
    if m.ice_ufrag is not None:
        out.append(f"a=ice-ufrag:{m.ice_ufrag}")
    if m.ice_pwd is not None:
        out.append(f"a=ice-pwd:{m.ice_pwd}")
    if m.ice_options is not None:
        out.append(f"a=ice-options:{m.ice_options}")
    out += [f"a=fingerprint:{f.algorithm} {f.value}" for f in m.fingerprints]
    if m.setup is not None:
        out.append(f"a=setup:{m.setup}")
    if m.mid is not None:
        out.append(f"a=mid:{m.mid}")
    if m.bundle_only:
        out.append("a=bundle-only")
    out += [_extmap_line(e) for e in m.extmaps]
    if m.extmap_allow_mixed:
        out.append("a=extmap-allow-mixed")
    if m.direction is not None:
        out.append(f"a={m.direction}")
    out += [f"a=msid:{s.stream}" + (f" {s.track}" if s.track is not None else "") for s in m.msids]
    if m.rtcp_mux:
        out.append("a=rtcp-mux")
    if m.rtcp_rsize:
        out.append("a=rtcp-rsize")
    for p in m.payloads.values():
        if p.encoding is not None:
            channels = f"/{p.channels}" if p.channels is not None else ""
            out.append(f"a=rtpmap:{p.pt} {p.encoding}/{p.clock_rate}{channels}")
        out += [f"a=rtcp-fb:{p.pt} {fb}" for fb in p.rtcp_fb]
        if p.fmtp is not None:
            out.append(f"a=fmtp:{p.pt} {p.fmtp}")
    out += [f"a=rtcp-fb:* {fb}" for fb in m.rtcp_fb_all]
    if m.sctp_port is not None:
        out.append(f"a=sctp-port:{m.sctp_port}")
    if m.max_message_size is not None:
        out.append(f"a=max-message-size:{m.max_message_size}")
    out += [_attr(name, value) for name, value in m.attributes]
    out += [f"a=rid:{r.id} {r.direction}" + (f" {r.restrictions}" if r.restrictions else "") for r in m.rids]
    if m.simulcast is not None:
        out.append(f"a=simulcast:{_simulcast_value(m.simulcast)}")
    out += [f"a=ssrc-group:{g.semantics} {' '.join(str(s) for s in g.ssrcs)}" for g in m.ssrc_groups]
    out += [
        f"a=ssrc:{a.ssrc} {a.attribute}" + (f":{a.value}" if a.value is not None else "") for a in m.ssrcs
    ]
    out += [f"a=candidate:{_candidate_value(c)}" for c in m.candidates]
    if m.end_of_candidates:
        out.append("a=end-of-candidates")
    return out


def serialize(session: SessionDescription) -> str:
    """Write ``session`` as SDP text with CRLF line ends."""
    s = session
    o = s.origin
    out = ["v=0", f"o={o.username} {o.session_id} {o.session_version} {o.nettype} {o.addrtype} {o.address}"]
    out.append(f"s={s.name}")
    if s.info is not None:
        out.append(f"i={s.info}")
    out += [f"{k}={v}" for k, v in s.other_lines if k in "uep"]
    if s.connection is not None:
        out.append(f"c={s.connection}")
    out += [f"b={b}" for b in s.bandwidths]
    out.append(f"t={s.timing}")
    out += [f"{k}={v}" for k, v in s.other_lines if k not in "uep"]
    out += [f"a=group:{' '.join([g.semantics, *g.mids])}" for g in s.groups]
    if s.ice_lite:
        out.append("a=ice-lite")
    if s.ice_ufrag is not None:
        out.append(f"a=ice-ufrag:{s.ice_ufrag}")
    if s.ice_pwd is not None:
        out.append(f"a=ice-pwd:{s.ice_pwd}")
    if s.ice_options is not None:
        out.append(f"a=ice-options:{s.ice_options}")
    out += [f"a=fingerprint:{f.algorithm} {f.value}" for f in s.fingerprints]
    if s.setup is not None:
        out.append(f"a=setup:{s.setup}")
    if s.extmap_allow_mixed:
        out.append("a=extmap-allow-mixed")
    out += [_extmap_line(e) for e in s.extmaps]
    out += [_attr(name, value) for name, value in s.attributes]
    for m in s.media:
        out += _media_lines(m)
    return "\r\n".join(out) + "\r\n"
