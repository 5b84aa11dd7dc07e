"""Pure builders for the LiveKit signal messages the server sends, and the decoder for what clients send.

Owns the shape of every `livekit.SignalResponse` mediarouter emits on the `/rtc` WebSocket and the checks
that keep LiveKit clients from crashing on them (docs/PROTOCOL.md, Mistakes that crash clients):
`PA_`/`TR_`/`RM_` sids, ping interval/timeout > 0, a server version >= 1.8.0, complete ParticipantInfo,
trickle candidates in the `RTCIceCandidateInit` JSON form (W3C WebRTC §4.8.1.3) with a string `sdpMid`
and an integer `sdpMLineIndex`, never an end-of-candidates trickle. The messages are the protobufs of
`livekit-protocol` (`livekit_rtc.proto`, `livekit_models.proto`); nothing here touches a socket or state.

Every builder returns a `SignalResponse` (call `SerializeToString()` and send it as one binary frame) or,
for the nested objects, the protobuf message itself. Bad input raises ValueError with the reason.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import models, rtc

from control.auth import COMPACT_JSON

SERVER_PROTOCOL = 16
MIN_SERVER_VERSION = (1, 8, 0)
MAX_SIGNAL_REQUEST_BYTES = 2 * 1024 * 1024
MAX_IDENTITY_LENGTH = 256

PARTICIPANT_PREFIX = "PA_"
TRACK_PREFIX = "TR_"
ROOM_PREFIX = "RM_"
SID_LENGTH = 12
#: shortuuid's base-57 alphabet (no 0/1/I/O/l), as LiveKit's guid package uses.
SID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_SID_BASE = len(SID_ALPHABET)
_SID_SPACE = _SID_BASE**SID_LENGTH

_SVC_CODECS = frozenset({"vp9", "av1"})
_CODEC_NAMES = {
    "vp8": "VP8",
    "vp9": "VP9",
    "h264": "H264",
    "h265": "H265",
    "av1": "AV1",
    "opus": "opus",
    "red": "red",
    "pcmu": "PCMU",
    "pcma": "PCMA",
}
_ICE_URL = re.compile(r"^(stun|stuns|turn|turns):\S+$")
_MIME = re.compile(r"^(audio|video)/[A-Za-z0-9._-]+$")


class SignalMessageError(ValueError):
    """A client signal frame could not be decoded; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- ids ------------------------------------------------------------------------------------------


def new_sid(prefix: str) -> str:
    """`prefix` + 12 random characters of the base-57 alphabet (about 70 bits)."""
    # One draw below 57**12, written in base 57 (uniform like 12 independent choices, one call into the OS's
    # random source instead of 12: those were 1 % of control's samples under ``bench join``).
    n = secrets.randbelow(_SID_SPACE)
    chars = []
    for _ in range(SID_LENGTH):
        n, i = divmod(n, _SID_BASE)
        chars.append(SID_ALPHABET[i])
    return prefix + "".join(chars)


def new_participant_sid() -> str:
    return new_sid(PARTICIPANT_PREFIX)


def new_track_sid() -> str:
    return new_sid(TRACK_PREFIX)


def new_room_sid() -> str:
    return new_sid(ROOM_PREFIX)


def _check_sid(sid: str, prefix: str, what: str) -> None:
    if not isinstance(sid, str) or not sid.startswith(prefix) or len(sid) <= len(prefix):
        raise ValueError(f"{what} sid {sid!r} must start with {prefix} and not be empty after it")


def _check_enum(enum: Any, value: int, what: str) -> None:
    try:
        enum.Name(value)
    except ValueError:
        raise ValueError(f"unknown {what} {value!r}") from None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- room, participant and track info -------------------------------------------------------------


def room_info(
    *,
    sid: str,
    name: str,
    creation_time_ms: int,
    metadata: str = "",
    empty_timeout: int = 300,
    departure_timeout: int = 20,
    max_participants: int = 0,
    num_participants: int = 0,
    num_publishers: int = 0,
    active_recording: bool = False,
    enabled_codecs: Sequence[str] = (),
) -> models.Room:
    """`livekit.Room` as sent in JoinResponse and RoomUpdate."""
    _check_sid(sid, ROOM_PREFIX, "room")
    if not name:
        raise ValueError("room name must not be empty")
    if creation_time_ms <= 0:
        raise ValueError("creation_time_ms must be positive")
    for count, what in ((num_participants, "num_participants"), (num_publishers, "num_publishers")):
        if count < 0:
            raise ValueError(f"{what} must not be negative")
    return models.Room(
        sid=sid,
        name=name,
        metadata=metadata,
        empty_timeout=empty_timeout,
        departure_timeout=departure_timeout,
        max_participants=max_participants,
        creation_time=creation_time_ms // 1000,
        creation_time_ms=creation_time_ms,
        num_participants=num_participants,
        num_publishers=num_publishers,
        active_recording=active_recording,
        enabled_codecs=[models.Codec(mime=_check_mime(m)) for m in enabled_codecs],
    )


