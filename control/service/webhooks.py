"""LiveKit webhooks: room events POSTed to the backend's URLs, signed as ``livekit-api``'s WebhookReceiver checks.

Each :class:`~control.rtc.events.RoomEvent` becomes a ``livekit.WebhookEvent`` (``event``, ``room`` with its
current ``num_participants``, ``participant``, ``track``, ``id`` ``EV_...``, ``created_at`` in Unix seconds),
serialised as proto3 JSON and POSTed with ``Content-Type: application/webhook+json`` and an ``Authorization``
header holding a JWT (HS256, ``iss`` the API key, valid 5 minutes) whose ``sha256`` claim is the base64 SHA-256 of
the body (docs/PROTOCOL.md, Webhooks).

Delivery never blocks signaling: :meth:`WebhookSender.on_event` only serialises and queues. Every URL has
:data:`SHARDS` bounded queues; a room's events always go to the same one, whose task sends them one at a time, so
a room's events arrive in order while a slow room does not hold the others back. A failed POST (connection
refused, timeout, HTTP status >= 300) is retried after 0.5, 1, 2, 4... s (at most ``max_backoff_s``) until it
succeeds or ``give_up_s`` passed since its first try; an event that gives up, or that finds its queue full, is
dropped, counted in :attr:`WebhookSender.counters` and logged (once per burst), and the next event that gets
through says how many were dropped before it (``num_dropped``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import jwt
from aiohttp import web
from google.protobuf import json_format
from livekit.protocol import webhook

from control.rtc.events import RoomEvent, RoomEvents

log = logging.getLogger("control.service.webhooks")

CONTENT_TYPE = "application/webhook+json"
TOKEN_TTL_S = 300
SHARDS = 4
QUEUE_SIZE = 1000  # events waiting per URL (split among its shards)
REQUEST_TIMEOUT_S = 10.0
FIRST_BACKOFF_S = 0.5


def sign(body: bytes, api_key: str, api_secret: str, *, now: float | None = None) -> str:
    """The ``Authorization`` token of one webhook body: a LiveKit access token carrying the body's SHA-256."""
    issued = int(time.time() if now is None else now)
    claims = {"iss": api_key, "nbf": issued, "exp": issued + TOKEN_TTL_S,
              "sha256": base64.b64encode(hashlib.sha256(body).digest()).decode(), "video": {}}
    return jwt.encode(claims, api_secret, algorithm="HS256")


def to_webhook_event(event: RoomEvent, *, now: float | None = None) -> webhook.WebhookEvent:
    message = webhook.WebhookEvent(event=event.event, id="EV_" + secrets.token_urlsafe(9),
                                   created_at=int(time.time() if now is None else now))
    message.room.CopyFrom(event.room)
    if event.participant is not None:
        message.participant.CopyFrom(event.participant)
    if event.track is not None:
        message.track.CopyFrom(event.track)
    return message


@dataclass
class WebhookCounters:
    """What the sender did, for ``/metrics`` (control/service/metrics.py)."""

    queued: int = 0
    delivered: int = 0
    failed_attempts: int = 0  # POSTs that failed (each retry counts)
    dropped: dict[str, int] = field(default_factory=lambda: {"queue_full": 0, "gave_up": 0})


@dataclass
class _Item:
    event: webhook.WebhookEvent
    first_try: float = 0.0


