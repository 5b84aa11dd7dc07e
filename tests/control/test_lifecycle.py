"""Room lifecycle as LiveKit has it (control/rtc/lifecycle.py), over the Twirp API with ``livekit-api`` and a fake
worker: an unjoined CreateRoom'd room closes after its ``empty_timeout``, a room outlives its last participant by
``departure_timeout`` and keeps its metadata, ``max_participants`` refuses the extra join with LiveKit's error, the
refresh token comes again every ``refresh_interval_s``, a remote unmute needs ``enable_remote_unmute``, and the
Twirp services this server lacks answer ``unimplemented``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from livekit import api
from livekit.protocol import models
from test_rooms import Client, FakeNegotiator, FakePool, claims, publish  # tests/control is on sys.path

from control.app import add_livekit
from control.auth import create_token, verify_token
from control.rtc.participant import ClientParams
from control.rtc.rooms import RoomManager, RoomSettings
from control.service.keys import MANAGER_KEY
from tests.conftest import wait_for

KEY, SECRET = "devkey", "secret-secret-secret-secret-secret"
pytestmark = pytest.mark.timeout(30)

Serve = Callable[..., Awaitable[tuple[TestClient, api.LiveKitAPI]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts the LiveKit surface over a fake worker with the given room settings; yields (client, LiveKitAPI)."""
    opened: list[tuple[TestClient, api.LiveKitAPI]] = []

    async def start(**settings: object) -> tuple[TestClient, api.LiveKitAPI]:
        manager = RoomManager(FakePool(1), FakeNegotiator(), RoomSettings(keys={KEY: SECRET}, **settings))
        app = web.Application()
        add_livekit(app, manager)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        lkapi = api.LiveKitAPI(str(client.make_url("/")).rstrip("/"), KEY, SECRET)
        opened.append((client, lkapi))
        return client, lkapi

    yield start
    for client, lkapi in opened:
        await lkapi.aclose()
        await client.close()


async def names(lkapi: api.LiveKitAPI) -> list[str]:
    return [r.name for r in (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms]


async def test_unjoined_room_closes_after_its_empty_timeout(serve: Serve) -> None:
    client, lkapi = await serve()
    manager: RoomManager = client.app[MANAGER_KEY]
    created = await lkapi.room.create_room(api.CreateRoomRequest(name="lobby", empty_timeout=1))
    assert created.empty_timeout == 1 and created.departure_timeout == 20
    assert await names(lkapi) == ["lobby"]
    await asyncio.sleep(0.5)
    assert await names(lkapi) == ["lobby"]  # not before its timeout
    assert await wait_for(lambda: "lobby" not in manager.rooms, 3.0)
    assert await names(lkapi) == []
    assert ("close_router", created.sid) in manager.pool.workers[0].calls  # type: ignore[attr-defined]


async def test_room_outlives_its_last_participant_by_departure_timeout_with_its_metadata(serve: Serve) -> None:
    client, lkapi = await serve()
    manager: RoomManager = client.app[MANAGER_KEY]
    created = await lkapi.room.create_room(api.CreateRoomRequest(name="talk", metadata="agenda", departure_timeout=1,
                                                                 max_participants=5))
    room, alice = await manager.join(claims("alice", "talk"), ClientParams(), Client())
    await room.remove(alice, models.DisconnectReason.CLIENT_INITIATED)
    await asyncio.sleep(0.5)
    listed = (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms
    assert [(r.sid, r.metadata, r.max_participants, r.num_participants) for r in listed] == [
        (created.sid, "agenda", 5, 0)]
    # somebody comes back within the timeout: the same room, its metadata kept, and the countdown stopped
    bob_client = Client()
    again, bob = await manager.join(claims("bob", "talk"), ClientParams(), bob_client)
    assert again is room and bob_client.messages[0].join.room.metadata == "agenda"
    await asyncio.sleep(1.2)
    assert manager.rooms.get("talk") is room
    await room.remove(bob, models.DisconnectReason.CLIENT_INITIATED)
    assert await wait_for(lambda: "talk" not in manager.rooms, 3.0)
    assert room.closed


async def test_max_participants_refuses_the_extra_join_with_livekits_error(serve: Serve) -> None:
    client, lkapi = await serve()
    await lkapi.room.create_room(api.CreateRoomRequest(name="duo", max_participants=1))
    alice = await client.ws_connect("/rtc", params={"access_token": create_token(KEY, SECRET, identity="alice",
                                                                                 room="duo")})
    await alice.receive(timeout=5)  # JoinResponse
    bob_token = create_token(KEY, SECRET, identity="bob", room="duo")
    resp = await client.get("/rtc/validate", params={"access_token": bob_token})
    assert resp.status == 403 and await resp.text() == "room has exceeded its max participants"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/rtc", params={"access_token": bob_token})
    assert refused.value.status == 403
    await alice.close()


async def test_refresh_token_is_sent_again_every_interval() -> None:
    manager = RoomManager(FakePool(1), FakeNegotiator(), RoomSettings(keys={KEY: SECRET}, refresh_interval_s=0.2))
    sink = Client()
    room, p = await manager.join(claims("alice"), ClientParams(), sink)
    assert await wait_for(lambda: len(sink.of("refresh_token")) >= 3, 3.0)
    tokens = sink.of("refresh_token")
    assert all(verify_token(t, {KEY: SECRET}).identity == "alice" for t in tokens)
    await room.remove(p, models.DisconnectReason.CLIENT_INITIATED)
    count = len(sink.of("refresh_token"))
    await asyncio.sleep(0.5)
    assert len(sink.of("refresh_token")) == count  # none after the session ended
    await manager.close()


@pytest.mark.parametrize("enabled", [False, True])
async def test_remote_unmute_needs_enable_remote_unmute(serve: Serve, enabled: bool) -> None:
    client, lkapi = await serve(enable_remote_unmute=enabled)
    manager: RoomManager = client.app[MANAGER_KEY]
    sink = Client()
    room, alice = await manager.join(claims("alice"), ClientParams(), sink)
    track_sid = await publish(room, alice, "mic")
    request = api.MuteRoomTrackRequest(room="r1", identity="alice", track_sid=track_sid, muted=True)
    assert (await lkapi.room.mute_published_track(request)).track.muted
    request.muted = False
    if enabled:
        assert not (await lkapi.room.mute_published_track(request)).track.muted
        assert not sink.of("mute")[-1].muted
    else:
        with pytest.raises(api.TwirpError) as refused:
            await lkapi.room.mute_published_track(request)
        assert (refused.value.code, refused.value.status) == ("failed_precondition", 412)
        assert alice.publications[track_sid].info.muted and sink.of("mute")[-1].muted


@pytest.mark.parametrize("service", ["livekit.Egress", "livekit.Ingress", "livekit.SIP",
                                     "livekit.AgentDispatchService"])
async def test_services_not_implemented_answer_twirp_unimplemented(serve: Serve, service: str) -> None:
    client, _ = await serve()
    resp = await client.post(f"/twirp/{service}/AnyMethod", data=b"{}", headers={"Content-Type": "application/json"})
    assert resp.status == 501 and resp.headers["Content-Type"] == "application/json"
    body = await resp.json()
    assert body["code"] == "unimplemented" and service in body["msg"]


async def test_sdk_egress_call_reports_unimplemented(serve: Serve) -> None:
    _, lkapi = await serve()
    with pytest.raises(api.TwirpError) as refused:
        await lkapi.egress.list_egress(api.ListEgressRequest())
    assert refused.value.code == "unimplemented" and "livekit.Egress" in refused.value.message