def participant_info(
    *,
    sid: str,
    identity: str,
    joined_at_ms: int,
    permission: models.ParticipantPermission,
    name: str = "",
    state: int = models.ParticipantInfo.State.JOINING,
    tracks: Sequence[models.TrackInfo] = (),
    metadata: str = "",
    attributes: Mapping[str, str] | None = None,
    kind: int = models.ParticipantInfo.Kind.STANDARD,
    version: int = 1,
    region: str = "",
    client_protocol: int = 0,
    capabilities: Iterable[int] = (),
    disconnect_reason: int = models.DisconnectReason.UNKNOWN_REASON,
    is_publisher: bool | None = None,
) -> models.ParticipantInfo:
    """A full `livekit.ParticipantInfo` (clients treat tracks missing from it as unpublished)."""
    _check_sid(sid, PARTICIPANT_PREFIX, "participant")
    if not identity:
        raise ValueError("participant identity must not be empty")
    if len(identity) > MAX_IDENTITY_LENGTH:
        raise ValueError(f"participant identity is longer than {MAX_IDENTITY_LENGTH} characters")
    if joined_at_ms <= 0:
        raise ValueError("joined_at_ms must be positive")
    if version < 0:
        raise ValueError("participant version must not be negative")
    _check_enum(models.ParticipantInfo.State, state, "participant state")
    _check_enum(models.ParticipantInfo.Kind, kind, "participant kind")
    _check_enum(models.DisconnectReason, disconnect_reason, "disconnect reason")
    for track in tracks:
        _check_track(track)
    _check_unique([t.sid for t in tracks], "track")
    info = models.ParticipantInfo(
        sid=sid,
        identity=identity,
        name=name,
        state=state,
        tracks=list(tracks),
        metadata=metadata,
        attributes=dict(attributes or {}),
        kind=kind,
        joined_at=joined_at_ms // 1000,
        joined_at_ms=joined_at_ms,
        version=version,
        region=region,
        client_protocol=client_protocol,
        capabilities=list(capabilities),
        disconnect_reason=disconnect_reason,
        is_publisher=bool(tracks) if is_publisher is None else is_publisher,
    )
    info.permission.CopyFrom(permission)
    return info


def disconnected(info: models.ParticipantInfo, reason: int) -> models.ParticipantInfo:
    """A copy of `info` in state DISCONNECTED with `reason` and the next version, sent once to the others."""
    _check_enum(models.DisconnectReason, reason, "disconnect reason")
    out = models.ParticipantInfo()
    out.CopyFrom(info)
    out.state = models.ParticipantInfo.State.DISCONNECTED
    out.disconnect_reason = reason
    out.version = info.version + 1
    return out


def mime_type_for(track_type: int, codec: str) -> str:
    """LiveKit mime type of an AddTrackRequest codec name ("vp8" -> "video/VP8", "opus" -> "audio/opus")."""
    if track_type == models.TrackType.AUDIO:
        kind = "audio"
    elif track_type == models.TrackType.VIDEO:
        kind = "video"
    else:
        raise ValueError(f"unsupported track type {_type_name(track_type)}")
    name = codec.split("/", 1)[1] if "/" in codec else codec
    if not name:
        raise ValueError("codec name must not be empty")
    return f"{kind}/{_CODEC_NAMES.get(name.lower(), name)}"


def _type_name(track_type: int) -> str:
    try:
        return str(models.TrackType.Name(track_type))
    except ValueError:
        return str(track_type)


def _check_mime(mime: str) -> str:
    if not _MIME.match(mime):
        raise ValueError(f"codec mime type {mime!r} must look like 'audio/opus' or 'video/VP8'")
    return mime


def _is_svc(mime: str) -> bool:
    return mime.rsplit("/", 1)[-1].lower() in _SVC_CODECS


def _sorted_layers(layers: Iterable[models.VideoLayer]) -> list[models.VideoLayer]:
    return sorted((_copy_layer(layer) for layer in layers), key=lambda layer: layer.quality)


