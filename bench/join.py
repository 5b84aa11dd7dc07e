"""``python -m bench join --participants N [--url ws://HOST:PORT]``: how fast one room admits N participants.

One publisher joins the room first and sends an Opus-like audio stream (``--media-rate`` packets/s). Then N
subscribers join as fast as the server admits them (at most ``--concurrency`` joins in flight; a ``503`` from the
connection guard is retried after 50 ms and counted), each the whole LiveKit way: ``/rtc`` WebSocket and JoinResponse
(``bench.lk_client`` over ``bench.ws_client``; offering permessage-deflate as browsers do, unless ``--no-deflate``),
the server's subscriber offer answered, the ICE check and the DTLS handshake (``bench.peer``), until the first SRTP
packet of the publisher's stream arrives on its subscriber transport (an RTP packet from the server's port to the
participant's address after DTLS; the benchmark does not decrypt it). Then every participant leaves at once
(LeaveRequest, WebSocket closed), and the leave time is until ``ListParticipants`` (Twirp) shows only the publisher.
The participants' access tokens are minted before the clock starts: an application server issues them, not the
participant.

Printed (and with ``--json`` written): ``joins_per_s`` (N over the time from the first join's start to the last
one's first media), join-to-first-media ``p50``/``p99``/max, the signaling part alone (``/rtc`` to JoinResponse),
``control_cpu_ms_per_join`` (control's CPU time over the join phase, divided by N), control's loop lag
(``/healthz``'s p99 and max over its last minute, read every ``HEALTH_EVERY_S`` during the run: the figures are the
highest seen), ``leave_s`` and ``workers_killed`` (worker restarts during the run: must be 0).

Without ``--url`` the benchmark starts ``python -m control serve`` itself (``--workers``, loopback, its own ports and
key) and stops it at the end; with ``--url`` it uses the running server's ``/healthz`` (control's CPU and loop lag
are there) and ``--api-key``/``--api-secret``. The generator of this process (signaling, ICE, DTLS of N
participants in Python) shares the host with control on loopback: on a host with few cores the figures include
that contention, and ``--url`` from another machine (``--source-net``) removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import uvloop
from livekit.protocol import room as room_pb

import fastpath
from bench import lk_client
from bench.lk_client import LocalTrack, SignalClient, SignalingError
from bench.net import DEFAULT_SOURCE_NET, GeneratorSocket, source_network
from bench.peer import Credentials, ServerParams, SetupError, SyntheticPeer
from bench.ports import free_port_base
from control.auth import create_token
from router.collector import paced_collector

ROOT = Path(__file__).resolve().parent.parent
AUDIO_PT = 111
RETRY_503_S = 0.05
STEP_TIMEOUT_S = 60.0
CONSENT_INTERVAL_S = 5.0
HEALTH_EVERY_S = 5.0
LEAVE_TIMEOUT_S = 120.0
LEAVE_POLL_S = 0.05
STAGE_NAMES = {"offer": "JoinResponse -> offer", "connect": "offer -> ICE+DTLS done", "media": "-> first RTP"}


@dataclass
class JoinOptions:
    participants: int
    url: str | None = None
    workers: int = 1
    concurrency: int = 200
    media_rate: float = 50.0
    api_key: str = "devkey"
    api_secret: str = "secret"
    source_net: str | None = None
    srtp: str = "cm80"
    gro: bool = True
    deflate: bool = True  # the participants offer permessage-deflate, as browsers do

    def __post_init__(self) -> None:
        if self.participants < 1 or self.concurrency < 1 or self.workers < 1:
            raise ValueError("--participants, --concurrency and --workers must be at least 1")
        if not 1 <= self.media_rate <= 1000:
            raise ValueError("--media-rate must be 1..1000 packets/s")
        if self.source_net is not None:
            source_network(self.source_net)


@dataclass
class Joined:
    """One subscriber's times, seconds from the start of its join."""

    signaled_s: float = 0.0
    offered_s: float = 0.0  # the server's subscriber offer arrived
    connected_s: float = 0.0  # ICE and DTLS done, SRTP keyed
    media_s: float = 0.0
    retries_503: int = 0
    error: str = ""


