"""``livekit-client`` in headless Chromium with ``adaptiveStream`` and ``dynacast`` on, subscribing to a Python SDK
publisher's 1280x720 three-layer simulcast camera: the video element is first 160x90 (the client asks for that size;
the server gives the low layer, and dynacast tells the publisher nobody wants its high layer), then alternates
between 1280x720 and 160x90 ``SWITCHES`` times, ``HOLD_S`` seconds each. The page samples the inbound video's
``framesDecoded`` and frame width every 100 ms; the scenario records those samples and, once a second during the
small phase, the publisher's encoded frames per layer (rid).

Needs what js_client.py needs (Chromium, node, livekit-client and playwright-core from ``make browser-deps``); without
them it records ``skipped`` with the reason.
"""

from __future__ import annotations

import asyncio
from typing import Any

from common import Publisher
from impaired import publisher_layers
from js_client import Browser
from livekit import rtc

ROOM = "e2e-js-adaptive"
PAGE_PORT = 8081
SMALL_S = 14  # the element stays 160x90 this long first (dynacast's pause delay is 5 s)
SWITCHES = 20
HOLD_S = 1.5

IN_PAGE = """
async ({url, token, seconds}) => {
  const { Room, RoomEvent } = LivekitClient;
  const SMALL_S = @SMALL_S@, SWITCHES = @SWITCHES@, HOLD_S = @HOLD_S@;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const out = {connected: false, samples: [], phase_marks: []};
  const room = new Room({adaptiveStream: true, dynacast: true});
  let track = null, el = null;
  const size = (w, h) => { el.style.width = w + "px"; el.style.height = h + "px"; };
  room.on(RoomEvent.TrackSubscribed, (t) => {
    if (t.kind !== "video" || track) return;
    track = t;
    el = t.attach();
    el.muted = true;
    el.style.display = "block";
    size(160, 90);
    document.body.appendChild(el);
  });
  await room.connect(url, token);
  out.connected = true;
  const t0 = Date.now();
  while (!track && Date.now() - t0 < 20000) await sleep(100);
  if (!track) return out;
  const sample = async () => {
    const report = await track.getRTCStatsReport();
    if (!report) return;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        out.samples.push([Date.now(), s.framesDecoded || 0, s.frameWidth || 0]);
      }
    });
  };
  const hold = async (seconds) => {
    const end = Date.now() + seconds * 1000;
    while (Date.now() < end) { await sample(); await sleep(100); }
  };
  out.phase_marks.push(["small", Date.now()]);
  await hold(SMALL_S);
  for (let i = 0; i < SWITCHES; i++) {
    const big = i % 2 === 0;
    size(big ? 1280 : 160, big ? 720 : 90);
    out.phase_marks.push([big ? "big" : "small", Date.now()]);
    await hold(HOLD_S);
  }
  out.phase_marks.push(["end", Date.now()]);
  await room.disconnect();
  return out;
}
""".replace("@SMALL_S@", str(SMALL_S)).replace("@SWITCHES@", str(SWITCHES)).replace("@HOLD_S@", str(HOLD_S))


async def run(ctx: Any, result: dict[str, Any]) -> None:
    browser = Browser(ctx, PAGE_PORT)
    if (why := browser.missing()) is not None:
        result["skipped"] = why
        return
    try:
        await browser.serve()
        room = rtc.Room()  # dynacast on: the publisher obeys SubscribedQualityUpdate
        await room.connect(ctx.url, ctx.token("pub", ROOM), rtc.RoomOptions(dynacast=True, connect_timeout=10))
        publisher = Publisher(room, 1280, 720)
        await publisher.publish(audio=False, simulcast=True)
        proc = await browser.start(ctx.url, ctx.token("js", ROOM), IN_PAGE, 60)

        async def layers_during_small_phase() -> None:
            # The page joins within a few seconds, then holds 160x90 for SMALL_S: the publisher's encoded frames per
            # layer once a second until the switches start (the test looks for a stop of the 1280 px layer in it).
            series = result["publisher_small"] = []
            loop = asyncio.get_running_loop()
            end = loop.time() + SMALL_S + 1
            while loop.time() < end:
                layers = await publisher_layers(room)
                series.append({rid: layer["frames_encoded"] for rid, layer in layers.items()})
                await asyncio.sleep(1)

        reader = asyncio.create_task(layers_during_small_phase())
        result["js"] = await browser.result(proc, 120)
        await asyncio.gather(reader, return_exceptions=True)
        await publisher.stop()
        await room.disconnect()
    finally:
        await browser.close()