def _copy_layer(layer: models.VideoLayer) -> models.VideoLayer:
    out = models.VideoLayer()
    out.CopyFrom(layer)
    return out


def track_info(
    req: rtc.AddTrackRequest,
    *,
    sid: str | None = None,
    enabled_codecs: Sequence[str] = (),
    mime_type: str = "",
    mid: str = "",
    now_us: int | None = None,
) -> models.TrackInfo:
    """The `livekit.TrackInfo` for an AddTrackRequest (docs/PROTOCOL.md, Publishing, step 2).

    `enabled_codecs` (mime types) drops requested codecs that are not enabled and substitutes the first
    enabled one of the track's kind when none of the requested ones is. Raises ValueError for a DATA or
    unknown track type (answer with RequestResponse UNSUPPORTED_TYPE) or a request without `cid`.
    """
    if req.type not in (models.TrackType.AUDIO, models.TrackType.VIDEO):
        raise ValueError(f"unsupported track type {_type_name(req.type)}")
    if not req.cid:
        raise ValueError("add_track request has no cid")
    sid = new_track_sid() if sid is None else sid
    _check_sid(sid, TRACK_PREFIX, "track")
    is_video = req.type == models.TrackType.VIDEO
    kind_prefix = "video/" if is_video else "audio/"
    enabled = [_check_mime(m) for m in enabled_codecs]
    enabled_of_kind = [m for m in enabled if m.lower().startswith(kind_prefix)]
    req_layers = _sorted_layers(req.layers) if is_video else []

    codecs: list[models.SimulcastCodecInfo] = []
    for sc in req.simulcast_codecs:
        if not sc.codec:
            continue
        mime = mime_type_for(req.type, sc.codec)
        if enabled and mime.lower() not in {m.lower() for m in enabled_of_kind}:
            continue
        if any(c.mime_type.lower() == mime.lower() for c in codecs):
            continue
        codecs.append(_codec_info(mime, sc.cid or req.cid, sc, req_layers, is_video))
    if not codecs and req.simulcast_codecs and enabled_of_kind:
        first = req.simulcast_codecs[0]
        codecs.append(_codec_info(enabled_of_kind[0], first.cid or req.cid, first, req_layers, is_video))
    if not codecs:
        codecs.append(models.SimulcastCodecInfo(mime_type="", cid=req.cid, layers=req_layers))

    primary = codecs[0]
    primary_layers = list(primary.layers) or req_layers
    features = list(req.audio_features)
    if req.stereo:
        features.append(models.AudioTrackFeature.TF_STEREO)
    if req.disable_dtx:
        features.append(models.AudioTrackFeature.TF_NO_DTX)
    source = req.source
    if req.stream:
        stream = req.stream
    elif source in (models.TrackSource.SCREEN_SHARE, models.TrackSource.SCREEN_SHARE_AUDIO):
        stream = "screen"
    else:
        stream = "camera"
    info = models.TrackInfo(
        sid=sid,
        type=req.type,
        name=req.name,
        source=source,
        muted=req.muted,
        width=req.width,
        height=req.height,
        layers=req_layers,
        codecs=codecs,
        simulcast=is_video and len(primary_layers) > 1 and not _is_svc(primary.mime_type),
        mime_type=_check_mime(mime_type) if mime_type else "",
        mid=mid,
        stereo=req.stereo,
        disable_dtx=req.disable_dtx,
        disable_red=req.disable_red,
        encryption=req.encryption,
        stream=stream,
        audio_features=list(dict.fromkeys(features)),
        backup_codec_policy=req.backup_codec_policy,
    )
    info.version.unix_micro = time.time_ns() // 1000 if now_us is None else now_us
    return info


def _codec_info(
    mime: str,
    cid: str,
    sc: rtc.SimulcastCodec,
    req_layers: list[models.VideoLayer],
    is_video: bool,
) -> models.SimulcastCodecInfo:
    layers = (_sorted_layers(sc.layers) or [_copy_layer(x) for x in req_layers]) if is_video else []
    mode = sc.video_layer_mode
    if is_video and mode == models.VideoLayer.Mode.MODE_UNUSED:
        mode = (
            models.VideoLayer.Mode.MULTIPLE_SPATIAL_LAYERS_PER_STREAM
            if _is_svc(mime)
            else models.VideoLayer.Mode.ONE_SPATIAL_LAYER_PER_STREAM
        )
    return models.SimulcastCodecInfo(mime_type=mime, cid=cid, layers=layers, video_layer_mode=mode)


