"""control.rtc.sdp: golden offers parse field by field, round trip, keep unknown attributes, and bad lines fail
with the line number and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.rtc import sdp

DATA = Path(__file__).resolve().parent.parent / "data"
GOLDEN = ["aiortc_offer.sdp", "aiortc_data_offer.sdp", "chrome_simulcast_offer.sdp", "firefox_offer.sdp"]


def load(name: str) -> str:
    with open(DATA / name, newline="") as f:
        return f.read()


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_round_trip(name: str) -> None:
    parsed = sdp.parse(load(name))
    text = sdp.serialize(parsed)
    assert sdp.parse(text) == parsed
    assert sdp.serialize(sdp.parse(text)) == text  # serialisation is a fixed point
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")


def test_aiortc_offer_fields() -> None:
    d = sdp.parse(load("aiortc_offer.sdp"))
    assert d.bundle == ["0", "1", "2"]
    assert [(m.kind, m.mid) for m in d.media] == [("audio", "0"), ("video", "1"), ("application", "2")]
    audio, video, data = d.media
    assert audio.direction == "sendrecv" and audio.rtcp_mux
    assert audio.payload_types() == [96, 9, 0, 8]
    opus = audio.payloads[96]
    assert (opus.encoding, opus.clock_rate, opus.channels) == ("opus", 48000, 2)
    assert audio.payloads[0].encoding == "PCMU" and audio.payloads[0].channels is None
    assert [(e.id, e.uri) for e in audio.extmaps] == [
        (1, "urn:ietf:params:rtp-hdrext:sdes:mid"),
        (2, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
    ]
    assert audio.setup == "actpass" and audio.ice_ufrag and audio.ice_pwd
    assert [f.algorithm for f in audio.fingerprints] == ["sha-256", "sha-384", "sha-512"]
    assert len(audio.candidates) == 2 and audio.end_of_candidates
    host = audio.candidates[0]
    assert (host.component, host.transport, host.type, host.priority) == (1, "udp", "host", 2130706431)
    assert audio.rtcp == "9 IN IP4 0.0.0.0"
    assert len(audio.msids) == 1 and audio.msids[0].track is not None
    fid = video.ssrc_groups[0]
    assert fid.semantics == "FID" and len(fid.ssrcs) == 2
    assert video.ssrc_list() == fid.ssrcs
    assert video.ssrc_attribute(fid.ssrcs[0], "cname") == audio.ssrc_attribute(audio.ssrc_list()[0], "cname")
    assert video.payloads[98].fmtp == "apt=97"
    assert video.payloads[97].rtcp_fb == ["nack", "nack pli", "goog-remb"]
    assert (data.protocol, data.formats, data.sctp_port, data.max_message_size) == (
        "UDP/DTLS/SCTP",
        ["webrtc-datachannel"],
        5000,
        262144,
    )
    assert data.payload_types() == []
    assert ("msid-semantic", "WMS *") in d.attributes


def test_chrome_simulcast_offer_fields() -> None:
    d = sdp.parse(load("chrome_simulcast_offer.sdp"))
    assert d.extmap_allow_mixed
    assert ("msid-semantic", " WMS 6d2e2b4c-1e8b-4f4e-9a43-0b0e6b7a3c11") in d.attributes
    video = d.media[1]
    assert [(r.id, r.direction) for r in video.rids] == [("q", "send"), ("h", "send"), ("f", "send")]
    assert video.simulcast == sdp.Simulcast(send=[["q"], ["h"], ["f"]])
    assert video.rtcp_rsize and video.direction == "sendonly" and video.ice_options == "trickle"
    assert {e.id: e.uri for e in video.extmaps}[14] == "urn:ietf:params:rtp-hdrext:toffset"
    assert video.payloads[45].encoding == "AV1" and video.payloads[45].fmtp == "level-idx=5;profile=0;tier=0"
    assert video.ssrcs == [] and video.ssrc_groups == []


def test_firefox_offer_session_level_attributes() -> None:
    d = sdp.parse(load("firefox_offer.sdp"))
    assert d.origin.username == "mozilla...THIS_IS_SDPARTA-99.0"
    assert d.origin.session_id == "5127581013433475476" and d.origin.session_version == 0
    assert len(d.fingerprints) == 1 and d.fingerprints[0].algorithm == "sha-256"
    assert d.ice_options == "trickle"
    audio = d.media[0]
    assert audio.fingerprints == [] and audio.setup == "actpass"
    assert sdp.ExtMap(2, "urn:ietf:params:rtp-hdrext:csrc-audio-level", "recvonly") in audio.extmaps
    assert audio.payloads[9].channels == 1
    assert audio.payloads[101].fmtp == "0-15"
    assert d.media[3].max_message_size == 1073741823
    video = d.media[1]
    assert [g.semantics for g in video.ssrc_groups] == ["FID", "FID", "FID"]


def test_unknown_attributes_are_preserved_in_order() -> None:
    text = (
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "a=x-session-flag\r\na=x-session-value:1 2 3\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\nb=AS:64\r\n"
        "a=mid:a\r\na=x-google-flag:conference\r\na=rtpmap:111 opus/48000/2\r\na=ptime:20\r\na=x-flag\r\n"
    )
    d = sdp.parse(text)
    assert d.attributes == [("x-session-flag", None), ("x-session-value", "1 2 3")]
    m = d.media[0]
    assert m.attributes == [("x-google-flag", "conference"), ("ptime", "20"), ("x-flag", None)]
    assert m.bandwidths == ["AS:64"]
    again = sdp.serialize(d)
    for line in ("a=x-session-flag", "a=x-session-value:1 2 3", "a=x-google-flag:conference", "a=ptime:20"):
        assert line + "\r\n" in again
    assert sdp.parse(again) == d


def test_built_description_round_trips() -> None:
    m = sdp.MediaSection(kind="video", port=50000, protocol="UDP/TLS/RTP/SAVPF", formats=["96", "97"])
    m.mid = "v"
    m.direction = "recvonly"
    m.payloads = {
        96: sdp.PayloadType(96, "VP8", 90000, None, None, ["nack", "nack pli"]),
        97: sdp.PayloadType(97, "rtx", 90000, None, "apt=96"),
    }
    m.rtcp_fb_all = ["ccm fir"]
    m.extmaps = [sdp.ExtMap(3, "urn:3gpp:video-orientation", "recvonly"), sdp.ExtMap(20, "urn:x", None, "cfg")]
    m.rids = [sdp.Rid("lo", "recv", "max-width=320;max-height=180"), sdp.Rid("hi", "recv")]
    m.simulcast = sdp.Simulcast(send=[["a"]], recv=[["lo", "x"], ["~hi"]])
    m.candidates = [
        sdp.Candidate("1", 1, "udp", 1694498815, "192.0.2.5", 61000, "srflx", [("raddr", "10.0.0.1"), ("rport", "5")])
    ]
    m.ssrc_groups = [sdp.SsrcGroup("SIM", [1, 2])]
    m.ssrcs = [sdp.SsrcAttribute(1, "cname", "c"), sdp.SsrcAttribute(2, "x-flag")]
    m.msids = [sdp.Msid("-", "t")]
    m.bundle_only = True
    m.port_count = 2
    d = sdp.SessionDescription(
        origin=sdp.Origin("u", "42", 7, "IN", "IP6", "::1"),
        groups=[sdp.Group("BUNDLE", ["v"]), sdp.Group("LS", [])],
        ice_lite=True,
        ice_ufrag="uf",
        ice_pwd="pw",
        setup="passive",
        extmaps=[sdp.ExtMap(1, "urn:ietf:params:rtp-hdrext:sdes:mid")],
        other_lines=[("u", "http://example.invalid/"), ("k", "prompt")],
        media=[m],
    )
    text = sdp.serialize(d)
    assert "a=simulcast:send a recv lo,x;~hi\r\n" in text
    assert "a=candidate:1 1 udp 1694498815 192.0.2.5 61000 typ srflx raddr 10.0.0.1 rport 5\r\n" in text
    assert "a=extmap:3/recvonly urn:3gpp:video-orientation\r\n" in text
    assert "m=video 50000/2 UDP/TLS/RTP/SAVPF 96 97\r\n" in text
    assert sdp.parse(text) == d
    assert sdp.Simulcast.first_choice(d.media[0].simulcast.recv) == [("lo", False), ("hi", True)]


def test_lf_line_ends_and_trailing_blank_lines_are_accepted() -> None:
    d = sdp.parse("v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nt=0 0\n\n")
    assert d.media == [] and d.origin.session_version == 1


HEAD = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
AUDIO = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", None, "empty session description"),
        ("o=- 1 1 IN IP4 0.0.0.0\r\n", 1, "the first line must be v=0"),
        ("v=0\r\no=- 1 1 IN IP4\r\ns=-\r\nt=0 0\r\n", 2, "o= needs 6 fields"),
        ("v=0\r\no=- 1 x IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", 2, "session version is not a non-negative integer"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n", None, "missing the session's t= line"),
        ("v=0\r\ns=-\r\nt=0 0\r\n" + AUDIO, 4, "m= before the session's o="),
        (HEAD + "garbage\r\n", 5, "expected '<type>=<value>'"),
        (HEAD + "t=0 0\r\n", 5, "duplicate t= line"),
        (HEAD + "m=audio 9 UDP/TLS/RTP/SAVPF\r\n", 5, "m= needs '<media> <port> <proto> <fmt>...'"),
        (HEAD + "m=audio 70000 UDP/TLS/RTP/SAVPF 111\r\n", 5, "m= port 70000 out of range 0..65535"),
        (HEAD + "m=audio 9 UDP/TLS/RTP/SAVPF opus\r\n", 5, "payload type is not a non-negative integer"),
        (HEAD + "m=audio 9 UDP/TLS/RTP/SAVPF 111 111\r\n", 5, "payload type 111 listed twice"),
        (HEAD + AUDIO + "a=rtpmap:97 opus/48000/2\r\n", 6, "payload type 97 is not in the m= line"),
        (HEAD + AUDIO + "a=rtpmap:111 opus\r\n", 6, "a=rtpmap needs '<pt> <encoding>/<clock rate>[/<channels>]'"),
        (HEAD + AUDIO + "a=fmtp:111 a=1\r\na=fmtp:111 b=2\r\n", 7, "duplicate a=fmtp for payload type 111"),
        (HEAD + AUDIO + "a=extmap:15 urn:x\r\n", 6, "extmap id 15 is reserved (RFC 8285 §4.2)"),
        (HEAD + AUDIO + "a=extmap:0 urn:x\r\n", 6, "extmap id 0 out of range 1..255"),
        (HEAD + AUDIO + "a=extmap:1/sideways urn:x\r\n", 6, "extmap direction must be one of"),
        (HEAD + AUDIO + "a=setup:bogus\r\n", 6, "a=setup must be one of actpass, active, passive, holdconn"),
        (HEAD + AUDIO + "a=mid:0\r\na=mid:1\r\n", 7, "duplicate a=mid"),
        (HEAD + AUDIO + "a=sendonly\r\na=recvonly\r\n", 7, "more than one direction attribute"),
        (HEAD + AUDIO + "a=candidate:1 1 udp 1 1.2.3.4 5 host\r\n", 6, "a=candidate needs"),
        (
            HEAD + AUDIO + "a=candidate:1 1 udp 1 1.2.3.4 5 typ host raddr\r\n",
            6,
            "a=candidate extensions must be name/value pairs",
        ),
        (HEAD + AUDIO + "a=ssrc:4294967296 cname:x\r\n", 6, "ssrc 4294967296 out of range 0..4294967295"),
        (HEAD + AUDIO + "a=ssrc-group:FID\r\n", 6, "a=ssrc-group needs '<semantics> <ssrc>...'"),
        (HEAD + AUDIO + "a=rid:q both\r\n", 6, "a=rid needs '<id> <send|recv> [<restrictions>]'"),
        (HEAD + AUDIO + "a=rid:q send\r\na=rid:q send\r\n", 7, "duplicate a=rid q"),
        (HEAD + AUDIO + "a=simulcast:send\r\n", 6, "a=simulcast needs '<send|recv> <rid list>' pairs"),
        (HEAD + AUDIO + "a=simulcast:send q;;f\r\n", 6, "a=simulcast has an empty rid"),
        (HEAD + AUDIO + "a=fingerprint:sha-256\r\n", 6, "a=fingerprint needs '<hash function> <value>'"),
        (HEAD + AUDIO + "a=sctp-port:x\r\n", 6, "a=sctp-port is not a non-negative integer"),
        (HEAD + AUDIO + "t=0 0\r\n", 6, "unexpected t= line in a media section"),
        (HEAD + AUDIO + "a=msid:a b c\r\n", 6, "a=msid needs '<stream id> [<track id>]'"),
    ],
)
def test_bad_sdp_names_line_and_reason(text: str, line: int | None, reason: str) -> None:
    with pytest.raises(sdp.SdpError) as info:
        sdp.parse(text)
    assert info.value.line == line
    assert info.value.reason.startswith(reason)
    if line is not None:
        assert str(info.value).startswith(f"line {line}: {reason}")
        assert info.value.text == text.replace("\r\n", "\n").split("\n")[line - 1]


def test_non_string_input_is_rejected() -> None:
    with pytest.raises(sdp.SdpError, match="SDP must be str, got bytes"):
        sdp.parse(b"v=0")  # type: ignore[arg-type]
