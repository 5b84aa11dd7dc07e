"""``GET /metrics``: Prometheus metrics of the workers and of control, in the text exposition format.

Worker metrics (label ``worker``) are read at scrape time from what each worker last sent in its heartbeat
(``WorkerSlot.heartbeat``: router/totals.py sums the Engine's counters once per heartbeat), so a scrape costs
nothing on the media path: forwarded packets and bytes in (from publishers) and out (to subscribers), drops by
reason, NACKs, retransmissions, PLIs, key frames, SRTP failures, the event-loop lag, CPU seconds (the kernel's
accounting) and the live transports, producers and consumers. A worker's counters start again from zero when it
is respawned, which Prometheus reads as a counter reset. Control's own metrics: rooms, participants and published
tracks (read from the RoomManager), joins and join failures by reason, signal messages by kind, webhook
deliveries, failures and drops (control/service/webhooks.py), and control's event-loop lag. Names follow the
Prometheus conventions: a ``mediarouter_`` prefix, ``_total`` counters, base units (``_bytes``, ``_seconds``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from control.rtc.participant import State
from control.rtc.rooms import RoomManager
from control.service.webhooks import WEBHOOKS_KEY, WebhookSender
from control.workers.supervisor import Supervisor

log = logging.getLogger("control.service.metrics")

PREFIX = "mediarouter_"
LAG_INTERVAL_S = 0.5

# Control's event counters: process-wide (one control process), incremented where the event happens.
CONTROL_REGISTRY = CollectorRegistry(auto_describe=True)
JOINS = Counter(PREFIX + "joins", "Participants that joined a room", registry=CONTROL_REGISTRY)
JOIN_FAILURES = Counter(PREFIX + "join_failures", "Join attempts refused or failed, by reason", ["reason"],
                        registry=CONTROL_REGISTRY)
SIGNAL_MESSAGES = Counter(PREFIX + "signal_messages", "Signal requests received from clients, by kind", ["kind"],
                          registry=CONTROL_REGISTRY)

# heartbeat "totals" key -> (metric name without prefix and _total, help)
WORKER_COUNTERS = {
    "rx_packets": ("worker_received_packets", "RTP packets received from publishers"),
    "rx_bytes": ("worker_received_bytes", "RTP bytes received from publishers"),
    "tx_packets": ("worker_forwarded_packets", "RTP packets forwarded to subscribers"),
    "tx_bytes": ("worker_forwarded_bytes", "RTP bytes forwarded to subscribers"),
    "nacks_rx": ("worker_nacks_received", "NACK feedback received from subscribers"),
    "nacks_tx": ("worker_nacks_sent", "Packets NACKed toward publishers"),
    "retransmits": ("worker_retransmitted_packets", "Packets resent to subscribers after a NACK"),
    "plis_rx": ("worker_plis_received", "PLI/FIR received from subscribers"),
    "keyframe_requests_tx": ("worker_keyframe_requests_sent", "Key-frame requests sent to publishers"),
    "keyframes_rx": ("worker_keyframes_received", "Key frames received from publishers"),
    "rtx_rx": ("worker_rtx_received_packets", "RTX (repair) packets received from publishers"),
}
SRTP_FAILURE_REASONS = {"srtp_unprotect": "unprotect", "srtp_protect": "protect"}
WORKER_GAUGES = {"transports": "Transports", "producers": "Producers", "consumers": "Consumers",
                 "routers": "MediaRouters (rooms)"}


def join_failed(reason: str) -> None:
    """A join that did not happen (``reason``: a short snake_case word)."""
    JOIN_FAILURES.labels(reason).inc()


def signal_message(kind: str) -> None:
    SIGNAL_MESSAGES.labels(kind).inc()


class MediaRouterCollector(Collector):
    """The metrics read at scrape time: workers (heartbeats, kernel usage), rooms, webhooks, control's loop lag."""

    def __init__(self, supervisor: Supervisor, manager: RoomManager, app: web.Application) -> None:
        self.supervisor = supervisor
        self.manager = manager
        self.app = app
        self.loop_lag_s = 0.0

    def collect(self) -> Iterator[Metric]:
        yield from self._workers()
        yield from self._rooms()
        sender = self.app.get(WEBHOOKS_KEY)
        if sender is not None:
            yield from _webhooks(sender)
        lag = GaugeMetricFamily(PREFIX + "control_loop_lag_seconds", "Control event loop lag (last measurement)")
        lag.add_metric([], self.loop_lag_s)
        yield lag

    def _workers(self) -> Iterator[Metric]:
        label = ["worker"]
        up = GaugeMetricFamily(PREFIX + "worker_up", "1 while the worker runs", labels=label)
        restarts = CounterMetricFamily(PREFIX + "worker_restarts", "Worker respawns", labels=label)
        lag = GaugeMetricFamily(PREFIX + "worker_loop_lag_seconds", "Worker event loop lag (last heartbeat)",
                                labels=label)
        cpu = CounterMetricFamily(PREFIX + "worker_cpu_seconds", "CPU time of the worker process", labels=label)
        counters = {key: CounterMetricFamily(PREFIX + name, text, labels=label)
                    for key, (name, text) in WORKER_COUNTERS.items()}
        datagrams = CounterMetricFamily(PREFIX + "worker_datagrams", "UDP datagrams by direction",
                                        labels=["worker", "direction"])
        drops = CounterMetricFamily(PREFIX + "worker_dropped_packets", "Packets dropped by the fast path, by reason",
                                    labels=["worker", "reason"])
        srtp = CounterMetricFamily(PREFIX + "worker_srtp_failures", "SRTP/SRTCP unprotect (authentication, replay) "
                                   "and protect failures", labels=["worker", "operation"])
        gauges = {key: GaugeMetricFamily(PREFIX + "worker_" + key, f"{text} on the worker", labels=label)
                  for key, text in WORKER_GAUGES.items()}
        for slot in self.supervisor.slots:
            worker = [str(slot.worker_id)]
            up.add_metric(worker, 1.0 if slot.running else 0.0)
            restarts.add_metric(worker, slot.restarts)
            usage = slot.usage()
            if usage is not None:
                cpu.add_metric(worker, float(usage.get("cpu_s", 0.0)))
            beat: dict[str, Any] = slot.heartbeat if slot.running else {}
            if not beat:
                continue
            lag.add_metric(worker, float(beat.get("loop_lag_ms", 0.0)) / 1000.0)
            body: dict[str, Any] = beat.get("counters", {})
            totals: dict[str, int] = body.get("totals", {})
            for key, family in counters.items():
                family.add_metric(worker, totals.get(key, 0))
            for direction in ("rx", "tx"):
                datagrams.add_metric([*worker, "in" if direction == "rx" else "out"],
                                     body.get(f"{direction}_datagrams", 0))
            dropped: dict[str, int] = body.get("drops", {})
            for reason, count in sorted(dropped.items()):
                drops.add_metric([*worker, reason], count)
            for reason, operation in SRTP_FAILURE_REASONS.items():
                srtp.add_metric([*worker, operation], dropped.get(reason, 0))
            for key, family in gauges.items():
                family.add_metric(worker, body.get(key, 0))
        yield from (up, restarts, lag, cpu, *counters.values(), datagrams, drops, srtp, *gauges.values())

    def _rooms(self) -> Iterator[Metric]:
        rooms = [r for r in self.manager.rooms.values() if not r.closed]
        participants = [p for r in rooms for p in r.participants.values() if p.state != State.DISCONNECTED]
        tracks = sum(1 for p in participants for pub in p.publications.values() if pub.published)
        for name, text, value in (("rooms", "Open rooms", len(rooms)),
                                  ("participants", "Participants in the rooms", len(participants)),
                                  ("published_tracks", "Tracks published in the rooms", tracks)):
            family = GaugeMetricFamily(PREFIX + name, text)
            family.add_metric([], value)
            yield family


