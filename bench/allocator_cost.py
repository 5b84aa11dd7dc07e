"""``python -m bench.allocator_cost``: the CPU cost of one stream-allocator pass (router/allocator.py).

A worker's tick runs one allocation pass every 0.5 s over every subscriber transport with consumers. This times
that pass in-process for a room-like load: ``--transports`` subscribers each consuming every one of ``--video``
simulcast video producers (three layers) and ``--audio`` audio producers (by default 50 x (10 + 10) = 1,000
consumers). The Engine is a stub whose per-layer byte counters grow at fixed rates (its ``snapshot_producer`` builds
the same list of per-layer dicts the real one does, which is most of the measuring cost); estimates are fixed.

Three cases, each the best of ``--repeat`` runs of ``--number`` passes (the ``timeit`` reading): ``no estimate``
(what an Engine without bandwidth estimation costs: one estimate look-up per transport), ``steady`` (everything
fits, nothing changes), ``congested`` (the estimate alternates between two values each pass, so every pass moves
layers and pauses or resumes tracks). No assertions on time.

Usage::

    python -m bench.allocator_cost [--transports T] [--video V] [--audio A] [--number N] [--repeat R]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

from router.allocator import ALLOCATE_INTERVAL_S, Estimate, FixedEstimates, StreamAllocator
from router.media_router import Consumer, Producer
from router.registry import Registry

SIMULCAST = (150_000.0, 450_000.0, 1_700_000.0)
OPUS = (64_000.0,)


@dataclass
class StubTransport:
    id: str
    handle: int
    consumer_ids: set[str] = field(default_factory=set)


class StubEngine:
    def __init__(self) -> None:
        self.bytes: dict[int, list[float]] = {}
        self.rates: dict[int, tuple[float, ...]] = {}
        self.layer_calls = 0

    def advance(self, seconds: float) -> None:
        for h, rates in self.rates.items():
            counters = self.bytes[h]
            for i, bps in enumerate(rates):
                counters[i] += bps / 8 * seconds

    def snapshot_producer(self, p: int) -> dict[str, Any]:
        layers = [{"ssrc": 1, "rtx_ssrc": 0, "packets": 0, "bytes": int(b), "rtx_packets": 0, "keyframes": 0,
                   "kf_requests": 0, "received": 0, "expected": 0, "jitter": 0, "sr_count": 0}
                  for b in self.bytes[p]]
        return {"packets": 0, "bytes": 0, "consumers": 0, "layers": layers}

    def set_consumer_layer(self, c: int, spatial: int) -> None:
        self.layer_calls += 1

    def pause_consumer(self, c: int) -> None:
        self.layer_calls += 1

    def resume_consumer(self, c: int) -> None:
        self.layer_calls += 1


def build(transports: int, video: int, audio: int) -> tuple[StreamAllocator, StubEngine, FixedEstimates]:
    engine = StubEngine()
    estimates = FixedEstimates()
    treg: Registry[StubTransport] = Registry("transport")
    preg: Registry[Producer] = Registry("producer")
    creg: Registry[Consumer] = Registry("consumer")
    producers = [(f"v{i}", "video", SIMULCAST) for i in range(video)] + [(f"a{i}", "audio", OPUS) for i in range(audio)]
    for pid, kind, rates in producers:
        h = preg.add(pid, Producer(pid, "pub", kind, "0"))
        engine.rates[h] = rates
        engine.bytes[h] = [0.0] * len(rates)
    for t in range(transports):
        tid = f"t{t}"
        th = treg.add(tid, StubTransport(tid, t))
        for pid, kind, _ in producers:
            cid = f"{tid}.{pid}"
            creg.add(cid, Consumer(cid, tid, pid, kind))
            treg.get(tid).consumer_ids.add(cid)
        assert th == t
    allocator = StreamAllocator(engine, estimates, treg, preg, creg, lambda c, paused: None)  # type: ignore[arg-type]
    return allocator, engine, estimates


def measure(case: str, args: argparse.Namespace) -> tuple[float, int]:
    allocator, engine, estimates = build(args.transports, args.video, args.audio)
    now = 1000.0
    high = Estimate(int(args.video * SIMULCAST[2] * 1.5))
    low = Estimate(int(args.video * SIMULCAST[0] * 1.2))  # some tracks at the lowest layer, others paused
    for t in range(args.transports):
        if case != "no estimate":
            estimates.estimates[t] = high
    for _ in range(4):  # the layers are measured (two samples) and the first allocation is made
        now += ALLOCATE_INTERVAL_S
        engine.advance(ALLOCATE_INTERVAL_S)
        allocator.tick(now)
    best = float("inf")
    calls_before = engine.layer_calls
    for _ in range(args.repeat):
        spent = 0.0
        for n in range(args.number):
            now += ALLOCATE_INTERVAL_S
            engine.advance(ALLOCATE_INTERVAL_S)
            if case == "congested":
                estimate = low if n % 2 == 0 else high
                for t in range(args.transports):
                    estimates.estimates[t] = estimate
            start = time.perf_counter()
            allocator.tick(now)
            spent += time.perf_counter() - start
        best = min(best, spent / args.number)
    return best, (engine.layer_calls - calls_before) // args.repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transports", type=int, default=50)
    parser.add_argument("--video", type=int, default=10)
    parser.add_argument("--audio", type=int, default=10)
    parser.add_argument("--number", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    consumers = args.transports * (args.video + args.audio)
    print(f"{args.transports} transports, {consumers} consumers ({args.video} video with 3 layers and "
          f"{args.audio} audio producers), one pass every {ALLOCATE_INTERVAL_S} s:")
    for case in ("no estimate", "steady", "congested"):
        seconds, calls = measure(case, args)
        print(f"  {case:12s} {seconds * 1e3:8.3f} ms per pass  {seconds * 1e6 / consumers:6.2f} us per consumer  "
              f"{seconds / ALLOCATE_INTERVAL_S * 100:5.2f} % of a core  ({calls} Engine calls in {args.number} passes)")


if __name__ == "__main__":
    main()