def _check_track(track: models.TrackInfo) -> None:
    _check_sid(track.sid, TRACK_PREFIX, "track")
    if track.type not in (models.TrackType.AUDIO, models.TrackType.VIDEO):
        raise ValueError(f"track {track.sid} has unsupported type {_type_name(track.type)}")


def _check_unique(sids: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for sid in sids:
        if sid in seen:
            raise ValueError(f"duplicate {what} sid {sid}")
        seen.add(sid)


def _check_participant(info: models.ParticipantInfo) -> None:
    _check_sid(info.sid, PARTICIPANT_PREFIX, "participant")
    if not info.identity:
        raise ValueError(f"participant {info.sid} has no identity")
    for track in info.tracks:
        _check_track(track)
    _check_unique([t.sid for t in info.tracks], "track")


# --- join ---------------------------------------------------------------------------------------


def _parse_version(version: str) -> tuple[int, ...]:
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    if not match:
        raise ValueError(f"server_version {version!r} must be a version string >= 1.8.0")
    return tuple(int(part or 0) for part in match.groups())


def server_info(
    *, server_version: str, node_id: str, region: str, protocol: int = SERVER_PROTOCOL
) -> models.ServerInfo:
    """`livekit.ServerInfo`; JS refuses an empty version and disables RPC below 1.8.0."""
    if _parse_version(server_version) < MIN_SERVER_VERSION:
        raise ValueError(f"server_version {server_version!r} must be a version string >= 1.8.0")
    if protocol <= 0:
        raise ValueError("server protocol must be positive")
    return models.ServerInfo(
        edition=models.ServerInfo.Edition.Standard,
        version=server_version,
        protocol=protocol,
        region=region,
        node_id=node_id,
    )


def ice_server(urls: Sequence[str], username: str = "", credential: str = "") -> rtc.ICEServer:
    """`livekit.ICEServer`; urls must be stun:, stuns:, turn: or turns: URIs (RFC 7064, RFC 7065)."""
    if isinstance(urls, str) or not urls:
        raise ValueError("ice server needs a non-empty list of urls")
    for url in urls:
        if not _ICE_URL.match(url):
            raise ValueError(f"ice server url {url!r} must be a stun:, stuns:, turn: or turns: URI")
    if any(u.startswith("turn") for u in urls) and not (username and credential):
        raise ValueError("turn servers need a username and a credential")
    return rtc.ICEServer(urls=list(urls), username=username, credential=credential)


def join_response(
    room: models.Room,
    participant: models.ParticipantInfo,
    other_participants: Sequence[models.ParticipantInfo],
    *,
    server_version: str,
    node_id: str,
    region: str,
    ping_interval: int = 5,
    ping_timeout: int = 15,
    subscriber_primary: bool = True,
    fast_publish: bool | None = None,
    enabled_publish_codecs: Sequence[str] = (),
    ice_servers: Sequence[rtc.ICEServer] = (),
    protocol: int = SERVER_PROTOCOL,
    client_configuration: models.ClientConfiguration | None = None,
) -> rtc.SignalResponse:
    """The first message on a new signal connection (docs/PROTOCOL.md, Join).

    `fast_publish` defaults to the participant's canPublish. Hidden participants must not be listed in
    `other_participants`.
    """
    _check_sid(room.sid, ROOM_PREFIX, "room")
    if not room.name:
        raise ValueError("room name must not be empty")
    _check_participant(participant)
    if not participant.HasField("permission"):
        raise ValueError(f"participant {participant.sid} has no permission")
    if participant.state == models.ParticipantInfo.State.DISCONNECTED:
        raise ValueError("the joining participant must not be DISCONNECTED")
    if ping_interval <= 0 or ping_timeout <= 0:
        raise ValueError("ping_interval and ping_timeout must be positive (clients panic or disconnect on 0)")
    if ping_timeout <= ping_interval:
        raise ValueError("ping_timeout must be longer than ping_interval")
    for other in other_participants:
        _check_participant(other)
        if other.sid == participant.sid:
            raise ValueError(f"participant {other.sid} must not be listed among the other participants")
        if other.permission.hidden:
            raise ValueError(f"hidden participant {other.sid} must not be listed to others")
        if other.state == models.ParticipantInfo.State.DISCONNECTED:
            raise ValueError(f"disconnected participant {other.sid} must not be listed")
    _check_unique([p.sid for p in other_participants], "participant")
    info = server_info(server_version=server_version, node_id=node_id, region=region, protocol=protocol)
    join = rtc.JoinResponse(
        room=room,
        participant=participant,
        other_participants=list(other_participants),
        server_version=server_version,
        server_region=region,
        server_info=info,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        subscriber_primary=subscriber_primary,
        fast_publish=participant.permission.can_publish if fast_publish is None else fast_publish,
        enabled_publish_codecs=[models.Codec(mime=_check_mime(m)) for m in enabled_publish_codecs],
        ice_servers=list(ice_servers),
    )
    if client_configuration is not None:
        join.client_configuration.CopyFrom(client_configuration)
    return rtc.SignalResponse(join=join)


_OTHERS_FIELD = rtc.JoinResponse.DESCRIPTOR.fields_by_name["other_participants"].number
_JOIN_FIELD = rtc.SignalResponse.DESCRIPTOR.fields_by_name["join"].number


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def listed_participant(info: models.ParticipantInfo) -> bytes:
    """``info`` checked and encoded as one entry of JoinResponse.other_participants (tag, length, message): a
    participant's entry is built once per change and reused by every JoinResponse that lists it."""
    _check_participant(info)
    if info.permission.hidden:
        raise ValueError(f"hidden participant {info.sid} must not be listed to others")
    if info.state == models.ParticipantInfo.State.DISCONNECTED:
        raise ValueError(f"disconnected participant {info.sid} must not be listed")
    data = info.SerializeToString()
    return _varint(_OTHERS_FIELD << 3 | 2) + _varint(len(data)) + data


def join_response_head(room: models.Room, participant: models.ParticipantInfo, listed_bytes: int,
                       **kwargs: Any) -> bytes:
    """The encoded SignalResponse of :func:`join_response` up to its other participants, whose entries
    (``listed_bytes`` of :func:`listed_participant` outputs, distinct participants other than ``participant``)
    follow it: the same message without copying and encoding every other participant's info again for each
    newcomer (a repeated field's entries may follow the message's other fields, Protocol Buffers encoding)."""
    own = join_response(room, participant, [], **kwargs).join.SerializeToString()
    return _varint(_JOIN_FIELD << 3 | 2) + _varint(len(own) + listed_bytes) + own


def reconnect(
    *,
    server_version: str,
    node_id: str,
    region: str,
    last_message_seq: int = 0,
    ice_servers: Sequence[rtc.ICEServer] = (),
    protocol: int = SERVER_PROTOCOL,
    client_configuration: models.ClientConfiguration | None = None,
) -> rtc.SignalResponse:
    """ReconnectResponse, the first message of an accepted resume (docs/PROTOCOL.md, Resume)."""
    if last_message_seq < 0:
        raise ValueError("last_message_seq must not be negative")
    resp = rtc.ReconnectResponse(
        ice_servers=list(ice_servers),
        server_info=server_info(
            server_version=server_version, node_id=node_id, region=region, protocol=protocol
        ),
        last_message_seq=last_message_seq,
    )
    if client_configuration is not None:
        resp.client_configuration.CopyFrom(client_configuration)
    return rtc.SignalResponse(reconnect=resp)


# --- state updates ---------------------------------------------------------------------------


def participant_update(
    participants: Sequence[models.ParticipantInfo],
    *,
    last_versions: Mapping[str, int] | None = None,
) -> rtc.SignalResponse:
    """ParticipantUpdate with full ParticipantInfo. With `last_versions` ({sid: version} last sent to this
    client), a version going backwards is refused: JS drops such updates."""
    if not participants:
        raise ValueError("participant update needs at least one participant")
    for info in participants:
        _check_participant(info)
        if last_versions is not None and info.version < last_versions.get(info.sid, 0):
            raise ValueError(
                f"participant {info.sid} version {info.version} is older than {last_versions[info.sid]}"
            )
    _check_unique([p.sid for p in participants], "participant")
    return rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=list(participants)))