@dataclass
class _Peer:
    client: SignalClient
    address: str
    server: ServerParams | None = None
    consent: bytes = b""
    srtp: Any = None  # fastpath.SrtpContext of what this participant sends (the publisher only)


@dataclass
class _Run:
    opts: JoinOptions
    ws_url: str
    http_url: str
    room: str
    net: GeneratorSocket
    credentials: Credentials
    peers: list[_Peer] = field(default_factory=list)
    lag_p99_ms: float = 0.0
    lag_max_ms: float = 0.0
    health_errors: int = 0


class ControlProcess:
    """``python -m control serve`` on loopback with its own ports and key, for a run without ``--url``."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.api_key, self.api_secret = "bench", uuid.uuid4().hex
        self.http_port = _free_port(socket.SOCK_STREAM)
        self.rtc_port_base = free_port_base(workers)  # UDP and the ICE-TCP listener
        self.log = tempfile.NamedTemporaryFile(prefix="bench-join-control-", suffix=".log", delete=False)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}"

    async def start(self) -> None:
        cmd = [sys.executable, "-m", "control", "serve", "--workers", str(self.workers), "--node-ip", "127.0.0.1",
               "--http-host", "127.0.0.1", "--http-port", str(self.http_port), "--rtc-port-base",
               str(self.rtc_port_base), "--keys", f"{self.api_key}:{self.api_secret}", "--log-level", "warning"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=ROOT, env=env, start_new_session=True)
        try:
            await self._wait_healthy()
        except BaseException:
            await self.stop()  # a server that never came up is not left behind
            raise

    async def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 60.0
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"control exited with {self.process.returncode}; log {self.log.name}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"http://127.0.0.1:{self.http_port}/healthz") as reply:
                        state = await reply.json()
                        if state.get("status") == "ok":
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"control not healthy within 60 s; log {self.log.name}")

    async def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, 15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await asyncio.to_thread(self.process.wait, 5)
        self.process = None


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


async def run_join(opts: JoinOptions) -> dict[str, Any]:
    """One join run: start a server unless ``opts.url``, join, leave, return the figures."""
    server = None if opts.url else ControlProcess(opts.workers)
    if server is not None:
        await server.start()
        opts.api_key, opts.api_secret = server.api_key, server.api_secret
    ws_url = (opts.url or (server.url if server else "")).rstrip("/")
    parsed = urlparse(ws_url)
    http_url = f"http://{parsed.hostname}:{parsed.port or 80}"
    source_net = IPv4Network(opts.source_net) if opts.source_net else DEFAULT_SOURCE_NET
    net = GeneratorSocket(source_net=source_net, gro=opts.gro)
    run = _Run(opts, ws_url, http_url, f"bench-join-{uuid.uuid4().hex[:6]}", net, Credentials.generate())
    try:
        # The generator's collector paced as the server's processes pace theirs (router/collector.py): a full
        # collection of its thousands of participants stalled every join in flight for about 60 ms.
        with paced_collector():
            async with aiohttp.ClientSession() as http:
                return await _measure(run, http)
    finally:
        net.close()
        if server is not None:
            await server.stop()


async def _measure(run: _Run, http: aiohttp.ClientSession) -> dict[str, Any]:
    opts = run.opts
    run.net.start_dispatch()
    before = await _health(http, run.http_url)
    publisher = await _publish(run)
    sender = asyncio.create_task(_send_audio(run, publisher))
    consent = asyncio.create_task(_consent(run))
    monitor = asyncio.create_task(_watch_health(run, http))
    gate = asyncio.Semaphore(opts.concurrency)
    # Each participant's access token, minted before the clock starts: an app server issues it, not the browser.
    tokens = [_subscriber_token(run, i + 1) for i in range(opts.participants)]
    try:
        cpu0 = _cpu_by_kind(await _health(http, run.http_url))
        start = time.monotonic()
        joined = await asyncio.gather(*(_join(run, i + 1, tokens[i], gate) for i in range(opts.participants)))
        join_wall_s = time.monotonic() - start
        after_join = await _health(http, run.http_url)
        cpu1 = _cpu_by_kind(after_join)
        failed = [j.error for j in joined if j.error]
        leave_start = time.monotonic()
        await asyncio.gather(*(p.client.close() for p in run.peers), return_exceptions=True)
        left = await _wait_left(run, http, 1)
        leave_s = time.monotonic() - leave_start
        after = await _health(http, run.http_url)
    finally:
        for task in (sender, consent, monitor):
            task.cancel()
        await asyncio.gather(sender, consent, monitor, return_exceptions=True)
        await publisher.client.close()
        run.net.stop_dispatch()
    ok = [j for j in joined if not j.error]
    media = [j.media_s for j in ok]
    signaled = [j.signaled_s for j in ok]
    stages = {"offer": [j.offered_s - j.signaled_s for j in ok], "connect": [j.connected_s - j.offered_s for j in ok],
              "media": [j.media_s - j.connected_s for j in ok]}
    cpu_joins = {kind: cpu1[kind] - cpu0.get(kind, 0.0) for kind in cpu1}
    restarts = sum(int(w.get("restarts", 0)) for w in after["workers"]) - sum(
        int(w.get("restarts", 0)) for w in before["workers"])
    return {
        "scenario": "join",
        "participants": opts.participants,
        "joined": len(ok),
        "failed": len(failed),
        "failures": sorted(set(failed))[:5],
        "workers": len(after["workers"]),
        "concurrency": opts.concurrency,
        "media_rate_pps": opts.media_rate,
        "deflate": opts.deflate,
        "join_wall_s": round(join_wall_s, 2),
        "joins_per_s": round(len(ok) / join_wall_s, 1) if join_wall_s > 0 else 0.0,
        "join_to_media_ms_p50": round(1000 * percentile(media, 0.50), 1),
        "join_to_media_ms_p99": round(1000 * percentile(media, 0.99), 1),
        "join_to_media_ms_max": round(1000 * max(media, default=0.0), 1),
        "signal_join_ms_p50": round(1000 * percentile(signaled, 0.50), 1),
        "signal_join_ms_p99": round(1000 * percentile(signaled, 0.99), 1),
        "stage_ms": {name: [round(1000 * percentile(v, 0.50), 1), round(1000 * percentile(v, 0.99), 1)]
                     for name, v in stages.items()},
        "retries_503": sum(j.retries_503 for j in joined),
        "control_cpu_ms_per_join": round(1000 * cpu_joins["control"] / max(1, len(ok)), 2),
        "control_cpu_s_joins": round(cpu_joins["control"], 2),
        "control_cpu_s_leaves": round(after["control"]["usage"]["cpu_s"] - cpu1["control"], 2),
        "cpu_ms_per_join": {kind: round(1000 * cpu / max(1, len(ok)), 2) for kind, cpu in cpu_joins.items()},
        "control_loop_lag_ms_p99": round(max(run.lag_p99_ms, after["control"]["loop_lag"]["p99_ms"]), 1),
        "control_loop_lag_ms_max": round(max(run.lag_max_ms, after["control"]["loop_lag"]["max_ms"]), 1),
        "control_rss_mb": round(after["control"]["usage"]["rss_bytes"] / 1e6, 1),
        "leave_s": round(leave_s, 2) if left else None,
        "workers_killed": restarts,
        "health_errors": run.health_errors,
        "server": "started here (loopback)" if not opts.url else opts.url,
    }


async def _health(http: aiohttp.ClientSession, http_url: str) -> dict[str, Any]:
    async with http.get(f"{http_url}/healthz", timeout=aiohttp.ClientTimeout(total=30)) as reply:
        state: dict[str, Any] = await reply.json()
    if "control" not in state or "usage" not in state["control"]:
        raise RuntimeError(f"{http_url}/healthz reports no control usage (a mediarouter older than this benchmark?)")
    return state


def _cpu_by_kind(health: dict[str, Any]) -> dict[str, float]:
    """CPU seconds so far of control, of each worker (``worker N``, from ``/healthz``) and of this generator process
    (all its threads: ``resource.getrusage``)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = {"control": float(health["control"]["usage"]["cpu_s"])}
    for index, worker in enumerate(health["workers"]):
        cpu[f"worker {worker.get('id', index)}"] = float((worker.get("usage") or {}).get("cpu_s", 0.0))
    cpu["generator"] = usage.ru_utime + usage.ru_stime
    return cpu


