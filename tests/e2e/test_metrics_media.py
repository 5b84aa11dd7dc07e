"""``GET /metrics`` (control/service/metrics.py) while real aiortc peers publish and subscribe through a worker:
the text parses with ``prometheus_client``'s parser, and the worker's forwarded packets and bytes, received packets
and key frames grow between two scrapes as the session runs (read from the heartbeats, router/totals.py), and its
drop counters grow by the stray datagrams it is sent."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCPeerConnection
from prometheus_client.parser import text_string_to_metric_families

from control.rtc.media import MediaClient
from control.rtc.participant import LiveKitNegotiator
from control.rtc.rooms import RoomManager, RoomSettings
from control.rtc.worker_pool import SupervisorPool
from control.service.metrics import add_metrics
from control.workers.supervisor import Supervisor
from tests.e2e.test_aiortc_media import (  # noqa: F401 (fixtures)
    MovingPatternTrack,
    Received,
    SineTrack,
    _collect,
    _publish,
    _subscribe,
    _wait_for,
    loopback_candidates,
)
from tests.e2e.test_aiortc_media import supervisor as supervisor  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(90)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by (name, sorted labels); the parser raises on malformed text."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def worker0(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return values[(name, (("worker", "0"),))]


@pytest.mark.usefixtures("loopback_candidates")
async def test_metrics_parse_and_forwarded_packets_move_as_a_session_runs(supervisor: Supervisor) -> None:  # noqa: F811
    app = web.Application()
    manager = RoomManager(SupervisorPool(supervisor), LiveKitNegotiator(), RoomSettings())
    add_metrics(app, supervisor, manager)
    media = MediaClient(supervisor.client(0))
    await media.create_router("room-m")
    pc_a, pc_b = RTCPeerConnection(), RTCPeerConnection()
    received = Received()
    tasks: list[asyncio.Task[None]] = []
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        try:
            await asyncio.sleep(1.2)  # the first heartbeats
            idle = samples(await (await client.get("/metrics")).text())
            assert worker0(idle, "mediarouter_worker_up") == 1.0
            assert worker0(idle, "mediarouter_worker_forwarded_packets_total") == 0
            assert idle[("mediarouter_rooms", ())] == 0
            pc_a.addTrack(SineTrack())
            pc_a.addTrack(MovingPatternTrack())
            plan = await _publish(media, "room-m", "ta", pc_a)
            tasks = _collect(pc_b, received)
            await _subscribe(media, "room-m", "tb", pc_b, [(f"ta-p{t.mid}", t) for t in plan.tracks],
                             data_channel=False)
            await _wait_for(lambda: len(received.video_frames) >= 10 and received.audio_frames >= 10, 30,
                            "media at the subscriber")
            await asyncio.sleep(1.2)  # a heartbeat with the traffic so far
            resp = await client.get("/metrics")
            assert resp.status == 200 and resp.content_type == "text/plain"
            first = samples(await resp.text())
            await asyncio.sleep(2.2)  # two more heartbeats
            second = samples(await (await client.get("/metrics")).text())
            # Datagrams from nobody the worker knows: dropped, and the drop counters move.
            port = supervisor.snapshot()[0]["udp_port"]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
                for _ in range(20):
                    junk.sendto(b"\x80\x60" + os.urandom(40), ("127.0.0.1", port))
            await asyncio.sleep(2.2)
            third = samples(await (await client.get("/metrics")).text())
        finally:
            for task in tasks:
                task.cancel()
            await pc_a.close()
            await pc_b.close()
    for name in ("mediarouter_worker_forwarded_packets_total", "mediarouter_worker_forwarded_bytes_total",
                 "mediarouter_worker_received_packets_total", "mediarouter_worker_received_bytes_total"):
        assert 0 < worker0(first, name) < worker0(second, name), name
    assert worker0(second, "mediarouter_worker_keyframes_received_total") >= 1
    assert worker0(second, "mediarouter_worker_producers") == 2 and worker0(second, "mediarouter_worker_consumers") == 2
    assert second[("mediarouter_worker_srtp_failures_total", (("operation", "unprotect"), ("worker", "0")))] == 0
    assert worker0(second, "mediarouter_worker_cpu_seconds_total") > 0
    assert ("mediarouter_worker_forwarded_packets_total", (("worker", "1"),)) in second  # the idle worker too
    assert second[("mediarouter_control_loop_lag_seconds", ())] >= 0
    assert dropped(third) >= dropped(second) + 20, {k: v for k, v in third.items() if "dropped" in k[0]}


def dropped(values: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    """Worker 0's dropped packets over every reason."""
    return sum(v for (name, labels), v in values.items()
               if name == "mediarouter_worker_dropped_packets_total" and ("worker", "0") in labels)