def room_update(room: models.Room) -> rtc.SignalResponse:
    _check_sid(room.sid, ROOM_PREFIX, "room")
    return rtc.SignalResponse(room_update=rtc.RoomUpdate(room=room))


def speakers_changed(speakers: Sequence[models.SpeakerInfo | tuple[str, float, bool]]) -> rtc.SignalResponse:
    """SpeakersChanged with the speakers whose level changed (silent ones as level 0, active False)."""
    if not speakers:
        raise ValueError("speakers_changed needs at least one speaker")
    out: list[models.SpeakerInfo] = []
    for speaker in speakers:
        if isinstance(speaker, tuple):
            sid, level, active = speaker
            speaker = models.SpeakerInfo(sid=sid, level=level, active=active)
        _check_sid(speaker.sid, PARTICIPANT_PREFIX, "speaker")
        if not 0.0 <= speaker.level <= 1.0:
            raise ValueError(f"speaker {speaker.sid} level {speaker.level} must be within 0..1")
        out.append(speaker)
    _check_unique([s.sid for s in out], "speaker")
    return rtc.SignalResponse(speakers_changed=rtc.SpeakersChanged(speakers=out))


# --- tracks -------------------------------------------------------------------------------------


def connection_quality(infos: Sequence[rtc.ConnectionQualityInfo]) -> rtc.SignalResponse:
    """ConnectionQualityUpdate: the quality (and MOS score, 1.0-4.5) of some participants."""
    if not infos:
        raise ValueError("connection_quality needs at least one participant")
    for info in infos:
        _check_sid(info.participant_sid, PARTICIPANT_PREFIX, "connection quality")
        _check_enum(models.ConnectionQuality, info.quality, "connection quality")
        if not 1.0 <= info.score <= 4.5:
            raise ValueError(f"connection quality score {info.score} is not a MOS (1.0-4.5)")
    return rtc.SignalResponse(connection_quality=rtc.ConnectionQualityUpdate(updates=list(infos)))