async def _watch_health(run: _Run, http: aiohttp.ClientSession) -> None:
    """Reads /healthz every HEALTH_EVERY_S: the highest loop-lag p99 and max seen. /healthz lists every room's
    participants (O(N) for control to build), and its lag figures cover the last minute, so a read every few
    seconds sees every stall and costs control less than the joins it measures."""
    while True:
        await asyncio.sleep(HEALTH_EVERY_S)
        try:
            lag = (await _health(http, run.http_url))["control"]["loop_lag"]
        except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError):
            run.health_errors += 1
            continue
        run.lag_p99_ms = max(run.lag_p99_ms, float(lag["p99_ms"]))
        run.lag_max_ms = max(run.lag_max_ms, float(lag["max_ms"]))


def _token(run: _Run, identity: str, **grants: Any) -> str:
    return create_token(run.opts.api_key, run.opts.api_secret, identity=identity, room=run.room, grants=grants)


def _subscriber_token(run: _Run, index: int) -> str:
    return _token(run, f"p{index}", canPublish=False, canSubscribe=True)


async def _signal(run: _Run, token: str, result: Joined | None = None) -> SignalClient:
    """A joined SignalClient; a 503 (the connection guard's caps) is retried."""
    while True:
        client = SignalClient(run.ws_url, token, deflate=run.opts.deflate)
        try:
            await client.connect()
            return client
        except BaseException as exc:
            await client.close()
            if not isinstance(exc, SignalingError) or "HTTP 503" not in str(exc) or result is None:
                raise
            result.retries_503 += 1
            await asyncio.sleep(RETRY_503_S)