class _Shard:
    """One ordered lane of one URL."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=size)
        self.task: asyncio.Task[None] | None = None
        self.dropped_since_delivery = 0


class WebhookSender:
    """Queues room events for every URL and delivers them in the background (start with :meth:`start`)."""

    def __init__(self, urls: Sequence[str], api_key: str, api_secret: str, *, queue_size: int = QUEUE_SIZE,
                 give_up_s: float = 60.0, max_backoff_s: float = 8.0,
                 request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.urls = tuple(urls)
        self.api_key = api_key
        self.api_secret = api_secret
        self.give_up_s = give_up_s
        self.max_backoff_s = max_backoff_s
        self.request_timeout_s = request_timeout_s
        self.counters = WebhookCounters()
        per_shard = max(1, queue_size // SHARDS)
        self._shards = {url: [_Shard(url, per_shard) for _ in range(SHARDS)] for url in self.urls}
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False

    # ---- producer side (the event loop, synchronous) -----------------------------------------------

    def on_event(self, event: RoomEvent) -> None:
        """A :class:`~control.rtc.events.RoomEvents` listener: queue the event for every URL, never wait."""
        if self._stopping or not self.urls:
            return
        message = to_webhook_event(event)
        lane = zlib.crc32(event.room.name.encode()) % SHARDS
        for url in self.urls:
            shard = self._shards[url][lane]
            try:
                shard.queue.put_nowait(_Item(message))
                self.counters.queued += 1
            except asyncio.QueueFull:
                self._dropped(shard, "queue_full", message)

    def _dropped(self, shard: _Shard, reason: str, message: webhook.WebhookEvent) -> None:
        self.counters.dropped[reason] += 1
        if shard.dropped_since_delivery == 0:
            log.warning("webhook %s: dropping %s of room %s (%s); more drops are logged when it recovers",
                        shard.url, message.event, message.room.name, reason.replace("_", " "))
        shard.dropped_since_delivery += 1

    # ---- delivery --------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.request_timeout_s))
        for shards in self._shards.values():
            for shard in shards:
                shard.task = loop.create_task(self._run(shard), name=f"webhook {shard.url}")

    async def stop(self, flush_s: float = 2.0) -> None:
        """Stops queueing; waits up to ``flush_s`` for what is queued, then cancels the senders."""
        self._stopping = True
        shards = [s for lanes in self._shards.values() for s in lanes]
        deadline = time.monotonic() + flush_s
        while time.monotonic() < deadline and any(not s.queue.empty() for s in shards):
            await asyncio.sleep(0.05)
        for shard in shards:
            if shard.task is not None:
                shard.task.cancel()
        await asyncio.gather(*(s.task for s in shards if s.task is not None), return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def pending(self) -> int:
        return sum(s.queue.qsize() for lanes in self._shards.values() for s in lanes)

    async def _run(self, shard: _Shard) -> None:
        while True:
            item = await shard.queue.get()
            item.first_try = time.monotonic()
            backoff = FIRST_BACKOFF_S
            while True:
                if shard.dropped_since_delivery:
                    item.event.num_dropped = shard.dropped_since_delivery
                error = await self._post(shard.url, item.event)
                if error is None:
                    if shard.dropped_since_delivery:
                        log.warning("webhook %s: delivering again after %d dropped events", shard.url,
                                    shard.dropped_since_delivery)
                    shard.dropped_since_delivery = 0
                    self.counters.delivered += 1
                    break
                self.counters.failed_attempts += 1
                if time.monotonic() - item.first_try + backoff > self.give_up_s:
                    log.debug("webhook %s: %s gave up: %s", shard.url, item.event.event, error)
                    self._dropped(shard, "gave_up", item.event)
                    break
                log.debug("webhook %s: %s failed (%s), retry in %.1f s", shard.url, item.event.event, error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    async def _post(self, url: str, message: webhook.WebhookEvent) -> str | None:
        """One POST; None on success, else what went wrong."""
        body = json_format.MessageToJson(message, indent=None).encode()
        headers = {"Content-Type": CONTENT_TYPE, "Authorization": sign(body, self.api_key, self.api_secret)}
        assert self._session is not None, "WebhookSender.start() was not called"
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status >= 300:
                    return f"HTTP {resp.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


WEBHOOKS_KEY = web.AppKey("webhooks", WebhookSender)


def add_webhooks(app: web.Application, events: RoomEvents, urls: Sequence[str], api_key: str, api_secret: str,
                 *, queue_size: int = QUEUE_SIZE, give_up_s: float = 60.0, max_backoff_s: float = 8.0) -> WebhookSender:
    """Sends ``events`` to ``urls`` while ``app`` runs (started on startup, flushed on cleanup, after the rooms
    closed on shutdown have told their ``room_finished``)."""
    sender = WebhookSender(urls, api_key, api_secret, queue_size=queue_size, give_up_s=give_up_s,
                           max_backoff_s=max_backoff_s)
    events.subscribe(sender.on_event)
    app[WEBHOOKS_KEY] = sender

    async def start(_: web.Application) -> None:
        sender.start()

    async def stop(_: web.Application) -> None:
        await sender.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return sender
