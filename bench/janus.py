"""Janus side by side: the same fan-out, the same generator, Janus's streaming plugin instead of mediarouter.

Why this exists: a CPU figure per forwarded packet means little on its own; measured in the same run, on the same
core, with the same generator and the same SRTP work as a well-known C SFU, it says how mediarouter compares
(``python -m bench fanout --janus``; docs/PERFORMANCE.md, Janus side by side).

Owns running Janus and measuring it (bench/janus_viewer.py owns its configuration files, the HTTP API flow of a
viewer and the viewer's side of ICE):
- the measured run (:func:`measure_janus`), inside a network namespace of its own (``unshare --net``: ``lo`` up and
  an interface, dummy or veth, with the TEST-NET-2 address 198.51.100.1, which Janus takes as its ICE candidate:
  Janus gathers no candidates on loopback). The generator's participants send from TEST-NET-3 addresses
  (203.0.113.0/24, local behind that interface: libnice binds its sockets to it). The publisher sends SRTP
  (AES-CM-80) to the mountpoint, as a WebRTC publisher sends SRTP to mediarouter, and each viewer receives over
  DTLS-SRTP, without header extensions or TWCC (as the bench's viewers of mediarouter). Janus is pinned to the
  worker's core with ``taskset`` and its CPU (all threads) read from ``/proc/<pid>`` over the measured window
  (``bench.session.measure``, as for a worker);
- the outer part (:func:`run_janus`) that starts the inner one and :func:`compare` that puts ``x janus`` (Janus's
  CPU per forwarded packet / mediarouter's, at each load) next to mediarouter's points of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from bench.janus_viewer import (
    HTTP_PORT,
    JANUS_LIB,
    MOUNT_PORT,
    NODE_IP,
    VIDEO_PT,
    HttpTransport,
    JanusApi,
    JanusPeer,
    parse_offer,
    render_answer,
    render_config,
    srtp_key,
)
from bench.peer import ServerParams, SetupError

JANUS_BIN = "janus"
SOURCE_NET = IPv4Network("203.0.113.0/24")  # TEST-NET-3: the generator's participants
CONFIGS = {"default": None, "event_loops=1": 1}  # label -> event_loops (None: Janus's default)
RESULT_MARK = "JANUS-RESULT "


class JanusUnavailable(RuntimeError):
    """Janus cannot run here (package missing, not root, no namespaces); the message says why."""


def janus_missing_reason() -> str | None:
    """Why the Janus comparison cannot run on this host, or None when it can."""
    if shutil.which(JANUS_BIN) is None:
        return "the janus package is not installed (make bench-deps)"
    if not (JANUS_LIB / "plugins" / "libjanus_streaming.so").exists():
        return f"Janus's streaming plugin is missing under {JANUS_LIB}"
    if os.geteuid() != 0:
        return "the Janus comparison runs in a network namespace it creates: needs root"
    for tool in ("unshare", "ip", "taskset"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None



# ---- one Janus process --------------------------------------------------------------------------------------

@dataclass
class JanusProcess:
    """Janus with one configuration, pinned to ``core``; ``stop()`` ends it (and removes its files)."""

    event_loops: int | None
    core: int
    srtp_master: bytes = field(default_factory=srtp_key)
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mrb-janus-", dir="/tmp")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "janus.log"

    def start(self) -> None:
        config = render_config(self.folder, event_loops=self.event_loops, srtp_master=self.srtp_master)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(self.core), JANUS_BIN, "-F", str(self.folder), "-C", str(config), "-o"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # taskset execs janus: same pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def wait_ready(self, timeout: float = 15.0) -> None:
        """Until the HTTP API answers ``info``."""
        import aiohttp

        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise JanusUnavailable(f"Janus exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    async with http.get(f"http://{NODE_IP}:{HTTP_PORT}/janus/info") as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        raise JanusUnavailable(f"Janus's HTTP API did not answer in {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


# ---- inside the namespace -----------------------------------------------------------------------------------

def setup_namespace() -> None:
    """In a fresh network namespace: ``lo`` up, an interface with NODE_IP (a dummy device, or where the kernel has
    no dummy driver one end of a veth pair whose other end stays here too), the participants' network local."""

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    ip("link", "set", "lo", "up")
    try:
        ip("link", "add", "jb0", "type", "dummy")
    except subprocess.CalledProcessError:
        ip("link", "add", "jb0", "type", "veth", "peer", "name", "jb1")
        ip("link", "set", "jb1", "up")
    ip("addr", "add", f"{NODE_IP}/24", "dev", "jb0")
    ip("link", "set", "jb0", "up")
    # On jb0, not lo: libnice binds its sockets to the interface, so the viewers must be local behind it.
    ip("route", "add", "local", str(SOURCE_NET), "dev", "jb0", "table", "local")