async def _publish(run: _Run) -> _Peer:
    """The publisher: joins, adds one audio track, connects its publisher transport."""
    client = await _signal(run, _token(run, "publisher", canPublish=True, canSubscribe=False))
    track = LocalTrack("publisher-audio", "audio", 0x5EED_0001)
    track.sid = (await client.add_track(track)).sid
    address = run.net.address(0)
    peer = SyntheticPeer(run.net, address, run.credentials, run.opts.srtp)
    answer = await client.offer(lk_client.publisher_offer(peer.ice_ufrag, peer.ice_pwd,
                                                          run.credentials.fingerprint, [track]))
    server = lk_client.server_params(answer)
    run.net.accept_from(server.host)
    keys = await peer.connect(server, timeout=STEP_TIMEOUT_S)
    return _Peer(client, address, server, peer.consent_request(),
                 fastpath.SrtpContext(keys.profile, keys.local, True))


async def _send_audio(run: _Run, publisher: _Peer) -> None:
    """The publisher's stream: ``media_rate`` packets/s of 100 bytes, Opus payload type, one SSRC."""
    assert publisher.server is not None
    srtp = publisher.srtp
    dest = (publisher.server.host, publisher.server.port)
    interval = 1.0 / run.opts.media_rate
    seq = 0
    next_at = time.monotonic()
    while True:
        header = struct.pack("!BBHII", 0x80, AUDIO_PT, seq & 0xFFFF, (seq * 960) & 0xFFFFFFFF, 0x5EED_0001)
        run.net.send_from(publisher.address, srtp.protect(header + bytes(88)), dest)
        seq += 1
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _consent(run: _Run) -> None:
    """Consent freshness (RFC 7675) for every connected transport, as a browser sends it."""
    while True:
        await asyncio.sleep(CONSENT_INTERVAL_S)
        for p in run.peers:
            if p.server is not None:
                run.net.send_from(p.address, p.consent, (p.server.host, p.server.port))


