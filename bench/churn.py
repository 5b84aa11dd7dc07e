"""Join / publish / abrupt-leave churn against one worker's media side, and what it leaves behind.

Owns the churn driver that the leak check (tests/router/test_churn_leaks.py, a few dozen cycles) and
``python -m bench churn`` (1,000 cycles, RSS after a warm-up) share. The worker's media side
(:class:`router.media_service.MediaService`, with its real Engine on a loopback socket) runs in this process behind
:class:`ChurnHost`, a stand-in for the worker's process shell, so that everything it holds can be counted directly:
registries, the Engine's slots, SRTP sessions and own C allocations (``snapshot_engine``: ``c_bytes``), Python
allocations (tracemalloc), file descriptors and asyncio tasks.

One cycle: a room's media router, a publisher transport and a subscriber transport, each connected by a
:class:`bench.peer.SyntheticPeer` (ICE check, DTLS handshake, SRTP keys); the publisher produces audio and video,
the subscriber consumes both, and the publisher sends a burst of SRTP media (learned streams, packet stores, the
subscriber's forwarding state). Then both peers vanish without a word, as a SIGKILLed client does, and control's
clean-up follows: alternately ``transport.close`` for each transport (the participant left) and
``media_router.close`` (the room ended).
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import socket
import struct
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

import fastpath
from bench.net import GeneratorSocket
from bench.peer import Credentials, ServerParams, SyntheticPeer
from router.channel import BodyHandler, Handler, body_handler
from router.heap import heap_stats
from router.media_service import MediaService
from router.messages import (
    ConnectRequest,
    ConsumeRequest,
    CreateWebRtcTransportRequest,
    ProduceRequest,
    RtpExtensions,
)
from router.protocol import Body, Empty, Event, Method

VIDEO_SSRC = 0x1111
AUDIO_SSRC = 0x2222
PACKETS_PER_CYCLE = 40


class _Channel:
    """Handlers registered as ``router.channel.Channel`` does; notifications counted, not sent."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.notifications = 0

    def register(self, method: str, handler: Handler) -> None:
        self.handlers[method] = handler

    def handle(self, method: Method, handler: BodyHandler) -> None:
        self.register(method, body_handler(method, handler))

    def emit(self, event: Event, target_id: str, body: Body, *, droppable: bool = False) -> bool:
        self.notifications += 1
        return True


class ChurnHost:
    """The parts of ``router.worker.Worker`` that the media service uses, on a loopback socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.worker_id = 0
        self.core = 0
        self.node_ip = "127.0.0.1"
        self.node_ips = [self.node_ip]
        self.bind_ip = "127.0.0.1"
        self.rtc_port = self.sock.getsockname()[1]
        self.tcp_sock: socket.socket | None = None  # no ICE-TCP listener
        self.tcp6_sock: socket.socket | None = None
        self.gso = True
        self.congestion_control = True
        self.rx_hold_ms = 0
        self.channel = _Channel()
        self.heartbeat_sources: list[Any] = []
        self.media = MediaService(self)  # type: ignore[arg-type]
        self.media.start()

    def add_heartbeat_source(self, source: Any) -> None:
        self.heartbeat_sources.append(source)

    async def call(self, method: Method, target: str, body: Body) -> dict[str, Any] | None:
        """One request as the worker's channel serves it (the body through its wire form)."""
        return await self.channel.handlers[method](target, body.to_wire())

    def close(self) -> None:
        if self.media._tick_task is not None:
            self.media._tick_task.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


@dataclass(frozen=True)
class Footprint:
    """What the worker's media side holds at one moment."""

    transports: int
    producers: int
    consumers: int
    engine_transports: int
    engine_producers: int
    engine_consumers: int
    srtp_sessions: int
    c_bytes: int      # the Engine module's own C allocations (fastpath/mem.pxd)
    c_blocks: int
    py_bytes: int     # tracemalloc's current total (0 when tracemalloc is off)
    fds: int
    tasks: int
    rss_bytes: int
    heap_in_use: int  # glibc mallinfo2 uordblks: bytes malloc has handed out and not got back

    def counts(self) -> dict[str, int]:
        """The entity counts that must be back at their baseline exactly."""
        return {k: getattr(self, k) for k in ("transports", "producers", "consumers", "engine_transports",
                                               "engine_producers", "engine_consumers", "srtp_sessions",
                                               "fds", "tasks")}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def footprint(host: ChurnHost) -> Footprint:
    media = host.media
    engine = media.engine.snapshot_engine()
    return Footprint(
        transports=len(media.transports), producers=len(media.producers), consumers=len(media.consumers),
        engine_transports=engine["transports"], engine_producers=engine["producers"],
        engine_consumers=engine["consumers"], srtp_sessions=engine["srtp_sessions"],
        c_bytes=engine["c_bytes"], c_blocks=engine["c_blocks"],
        py_bytes=tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0,
        fds=len(os.listdir("/proc/self/fd")), tasks=len(asyncio.all_tasks()), rss_bytes=rss_bytes(),
        heap_in_use=heap_stats().get("heap_in_use", 0))


