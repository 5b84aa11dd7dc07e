"""The LiveKit HTTP/WebSocket surface over a real aiohttp server on loopback, with a fake worker and SDP layer.

Checks token refusal before any upgrade (and the reasons /rtc/validate gives), the 404 + CORS answers that make
SDKs fall back from /rtc/v1, binary protobuf framing, JoinResponse as the first frame, ping/pong, resumes (attached or
declined) and leave.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from livekit.protocol import models, rtc
from test_rooms import FakeNegotiator, FakePool  # tests/control is on sys.path (rootdir-relative imports)

from control.app import add_livekit
from control.auth import create_token
from control.rtc.rooms import RoomManager, RoomSettings
from control.service.keys import MANAGER_KEY
from control.service.signaling import client_params

KEY, SECRET = "devkey", "secret-secret-secret-secret-secret"


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    # departure_timeout 0: a room closes with its last leave (tests/control/test_lifecycle.py covers the wait)
    manager = RoomManager(FakePool(1), FakeNegotiator(), RoomSettings(keys={KEY: SECRET}, departure_timeout=0))
    app = web.Application()
    add_livekit(app, manager)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


def token(identity: str = "alice", room: str = "r1", **kw: object) -> str:
    return create_token(KEY, SECRET, identity=identity, room=room, **kw)  # type: ignore[arg-type]


async def read(ws: aiohttp.ClientWebSocketResponse) -> rtc.SignalResponse:
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.BINARY, msg
    return rtc.SignalResponse.FromString(msg.data)


async def read_until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> rtc.SignalResponse:
    for _ in range(20):
        response = await read(ws)
        if response.WhichOneof("message") == kind:
            return response
    raise AssertionError(f"no {kind} within 20 frames")


async def test_validate_success_and_reasons(client: TestClient) -> None:
    ok = await client.get("/rtc/validate", params={"access_token": token()})
    assert ok.status == 200 and await ok.text() == "success"
    bearer = await client.get("/rtc/validate", headers={"Authorization": f"Bearer {token()}"})
    assert bearer.status == 200
    bad = token()[:-2] + ("AA" if not token().endswith("AA") else "BB")
    resp = await client.get("/rtc/validate", params={"access_token": bad})
    assert resp.status == 401 and await resp.text() == "invalid token signature"
    expired = create_token(KEY, SECRET, identity="a", room="r1", ttl_s=1, now=time.time() - 3600)
    resp = await client.get("/rtc/validate", params={"access_token": expired})
    assert resp.status == 401 and await resp.text() == "token expired"
    no_join = token(grants={"roomJoin": False})
    resp = await client.get("/rtc/validate", params={"access_token": no_join})
    assert resp.status == 401 and await resp.text() == "token has no roomJoin grant"
    resp = await client.get("/rtc/validate")
    assert resp.status == 401 and await resp.text() == "no token"


async def test_validate_says_where_a_present_participants_transports_ended(client: TestClient) -> None:
    absent = await client.get("/rtc/validate", params={"access_token": token("alice")})
    assert absent.status == 200 and "X-Mediarouter-Path" not in absent.headers  # not in the room: LiveKit's answer
    ws = await client.ws_connect("/rtc", params={"access_token": token("alice")})
    await read(ws)
    manager: RoomManager = client.app[MANAGER_KEY]
    alice = manager.rooms["r1"].participants["alice"]
    resp = await client.get("/rtc/validate", params={"access_token": token("alice")})
    assert resp.status == 200 and await resp.text() == "success"
    assert resp.headers["X-Mediarouter-Path"] == "pub=connecting, sub=connecting"
    alice.on_tuple(alice.sub_transport_id, "192.0.2.10", 41022, "tcp")
    alice.note_remote_candidate("candidate:1 1 udp 16777215 203.0.113.5 3479 typ relay raddr 0.0.0.0 rport 0")
    alice.on_tuple(alice.pub_transport_id, "203.0.113.5", 3479, "udp")
    resp = await client.get("/rtc/validate", params={"access_token": token("alice")})
    assert resp.headers["X-Mediarouter-Path"] == "pub=relay 203.0.113.5:3479, sub=tcp 192.0.2.10:41022"
    assert resp.headers["Access-Control-Expose-Headers"] == "X-Mediarouter-Path"  # a browser may read it
    other = await client.get("/rtc/validate", params={"access_token": token("bob")})
    assert "X-Mediarouter-Path" not in other.headers  # only the holder's own transports
    await ws.close()


async def test_v1_paths_are_404_with_cors(client: TestClient) -> None:
    for path in ("/rtc/v1", "/rtc/v1/validate"):
        resp = await client.get(path, params={"access_token": token()})
        assert resp.status == 404
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "requested room does not exist" not in await resp.text()
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await client.ws_connect("/rtc/v1", headers={"Authorization": f"Bearer {token()}"})
    assert exc.value.status == 404


async def test_refused_tokens_are_not_upgraded(client: TestClient) -> None:
    expired = create_token(KEY, SECRET, identity="a", room="r1", ttl_s=1, now=time.time() - 3600)
    for bad, status in ((expired, 401), (token(grants={"roomJoin": False}), 401), ("x.y.z", 401)):
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await client.ws_connect("/rtc", params={"access_token": bad})
        assert exc.value.status == status


async def test_join_ping_and_leave(client: TestClient) -> None:
    ws = await client.ws_connect("/rtc", headers={"Authorization": f"Bearer {token()}"},
                                 params={"protocol": "17", "sdk": "python", "auto_subscribe": "1"})
    first = await read(ws)
    assert first.WhichOneof("message") == "join"
    assert first.join.participant.identity == "alice" and first.join.participant.sid.startswith("PA_")
    offer = await read_until(ws, "offer")
    assert offer.offer.type == "offer" and offer.offer.id == 1
    await ws.send_bytes(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=1234, rtt=5)).SerializeToString())
    pong = await read_until(ws, "pong_resp")
    assert pong.pong_resp.last_ping_timestamp == 1234 and pong.pong_resp.timestamp > 0
    await ws.send_bytes(rtc.SignalRequest(ping=99).SerializeToString())
    legacy = await read_until(ws, "pong")
    assert legacy.pong > 1_600_000_000_000  # server Unix time in ms
    manager: RoomManager = client.app[MANAGER_KEY]
    assert "alice" in manager.rooms["r1"].participants
    leave = rtc.LeaveRequest(reason=models.DisconnectReason.CLIENT_INITIATED)
    await ws.send_bytes(rtc.SignalRequest(leave=leave).SerializeToString())
    closing = await ws.receive(timeout=5)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert "r1" not in manager.rooms
    await ws.close()


@pytest.mark.parametrize(("offer", "expected"), [
    (15, "permessage-deflate; server_no_context_takeover"),  # a browser's offer: the server adds the parameter
    (0, None),                                                # no offer: no extension
])
async def test_deflate_is_accepted_without_server_context_takeover(client: TestClient, offer: int,
                                                                   expected: str | None) -> None:
    """Every message is compressed on its own (RFC 7692 section 7.1.1.1: the server says so even when not asked),
    and the session runs on it: aiohttp's client then inflates each message with a fresh context."""
    ws = await client.ws_connect("/rtc", headers={"Authorization": f"Bearer {token()}"}, compress=offer,
                                 params={"protocol": "17", "sdk": "js", "auto_subscribe": "1"})
    extensions = ws._response.headers.get("Sec-WebSocket-Extensions")  # the upgrade's 101 response
    assert extensions == expected
    assert (await read(ws)).WhichOneof("message") == "join"
    assert (await read_until(ws, "offer")).offer.id == 1
    await ws.close()


