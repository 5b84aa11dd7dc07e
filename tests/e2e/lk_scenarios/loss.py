"""Loss toward one subscriber: a 720p simulcast publisher on the server's network, one subscriber in a client host
whose downlink drops 5 % of the packets at random and delays them by 50 ms (impairment relay, tests/netimpair.py).

After a warm-up on a clean link (until the subscriber shows 1280 px, at most 20 s) the rule goes on for
``SECONDS``; reports the subscriber's fps, longest freeze and widths over that window, the packets the relay dropped,
the worker's consumer counters over the window (retransmits, NACKs received, PLIs) and retransmissions per lost
packet, and the publisher's layers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from impaired import RemoteSubscriber, SimulcastPublisher, consumer_counters, delta, publisher_layers, summary, window
from netimpair import Rule

ROOM = "e2e-loss"
SECONDS = 25
LOSS = Rule(loss=0.05, delay_ms=50, seed=13)


async def run(ctx: Any, result: dict[str, Any], seconds: float = SECONDS) -> None:
    from common import connect

    room = await connect(ctx.url, ctx.token("pub", ROOM))
    publisher = SimulcastPublisher(room)
    await publisher.publish()
    host = await ctx.client_host("lossy")
    sub = await RemoteSubscriber.start(ctx, host, ROOM, "lossy", 20 + seconds + 3)
    await asyncio.wait_for(sub.connected.wait(), 20)
    for _ in range(40):
        await asyncio.sleep(0.5)
        if sub.recent_width(2) == 1280:
            break
    await asyncio.sleep(3)
    result["clean"] = summary(sub.samples[-3:])  # the same link without the rule, for comparison
    before_relay = (await host.stats())["down"]
    before = consumer_counters(await ctx.worker_stats(ROOM, "lossy"))
    start = time.monotonic()
    await host.set(downlink=LOSS)
    await asyncio.sleep(seconds)
    end = time.monotonic()
    result["publisher"] = await publisher_layers(room)
    await host.set(downlink=Rule())
    after = consumer_counters(await ctx.worker_stats(ROOM, "lossy"))
    after_relay = (await host.stats())["down"]
    worker = delta(after, before)
    lost = after_relay["lost_packets"] - before_relay["lost_packets"]
    offered = after_relay["offered_packets"] - before_relay["offered_packets"]
    result["rule"] = LOSS.to_json()
    result["subscriber"] = summary(window(sub.samples, start + 1, end))
    result["relay"] = {"offered_packets": offered, "lost_packets": lost,
                       "loss_share": round(lost / offered, 4) if offered else None}
    result["worker"] = worker
    result["retransmits_per_lost_packet"] = round(worker["retransmits"] / lost, 2) if lost else None
    await sub.finish(10)
    await publisher.stop()
    await room.disconnect()
