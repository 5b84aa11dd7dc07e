"""A subscriber capped below the lowest video layer: a publisher with a microphone and a 720p 3-layer simulcast
camera on the server's network, subscriber ``capped`` in a client host whose downlink is capped at 100 kbit/s (token
bucket, 200 ms queue: the impairment relay, tests/netimpair.py) for ``CAP_S`` seconds, then uncapped for
``AFTER_S``.

After a warm-up (until video arrives, at most 20 s) reports per second from the moment the cap goes on: the capped
subscriber's video and audio frames, the ConnectionQuality the server sent it, the kbit/s offered at its link and
delivered through the cap, and the worker's estimate and layers for it ("p": the allocator paused the video); then
when the video was paused and resumed, the audio through the cap, and the quality during and after it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from impaired import RemoteSubscriber, SimulcastPublisher, cap_and_lift, sender_view, until_video, window
from netimpair import Rule

ROOM = "e2e-pause"
CAP_S, AFTER_S = 14, 20  # after: the paused track's next probe (up to 10 s of backoff), then two score rounds
CAP = Rule(rate_kbit=100, burst_bytes=4000, queue_ms=200)


async def run(ctx: Any, result: dict[str, Any], cap_s: float = CAP_S, after_s: float = AFTER_S) -> None:
    from common import connect

    room = await connect(ctx.url, ctx.token("pub", ROOM))
    publisher = SimulcastPublisher(room)
    await publisher.publish(audio=True)
    host = await ctx.client_host("capped")
    capped = await RemoteSubscriber.start(ctx, host, ROOM, "capped", 20 + 2 + cap_s + after_s + 2)
    await asyncio.wait_for(capped.connected.wait(), 20)
    await until_video(capped)
    rows, cap_on, cap_off = await cap_and_lift(ctx, host, ROOM, "capped", CAP, cap_s, after_s, sender_view)

    per_second = []
    for (t0, a, _), (t1, b, worker) in zip(rows, rows[1:], strict=False):
        cs = window(capped.samples, t0, t1)
        per_second.append({
            "t": round(t1 - cap_on, 1), "capped": t1 <= cap_off + 0.5,
            "frames": sum(s["frames"] for s in cs), "audio_frames": sum(s.get("audio_frames", 0) for s in cs),
            "quality": cs[-1].get("quality") if cs else None,
            "offered_kbit": round((b["offered_bytes"] - a["offered_bytes"]) * 8 / (t1 - t0) / 1000),
            "delivered_kbit": round((b["delivered_bytes"] - a["delivered_bytes"]) * 8 / (t1 - t0) / 1000),
            "worker": worker,
        })
    result["per_second"] = per_second
    during = [s for s in per_second if s["capped"]]
    after = [s for s in per_second if not s["capped"]]
    result["paused_after_s"] = next((s["t"] for s in during if "p" in s["worker"].get("layers", [])), None)
    result["resumed_after_lift_s"] = next((round(s["t"] - (cap_off - cap_on), 1) for s in after
                                           if s["frames"] > 0 and "p" not in s["worker"].get("layers", [])), None)
    result["poor_after_s"] = next((s["t"] for s in during if s["quality"] == 0), None)
    result["good_again_after_lift_s"] = next((round(s["t"] - (cap_off - cap_on), 1) for s in after
                                              if s["quality"] is not None and s["quality"] >= 1), None)
    result["audio_fps_capped"] = round(sum(s["audio_frames"] for s in during) / max(1, len(during)), 1)
    await capped.finish(10)
    await publisher.stop()
    await room.disconnect()
