"""Hostile and careless clients against the signaling plane (issue 15's findings 2-6), each bounded and on
loopback with fake workers: non-finite token times, log lines per attack, signal flow control, limits and
placement of rooms created at once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from test_rooms import FakeMedia, FakeNegotiator, FakePool  # tests/control is on sys.path (rootdir-relative imports)

from control.app import add_livekit
from control.auth import AuthError, verify_token
from control.rtc.rooms import RoomManager, RoomSettings

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