def track_published(cid: str, track: models.TrackInfo) -> rtc.SignalResponse:
    """TrackPublishedResponse: `cid` is the AddTrackRequest's client track id."""
    if not cid:
        raise ValueError("track_published needs the request's cid")
    _check_track(track)
    return rtc.SignalResponse(track_published=rtc.TrackPublishedResponse(cid=cid, track=track))


def track_unpublished(track_sid: str) -> rtc.SignalResponse:
    _check_sid(track_sid, TRACK_PREFIX, "track")
    return rtc.SignalResponse(track_unpublished=rtc.TrackUnpublishedResponse(track_sid=track_sid))


def track_subscribed(track_sid: str) -> rtc.SignalResponse:
    _check_sid(track_sid, TRACK_PREFIX, "track")
    return rtc.SignalResponse(track_subscribed=rtc.TrackSubscribed(track_sid=track_sid))


def subscribed_quality_update(track_sid: str, codec: str, enabled: Sequence[tuple[int, bool]]) -> rtc.SignalResponse:
    """SubscribedQualityUpdate (dynacast, docs/PROTOCOL.md): which layers of a published video track anybody
    wants, as (quality, enabled) pairs. `codec` is the mime type or its subtype; LiveKit sends the subtype in lower
    case ("vp8"), which the SDKs compare with the codec they publish. `subscribed_qualities` repeats the layers for
    clients older than `subscribed_codecs`."""
    _check_sid(track_sid, TRACK_PREFIX, "track")
    name = codec.split("/")[-1].lower()
    if not name:
        raise ValueError("subscribed_quality_update needs a codec")
    qualities = []
    for quality, on in enabled:
        _check_enum(models.VideoQuality, quality, "video quality")
        if quality == models.VideoQuality.OFF:
            raise ValueError("OFF is not a layer")
        qualities.append(rtc.SubscribedQuality(quality=quality, enabled=on))
    update = rtc.SubscribedQualityUpdate(
        track_sid=track_sid,
        subscribed_qualities=qualities,
        subscribed_codecs=[rtc.SubscribedCodec(codec=name, qualities=qualities)],
    )
    return rtc.SignalResponse(subscribed_quality_update=update)


def stream_state_update(participant_sid: str, track_sid: str, paused: bool) -> rtc.SignalResponse:
    """StreamStateUpdate for one subscribed track: the server paused it (not even its lowest layer fits the
    subscriber's bandwidth) or resumed it. ``participant_sid`` is the publisher's, as LiveKit sends it."""
    _check_sid(participant_sid, PARTICIPANT_PREFIX, "participant")
    _check_sid(track_sid, TRACK_PREFIX, "track")
    state = rtc.StreamState.PAUSED if paused else rtc.StreamState.ACTIVE
    info = rtc.StreamStateInfo(participant_sid=participant_sid, track_sid=track_sid, state=state)
    return rtc.SignalResponse(stream_state_update=rtc.StreamStateUpdate(stream_states=[info]))


def mute(track_sid: str, muted: bool) -> rtc.SignalResponse:
    """Server-initiated (admin) mute of a published track."""
    _check_sid(track_sid, TRACK_PREFIX, "track")
    return rtc.SignalResponse(mute=rtc.MuteTrackRequest(sid=track_sid, muted=muted))