async def test_a_client_asking_for_no_server_takeover_gets_it_once(client: TestClient) -> None:
    offer = "permessage-deflate; server_no_context_takeover; client_max_window_bits"
    ws = await client.ws_connect("/rtc", headers={"Authorization": f"Bearer {token()}",
                                                  "Sec-WebSocket-Extensions": offer},
                                 params={"protocol": "17", "sdk": "js", "auto_subscribe": "1"})
    extensions = ws._response.headers.get("Sec-WebSocket-Extensions")
    assert extensions is not None and extensions.count("server_no_context_takeover") == 1
    assert (await read(ws)).WhichOneof("message") == "join"
    await ws.close()


async def test_second_client_gets_update_and_closed_socket_starts_grace(client: TestClient) -> None:
    ws_a = await client.ws_connect("/rtc", params={"access_token": token("alice")})
    assert (await read(ws_a)).WhichOneof("message") == "join"
    ws_b = await client.ws_connect("/rtc", params={"access_token": token("bob")})
    join_b = await read(ws_b)
    assert [p.identity for p in join_b.join.other_participants] == ["alice"]
    for _ in range(10):  # alice also gets her own JOINED info first
        update = await read_until(ws_a, "update")
        if update.update.participants[0].identity == "bob":
            break
    assert update.update.participants[0].identity == "bob"
    assert update.update.participants[0].state == models.ParticipantInfo.State.JOINED
    await ws_b.close()
    manager: RoomManager = client.app[MANAGER_KEY]
    bob = manager.rooms["r1"].participants["bob"]
    for _ in range(100):
        if bob._grace is not None:
            break
        await asyncio.sleep(0.01)
    assert bob._grace is not None and not bob.closed  # kept for the grace period
    await ws_a.close()


