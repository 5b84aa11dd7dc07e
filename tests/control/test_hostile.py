"""Hostile and careless clients against the signaling plane (issue 15's findings 2-6), each bounded and on
loopback with fake workers: non-finite token times, log lines per attack, signal flow control, limits and
placement of rooms created at once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from livekit.protocol import models, rtc
from test_rooms import (  # tests/control is on sys.path (rootdir-relative imports)
    FakeMedia,
    FakeNegotiator,
    FakePool,
    claims,
    joined,
    make_manager,
    publish,
)

from control.app import add_livekit
from control.auth import AuthError, verify_token
from control.rtc.rooms import JoinRefused, RoomManager, RoomSettings
from control.service.keys import MANAGER_KEY

KEY, SECRET = "devkey", "secret-secret-secret-secret-secret"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(times: dict[str, str], *, room: str = "r1", identity: str = "alice", admin: bool = False) -> str:
    """An HS256 token whose time claims are written verbatim into the JSON (``NaN``, ``1e400``...)."""
    video = {"roomJoin": True, "room": room, "roomAdmin": admin, "roomList": admin}
    now = int(time.time())
    claims = {"exp": str(now + 600), "nbf": str(now - 10)} | times
    body = ", ".join([f'"iss": "{KEY}"', f'"sub": "{identity}"', f'"video": {json.dumps(video)}',
                      *(f'"{k}": {v}' for k, v in claims.items())])
    signing = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(("{" + body + "}").encode())
    signature = hmac.new(SECRET.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + _b64(signature)


BAD_TIMES = [{"exp": "NaN"}, {"exp": "Infinity"}, {"exp": "1e400"}, {"exp": "-Infinity"}, {"nbf": "NaN"},
             {"nbf": "1e400"}, {"nbf": "-1e400"}, {"iat": "NaN"}, {"iat": "Infinity"}, {"exp": "1.5e9"},
             {"exp": "\"1900000000\""}, {"exp": "true"}, {"exp": "1e30"}]


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    manager = RoomManager(FakePool(2), FakeNegotiator(), RoomSettings(keys={KEY: SECRET}))
    app = web.Application()
    add_livekit(app, manager)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


@pytest.mark.parametrize("times", BAD_TIMES, ids=lambda t: ",".join(f"{k}={v}" for k, v in t.items()))
def test_token_times_must_be_finite_integers(times: dict[str, str]) -> None:
    with pytest.raises(AuthError) as exc:
        verify_token(raw_token(times), {KEY: SECRET})
    assert exc.value.status == 401
    assert next(iter(times)) in exc.value.reason


def test_integral_float_times_are_still_times() -> None:
    now = int(time.time())
    claims = verify_token(raw_token({"exp": f"{now + 600}.0", "iat": str(now)}), {KEY: SECRET})
    assert claims.expires_at == now + 600


async def test_non_finite_times_are_401_on_every_endpoint(client: TestClient) -> None:
    for times in ({"exp": "NaN"}, {"nbf": "Infinity"}, {"exp": "1e400"}, {"iat": "NaN"}):
        token = raw_token(times, admin=True)
        for path in ("/rtc/validate", "/rtc"):
            resp = await client.get(path, params={"access_token": token})
            assert resp.status == 401, (path, times)
            assert "claim" in await resp.text()
        twirp = await client.post("/twirp/livekit.RoomService/ListRooms", json={},
                                  headers={"Authorization": f"Bearer {token}"})
        assert twirp.status == 401, times
        body = await twirp.json()
        assert body["code"] == "unauthenticated" and "claim" in body["msg"]


# ------------------------------------------------------------------------------------- placement (6)


class SlowRouterMedia(FakeMedia):
    """A worker whose create_router takes a while, as a real one does (a request over ZeroMQ)."""

    async def create_router(self, router_id: str) -> None:
        await asyncio.sleep(0.02)
        await super().create_router(router_id)


async def test_rooms_created_at_once_spread_over_workers() -> None:
    pool = FakePool(2)
    pool.workers = [SlowRouterMedia(0), SlowRouterMedia(1)]
    manager = RoomManager(pool, FakeNegotiator(), RoomSettings(keys={KEY: SECRET}))
    rooms = await asyncio.gather(*(manager.create_room(f"room-{i}") for i in range(10)))
    per_worker = [sum(1 for r in rooms if r.worker_id == w) for w in (0, 1)]
    assert per_worker == [5, 5]
    assert manager.rooms_per_worker() == {0: 5, 1: 5}  # nothing left counted as in flight
    await manager.close()


# ------------------------------------------------------------------------------- flow control (2, 5)


def _bearer(identity: str, **grants: object) -> dict[str, str]:
    from control.auth import create_token
    return {"Authorization": f"Bearer {create_token(KEY, SECRET, identity=identity, room='r1', grants=grants)}"}


async def _frames(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[rtc.SignalResponse]:
    out: list[rtc.SignalResponse] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if msg.type != aiohttp.WSMsgType.BINARY:
            break
        out.append(rtc.SignalResponse.FromString(msg.data))
    return out


async def _ping_rtt(ws: aiohttp.ClientWebSocketResponse, stamp: int) -> float:
    start = time.perf_counter()
    await ws.send_bytes(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=stamp)).SerializeToString())
    while True:
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        resp = rtc.SignalResponse.FromString(msg.data)
        if resp.WhichOneof("message") == "pong_resp" and resp.pong_resp.last_ping_timestamp == stamp:
            return time.perf_counter() - start


async def test_metadata_burst_leaves_others_connected_and_responsive(client: TestClient) -> None:
    """Finding 2: 20,000 metadata updates in a burst from one participant. The others' sockets stay open and
    their pings, sent during and after the burst, are answered in under 100 ms (95 %, every one within 0.5 s); they
    see the sender's latest metadata; the sender hears LIMIT_EXCEEDED with the request ids of refused updates."""
    others = [await client.ws_connect("/rtc", headers=_bearer(f"o{i}")) for i in range(3)]
    for ws in others:
        await _frames(ws, 0.2)
    sender = await client.ws_connect("/rtc", headers=_bearer("chatty", canUpdateOwnMetadata=True))
    await _frames(sender, 0.2)

    async def burst() -> None:
        for i in range(20_000):
            req = rtc.UpdateParticipantMetadata(metadata=f"m{i}", request_id=i + 1)
            await sender.send_bytes(rtc.SignalRequest(update_metadata=req).SerializeToString())
            if i % 500 == 0:
                await asyncio.sleep(0)  # this process's pings go out during the burst, not only after it

    async def pings(ws: aiohttp.ClientWebSocketResponse, base: int) -> list[float]:
        rtts = []
        for n in range(8):
            rtts.append(await _ping_rtt(ws, base + n))
            await asyncio.sleep(0.05)
        return rtts

    _, *per_socket = await asyncio.gather(burst(), *(pings(ws, 1000 * (n + 1)) for n, ws in enumerate(others)))
    rtts = sorted(r for socket in per_socket for r in socket)
    # The bound (100 ms) on 95 % of the pings (measured: all of them within 36 ms on a loaded 2-core host);
    # the worst only has to stay far below the seconds the unthrottled burst cost (a loaded host may deschedule this
    # process for a moment: one 480 ms ping was seen at a load average of 10).
    assert rtts[int(len(rtts) * 0.95) - 1] < 0.1 and rtts[-1] < 0.5, rtts
    refused = [m.request_response for m in await _frames(sender, 1.0) if m.WhichOneof("message") ==
               "request_response"]
    assert refused and all(r.reason == rtc.RequestResponse.Reason.LIMIT_EXCEEDED for r in refused)
    assert refused[0].request_id > 1 and refused[0].update_metadata.metadata == f"m{refused[0].request_id - 1}"
    manager: RoomManager = client.app[MANAGER_KEY]
    for _ in range(100):  # the server is still working through the burst while it answers the pings
        if manager.refusals["signal_rate.update_metadata"] > 19_000:
            break
        await asyncio.sleep(0.05)
    assert manager.refusals["signal_rate.update_metadata"] > 19_000
    chatty = manager.rooms["r1"].participants["chatty"]
    # One more update once the bucket has refilled: everyone ends up with it, coalesced in their queues.
    await asyncio.sleep(0.2)
    last = rtc.UpdateParticipantMetadata(metadata="final", request_id=99_999)
    await sender.send_bytes(rtc.SignalRequest(update_metadata=last).SerializeToString())
    for ws in others:
        seen = [p for m in await _frames(ws, 0.5) if m.WhichOneof("message") == "update"
                for p in m.update.participants if p.sid == chatty.sid]
        assert not ws.closed and seen and seen[-1].metadata == "final"
        assert len(seen) <= 60  # the accepted updates (a burst of 20, then 10/s), never one per request
    for ws in (*others, sender):
        await ws.close()


