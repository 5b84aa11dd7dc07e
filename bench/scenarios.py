"""The benchmark scenarios: which rooms, which tracks, which load steps; and one scenario run end to end.

Owns the four scenarios of issue 4 and what each measures:
- ``fanout``: one video publisher -> S subscribers in one room on one worker (``--steps`` ramps S up on the same
  server; ``--find-capacity`` keeps adding subscribers until loss reaches 0.5 % or the generator is the bottleneck);
- ``conference``: N participants, each publishes audio + video and receives everyone else;
- ``audio``: many small audio rooms (``--room-size`` participants each, everyone publishes and receives);
- ``scale``: the fanout load split over 1..W workers (one room per worker), a fresh server per W.
Each step is one :func:`bench.session.measure`; the limit loop (``bench.limit``) is measured after the server is
stopped, in the same run, with the same generator, packet size and SRTP profile.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

import fastpath
from bench._loadgen import LoadGen
from bench.limit import LIMIT_SSRC_BASE, LimitProcess
from bench.net import DEFAULT_SOURCE_NET, GeneratorSocket, participant_address, source_network
from bench.peer import SRTP_PROFILES
from bench.probe import ProcProbe
from bench.profile import WorkerProfiler
from bench.remote import RemoteServer, SignalingSession
from bench.server import BenchServer, plan_cores
from bench.session import Measurement, ParticipantSpec, RoomSpec, Session, TrackSpec, measure
from bench.tcp_bridge import TcpBridge
from control.config import SRTP_CRYPTO

log = logging.getLogger("bench")

SCENARIOS = ("fanout", "conference", "audio", "scale")
CAPACITY_LOSS_PCT = 0.5
STEAL_RETRY_PCT = 3.0  # a capacity step that lost packets while the host stole this much is measured again
STEAL_RETRIES = 2
# A quarter of the generator's 64 MB receive buffer: far more than one fan-out burst (1,400 datagrams of ~2.3 kB
# truesize each), so only a generator that falls behind over time reaches it.
GENERATOR_BACKLOG_BYTES = 16 << 20


@dataclass
class Options:
    scenario: str
    subscribers: int = 10
    seconds: float = 3.0
    workers: int = 1
    srtp: str = "cm80"
    rate: float = 156.0  # packets/s per video track; 0 = flat out
    size: int = 1200
    steps: int = 1
    find_capacity: bool = False
    capacity_step: int = 200
    room_size: int = 4
    verify_every: int = 1
    simulcast: bool = False  # video tracks publish three layers (bench.session.SIMULCAST_LAYERS)
    downlink_loss: float = 0.0  # % of the packets to subscribers the generator drops and NACKs (LoadGen)
    uplink_loss: float = 0.0  # % of the publishers' packets the generator drops; it answers the server's NACKs
    downlink_cap: float = 0.0  # kbit/s: a token-bucket downlink for ``capped`` % of the subscribers (LoadGen)
    capped: float = 0.0  # % of the subscribers with the capped downlink
    twcc_feedback: bool = False  # subscribers answer with transport-wide CC feedback (on with a downlink cap)
    limit: bool = True
    aiortc: bool = False
    profile_worker: str | None = None  # output file
    url: str | None = None  # a running server (ws://HOST:PORT) instead of one started here
    source_net: str | None = None  # --url: the network the participants send from (default 127.77.0.0/16)
    api_key: str = "devkey"
    api_secret: str = "secret"
    # The fast-path switches (control/config.py): the server's workers and the limit loop get gso, hmac_batch and
    # srtp_crypto (this process's generator srtp_crypto too); gro is the generator socket's UDP_GRO (bench.net).
    gso: bool = True
    hmac_batch: bool = True
    srtp_crypto: str = "mediarouter"
    gro: bool = True
    rx_hold_ms: int = 0  # the workers' rx_hold_ms (docs/PERFORMANCE.md, Wake-ups)
    spread: bool = False  # fanout: one room over two workers against the same room on one (bench.spread)
    tcp: bool = False  # fanout: the subscribers over ICE-TCP (bench.tcp_bridge), after the same run over UDP
    tcp_listen: bool = False  # the workers listen on ICE-TCP even without --tcp (the UDP half of a --tcp run)
    janus: bool = False  # fanout: the same loads through Janus's streaming plugin too (bench.janus)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r} (choose from {', '.join(SCENARIOS)})")
        if self.srtp not in SRTP_PROFILES:
            raise ValueError(f"unknown SRTP profile {self.srtp!r} (choose from {', '.join(SRTP_PROFILES)})")
        if self.subscribers < 1 or self.workers < 1 or self.steps < 1 or self.room_size < 2:
            raise ValueError("subscribers, workers and steps must be >= 1 and room size >= 2")
        if self.seconds <= 0 or self.rate < 0 or not 40 <= self.size <= 1400:
            raise ValueError("seconds > 0, rate >= 0 and size in 40..1400 bytes required")
        if self.simulcast and (self.rate == 0 or self.scenario == "audio"):
            raise ValueError("--simulcast needs video at a paced --rate (flat out, each layer would be a "
                             "publisher of its own) and a scenario with video")
        if not 0 <= self.downlink_loss <= 50 or not 0 <= self.uplink_loss <= 50:
            raise ValueError("--downlink-loss and --uplink-loss must be in 0..50 %")
        if self.downlink_cap < 0 or not 0 <= self.capped <= 100 or bool(self.downlink_cap) != bool(self.capped):
            raise ValueError("--downlink-cap KBPS and --capped PCT (0..100) go together")
        if (self.downlink_cap or self.twcc_feedback) and (self.url or self.scenario != "fanout"):
            raise ValueError("--downlink-cap and --twcc-feedback are for fanout on a server the benchmark starts")
        if self.uplink_loss and self.rate == 0:
            raise ValueError("--uplink-loss needs a paced --rate (flat out, the publishers keep no history)")
        if self.srtp_crypto not in SRTP_CRYPTO:
            raise ValueError(f"srtp_crypto must be one of {', '.join(SRTP_CRYPTO)}, not {self.srtp_crypto!r}")
        if self.url and self.scenario == "scale":
            raise ValueError("scale starts 1..W workers itself; it cannot run against --url")
        if self.spread and (self.scenario != "fanout" or self.workers != 2 or self.url or self.find_capacity
                            or self.steps != 1 or self.rate == 0):
            raise ValueError("--spread is for fanout on --workers 2 at a paced --rate, one step, on a server the "
                             "benchmark starts (with --url: docs/PERFORMANCE.md, One room on two workers)")
        if self.tcp and (self.scenario != "fanout" or self.url or self.spread or self.find_capacity):
            raise ValueError("--tcp is for fanout on a server the benchmark starts, without --spread or "
                             "--find-capacity")
        if self.janus and (self.scenario != "fanout" or self.url or self.spread or self.find_capacity
                           or self.rate == 0 or self.simulcast or self.srtp != "cm80"):
            raise ValueError("--janus is for fanout at a paced --rate with cm80, on a server the benchmark starts: "
                             "Janus's mountpoint takes one AES-CM-80 stream "
                             "(docs/PERFORMANCE.md, Janus side by side)")
        if self.source_net is not None:
            if not self.url:
                raise ValueError("--source-net is for --url: a server the benchmark starts itself is on loopback")
            source_network(self.source_net)  # a clear error now rather than at the first participant

    @property
    def flat_out(self) -> bool:
        return self.rate == 0


def generator_bound(m: Measurement, flat_out: bool) -> tuple[bool, str]:
    """Whether the generator rather than the server limited this measurement, and why."""
    wall = m.seconds
    if m.generator_drops > 0.001 * max(m.received, 1):
        return True, f"generator receive queue dropped {m.generator_drops} datagrams"
    busy = m.generator_cpu_s / wall
    if m.generator_rx_backlog > GENERATOR_BACKLOG_BYTES:
        return True, f"{m.generator_rx_backlog} bytes waiting in the generator's receive queue at the end"
    if not flat_out:
        if m.generator_behind > 0.01 * max(m.sent, 1):
            return True, f"{m.generator_behind} packets due but not sent ({m.sent} sent)"
        if busy > 0.9:
            return True, f"generator CPU {busy:.0%} of its core"
        return False, ""
    server_busy = max(m.worker_cpu_s) / wall if m.worker_cpu_s else 0.0
    if m.server_drops == 0 and busy > 0.9 and server_busy < 0.85:
        return True, f"generator CPU {busy:.0%}, worker {server_busy:.0%}, no drops at the worker socket"
    return False, ""


def point(m: Measurement, load: int, flat_out: bool) -> dict[str, Any]:
    bound, why = generator_bound(m, flat_out)
    return {
        "load": load,
        "seconds": round(m.seconds, 3),
        "forwarded_pps": round(m.forwarded_pps, 1),
        "mbps": round(m.mbps, 2),
        "cpu_us_per_packet": round(m.cpu_us_per_packet, 3),
        "cpu_us_per_packet_ticks": round(1e6 * sum(m.server_cpu_s) / max(m.received, 1), 3),  # cross-check
        "loss_pct": round(m.loss_pct, 4),
        "latency_ms_p50": m.latency_ms_p50,
        "latency_ms_p99": m.latency_ms_p99,
        "worker_cpu_pct": [round(100 * c / m.seconds, 1) for c in m.worker_cpu_s],
        "rss_mb_per_worker": [round(r / 2**20, 1) for r in m.server_rss],
        "sent": m.sent,
        "expected": m.expected,
        "received": m.received,
        "sequence_gaps": m.gaps,
        "reordered": m.reordered,
        "streams": m.streams,
        "stream_received_min": m.stream_received_min,
        "stream_received_max": m.stream_received_max,
        "streams_with_gaps": m.streams_with_gaps,
        "streams_with_reordering": m.streams_with_reordering,
        "verified": m.verified,
        "auth_failed": m.auth_failed,
        "bad_payload": m.bad_payload,
        "worker_socket_drops": m.server_drops,
        "generator_socket_drops": m.generator_drops,
        "generator_cpu_pct": round(100 * m.generator_cpu_s / m.seconds, 1),
        "generator_late_packets": m.generator_late,
        "generator_unsent_packets": m.generator_behind,
        "generator_rx_backlog_bytes": m.generator_rx_backlog,
        "generator_bound": bound,
        "generator_bound_reason": why,
        "udp_rcvbuf_errors_host": m.snmp_rcvbuf_errors,
        "host_steal_pct": m.steal_pct,
        "worker_backlog_drain_s": m.backlog_drain_s,
        "downlink_dropped": m.downlink_dropped,
        "nacks_sent": m.nacks_sent,
        "nacked": m.nacked,
        "uplink_dropped": m.uplink_dropped,
        "uplink_retransmitted": m.uplink_retransmitted,
        "uplink_nack_missing": m.uplink_nack_missing,
        "recovered_pct": m.recovered_pct,
        "generator_counters": m.counters,
    }


def _layout(opts: Options, subscribers: int, workers: int) -> list[RoomSpec]:
    video = TrackSpec("video", opts.size, opts.rate, simulcast=opts.simulcast)
    if opts.scenario in ("fanout", "scale"):
        rooms = []
        for w in range(workers):
            n = subscribers // workers + (1 if w < subscribers % workers else 0)
            rooms.append(RoomSpec(w, (ParticipantSpec((video,), receives=False),)
                                  + tuple(ParticipantSpec() for _ in range(n))))
        return rooms
    if opts.scenario == "conference":
        audio = TrackSpec.audio(50.0 if opts.rate else 0.0)
        return [RoomSpec(0, tuple(ParticipantSpec((audio, video)) for _ in range(subscribers)))]
    # audio: rooms of room_size, spread over the workers
    audio = TrackSpec("audio", min(opts.size, 100) if opts.size != 1200 else 100, 50.0 if opts.rate else 0.0)
    count = max(1, subscribers // opts.room_size)
    return [RoomSpec(r % workers, tuple(ParticipantSpec((audio,)) for _ in range(opts.room_size)))
            for r in range(count)]


def _steps(opts: Options) -> list[int]:
    if opts.find_capacity:
        return list(range(opts.capacity_step, opts.subscribers + 1, opts.capacity_step)) or [opts.subscribers]
    n = opts.steps
    return sorted({max(1, round(opts.subscribers * (i + 1) / n)) for i in range(n)})


async def _measure_session(server: BenchServer, session: Session, opts: Options) -> Measurement:
    return await measure(session.gen, server.probe(), session.net.port, session.fanout, opts.seconds,
                         verify_every=opts.verify_every)


async def run_server_steps(opts: Options) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The mediarouter part of a scenario: every load step, as report points."""
    points: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    worker_counts = list(range(1, opts.workers + 1)) if opts.scenario == "scale" else [opts.workers]
    for workers in worker_counts:
        server: Any = (RemoteServer(opts.url, opts.source_net, profile_worker=bool(opts.profile_worker))
                       if opts.url else BenchServer(workers, gso=opts.gso, hmac_batch=opts.hmac_batch,
                                                    srtp_crypto=opts.srtp_crypto, ice_tcp=opts.tcp or opts.tcp_listen,
                                                    rx_hold_ms=opts.rx_hold_ms))
        await server.start()
        # generator None: not pinned (the server's workers run on another machine's cores)
        info["cores"] = {"generator": server.plan.generator if server.plan.generator >= 0 else None,
                         "workers": server.plan.workers,
                         "shared": server.plan.shared}
        if opts.url:
            info["url"] = opts.url
            info["server_on_this_host"] = server.target.local
            info["source_net"] = str(_source_net(opts))
        layout_final = _layout(opts, opts.subscribers, workers)
        sizes = {"max_participants": sum(len(r.participants) for r in layout_final) + 8,
                 "max_streams": sum(len(t.layers) for r in layout_final for p in r.participants
                                    for t in p.tracks) + 8,
                 # with downlinks every video receiver has an RTX stream too
                 "max_receivers": (2 if opts.downlink_cap or opts.twcc_feedback else 1) * _receivers(layout_final)
                 + 8}
        bridge = None
        if opts.tcp:
            bridge = TcpBridge()
            await bridge.start()
        session = (SignalingSession(server, opts.srtp, api_key=opts.api_key, api_secret=opts.api_secret,
                                    source_net=_source_net(opts), gro=opts.gro, **sizes)
                   if opts.url else Session(server, opts.srtp, gro=opts.gro, tcp_bridge=bridge, **sizes))
        session.gen.set_downlink_loss(opts.downlink_loss)
        if isinstance(session, Session) and (opts.twcc_feedback or opts.downlink_cap):
            session.set_downlinks(feedback=True, cap_kbps=opts.downlink_cap, capped_pct=opts.capped)
        session.gen.set_uplink_loss(opts.uplink_loss)
        try:
            steps = _steps(opts) if opts.scenario == "fanout" else [opts.subscribers]
            room = None
            for load in steps:
                if opts.scenario == "fanout":
                    if room is None:
                        room = await session.add_room(_layout(opts, load, 1)[0])
                    else:
                        await session.extend(room, [ParticipantSpec()] * (load - session.receivers))
                else:
                    for spec in _layout(opts, load, workers):
                        await session.add_room(spec)
                profiler = None
                # The last step is profiled (a capacity search does not know which step is last: each one is).
                if (opts.profile_worker and (opts.find_capacity or load == steps[-1])
                        and workers == worker_counts[-1]):
                    profiler = WorkerProfiler(server.worker_pids()[0], opts.profile_worker, opts.seconds)
                    profiler.start()
                bridge_before = await bridge.stats() if bridge is not None else None
                m = await _measure_session(server, session, opts)
                p = point(m, load, opts.flat_out)
                if bridge is not None and bridge_before is not None:
                    p["tcp_bridge"] = _bridge_figures(bridge_before, await bridge.stats())
                discarded: list[float] = []
                while (opts.find_capacity and p["loss_pct"] >= CAPACITY_LOSS_PCT
                       and p["host_steal_pct"] >= STEAL_RETRY_PCT and len(discarded) < STEAL_RETRIES):
                    # Lost packets while the hypervisor took the vCPUs away: that says nothing about the server,
                    # so the same step is measured again (the retries and every discarded steal figure are kept).
                    log.warning("load %d: %.2f %% loss with %.1f %% host steal; measuring again", load,
                                p["loss_pct"], p["host_steal_pct"])
                    discarded.append(p["host_steal_pct"])
                    m = await _measure_session(server, session, opts)
                    p = point(m, load, opts.flat_out)
                p["steal_retries_discarded_pct"] = discarded
                if profiler is not None:
                    info["profile"] = profiler.finish()
                p["worker_restarts"] = server.worker_restarts()
                p["workers"] = workers
                p["receivers"] = session.receivers
                p["participants"] = len(session.participants)
                p["setup_s"] = round(session.setup_s, 2)
                if isinstance(session, Session) and session.downlinks:
                    p["downlinks"] = await session.downlink_report(m.seconds)
                points.append(p)
                log.info("%s load %d (%d workers): %.0f pkt/s, %.2f us/pkt, loss %.3f %%, p50 %s ms%s",
                         opts.scenario, load, workers, p["forwarded_pps"], p["cpu_us_per_packet"], p["loss_pct"],
                         p["latency_ms_p50"], " [generator bound]" if p["generator_bound"] else "")
                if p["worker_restarts"]:
                    log.error("a worker died during load %d; later steps are skipped", load)
                    break
                if opts.find_capacity and (p["loss_pct"] >= CAPACITY_LOSS_PCT or p["generator_bound"]):
                    break
        finally:
            if isinstance(session, SignalingSession):
                await session.leave_all()
            session.close()
            if bridge is not None:
                await bridge.close()
            await server.stop()
    return points, info