async def test_resume_attaches_the_live_session(client: TestClient) -> None:
    ws_a = await client.ws_connect("/rtc", params={"access_token": token("alice")})
    await read(ws_a)
    ws = await client.ws_connect("/rtc", params={"access_token": token("bob")})
    join = (await read(ws)).join
    first_offer = (await read_until(ws, "offer")).offer
    await ws.close()
    manager: RoomManager = client.app[MANAGER_KEY]
    bob = manager.rooms["r1"].participants["bob"]
    for _ in range(100):
        if bob._grace is not None:
            break
        await asyncio.sleep(0.01)
    ws = await client.ws_connect("/rtc", params={"access_token": token("bob"), "reconnect": "1",
                                                 "sid": join.participant.sid})
    first = await read(ws)
    assert first.WhichOneof("message") == "reconnect"
    assert first.reconnect.server_info.version == "1.9.0"
    update = await read(ws)
    assert [p.identity for p in update.update.participants] == ["bob", "alice"]
    assert update.update.participants[0].sid == join.participant.sid
    assert (await read(ws)).WhichOneof("message") == "room_update"
    offer = (await read_until(ws, "offer")).offer
    assert offer.id == first_offer.id + 1  # an ICE-restart offer with new credentials
    assert ("restart_ice", bob.sub_transport_id) == manager.rooms["r1"].media.calls[-1][:2]  # type: ignore[attr-defined]
    assert bob._grace is None and manager.rooms["r1"].participants["bob"] is bob
    # a stale sid is declined: the client must rejoin from scratch
    stale = await client.ws_connect("/rtc", params={"access_token": token("bob"), "reconnect": "1",
                                                    "sid": "PA_stale"})
    assert (await read(stale)).leave.action == rtc.LeaveRequest.Action.RECONNECT
    await stale.close()
    await ws.close()
    await ws_a.close()


async def test_resume_is_declined_with_reconnect(client: TestClient) -> None:
    ws = await client.ws_connect("/rtc", params={"access_token": token(), "reconnect": "1", "sid": "PA_x"})
    first = await read(ws)
    assert first.WhichOneof("message") == "leave"
    assert first.leave.action == rtc.LeaveRequest.Action.RECONNECT
    assert first.leave.reason == models.DisconnectReason.STATE_MISMATCH
    await ws.close()


