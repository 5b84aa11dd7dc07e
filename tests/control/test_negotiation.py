"""control.rtc.negotiation: answers to real aiortc offers and Chrome/Firefox-style offers, subscriber offers that
aiortc accepts, stable m-lines across renegotiation, the header-extension table and payload-type maps.

aiortc is used for SDP handling only: offers are created with host candidates of this machine and answers are
applied, but no media flows and every peer connection is closed at the end of its test.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from control.rtc import codecs, sdp
from control.rtc.negotiation import (
    EXT_ID_UNUSED,
    ROUTER_EXTENSIONS,
    Codec,
    NegotiationError,
    SubscribedTrack,
    TrackPlan,
    TransportParams,
    answer_offer,
    answered_rtx,
    consumer_pt_map,
    consumer_rtx_pt_map,
    next_mid,
    parse_answer,
    subscriber_codec,
    subscriber_offer,
    subscriber_rtx_pt,
)

DATA = __import__("pathlib").Path(__file__).resolve().parent.parent / "data"
FINGERPRINT = "5E:9C:2A:41:07:D3:88:B0:1F:6A:E4:72:C5:39:0D:AB:14:F2:66:8E:93:C1:57:0A:BE:3D:79:E8:22:46:D0:1C"
LOCAL = TransportParams("rtrufrag", "rtrpwd0123456789abcdefgh", [("sha-256", FINGERPRINT)], "127.0.0.1", 40123)
CANDIDATE = "a=candidate:{} 1 udp 2130706431 127.0.0.1 40123 typ host"


def load(name: str) -> str:
    with open(DATA / name, newline="") as f:
        return f.read()


def lines(text: str) -> list[str]:
    return text.split("\r\n")


@pytest.fixture
async def pc() -> AsyncIterator[RTCPeerConnection]:
    connection = RTCPeerConnection()
    yield connection
    await connection.close()


async def aiortc_offer(pc: RTCPeerConnection, *, audio: bool, video: bool, data: bool) -> str:
    if audio:
        pc.addTrack(AudioStreamTrack())
    if video:
        pc.addTrack(VideoStreamTrack())
    if data:
        pc.createDataChannel("_reliable")
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


# --- answering publishers -------------------------------------------------------------------------------------


def test_answer_to_golden_aiortc_offer() -> None:
    offer = load("aiortc_offer.sdp")
    answer, plan = answer_offer(offer, LOCAL)
    text = lines(answer)
    assert "a=ice-lite" in text
    assert "a=group:BUNDLE 0 1 2" in text
    assert text.count("a=setup:passive") == 3
    assert "a=ice-ufrag:rtrufrag" in text and "a=ice-pwd:rtrpwd0123456789abcdefgh" in text
    assert f"a=fingerprint:sha-256 {FINGERPRINT}" in text
    assert "m=audio 40123 UDP/TLS/RTP/SAVPF 96" in text
    assert "m=video 40123 UDP/TLS/RTP/SAVPF 97 98" in text
    assert "a=rtpmap:97 VP8/90000" in text and "a=fmtp:98 apt=97" in text
    assert "m=application 40123 UDP/DTLS/SCTP webrtc-datachannel" in text
    assert "a=sctp-port:5000" in text and "a=max-message-size:262144" in text
    assert sum(1 for line in text if line.startswith("a=candidate:") and line.endswith("127.0.0.1 40123 typ host")) == 3
    assert text.count("a=end-of-candidates") == 3 and text.count("a=recvonly") == 2

    offered = sdp.parse(offer)
    assert plan.ice_ufrag == offered.media[0].ice_ufrag and plan.ice_pwd == offered.media[0].ice_pwd
    assert plan.fingerprints == [(f.algorithm, f.value) for f in offered.media[0].fingerprints]
    assert plan.remote_dtls_role == "client" and plan.local_dtls_role == "server"
    assert plan.sctp is not None and (plan.sctp.port, plan.sctp.max_message_size) == (5000, 262144)
    audio, video = plan.tracks
    assert (audio.mid, audio.kind, audio.codecs[0].name, audio.codecs[0].pt, audio.codecs[0].channels) == (
        "0",
        "audio",
        "opus",
        96,
        2,
    )
    assert audio.encodings == [("", offered.media[0].ssrc_list()[0], 0)]
    media_ssrc, rtx_ssrc = offered.media[1].ssrc_groups[0].ssrcs
    assert video.encodings == [("", media_ssrc, rtx_ssrc)]
    assert video.rtx_apt == {98: 97}
    assert video.codecs[0].rtcp_fb == ("nack", "nack pli", "goog-remb")
    assert video.msid == (offered.media[1].msids[0].stream, offered.media[1].msids[0].track)
    assert video.cname == offered.media[1].ssrc_attribute(media_ssrc, "cname")
    # aiortc: mid=1, audio level=2, abs-send-time=3; only audio level is forwarded.
    assert (plan.mid_id, plan.rid_id, plan.rrid_id, plan.audio_level_id) == (1, 0, 0, 2)
    assert plan.id_map[2] == ROUTER_EXTENSIONS[codecs.URI_AUDIO_LEVEL]
    assert sum(1 for b in plan.id_map if b) == 1
    assert all(t.id_map == plan.id_map and t.mid_id == 1 and t.audio_level_id == 2 for t in plan.tracks)


async def test_aiortc_accepts_the_answer(pc: RTCPeerConnection) -> None:
    offer = await aiortc_offer(pc, audio=True, video=True, data=True)
    answer, plan = answer_offer(offer, LOCAL)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    assert pc.signalingState == "stable"
    assert [(t.mid, t.currentDirection) for t in pc.getTransceivers()] == [("0", "sendonly"), ("1", "sendonly")]
    assert [t.mid for t in plan.tracks] == ["0", "1"] and plan.sctp is not None


async def test_aiortc_accepts_a_data_only_answer(pc: RTCPeerConnection) -> None:
    offer = await aiortc_offer(pc, audio=False, video=False, data=True)
    answer, plan = answer_offer(offer, LOCAL)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    assert pc.signalingState == "stable"
    assert plan.tracks == [] and plan.sctp is not None
    assert sum(1 for b in plan.id_map if b) == 0


def test_chrome_simulcast_answer_and_extension_table() -> None:
    answer, plan = answer_offer(load("chrome_simulcast_offer.sdp"), LOCAL)
    text = lines(answer)
    assert ["a=rid:q recv", "a=rid:h recv", "a=rid:f recv", "a=simulcast:recv q;h;f"] == [
        line for line in text if line.startswith(("a=rid:", "a=simulcast:"))
    ]
    assert "m=video 40123 UDP/TLS/RTP/SAVPF 96 97" in text
    assert "a=extmap-allow-mixed" not in text
    assert not any("color-space" in line or "video-timing" in line for line in text)
    assert "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in text
    video = plan.track("1")
    assert video.encodings == [("q", 0, 0), ("h", 0, 0), ("f", 0, 0)] and video.simulcast
    assert (video.mid_id, video.rid_id, video.rrid_id, video.audio_level_id) == (4, 10, 11, 1)
    expected = {
        1: ROUTER_EXTENSIONS[codecs.URI_AUDIO_LEVEL],
        13: ROUTER_EXTENSIONS[codecs.URI_VIDEO_ORIENTATION],
        5: ROUTER_EXTENSIONS[codecs.URI_PLAYOUT_DELAY],
        6: ROUTER_EXTENSIONS[codecs.URI_VIDEO_CONTENT_TYPE],
        14: ROUTER_EXTENSIONS[codecs.URI_TOFFSET],
    }
    assert {i: b for i, b in enumerate(video.id_map) if b} == expected
    assert len(video.id_map) == 256
    audio = plan.track("0")
    assert audio.codecs[0].fmtp == {"minptime": "10", "useinbandfec": "1"}
    assert audio.codecs[0].rtcp_fb == ("transport-cc",)
    assert "a=rtcp-rsize" in text


@pytest.mark.parametrize(
    ("allow", "pt", "rtx", "name"),
    [
        (["h264"], 102, 103, "H264"),
        (["VP9"], 98, 99, "VP9"),
        (["av1"], 45, 46, "AV1"),
        (["vp9", "vp8"], 96, 97, "VP8"),  # offer order wins among the allowed ones
    ],
)
def test_allow_video_codecs_picks_the_first_allowed_offered_codec(
    allow: list[str], pt: int, rtx: int, name: str
) -> None:
    answer, plan = answer_offer(load("chrome_simulcast_offer.sdp"), LOCAL, allow_video_codecs=allow)
    video = plan.track("1")
    assert (video.codecs[0].name, video.codecs[0].pt) == (name, pt)
    assert video.rtx_apt == {rtx: pt}
    assert f"m=video 40123 UDP/TLS/RTP/SAVPF {pt} {rtx}" in lines(answer)
    if name == "H264":
        assert video.codecs[0].fmtp["profile-level-id"] == "42001f"
        assert video.codecs[0].fmtp["packetization-mode"] == "1"


def test_firefox_offer_session_fingerprint_and_unsupported_m_line() -> None:
    offer = load("firefox_offer.sdp")
    answer, plan = answer_offer(offer, LOCAL)
    parsed = sdp.parse(answer)
    assert plan.fingerprints == [("sha-256", sdp.parse(offer).fingerprints[0].value)]
    assert plan.ice_ufrag == "8e2a91b4"
    assert [t.mid for t in plan.tracks] == ["0", "1"]
    pcmu_only = parsed.media_by_mid("2")
    assert pcmu_only is not None
    assert pcmu_only.direction == "inactive" and pcmu_only.port == 40123 and pcmu_only.formats == ["0"]
    assert parsed.bundle == ["0", "1", "2", "3"]
    audio = parsed.media_by_mid("0")
    assert audio is not None
    assert [e.uri for e in audio.extmaps] == [codecs.URI_AUDIO_LEVEL, codecs.URI_MID]  # recvonly csrc level dropped
    video = parsed.media_by_mid("1")
    assert video is not None and codecs.URI_PLAYOUT_DELAY not in [e.uri for e in video.extmaps]
    assert plan.track("1").encodings == [("q", 0, 0), ("h", 0, 0), ("f", 0, 0)]
    assert plan.track("0").cname == "{c4d1b2a0-7e6f-4a5b-9c8d-1e2f3a4b5c6d}"
    assert plan.sctp is not None and plan.sctp.max_message_size == 1073741823
    assert {i: b for i, b in enumerate(plan.id_map) if b} == {1: 10, 5: ROUTER_EXTENSIONS[codecs.URI_TOFFSET]}


async def test_unsupported_codec_m_line_is_inactive_and_aiortc_accepts(pc: RTCPeerConnection) -> None:
    offer = await aiortc_offer(pc, audio=True, video=True, data=False)
    answer, plan = answer_offer(offer, LOCAL, allow_video_codecs=["vp9"])  # aiortc offers VP8 and H264 only
    video = sdp.parse(answer).media_by_mid("1")
    assert video is not None and video.direction == "inactive" and video.port == LOCAL.candidate_port
    assert video.formats == [sdp.parse(offer).media[1].formats[0]]
    assert [t.mid for t in plan.tracks] == ["0"]
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    assert pc.signalingState == "stable"


def test_offer_with_nothing_supported_is_refused() -> None:
    offer = load("firefox_offer.sdp")
    d = sdp.parse(offer)
    d.media = [d.media[2]]  # the PCMU/PCMA-only audio m-line
    d.groups = [sdp.Group("BUNDLE", ["2"])]
    with pytest.raises(NegotiationError, match="neither a supported sending track nor a data channel"):
        answer_offer(sdp.serialize(d), LOCAL)


def test_rejected_offer_m_line_stays_rejected() -> None:
    d = sdp.parse(load("aiortc_offer.sdp"))
    d.media[1].port = 0
    d.groups = [sdp.Group("BUNDLE", ["0", "2"])]
    answer, plan = answer_offer(sdp.serialize(d), LOCAL)
    parsed = sdp.parse(answer)
    assert parsed.media[1].port == 0 and parsed.bundle == ["0", "2"]
    assert [t.mid for t in plan.tracks] == ["0"]


@pytest.mark.parametrize(
    ("setup", "answer_setup", "remote", "local"),
    [
        ("actpass", "passive", "client", "server"),
        ("active", "passive", "client", "server"),
        ("passive", "active", "server", "client"),
    ],
)
def test_dtls_roles(setup: str, answer_setup: str, remote: str, local: str) -> None:
    offer = load("aiortc_offer.sdp").replace("a=setup:actpass", f"a=setup:{setup}")
    answer, plan = answer_offer(offer, LOCAL)
    assert f"a=setup:{answer_setup}" in lines(answer)
    assert (plan.remote_dtls_role, plan.local_dtls_role) == (remote, local)


def test_sim_group_gives_layered_encodings() -> None:
    d = sdp.parse(load("aiortc_offer.sdp"))
    video = d.media[1]
    video.ssrc_groups = [
        sdp.SsrcGroup("SIM", [11, 22, 33]),
        sdp.SsrcGroup("FID", [11, 111]),
        sdp.SsrcGroup("FID", [22, 222]),
        sdp.SsrcGroup("FID", [33, 333]),
    ]
    video.ssrcs = [sdp.SsrcAttribute(s, "cname", "cn") for s in (11, 22, 33, 111, 222, 333)]
    _, plan = answer_offer(sdp.serialize(d), LOCAL)
    assert plan.track("1").encodings == [("", 11, 111), ("", 22, 222), ("", 33, 333)]
    assert plan.track("1").cname == "cn"


def test_bundle_id_conflict_is_refused() -> None:
    d = sdp.parse(load("aiortc_offer.sdp"))
    d.media[1].extmaps.append(sdp.ExtMap(2, codecs.URI_VIDEO_ORIENTATION))  # 2 is audio level on mid 0
    with pytest.raises(NegotiationError, match="extension id 2 means both"):
        answer_offer(sdp.serialize(d), LOCAL)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("a=setup:actpass\r\n", ""), "offer has no a=setup (RFC 8842 §5)"),
        (lambda t: "".join(x for x in t.splitlines(True) if not x.startswith("a=fingerprint")), "no a=fingerprint"),
        (lambda t: "".join(x for x in t.splitlines(True) if not x.startswith("a=ice-pwd")), "no a=ice-ufrag/a=ice-pwd"),
        (lambda t: t.replace("a=mid:1\r\n", ""), "m-line 1 has no a=mid"),
        (lambda t: t.replace("a=mid:1\r\n", "a=mid:0\r\n"), "mid 0 is used by two m-lines"),
        (lambda t: t.replace("a=setup:actpass", "a=setup:holdconn"), "a=setup:holdconn"),
    ],
)
def test_unusable_offers_are_refused(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NegotiationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        answer_offer(edit(load("aiortc_offer.sdp")), LOCAL)


def test_offer_without_bundle_gets_only_its_first_m_line() -> None:
    # One transport per client: without BUNDLE only the first m-line can use it (RFC 8843 §7.3.3).
    answer, plan = answer_offer(load("aiortc_offer.sdp").replace("a=group:BUNDLE 0 1 2\r\n", ""), LOCAL)
    parsed = sdp.parse(answer)
    assert parsed.groups == [] and [m.port for m in parsed.media] == [40123, 0, 0]
    assert [t.mid for t in plan.tracks] == ["0"] and plan.sctp is None


def test_bad_sdp_gives_sdp_error_with_line() -> None:
    broken = load("aiortc_offer.sdp").replace("a=rtpmap:97 VP8/90000", "a=rtpmap:97 VP8")
    line = broken.split("\r\n").index("a=rtpmap:97 VP8") + 1
    with pytest.raises(sdp.SdpError) as info:
        answer_offer(broken, LOCAL)
    assert info.value.line == line
    assert str(info.value).startswith(f"line {line}: a=rtpmap needs")


def test_transport_params_validation() -> None:
    with pytest.raises(ValueError, match="at least one DTLS fingerprint"):
        TransportParams("u", "p", [], "127.0.0.1", 1)
    with pytest.raises(ValueError, match="candidate_port must be in 1..65535, got 0"):
        TransportParams("u", "p", [("sha-256", FINGERPRINT)], "127.0.0.1", 0)


# --- subscriber offers --------------------------------------------------------------------------------------


def subscribed(plan_track: TrackPlan, mid: str, ssrc: int, rtx_ssrc: int = 0) -> SubscribedTrack:
    rtx_pt = subscriber_rtx_pt(plan_track) if rtx_ssrc else None
    return SubscribedTrack(
        mid=mid,
        kind=plan_track.kind,
        codec=subscriber_codec(plan_track),
        out_ssrc=ssrc,
        stream_id=f"PA_pub|TR_{mid}",
        track_id=f"TR_{mid}",
        cname="pubcname",
        rtx_pt=rtx_pt,
        rtx_ssrc=rtx_ssrc if rtx_pt is not None else 0,
    )


@pytest.fixture
def chrome_plan() -> list[TrackPlan]:
    return answer_offer(load("chrome_simulcast_offer.sdp"), LOCAL)[1].tracks


def test_subscriber_offer_shape(chrome_plan: list[TrackPlan]) -> None:
    audio, video = (subscribed(chrome_plan[0], "1", 1111), subscribed(chrome_plan[1], "2", 2222))
    offer = subscriber_offer(LOCAL, [audio, video], data_channel=True, session_version=1)
    text = lines(offer)
    d = sdp.parse(offer)
    assert d.ice_lite and d.bundle == ["0", "1", "2"]
    assert [(m.kind, m.mid) for m in d.media] == [("application", "0"), ("audio", "1"), ("video", "2")]
    assert all(m.setup == "actpass" and m.port == 40123 for m in d.media)
    assert text.count(CANDIDATE.format(d.media[0].candidates[0].foundation)) == 3
    a, v = d.media[1], d.media[2]
    assert a.direction == v.direction == "sendonly"
    assert a.payload_types() == [111] and a.payloads[111].encoding == "opus" and a.payloads[111].channels == 2
    assert a.payloads[111].rtcp_fb == ["nack", "transport-cc"]
    assert v.payload_types() == [96]
    assert v.payloads[96].rtcp_fb == ["nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"]
    # transport-cc at the router-wide id on every m-line: the worker stamps it (send-side bandwidth estimation).
    assert all({e.uri: e.id for e in m.extmaps}[codecs.URI_TRANSPORT_CC] == 5 for m in (a, v))
    assert "a=msid:PA_pub|TR_1 TR_1" in text and "a=ssrc:1111 cname:pubcname" in text
    assert "a=ssrc:2222 msid:PA_pub|TR_2 TR_2" in text
    assert {e.uri: e.id for e in a.extmaps}[codecs.URI_AUDIO_LEVEL] == ROUTER_EXTENSIONS[codecs.URI_AUDIO_LEVEL]
    assert {e.uri: e.id for e in v.extmaps}[codecs.URI_VIDEO_ORIENTATION] == 6
    used = {e.id for m in d.media for e in m.extmaps}
    assert EXT_ID_UNUSED not in used and 15 not in used
    assert not any(e.uri in (codecs.URI_MID, codecs.URI_RID, codecs.URI_RRID) for m in d.media for e in m.extmaps)
    assert v.rids == [] and v.simulcast is None
    assert d.media[0].sctp_port == 5000 and d.media[0].max_message_size == 262144


async def test_aiortc_answers_the_subscriber_offer(pc: RTCPeerConnection, chrome_plan: list[TrackPlan]) -> None:
    tracks = [subscribed(chrome_plan[0], "1", 1111), subscribed(chrome_plan[1], "2", 2222)]
    offer = subscriber_offer(LOCAL, tracks, data_channel=True, session_version=1)
    await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    answer = await pc.createAnswer()
    remote = parse_answer(answer.sdp)
    parsed = sdp.parse(answer.sdp)
    assert remote.ice_ufrag == parsed.media[0].ice_ufrag and remote.ice_pwd == parsed.media[0].ice_pwd
    assert remote.fingerprints[0][0] == "sha-256"
    assert remote.remote_dtls_role == "client" and remote.local_dtls_role == "server"
    assert remote.sctp is not None and remote.sctp.port == 5000
    assert remote.media["1"].direction == "recvonly" and [c.pt for c in remote.media["1"].codecs] == [111]
    assert remote.media["2"].codecs[0].name == "VP8" and remote.media["2"].codecs[0].pt == 96
    assert remote.media["2"].codecs[0].rtcp_fb == ("nack", "nack pli", "goog-remb")   # aiortc: REMB, no TWCC
    assert remote.media["1"].extensions == {codecs.URI_AUDIO_LEVEL: 10}
    assert {t.kind for t in pc.getTransceivers()} == {"audio", "video"}


async def test_renegotiation_keeps_m_line_order(pc: RTCPeerConnection, chrome_plan: list[TrackPlan]) -> None:
    audio, video = (subscribed(chrome_plan[0], "1", 1111), subscribed(chrome_plan[1], "2", 2222))
    first = subscriber_offer(LOCAL, [audio, video], data_channel=True, session_version=1)
    await pc.setRemoteDescription(RTCSessionDescription(first, "offer"))
    await pc.createAnswer()

    second = subscriber_offer(LOCAL, [audio], data_channel=True, session_version=2, previous=first)
    d2 = sdp.parse(second)
    assert [(m.mid, m.port) for m in d2.media] == [("0", 40123), ("1", 40123), ("2", 0)]
    assert d2.media[2].direction == "inactive" and d2.bundle == ["0", "1"]
    assert d2.origin.session_id == sdp.parse(first).origin.session_id and d2.origin.session_version == 2
    await pc.setRemoteDescription(RTCSessionDescription(second, "offer"))
    assert parse_answer((await pc.createAnswer()).sdp).media["1"].direction == "recvonly"

    new_video = subscribed(chrome_plan[1], next_mid(second), 3333)
    new_audio = subscribed(chrome_plan[0], next_mid(second, [new_video]), 4444)
    assert (new_video.mid, new_audio.mid) == ("3", "4")
    third = subscriber_offer(
        LOCAL, [audio, new_video, new_audio], data_channel=True, session_version=3, previous=second
    )
    d3 = sdp.parse(third)
    # the port-0 video slot is recycled by the new video track; the new audio track is appended
    assert [(m.mid, m.kind, m.port) for m in d3.media] == [
        ("0", "application", 40123),
        ("1", "audio", 40123),
        ("3", "video", 40123),
        ("4", "audio", 40123),
    ]
    assert d3.bundle == ["0", "1", "3", "4"]


def test_removed_data_channel_and_errors(chrome_plan: list[TrackPlan]) -> None:
    audio = subscribed(chrome_plan[0], "1", 1111)
    first = subscriber_offer(LOCAL, [audio], data_channel=True, session_version=5)
    second = subscriber_offer(LOCAL, [audio], data_channel=False, session_version=6, previous=first)
    d = sdp.parse(second)
    assert [(m.kind, m.mid, m.port) for m in d.media] == [("application", "0", 0), ("audio", "1", 40123)]
    with pytest.raises(NegotiationError, match="session_version 5 must exceed the previous offer's 5"):
        subscriber_offer(LOCAL, [audio], data_channel=True, session_version=5, previous=first)
    with pytest.raises(NegotiationError, match="duplicate mids"):
        subscriber_offer(LOCAL, [audio, audio], data_channel=False, session_version=1)
    as_video = SubscribedTrack("1", "video", subscriber_codec(chrome_plan[1]), 5, "s", "t", "c")
    with pytest.raises(NegotiationError, match="mid 1 was audio and cannot become video"):
        subscriber_offer(LOCAL, [as_video], data_channel=True, session_version=6, previous=first)
    clash = SubscribedTrack("0", "audio", audio.codec, 7, "s", "t", "c")
    with pytest.raises(NegotiationError, match="reuses a mid"):
        subscriber_offer(LOCAL, [clash], data_channel=True, session_version=6, previous=first)


def test_empty_first_offer_has_only_the_data_channel() -> None:
    d = sdp.parse(subscriber_offer(LOCAL, [], data_channel=True, session_version=1))
    assert [(m.kind, m.mid) for m in d.media] == [("application", "0")] and d.bundle == ["0"]


def test_subscribed_track_validation() -> None:
    opus = Codec("opus", 111, 48000, 2)
    with pytest.raises(ValueError, match="kind must be audio or video"):
        SubscribedTrack("1", "data", opus, 1, "s", "t", "c")
    with pytest.raises(ValueError, match="out_ssrc must be in 1..2"):
        SubscribedTrack("1", "audio", opus, 0, "s", "t", "c")
    with pytest.raises(ValueError, match="stream_id 'a b' must be a non-empty token"):
        SubscribedTrack("1", "audio", opus, 1, "a b", "t", "c")
    with pytest.raises(ValueError, match="payload type 72 must be in 0..63 or 96..127"):
        Codec("opus", 72, 48000, 2)


def test_parse_answer_refuses_actpass() -> None:
    answer, _ = answer_offer(load("aiortc_offer.sdp"), LOCAL)
    with pytest.raises(NegotiationError, match="answer must have a=setup active or passive, got actpass"):
        parse_answer(answer.replace("a=setup:passive", "a=setup:actpass"))
    remote = parse_answer(answer)
    assert remote.remote_dtls_role == "server" and remote.ice_ufrag == "rtrufrag"


# --- payload type maps ---------------------------------------------------------------------------------------


def test_consumer_pt_map(chrome_plan: list[TrackPlan]) -> None:
    audio, video = chrome_plan
    assert consumer_pt_map(video, subscribed(video, "2", 2)) == {96: 96}
    assert consumer_pt_map(audio, subscribed(audio, "1", 1)) == {111: 111}
    h264 = answer_offer(load("chrome_simulcast_offer.sdp"), LOCAL, allow_video_codecs=["h264"])[1].track("1")
    sub = subscribed(h264, "5", 5)
    assert sub.codec.pt == 104 and sub.codec.fmtp["profile-level-id"] == "42001f"
    assert consumer_pt_map(h264, sub) == {102: 104}
    with pytest.raises(NegotiationError, match="subscriber codec VP8 matches none of the track's"):
        consumer_pt_map(h264, subscribed(video, "6", 6))
    with pytest.raises(NegotiationError, match="cannot consume a audio track as video"):
        consumer_pt_map(audio, subscribed(video, "7", 7))


def test_subscriber_codec_keeps_opus_stereo() -> None:
    _, plan = answer_offer(load("firefox_offer.sdp"), LOCAL)
    codec = subscriber_codec(plan.track("0"))
    assert (codec.pt, codec.fmtp.get("stereo"), codec.fmtp.get("sprop-stereo")) == (111, "1", "1")
    assert consumer_pt_map(plan.track("0"), subscribed(plan.track("0"), "1", 9)) == {109: 111}


# --- RTX toward subscribers (RFC 4588) -----------------------------------------------------------------------


def test_subscriber_offer_with_rtx_has_apt_and_fid(chrome_plan: list[TrackPlan]) -> None:
    audio, video = chrome_plan
    assert subscriber_rtx_pt(audio) is None and subscriber_rtx_pt(video) == 97
    offer = subscriber_offer(
        LOCAL, [subscribed(audio, "1", 1111, 1112), subscribed(video, "2", 2222, 2223)],
        data_channel=True, session_version=1,
    )
    text = lines(offer)
    a, v = sdp.parse(offer).media[1:]
    assert a.payload_types() == [111] and a.ssrc_groups == []  # no RTX for audio
    assert v.payload_types() == [96, 97]
    assert (v.payloads[97].encoding, v.payloads[97].clock_rate, v.payloads[97].fmtp) == ("rtx", 90000, "apt=96")
    assert v.payloads[97].rtcp_fb == []
    assert [(g.semantics, g.ssrcs) for g in v.ssrc_groups] == [("FID", [2222, 2223])]
    assert "a=ssrc-group:FID 2222 2223" in text
    assert "a=ssrc:2223 cname:pubcname" in text and "a=ssrc:2223 msid:PA_pub|TR_2 TR_2" in text
    assert consumer_rtx_pt_map(subscribed(video, "2", 2222, 2223)) == {96: 97}
    assert consumer_rtx_pt_map(subscribed(video, "2", 2222)) == {}
    h264 = answer_offer(load("chrome_simulcast_offer.sdp"), LOCAL, allow_video_codecs=["h264"])[1].track("1")
    assert consumer_rtx_pt_map(subscribed(h264, "3", 3333, 3334)) == {104: 105}


def test_subscribed_track_rtx_validation(chrome_plan: list[TrackPlan]) -> None:
    vp8 = subscriber_codec(chrome_plan[1])
    with pytest.raises(ValueError, match="needs both rtx_pt and rtx_ssrc"):
        SubscribedTrack("1", "video", vp8, 5, "s", "t", "c", rtx_pt=97)
    with pytest.raises(ValueError, match="differ from out_ssrc"):
        SubscribedTrack("1", "video", vp8, 5, "s", "t", "c", rtx_pt=97, rtx_ssrc=5)
    with pytest.raises(ValueError, match="only video m-lines offer RTX"):
        SubscribedTrack("1", "audio", subscriber_codec(chrome_plan[0]), 5, "s", "t", "c", rtx_pt=97, rtx_ssrc=6)


async def test_aiortc_keeps_rtx_in_its_answer(pc: RTCPeerConnection, chrome_plan: list[TrackPlan]) -> None:
    tracks = [subscribed(chrome_plan[0], "1", 1111), subscribed(chrome_plan[1], "2", 2222, 2223)]
    offer = subscriber_offer(LOCAL, tracks, data_channel=True, session_version=1)
    await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    remote = parse_answer((await pc.createAnswer()).sdp)
    assert answered_rtx(remote.media["2"]) and not answered_rtx(remote.media["1"])
    # The answer without RTX: its payload type's attributes and its number on the m= line go (only those: the
    # random o= and ssrc lines may contain "97" too).
    refused = parse_answer("\r\n".join(
        x for x in lines((await pc.createAnswer()).sdp) if not re.match(r"a=(rtpmap|fmtp|rtcp-fb):97\b", x)
    ).replace(" 96 97", " 96"))
    assert refused.media["2"].codecs[0].name == "VP8" and not answered_rtx(refused.media["2"])


async def test_consume_body_carries_the_rtx_ssrc_and_pt_map() -> None:
    from control.rtc.media import MediaClient
    from router.messages import ConsumeRequest

    class Recorder:
        def __init__(self) -> None:
            self.sent: list[tuple[str, str, dict]] = []

        async def request(self, method: str, target_id: str, body: dict, timeout: float = 5.0) -> dict:
            self.sent.append((method, target_id, body))
            return {}

    worker = Recorder()
    await MediaClient(worker).consume("t", "c", "p", out_ssrc=2222, pt_map={96: 96}, rtx_ssrc=2223,
                                      rtx_pt_map={96: 97})
    await MediaClient(worker).consume("t", "c2", "p", out_ssrc=3333, pt_map={111: 111})
    (method, target, body), (_, _, plain) = worker.sent
    assert (method, target) == ("transport.consume", "t")
    request = ConsumeRequest.from_wire(body)
    assert (request.rtx_ssrc, request.rtx_pt_map) == (2223, [(96, 97)])
    assert (ConsumeRequest.from_wire(plain).rtx_ssrc, ConsumeRequest.from_wire(plain).rtx_pt_map) == (0, [])
