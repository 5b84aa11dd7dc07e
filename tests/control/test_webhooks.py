"""LiveKit webhooks (control/service/webhooks.py) received by a test HTTP server and checked with ``livekit-api``'s
``WebhookReceiver``: every event of a scripted session arrives verified and in order; a receiver that is down at
first gets the events once it is up; a slow receiver does not hold back joins; a receiver that stays down makes
the sender drop and count, not grow without bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from livekit import api
from livekit.protocol import models
from test_rooms import Client, FakeNegotiator, FakePool, claims, publish  # tests/control is on sys.path

from control.rtc.participant import ClientParams
from control.rtc.rooms import RoomManager, RoomSettings
from control.service.webhooks import CONTENT_TYPE, WebhookSender
from tests.conftest import free_tcp_port, wait_for

KEY, SECRET = "devkey", "secret-secret-secret-secret-secret"
pytestmark = pytest.mark.timeout(30)


class Receiver:
    """A backend's webhook endpoint: verifies each request like a LiveKit backend and keeps the events."""

    def __init__(self, delay: asyncio.Event | None = None) -> None:
        self.verifier = api.WebhookReceiver(api.TokenVerifier(KEY, SECRET))
        self.events: list[Any] = []
        self.requests = 0
        self.hold = delay  # while set-able and unset, every request waits for it (a slow receiver)
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        assert request.content_type == CONTENT_TYPE
        body = await request.text()
        self.events.append(self.verifier.receive(body, request.headers["Authorization"]))
        if self.hold is not None:
            await self.hold.wait()
        return web.Response(text="ok")

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.server = TestServer(app, host="127.0.0.1", port=port)
        await self.server.start_server()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def names(self) -> list[str]:
        return [e.event for e in self.events]


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        if r.hold is not None:
            r.hold.set()
        await r.close()


def manager_with(sender: WebhookSender) -> RoomManager:
    manager = RoomManager(FakePool(1), FakeNegotiator(), RoomSettings(keys={KEY: SECRET}, departure_timeout=0))
    manager.events.subscribe(sender.on_event)
    return manager


async def scripted_session(manager: RoomManager) -> None:
    """alice joins, bob joins, alice publishes and unpublishes a track, both leave: the room finishes."""
    room, alice = await manager.join(claims("alice", "demo"), ClientParams(), Client())
    _, bob = await manager.join(claims("bob", "demo"), ClientParams(), Client())
    track_sid = await publish(room, alice, "mic")
    await room.unpublish(alice, track_sid)
    await room.remove(bob, models.DisconnectReason.CLIENT_INITIATED)
    await room.remove(alice, models.DisconnectReason.CLIENT_INITIATED)


EXPECTED = ["room_started", "participant_joined", "participant_joined", "track_published", "track_unpublished",
            "participant_left", "participant_left", "room_finished"]


async def test_every_event_of_a_session_arrives_verified_and_in_order(receivers: list[Receiver]) -> None:
    receiver = Receiver()
    receivers.append(receiver)
    port = free_tcp_port()
    await receiver.start(port)
    sender = WebhookSender([f"http://127.0.0.1:{port}/hook"], KEY, SECRET)
    sender.start()
    try:
        await scripted_session(manager_with(sender))
        assert await wait_for(lambda: len(receiver.events) == len(EXPECTED), 5.0), receiver.names()
    finally:
        await sender.stop()
    assert receiver.names() == EXPECTED
    events = receiver.events
    assert all(e.room.name == "demo" and e.id.startswith("EV_") and e.created_at > 1_600_000_000 for e in events)
    assert len({e.id for e in events}) == len(events)
    assert [e.room.num_participants for e in events] == [0, 1, 2, 2, 2, 1, 0, 0]
    assert [e.participant.identity for e in events[1:7]] == ["alice", "bob", "alice", "alice", "bob", "alice"]
    assert events[3].track.sid == events[4].track.sid and events[3].track.sid.startswith("TR_")
    assert events[3].track.type == models.TrackType.AUDIO
    assert sender.counters.delivered == len(EXPECTED) and sender.counters.dropped["queue_full"] == 0


async def test_receiver_down_at_first_gets_the_events_after_it_comes_back(receivers: list[Receiver]) -> None:
    port = free_tcp_port()
    sender = WebhookSender([f"http://127.0.0.1:{port}/hook"], KEY, SECRET)
    sender.start()
    receiver = Receiver()
    receivers.append(receiver)
    try:
        await scripted_session(manager_with(sender))
        await asyncio.sleep(5.0)  # nothing listens for 5 s: the first event is retried with back-off
        assert sender.counters.failed_attempts >= 2 and sender.counters.delivered == 0
        await receiver.start(port)
        assert await wait_for(lambda: len(receiver.events) == len(EXPECTED), 10.0), receiver.names()
    finally:
        await sender.stop()
    assert receiver.names() == EXPECTED
    assert sum(sender.counters.dropped.values()) == 0


async def test_slow_receiver_does_not_hold_back_joins(receivers: list[Receiver]) -> None:
    receiver = Receiver(delay=asyncio.Event())  # answers nothing until released
    receivers.append(receiver)
    port = free_tcp_port()
    await receiver.start(port)
    sender = WebhookSender([f"http://127.0.0.1:{port}/hook"], KEY, SECRET)
    sender.start()
    manager = manager_with(sender)
    try:
        joined = []
        for name in ("a", "b", "c", "d"):
            joined.append(await manager.join(claims(name, "slow"), ClientParams(), Client()))
        assert await wait_for(lambda: receiver.requests == 1, 5.0)
        # every join is done while the receiver still sits on the first request (room_started)
        assert len(manager.rooms["slow"].participants) == 4 and receiver.requests == 1
        assert sender.pending() == 4  # the four participant_joined wait behind it, in order
        assert receiver.hold is not None
        receiver.hold.set()
        assert await wait_for(lambda: len(receiver.events) == 5, 5.0)
    finally:
        await sender.stop()
    assert receiver.names() == ["room_started"] + ["participant_joined"] * 4
    assert [e.participant.identity for e in receiver.events[1:]] == ["a", "b", "c", "d"]


async def test_receiver_that_stays_down_makes_the_sender_drop_and_count() -> None:
    port = free_tcp_port()
    sender = WebhookSender([f"http://127.0.0.1:{port}/hook"], KEY, SECRET, queue_size=8, give_up_s=0.6)
    sender.start()
    manager = manager_with(sender)
    try:
        for i in range(10):
            room, p = await manager.join(claims(f"p{i}", "busy"), ClientParams(), Client())
        assert sender.counters.dropped["queue_full"] > 0
        assert await wait_for(lambda: sender.counters.dropped["gave_up"] > 0, 5.0)
        assert sender.pending() <= 8 and sender.counters.delivered == 0
    finally:
        await sender.stop(flush_s=0)