def subscription_response(track_sid: str, err: int) -> rtc.SignalResponse:
    """SubscriptionResponse for a failed subscription; `track_sid` is echoed as the client sent it."""
    if not track_sid:
        raise ValueError("subscription_response needs a track sid")
    _check_enum(models.SubscriptionError, err, "subscription error")
    return rtc.SignalResponse(subscription_response=rtc.SubscriptionResponse(track_sid=track_sid, err=err))


def request_response(
    reason: int,
    *,
    request_id: int = 0,
    message: str = "",
    add_track: rtc.AddTrackRequest | None = None,
    mute: rtc.MuteTrackRequest | None = None,
    update_metadata: rtc.UpdateParticipantMetadata | None = None,
    trickle: rtc.TrickleRequest | None = None,
) -> rtc.SignalResponse:
    """RequestResponse (e.g. NOT_ALLOWED for a refused add_track) carrying a copy of the request."""
    _check_enum(rtc.RequestResponse.Reason, reason, "request response reason")
    resp = rtc.RequestResponse(request_id=request_id, reason=reason, message=message)
    copies = {"add_track": add_track, "mute": mute, "update_metadata": update_metadata, "trickle": trickle}
    given = [(name, msg) for name, msg in copies.items() if msg is not None]
    if len(given) > 1:
        raise ValueError("request_response carries at most one request copy")
    for name, msg in given:
        getattr(resp, name).CopyFrom(msg)
    return rtc.SignalResponse(request_response=resp)


# --- negotiation ----------------------------------------------------------------------------


def _session_description(
    kind: str, sdp: str, offer_id: int, mid_to_track_id: Mapping[str, str] | None
) -> rtc.SessionDescription:
    if not sdp.startswith("v=0"):
        raise ValueError(f"{kind} sdp must start with 'v=0'")
    if not 0 <= offer_id <= 0xFFFFFFFF:
        raise ValueError(f"{kind} id {offer_id} must be a uint32")
    return rtc.SessionDescription(
        type=kind, sdp=sdp, id=offer_id, mid_to_track_id=dict(mid_to_track_id or {})
    )


def offer(sdp: str, offer_id: int, *, mid_to_track_id: Mapping[str, str] | None = None) -> rtc.SignalResponse:
    """Server offer for the client's subscriber PC, with the server's own increasing id."""
    return rtc.SignalResponse(offer=_session_description("offer", sdp, offer_id, mid_to_track_id))


def answer(
    sdp: str, offer_id: int, *, mid_to_track_id: Mapping[str, str] | None = None
) -> rtc.SignalResponse:
    """Answer to the client's publisher offer; `offer_id` echoes the offer's id (0 = no id)."""
    return rtc.SignalResponse(answer=_session_description("answer", sdp, offer_id, mid_to_track_id))


@dataclass(frozen=True)
class CandidateInit:
    """RTCIceCandidateInit as carried in `TrickleRequest.candidateInit`."""

    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None
    username_fragment: str | None = None

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "candidate": self.candidate,
            "sdpMid": self.sdp_mid,
            "sdpMLineIndex": self.sdp_mline_index,
        }
        if self.username_fragment is not None:
            body["usernameFragment"] = self.username_fragment
        return COMPACT_JSON.encode(body)


_TARGETS = (rtc.SignalTarget.PUBLISHER, rtc.SignalTarget.SUBSCRIBER)


def _check_target(target: int) -> None:
    if target not in _TARGETS:
        raise ValueError(f"trickle target {target!r} must be PUBLISHER (0) or SUBSCRIBER (1)")


def trickle(
    candidate: str,
    *,
    sdp_mid: str,
    sdp_mline_index: int,
    target: int,
    username_fragment: str | None = None,
    final: bool = False,
) -> rtc.SignalResponse:
    """A server ICE candidate for the client's publisher or subscriber PC.

    Rust clients panic unless `candidate`, a string `sdpMid` and an integer `sdpMLineIndex` are present,
    so all three are required and end-of-candidates (an empty candidate) is refused.
    """
    if not isinstance(candidate, str) or not candidate.startswith("candidate:") or len(candidate) <= 10:
        raise ValueError("trickle candidate must be a non-empty 'candidate:...' attribute value")
    if not isinstance(sdp_mid, str):
        raise ValueError("trickle sdpMid must be a string")
    if isinstance(sdp_mline_index, bool) or not isinstance(sdp_mline_index, int) or sdp_mline_index < 0:
        raise ValueError("trickle sdpMLineIndex must be a non-negative integer")
    _check_target(target)
    init = CandidateInit(candidate, sdp_mid, sdp_mline_index, username_fragment)
    return rtc.SignalResponse(
        trickle=rtc.TrickleRequest(candidateInit=init.to_json(), target=target, final=final)
    )