async def test_bad_frames_do_not_end_the_session(client: TestClient) -> None:
    ws = await client.ws_connect("/rtc", params={"access_token": token()})
    await read(ws)
    await ws.send_bytes(b"\xff\xff\xff\xff")
    await ws.send_bytes(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=7)).SerializeToString())
    assert (await read_until(ws, "pong_resp")).pong_resp.last_ping_timestamp == 7
    await ws.close()


def test_client_params_defaults() -> None:
    assert client_params({}).auto_subscribe is True
    params = client_params({"auto_subscribe": "0", "protocol": "17", "client_protocol": "x", "reconnect": "1"})
    assert not params.auto_subscribe and params.protocol == 17 and params.client_protocol == 0
    assert params.reconnect


# ------------------------------------------------------------------------ Twirp RoomService (livekit-api client)


async def test_room_service_with_livekit_api(client: TestClient) -> None:
    from livekit import api
    from test_rooms import Client, claims, settle

    manager: RoomManager = client.app[MANAGER_KEY]
    url = str(client.make_url("/")).rstrip("/")
    lkapi = api.LiveKitAPI(url, KEY, SECRET)
    try:
        created = await lkapi.room.create_room(api.CreateRoomRequest(name="api-room", metadata="m1"))
        assert created.sid.startswith("RM_") and created.name == "api-room" and created.metadata == "m1"
        listed = await lkapi.room.list_rooms(api.ListRoomsRequest())
        assert [r.name for r in listed.rooms] == ["api-room"]
        alice = Client()
        bob = Client()
        _, a = await manager.join(claims("alice", "api-room"), client_params({}), alice)
        await manager.join(claims("bob", "api-room"), client_params({}), bob)
        people = await lkapi.room.list_participants(api.ListParticipantsRequest(room="api-room"))
        assert sorted(p.identity for p in people.participants) == ["alice", "bob"]
        info = await lkapi.room.update_participant(api.UpdateParticipantRequest(
            room="api-room", identity="alice", metadata="hello", attributes={"k": "v"}))
        assert info.metadata == "hello" and dict(info.attributes) == {"k": "v"}
        assert bob.updates_for(a.sid)[-1].metadata == "hello"
        await lkapi.room.send_data(api.SendDataRequest(room="api-room", data=b"ping", kind=0,
                                                       destination_identities=["bob"], topic="t"))
        await settle()
        sent = manager.rooms["api-room"].media.sent  # type: ignore[attr-defined]
        assert len(sent) == 1 and sent[0][0].endswith(".sub") and sent[0][1] == "_reliable"
        assert models.DataPacket.FromString(sent[0][2]).user.payload == b"ping"
        room_info = await lkapi.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="api-room",
                                                                                          metadata="m2"))
        assert room_info.metadata == "m2" and alice.of("room_update")[-1].room.metadata == "m2"
        await lkapi.room.remove_participant(api.RoomParticipantIdentity(room="api-room", identity="bob"))
        assert bob.of("leave")[-1].reason == models.DisconnectReason.PARTICIPANT_REMOVED and bob.closed
        with pytest.raises(api.TwirpError) as missing:
            await lkapi.room.get_participant(api.RoomParticipantIdentity(room="api-room", identity="bob"))
        assert missing.value.code == "not_found"
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="api-room"))
        assert alice.of("leave")[-1].reason == models.DisconnectReason.ROOM_DELETED
        assert "api-room" not in manager.rooms
    finally:
        await lkapi.aclose()


