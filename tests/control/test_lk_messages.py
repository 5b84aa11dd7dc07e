"""Tests for control.rtc.lk_messages: every builder round-trips through protobuf bytes with the fields clients
rely on, and the mistakes that crash clients (docs/PROTOCOL.md) are refused at build time."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from livekit.protocol import models, rtc

from control.rtc import lk_messages as lm

A = rtc.LeaveRequest.Action
State = models.ParticipantInfo.State
Q = models.VideoQuality
NOW_MS = 1_800_000_000_123


def roundtrip(resp: rtc.SignalResponse, kind: str) -> rtc.SignalResponse:
    data = resp.SerializeToString()
    assert isinstance(data, bytes) and data
    back = rtc.SignalResponse.FromString(data)
    assert back.WhichOneof("message") == kind
    assert back == resp
    return back


def perm(**kw: bool) -> models.ParticipantPermission:
    base = {"can_publish": True, "can_subscribe": True, "can_publish_data": True}
    base.update(kw)
    return models.ParticipantPermission(**base)


def room(**kw: object) -> models.Room:
    args: dict = {"sid": "RM_abcdefghijkl", "name": "lobby", "creation_time_ms": NOW_MS}
    args.update(kw)
    return lm.room_info(**args)


def participant(
    sid: str = "PA_aaaaaaaaaaaa", identity: str = "alice", **kw: object
) -> models.ParticipantInfo:
    args: dict = {"sid": sid, "identity": identity, "joined_at_ms": NOW_MS, "permission": perm()}
    args.update(kw)
    return lm.participant_info(**args)


def video_request() -> rtc.AddTrackRequest:
    layers = [
        models.VideoLayer(quality=Q.HIGH, width=1280, height=720, bitrate=1_700_000),
        models.VideoLayer(quality=Q.LOW, width=320, height=180, bitrate=150_000),
        models.VideoLayer(quality=Q.MEDIUM, width=640, height=360, bitrate=500_000),
    ]
    return rtc.AddTrackRequest(
        cid="mstA2",
        name="cam",
        type=models.TrackType.VIDEO,
        source=models.TrackSource.CAMERA,
        width=1280,
        height=720,
        layers=layers,
        simulcast_codecs=[rtc.SimulcastCodec(codec="vp8", cid="mstA2")],
    )


def audio_request(**kw: object) -> rtc.AddTrackRequest:
    args: dict = {
        "cid": "mstA1",
        "type": models.TrackType.AUDIO,
        "source": models.TrackSource.MICROPHONE,
    }
    args.update(kw)
    return rtc.AddTrackRequest(**args)


def audio_track(sid: str = "TR_audio000001") -> models.TrackInfo:
    return lm.track_info(audio_request(), sid=sid, now_us=1)


# --- ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "prefix"),
    [(lm.new_participant_sid, "PA_"), (lm.new_track_sid, "TR_"), (lm.new_room_sid, "RM_")],
)
def test_sid_generators(make: Callable[[], str], prefix: str) -> None:
    sids = {make() for _ in range(500)}
    assert len(sids) == 500
    for sid in sids:
        assert sid.startswith(prefix)
        assert len(sid) == len(prefix) + 12
        assert set(sid[len(prefix) :]) <= set(lm.SID_ALPHABET)


# --- room and participant ------------------------------------------------------------------------


def test_room_info_fields() -> None:
    r = room(metadata="m", num_participants=2, num_publishers=1, enabled_codecs=["audio/opus", "video/VP8"])
    back = models.Room.FromString(r.SerializeToString())
    assert back.sid == "RM_abcdefghijkl"
    assert back.name == "lobby"
    assert back.creation_time == NOW_MS // 1000
    assert back.creation_time_ms == NOW_MS
    assert (back.num_participants, back.num_publishers) == (2, 1)
    assert [c.mime for c in back.enabled_codecs] == ["audio/opus", "video/VP8"]
    assert back.empty_timeout == 300


def test_room_info_refuses_bad_sid_and_name() -> None:
    with pytest.raises(ValueError, match="^room sid 'lobby' must start with RM_ and not be empty after it$"):
        room(sid="lobby")
    with pytest.raises(ValueError, match="^room sid 'RM_' must start with RM_"):
        room(sid="RM_")
    with pytest.raises(ValueError, match="^room name must not be empty$"):
        room(name="")


def test_participant_info_fields() -> None:
    track = audio_track()
    info = participant(
        name="Alice",
        metadata="md",
        attributes={"k": "v"},
        tracks=[track],
        client_protocol=2,
        capabilities=[models.ClientInfo.Capability.CAP_PACKET_TRAILER],
        kind=models.ParticipantInfo.Kind.AGENT,
        region="eu",
    )
    back = models.ParticipantInfo.FromString(info.SerializeToString())
    assert back.sid == "PA_aaaaaaaaaaaa"
    assert back.identity == "alice"
    assert back.name == "Alice"
    assert back.state == State.JOINING
    assert back.metadata == "md"
    assert dict(back.attributes) == {"k": "v"}
    assert back.permission == perm()
    assert back.joined_at == NOW_MS // 1000 and back.joined_at_ms == NOW_MS
    assert back.version == 1
    assert back.is_publisher is True
    assert back.client_protocol == 2
    assert list(back.capabilities) == [models.ClientInfo.Capability.CAP_PACKET_TRAILER]
    assert back.kind == models.ParticipantInfo.Kind.AGENT
    assert [t.sid for t in back.tracks] == ["TR_audio000001"]


def test_participant_info_refusals() -> None:
    with pytest.raises(ValueError, match="^participant sid 'alice' must start with PA_"):
        participant(sid="alice")
    with pytest.raises(ValueError, match="^participant identity must not be empty$"):
        participant(identity="")
    with pytest.raises(ValueError, match="^unknown participant state 9$"):
        participant(state=9)
    with pytest.raises(ValueError, match="^duplicate track sid TR_audio000001$"):
        participant(tracks=[audio_track(), audio_track()])
    bad_track = models.TrackInfo(sid="mstA1", type=models.TrackType.AUDIO)
    with pytest.raises(ValueError, match="^track sid 'mstA1' must start with TR_"):
        participant(tracks=[bad_track])


def test_disconnected_bumps_version_and_keeps_tracks() -> None:
    info = participant(state=State.ACTIVE, version=4, tracks=[audio_track()])
    gone = lm.disconnected(info, models.DisconnectReason.CLIENT_INITIATED)
    assert gone.state == State.DISCONNECTED
    assert gone.disconnect_reason == models.DisconnectReason.CLIENT_INITIATED
    assert gone.version == 5 > info.version
    assert info.state == State.ACTIVE  # the original is untouched
    back = roundtrip(lm.participant_update([gone]), "update")
    assert back.update.participants[0].state == State.DISCONNECTED


# --- tracks -------------------------------------------------------------------------------------


def test_track_info_audio_microphone() -> None:
    t = lm.track_info(audio_request(stereo=True, disable_dtx=True, muted=True), now_us=42)
    assert t.sid.startswith("TR_") and len(t.sid) == 15
    assert t.type == models.TrackType.AUDIO
    assert t.source == models.TrackSource.MICROPHONE
    assert t.stream == "camera"
    assert t.muted is True
    assert [(c.cid, c.mime_type) for c in t.codecs] == [("mstA1", "")]
    assert list(t.audio_features) == [models.AudioTrackFeature.TF_STEREO, models.AudioTrackFeature.TF_NO_DTX]
    assert t.simulcast is False
    assert t.version.unix_micro == 42


def test_track_info_simulcast_vp8_camera() -> None:
    t = lm.track_info(video_request(), sid="TR_v1v1v1v1v1v1", now_us=1)
    assert t.sid == "TR_v1v1v1v1v1v1"
    assert (t.width, t.height) == (1280, 720)
    assert [layer.quality for layer in t.layers] == [Q.LOW, Q.MEDIUM, Q.HIGH]
    assert t.simulcast is True
    assert t.stream == "camera"
    assert len(t.codecs) == 1
    codec = t.codecs[0]
    assert codec.mime_type == "video/VP8"
    assert codec.cid == "mstA2"
    assert codec.video_layer_mode == models.VideoLayer.Mode.ONE_SPATIAL_LAYER_PER_STREAM
    assert [(layer.width, layer.height) for layer in codec.layers] == [(320, 180), (640, 360), (1280, 720)]
    back = roundtrip(lm.track_published("mstA2", t), "track_published")
    assert back.track_published.cid == "mstA2"
    assert back.track_published.track.codecs[0].mime_type == "video/VP8"


def test_track_info_screen_share_and_explicit_stream() -> None:
    screen = lm.track_info(
        audio_request(source=models.TrackSource.SCREEN_SHARE_AUDIO), sid="TR_screenaudio1", now_us=1
    )
    assert screen.stream == "screen"
    named = lm.track_info(audio_request(stream="mystream"), sid="TR_stream000001", now_us=1)
    assert named.stream == "mystream"


def test_track_info_svc_codec_is_not_simulcast() -> None:
    req = video_request()
    del req.simulcast_codecs[:]
    req.simulcast_codecs.add(codec="vp9", cid="mstA2")
    t = lm.track_info(req, now_us=1)
    assert t.codecs[0].mime_type == "video/VP9"
    assert t.codecs[0].video_layer_mode == models.VideoLayer.Mode.MULTIPLE_SPATIAL_LAYERS_PER_STREAM
    assert t.simulcast is False


def test_track_info_substitutes_an_enabled_codec() -> None:
    req = video_request()
    del req.simulcast_codecs[:]
    req.simulcast_codecs.add(codec="h264", cid="mstA2")
    req.simulcast_codecs.add(codec="av1", cid="mstA2b")
    t = lm.track_info(req, enabled_codecs=["audio/opus", "video/VP8"], now_us=1)
    assert [(c.mime_type, c.cid) for c in t.codecs] == [("video/VP8", "mstA2")]
    assert t.simulcast is True


def test_track_info_drops_backup_codec_that_is_not_enabled() -> None:
    req = video_request()
    req.simulcast_codecs.add(codec="av1", cid="mstA2")
    t = lm.track_info(req, enabled_codecs=["video/VP8"], now_us=1)
    assert [c.mime_type for c in t.codecs] == ["video/VP8"]
    both = lm.track_info(req, now_us=1)
    assert [c.mime_type for c in both.codecs] == ["video/VP8", "video/AV1"]


def test_track_info_refusals() -> None:
    with pytest.raises(ValueError, match="^unsupported track type DATA$"):
        lm.track_info(rtc.AddTrackRequest(cid="x", type=models.TrackType.DATA))
    with pytest.raises(ValueError, match="^add_track request has no cid$"):
        lm.track_info(rtc.AddTrackRequest(type=models.TrackType.AUDIO))
    with pytest.raises(ValueError, match="^track sid 'abc' must start with TR_"):
        lm.track_info(audio_request(), sid="abc")
    with pytest.raises(ValueError, match="^codec mime type 'VP8' must look like"):
        lm.track_info(video_request(), enabled_codecs=["VP8"])


def test_mime_type_for() -> None:
    assert lm.mime_type_for(models.TrackType.VIDEO, "vp8") == "video/VP8"
    assert lm.mime_type_for(models.TrackType.VIDEO, "video/h264") == "video/H264"
    assert lm.mime_type_for(models.TrackType.AUDIO, "OPUS") == "audio/opus"
    with pytest.raises(ValueError, match="^codec name must not be empty$"):
        lm.mime_type_for(models.TrackType.VIDEO, "")


def test_track_unpublished_subscribed_and_mute() -> None:
    assert (
        roundtrip(lm.track_unpublished("TR_x1"), "track_unpublished").track_unpublished.track_sid == "TR_x1"
    )
    assert roundtrip(lm.track_subscribed("TR_x1"), "track_subscribed").track_subscribed.track_sid == "TR_x1"
    m = roundtrip(lm.mute("TR_x1", True), "mute").mute
    assert (m.sid, m.muted) == ("TR_x1", True)
    with pytest.raises(ValueError, match="^track sid 'mstA1' must start with TR_"):
        lm.track_unpublished("mstA1")
    with pytest.raises(ValueError, match="^track_published needs the request's cid$"):
        lm.track_published("", audio_track())


# --- join ---------------------------------------------------------------------------------------


def join(others: tuple[models.ParticipantInfo, ...] | list = (), **kw: object) -> rtc.SignalResponse:
    args: dict = {"server_version": "1.9.0", "node_id": "node-1", "region": "local"}
    args.update(kw)
    return lm.join_response(room(), participant(), list(others), **args)


def test_join_response_has_everything_clients_need() -> None:
    bob = participant(sid="PA_bbbbbbbbbbbb", identity="bob", state=State.ACTIVE, tracks=[audio_track()])
    resp = join(
        others=[bob],
        enabled_publish_codecs=["audio/opus", "video/VP8"],
        ice_servers=[lm.ice_server(["stun:stun.example.org:3478"])],
    )
    j = roundtrip(resp, "join").join
    assert j.room.sid == "RM_abcdefghijkl" and j.room.name == "lobby"
    assert j.participant.sid.startswith("PA_") and j.participant.identity == "alice"
    assert j.participant.state == State.JOINING
    assert j.participant.permission.can_publish is True
    assert [p.identity for p in j.other_participants] == ["bob"]
    assert [t.sid for t in j.other_participants[0].tracks] == ["TR_audio000001"]
    assert j.server_info.version == "1.9.0" and j.server_version == "1.9.0"
    assert j.server_info.protocol == 16
    assert j.server_info.edition == models.ServerInfo.Edition.Standard
    assert j.server_info.node_id == "node-1"
    assert j.server_info.region == "local" and j.server_region == "local"
    assert (j.ping_interval, j.ping_timeout) == (5, 15)
    assert j.subscriber_primary is True
    assert j.fast_publish is True
    assert [c.mime for c in j.enabled_publish_codecs] == ["audio/opus", "video/VP8"]
    assert list(j.ice_servers[0].urls) == ["stun:stun.example.org:3478"]


def test_join_response_fast_publish_follows_can_publish() -> None:
    viewer = participant(permission=perm(can_publish=False))
    resp = lm.join_response(room(), viewer, [], server_version="1.9.0", node_id="n", region="r")
    assert roundtrip(resp, "join").join.fast_publish is False
    forced = lm.join_response(
        room(), viewer, [], server_version="1.9.0", node_id="n", region="r", fast_publish=True
    )
    assert forced.join.fast_publish is True


@pytest.mark.parametrize(("interval", "timeout"), [(0, 15), (5, 0), (-1, 15)])
def test_join_response_refuses_zero_ping(interval: int, timeout: int) -> None:
    with pytest.raises(ValueError, match=r"^ping_interval and ping_timeout must be positive"):
        join(ping_interval=interval, ping_timeout=timeout)


def test_join_response_refuses_timeout_not_above_interval() -> None:
    with pytest.raises(ValueError, match="^ping_timeout must be longer than ping_interval$"):
        join(ping_interval=10, ping_timeout=10)


@pytest.mark.parametrize("version", ["", "1.7.9", "0.15", "unknown"])
def test_join_response_refuses_old_or_empty_version(version: str) -> None:
    with pytest.raises(ValueError, match=r"must be a version string >= 1\.8\.0$"):
        join(server_version=version)


@pytest.mark.parametrize("version", ["1.8.0", "1.9.0", "1.13.5", "v2.0"])
def test_join_response_accepts_modern_versions(version: str) -> None:
    assert roundtrip(join(server_version=version), "join").join.server_info.version == version


def test_join_response_refuses_hidden_and_bad_others() -> None:
    hidden = participant(sid="PA_hhhhhhhhhhhh", identity="rec", permission=perm(hidden=True))
    with pytest.raises(ValueError, match="^hidden participant PA_hhhhhhhhhhhh must not be listed to others$"):
        join(others=[hidden])
    with pytest.raises(ValueError, match="^participant PA_aaaaaaaaaaaa must not be listed among the other"):
        join(others=[participant()])
    gone = lm.disconnected(
        participant(sid="PA_gggggggggggg", identity="g"), models.DisconnectReason.UNKNOWN_REASON
    )
    with pytest.raises(ValueError, match="^disconnected participant PA_gggggggggggg must not be listed$"):
        join(others=[gone])
    raw = models.ParticipantInfo(sid="bob", identity="bob")
    with pytest.raises(ValueError, match="^participant sid 'bob' must start with PA_"):
        join(others=[raw])


def test_join_response_head_and_cached_entries_are_the_join_response() -> None:
    bob = participant(sid="PA_bbbbbbbbbbbb", identity="bob", state=State.ACTIVE, tracks=[audio_track()])
    carol = participant(sid="PA_cccccccccccc", identity="carol", metadata="x" * 300)
    args = {"server_version": "1.9.0", "node_id": "node-1", "region": "local",
            "enabled_publish_codecs": ["audio/opus"], "ice_servers": [lm.ice_server(["stun:stun.example.org"])]}
    listed = lm.listed_participant(bob) + lm.listed_participant(carol)
    data = lm.join_response_head(room(), participant(), len(listed), **args) + listed
    parsed = rtc.SignalResponse.FromString(data)
    assert parsed == lm.join_response(room(), participant(), [bob, carol], **args)  # type: ignore[arg-type]
    assert [p.identity for p in parsed.join.other_participants] == ["bob", "carol"]
    alone = lm.join_response_head(room(), participant(), 0, **args)
    assert rtc.SignalResponse.FromString(alone) == lm.join_response(room(), participant(), [], **args)  # type: ignore[arg-type]


def test_listed_participant_refuses_hidden_and_bad_infos() -> None:
    with pytest.raises(ValueError, match="^hidden participant PA_hhhhhhhhhhhh must not be listed to others$"):
        lm.listed_participant(participant(sid="PA_hhhhhhhhhhhh", identity="rec", permission=perm(hidden=True)))
    gone = lm.disconnected(participant(sid="PA_gggggggggggg", identity="g"), models.DisconnectReason.UNKNOWN_REASON)
    with pytest.raises(ValueError, match="^disconnected participant PA_gggggggggggg must not be listed$"):
        lm.listed_participant(gone)
    with pytest.raises(ValueError, match="^participant sid 'bob' must start with PA_"):
        lm.listed_participant(models.ParticipantInfo(sid="bob", identity="bob"))


def test_join_response_refuses_missing_room_sid_and_permission() -> None:
    with pytest.raises(ValueError, match="^room sid '' must start with RM_"):
        lm.join_response(
            models.Room(name="x"), participant(), [], server_version="1.9.0", node_id="n", region="r"
        )
    bare = models.ParticipantInfo(sid="PA_aaaaaaaaaaaa", identity="alice")
    with pytest.raises(ValueError, match="^participant PA_aaaaaaaaaaaa has no permission$"):
        lm.join_response(room(), bare, [], server_version="1.9.0", node_id="n", region="r")


def test_join_response_client_configuration() -> None:
    cfg = models.ClientConfiguration(resume_connection=models.ClientConfigSetting.DISABLED)
    j = roundtrip(join(client_configuration=cfg), "join").join
    assert j.client_configuration.resume_connection == models.ClientConfigSetting.DISABLED


def test_ice_server_validation() -> None:
    turn = lm.ice_server(["turn:turn.example.org:3478?transport=udp"], "u", "p")
    assert (turn.username, turn.credential) == ("u", "p")
    with pytest.raises(ValueError, match="^ice server url 'http://x' must be a stun:"):
        lm.ice_server(["http://x"])
    with pytest.raises(ValueError, match="^turn servers need a username and a credential$"):
        lm.ice_server(["turn:t.example.org"])
    with pytest.raises(ValueError, match="^ice server needs a non-empty list of urls$"):
        lm.ice_server("stun:x")  # type: ignore[arg-type]


def test_reconnect_response() -> None:
    r = roundtrip(
        lm.reconnect(server_version="1.9.0", node_id="n", region="r", last_message_seq=7), "reconnect"
    ).reconnect
    assert r.last_message_seq == 7
    assert r.server_info.version == "1.9.0"


# --- updates ------------------------------------------------------------------------------------


def test_participant_update_full_info_and_versions() -> None:
    a = participant(state=State.ACTIVE, version=3, tracks=[audio_track()])
    back = roundtrip(lm.participant_update([a], last_versions={a.sid: 3}), "update").update
    assert back.participants[0].version == 3
    assert len(back.participants[0].tracks) == 1
    with pytest.raises(ValueError, match="^participant PA_aaaaaaaaaaaa version 3 is older than 4$"):
        lm.participant_update([a], last_versions={a.sid: 4})
    with pytest.raises(ValueError, match="^participant update needs at least one participant$"):
        lm.participant_update([])
    with pytest.raises(ValueError, match="^duplicate participant sid PA_aaaaaaaaaaaa$"):
        lm.participant_update([a, a])


def test_room_update() -> None:
    back = roundtrip(lm.room_update(room(num_participants=1)), "room_update")
    assert back.room_update.room.num_participants == 1


def test_speakers_changed() -> None:
    resp = lm.speakers_changed(
        [("PA_aaaaaaaaaaaa", 0.5, True), models.SpeakerInfo(sid="PA_bbbbbbbbbbbb", level=0.0, active=False)]
    )
    speakers = roundtrip(resp, "speakers_changed").speakers_changed.speakers
    assert [(s.sid, round(s.level, 3), s.active) for s in speakers] == [
        ("PA_aaaaaaaaaaaa", 0.5, True),
        ("PA_bbbbbbbbbbbb", 0.0, False),
    ]
    with pytest.raises(ValueError, match="^speaker PA_aaaaaaaaaaaa level 1.5 must be within 0..1$"):
        lm.speakers_changed([("PA_aaaaaaaaaaaa", 1.5, True)])
    with pytest.raises(ValueError, match="^speaker sid 'alice' must start with PA_"):
        lm.speakers_changed([("alice", 0.1, True)])


def test_subscription_response() -> None:
    back = roundtrip(
        lm.subscription_response("TR_missing", models.SubscriptionError.SE_TRACK_NOTFOUND),
        "subscription_response",
    ).subscription_response
    assert (back.track_sid, back.err) == ("TR_missing", models.SubscriptionError.SE_TRACK_NOTFOUND)
    with pytest.raises(ValueError, match="^unknown subscription error 42$"):
        lm.subscription_response("TR_x", 42)


def test_request_response_carries_the_request() -> None:
    req = audio_request()
    back = roundtrip(
        lm.request_response(rtc.RequestResponse.Reason.NOT_ALLOWED, add_track=req, message="no camera"),
        "request_response",
    ).request_response
    assert back.reason == rtc.RequestResponse.Reason.NOT_ALLOWED
    assert back.add_track.cid == "mstA1"
    assert back.message == "no camera"
    with pytest.raises(ValueError, match="^request_response carries at most one request copy$"):
        lm.request_response(
            rtc.RequestResponse.Reason.NOT_ALLOWED, add_track=req, mute=rtc.MuteTrackRequest()
        )


# --- negotiation ----------------------------------------------------------------------------

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def test_offer_and_answer() -> None:
    o = roundtrip(lm.offer(SDP, 1, mid_to_track_id={"0": "TR_a"}), "offer").offer
    assert (o.type, o.sdp, o.id) == ("offer", SDP, 1)
    assert dict(o.mid_to_track_id) == {"0": "TR_a"}
    a = roundtrip(lm.answer(SDP, 3), "answer").answer
    assert (a.type, a.id) == ("answer", 3)
    assert roundtrip(lm.answer(SDP, 0), "answer").answer.id == 0
    with pytest.raises(ValueError, match="^offer sdp must start with 'v=0'$"):
        lm.offer("", 1)
    with pytest.raises(ValueError, match="^answer id -1 must be a uint32$"):
        lm.answer(SDP, -1)


def test_trickle_json_has_what_rust_requires() -> None:
    cand = "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host"
    resp = lm.trickle(
        cand, sdp_mid="0", sdp_mline_index=0, target=rtc.SignalTarget.SUBSCRIBER, username_fragment="uf"
    )
    t = roundtrip(resp, "trickle").trickle
    assert t.target == rtc.SignalTarget.SUBSCRIBER
    body = json.loads(t.candidateInit)
    assert body == {"candidate": cand, "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "uf"}
    assert isinstance(body["sdpMid"], str) and type(body["sdpMLineIndex"]) is int
    pub = lm.trickle(cand, sdp_mid="1", sdp_mline_index=1, target=rtc.SignalTarget.PUBLISHER, final=True)
    assert pub.trickle.target == rtc.SignalTarget.PUBLISHER and pub.trickle.final is True
    assert "usernameFragment" not in json.loads(pub.trickle.candidateInit)


def test_trickle_refusals() -> None:
    cand = "candidate:1 1 udp 1 127.0.0.1 1 typ host"
    with pytest.raises(
        ValueError, match="^trickle candidate must be a non-empty 'candidate:...' attribute value$"
    ):
        lm.trickle("", sdp_mid="0", sdp_mline_index=0, target=0)
    with pytest.raises(ValueError, match="^trickle sdpMid must be a string$"):
        lm.trickle(cand, sdp_mid=None, sdp_mline_index=0, target=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="^trickle sdpMLineIndex must be a non-negative integer$"):
        lm.trickle(cand, sdp_mid="0", sdp_mline_index=True, target=0)
    with pytest.raises(ValueError, match=r"^trickle target 2 must be PUBLISHER \(0\) or SUBSCRIBER \(1\)$"):
        lm.trickle(cand, sdp_mid="0", sdp_mline_index=0, target=2)


def test_parse_candidate_init_from_clients() -> None:
    browser = (
        '{"candidate":"candidate:2 1 udp 1 10.0.0.1 5000 typ host",'
        '"sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"u"}'
    )
    c = lm.parse_candidate_init(browser)
    assert (c.sdp_mid, c.sdp_mline_index, c.username_fragment) == ("0", 0, "u")
    android = '{"candidate":"candidate:2 1 udp 1 10.0.0.1 5000 typ host","sdpMid":null,"sdpMLineIndex":1}'
    assert lm.parse_candidate_init(android).sdp_mline_index == 1
    end = lm.parse_candidate_init('{"candidate":"","sdpMid":"0","sdpMLineIndex":0}')
    assert end.candidate == ""
    same = lm.parse_candidate_init(lm.CandidateInit("candidate:9 1 udp 1 ::1 9 typ host", "0", 0).to_json())
    assert same.candidate.startswith("candidate:9")
    with pytest.raises(lm.SignalMessageError, match="^trickle candidateInit is not valid JSON$"):
        lm.parse_candidate_init("{")
    with pytest.raises(lm.SignalMessageError, match="^trickle candidate needs sdpMid or sdpMLineIndex$"):
        lm.parse_candidate_init('{"candidate":"candidate:1 1 udp 1 1.2.3.4 1 typ host"}')
    with pytest.raises(lm.SignalMessageError, match="^trickle sdpMid must be a string or null$"):
        lm.parse_candidate_init('{"candidate":"candidate:1","sdpMid":0}')


# --- keepalive, leave, refresh ------------------------------------------------------------------


def test_pong_and_pong_resp() -> None:
    assert roundtrip(lm.pong(NOW_MS), "pong").pong == NOW_MS
    p = roundtrip(lm.pong_resp(1234, NOW_MS), "pong_resp").pong_resp
    assert (p.last_ping_timestamp, p.timestamp) == (1234, NOW_MS)


def test_leave() -> None:
    bye = roundtrip(lm.leave(models.DisconnectReason.DUPLICATE_IDENTITY), "leave").leave
    assert (bye.reason, bye.action, bye.can_reconnect) == (
        models.DisconnectReason.DUPLICATE_IDENTITY,
        A.DISCONNECT,
        False,
    )
    again = roundtrip(lm.leave(models.DisconnectReason.STATE_MISMATCH, A.RECONNECT), "leave").leave
    assert (again.action, again.can_reconnect) == (A.RECONNECT, True)
    with pytest.raises(ValueError, match="^unknown leave action 7$"):
        lm.leave(models.DisconnectReason.STATE_MISMATCH, 7)


def test_refresh_token() -> None:
    assert roundtrip(lm.refresh_token("a.b.c"), "refresh_token").refresh_token == "a.b.c"
    with pytest.raises(ValueError, match="^refresh_token needs a JWT$"):
        lm.refresh_token("nope")


# --- client frames --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "kind"),
    [
        (rtc.SignalRequest(offer=rtc.SessionDescription(type="offer", sdp=SDP, id=2)), "offer"),
        (rtc.SignalRequest(answer=rtc.SessionDescription(type="answer", sdp=SDP, id=1)), "answer"),
        (rtc.SignalRequest(trickle=rtc.TrickleRequest(candidateInit="{}", target=1)), "trickle"),
        (rtc.SignalRequest(add_track=rtc.AddTrackRequest(cid="c", type=models.TrackType.VIDEO)), "add_track"),
        (rtc.SignalRequest(mute=rtc.MuteTrackRequest(sid="TR_x", muted=True)), "mute"),
        (rtc.SignalRequest(subscription=rtc.UpdateSubscription(track_sids=["TR_x"])), "subscription"),
        (rtc.SignalRequest(leave=rtc.LeaveRequest(reason=models.DisconnectReason.CLIENT_INITIATED)), "leave"),
        (rtc.SignalRequest(ping_req=rtc.Ping(timestamp=5, rtt=3)), "ping_req"),
    ],
)
def test_parse_binary_signal_request(request_: rtc.SignalRequest, kind: str) -> None:
    got_kind, message = lm.parse_signal_request(request_.SerializeToString())
    assert got_kind == kind
    assert message == getattr(request_, kind)


def test_parse_ping_gives_int() -> None:
    assert lm.parse_signal_request(rtc.SignalRequest(ping=NOW_MS).SerializeToString()) == ("ping", NOW_MS)


def test_parse_json_text_frame() -> None:
    kind, msg = lm.parse_signal_request('{"addTrack":{"cid":"mst","type":"VIDEO","source":"CAMERA"}}')
    assert kind == "add_track"
    assert isinstance(msg, rtc.AddTrackRequest)
    assert (msg.cid, msg.type, msg.source) == ("mst", models.TrackType.VIDEO, models.TrackSource.CAMERA)
    assert lm.parse_signal_request('{"ping":"12"}') == ("ping", 12)


def test_parse_refusals() -> None:
    with pytest.raises(lm.SignalMessageError, match="^malformed signal request$"):
        lm.parse_signal_request(b"\xff\xff\xff")
    with pytest.raises(lm.SignalMessageError, match="^signal request carries no known message$"):
        lm.parse_signal_request(b"")
    with pytest.raises(lm.SignalMessageError, match="^malformed JSON signal request$"):
        lm.parse_signal_request("{not json")
    with pytest.raises(lm.SignalMessageError, match="^signal request is larger than 16 bytes$"):
        lm.parse_signal_request(b"\x00" * 17, max_bytes=16)
    with pytest.raises(lm.SignalMessageError, match="^signal request must be bytes or str, not int$"):
        lm.parse_signal_request(5)  # type: ignore[arg-type]
    err = pytest.raises(lm.SignalMessageError, lm.parse_signal_request, b"\xff")
    assert isinstance(err.value, ValueError)