async def _join(run: _Run, index: int, token: str, gate: asyncio.Semaphore) -> Joined:
    result = Joined()
    async with gate:
        start = time.monotonic()
        try:
            client = await _signal(run, token, result)
        except (SignalingError, OSError, TimeoutError) as exc:  # the WebSocket is bench.ws_client's, not aiohttp's
            result.error = f"join: {type(exc).__name__}: {exc}"
            return result
        result.signaled_s = time.monotonic() - start
        peer = _Peer(client, run.net.address(index))
        run.peers.append(peer)
        try:
            result.media_s = await _first_media(run, peer, result, start) - start
        except (SignalingError, SetupError, TimeoutError, OSError, RuntimeError) as exc:
            result.error = f"media: {type(exc).__name__}: {exc}"
    return result


async def _first_media(run: _Run, peer: _Peer, result: Joined, start: float) -> float:
    """Answers the subscriber offer, connects ICE and DTLS; returns when the first RTP packet arrived."""
    offer = await peer.client.next_offer(STEP_TIMEOUT_S)
    result.offered_s = time.monotonic() - start
    synthetic = SyntheticPeer(run.net, peer.address, run.credentials, run.opts.srtp)
    await peer.client.answer(lk_client.subscriber_answer(offer.sdp, synthetic.ice_ufrag, synthetic.ice_pwd,
                                                         run.credentials.fingerprint), offer.id)
    server = lk_client.server_params(offer.sdp)
    run.net.accept_from(server.host)
    arrived: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_datagram(data: bytes, addr: tuple[str, int]) -> None:
        # RTP (RFC 3550 version 2, not an RTCP packet type) from the server's port: media.
        if (addr == (server.host, server.port) and len(data) >= 12 and data[0] >> 6 == 2
                and not 192 <= data[1] <= 223 and not arrived.done()):
            arrived.set_result(time.monotonic())
            run.net.unregister(peer.address)

    await synthetic.connect(server, timeout=STEP_TIMEOUT_S)  # unregisters its own route when done
    result.connected_s = time.monotonic() - start
    peer.server, peer.consent = server, synthetic.consent_request()
    run.net.register(peer.address, on_datagram)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        return await arrived


async def _wait_left(run: _Run, http: aiohttp.ClientSession, remaining: int) -> bool:
    """Polls ListParticipants until at most ``remaining`` participants are in the room."""
    token = create_token(run.opts.api_key, run.opts.api_secret, identity="bench-admin", room=run.room,
                         grants={"roomAdmin": True, "roomList": True, "roomJoin": False})
    url = f"{run.http_url}/twirp/livekit.RoomService/ListParticipants"
    # Binary protobuf, as the server SDKs speak Twirp: the JSON form of thousands of ParticipantInfos took control
    # most of a second per poll (protobuf's json_format in Python), competing with the leaves it measures.
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/protobuf"}
    request = room_pb.ListParticipantsRequest(room=run.room).SerializeToString()
    deadline = time.monotonic() + LEAVE_TIMEOUT_S
    while time.monotonic() < deadline:
        async with http.post(url, data=request, headers=headers) as reply:
            body = await reply.read()
        if reply.status == 200 and len(room_pb.ListParticipantsResponse.FromString(body).participants) <= remaining:
            return True
        await asyncio.sleep(LEAVE_POLL_S)
    return False


