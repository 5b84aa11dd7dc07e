"""Loss toward one subscriber: a 720p simulcast publisher on the server's network, one subscriber in a client host
whose downlink delays packets by 50 ms from the start and, for ``SECONDS``, also drops 5 % of them at random
(impairment relay, tests/netimpair.py).

The delay is on from the start (a subscriber on a 50 ms link): switched on together with the loss, its 50 ms step
reads as queuing to the delay-based estimator, which lowers the layer once. After a warm-up on the link without loss
(until the subscriber shows 1280 px, at most 20 s, then ``CLEAN_S``) the loss goes on for ``SECONDS``. Reports,
for the window without loss (``clean``) and the lossy one (``subscriber``): the subscriber's fps, longest freeze and
widths; ``fps_over_publisher`` (``clean_fps_over_publisher``): the frames the subscriber got over the frames the
publisher encoded of the layer it showed, second by second, from the second second on (on a loaded host the
publisher's encoder, not the link, sets the frame rate), and ``steady_fps_over_publisher`` the same from
``REACT_S`` on (the worker raises the playout delay at the end of the first scoring window with loss: the seconds
before it are the link's start-up); the packets the relay dropped; the worker's consumer counters
over the lossy window (retransmits, how many of them on the RTX stream, NACKs received, NACKed packets not resent
because resent less than an RTT ago, PLIs) and retransmissions per lost packet; libwebrtc's receive counters over it
(frames received, decoded); the publisher's layers; and per second the subscriber's frames and width, the frames
the publisher encoded of that layer, the worker's estimate, loss and layer and the kbit/s it received of each layer.
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
    producer_layer_bytes,
    publisher_layers,
    sender_view,
    summary,
    window,
)
from netimpair import Rule

ROOM = "e2e-loss"
SECONDS = 25
CLEAN_S = 4
REACT_S = 1.5 + 2.0  # the second second, plus one scoring window (router/scores.py SCORE_INTERVAL_S)
DELAY = Rule(delay_ms=50, seed=13)
LOSS = Rule(loss=0.05, delay_ms=50, seed=13)


async def observe(ctx: Any, room: Any, sub: RemoteSubscriber, seconds: float) -> dict[str, Any]:
    """Samples once a second for ``seconds``: the per-second rows, the frames-over-publisher ratio, the window."""
    start = time.monotonic()
    rows: list[tuple[float, dict[str, Any], dict[str, dict[str, Any]]]] = [(start, {}, await publisher_layers(room))]
    received = producer_layer_bytes(await ctx.worker_stats(ROOM, "pub"))
    while time.monotonic() < start + seconds:
        await asyncio.sleep(min(1.0, max(0.0, start + seconds - time.monotonic())))
        view = sender_view(await ctx.worker_stats(ROOM, "lossy"))
        now_received = producer_layer_bytes(await ctx.worker_stats(ROOM, "pub"))
        view["pub_kbit"] = [round((b - a) * 8 / 1000) for a, b in zip(received, now_received, strict=False)]
        received = now_received
        rows.append((time.monotonic(), view, await publisher_layers(room)))
    end = rows[-1][0]
    per_second = []
    encoded = got = 0  # from the second second on
    steady_encoded = steady_got = 0  # from REACT_S on
    for (t0, _, a), (t1, view, b) in zip(rows, rows[1:], strict=False):
        samples = window(sub.samples, t0, t1)
        width = sub.width(samples[-1]) if samples else 0
        rid = next((r for r, layer in b.items() if layer["width"] == width), None)
        layer_frames = b[rid]["frames_encoded"] - a.get(rid, {}).get("frames_encoded", 0) if rid else 0
        frames = sum(s["frames"] for s in samples)
        if t1 > start + 1.5:
            encoded, got = encoded + layer_frames, got + frames
        if t1 > start + REACT_S:
            steady_encoded, steady_got = steady_encoded + layer_frames, steady_got + frames
        per_second.append({"t": round(t1 - start, 1), "frames": frames, "width": width,
                           "gap_s": max((s["gap_s"] for s in samples), default=None),
                           "publisher_frames": layer_frames, "worker": view})
    return {"start": start, "end": end, "per_second": per_second,
            "fps_over_publisher": round(got / encoded, 2) if encoded else None,
            "steady_fps_over_publisher": round(steady_got / steady_encoded, 2) if steady_encoded else None,
            "publisher_fps": {rid: round((layer["frames_encoded"] - rows[0][2].get(rid, {}).get(
                "frames_encoded", 0)) / (end - start), 1) for rid, layer in rows[-1][2].items()}}


async def run(ctx: Any, result: dict[str, Any], seconds: float = SECONDS) -> None:
    from common import connect

    room = await connect(ctx.url, ctx.token("pub", ROOM))
    publisher = SimulcastPublisher(room)
    await publisher.publish()
    host = await ctx.client_host("lossy", downlink=DELAY)
    sub = await RemoteSubscriber.start(ctx, host, ROOM, "lossy", 20 + CLEAN_S + seconds + 3)
    await asyncio.wait_for(sub.connected.wait(), 20)
    for _ in range(40):
        await asyncio.sleep(0.5)
        if sub.recent_width(2) == 1280:
            break
    clean = await observe(ctx, room, sub, CLEAN_S)  # the same link without the loss, for comparison
    result["clean"] = summary(window(sub.samples, clean["start"] + 1, clean["end"]))
    result["clean_fps_over_publisher"] = clean["fps_over_publisher"]
    result["clean_per_second"] = clean["per_second"]
    before_relay = (await host.stats())["down"]
    before = consumer_counters(await ctx.worker_stats(ROOM, "lossy"))
    await host.set(downlink=LOSS)
    lossy = await observe(ctx, room, sub, seconds)
    start, end = lossy["start"], lossy["end"]
    await host.set(downlink=DELAY)
    after = consumer_counters(await ctx.worker_stats(ROOM, "lossy"))
    after_relay = (await host.stats())["down"]
    result["publisher"] = await publisher_layers(room)
    result["publisher_fps"] = lossy["publisher_fps"]
    result["fps_over_publisher"] = lossy["fps_over_publisher"]
    result["steady_fps_over_publisher"] = lossy["steady_fps_over_publisher"]
    result["per_second"] = lossy["per_second"]
    worker = delta(after, before)
    lost = after_relay["lost_packets"] - before_relay["lost_packets"]
    offered = after_relay["offered_packets"] - before_relay["offered_packets"]
    result["rule"] = LOSS.to_json()
    result["subscriber"] = summary(window(sub.samples, start + 1, end))
    result["relay"] = {"offered_packets": offered, "lost_packets": lost,
                       "loss_share": round(lost / offered, 4) if offered else None}
    result["worker"] = worker
    result["retransmits_per_lost_packet"] = round(worker["retransmits"] / lost, 2) if lost else None
    samples = window(sub.samples, start + 1, end)
    if len(samples) >= 2:  # libwebrtc's receive counters over the window: frames assembled, decoded, shown
        first, last = samples[0].get("decoder") or {}, samples[-1].get("decoder") or {}
        result["decoder"] = {k: last.get(k, 0) - first.get(k, 0) for k in last}
        result["decoder"]["frames_shown"] = sum(s["frames"] for s in samples[1:])
    await sub.finish(10)
    await publisher.stop()
    await room.disconnect()
