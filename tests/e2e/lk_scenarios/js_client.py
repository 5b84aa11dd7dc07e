"""The JavaScript SDK (``livekit-client`` in headless Chromium, driven by ``playwright-core``) with a Python SDK peer.

The browser participant goes through the JS connect path (WebSocket on ``/rtc/v1`` fails, ``GET /rtc/v1/validate``
answers 404 with CORS, fallback to ``/rtc`` with ``access_token`` in the query), publishes its fake camera and
microphone, decodes the Python participant's camera, resumes after a dropped signal connection (SimulationScenario
"signal-reconnect": same participant sid, media keeps decoding) and sends a reliable data packet; the Python
participant receives the browser's video, audio and packet, and sends one back.

Needs ``chromium`` (Debian package) and an npm folder with ``livekit-client`` and ``playwright-core``, found in
``$MEDIAROUTER_E2E_NODE_MODULES``, ``tests/e2e/js/node_modules`` (``make browser-deps``) or
``~/.cache/mediarouter-e2e/node_modules``; without them the scenario records
``skipped`` with the reason and does nothing else.
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
from common import Publisher, Receiver, connect, wait_for

ROOM = "e2e-js"
PAGE_PORT = 8080
PAGE = """<!doctype html><html><head><meta charset="utf-8"><script src="/livekit-client.umd.js"></script>
</head><body></body></html>"""

IN_PAGE = """
async ({url, token, seconds}) => {
  const { Room, RoomEvent, createLocalTracks } = LivekitClient;
  const out = {subscribed: [], data: [], remote: [], video: null, connected: false, published: []};
  const room = new Room();
  const videos = [];
  room.on(RoomEvent.TrackSubscribed, (track, pub, participant) => {
    out.subscribed.push(participant.identity + "/" + track.kind + "/" + pub.trackSid);
    const el = track.attach();
    el.muted = true;
    document.body.appendChild(el);
    if (track.kind === "video") videos.push(track);
  });
  room.on(RoomEvent.DataReceived, (payload, participant, kind, topic) => {
    out.data.push([new TextDecoder().decode(payload), participant ? participant.identity : null, topic || ""]);
  });
  await room.connect(url, token);
  out.connected = true;
  const tracks = await createLocalTracks({audio: true, video: {resolution: {width: 320, height: 240}}});
  for (const t of tracks) {
    const pub = await room.localParticipant.publishTrack(t, {simulcast: false});
    out.published.push(pub.trackSid);
  }
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (videos.length) {
      const report = await videos[0].getRTCStatsReport();
      if (report) {
        report.forEach((s) => {
          if (s.type === "inbound-rtp" && s.kind === "video") {
            out.video = {framesDecoded: s.framesDecoded || 0, width: s.frameWidth || 0, height: s.frameHeight || 0};
          }
        });
      }
      if (out.video && out.video.framesDecoded >= 30) break;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const sidBefore = room.localParticipant.sid;
  const framesBefore = out.video ? out.video.framesDecoded : 0;
  const states = [];
  room.on(RoomEvent.Reconnecting, () => states.push("reconnecting"));
  room.on(RoomEvent.SignalReconnecting, () => states.push("signal-reconnecting"));
  room.on(RoomEvent.Reconnected, () => states.push("reconnected"));
  await room.simulateScenario("signal-reconnect");
  const d2 = Date.now() + 15000;
  while (Date.now() < d2 && !states.includes("reconnected")) await new Promise((r) => setTimeout(r, 200));
  await new Promise((r) => setTimeout(r, 3000));
  const report = await videos[0].getRTCStatsReport();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") out.framesAfterResume = s.framesDecoded - framesBefore;
  });
  out.resume = {states, same_sid: sidBefore === room.localParticipant.sid, sid: room.localParticipant.sid};
  await room.localParticipant.publishData(new TextEncoder().encode("from js"),
                                          {reliable: true, destinationIdentities: ["py"], topic: "js"});
  await new Promise((r) => setTimeout(r, 3000));
  out.remote = Array.from(room.remoteParticipants.values()).map((p) => p.identity);
  await room.disconnect();
  return out;
}
"""

DRIVER = """
const { chromium } = require("playwright-core");
(async () => {
  const [pageUrl, wsUrl, token, chromiumPath, fn] = process.argv.slice(2);
  const browser = await chromium.launch({executablePath: chromiumPath, headless: true, args: [
    "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--unsafely-treat-insecure-origin-as-secure=" + new URL(pageUrl).origin]});
  try {
    const page = await browser.newPage();
    const logs = [];
    page.on("console", (m) => logs.push((m.type() + ": " + m.text()).slice(0, 300)));
    await page.goto(pageUrl);
    const result = await page.evaluate(eval(fn), {url: wsUrl, token, seconds: 25});
    result.console_tail = logs.slice(-15);
    process.stdout.write(JSON.stringify(result) + "\\n");
  } finally {
    await browser.close();
  }
})().catch((e) => { process.stdout.write(JSON.stringify({error: String(e && e.stack || e)}) + "\\n"); });
"""


def node_modules() -> Path | None:
    candidates = [os.environ.get("MEDIAROUTER_E2E_NODE_MODULES", ""),
                  str(Path(__file__).resolve().parents[1] / "js" / "node_modules"),  # make browser-deps
                  str(Path.home() / ".cache" / "mediarouter-e2e" / "node_modules")]
    for candidate in candidates:
        path = Path(candidate) if candidate else None
        if path and (path / "livekit-client" / "dist" / "livekit-client.umd.js").is_file() and (
                path / "playwright-core").is_dir():
            return path
    return None


class Browser:
    """What a browser scenario needs: the tools (``missing`` says which are not there), a page server on
    ``host:port`` serving PAGE and the npm copy of livekit-client, and :meth:`start` of the playwright driver that runs
    one in-page function against the server and prints its result as one JSON line."""

    def __init__(self, ctx: Any, port: int) -> None:
        self.modules = node_modules()
        self.chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        self.node = shutil.which("node")
        self.host = ctx.url.split("//", 1)[1].rsplit(":", 1)[0]
        self.port = port
        self.runner: web.AppRunner | None = None
        self.workdir = ""  # made by serve()

    def missing(self) -> str | None:
        if self.modules is None or self.chromium is None or self.node is None:
            return (f"needs chromium ({self.chromium}), node ({self.node}) and livekit-client + playwright-core in "
                    f"$MEDIAROUTER_E2E_NODE_MODULES, tests/e2e/js/node_modules (make browser-deps) or "
                    f"~/.cache/mediarouter-e2e/node_modules ({self.modules})")
        return None

    async def serve(self) -> None:
        assert self.modules is not None
        self.workdir = tempfile.mkdtemp(prefix="mr-js-")
        app = web.Application()
        app.router.add_get("/", lambda _: web.Response(text=PAGE, content_type="text/html"))
        umd = self.modules / "livekit-client" / "dist" / "livekit-client.umd.js"
        app.router.add_get("/livekit-client.umd.js", lambda _: web.FileResponse(umd))
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()

    async def start(self, ws_url: str, token: str, in_page: str, seconds: float) -> asyncio.subprocess.Process:
        assert self.node is not None and self.chromium is not None
        script = Path(self.workdir) / "driver.js"
        script.write_text(DRIVER.replace("seconds: 25", f"seconds: {seconds}"))
        env = dict(os.environ, NODE_PATH=str(self.modules))
        return await asyncio.create_subprocess_exec(
            self.node, str(script), f"http://{self.host}:{self.port}/", ws_url, token, self.chromium, in_page,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=self.workdir)

    @staticmethod
    async def result(proc: asyncio.subprocess.Process, timeout_s: float) -> dict[str, Any]:
        """The in-page function's result (or ``{"error": ...}``), the driver killed after ``timeout_s``."""
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
        lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {"error": err.decode(errors="replace")[-3000:]}

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


async def run(ctx: Any, result: dict[str, Any]) -> None:
    browser = Browser(ctx, PAGE_PORT)
    if (why := browser.missing()) is not None:
        result["skipped"] = why
        return
    try:
        await browser.serve()
        room_py = await connect(ctx.url, ctx.token("py", ROOM))
        publisher = Publisher(room_py, 320, 240)
        await publisher.publish()
        receiver = Receiver(room_py).attach()
        proc = await browser.start(ctx.url, ctx.token("js", ROOM), IN_PAGE, 25)

        async def greet_js() -> None:
            await wait_for(lambda: any(p.identity == "js" for p in room_py.remote_participants.values()), 30)
            await asyncio.sleep(2)
            await room_py.local_participant.publish_data(b"from py", reliable=True, destination_identities=["js"],
                                                         topic="py")

        greeter = asyncio.create_task(greet_js())
        result["js"] = await browser.result(proc, 90)
        greeter.cancel()
        await wait_for(lambda: bool(receiver.data), 5)
        result["py_video"] = dict(receiver.video)
        result["py_audio"] = dict(receiver.audio)
        result["py_data"] = receiver.data
        await receiver.stop()
        await publisher.stop()
        await room_py.disconnect()
    finally:
        await browser.close()
