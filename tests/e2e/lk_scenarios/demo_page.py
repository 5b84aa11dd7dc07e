"""The page at ``GET /`` in headless Chromium, directly and through nginx terminating TLS.

Two pages of the server's own page (control/service/static/) join the room ``demo`` with Chromium's fake camera and
a fake microphone playing a warbling tone, each getting its token from ``GET /dev/token`` (the server runs in
development mode): alice opens ``http://198.51.100.1:7880/`` directly, bob ``https://198.51.100.1:7443/`` through
nginx with the site configuration of docs/deploy.md and a self-signed certificate made here (``wss://`` signaling,
``https://`` page and token; ``--ignore-certificate-errors``). Each page reports the other's video element
(playing, size), the inbound audio energy of the other's microphone, and who the server said was speaking. The
``livekit-client`` script comes from ``livekit_client_url``, pointed at the npm copy ``make browser-deps``
installs, served here over HTTPS.

Without chromium, node or the npm folder the scenario records ``skipped``; without nginx it records ``tls_skipped``
and bob connects directly too.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import ssl
import tempfile
import wave
from pathlib import Path
from typing import Any

from aiohttp import web
from js_client import node_modules
from tls_front import Nginx, nginx_binary, self_signed, site_config

NODE_IP = "198.51.100.1"
TLS_PORT = 7443
SCRIPT_PORT = 8443
DEV_MODE = True
SERVER_ENV = {"MEDIAROUTER_LIVEKIT_CLIENT_URL": f"https://{NODE_IP}:{SCRIPT_PORT}/livekit-client.umd.js"}
SECONDS = 30


def voice_file(path: Path, seconds: float = 4.0, rate: int = 48000) -> Path:
    """A loud warbling tone (a sine gliding around 300 Hz, about -6 dBFS) for Chromium's fake microphone: loud and
    steady enough for the server's speaker detection (the default fake device only beeps), varied enough that the
    browser's noise suppression keeps it."""
    frames = bytearray()
    phase = 0.0
    for i in range(int(seconds * rate)):
        t = i / rate
        phase += 2 * math.pi * (300 + 120 * math.sin(2 * math.pi * 2.5 * t)) / rate
        frames += int(16000 * math.sin(phase)).to_bytes(2, "little", signed=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return path

# Run in each page until both see and hear each other: the page's own state (window.demo, the tiles).
CHECK = """
async () => {
  const d = window.demo;
  const out = {error: d.error, everSpoke: [...d.everSpoke], tiles: {}, audio: {}};
  for (const tile of document.querySelectorAll(".tile")) {
    const v = tile.querySelector("video");
    out.tiles[tile.dataset.identity] = {playing: !v.paused && v.readyState >= 2 && v.currentTime > 0,
                                        width: v.videoWidth, height: v.videoHeight,
                                        audioElement: !!tile.querySelector("audio")};
  }
  if (d.room) {
    for (const p of d.room.remoteParticipants.values()) {
      for (const pub of p.audioTrackPublications.values()) {
        if (!pub.track) continue;
        const report = await pub.track.getRTCStatsReport();
        if (report) report.forEach((s) => {
          if (s.type === "inbound-rtp" && s.kind === "audio") {
            out.audio[p.identity] = {energy: s.totalAudioEnergy || 0, level: s.audioLevel || 0,
                                     packets: s.packetsReceived || 0};
          }
        });
      }
    }
  }
  return out;
}
"""

DRIVER = """
const { chromium } = require("playwright-core");
(async () => {
  const [chromiumPath, insecureOrigin, audioFile, seconds, check, ...urls] = process.argv.slice(2);
  const browser = await chromium.launch({executablePath: chromiumPath, headless: true, args: [
    "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--use-file-for-fake-audio-capture=" + audioFile,
    "--autoplay-policy=no-user-gesture-required", "--ignore-certificate-errors",
    "--unsafely-treat-insecure-origin-as-secure=" + insecureOrigin]});
  const result = {pages: []};
  try {
    const pages = [];
    for (const url of urls) {
      const context = await browser.newContext({ignoreHTTPSErrors: true});
      const page = await context.newPage();
      const logs = [];
      page.on("console", (m) => logs.push((m.type() + ": " + m.text()).slice(0, 300)));
      await page.goto(url);
      pages.push({page, logs, url});
    }
    const fn = eval(check);
    const ids = urls.map((u) => new URL(u).searchParams.get("identity"));
    const done = (states) => states.every((s, i) => {
      const name = ids[ids.length - 1 - i];
      const tile = s.tiles[name];
      const audio = s.audio[name];
      return tile && tile.playing && audio && audio.energy > 0 && s.everSpoke.includes(name);
    });
    const deadline = Date.now() + Number(seconds) * 1000;
    let states = [];
    while (Date.now() < deadline) {
      states = [];
      for (const p of pages) states.push(await p.page.evaluate(fn));
      if (states.length === 2 && done(states)) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    result.seconds = (Date.now() - deadline) / 1000 + Number(seconds);
    result.pages = states.map((s, i) => ({url: pages[i].url, ...s, console_tail: pages[i].logs.slice(-10)}));
    for (const p of pages) await p.page.click("#leave-button", {timeout: 2000}).catch(() => {});  // a clean leave
    await new Promise((r) => setTimeout(r, 500));
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(result) + "\\n");
})().catch((e) => { process.stdout.write(JSON.stringify({error: String(e && e.stack || e)}) + "\\n"); });
"""


async def run(ctx: Any, result: dict[str, Any]) -> None:
    modules = node_modules()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    node = shutil.which("node")
    if modules is None or chromium is None or node is None:
        result["skipped"] = (f"needs chromium ({chromium}), node ({node}) and livekit-client + playwright-core in "
                             f"tests/e2e/js/node_modules (make browser-deps) ({modules})")
        return
    workdir = Path(tempfile.mkdtemp(prefix="mr-demo-"))
    runner: web.AppRunner | None = None
    nginx: Nginx | None = None
    try:
        cert, key = self_signed(NODE_IP, workdir)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        app = web.Application()
        umd = modules / "livekit-client" / "dist" / "livekit-client.umd.js"
        app.router.add_get("/livekit-client.umd.js", lambda _: web.FileResponse(umd))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, NODE_IP, SCRIPT_PORT, ssl_context=tls).start()

        direct = f"http://{NODE_IP}:7880"
        bob_origin = direct
        binary = nginx_binary()
        if binary is None:
            result["tls_skipped"] = "nginx is not installed (Debian package nginx; make browser-deps)"
        else:
            site = site_config(f"{NODE_IP}:{TLS_PORT}", direct, cert, key)
            nginx_dir = workdir / "nginx"
            nginx_dir.mkdir()
            nginx = await Nginx.start(binary, nginx_dir, site, NODE_IP, TLS_PORT)
            bob_origin = f"https://{NODE_IP}:{TLS_PORT}"
        urls = [f"{direct}/?room=demo&identity=alice&join=1", f"{bob_origin}/?room=demo&identity=bob&join=1"]
        script = workdir / "driver.js"
        script.write_text(DRIVER)
        env = dict(os.environ, NODE_PATH=str(modules))
        proc = await asyncio.create_subprocess_exec(
            node, str(script), chromium, direct, str(voice_file(workdir / "voice.wav")), str(SECONDS), CHECK, *urls,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=workdir)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), SECONDS + 40)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
        lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
        result["browser"] = json.loads(lines[-1]) if lines else {"error": err.decode(errors="replace")[-3000:]}
        if nginx is not None:
            result["nginx_access"] = nginx.log("access.log").splitlines()
            result["nginx_error_tail"] = nginx.log("error.log")[-1500:]
    finally:
        if nginx is not None:
            await nginx.stop()
            result["nginx_exit"] = nginx.proc.returncode
        if runner is not None:
            await runner.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
