"""A screen share on a capped link: the stream allocator lowers its frame rate before its resolution.

A publisher on the server's network shares a "screen" (the noise frames of impaired.SimulcastPublisher with source
SCREEN_SHARE: the `livekit` SDK sends two simulcast layers, at 3 and 15 fps, each with three VP8 temporal layers,
the top one about 1.5 Mbit/s); subscriber ``capped`` in a client host whose downlink is capped at ``CAP_KBIT``
(token bucket with a 500 ms queue, so that the switch to the cap is not a burst of loss: the impairment relay,
tests/netimpair.py) for ``CAP_S`` seconds, then uncapped for ``AFTER_S``. The cap holds the top layer's lower
temporal layers but not all of it: the subscriber keeps the top layer at a lower frame rate (docs/FORWARDING.md,
VP8 payload descriptor).

Reports per second from the moment the cap goes on: the subscriber's frames, the kbit/s offered at its link, the
worker's estimate, layers ("p": paused), the consumer's temporal cap and the probes; and the TIDs the producer
received.
"""

from __future__ import annotations

import asyncio
from typing import Any

from impaired import RemoteSubscriber, SimulcastPublisher, cap_and_lift, sender_view, until_video, window
from netimpair import Rule

ROOM = "e2e-temporal"
CAP_KBIT, CAP_S, AFTER_S = 1000, 14, 15


def temporal_view(stats: dict[str, Any]) -> dict[str, Any]:
    """The consumer's temporal cap (3: all) and pictures dropped above it, and the probes toward the subscriber
    (clusters sent, results, raises, the last result in kbit/s), from its transport stats."""
    media = stats.get("sub", {}).get("media", {})
    view = {"probes": [media.get("probe_clusters", 0), media.get("bwe_probe_results", 0),
                       media.get("bwe_probe_raises", 0), round(media.get("bwe_probe_bps", 0) / 1000)]}
    for consumer in stats.get("sub", {}).get("consumers", {}).values():
        if "temporal_layer" in consumer:
            view.update(tid_cap=consumer["temporal_layer"], filtered=consumer.get("drop_temporal_filtered", 0))
    return view


def producer_tids(stats: dict[str, Any]) -> list[list[int]]:
    """Pictures each layer of the publisher's video carried per TID."""
    for producer in stats.get("pub", {}).get("producers", {}).values():
        if producer.get("layers"):
            return [[int(n) for n in layer.get("temporal_pictures", ())] for layer in producer["layers"]]
    return []


async def run(ctx: Any, result: dict[str, Any], cap_s: float = CAP_S, after_s: float = AFTER_S) -> None:
    from common import connect

    room = await connect(ctx.url, ctx.token("pub", ROOM))
    publisher = SimulcastPublisher(room)
    await publisher.publish(screen_share=True)
    host = await ctx.client_host("capped")
    capped = await RemoteSubscriber.start(ctx, host, ROOM, "capped", 20 + 2 + cap_s + after_s + 2)
    await asyncio.wait_for(capped.connected.wait(), 20)
    await until_video(capped)
    result["producer_tids"] = producer_tids(await ctx.worker_stats(ROOM, "pub"))
    cap = Rule(rate_kbit=CAP_KBIT, burst_bytes=16000, queue_ms=500)
    rows, cap_on, cap_off = await cap_and_lift(ctx, host, ROOM, "capped", cap, cap_s, after_s,
                                               lambda stats: {**sender_view(stats), **temporal_view(stats)})

    per_second = []
    for (t0, a, _), (t1, b, worker) in zip(rows, rows[1:], strict=False):
        cs = window(capped.samples, t0, t1)
        per_second.append({
            "t": round(t1 - cap_on, 1), "capped": t1 <= cap_off + 0.5,
            "frames": sum(s["frames"] for s in cs),
            "offered_kbit": round((b["offered_bytes"] - a["offered_bytes"]) * 8 / (t1 - t0) / 1000),
            "worker": worker,
        })
    result["per_second"] = per_second
    result["producer_tids_end"] = producer_tids(await ctx.worker_stats(ROOM, "pub"))
    await capped.finish(10)
    await publisher.stop()
    await room.disconnect()
