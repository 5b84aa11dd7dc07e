"""The Twirp RoomService across a cluster: any node answers for every room (docs/CLUSTER.md).

``ListRooms`` asks every live node for its own rooms and lists each room once; ``CreateRoom`` for a new room goes
to the node the selector picks; every other call goes to the room's owner. A call for another node travels on the
cluster bus (control/cluster/bus.py, kind ``room_service``) with the caller's token, which the owner verifies again
and serves with its own RoomManager (:func:`execute`); a Twirp error comes back as its code and message.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from google.protobuf.message import Message
from livekit.protocol import room as room_pb

from control.auth import AuthError, Claims, verify_token
from control.cluster.bus import NodeUnavailable
from control.cluster.node import ClusterNode
from control.rtc.rooms import RoomManager
from control.service.twirp import METHODS, RESPONSES, Router, TwirpError


def make_router(cluster: ClusterNode, manager: RoomManager) -> Router:
    """The router ``control.service.twirp`` calls, and the bus handler that serves other nodes' calls here."""

    async def serve(body: dict[str, Any]) -> dict[str, Any]:
        return await execute(manager, body["method"], body["token"], base64.b64decode(body["request"]))

    cluster.handlers["room_service"] = serve

    async def remote(node_id: str, method: str, message: Message, token: str) -> Message:
        body = {"method": method, "token": token, "request": base64.b64encode(message.SerializeToString()).decode()}
        try:
            answer = await cluster.bus.call(node_id, "room_service", body)
        except NodeUnavailable as exc:
            raise TwirpError("unavailable", str(exc)) from None
        if "code" in answer:
            raise TwirpError(answer["code"], answer.get("msg", ""))
        if "error" in answer:
            raise TwirpError("internal", answer["error"])
        reply = RESPONSES[method]()
        reply.ParseFromString(base64.b64decode(answer["response"]))
        return reply

    async def route(claims: Claims, method: str, message: Any, token: str) -> Message:
        function = METHODS[method][1]
        if method == "ListRooms":
            return await list_rooms(cluster, manager, claims, message, token, remote)
        room = message.name if method == "CreateRoom" else message.room
        owner = await (cluster.place(room) if method == "CreateRoom" else cluster.owner(room))
        if owner is None or owner == cluster.id:
            return await function(manager, claims, message)
        return await remote(owner, method, message, token)

    return route


async def list_rooms(cluster: ClusterNode, manager: RoomManager, claims: Claims, message: room_pb.ListRoomsRequest,
                     token: str, remote: Any) -> Message:
    """Every live node's rooms, each once (a node that does not answer is left out)."""
    local = METHODS["ListRooms"][1]
    node_ids = [node.id for node in await cluster.nodes()]
    if cluster.id not in node_ids:
        node_ids.append(cluster.id)
    calls = [local(manager, claims, message) if node_id == cluster.id else remote(node_id, "ListRooms", message, token)
             for node_id in node_ids]
    seen: dict[str, Any] = {}
    for answer in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(answer, room_pb.ListRoomsResponse):
            for room in answer.rooms:
                seen.setdefault(room.name, room)
    return room_pb.ListRoomsResponse(rooms=list(seen.values()))


async def execute(manager: RoomManager, method: str, token: str, request: bytes) -> dict[str, Any]:
    """A call forwarded by another node, served by this node's RoomManager: ``{response}`` or ``{code, msg}``."""
    try:
        claims = verify_token(token, manager.settings.keys)
        request_type, function = METHODS[method]
        message = request_type()
        message.ParseFromString(request)
        reply = await function(manager, claims, message)
    except AuthError as exc:
        return {"code": "unauthenticated", "msg": exc.reason}
    except TwirpError as exc:
        return {"code": exc.code, "msg": exc.msg}
    return {"response": base64.b64encode(reply.SerializeToString()).decode()}