def _webhooks(sender: WebhookSender) -> Iterator[Metric]:
    c = sender.counters
    delivered = CounterMetricFamily(PREFIX + "webhook_deliveries", "Webhook events delivered")
    delivered.add_metric([], c.delivered)
    failed = CounterMetricFamily(PREFIX + "webhook_failures", "Webhook POSTs that failed (each retry counts)")
    failed.add_metric([], c.failed_attempts)
    dropped = CounterMetricFamily(PREFIX + "webhook_dropped_events", "Webhook events given up, by reason",
                                  labels=["reason"])
    for reason, count in sorted(c.dropped.items()):
        dropped.add_metric([reason], count)
    pending = GaugeMetricFamily(PREFIX + "webhook_queued_events", "Webhook events waiting to be sent")
    pending.add_metric([], sender.pending())
    yield from (delivered, failed, dropped, pending)


METRICS_KEY = web.AppKey("metrics", CollectorRegistry)


def add_metrics(app: web.Application, supervisor: Supervisor, manager: RoomManager) -> None:
    """``GET /metrics`` over ``supervisor`` and ``manager``; counts joins from the room events and measures the
    control loop's lag while the application runs."""
    registry = CollectorRegistry(auto_describe=False)
    collector = MediaRouterCollector(supervisor, manager, app)
    registry.register(collector)
    app[METRICS_KEY] = registry
    manager.events.subscribe(lambda event: JOINS.inc() if event.event == "participant_joined" else None)
    app.router.add_get("/metrics", metrics_handler)
    lag_task: list[asyncio.Task[None]] = []

    async def start(_: web.Application) -> None:
        lag_task.append(asyncio.get_running_loop().create_task(_measure_lag(collector)))

    async def stop(_: web.Application) -> None:
        for task in lag_task:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


async def _measure_lag(collector: MediaRouterCollector) -> None:
    while True:
        started = time.monotonic()
        await asyncio.sleep(LAG_INTERVAL_S)
        collector.loop_lag_s = max(0.0, time.monotonic() - started - LAG_INTERVAL_S)


async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY]) + generate_latest(CONTROL_REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
