"""A worker dies mid-call (SIGKILL): its sessions are told to reconnect (leave with action RECONNECT), the room is
placed again on a running worker, the SDK rejoins and republishes, and media flows again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from typing import Any

from common import alice_to_bob, wait_for

ROOM = "e2e-worker-death"


def worker_pids(http: str) -> list[int]:
    with urllib.request.urlopen(f"{http}/healthz", timeout=2) as resp:
        return [w["pid"] for w in json.loads(resp.read())["workers"] if w["alive"]]


async def run(ctx: Any, result: dict[str, Any]) -> None:
    room_a, publisher, room_b, bob, events = await alice_to_bob(ctx, ROOM)
    await wait_for(lambda: bob.frames("alice", 320, 240) >= 30, 20)
    before = bob.frames("alice", 320, 240)
    result["frames_before"] = before
    pids = worker_pids(ctx.http)
    result["workers_before"] = len(pids)
    os.kill(pids[0], signal.SIGKILL)
    await wait_for(lambda: bob.frames("alice", 320, 240) >= before + 30, 40)
    result["frames_after"] = bob.frames("alice", 320, 240) - before
    result["b_events"] = list(events)
    result["workers_after"] = len(worker_pids(ctx.http))
    await asyncio.sleep(0)
    await bob.stop()
    await publisher.stop()
    await room_b.disconnect()
    await room_a.disconnect()
