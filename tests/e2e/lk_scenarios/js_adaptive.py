"""``livekit-client`` in headless Chromium with ``adaptiveStream`` and ``dynacast`` on, subscribing to a Python SDK
publisher's 1280x720 three-layer simulcast camera: the video element is first 160x90 (the client asks for that size;
the server gives the low layer, and dynacast tells the publisher nobody wants its high layer), then alternates
between 1280x720 and 160x90 ``SWITCHES`` times, ``HOLD_S`` seconds each. The page samples the inbound video's
``framesDecoded`` and frame width every 100 ms; the scenario records those samples and the publisher's encoded
frames per layer (rid) before and after the small phase.

Needs what js_client.py needs (Chromium, node, livekit-client and playwright-core from ``make browser-deps``); without
them it records ``skipped`` with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web
from common import Publisher
from impaired import publisher_layers
from js_client import DRIVER, PAGE, node_modules
from livekit import rtc

ROOM = "e2e-js-adaptive"
PAGE_PORT = 8081
SMALL_S = 12  # the element stays 160x90 this long first (dynacast's pause delay is a few seconds)
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
    modules = node_modules()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    node = shutil.which("node")
    if modules is None or chromium is None or node is None:
        result["skipped"] = (f"needs chromium ({chromium}), node ({node}) and livekit-client + playwright-core "
                             f"(make browser-deps; found {modules})")
        return
    host = ctx.url.split("//", 1)[1].rsplit(":", 1)[0]
    app = web.Application()
    app.router.add_get("/", lambda _: web.Response(text=PAGE, content_type="text/html"))
    umd = modules / "livekit-client" / "dist" / "livekit-client.umd.js"
    app.router.add_get("/livekit-client.umd.js", lambda _: web.FileResponse(umd))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, PAGE_PORT).start()
    workdir = tempfile.mkdtemp(prefix="mr-js-adaptive-")
    try:
        room = rtc.Room()  # dynacast on: the publisher obeys SubscribedQualityUpdate
        await room.connect(ctx.url, ctx.token("pub", ROOM), rtc.RoomOptions(dynacast=True, connect_timeout=10))
        publisher = Publisher(room, 1280, 720)
        await publisher.publish(audio=False, simulcast=True)
        script = Path(workdir) / "driver.js"
        script.write_text(DRIVER.replace("seconds: 25", "seconds: 60"))
        env = dict(os.environ, NODE_PATH=str(modules))
        proc = await asyncio.create_subprocess_exec(
            node, str(script), f"http://{host}:{PAGE_PORT}/", ctx.url, ctx.token("js", ROOM), chromium, IN_PAGE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=workdir)

        async def layers_during_small_phase() -> None:
            # The page joins within a few seconds, then holds 160x90 for SMALL_S: read the publisher's layers
            # near the end of that phase, twice 3 s apart.
            await asyncio.sleep(SMALL_S - 1)
            first = await publisher_layers(room)
            await asyncio.sleep(3)
            result["publisher_small"] = [first, await publisher_layers(room)]

        reader = asyncio.create_task(layers_during_small_phase())
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 120)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
        lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
        result["js"] = json.loads(lines[-1]) if lines else {"error": err.decode(errors="replace")[-3000:]}
        await asyncio.gather(reader, return_exceptions=True)
        await publisher.stop()
        await room.disconnect()
    finally:
        await runner.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