class JanusSession:
    """The generator's participants toward one Janus: the publisher on the mountpoint and the viewers."""

    def __init__(self, janus: JanusProcess, api: JanusApi, max_viewers: int, profile: str = "cm80",
                 gro: bool = True) -> None:
        import fastpath
        from bench._loadgen import LoadGen
        from bench.net import GeneratorSocket
        from bench.peer import Credentials

        self.janus = janus
        self.api = api
        self.profile = profile
        self.net = GeneratorSocket(source_net=SOURCE_NET, gro=gro)
        self.net.accept_from(NODE_IP)
        self.gen = LoadGen(self.net.fileno(), 1, max_viewers, max_viewers + 1)
        self.gen.accept_from(self.net.accepted)
        self.credentials = Credentials.generate()
        self.fanout: list[int] = []
        self.viewers = 0
        self.stream = -1
        self._fastpath = fastpath

    def add_publisher(self, rate: float, size: int) -> None:
        ctx = self._fastpath.SrtpContext(1, self.janus.srtp_master, True)  # AES_CM_128_HMAC_SHA1_80
        self.stream = self.gen.add_sender(self.net.address(0), NODE_IP, MOUNT_PORT, ctx, 0x0100_0001, VIDEO_PT,
                                          size - 12, rate, video=True, clock_rate=90000)
        self.fanout.append(0)

    async def extend(self, viewers: int, concurrency: int = 16) -> None:
        gate = asyncio.Semaphore(concurrency)
        self.net.start_dispatch()

        async def one(index: int) -> None:
            async with gate:
                await self._viewer(index)

        try:
            await asyncio.gather(*(one(1 + self.viewers + i) for i in range(viewers - self.viewers)))
        finally:
            self.net.stop_dispatch()
        self.viewers = viewers

    async def _viewer(self, index: int) -> None:
        import fastpath
        from bench.peer import fingerprint_of

        handle = await self.api.attach()
        offer = parse_offer(await self.api.watch(handle))
        address = self.net.address(index)
        peer = JanusPeer(self.net, address, self.credentials, self.profile)
        host, port = offer.candidates[0]
        server = ServerParams(offer.ice_ufrag, offer.ice_pwd, fingerprint_of(offer.fingerprint), host, port)
        answer = render_answer(offer, address=address, port=self.net.port, ice_ufrag=peer.ice_ufrag,
                               ice_pwd=peer.ice_pwd, fingerprint=self.credentials.fingerprint)
        peer.server = server  # answer Janus's checks as soon as they come
        await self.api.start(handle, answer)
        keys = await peer.connect(server, timeout=20.0)
        tx = fastpath.SrtpContext(keys.profile, keys.local, True)
        rx = fastpath.SrtpContext(keys.profile, keys.remote, False)
        self.gen.add_consent(address, host, port, peer.consent_request(), (index % 97) * 0.05)
        self.gen.add_rtcp_endpoint(address, rx)
        self.gen.add_receiver(offer.ssrc, rx, self.stream, report_ctx=tx, report_from=address, report_to=host,
                              report_port=port, reporter_ssrc=0x7000_0000 + index)
        self.fanout[self.stream] += 1

    def close(self) -> None:
        self.net.close()