async def settle(host: ChurnHost) -> Footprint:
    """Let pending callbacks and cancelled tasks finish, collect garbage, then measure."""
    for _ in range(5):
        await asyncio.sleep(0.03)
    gc.collect()
    return footprint(host)


def _produce(producer_id: str, kind: str) -> ProduceRequest:
    video = kind == "video"
    return ProduceRequest(
        producer_id=producer_id, kind=kind, mid="1" if video else "0",
        encodings=[("", VIDEO_SSRC if video else AUDIO_SSRC, 0)],
        payload_types=[96 if video else 111], codecs=[(96, "VP8") if video else (111, "opus")], rtx_apt=[],
        clock_rate=90000 if video else 48000, extensions=RtpExtensions(id_map=bytes(256), mid_id=0))


VP8_KEY = bytes([0x90, 0x80, 0x80, 0x01, 0x00])  # VP8 payload descriptor + a key-frame payload header


def _rtp(ssrc: int, pt: int, seq: int, size: int) -> bytes:
    payload = VP8_KEY + bytes(size - len(VP8_KEY)) if pt == 96 else bytes(size)
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, seq * 3000, ssrc) + payload


@dataclass
class _Room:
    router_id: str
    pub_id: str
    sub_id: str
    keys: Any = None
    address: str = ""


