"""A control-side room for the signaling and Twirp fuzz targets: the real RoomManager, Room and Participant over
the fake worker and SDP layer of tests/control/test_rooms.py, with two participants (alice publishes a microphone
and a camera and may update her own metadata; bob subscribes), and a log watch that fails on ERROR records (the
handlers' catch-all ``log.exception``: an input that reaches it is a bug, not a refusal).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit.protocol import models, rtc

from control.auth import Claims, Grants
from control.rtc.participant import ClientParams
from control.rtc.rooms import RoomManager, RoomSettings
from tests.control.test_rooms import Client, FakeNegotiator, FakePool

KEY, SECRET = "devkey", "secret-secret-secret-secret-secret"
ROOM = "r1"


class ErrorWatch(logging.Handler):
    """Remembers every ERROR (or worse) record of the ``control`` loggers."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def check(self) -> None:
        if self.records:
            record = self.records[0]
            self.records.clear()
            raise AssertionError(f"{record.name}: {record.getMessage()}\n{self.format(record)}")


def claims(identity: str, **grants: Any) -> Claims:
    return Claims(identity=identity, api_key=KEY, expires_at=4_000_000_000,
                  grants=Grants(room_join=True, room=ROOM, **grants))


class Harness:
    """One event loop, one manager; ``ensure()`` puts the room and its two participants back after an input
    removed them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.manager = RoomManager(FakePool(1), FakeNegotiator(), RoomSettings(keys={KEY: SECRET}))
        self.watch = ErrorWatch()
        logger = logging.getLogger("control")
        logger.addHandler(self.watch)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
        self.alice: Any = None
        self.bob: Any = None

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def _join(self, identity: str, **grants: Any) -> Any:
        client = Client()
        _, p = await self.manager.join(claims(identity, **grants), ClientParams(), client)
        await self.settle()
        if client.of("offer"):
            await p.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
        return p

    async def _publish(self, room: Any, p: Any) -> None:
        for cid, kind, source in (("mic", models.TrackType.AUDIO, models.TrackSource.MICROPHONE),
                                  ("cam", models.TrackType.VIDEO, models.TrackSource.CAMERA)):
            await room.handle_add_track(p, rtc.AddTrackRequest(cid=cid, name=cid, type=kind, source=source))
        offer = "v=0\r\nm=audio 0 mic\r\nm=video 1 cam\r\n"
        await room.handle_offer(p, rtc.SessionDescription(type="offer", sdp=offer, id=1))
        await self.settle()

    async def ensure(self) -> tuple[Any, Any, Any]:
        room = self.manager.rooms.get(ROOM)
        if room is None or room.closed or self.alice is None or self.alice.closed:
            if room is not None and not room.closed:
                await self.manager.delete_room(ROOM)
            self.alice = await self._join("alice", can_update_own_metadata=True)
            room = self.manager.rooms[ROOM]
            await self._publish(room, self.alice)
            self.bob = None
        if self.bob is None or self.bob.closed:
            self.bob = await self._join("bob")
        self.watch.check()
        return room, self.alice, self.bob


def close(h: Harness) -> None:
    """End the harness: its rooms (and their periodic tasks), then its loop."""

    async def end() -> None:
        for name in list(h.manager.rooms):
            await h.manager.delete_room(name)
        await h.settle()

    h.run(end())
    for task in __import__("asyncio").all_tasks(h.loop):
        task.cancel()
    h.run(h.settle())
    h.loop.close()
    logging.getLogger("control").removeHandler(h.watch)
    logging.getLogger("control").propagate = True