async def measure_janus(loads: Sequence[int], *, event_loops: int | None, janus_core: int, seconds: float,
                        rate: float, size: int, verify_every: int = 1) -> list[dict[str, Any]]:
    """One Janus with ``event_loops``; the generator's viewers added up to each of ``loads`` and measured there.
    Returns one report point per load (``bench.scenarios.point``) plus Janus's figures."""
    from bench.probe import ProcProbe
    from bench.scenarios import point
    from bench.session import measure

    janus = JanusProcess(event_loops, janus_core)
    http: HttpTransport | None = None
    session: JanusSession | None = None
    poller: asyncio.Task[None] | None = None
    points: list[dict[str, Any]] = []
    try:
        janus.start()
        await janus.wait_ready()
        http = HttpTransport(f"http://{NODE_IP}:{HTTP_PORT}")
        api = JanusApi(http.post, http.get)
        await api.create()
        poller = asyncio.create_task(api.poll())
        session = JanusSession(janus, api, max(loads))
        session.add_publisher(rate, size)
        probe = ProcProbe([janus.pid], [MOUNT_PORT])
        for load in sorted(loads):
            started = time.monotonic()
            await session.extend(load)
            setup_s = time.monotonic() - started
            m = await measure(session.gen, probe, session.net.port, session.fanout, seconds,
                              verify_every=verify_every)
            p = point(m, load, rate == 0)
            p["setup_s"] = round(setup_s, 2)
            p["janus_threads"] = len(os.listdir(f"/proc/{janus.pid}/task"))
            points.append(p)
    except (OSError, SetupError) as exc:
        raise JanusUnavailable(f"{exc}\n{janus.log_tail()}") from exc
    finally:
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poller
        if http is not None:
            await http.close()
        if session is not None:
            session.close()
        janus.stop()
    return points


async def _inner(args: argparse.Namespace) -> dict[str, Any]:
    from fastpath import crypto_kernel

    crypto_kernel.install(srtp_crypto=args.srtp_crypto, hmac_batch=True)
    os.sched_setaffinity(0, {args.generator_core})
    setup_namespace()
    loads = [int(x) for x in args.loads.split(",")]
    out: dict[str, Any] = {}
    for label in args.configs.split(","):
        out[label] = await measure_janus(loads, event_loops=CONFIGS[label], janus_core=args.janus_core,
                                         seconds=args.seconds, rate=args.rate, size=args.size,
                                         verify_every=args.verify_every)
    return out


def inner_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.janus")
    ap.add_argument("--loads", required=True)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=156.0)
    ap.add_argument("--size", type=int, default=1200)
    ap.add_argument("--verify-every", type=int, default=1)
    ap.add_argument("--generator-core", type=int, required=True)
    ap.add_argument("--janus-core", type=int, required=True)
    ap.add_argument("--srtp-crypto", default="mediarouter")
    args = ap.parse_args(argv)
    try:
        result: dict[str, Any] = {"configs": asyncio.run(_inner(args))}
    except Exception as exc:  # noqa: BLE001 - reported to the outer process, which raises it there
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


# ---- outside: run it and compare ------------------------------------------------------------------------------

