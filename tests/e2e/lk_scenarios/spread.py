"""One room over two workers (``room.spread: always``, control/rtc/spread.py) with the unmodified LiveKit SDK.

alice publishes audio and a 960x540 simulcast camera from worker 0 (the room's home); bob joins on worker 1 and
receives it through a pipe; carol joins on worker 0. Recorded: where /healthz says each participant is and which
pipes exist, what bob decodes (highest layer, then LOW across the pipe), the data packets everybody gets, the pipe
counters (the server runs with a test-loss hook on the pipe) and, after worker 1 is SIGKILLed, what carol (worker 0)
keeps decoding, whether bob comes back, and whether a newcomer on the respawned worker 1 is piped to again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from typing import Any

from common import Publisher, Receiver, connect, wait_for
from livekit import rtc

ROOM = "e2e-spread"
WIDTH, HEIGHT = 960, 540


def healthz(http: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{http}/healthz", timeout=2) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


def room_of(http: str) -> dict[str, Any]:
    return next((r for r in healthz(http)["rooms"] if r["name"] == ROOM), {})


async def run(ctx: Any, result: dict[str, Any]) -> None:
    room_a = await connect(ctx.url, ctx.token("alice", ROOM))
    publisher = Publisher(room_a, WIDTH, HEIGHT)
    result["published"] = await publisher.publish(audio=True, simulcast=True)
    room_b = await connect(ctx.url, ctx.token("bob", ROOM))
    bob = Receiver(room_b).attach()
    room_c = await connect(ctx.url, ctx.token("carol", ROOM))
    carol = Receiver(room_c).attach()
    await wait_for(lambda: bob.frames("alice", WIDTH, HEIGHT) >= 60 and bob.audio.get("alice", 0) > 0, 30)
    room = room_of(ctx.http)
    result["placement"] = room.get("participants")
    result["room_workers"] = room.get("workers")
    result["pipes"] = room.get("pipes")
    result["b_video"] = dict(bob.video)
    result["b_audio"] = bob.audio.get("alice", 0)

    # A simulcast quality change across the pipe.
    info = next(p for p in room_b.remote_participants.values() if p.identity == "alice")
    video = next(p for p in info.track_publications.values() if p.kind == rtc.TrackKind.KIND_VIDEO)
    video.set_video_quality(rtc.VideoQuality.VIDEO_QUALITY_LOW)
    await wait_for(lambda: bob.frames("alice", WIDTH // 3, HEIGHT // 3) >= 30, 25)
    result["b_video_after_low"] = dict(bob.video)

    # Data packets reach participants on both workers.
    await room_a.local_participant.publish_data(b"to everyone", reliable=True, topic="all")
    await wait_for(lambda: bool(bob.data) and bool(carol.data), 10)
    result["b_data"] = [d["data"] for d in bob.data]
    result["c_data"] = [d["data"] for d in carol.data]

    # The loss hook: every video packet lost on the pipe by now must have been asked for and resent. The counters
    # come with heartbeats, so the later ones are awaited (they only grow; the hook keeps losing meanwhile).
    workers = {w["id"]: w for w in healthz(ctx.http)["workers"]}
    lost = workers[0]["pipes"]["pipe_test_lost"]
    result["pipe_lost"] = lost

    def repaired() -> bool:
        now = {w["id"]: w["pipes"] for w in healthz(ctx.http)["workers"]}
        result["pipe_counters"] = {str(i): c for i, c in now.items()}
        return now[0]["pipe_retransmits"] >= lost and now[1]["pipe_nack_recovered"] >= lost

    await wait_for(repaired, 10, step_s=0.5)

    # SIGKILL of worker 1: carol (worker 0) keeps decoding; bob is told to reconnect.
    await wait_for(lambda: carol.frames("alice", WIDTH, HEIGHT) >= 30, 15)
    carol_before = carol.frames("alice", WIDTH, HEIGHT)
    os.kill(workers[1]["pid"], signal.SIGKILL)
    gaps: list[float] = []
    loop = asyncio.get_running_loop()
    last_count, last_change = carol_before, loop.time()
    deadline = loop.time() + 4.0
    while loop.time() < deadline:
        await asyncio.sleep(0.05)
        count = carol.frames("alice", WIDTH, HEIGHT)
        if count != last_count:
            gaps.append(loop.time() - last_change)
            last_count, last_change = count, loop.time()
    gaps.append(loop.time() - last_change)
    result["carol_frames_after_kill"] = carol.frames("alice", WIDTH, HEIGHT) - carol_before
    result["carol_longest_gap_s"] = round(max(gaps), 3)
    bob_before = sum(bob.video.values())
    await wait_for(lambda: sum(bob.video.values()) >= bob_before + 30, 40)
    result["bob_frames_after_rejoin"] = sum(bob.video.values()) - bob_before
    result["placement_after"] = room_of(ctx.http).get("participants")

    # Once worker 1 is back, a newcomer lands there and alice's tracks are piped to it again.
    await wait_for(lambda: all(w["alive"] for w in healthz(ctx.http)["workers"]), 15, step_s=0.2)
    room_d = await connect(ctx.url, ctx.token("dave", ROOM))
    dave = Receiver(room_d).attach()
    await wait_for(lambda: sum(dave.video.values()) >= 30, 30)
    result["dave_frames"] = sum(dave.video.values())
    room = room_of(ctx.http)
    result["placement_respawned"] = room.get("participants")
    result["pipes_respawned"] = room.get("pipes")
    await dave.stop()
    await room_d.disconnect()
    await bob.stop()
    await carol.stop()
    await publisher.stop()
    for r in (room_b, room_c, room_a):
        await r.disconnect()
