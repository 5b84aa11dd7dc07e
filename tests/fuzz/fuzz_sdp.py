"""Fuzz target: SDP a client sends (control/rtc/sdp.py parse and serialize, control/rtc/negotiation.py through
``LiveKitNegotiator.answer`` for a publisher offer and ``parse_answer`` for a subscriber answer).

The input is the SDP text (UTF-8, undecodable bytes replaced, as a protobuf string field arrives); the golden
offers of tests/data seed it. Invariant: only ``ValueError`` (``SdpError``, ``NegotiationError``) comes out, which
the participant turns into a refusal; an accepted offer's answer parses again, and what ``sdp.parse`` accepts
serializes into text that parses to the same media sections.
"""

from __future__ import annotations

from pathlib import Path

from control.rtc import negotiation, sdp
from control.rtc.participant import LiveKitNegotiator

DATA = Path(__file__).resolve().parent.parent / "data"
FINGERPRINT = "5E:9C:2A:41:07:D3:88:B0:1F:6A:E4:72:C5:39:0D:AB:14:F2:66:8E:93:C1:57:0A:BE:3D:79:E8:22:46:D0:1C"
LOCAL = negotiation.TransportParams("rtrufrag", "rtrpwd0123456789abcdefgh", [("sha-256", FINGERPRINT)],
                                    "127.0.0.1", 40123)
_negotiator = LiveKitNegotiator()
DICTIONARY = [b"\r\n", b"m=video 9 UDP/TLS/RTP/SAVPF 96", b"m=audio 9 UDP/TLS/RTP/SAVPF 111",
              b"m=application 9 UDP/DTLS/SCTP webrtc-datachannel", b"a=rtpmap:", b"a=fmtp:", b"a=rtcp-fb:",
              b"a=extmap:", b"a=mid:", b"a=msid:", b"a=ssrc:", b"a=ssrc-group:FID ", b"a=ssrc-group:SIM ",
              b"a=rid:", b" send", b" recv", b"a=simulcast:send ", b"a=group:BUNDLE ", b"a=setup:actpass",
              b"a=fingerprint:sha-256 ", b"a=ice-ufrag:", b"a=ice-pwd:", b"a=sctp-port:", b"a=max-message-size:",
              b"a=candidate:", b"a=inactive", b"a=sendonly", b"a=recvonly", b"apt=", b"4294967295", b"-1", b"0"]


def setup() -> None:
    pass


def seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted(DATA.glob("*.sdp"))]


def check(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        desc = sdp.parse(text)
    except ValueError:
        desc = None
    if desc is not None:
        again = sdp.parse(sdp.serialize(desc))
        assert [(m.kind, m.mid, m.port) for m in again.media] == [(m.kind, m.mid, m.port) for m in desc.media]
    try:
        answer = _negotiator.answer(text, LOCAL)
    except ValueError:
        pass
    else:
        sdp.parse(answer.sdp)
    try:
        negotiation.parse_answer(text)
    except ValueError:
        pass