class Churn:
    """Runs cycles against one :class:`ChurnHost`; peers come from one generator socket."""

    def __init__(self, host: ChurnHost, *, packets: int = PACKETS_PER_CYCLE) -> None:
        self.host = host
        self.net = GeneratorSocket(buffer_bytes=1 << 20)
        self.net.accept_from("127.0.0.1")
        self.credentials = Credentials.generate()
        self.packets = packets
        self.cycles = 0
        self.forwarded = 0  # RTP packets the consumers sent on, over all cycles: media did flow

    async def _join(self, router_id: str, transport_id: str, index: int) -> tuple[SyntheticPeer, Any]:
        reply = await self.host.call(Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT, router_id,
                                     CreateWebRtcTransportRequest(transport_id=transport_id))
        assert reply is not None
        await self.host.call(Method.TRANSPORT_CONNECT, transport_id,
                             ConnectRequest(role="server", fingerprints=[("sha-256", self.credentials.fingerprint)]))
        fingerprint = dict(tuple(f) for f in reply["fingerprints"])["sha-256"]
        server = ServerParams(reply["ice_ufrag"], reply["ice_pwd"], fingerprint, reply["candidate"]["ip"],
                              reply["candidate"]["port"])
        peer = SyntheticPeer(self.net, self.net.address(index), self.credentials, "cm80")
        keys = await peer.connect(server)
        return peer, keys

    async def _open(self, n: int) -> _Room:
        """A room with a connected publisher (audio and video) and a subscriber of both (dispatch must be on)."""
        room = _Room(f"room-{n}", f"pub-{n}", f"sub-{n}")
        await self.host.call(Method.MEDIA_ROUTER_CREATE, room.router_id, Empty())
        publisher, room.keys = await self._join(room.router_id, room.pub_id, 2 * (n % 1000))
        room.address = publisher.address
        await self._join(room.router_id, room.sub_id, 2 * (n % 1000) + 1)
        for kind in ("audio", "video"):
            await self.host.call(Method.TRANSPORT_PRODUCE, room.pub_id, _produce(f"{room.pub_id}-{kind}", kind))
            pt = 96 if kind == "video" else 111
            await self.host.call(Method.TRANSPORT_CONSUME, room.sub_id, ConsumeRequest(
                consumer_id=f"{room.sub_id}-{kind}", producer_id=f"{room.pub_id}-{kind}",
                out_ssrc=0x4000 + (kind == "video"), pt_map=[(pt, pt)]))
        return room

    async def _media(self, room: _Room) -> None:
        """A burst of SRTP audio and video (a key frame first) from the publisher, forwarded to the subscriber."""
        tx = fastpath.SrtpContext(room.keys.profile, room.keys.local, True)
        dest = (self.host.node_ip, self.host.rtc_port)
        for seq in range(self.packets):
            ssrc, pt, size = (VIDEO_SSRC, 96, 1000) if seq % 2 else (AUDIO_SSRC, 111, 100)
            self.net.send_from(room.address, tx.protect(_rtp(ssrc, pt, seq // 2 + 1, size)), dest)
            if seq % 8 == 7:
                await asyncio.sleep(0)   # let the worker's reader pump
        await asyncio.sleep(0.02)
        media = self.host.media
        for kind in ("audio", "video"):
            handle = media.consumers.handle(f"{room.sub_id}-{kind}")
            self.forwarded += media.engine.snapshot_consumer(handle)["packets"]

    async def _leave(self, room: _Room, n: int) -> None:
        """Both peers have vanished (no DTLS close_notify, no BYE); control cleans up when it notices: the
        participants' transports (even n) or the whole room (odd n)."""
        if n % 2 == 0:
            await self.host.call(Method.TRANSPORT_CLOSE, room.pub_id, Empty())
            await self.host.call(Method.TRANSPORT_CLOSE, room.sub_id, Empty())
        await self.host.call(Method.MEDIA_ROUTER_CLOSE, room.router_id, Empty())

    async def cycle(self) -> None:
        """One join / publish / subscribe / media / abrupt leave / clean-up round."""
        await self.storm(1)

    async def storm(self, rooms: int) -> None:
        """``rooms`` rooms (2 participants each) joining at once, media in each, then all of them gone at once."""
        first = self.cycles
        self.cycles += rooms
        self.net.start_dispatch()
        try:
            opened = await asyncio.gather(*(self._open(first + i) for i in range(rooms)))
            for room in opened:
                await self._media(room)
        finally:
            self.net.stop_dispatch()
        for i, room in enumerate(opened):
            await self._leave(room, first + i)
        self._drain_generator()

    def _drain_generator(self) -> None:
        """Forwarded media and RTCP the vanished subscriber would have got."""
        while True:
            try:
                self.net.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return

    def close(self) -> None:
        self.net.close()


async def run(cycles: int, warmup: int, report_every: int, storm: int = 0) -> dict[str, Any]:
    """``python -m bench churn``: warm up, then measure after every ``report_every`` cycles; with ``storm``, then
    that many rooms (two participants each) at once, gone at once, measured before and after the worker's heap
    trimmer (router/heap.py) had its turn."""
    host = ChurnHost(asyncio.get_running_loop())
    churn = Churn(host)
    rows: list[dict[str, Any]] = []

    def row(label: str, f: Footprint) -> dict[str, Any]:
        out = {"after": label, "rss_mib": round(f.rss_bytes / 2**20, 2), "heap_mib": round(f.heap_in_use / 2**20, 2),
               "engine_c_bytes": f.c_bytes, "engine_c_blocks": f.c_blocks, **f.counts()}
        rows.append(out)
        print(" ".join(f"{k}={v}" for k, v in out.items()), flush=True)
        return out

    try:
        row("start", await settle(host))
        for _ in range(warmup):
            await churn.cycle()
        base = await settle(host)
        row(f"{warmup} warm-up cycles", base)
        done = 0
        while done < cycles:
            step = min(report_every, cycles - done)
            for _ in range(step):
                await churn.cycle()
            done += step
            row(f"{done} cycles", await settle(host))
        end = await settle(host)
        result: dict[str, Any] = {
            "warmup": warmup, "cycles": cycles, "forwarded_packets": churn.forwarded, "rows": rows,
            "rss_growth_mib": round((end.rss_bytes - base.rss_bytes) / 2**20, 2),
            "heap_growth_bytes": end.heap_in_use - base.heap_in_use,
            "engine_c_growth_bytes": end.c_bytes - base.c_bytes}
        if storm:
            await churn.storm(storm)
            peak = await settle(host)
            row(f"a storm of {2 * storm} participants (before the trimmer)", peak)
            host.media.heap.tick(time.monotonic() + host.media.heap.interval_s)
            host.media.heap.join(30)
            trimmed = footprint(host)
            row("the heap trimmer's next turn", trimmed)
            result.update(storm_participants=2 * storm,
                          storm_rss_high_water_mib=round((peak.rss_bytes - end.rss_bytes) / 2**20, 2),
                          storm_rss_after_trim_mib=round((trimmed.rss_bytes - end.rss_bytes) / 2**20, 2))
        return result
    finally:
        churn.close()
        host.close()


def main(argv: list[str]) -> int:
    """``python -m bench churn [--cycles N] [--warmup N] [--every N] [--storm ROOMS] [--json FILE]``."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m bench churn", description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=1000, help="measured cycles (default 1000)")
    ap.add_argument("--warmup", type=int, default=50, help="cycles before the baseline (default 50)")
    ap.add_argument("--every", type=int, default=100, help="cycles between two measurements (default 100)")
    ap.add_argument("--storm", type=int, default=250, metavar="ROOMS",
                    help="then this many rooms of two at once, all gone at once (default 250: 500 participants; "
                         "0 = none)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    if args.cycles < 0 or args.warmup < 0 or args.every < 1 or args.storm < 0:
        ap.error("--cycles, --warmup and --storm must not be negative, --every must be positive")
    result = asyncio.run(run(args.cycles, args.warmup, args.every, args.storm))
    print(f"after warm-up, {args.cycles} cycles: RSS {result['rss_growth_mib']:+.2f} MiB, glibc heap in use "
          f"{result['heap_growth_bytes']:+d} B, Engine C state {result['engine_c_growth_bytes']:+d} B; "
          f"{result['forwarded_packets']} packets forwarded")
    if args.storm:
        print(f"storm of {result['storm_participants']} participants: RSS high-water "
              f"{result['storm_rss_high_water_mib']:+.2f} MiB, after the heap trimmer "
              f"{result['storm_rss_after_trim_mib']:+.2f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0
