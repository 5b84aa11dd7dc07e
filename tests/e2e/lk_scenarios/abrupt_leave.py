"""Abrupt leave (docs/RELIABILITY.md, K3): a publishing client process is SIGKILLed without a Leave; its WebSocket
closes, the server keeps the session for the grace period, then removes it: the other participant sees it disconnect and
the RoomService lists only the survivor."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

from common import Receiver, connect, wait_for
from livekit import api

ROOM = "e2e-abrupt"
CHILD = """
import asyncio, sys
sys.path.insert(0, sys.argv[3])
from common import Publisher, connect

async def main() -> None:
    room = await connect(sys.argv[1], sys.argv[2])
    await Publisher(room, 160, 120).publish(audio=False)
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def run(ctx: Any, result: dict[str, Any]) -> None:
    room_b = await connect(ctx.url, ctx.token("bob", ROOM))
    bob = Receiver(room_b).attach()
    gone: dict[str, float] = {}
    room_b.on("participant_disconnected", lambda p: gone.setdefault(p.identity, time.monotonic()))
    here = os.path.dirname(os.path.abspath(__file__))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, ctx.url, ctx.token("doomed", ROOM), here,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        result["child"] = line.decode().strip()
        await wait_for(lambda: bob.frames("doomed", 160, 120) >= 10, 20)
        result["frames_from_doomed"] = bob.frames("doomed", 160, 120)
        killed_at = time.monotonic()
        child.send_signal(signal.SIGKILL)
        await child.wait()
        await wait_for(lambda: "doomed" in gone, 40)
        result["disconnect_seen_after_s"] = round(gone["doomed"] - killed_at, 1) if "doomed" in gone else None
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    lkapi = api.LiveKitAPI(ctx.http, ctx.api_key, ctx.api_secret)
    try:
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=ROOM))
        result["listed"] = sorted(p.identity for p in listed.participants)
    finally:
        await lkapi.aclose()
    await bob.stop()
    await room_b.disconnect()
