"""Control's side of ``GET /metrics`` (control/service/metrics.py) over the LiveKit surface with a fake worker: the
exposition parses with ``prometheus_client``'s parser; rooms, participants and tracks follow the rooms; joins, join
failures by reason and signal messages by kind count up; webhook failures and queued events show a receiver that
is down."""

from __future__ import annotations

from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from livekit.protocol import rtc
from prometheus_client.parser import text_string_to_metric_families
from test_rooms import FakeNegotiator, FakePool, publish  # tests/control is on sys.path

from control.app import add_livekit
from control.auth import create_token
from control.rtc.rooms import RoomManager, RoomSettings
from control.service.metrics import add_metrics
from control.service.webhooks import add_webhooks
from tests.conftest import free_tcp_port

KEY, SECRET = "devkey", "secret-secret-secret-secret-secret"


async def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    out = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_control_metrics_follow_rooms_joins_signal_and_webhooks() -> None:
    manager = RoomManager(FakePool(1), FakeNegotiator(), RoomSettings(keys={KEY: SECRET}))
    app = web.Application()
    add_livekit(app, manager)
    add_metrics(app, SimpleNamespace(slots=[]), manager)  # type: ignore[arg-type]  # no worker processes here
    add_webhooks(app, manager.events, [f"http://127.0.0.1:{free_tcp_port()}/down"], KEY, SECRET)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        before = await scrape(client)
        assert before[("mediarouter_rooms", ())] == 0 and before[("mediarouter_participants", ())] == 0
        joins = before.get(("mediarouter_joins_total", ()), 0)
        refused = before.get(("mediarouter_join_failures_total", (("reason", "unauthorized"),)), 0)
        pings = before.get(("mediarouter_signal_messages_total", (("kind", "ping_req"),)), 0)

        ws = await client.ws_connect("/rtc", params={"access_token": create_token(KEY, SECRET, identity="alice",
                                                                                  room="m")})
        await ws.receive(timeout=5)
        for ts in (1, 2, 3):
            await ws.send_bytes(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=ts)).SerializeToString())
        bad = await client.get("/rtc", params={"access_token": "not-a-token"})
        assert bad.status == 401
        room = manager.rooms["m"]
        await publish(room, room.participants["alice"], "mic")
        for _ in range(50):
            if (await scrape(client)).get(("mediarouter_signal_messages_total", (("kind", "ping_req"),)), 0) >= \
                    pings + 3:
                break
        after = await scrape(client)
        assert after[("mediarouter_rooms", ())] == 1 and after[("mediarouter_participants", ())] == 1
        assert after[("mediarouter_published_tracks", ())] == 1
        assert after[("mediarouter_joins_total", ())] == joins + 1
        assert after[("mediarouter_join_failures_total", (("reason", "unauthorized"),))] == refused + 1
        assert after[("mediarouter_signal_messages_total", (("kind", "ping_req"),))] == pings + 3
        # the webhook receiver is down: nothing delivered, the first event retried, the rest queued behind it
        assert after[("mediarouter_webhook_deliveries_total", ())] == 0
        assert after[("mediarouter_webhook_queued_events", ())] >= 2
        assert after[("mediarouter_control_loop_lag_seconds", ())] >= 0
        await ws.close()


def test_grafana_dashboard_uses_only_metrics_the_server_exports() -> None:
    import json
    import re
    from pathlib import Path

    from prometheus_client import CollectorRegistry, generate_latest

    from control.service.metrics import CONTROL_REGISTRY, MediaRouterCollector, join_failed
    from control.service.webhooks import WEBHOOKS_KEY, WebhookSender

    slot = SimpleNamespace(worker_id=0, running=True, restarts=0, usage=lambda: {"cpu_s": 1.0},
                           heartbeat={"loop_lag_ms": 1.0, "counters": {"totals": {}, "drops": {"duplicate": 1}}})
    app = {WEBHOOKS_KEY: WebhookSender(["http://127.0.0.1:9/x"], KEY, SECRET)}
    registry = CollectorRegistry()
    registry.register(MediaRouterCollector(SimpleNamespace(slots=[slot]), SimpleNamespace(rooms={}), app))  # type: ignore[arg-type]
    join_failed("unauthorized")
    exported = {s.name for text in (generate_latest(registry), generate_latest(CONTROL_REGISTRY))
                for family in text_string_to_metric_families(text.decode()) for s in family.samples}
    dashboard = (Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json").read_text()
    used = set(re.findall(r"mediarouter_\w+", json.dumps([p["targets"] for p in json.loads(dashboard)["panels"]])))
    assert used and used <= exported, used - exported