async def test_room_service_json_and_refusals(client: TestClient) -> None:
    admin = create_token(KEY, SECRET, identity="svc", room="r9", grants={"roomAdmin": True, "roomJoin": False})
    url = "/twirp/livekit.RoomService/ListParticipants"
    resp = await client.post(url, data=b'{"room": "r9"}', headers={"Content-Type": "application/json",
                                                                     "Authorization": f"Bearer {admin}"})
    assert resp.status == 404 and resp.headers["Content-Type"] == "application/json"
    assert (await resp.json())["code"] == "not_found"
    resp = await client.post("/twirp/livekit.RoomService/ListRooms", data=b"{}",
                             headers={"Content-Type": "application/json", "Authorization": f"Bearer {admin}"})
    assert resp.status == 401 and "roomList" in (await resp.json())["msg"]
    other = create_token(KEY, SECRET, identity="svc", room="elsewhere", grants={"roomAdmin": True})
    resp = await client.post(url, data=b'{"room": "r9"}', headers={"Content-Type": "application/json",
                                                                     "Authorization": f"Bearer {other}"})
    assert resp.status == 401
    resp = await client.post(url, data=b'{"room": "r9"}', headers={"Content-Type": "application/json"})
    assert resp.status == 401 and (await resp.json())["msg"] == "no token"
    resp = await client.post("/twirp/livekit.RoomService/Nope", data=b"{}",
                             headers={"Content-Type": "application/json", "Authorization": f"Bearer {admin}"})
    assert resp.status == 404 and (await resp.json())["code"] == "bad_route"
    lister = create_token(KEY, SECRET, identity="svc", room="", grants={"roomList": True, "roomJoin": False})
    resp = await client.post("/twirp/livekit.RoomService/ListRooms", data=b"{}",
                             headers={"Content-Type": "application/json", "Authorization": f"Bearer {lister}"})
    assert resp.status == 200 and await resp.json() == {}


async def test_revoked_publish_permission_unpublishes_and_room_limit(client: TestClient) -> None:
    from livekit import api
    from test_rooms import Client, claims, publish, settle

    manager: RoomManager = client.app[MANAGER_KEY]
    url = str(client.make_url("/")).rstrip("/")
    lkapi = api.LiveKitAPI(url, KEY, SECRET)
    try:
        await lkapi.room.create_room(api.CreateRoomRequest(name="small", max_participants=2))
        alice, bob = Client(), Client()
        room, a = await manager.join(claims("alice", "small"), client_params({}), alice)
        _, b = await manager.join(claims("bob", "small"), client_params({}), bob)
        await settle()
        await b.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
        track_sid = await publish(room, a, "mic-1")
        await settle()
        assert track_sid in bob.of("offer")[-1].sdp
        # G7: the room is full; a third identity is refused before any upgrade, validate says why
        resp = await client.get("/rtc/validate", params={"access_token": token("carol", "small")})
        assert resp.status == 403 and await resp.text() == "room has exceeded its max participants"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/rtc", params={"access_token": token("carol", "small")})
        assert refused.value.status == 403
        # G5: revoking canPublish unpublishes alice's track for everyone
        info = await lkapi.room.update_participant(api.UpdateParticipantRequest(
            room="small", identity="alice", permission=models.ParticipantPermission(can_subscribe=True)))
        assert list(info.tracks) == [] and not info.permission.can_publish
        assert [m.track_sid for m in alice.of("track_unpublished")] == [track_sid]
        assert bob.updates_for(a.sid)[-1].tracks == []
        await b.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
        await settle()
        assert track_sid not in bob.of("offer")[-1].sdp
        await room.handle_add_track(a, rtc.AddTrackRequest(cid="again", type=models.TrackType.AUDIO))
        assert alice.of("request_response")[-1].reason == rtc.RequestResponse.Reason.NOT_ALLOWED
    finally:
        await lkapi.aclose()


