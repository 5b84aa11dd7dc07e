"""LiveKit's server API: the Twirp ``livekit.RoomService`` on the control HTTP port.

``POST /twirp/livekit.RoomService/<Method>`` with a binary protobuf body (``application/protobuf``, the Python
``livekit-api``) or proto3 JSON (``application/json``, the Node server SDK); the answer uses the request's
encoding. Auth is a Bearer JWT signed with an API secret: CreateRoom/DeleteRoom need ``roomCreate``, ListRooms
``roomList``, every other method ``roomAdmin`` for the request's room (docs/PROTOCOL.md, Server API). Errors are Twirp
JSON ``{"code", "msg"}`` with ``Content-Type: application/json`` and Twirp's HTTP status codes. The services this
server does not implement (Egress, Ingress, SIP, AgentDispatchService) answer every method with Twirp's
``unimplemented`` (HTTP 501) naming the service, so that a LiveKit SDK reports a clear error. In a cluster the
calls go to the room's node (control/service/twirp_cluster.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import models, rtc
from livekit.protocol import room as room_pb

from control.auth import AuthError, Claims, token_from_request, verify_token
from control.rtc.participant import Participant
from control.rtc.rooms import JoinRefused, Room, RoomManager
from control.service.keys import MANAGER_KEY

log = logging.getLogger("control.service.twirp")

PREFIX = "/twirp/livekit.RoomService/"
STATUS = {"invalid_argument": 400, "malformed": 400, "unauthenticated": 401, "permission_denied": 403,
          "not_found": 404, "bad_route": 404, "failed_precondition": 412, "resource_exhausted": 429, "internal": 500,
          "unimplemented": 501, "unavailable": 503}
UNIMPLEMENTED_SERVICES = ("livekit.Egress", "livekit.Ingress", "livekit.SIP", "livekit.AgentDispatchService")
MAX_BODY = 1 << 20


class TwirpError(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def error_response(code: str, msg: str) -> web.Response:
    body = json.dumps({"code": code, "msg": msg, "meta": {}})
    return web.Response(status=STATUS.get(code, 500), body=body.encode(), headers={"Content-Type": "application/json"})


Handler = Callable[[RoomManager, Claims, Any], Awaitable[Message]]


def _grant_check(claims: Claims, method: str, room: str) -> None:
    g = claims.grants
    if method in ("CreateRoom", "DeleteRoom"):
        if not g.room_create:
            raise TwirpError("unauthenticated", "permissions denied: roomCreate grant required")
    elif method == "ListRooms":
        if not g.room_list:
            raise TwirpError("unauthenticated", "permissions denied: roomList grant required")
    elif not g.room_admin or g.room != room:
        raise TwirpError("unauthenticated", f"permissions denied: roomAdmin grant for room {room!r} required")


def _room(manager: RoomManager, name: str) -> Room:
    room = manager.rooms.get(name)
    if room is None or room.closed:
        raise TwirpError("not_found", f"room {name!r} does not exist")
    return room


def _participant(manager: RoomManager, name: str, identity: str) -> tuple[Room, Participant]:
    room = _room(manager, name)
    p = room.participants.get(identity)
    if p is None:
        raise TwirpError("not_found", f"participant {identity!r} is not in room {name!r}")
    return room, p


async def create_room(manager: RoomManager, claims: Claims, req: room_pb.CreateRoomRequest) -> Message:
    if not req.name:
        raise TwirpError("invalid_argument", "room name must not be empty")
    try:
        room = await manager.create_room(req.name, metadata=req.metadata, max_participants=req.max_participants,
                                         empty_timeout=req.empty_timeout, departure_timeout=req.departure_timeout)
    except JoinRefused as exc:  # max_rooms_per_node
        raise TwirpError("resource_exhausted", exc.reason) from None
    return room.info()


async def list_rooms(manager: RoomManager, claims: Claims, req: room_pb.ListRoomsRequest) -> Message:
    names = set(req.names)
    rooms = [r.info() for r in manager.rooms.values() if not r.closed and (not names or r.name in names)]
    return room_pb.ListRoomsResponse(rooms=rooms)


async def delete_room(manager: RoomManager, claims: Claims, req: room_pb.DeleteRoomRequest) -> Message:
    if not await manager.delete_room(req.room):
        raise TwirpError("not_found", f"room {req.room!r} does not exist")
    return room_pb.DeleteRoomResponse()


async def list_participants(manager: RoomManager, claims: Claims, req: room_pb.ListParticipantsRequest) -> Message:
    room = _room(manager, req.room)
    return room_pb.ListParticipantsResponse(participants=[p.info() for p in room.participants.values()])


async def get_participant(manager: RoomManager, claims: Claims, req: room_pb.RoomParticipantIdentity) -> Message:
    _, p = _participant(manager, req.room, req.identity)
    info: models.ParticipantInfo = p.info()
    return info


async def remove_participant(manager: RoomManager, claims: Claims, req: room_pb.RoomParticipantIdentity) -> Message:
    room, p = _participant(manager, req.room, req.identity)
    await room.remove_participant(p)
    return room_pb.RemoveParticipantResponse()


async def mute_published_track(manager: RoomManager, claims: Claims, req: room_pb.MuteRoomTrackRequest) -> Message:
    room, p = _participant(manager, req.room, req.identity)
    if req.track_sid not in p.publications:
        raise TwirpError("not_found", f"track {req.track_sid!r} is not published by {req.identity!r}")
    if not req.muted and not manager.settings.enable_remote_unmute:
        raise TwirpError("failed_precondition", "remote unmute not enabled")  # LiveKit's ErrRemoteUnmuteNoteEnabled
    track = await room.admin_mute(p, req.track_sid, req.muted)
    return room_pb.MuteRoomTrackResponse(track=track)


async def update_participant(manager: RoomManager, claims: Claims, req: room_pb.UpdateParticipantRequest) -> Message:
    room, p = _participant(manager, req.room, req.identity)
    permission = req.permission if req.HasField("permission") else None
    return await room.update_participant(p, name=req.name, metadata=req.metadata, attributes=dict(req.attributes),
                                   permission=permission)


async def update_subscriptions(manager: RoomManager, claims: Claims,
                               req: room_pb.UpdateSubscriptionsRequest) -> Message:
    room, p = _participant(manager, req.room, req.identity)
    room.handle_subscription(p, rtc.UpdateSubscription(track_sids=list(req.track_sids), subscribe=req.subscribe,
                                                       participant_tracks=list(req.participant_tracks)))
    return room_pb.UpdateSubscriptionsResponse()


async def send_data(manager: RoomManager, claims: Claims, req: room_pb.SendDataRequest) -> Message:
    room = _room(manager, req.room)
    room.send_server_data(req.data, reliable=req.kind == models.DataPacket.Kind.RELIABLE,
                          destinations=list(req.destination_identities), topic=req.topic)
    return room_pb.SendDataResponse()


async def update_room_metadata(manager: RoomManager, claims: Claims,
                               req: room_pb.UpdateRoomMetadataRequest) -> Message:
    return _room(manager, req.room).set_metadata(req.metadata)


# What each method answers (a call forwarded to another node of a cluster is decoded with it).
RESPONSES: dict[str, type[Message]] = {
    "CreateRoom": models.Room, "ListRooms": room_pb.ListRoomsResponse, "DeleteRoom": room_pb.DeleteRoomResponse,
    "ListParticipants": room_pb.ListParticipantsResponse, "GetParticipant": models.ParticipantInfo,
    "RemoveParticipant": room_pb.RemoveParticipantResponse, "MutePublishedTrack": room_pb.MuteRoomTrackResponse,
    "UpdateParticipant": models.ParticipantInfo, "UpdateSubscriptions": room_pb.UpdateSubscriptionsResponse,
    "SendData": room_pb.SendDataResponse, "UpdateRoomMetadata": models.Room,
}

METHODS: dict[str, tuple[type[Message], Handler]] = {
    "CreateRoom": (room_pb.CreateRoomRequest, create_room),
    "ListRooms": (room_pb.ListRoomsRequest, list_rooms),
    "DeleteRoom": (room_pb.DeleteRoomRequest, delete_room),
    "ListParticipants": (room_pb.ListParticipantsRequest, list_participants),
    "GetParticipant": (room_pb.RoomParticipantIdentity, get_participant),
    "RemoveParticipant": (room_pb.RoomParticipantIdentity, remove_participant),
    "MutePublishedTrack": (room_pb.MuteRoomTrackRequest, mute_published_track),
    "UpdateParticipant": (room_pb.UpdateParticipantRequest, update_participant),
    "UpdateSubscriptions": (room_pb.UpdateSubscriptionsRequest, update_subscriptions),
    "SendData": (room_pb.SendDataRequest, send_data),
    "UpdateRoomMetadata": (room_pb.UpdateRoomMetadataRequest, update_room_metadata),
}


def add_routes(app: web.Application) -> None:
    """Adds ``POST /twirp/livekit.RoomService/{method}`` for the RoomService methods above, served by the
    application's RoomManager (``MANAGER_KEY``)."""
    app.router.add_post(PREFIX + "{method}", twirp_handler)
    app.router.add_post("/twirp/{service}/{method}", other_service_handler)


