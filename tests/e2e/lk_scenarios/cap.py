"""A capped subscriber next to a clean one: a 720p 3-layer simulcast publisher on the server's network, subscriber
``capped`` in a client host whose downlink is capped at 500 kbit/s for ``CAP_S`` seconds (token bucket, 4 KB burst,
200 ms queue: the impairment relay, tests/netimpair.py), then uncapped for ``AFTER_S``; subscriber ``clean`` in a
client host without rules.

After a warm-up (until both show 1280 px, at most 20 s) reports per second from the moment the cap goes on: the
capped subscriber's frames, width and longest gap, the kbit/s offered at its link (what the worker pushed) and
delivered through the cap, the clean subscriber's width, the capped subscriber's decoder counters and the worker's
estimate and layer for it; then summaries of the capped and uncapped windows, the
worker's consumer counters for the capped subscriber over the cap (retransmits, NACKs, PLIs), and the publisher's
layers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from impaired import (
    RemoteSubscriber,
    SimulcastPublisher,
    consumer_counters,
    delta,
    publisher_layers,
    sender_view,
    summary,
    window,
)
from netimpair import Rule

ROOM = "e2e-cap"
CAP_S, AFTER_S = 30, 15
CAP = Rule(rate_kbit=500, burst_bytes=4000, queue_ms=200)


async def run(ctx: Any, result: dict[str, Any], cap_s: float = CAP_S, after_s: float = AFTER_S) -> None:
    from common import connect

    room = await connect(ctx.url, ctx.token("pub", ROOM))
    publisher = SimulcastPublisher(room)
    await publisher.publish()
    capped_host = await ctx.client_host("capped")
    clean_host = await ctx.client_host("clean")
    total = 20 + 3 + cap_s + after_s + 2
    capped = await RemoteSubscriber.start(ctx, capped_host, ROOM, "capped", total)
    clean = await RemoteSubscriber.start(ctx, clean_host, ROOM, "clean", total)
    await asyncio.wait_for(asyncio.gather(capped.connected.wait(), clean.connected.wait()), 20)
    for _ in range(40):
        await asyncio.sleep(0.5)
        if capped.recent_width(2) == 1280 and clean.recent_width(2) == 1280:
            break
    await asyncio.sleep(3)
    result["clean_link"] = {"capped": summary(capped.samples[-3:]), "clean": summary(clean.samples[-3:])}

    relay: list[tuple[float, dict[str, Any]]] = []
    sender: list[dict[str, Any]] = []  # the worker's view of the capped subscriber, a row per relay sample

    async def sample_relay(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(1)
            relay.append((time.monotonic(), (await capped_host.stats())["down"]))
            sender.append(sender_view(await ctx.worker_stats(ROOM, "capped")))

    before = consumer_counters(await ctx.worker_stats(ROOM, "capped"))
    relay.append((time.monotonic(), (await capped_host.stats())["down"]))
    cap_on = time.monotonic()
    await capped_host.set(downlink=CAP)
    await sample_relay(cap_s)
    cap_off = time.monotonic()
    await capped_host.set(downlink=Rule())
    during = delta(consumer_counters(await ctx.worker_stats(ROOM, "capped")), before)
    await sample_relay(after_s)
    end = time.monotonic()
    result["publisher"] = await publisher_layers(room)

    per_second = []
    for (t0, a), (t1, b), worker in zip(relay, relay[1:], sender, strict=False):
        span = t1 - t0
        cs = window(capped.samples, t0, t1)
        ks = window(clean.samples, t0, t1)
        per_second.append({
            "t": round(t1 - cap_on, 1), "capped": t1 <= cap_off + 0.5,
            "width": capped.width(cs[-1]) if cs else None, "frames": sum(s["frames"] for s in cs),
            "gap_s": max((s["gap_s"] for s in cs), default=None),
            "offered_kbit": round((b["offered_bytes"] - a["offered_bytes"]) * 8 / span / 1000),
            "delivered_kbit": round((b["delivered_bytes"] - a["delivered_bytes"]) * 8 / span / 1000),
            "clean_width": clean.width(ks[-1]) if ks else None,
            "decoder": cs[-1].get("decoder") if cs else None, "worker": worker,
        })
    result["per_second"] = per_second
    first, last = relay[0][1], next(s for t, s in relay if t >= cap_off - 0.5)
    cap_seconds = cap_off - cap_on
    offered = last["offered_bytes"] - first["offered_bytes"]
    result["cap"] = {
        "rule": CAP.to_json(), "seconds": round(cap_seconds, 1),
        "capped": summary(window(capped.samples, cap_on + 1, cap_off)),
        "clean": summary(window(clean.samples, cap_on, cap_off)),
        "offered_kbit": round(offered * 8 / cap_seconds / 1000),
        "offered_over_rate": round(offered * 8 / cap_seconds / 1000 / CAP.rate_kbit, 2),
        "queue_drops": last["queue_drops"] - first["queue_drops"],
        "worker": during,
        "retransmits_per_queue_drop": round(during["retransmits"] / max(1, last["queue_drops"] - first["queue_drops"]),
                                            2),
    }
    result["after"] = {"capped": summary(window(capped.samples, cap_off, end)),
                       "clean": summary(window(clean.samples, cap_off, end)),
                       "first_1280_after_s": next((round(s["at"] - cap_off, 1) for s in capped.samples
                                                   if s["at"] > cap_off and capped.width(s) == 1280), None)}
    result["clean_min_width"] = min((clean.width(s) for s in window(clean.samples, cap_on, end)), default=0)
    await asyncio.gather(capped.finish(10), clean.finish(10))
    await publisher.stop()
    await room.disconnect()