def parse_candidate_init(text: str) -> CandidateInit:
    """Decode a client's `candidateInit` JSON. An empty candidate (end of candidates) is returned as is."""
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise SignalMessageError("trickle candidateInit is not valid JSON") from exc
    if not isinstance(body, dict):
        raise SignalMessageError("trickle candidateInit must be a JSON object")
    candidate = body.get("candidate", "")
    sdp_mid = body.get("sdpMid")
    index = body.get("sdpMLineIndex")
    ufrag = body.get("usernameFragment")
    if not isinstance(candidate, str):
        raise SignalMessageError("trickle candidate must be a string")
    if sdp_mid is not None and not isinstance(sdp_mid, str):
        raise SignalMessageError("trickle sdpMid must be a string or null")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
        raise SignalMessageError("trickle sdpMLineIndex must be a non-negative integer or null")
    if ufrag is not None and not isinstance(ufrag, str):
        raise SignalMessageError("trickle usernameFragment must be a string or null")
    if candidate and sdp_mid is None and index is None:
        raise SignalMessageError("trickle candidate needs sdpMid or sdpMLineIndex")
    if candidate and not candidate.startswith("candidate:"):
        raise SignalMessageError("trickle candidate must start with 'candidate:'")
    return CandidateInit(candidate, sdp_mid, index, ufrag)


# --- keepalive, leave, token refresh -------------------------------------------------------------


def pong(now_ms: int | None = None) -> rtc.SignalResponse:
    """Answer to the legacy `ping`: the server's Unix time in milliseconds."""
    return rtc.SignalResponse(pong=_now_ms() if now_ms is None else now_ms)


def pong_resp(last_ping_timestamp: int, now_ms: int | None = None) -> rtc.SignalResponse:
    """Answer to `ping_req`: echo its timestamp and add the server's Unix time in milliseconds."""
    return rtc.SignalResponse(
        pong_resp=rtc.Pong(
            last_ping_timestamp=last_ping_timestamp, timestamp=_now_ms() if now_ms is None else now_ms
        )
    )


def leave(reason: int, action: int = rtc.LeaveRequest.Action.DISCONNECT) -> rtc.SignalResponse:
    """LeaveRequest from the server: DISCONNECT ends the session, RESUME/RECONNECT make the client retry."""
    _check_enum(models.DisconnectReason, reason, "disconnect reason")
    _check_enum(rtc.LeaveRequest.Action, action, "leave action")
    return rtc.SignalResponse(
        leave=rtc.LeaveRequest(
            reason=reason, action=action, can_reconnect=action != rtc.LeaveRequest.Action.DISCONNECT
        )
    )


def refresh_token(token: str) -> rtc.SignalResponse:
    if not token or token.count(".") != 2:
        raise ValueError("refresh_token needs a JWT")
    return rtc.SignalResponse(refresh_token=token)


# --- client frames --------------------------------------------------------------------------------


def parse_signal_request(
    data: bytes | bytearray | memoryview | str, *, max_bytes: int = MAX_SIGNAL_REQUEST_BYTES
) -> tuple[str, Message | int]:
    """Decode one client frame into (oneof case name, message); `ping` yields its int.

    Binary frames are protobuf; text frames are protobuf JSON (livekit-client can be set to send JSON).
    Raises SignalMessageError for oversized, undecodable or empty requests.
    """
    request = rtc.SignalRequest()
    if isinstance(data, str):
        if len(data.encode()) > max_bytes:
            raise SignalMessageError(f"signal request is larger than {max_bytes} bytes")
        try:
            json_format.Parse(data, request, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise SignalMessageError("malformed JSON signal request") from exc
    elif isinstance(data, bytes | bytearray | memoryview):
        if len(data) > max_bytes:
            raise SignalMessageError(f"signal request is larger than {max_bytes} bytes")
        try:
            request.ParseFromString(bytes(data))
        except DecodeError as exc:
            raise SignalMessageError("malformed signal request") from exc
    else:
        raise SignalMessageError(f"signal request must be bytes or str, not {type(data).__name__}")
    kind = request.WhichOneof("message")
    if kind is None:
        raise SignalMessageError("signal request carries no known message")
    return kind, getattr(request, kind)