async def other_service_handler(request: web.Request) -> web.Response:
    """Every Twirp service but RoomService: ``unimplemented`` for LiveKit's others, ``bad_route`` for the rest."""
    service = request.match_info["service"]
    if service in UNIMPLEMENTED_SERVICES:
        return error_response("unimplemented", f"{service} is not implemented by this server")
    return error_response("bad_route", f"no Twirp service {service!r}")


# In a cluster (control/service/twirp_cluster.py): (claims, method, request, token) -> the answer, wherever the
# room lives; without it every call is served by this node's RoomManager.
Router = Callable[[Claims, str, Any, str], Awaitable[Message]]
ROUTER_KEY = web.AppKey("room_service_router", Router)


async def twirp_handler(request: web.Request) -> web.Response:
    return await handle(request, request.app[MANAGER_KEY])


async def handle(request: web.Request, manager: RoomManager) -> web.Response:
    method = request.match_info["method"]
    entry = METHODS.get(method)
    if entry is None:
        return error_response("bad_route", f"no RoomService method {method!r}")
    content_type = request.content_type
    if content_type not in ("application/protobuf", "application/json"):
        return error_response("bad_route", f"unexpected Content-Type {content_type!r}")
    request_type, function = entry
    try:
        token = token_from_request(request.headers, {})
        claims = verify_token(token, manager.settings.keys)
    except AuthError as exc:
        return error_response("unauthenticated", exc.reason)
    body = await request.read()
    if len(body) > MAX_BODY:
        return error_response("malformed", f"request body is larger than {MAX_BODY} bytes")
    message = request_type()
    try:
        if content_type == "application/json":
            json_format.Parse(body.decode() or "{}", message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
        return error_response("malformed", f"cannot decode {request_type.__name__}: {exc}")
    try:
        _grant_check(claims, method, getattr(message, "room", "") or getattr(message, "name", ""))
        router = request.app.get(ROUTER_KEY)
        reply = await (router(claims, method, message, token) if router is not None
                       else function(manager, claims, message))
    except TwirpError as exc:
        return error_response(exc.code, exc.msg)
    except Exception as exc:
        log.exception("RoomService.%s failed", method)
        return error_response("internal", f"{type(exc).__name__}: {exc}")
    if content_type == "application/json":
        text = json_format.MessageToJson(reply, preserving_proto_field_name=False)
        return web.Response(body=text.encode(), headers={"Content-Type": "application/json"})
    return web.Response(body=reply.SerializeToString(), headers={"Content-Type": "application/protobuf"})