def run_janus(loads: Sequence[int], *, generator_core: int, janus_core: int, seconds: float, rate: float,
              size: int = 1200, verify_every: int = 1, configs: Sequence[str] = tuple(CONFIGS),
              srtp_crypto: str = "mediarouter", timeout_s: float | None = None) -> dict[str, Any]:
    """Run :func:`measure_janus` for each of ``configs`` in a network namespace of its own (a child process under
    ``unshare --net``); returns {label: [points]}. Raises JanusUnavailable with the reason when it cannot run."""
    reason = janus_missing_reason()
    if reason:
        raise JanusUnavailable(reason)
    bound = timeout_s or 60 + len(configs) * sum(20 + 3 * seconds + n * 0.3 for n in loads)
    cmd = ["unshare", "--net", "--", sys.executable, "-m", "bench.janus", "--loads", ",".join(map(str, loads)),
           "--configs", ",".join(configs), "--seconds", str(seconds), "--rate", str(rate), "--size", str(size),
           "--verify-every", str(verify_every), "--generator-core", str(generator_core), "--janus-core",
           str(janus_core), "--srtp-crypto", srtp_crypto]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child's group: its Janus too
        proc.communicate()
        raise JanusUnavailable(f"the Janus run did not finish in {bound:.0f} s") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for line in out.decode(errors="replace").splitlines():
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK):])
            if "error" in result:
                raise JanusUnavailable(result["error"])
            configs_out: dict[str, Any] = result["configs"]
            return configs_out
    raise JanusUnavailable(f"the Janus run ended with {proc.returncode} and no result: "
                           f"{err.decode(errors='replace')[-800:]}")


def compare(ours: Sequence[dict[str, Any]], janus: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """``x janus`` per configuration and load: Janus's CPU per forwarded packet / mediarouter's, at the loads both
    measured; with both sides' figures, so the ratio can be checked."""
    by_load = {p["load"]: p for p in ours}
    table: dict[str, Any] = {}
    for label, points in janus.items():
        rows = []
        for jp in points:
            mp = by_load.get(jp["load"])
            if mp is None:
                continue
            ratio = jp["cpu_us_per_packet"] / mp["cpu_us_per_packet"] if mp["cpu_us_per_packet"] > 0 else None
            rows.append({"load": jp["load"], "x_janus": round(ratio, 2) if ratio is not None else None,
                         "janus_cpu_us_per_packet": jp["cpu_us_per_packet"],
                         "mediarouter_cpu_us_per_packet": mp["cpu_us_per_packet"],
                         "janus_forwarded_pps": jp["forwarded_pps"], "mediarouter_forwarded_pps": mp["forwarded_pps"],
                         "janus_loss_pct": jp["loss_pct"], "janus_cpu_pct": jp["worker_cpu_pct"][0],
                         "janus_latency_ms_p99": jp["latency_ms_p99"],
                         "janus_generator_bound": jp["generator_bound"]})
        table[label] = rows
    return table


def combine_tables(tables: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The comparison of repeated runs (``--repeat``): per configuration and load the median of each figure,
    ``janus_generator_bound`` if any run was, and every run's ``x janus`` under ``x_janus_runs``."""
    combined: dict[str, Any] = {}
    for label in tables[0]:
        rows = []
        for row in tables[0][label]:
            same = [r for t in tables for r in t.get(label, []) if r["load"] == row["load"]]
            out: dict[str, Any] = {"load": row["load"]}
            for key, value in row.items():
                if key == "load":
                    continue
                if isinstance(value, bool):
                    out[key] = any(r[key] for r in same)
                    continue
                values = [r[key] for r in same if isinstance(r.get(key), int | float)]
                out[key] = round(statistics.median(values), 3) if values else None
            out["x_janus_runs"] = [r["x_janus"] for r in same]
            rows.append(out)
        combined[label] = rows
    return combined


def format_compare(table: dict[str, Any]) -> list[str]:
    lines = []
    for label, rows in table.items():
        for r in rows:
            lines.append(f"x janus {r['x_janus']} at {r['load']} subscribers (Janus {label}): "
                         f"{r['janus_cpu_us_per_packet']} us/pkt at {r['janus_forwarded_pps']:.0f} pkt/s, "
                         f"{r['janus_loss_pct']} % loss, {r['janus_cpu_pct']} % CPU; mediarouter "
                         f"{r['mediarouter_cpu_us_per_packet']} us/pkt at {r['mediarouter_forwarded_pps']:.0f} pkt/s"
                         + (" (GENERATOR BOUND)" if r["janus_generator_bound"] else ""))
    return lines


if __name__ == "__main__":
    sys.exit(inner_main(sys.argv[1:]))
