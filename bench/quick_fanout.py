"""Quick fan-out benchmark: 1 publisher -> N subscribers through one fastpath.Engine, against the limit loop.

Owns: a self-contained measurement of forwarded packets/s and CPU microseconds per forwarded packet for the
Engine (pinned to one core) fed by an SRTP generator process (pinned to the other core) sending freshly
protected 1200-byte RTP packets as fast as it can; subscriber sockets are bound and never read
(PERFORMANCE.md). The same run measures the "limit loop" (fastpath.limit.run_limit: recvmmsg, unprotect
once, rewrite + protect per destination, sendmmsg) and prints the Engine as a ratio of it.

Usage: ``python -m bench.quick_fanout [--seconds 3] [--runs 3] [--subscribers 10]``. Not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import select
import socket
import statistics
import time
from dataclasses import dataclass

import fastpath
from fastpath.limit import blast, run_limit

PUB_SSRC = 0x1234
PT = 96
PAYLOAD = 1200 - 12
WARMUP_S = 0.3


@dataclass
class Result:
    forwarded: int
    seconds: float
    cpu_s: float
    extra: dict

    @property
    def pps(self) -> float:
        return self.forwarded / self.seconds

    @property
    def cpu_us_per_packet(self) -> float:
        return 1e6 * self.cpu_s / max(self.forwarded, 1)


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _udp(rcvbuf: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def _engine_side(mode: str, profile: int, pub_key: bytes, engine_key: bytes, subscribers: int, seconds: float,
                 gen_addr: tuple[str, int], conn: mp.connection.Connection, core: int) -> None:
    os.sched_setaffinity(0, {core})
    sock = _udp(rcvbuf=8 << 20)
    subs = [_udp(rcvbuf=1 << 16) for _ in range(subscribers)]
    conn.send(sock.getsockname())
    if mode == "limit":
        rx = fastpath.SrtpContext(profile, pub_key, False)
        tx = [fastpath.SrtpContext(profile, engine_key, True) for _ in subs]
        run_limit(sock.fileno(), [s.getsockname() for s in subs], rx, tx, WARMUP_S)
        cpu0, t0 = _cpu(), time.monotonic()
        stats = run_limit(sock.fileno(), [s.getsockname() for s in subs], rx, tx, seconds)
        conn.send((stats["forwarded"], time.monotonic() - t0, _cpu() - cpu0, stats))
        return
    engine = fastpath.Engine(sock.fileno())
    engine.add_transport(0)
    engine.bind_tuple(0, *gen_addr)
    engine.set_srtp(0, profile, engine_key, pub_key)
    engine.add_producer(1, 0, fastpath.KIND_VIDEO, b"0", [(b"", PUB_SSRC, 0)], [PT], {}, 90000)
    for i, s in enumerate(subs):
        engine.add_transport(100 + i)
        engine.bind_tuple(100 + i, *s.getsockname())
        engine.set_srtp(100 + i, profile, engine_key, os.urandom(len(engine_key)))
        engine.add_consumer(1000 + i, 100 + i, 1, 0x5000 + i, {PT: PT}, True)

    def forwarded() -> int:
        return sum(engine.snapshot_consumer(1000 + i)["packets"] for i in range(len(subs)))

    def run_for(duration: float) -> None:
        deadline = time.monotonic() + duration
        next_tick = 0.0
        while (now := time.monotonic()) < deadline:
            if select.select([sock], [], [], 0.01)[0]:
                engine.pump()
            if now >= next_tick:
                engine.tick(int(now * 1000))
                next_tick = now + 0.02

    run_for(WARMUP_S)
    f0, cpu0, t0 = forwarded(), _cpu(), time.monotonic()
    run_for(seconds)
    f1, cpu1, t1 = forwarded(), _cpu(), time.monotonic()
    extra = {k: v for k, v in engine.snapshot_transport(0).items() if k.startswith(("drop_", "srtp_"))}
    conn.send((f1 - f0, t1 - t0, cpu1 - cpu0, extra))


def _generator_side(sock: socket.socket, profile: int, pub_key: bytes, target: tuple[str, int],
                    seconds: float, core: int) -> None:
    os.sched_setaffinity(0, {core})
    blast(sock.fileno(), target[0], target[1], fastpath.SrtpContext(profile, pub_key, True), PUB_SSRC, PT,
          PAYLOAD, seconds)


def run_case(mode: str, profile: int, subscribers: int, seconds: float) -> Result:
    ctx = mp.get_context("fork")
    n = fastpath.KEY_LENGTHS[profile]
    pub_key, engine_key = os.urandom(n), os.urandom(n)
    gen_sock = _udp()
    parent, child = ctx.Pipe()
    cores = sorted(os.sched_getaffinity(0))
    engine_core, gen_core = cores[-1], cores[0]
    worker = ctx.Process(target=_engine_side, args=(mode, profile, pub_key, engine_key, subscribers, seconds,
                                                    gen_sock.getsockname(), child, engine_core))
    worker.start()
    target = parent.recv()
    gen = ctx.Process(target=_generator_side,
                      args=(gen_sock, profile, pub_key, target, seconds + WARMUP_S + 0.5, gen_core))
    gen.start()
    try:
        forwarded, elapsed, cpu_s, extra = parent.recv()
    finally:
        for p in (worker, gen):
            p.join(timeout=seconds + 5)
            if p.is_alive():
                p.kill()
                p.join()
        gen_sock.close()
    return Result(forwarded, elapsed, cpu_s, extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=10)
    args = ap.parse_args()
    for name, profile in (("AES_CM_128_HMAC_SHA1_80", fastpath.PROFILE_AES128_CM_SHA1_80),
                          ("AEAD_AES_128_GCM", fastpath.PROFILE_AEAD_AES_128_GCM)):
        engine_runs, limit_runs = [], []
        for _ in range(args.runs):
            # Interleave so both see the same machine conditions.
            engine_runs.append(run_case("engine", profile, args.subscribers, args.seconds))
            limit_runs.append(run_case("limit", profile, args.subscribers, args.seconds))
        e_pps = statistics.median(r.pps for r in engine_runs)
        l_pps = statistics.median(r.pps for r in limit_runs)
        e_us = statistics.median(r.cpu_us_per_packet for r in engine_runs)
        l_us = statistics.median(r.cpu_us_per_packet for r in limit_runs)
        print(f"{name}: 1 -> {args.subscribers}, median of {args.runs} x {args.seconds:.0f} s")
        print(f"  engine: {e_pps:>10,.0f} forwarded pkt/s  {e_us:6.2f} CPU us/pkt   runs: "
              + ", ".join(f"{r.pps:,.0f}" for r in engine_runs))
        print(f"  limit : {l_pps:>10,.0f} forwarded pkt/s  {l_us:6.2f} CPU us/pkt   runs: "
              + ", ".join(f"{r.pps:,.0f}" for r in limit_runs))
        print(f"  ratio engine/limit: {e_pps / l_pps:.2f} (throughput), CPU per packet +{e_us - l_us:.2f} us")
        resets = [r.extra.get("srtp_resets", 0) for r in engine_runs]
        drops = engine_runs[-1].extra
        print(f"  engine srtp stream resets per run: {resets}; last run publisher drops: {drops}")


if __name__ == "__main__":
    main()