def _bridge_figures(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The client side of ICE-TCP over one measurement (bench.tcp_bridge: its own process, not the worker's CPU):
    its CPU per frame it passed on, over the whole measurement (warm-up and drain included)."""
    frames = after["frames_down"] - before["frames_down"]
    cpu, wall = after["cpu_s"] - before["cpu_s"], after["wall_s"] - before["wall_s"]
    return {"connections": after["connections"], "frames_down": frames,
            "frames_up": after["frames_up"] - before["frames_up"],
            "dropped_down": after["dropped_down"] - before["dropped_down"],
            "cpu_pct": round(100 * cpu / max(wall, 1e-9), 1),
            "cpu_us_per_frame": round(1e6 * cpu / max(frames, 1), 3)}


def _source_net(opts: Options) -> IPv4Network:
    return source_network(opts.source_net) if opts.source_net else DEFAULT_SOURCE_NET


def _receivers(rooms: list[RoomSpec]) -> int:
    total = 0
    for room in rooms:
        tracks = sum(len(p.tracks) for p in room.participants)
        for p in room.participants:
            if p.receives:
                total += tracks - len(p.tracks)
    return total


def fanout_degree(opts: Options) -> int:
    if opts.scenario in ("fanout", "scale"):
        return opts.subscribers
    if opts.scenario == "conference":
        return opts.subscribers - 1
    return opts.room_size - 1


async def run_limit(opts: Options, dests_count: int, size: int) -> dict[str, Any]:
    """The limit loop, 1 -> ``dests_count`` destinations at the scenario's per-stream rate (0 = flat out),
    measured like a worker."""
    profile = SRTP_PROFILES[opts.srtp][1]
    n = fastpath.KEY_LENGTHS[profile]
    rx_key, tx_key = os.urandom(n), os.urandom(n)
    plan = plan_cores(1)
    net = GeneratorSocket(gro=opts.gro)
    gen = LoadGen(net.fileno(), 1, dests_count, 0)
    rate = opts.rate if opts.scenario != "audio" else (50.0 if opts.rate else 0.0)
    warmup, drain = 0.5, 0.3
    dests = [(participant_address(1 + k), net.port) for k in range(dests_count)]
    limit = LimitProcess(plan.workers[0], profile, rx_key, tx_key, dests, warmup + opts.seconds + drain + 1.0,
                         gso=opts.gso, hmac_batch=opts.hmac_batch, srtp_crypto=opts.srtp_crypto)
    original = os.sched_getaffinity(0)
    try:
        port = limit.start()
        if not plan.shared:
            os.sched_setaffinity(0, {plan.generator})
        gen.add_sender(participant_address(0), "127.0.0.1", port, fastpath.SrtpContext(profile, rx_key, True),
                       0x1234, 96, size - 12, rate, video=True, clock_rate=90000)
        for k in range(dests_count):
            gen.add_receiver(LIMIT_SSRC_BASE + k, fastpath.SrtpContext(profile, tx_key, False), 0)
        limit.go()
        profiler = None
        if opts.profile_worker:
            profiler = WorkerProfiler(limit.pid, opts.profile_worker + "-limit", opts.seconds)
            profiler.start()
        m = await measure(gen, ProcProbe([limit.pid], [port]), net.port, [dests_count], opts.seconds,
                          warmup=warmup, drain=drain, verify_every=opts.verify_every)
        counters = await asyncio.to_thread(limit.result, opts.seconds + 10)
    finally:
        limit.stop()
        net.close()
        os.sched_setaffinity(0, original)
    p = point(m, dests_count, opts.flat_out)
    p["limit_counters"] = counters
    if profiler is not None:
        p["profile"] = profiler.finish()
    return p
