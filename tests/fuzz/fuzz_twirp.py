"""Fuzz target: Twirp request bodies (control/service/twirp.py ``handle``: protobuf or proto3 JSON decoding, then
each RoomService method) with an admin token for the room.

The first input byte picks the method (modulo the table) and the encoding (bit 7: JSON); the rest is the body.
Seeds are one valid body of each method in both encodings. Invariant: no exception and no answer 500 ``internal``
(the catch-all that logs the traceback); malformed bodies are 400 ``malformed``, unknown rooms 404.
"""

from __future__ import annotations

from google.protobuf import json_format
from livekit.protocol import room as room_pb

from control.auth import create_token
from control.service.twirp import METHODS, handle
from tests.fuzz import rooms
from tests.fuzz.rooms import KEY, ROOM, SECRET, Harness

NAMES = sorted(METHODS)
_h: Harness | None = None
_token = ""


def setup() -> None:
    global _h, _token
    if _h is None:
        _h = Harness()
        _token = create_token(KEY, SECRET, identity="admin", room=ROOM, ttl_s=10 * 365 * 86400,
                              grants={"roomAdmin": True, "roomCreate": True, "roomList": True, "room": ROOM})


def _bodies() -> dict[str, object]:
    return {
        "CreateRoom": room_pb.CreateRoomRequest(name="r2", max_participants=3, metadata="m"),
        "ListRooms": room_pb.ListRoomsRequest(names=[ROOM]),
        "DeleteRoom": room_pb.DeleteRoomRequest(room="r2"),
        "ListParticipants": room_pb.ListParticipantsRequest(room=ROOM),
        "GetParticipant": room_pb.RoomParticipantIdentity(room=ROOM, identity="alice"),
        "RemoveParticipant": room_pb.RoomParticipantIdentity(room=ROOM, identity="bob"),
        "MutePublishedTrack": room_pb.MuteRoomTrackRequest(room=ROOM, identity="alice", track_sid="TR_x", muted=True),
        "UpdateParticipant": room_pb.UpdateParticipantRequest(room=ROOM, identity="alice", metadata="x",
                                                              attributes={"k": "v"}),
        "UpdateSubscriptions": room_pb.UpdateSubscriptionsRequest(room=ROOM, identity="bob", track_sids=["TR_x"]),
        "SendData": room_pb.SendDataRequest(room=ROOM, data=b"hi", destination_identities=["bob"], topic="t"),
        "UpdateRoomMetadata": room_pb.UpdateRoomMetadataRequest(room=ROOM, metadata="meta"),
    }


def seeds() -> list[bytes]:
    out = []
    for name, body in _bodies().items():
        index = NAMES.index(name)
        out.append(bytes([index]) + body.SerializeToString())  # type: ignore[attr-defined]
        out.append(bytes([0x80 | index]) + json_format.MessageToJson(body).encode())  # type: ignore[arg-type]
    return out


class _Request:
    """What ``twirp.handle`` reads of an aiohttp request (``make_mocked_request`` costs 60 ms an input)."""

    def __init__(self, method: str, content_type: str, body: bytes) -> None:
        self.match_info = {"method": method}
        self.content_type = content_type
        self.headers = {"Content-Type": content_type, "Authorization": f"Bearer {_token}"}
        self._body = body
        self.app: dict[object, object] = {}  # one node: no cluster router (control/service/twirp.py ROUTER_KEY)

    async def read(self) -> bytes:
        return self._body


def check(data: bytes) -> None:
    setup()
    assert _h is not None
    selector = data[0] if data else 0
    method = NAMES[(selector & 0x7F) % len(NAMES)]
    content_type = "application/json" if selector & 0x80 else "application/protobuf"

    async def one() -> int:
        await _h.ensure()
        response = await handle(_Request(method, content_type, data[1:]), _h.manager)  # type: ignore[arg-type]
        await _h.settle()
        return response.status

    status = _h.run(one())
    _h.watch.check()
    assert status != 500, f"{method} answered 500"


def close() -> None:
    global _h
    if _h is not None:
        rooms.close(_h)
        _h = None