async def test_simulate_scenarios(client: TestClient) -> None:
    manager: RoomManager = client.app[MANAGER_KEY]
    ws = await client.ws_connect("/rtc", params={"access_token": token("alice")})
    join = (await read(ws)).join
    drop = rtc.SimulateScenario(disconnect_signal_on_resume_no_messages=True)
    await ws.send_bytes(rtc.SignalRequest(simulate=drop).SerializeToString())
    await ws.send_bytes(rtc.SignalRequest(ping=1).SerializeToString())
    await read_until(ws, "pong")
    await ws.close()
    resumed = await client.ws_connect("/rtc", params={"access_token": token("alice"), "reconnect": "1",
                                                      "sid": join.participant.sid})
    closing = await resumed.receive(timeout=5)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)  # dropped without a message
    alice = manager.rooms["r1"].participants["alice"]
    assert alice.sid == join.participant.sid and not alice.closed
    again = await client.ws_connect("/rtc", params={"access_token": token("alice"), "reconnect": "1",
                                                    "sid": join.participant.sid})
    assert (await read(again)).WhichOneof("message") == "reconnect"  # the next resume works
    full = rtc.SimulateScenario(leave_request_full_reconnect=True)
    await again.send_bytes(rtc.SignalRequest(simulate=full).SerializeToString())
    leave = (await read_until(again, "leave")).leave
    assert leave.action == rtc.LeaveRequest.Action.RECONNECT
    assert "r1" not in manager.rooms and alice.closed
    await again.close()


async def test_update_own_metadata_permission_and_limits(client: TestClient) -> None:
    ws = await client.ws_connect("/rtc", params={"access_token": token("alice")})
    await read(ws)
    await ws.send_bytes(rtc.SignalRequest(update_metadata=rtc.UpdateParticipantMetadata(
        metadata="m", request_id=3)).SerializeToString())
    refused = (await read_until(ws, "request_response")).request_response
    assert refused.reason == rtc.RequestResponse.Reason.NOT_ALLOWED and refused.request_id == 3
    await ws.close()
    ws = await client.ws_connect("/rtc", params={"access_token": token("bob", grants={"canUpdateOwnMetadata": True})})
    await read(ws)
    await ws.send_bytes(rtc.SignalRequest(update_metadata=rtc.UpdateParticipantMetadata(
        metadata="x" * (512 * 1024 + 1), request_id=4)).SerializeToString())
    too_big = (await read_until(ws, "request_response")).request_response
    assert too_big.reason == rtc.RequestResponse.Reason.LIMIT_EXCEEDED and too_big.request_id == 4
    await ws.send_bytes(rtc.SignalRequest(update_metadata=rtc.UpdateParticipantMetadata(
        metadata="fine", attributes={"a": "1"}, request_id=5)).SerializeToString())
    for _ in range(10):
        update = (await read_until(ws, "update")).update.participants[0]
        if update.metadata == "fine":
            break
    assert update.identity == "bob" and update.metadata == "fine" and dict(update.attributes) == {"a": "1"}
    await ws.close()


async def test_failed_resume_becomes_full_reconnect_and_old_session_expires(client: TestClient) -> None:
    manager: RoomManager = client.app[MANAGER_KEY]
    ws = await client.ws_connect("/rtc", params={"access_token": token("alice")})
    join = (await read(ws)).join
    await ws.close()
    room = manager.rooms["r1"]
    alice = room.participants["alice"]
    room.media.fail_restart = True  # type: ignore[attr-defined]
    resumed = await client.ws_connect("/rtc", params={"access_token": token("alice"), "reconnect": "1",
                                                      "sid": join.participant.sid})
    kinds = []
    for _ in range(5):
        msg = await resumed.receive(timeout=5)
        if msg.type != aiohttp.WSMsgType.BINARY:
            break
        kinds.append(rtc.SignalResponse.FromString(msg.data))
    leave = [k.leave for k in kinds if k.WhichOneof("message") == "leave"]
    assert leave and leave[-1].action == rtc.LeaveRequest.Action.RECONNECT
    assert alice._grace is not None and not alice.closed
    await resumed.close()