async def test_a_slow_reader_is_cut_off_for_its_own_backlog_only() -> None:
    """The outbox coalesces keyed frames in place and closes only a connection whose own queue overflows."""
    from control.rtc import lk_messages as lk
    from control.rtc.frames import Frame, participant_key
    from control.service.outbox import WebSocketSink

    class StuckSocket:
        closed = False

        async def send_bytes(self, data: bytes) -> None:
            await asyncio.sleep(3600)

        async def close(self, **kw: object) -> None:
            self.closed = True

    info = models.ParticipantInfo(sid="PA_x", identity="x", version=1)
    sink = WebSocketSink(StuckSocket(), max_queued=10)  # type: ignore[arg-type]
    for version in range(1, 1000):
        info.version = version
        sink.send_frame(Frame(lk.participant_update([info]), participant_key("PA_x")))
    await asyncio.sleep(0)
    assert not sink.closed and sink.queued <= 1 and sink.coalesced >= 997
    for n in range(20):
        sink.send(lk.pong(n))
    assert sink.closed and sink.overflowed
    await asyncio.sleep(0.01)


async def test_bad_frames_are_logged_once_per_connection(client: TestClient,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Finding 5: 2,000 garbage frames give one line when they start and one with the count at the end."""
    ws = await client.ws_connect("/rtc", headers=_bearer("noisy"))
    await _frames(ws, 0.2)
    with caplog.at_level(logging.DEBUG, logger="control.service.signaling"):
        for _ in range(2000):
            await ws.send_bytes(b"\xff\xff\xff garbage")
        assert await _ping_rtt(ws, 7) < 5
        await ws.close()
        await asyncio.sleep(0.2)
    lines = [r for r in caplog.records if r.name == "control.service.signaling" and r.levelno >= logging.WARNING]
    assert len(lines) == 2, [r.getMessage() for r in lines]
    assert "2000 bad signal frames" in lines[-1].getMessage()


async def test_oversized_tokens_are_one_line_per_minute(client: TestClient,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Finding 5: an oversized token (URL or header beyond the parser's limit) is a one-line WARNING without a
    traceback, and 50 of them within a minute are one line."""
    with caplog.at_level(logging.INFO, logger="aiohttp.server"):
        for n in range(50):
            where = {"params": {"access_token": "a" * 9000}} if n % 2 else {
                "headers": {"Authorization": "Bearer " + "a" * 9000}}
            resp = await client.get("/rtc/validate", **where)  # type: ignore[arg-type]
            assert resp.status == 400
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and lines[0].exc_info is None
    assert "LineTooLong" in lines[0].getMessage()


# ------------------------------------------------------------------------------------------- limits (3)


async def test_track_limit_refuses_the_extra_add_track() -> None:
    manager, _ = make_manager(max_tracks_per_participant=3, max_pending_tracks=2)
    room, p, client = await joined(manager, "alice")
    await publish(room, p, "mic-0", mid="0", offer_id=1)
    await publish(room, p, "mic-1", mid="1", offer_id=2, extra="m=audio 0 mic-0\r\n")
    audio = models.TrackType.AUDIO
    await room.handle_add_track(p, rtc.AddTrackRequest(cid="pending-1", type=audio))
    await room.handle_add_track(p, rtc.AddTrackRequest(cid="extra", type=audio))
    refused = client.of("request_response")
    assert [r.add_track.cid for r in refused] == ["extra"]
    assert refused[0].reason == rtc.RequestResponse.Reason.LIMIT_EXCEEDED
    assert len(p.publications) == 3 and manager.refusals["tracks_per_participant"] == 1
    await room.handle_add_track(p, rtc.AddTrackRequest(cid="pending-1", type=audio))  # a repeat is answered
    assert client.of("track_published")[-1].cid == "pending-1"
    manager2, _ = make_manager(max_pending_tracks=2)
    room2, q, client2 = await joined(manager2, "bob")
    for cid in ("a", "b", "c"):
        await room2.handle_add_track(q, rtc.AddTrackRequest(cid=cid, type=audio))
    assert [r.add_track.cid for r in client2.of("request_response")] == ["c"]
    assert manager2.refusals["pending_tracks"] == 1


async def test_node_and_room_limits_refuse_joins_with_their_status() -> None:
    manager, _ = make_manager(max_participants_per_room=2, max_participants_per_node=3, max_rooms_per_node=2)
    await joined(manager, "a", "r1")
    await joined(manager, "b", "r1")
    with pytest.raises(JoinRefused) as room_full:
        manager.admit(claims("c", "r1"))
    assert room_full.value.status == 403
    await joined(manager, "c", "r2")
    with pytest.raises(JoinRefused) as node_full:
        manager.admit(claims("d", "r2"))
    assert node_full.value.status == 503
    manager.admit(claims("a", "r1"))  # a returning identity replaces itself
    with pytest.raises(JoinRefused) as rooms_full:
        await manager.create_room("r3")
    assert rooms_full.value.status == 503
    assert manager.refusals == {"participants_per_room": 1, "participants_per_node": 1, "rooms_per_node": 1}


async def test_subscription_limit_and_a_huge_update_subscription() -> None:
    manager, _ = make_manager(max_subscriptions_per_participant=1)
    room, a, _ = await joined(manager, "alice")
    await publish(room, a, "mic", mid="0", offer_id=1)
    await publish(room, a, "cam", kind="video", mid="1", offer_id=2, extra="m=audio 0 mic\r\n")
    _, b, client_b = await joined(manager, "bob")
    assert b.active_subscriptions() == 1
    assert [r.err for r in client_b.of("subscription_response")] == [models.SubscriptionError.SE_UNKNOWN]
    _, c, client_c = await joined(manager, "carol", auto_subscribe=False)
    room.handle_subscription(c, rtc.UpdateSubscription(track_sids=[f"TR_{n}" for n in range(10_000)],
                                                       subscribe=True))
    assert len(client_c.of("subscription_response")) == 1  # capped at the limit, then answered
    assert manager.refusals["subscriptions_per_participant"] == 1 + 9_999


async def test_data_packet_size_and_rate_limits() -> None:
    manager, _ = make_manager(max_data_packet_bytes=100, data_packets_per_s=5)
    room, a, _ = await joined(manager, "alice")
    await joined(manager, "bob")
    small = models.DataPacket(user=models.UserPacket(payload=b"x" * 10)).SerializeToString()
    big = models.DataPacket(user=models.UserPacket(payload=b"x" * 200)).SerializeToString()
    assert room.forward_data(a, "_reliable", big) == 0
    sent = [room.forward_data(a, "_lossy", small) for _ in range(20)]
    assert sum(sent) == 10  # a burst of twice the rate
    assert manager.refusals["data_packet_bytes"] == 1 and manager.refusals["data_packets_per_s"] == 10


# ----------------------------------------------------------------------- large rooms (issue 14, point 3)


async def test_large_room_batches_subscriber_joins_and_sends_publishers_at_once() -> None:
    manager, _ = make_manager(update_batch_min_participants=4, update_batch_interval_s=0.05,
                              room_update_interval_s=0.2)
    room, a, client_a = await joined(manager, "alice")
    await joined(manager, "bob")
    before = len(client_a.of("update"))
    counts_before = len(client_a.of("room_update"))
    for name in ("c1", "c2", "c3", "c4"):
        await joined(manager, name)
    assert len(client_a.of("update")) == before + 1  # c1 made the room 3: at once; the rest wait
    assert len(client_a.of("room_update")) == counts_before + 1  # the count of 3 at once, then throttled
    await asyncio.sleep(0.1)
    batch = client_a.of("update")[-1]
    assert sorted(p.identity for p in batch.participants) == ["c2", "c3", "c4"]
    assert len(client_a.of("room_update")) == counts_before + 1  # the counts wait longer than the batch
    await asyncio.sleep(0.2)
    assert len(client_a.of("room_update")) == counts_before + 2  # one RoomUpdate for three joins
    assert client_a.of("room_update")[-1].room.num_participants == 6
    mic = await publish(room, a, "mic", mid="0", offer_id=1)  # a publisher's change: at once
    _, c1, client_c1 = await joined(manager, "late")
    assert any(t.sid == mic for p in client_c1.messages[0].join.other_participants for t in p.tracks)
    assert room.batching() and not room._batched.get(a.sid)
