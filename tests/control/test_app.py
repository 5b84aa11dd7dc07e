"""control/app.py: the composition root wires the configured room settings, the API keys and the Supervisor into
the RoomManager behind typed application keys, and serves the LiveKit routes and /healthz."""

from __future__ import annotations

import argparse

from aiohttp.test_utils import TestClient, TestServer

from control.app import build_app
from control.config import load_settings
from control.rtc.participant import LiveKitNegotiator
from control.rtc.worker_pool import SupervisorPool
from control.service.keys import MANAGER_KEY, SETTINGS_KEY, SUPERVISOR_KEY
from control.workers.supervisor import Supervisor


async def test_build_app_wires_room_settings_with_keys_into_the_room_manager() -> None:
    args = argparse.Namespace(keys="k1:s1,k2:s2", workers=2)
    settings = load_settings(args, environ={"MEDIAROUTER_ROOM_PING_INTERVAL": "7",
                                            "MEDIAROUTER_ROOM_GRACE_PERIOD_S": "1.5"})
    supervisor = Supervisor(workers=2, node_ip="127.0.0.1", rtc_port_base=40000)
    try:
        app = build_app(settings, supervisor)
        manager = app[MANAGER_KEY]
        assert app[SETTINGS_KEY] is settings and app[SUPERVISOR_KEY] is supervisor
        assert manager.settings.ping_interval == 7 and manager.settings.grace_period_s == 1.5
        assert dict(manager.settings.keys) == {"k1": "s1", "k2": "s2"}
        assert isinstance(manager.pool, SupervisorPool) and manager.pool.supervisor is supervisor
        assert isinstance(manager.negotiator, LiveKitNegotiator)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            health = await client.get("/healthz")
            assert health.status == 200 and len((await health.json())["workers"]) == 2
            assert (await health.json())["participants"] == {"udp": 0, "tcp": 0, "relay": 0, "connecting": 0}
            validate = await client.get("/rtc/validate")
            assert validate.status == 401 and await validate.text() == "no token"
            twirp = await client.post("/twirp/livekit.RoomService/ListRooms",
                                      headers={"Content-Type": "application/json"}, data=b"{}")
            assert twirp.status == 401 and (await twirp.json())["code"] == "unauthenticated"
    finally:
        await supervisor.stop()