def format_result(r: dict[str, Any]) -> str:
    """The printed summary of one join run."""
    lines = [
        f"join: {r['joined']} of {r['participants']} participants joined one room on {r['workers']} worker(s) "
        f"({r['server']}; at most {r['concurrency']} joins in flight, {r['retries_503']} retries after a 503; "
        f"signaling {'with' if r.get('deflate') else 'without'} permessage-deflate)",
        f"  joins/s                  {r['joins_per_s']}  ({r['join_wall_s']} s from the first join to the last "
        "first media packet)",
        f"  join -> first media      p50 {r['join_to_media_ms_p50']} ms, p99 {r['join_to_media_ms_p99']} ms, "
        f"max {r['join_to_media_ms_max']} ms",
        f"  /rtc -> JoinResponse     p50 {r['signal_join_ms_p50']} ms, p99 {r['signal_join_ms_p99']} ms",
        "  then, p50 / p99          " + ", ".join(
            f"{STAGE_NAMES[name]} {p50} / {p99} ms" for name, (p50, p99) in r["stage_ms"].items()),
        f"  control CPU per join     {r['control_cpu_ms_per_join']} ms ({r['control_cpu_s_joins']} s for the "
        f"joins, {r['control_cpu_s_leaves']} s for the leaves; RSS {r['control_rss_mb']} MB)",
        "  CPU per join             " + ", ".join(f"{kind} {ms} ms" for kind, ms in r["cpu_ms_per_join"].items())
        + " (the join phase's CPU time of each process, divided by the joins)",
        f"  control loop lag         p99 {r['control_loop_lag_ms_p99']} ms, max {r['control_loop_lag_ms_max']} ms "
        "(/healthz, last minute)",
        f"  leave                    {r['leave_s']} s" if r["leave_s"] is not None else
        f"  leave                    not done within {LEAVE_TIMEOUT_S:.0f} s",
        f"  workers killed           {r['workers_killed']}",
    ]
    if r["failed"]:
        lines.append(f"  FAILED: {r['failed']} joins, e.g. {r['failures']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``python -m bench join ...``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench join", description=__doc__.splitlines()[0])
    ap.add_argument("--participants", type=int, required=True, help="subscribers that join the room")
    ap.add_argument("--url", metavar="ws://HOST:PORT", help="a running mediarouter (default: start one here)")
    ap.add_argument("--workers", type=int, default=1, help="workers of the server started here (default 1)")
    ap.add_argument("--concurrency", type=int, default=200, help="joins in flight at once (default 200)")
    ap.add_argument("--media-rate", type=float, default=50.0, help="the publisher's packets/s (default 50)")
    ap.add_argument("--source-net", metavar="CIDR", help="--url: the network the participants send from")
    ap.add_argument("--api-key", default=os.environ.get("LIVEKIT_API_KEY", "devkey"))
    ap.add_argument("--api-secret", default=os.environ.get("LIVEKIT_API_SECRET", "secret"))
    ap.add_argument("--srtp", choices=("cm80", "gcm"), default="cm80")
    ap.add_argument("--no-deflate", dest="deflate", action="store_false",
                    help="signal without permessage-deflate (as LiveKit's Rust-based SDKs); default: offer it, as "
                         "browsers do")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    try:
        opts = JoinOptions(args.participants, url=args.url, workers=args.workers, concurrency=args.concurrency,
                           media_rate=args.media_rate, api_key=args.api_key, api_secret=args.api_secret,
                           source_net=args.source_net, srtp=args.srtp, deflate=args.deflate)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    try:
        result = uvloop.run(run_join(opts))  # the generator's own loop overhead, as low as the server's
    except (RuntimeError, SignalingError, OSError, aiohttp.ClientError) as exc:
        print(f"bench: the run failed: {exc}", file=sys.stderr)
        return 1
    print(format_result(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0 if not result["failed"] and result["workers_killed"] == 0 else 1
