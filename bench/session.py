"""Rooms of synthetic participants on a running server, and one measured load run over them.

Owns turning a scenario's room layout (who publishes which tracks, who receives whom, on which worker) into server
objects and generator streams: per participant one WebRTC transport (``MediaClient.create_transport``), the
participant's certificate fingerprint given to the server (``MediaClient.connect``, server in the DTLS server role),
a real ICE check and DTLS handshake (``bench.peer``), then producers built from a ``TrackPlan`` constructed here (no
SDP: VP8 pt 96 / Opus pt 111, the SSRC signaled, no header extensions) and consumers with chosen outgoing SSRCs.
Every published track becomes a paced (or flat-out) sender of the generator and every consumer a receiver that
also sends the server an SRTCP receiver report about once a second. A spread room (``RoomSpec.spread``) has its
MediaRouter on every worker, places each participant as control's ``SpreadPolicy("always")`` does and pipes a
producer to a subscriber's worker through control's ``RoomPipes`` before consuming it there. With a
``tcp_bridge`` (``python -m bench fanout --tcp``) the participants that only receive connect over ICE-TCP instead:
their transport is reached through ``bench.tcp_bridge`` (a TCP connection from the participant's address to the
worker's ICE-TCP port), everything else as over UDP.
:func:`measure` runs the generator for warm-up + measurement + drain and reads the kernel's accounting of the
worker processes over the measurement window (``bench.probe``: from ``/proc`` here, or the server's ``/healthz``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

import fastpath
from bench._loadgen import LoadGen
from bench.net import DEFAULT_SOURCE_NET, GeneratorSocket
from bench.peer import Credentials, ServerParams, SetupError, SrtpKeys, SyntheticPeer
from bench.probe import Probe
from bench.server import BenchServer
from bench.tcp_bridge import TcpBridge
from control.rtc.codecs import SUBSCRIBER_TWCC_ID, Codec
from control.rtc.negotiation import TrackPlan
from control.rtc.spread import PipeEnds, RoomPipes, SpreadPolicy, local_ends
from control.workers import procstat
from control.workers.placement import WorkerLoad

VIDEO_PT = 96
RTX_PT = 97  # the RTX payload type (apt 96) of subscribers with downlinks (set_downlinks)
RTX_SSRC_OFFSET = 0x2000_0000  # a consumer's RTX SSRC: its media SSRC (0x4000_0000 and up) plus this
AUDIO_PT = 111
SETUP_CONCURRENCY = 48
REPORTER_SSRC_BASE = 0x7000_0000  # the SSRC a subscribing participant's receiver reports come from


# Simulcast layers, lowest first: (rid, share of the track's packet rate). About what a browser sends for 1.5 Mbit/s
# at the top: 1/10 and 1/3 of the packets at quarter and half resolution.
SIMULCAST_LAYERS = (("q", 0.1), ("h", 1 / 3), ("f", 1.0))


@dataclass(frozen=True)
class TrackSpec:
    kind: str  # "audio" or "video"
    size: int  # RTP packet size without SRTP trailer (header 12 + payload)
    rate: float  # packets per second; 0 = as fast as the generator can
    simulcast: bool = False  # video: three layers (SIMULCAST_LAYERS); subscribers get the top one

    @property
    def layers(self) -> tuple[tuple[str, float], ...]:
        """(rid, share of ``rate``) of each encoding, lowest first; one unnamed encoding without simulcast."""
        return SIMULCAST_LAYERS if self.simulcast else (("", 1.0),)

    @staticmethod
    def video(rate: float, size: int = 1200) -> TrackSpec:
        return TrackSpec("video", size, rate)

    @staticmethod
    def audio(rate: float = 50.0, size: int = 100) -> TrackSpec:
        return TrackSpec("audio", size, rate)


@dataclass(frozen=True)
class ParticipantSpec:
    tracks: tuple[TrackSpec, ...] = ()
    receives: bool = True  # consumes every track of every other participant of its room


@dataclass(frozen=True)
class RoomSpec:
    worker: int  # the room's home worker
    participants: tuple[ParticipantSpec, ...]
    spread: bool = False  # participants over every worker (room spread ``always``), producers piped to them


@dataclass
class _Track:
    producer_id: str
    spec: TrackSpec
    ssrcs: list[int]  # every encoding's, lowest first
    stream: int = -1  # generator sender id of the top encoding: what subscribers receive
    worker: int = 0  # the worker the track is published on
    plan: TrackPlan | None = None


@dataclass
class _Participant:
    index: int
    address: str
    transport_id: str
    spec: ParticipantSpec
    worker: int = 0
    keys: SrtpKeys | None = None
    tracks: list[_Track] = field(default_factory=list)
    consent: bytes = b""
    server: ServerParams | None = None
    tx: Any = None  # fastpath.SrtpContext, outbound (our key)
    rx: Any = None  # fastpath.SrtpContext, inbound (the server's key)


@dataclass
class Room:
    router_id: str
    worker: int
    members: list[_Participant]
    pipes: RoomPipes | None = None  # a spread room's pipes (control/rtc/spread.py), else None


class Session:
    """All rooms of one run on one server, sharing one generator socket and one :class:`LoadGen`."""

    def __init__(self, server: BenchServer, profile: str, *, max_participants: int, max_streams: int,
                 max_receivers: int, source_net: IPv4Network = DEFAULT_SOURCE_NET, gro: bool = True,
                 tcp_bridge: TcpBridge | None = None) -> None:
        self.server = server
        self.tcp_bridge = tcp_bridge
        self.profile = profile
        self.net = GeneratorSocket(source_net=source_net, gro=gro)
        self.gen = LoadGen(self.net.fileno(), max_streams, max_receivers, max_participants)
        self.credentials = Credentials.generate()
        self.participants: list[_Participant] = []
        self.rooms: list[Room] = []
        self.fanout: list[int] = []  # receivers per generator sender stream
        self.receiver_workers: list[int] = []  # the worker each generator receiver is served by
        self._consumed: set[tuple[int, int]] = set()
        self._next_ssrc = 0x0100_0000
        self._next_out_ssrc = 0x4000_0000
        self.setup_s = 0.0
        # Subscribers' links (set_downlinks): TWCC feedback as a browser sends it, a token bucket for a share.
        self.downlink_feedback = False
        self.downlink_cap_kbps = 0.0
        self.capped_pct = 0.0
        self.downlinks: dict[int, int] = {}  # participant index -> LoadGen downlink

    def set_downlinks(self, *, feedback: bool, cap_kbps: float = 0.0, capped_pct: float = 0.0) -> None:
        """Subscribers added from now on answer with transport-wide CC feedback (``feedback``); ``capped_pct`` %
        of them (spread evenly over the participants) get a ``cap_kbps`` token-bucket downlink."""
        self.downlink_feedback = feedback
        self.downlink_cap_kbps = cap_kbps
        self.capped_pct = capped_pct

    def capped(self, index: int) -> bool:
        """Whether participant ``index`` has the capped downlink: ``capped_pct`` % of the indices, evenly."""
        pct = self.capped_pct
        return self.downlink_cap_kbps > 0 and int((index + 1) * pct // 100) != int(index * pct // 100)

    async def downlink_report(self, seconds: float) -> dict[str, Any]:
        """The capped subscribers against the others over the last measurement: kbit/s delivered and offered
        per subscriber, the packets the cap's queue dropped, feedback packets, and the server's view of their
        transports (estimate, retransmitted bytes, their consumers' current layers); ``overflowed_s_max``: the
        longest time from a subscriber's first packet to its cap's last tail drop (how long the server took to fit
        its sending to the cap, since the subscriber joined); ``media_gap_s_max``: the longest time a subscriber went
        without media (a track paused by the allocator), ``resumed_s``/``resumed_s_max``: from a subscriber's first
        packet to its media's return after its last gap of more than 1 s (0 = no such gap), ``without_media_now``:
        subscribers that got no media in the last second (still paused)."""
        snaps = self.gen.downlinks_snapshot()
        groups: dict[str, dict[str, Any]] = {}
        for index, downlink in self.downlinks.items():
            p = self.participants[index]
            d = snaps[downlink]
            stats = await self.server.media(p.worker).get_stats(p.transport_id)
            media = stats.get("media", {})
            g = groups.setdefault("capped" if self.capped(index) else "others", {
                "subscribers": 0, "offered_bytes": 0, "delivered_bytes": 0, "cap_dropped": 0,
                "feedback_sent": 0, "rtx_bytes": 0, "bwe_kbps": [], "layers": {}})
            g["subscribers"] += 1
            for key in ("offered_bytes", "delivered_bytes", "cap_dropped", "feedback_sent"):
                g[key] += d[key]
            g["overflowed_s_max"] = round(max(g.get("overflowed_s_max", 0.0), d["overflowed_s"]), 2)
            # A paused track: how long its subscriber went without media, when it resumed, whether it is paused now.
            g["media_gap_s_max"] = round(max(g.get("media_gap_s_max", 0.0), d["media_gap_s_max"]), 2)
            g["resumed_s_max"] = round(max(g.get("resumed_s_max", 0.0), d["resumed_s"]), 2)
            g.setdefault("resumed_s", []).append(round(d["resumed_s"], 1))
            g["without_media_now"] = g.get("without_media_now", 0) + int(d["media_idle_s"] < 0
                                                                          or d["media_idle_s"] > 1.0)
            g["rtx_bytes"] += int(media.get("rtx_bytes", 0))
            g["bwe_kbps"].append(round(media.get("bwe_bps", 0) / 1000))
            for consumer in stats.get("consumers", {}).values():
                layer = "paused" if consumer.get("paused") else str(consumer.get("current_layer"))
                g["layers"][layer] = g["layers"].get(layer, 0) + 1
        for g in groups.values():
            n = max(g["subscribers"], 1)
            g["offered_kbit_per_sub"] = round(g["offered_bytes"] * 8 / seconds / 1000 / n, 1)
            g["delivered_kbit_per_sub"] = round(g["delivered_bytes"] * 8 / seconds / 1000 / n, 1)
            estimates = sorted(g.pop("bwe_kbps"))
            g["bwe_kbps_median"] = estimates[len(estimates) // 2] if estimates else None
        return groups

    async def _local_pipe_ends(self, source: int, dest: int) -> PipeEnds:
        return local_ends(lambda w: self.server.worker_ports()[w], source, dest)

    async def add_room(self, room: RoomSpec) -> Room:
        """Create the room's router, connect its participants, then produce and consume."""
        handle = Room(f"room-{len(self.rooms)}", room.worker, [])
        self.rooms.append(handle)
        workers = range(self.server.workers) if room.spread else (room.worker,)
        for w in workers:
            await self.server.media(w).create_router(handle.router_id)
        if room.spread:
            # The pipes exactly as control opens them for a room spread over workers (control/rtc/spread.py).
            handle.pipes = RoomPipes(handle.router_id, self.server.media, self._local_pipe_ends, self._ssrc)
        await self.extend(handle, room.participants)
        return handle

    async def extend(self, room: Room, specs: Sequence[ParticipantSpec]) -> None:
        """Add participants to a room: new tracks are published, then every receiving member (old and new)
        consumes every track it does not consume yet."""
        start = time.monotonic()
        members = [self._new_participant(spec) for spec in specs]
        self._place(room, members)
        await self._connect_all(room.router_id, members)
        for p in members:
            for t, spec in enumerate(p.spec.tracks):
                ssrcs = [self._ssrc() for _ in spec.layers]
                track = _Track(f"{p.transport_id}-p{t}", spec, ssrcs, worker=p.worker,
                               plan=_track_plan(str(t), spec, ssrcs))
                assert track.plan is not None
                await self.server.media(p.worker).produce(p.transport_id, track.producer_id, track.plan)
                track.stream = self._add_senders(p, track)
                p.tracks.append(track)
        room.members.extend(members)
        for p in room.members:
            if not p.spec.receives:
                continue
            for other in room.members:
                if other is p:
                    continue
                for track in other.tracks:
                    if (p.index, track.stream) in self._consumed:
                        continue
                    out_ssrc = self._next_out_ssrc
                    self._next_out_ssrc += 1
                    if room.pipes is not None and track.plan is not None:
                        await room.pipes.ensure(track.producer_id, track.plan, track.worker, p.worker,
                                                p.transport_id)
                    # With downlinks, video consumers negotiate RTX as browsers do: retransmissions and the
                    # allocator's probe padding come on it (without RTX nothing can probe).
                    rtx = self.downlink_feedback and track.spec.kind == "video"
                    await self.server.media(p.worker).consume(
                        p.transport_id, f"{p.transport_id}-c{out_ssrc:x}", track.producer_id, out_ssrc=out_ssrc,
                        pt_map={_pt(track.spec): _pt(track.spec)},
                        rtx_ssrc=out_ssrc + RTX_SSRC_OFFSET if rtx else 0,
                        rtx_pt_map={VIDEO_PT: RTX_PT} if rtx else None)
                    self._add_receiver(p, track.stream, out_ssrc, rtx=rtx)
        self.setup_s += time.monotonic() - start

    @property
    def receivers(self) -> int:
        return sum(self.fanout)

    def _ssrc(self) -> int:
        self._next_ssrc += 1
        return self._next_ssrc

    def _place(self, room: Room, members: Sequence[_Participant]) -> None:
        """Each new member's worker: the room's home, or for a spread room the worker holding the fewest of its
        members (control's ``SpreadPolicy("always")``)."""
        if room.pipes is None:
            for p in members:
                p.worker = room.worker
            return
        policy = SpreadPolicy("always")
        loads = [WorkerLoad(w, True) for w in range(self.server.workers)]
        counts: dict[int, int] = {}
        for p in room.members:
            counts[p.worker] = counts.get(p.worker, 0) + 1
        for p in members:
            p.worker = policy.place(room.worker, counts, loads)
            counts[p.worker] = counts.get(p.worker, 0) + 1

    def _new_participant(self, spec: ParticipantSpec) -> _Participant:
        index = len(self.participants)
        p = _Participant(index, self.net.address(index), f"t{index}", spec)
        self.participants.append(p)
        return p

    async def _connect_all(self, router_id: str, members: Sequence[_Participant]) -> None:
        self.net.start_dispatch()
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def connect(p: _Participant) -> None:
            media = self.server.media(p.worker)
            async with gate:
                params = await media.create_transport(router_id, p.transport_id)
                host, port = params.candidate_ip, params.candidate_port
                if self.tcp_bridge is not None and not p.spec.tracks:  # a subscriber: over the worker's ICE-TCP
                    tcp = [c_port for proto, c_ip, c_port in params.candidates if proto == "tcp" and c_ip == host]
                    if not tcp:
                        raise SetupError(f"the worker announces no ICE-TCP candidate on {host} (ice_tcp off?)")
                    host, port = await self.tcp_bridge.open(p.address, host, tcp[0], self.net.port)
                    self.net.accept_from(host)
                server = ServerParams(params.ice_ufrag, params.ice_pwd, dict(params.fingerprints)["sha-256"],
                                      host, port)
                peer = SyntheticPeer(self.net, p.address, self.credentials, self.profile)
                await media.connect(p.transport_id, role="server",
                                    fingerprints=[("sha-256", self.credentials.fingerprint)])
                await self._establish(p, peer, server)

        try:
            await asyncio.gather(*(connect(p) for p in members))
        finally:
            self.net.stop_dispatch()

    async def _establish(self, p: _Participant, peer: SyntheticPeer, server: ServerParams) -> None:
        """ICE check and DTLS handshake toward ``server``, then the participant's SRTP contexts and its consent
        checks and RTCP endpoint in the generator."""
        self.net.accept_from(server.host)
        self.gen.accept_from(self.net.accepted)
        p.keys = await peer.connect(server)
        p.server = server
        p.consent = peer.consent_request()
        p.tx = fastpath.SrtpContext(p.keys.profile, p.keys.local, True)
        p.rx = fastpath.SrtpContext(p.keys.profile, p.keys.remote, False)
        self.gen.add_consent(p.address, server.host, server.port, p.consent, (p.index % 97) * 0.05)
        self.gen.add_rtcp_endpoint(p.address, p.rx)  # PLI/FIR toward this participant's senders

    def _add_receiver(self, p: _Participant, stream: int, out_ssrc: int, *, rtx: bool = False) -> None:
        """Count ``out_ssrc`` arriving at ``p`` as one more receiver of generator stream ``stream`` (and, with
        ``rtx``, its RTX stream through the participant's downlink)."""
        assert p.server is not None
        downlink = self.downlinks.get(p.index, -1)
        if downlink < 0 and self.downlink_feedback:
            downlink = self.downlinks[p.index] = self.gen.add_downlink(
                p.tx, p.address, p.server.host, p.server.port, REPORTER_SSRC_BASE + p.index, SUBSCRIBER_TWCC_ID,
                cap_kbps=self.downlink_cap_kbps if self.capped(p.index) else 0.0)
        self.gen.add_receiver(out_ssrc, p.rx, stream, report_ctx=p.tx, report_from=p.address,
                              report_to=p.server.host, report_port=p.server.port,
                              reporter_ssrc=REPORTER_SSRC_BASE + p.index, downlink=downlink)
        if rtx:
            self.gen.add_receiver(out_ssrc + RTX_SSRC_OFFSET, p.rx, -1, downlink=downlink, rtx=True)
        self._consumed.add((p.index, stream))
        self.fanout[stream] += 1
        self.receiver_workers.append(p.worker)

    def _add_senders(self, p: _Participant, track: _Track, header_ext: Sequence[bytes] = ()) -> int:
        """One generator sender per encoding of ``track`` (``header_ext[i]``: the RTP header extension block of
        encoding i, if any); returns the top encoding's stream, the one subscribers receive."""
        assert p.server is not None
        spec = track.spec
        stream = -1
        for i, ((_rid, share), ssrc) in enumerate(zip(spec.layers, track.ssrcs, strict=True)):
            rate = spec.rate * share
            # Spread the publishers' phases over one packet interval so they do not send in lockstep.
            phase = ((ssrc * 0.618) % 1.0) / rate if rate > 0 else 0.0
            stream = self.gen.add_sender(p.address, p.server.host, p.server.port, p.tx, ssrc, _pt(spec),
                                         spec.size - 12, rate, video=spec.kind == "video",
                                         clock_rate=90000 if spec.kind == "video" else 48000, phase_s=phase,
                                         header_ext=header_ext[i] if header_ext else b"")
            self.fanout.append(0)
        return stream

    def close(self) -> None:
        self.net.close()


def _pt(spec: TrackSpec) -> int:
    return VIDEO_PT if spec.kind == "video" else AUDIO_PT


def _track_plan(mid: str, spec: TrackSpec, ssrcs: Sequence[int]) -> TrackPlan:
    """What the server is told about a published track: its codec and every encoding's SSRC (signaled, as with
    ``a=ssrc-group:SIM``, so no RID header extension is needed)."""
    codec = (Codec("VP8", VIDEO_PT, 90000, 1, {}, ("nack", "nack pli", "ccm fir")) if spec.kind == "video"
             else Codec("opus", AUDIO_PT, 48000, 2, {"minptime": "10", "useinbandfec": "1"}, ("nack",)))
    encodings = [(rid, ssrc, 0) for (rid, _share), ssrc in zip(spec.layers, ssrcs, strict=True)]
    return TrackPlan(mid=mid, kind=spec.kind, codecs=[codec], rtx_apt={}, encodings=encodings,
                     extensions={}, msid=None, cname=None, id_map=bytes(256))


def header_extension(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """An RTP header extension block in the one-byte form (RFC 8285 4.2): 0xBEDE, its length in 32-bit words, each
    element as (id << 4 | len - 1) + data, zero padding to a word boundary."""
    body = bytearray()
    for ext_id, data in elements:
        if not 1 <= ext_id <= 14 or not 1 <= len(data) <= 16:
            raise ValueError(f"one-byte extension elements need an id in 1..14 and 1..16 bytes, got {ext_id}, "
                             f"{len(data)} bytes")
        body += bytes([ext_id << 4 | (len(data) - 1)]) + data
    body += bytes(-len(body) % 4)
    return b"\xbe\xde" + (len(body) // 4).to_bytes(2, "big") + bytes(body)


# ---- one measured run ----------------------------------------------------------------------------------------

@dataclass
class Measurement:
    seconds: float
    sent: int
    expected: int
    received: int
    received_bytes: int
    gaps: int
    reordered: int
    verified: int
    auth_failed: int
    bad_payload: int
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    server_cpu_s: list[float]  # utime + stime (/proc/<pid>/stat, read here or by the server's /healthz), 10 ms ticks
    server_run_s: list[float]  # the scheduler's run time of the live threads (schedstat), nanoseconds
    server_rss: list[int]
    server_drops: int
    generator_drops: int
    generator_cpu_s: float
    generator_late: int
    generator_behind: int
    generator_rx_backlog: int
    generator_max_late_ms: float
    snmp_rcvbuf_errors: int
    counters: dict[str, Any]
    steal_pct: float = 0.0  # the hypervisor's steal time over the window, % of all vCPU time
    backlog_drain_s: float = 0.0
    streams: int = 0
    stream_received_min: int = 0
    stream_received_max: int = 0
    streams_with_gaps: int = 0
    streams_with_reordering: int = 0
    downlink_dropped: int = 0  # packets the generator discarded as a lossy downlink (--downlink-loss)
    nacks_sent: int = 0
    nacked: int = 0  # sequence numbers the subscribers asked for again
    uplink_dropped: int = 0  # packets the publishers "sent" that the generator discarded (--uplink-loss)
    uplink_retransmitted: int = 0  # packets the publishers sent again because the server NACKed them
    uplink_nack_missing: int = 0  # NACKed packets a publisher no longer had
    uplink_lost_deliveries: int = 0  # uplink drops x the fan-out of their stream
    received_by_worker: list[int] = field(default_factory=list)  # received packets per serving worker, if asked

    @property
    def lost_before_recovery(self) -> int:
        """Deliveries the simulated losses took: downlink drops + uplink drops x fan-out."""
        return self.downlink_dropped + self.uplink_lost_deliveries

    @property
    def recovered_pct(self) -> float | None:
        """Of the deliveries the simulated links lost, the share NACK and retransmission brought back."""
        if not self.lost_before_recovery:
            return None
        residual = max(0, self.expected - self.received)
        return round(100.0 * max(0, self.lost_before_recovery - residual) / self.lost_before_recovery, 2)

    @property
    def forwarded_pps(self) -> float:
        return self.received / self.seconds

    @property
    def mbps(self) -> float:
        return self.received_bytes * 8 / self.seconds / 1e6

    @property
    def loss_pct(self) -> float:
        if self.expected <= 0:
            return 0.0
        return max(0.0, 100.0 * (1 - self.received / self.expected))

    @property
    def worker_cpu_s(self) -> list[float]:
        """Each worker's CPU time over the window: the scheduler's run time, whose nanoseconds matter at low rates
        (a paced 2 s window may hold 20-80 ms of CPU, which utime + stime counts in 10 ms ticks), else utime +
        stime where no run time was reported."""
        return self.server_run_s if any(self.server_run_s) else self.server_cpu_s

    @property
    def cpu_us_per_packet(self) -> float:
        return 1e6 * sum(self.worker_cpu_s) / max(self.received, 1)


def percentile(histogram: list[tuple[float, int]], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding quantile ``q`` of a (upper_ms, count) histogram."""
    total = sum(c for _, c in histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for upper, count in histogram:
        seen += count
        if seen >= rank:
            return upper
    return histogram[-1][0]


async def measure(gen: LoadGen, probe: Probe, generator_port: int, fanout_of: list[int], seconds: float, *,
                  warmup: float = 1.2, drain: float = 0.3, verify_every: int = 1,
                  receiver_workers: Sequence[int] = ()) -> Measurement:
    """Warm up, then measure ``seconds`` of load; ``fanout_of[stream]`` = receivers of each sender stream; the
    server's side is read from ``probe`` before and after the window; with ``receiver_workers`` (the worker of
    each generator receiver, in order) the received packets are also counted per worker.

    The warm-up outlasts the publishers' key-frame interval (30 frames, about 1 s): a new video consumer forwards
    nothing before the next key frame, and the generator's publishers do not answer PLI."""
    await asyncio.to_thread(gen.run, warmup, True, verify_every)
    gen.reset()
    before = await asyncio.to_thread(probe.sample)
    gdrop0 = procstat.udp_drops(generator_port)
    snmp0 = procstat.udp_snmp()
    t0 = time.monotonic()
    await asyncio.to_thread(gen.run, seconds, True, verify_every)
    elapsed = time.monotonic() - t0
    after = await asyncio.to_thread(probe.sample)
    senders = gen.senders_snapshot()
    rx_backlog = procstat.udp_rx_queue(generator_port)
    await asyncio.to_thread(gen.run, drain, False, verify_every)
    receivers = [r for r in gen.receivers_snapshot() if not r["rtx"]]  # RTX streams: see Session.downlink_report
    counters = gen.counters()
    hist = gen.latency_histogram()
    snmp1 = procstat.udp_snmp()
    backlog = await _drain_backlog(gen, probe, verify_every)
    by_worker = [0] * (max(receiver_workers) + 1 if receiver_workers else 0)
    for r, w in zip(receivers, receiver_workers, strict=False):
        by_worker[w] += r["received"]
    return Measurement(
        seconds=elapsed,
        sent=sum(s["sent"] for s in senders),
        expected=sum(s["sent"] * n for s, n in zip(senders, fanout_of, strict=True)),
        received=sum(r["received"] for r in receivers),
        received_bytes=sum(r["bytes"] for r in receivers),
        gaps=sum(r["gaps"] for r in receivers),
        reordered=sum(r["reordered"] for r in receivers),
        verified=sum(r["verified"] for r in receivers),
        auth_failed=sum(r["auth_failed"] for r in receivers),
        bad_payload=sum(r["bad_payload"] for r in receivers),
        latency_ms_p50=percentile(hist, 0.5),
        latency_ms_p99=percentile(hist, 0.99),
        server_cpu_s=[b - a for a, b in zip(before.cpu_s, after.cpu_s, strict=True)],
        server_run_s=[b - a for a, b in zip(before.run_s, after.run_s, strict=True)],
        server_rss=after.rss,
        server_drops=after.drops - before.drops,
        generator_drops=procstat.udp_drops(generator_port) - gdrop0,
        generator_cpu_s=counters["cpu_s"],
        generator_late=sum(s["late"] for s in senders),
        generator_behind=sum(s["behind"] for s in senders),
        generator_rx_backlog=rx_backlog,
        generator_max_late_ms=max((s["max_late_ms"] for s in senders), default=0.0),
        snmp_rcvbuf_errors=snmp1["RcvbufErrors"] - snmp0["RcvbufErrors"],
        counters=counters,
        steal_pct=procstat.steal_pct(before.ticks, after.ticks),
        backlog_drain_s=backlog,
        streams=len(receivers),
        stream_received_min=min((r["received"] for r in receivers), default=0),
        stream_received_max=max((r["received"] for r in receivers), default=0),
        streams_with_gaps=sum(1 for r in receivers if r["gaps"]),
        streams_with_reordering=sum(1 for r in receivers if r["reordered"]),
        downlink_dropped=sum(r["dropped"] for r in receivers),
        nacks_sent=sum(r["nacks_sent"] for r in receivers),
        nacked=sum(r["nacked"] for r in receivers),
        uplink_dropped=sum(s["uplink_dropped"] for s in senders),
        uplink_retransmitted=sum(s["retransmitted"] for s in senders),
        uplink_nack_missing=sum(s["nack_missing"] for s in senders),
        uplink_lost_deliveries=sum(s["uplink_dropped"] * n for s, n in zip(senders, fanout_of, strict=True)),
        received_by_worker=by_worker,
    )


async def _drain_backlog(gen: LoadGen, probe: Probe, verify_every: int, limit_s: float = 30.0) -> float:
    """After an overloaded step the server may still hold seconds of input: keep receiving (uncounted: the next
    step resets the counters) until its sockets are empty, so the next set-up is not stuck behind it."""
    waited = 0.0
    while waited < limit_s and await asyncio.to_thread(probe.rx_queue):
        await asyncio.to_thread(gen.run, 0.25, False, verify_every)
        waited += 0.25
    return waited


def median_of(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0
