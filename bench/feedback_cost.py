"""What congestion control costs the worker: ``python -m bench fanout --cost-of-feedback``.

The same fan-out is measured in interleaved pairs, once with subscribers that send no feedback (the worker forwards
as it did before send-side congestion control) and once with subscribers that answer with transport-wide CC feedback
as a browser does (``--twcc-feedback``: the worker stamps every packet, reads the feedback, estimates, allocates,
probes and may retransmit on RTX). Each run starts its own server; the order alternates (without-with, with-without,
...) so that a drift of the machine's load falls on both sides. The figure is the worker's CPU per forwarded packet
(the worker's CPU only: the generator's cost of building the feedback is not charged to it), the median of each side
and their ratio. With ``--find-capacity`` the load is first searched without feedback (``--capacity-step`` more
subscribers per step until 0.5 % is lost) and the pairs run at :data:`CAPACITY_SHARE` of the largest load that lost
less: the capacity point, near one core and not past it. A "with" run in which the allocator paused or lowered a
subscriber's video measures less forwarding, not the cost: the result says so (``allocation_changed``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from bench.scenarios import Options, run_server_steps

CAPACITY_SHARE = 0.8  # after a capacity search the pairs run at this share of it: near one core, not past it


def median(values: Sequence[float]) -> float:
    """The median (the mean of the middle two for an even count); ValueError when empty."""
    if not values:
        raise ValueError("median of no values")
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def cost_ratio(with_feedback: Sequence[float], without: Sequence[float]) -> float:
    """Median CPU per packet with feedback over the median without: 1.05 = 5 % more CPU per forwarded packet."""
    base = median(without)
    if base <= 0:
        raise ValueError("no CPU measured without feedback")
    return median(with_feedback) / base


def capacity_point(capacity: int, step: int) -> int:
    """The load the pairs run at after a capacity search: CAPACITY_SHARE of the capacity found, in whole steps,
    at least one. At the capacity itself a run that held once loses packets the next time (measured: 1,000
    subscribers lost nothing in the search and up to 37 % in the pairs), and the comparison would measure overload."""
    return max(step, int(capacity * CAPACITY_SHARE // step) * step)


def check_options(opts: Options) -> None:
    """ValueError when the comparison cannot run with these options."""
    if opts.scenario != "fanout":
        raise ValueError("--cost-of-feedback is for the fanout scenario")
    if opts.url or opts.spread or opts.tcp or opts.janus or opts.aiortc:
        raise ValueError("--cost-of-feedback runs on a server the benchmark starts, over UDP, without baselines")
    if opts.twcc_feedback or opts.downlink_cap or opts.downlink_loss or opts.capped:
        raise ValueError("--cost-of-feedback compares with and without --twcc-feedback on clean downlinks")
    if opts.steps != 1:
        raise ValueError("--cost-of-feedback measures one load (use --find-capacity to search it)")


def pair_order(index: int) -> tuple[bool, bool]:
    """Whether the runs of pair ``index`` have feedback: (False, True), then (True, False), alternating."""
    return (False, True) if index % 2 == 0 else (True, False)


def allocation_changed(point: dict[str, Any]) -> bool:
    """Whether some subscriber's video was paused or not on its top layer at the end of a run with feedback."""
    return any(count and layer != "0" for layer, count in layers(point).items())


def layers(point: dict[str, Any]) -> dict[str, int]:
    """The subscribers' video at the end of a run: layer (or "paused") -> consumers; {} without feedback."""
    out: dict[str, int] = {}
    for group in (point.get("downlinks") or {}).values():
        for layer, count in group.get("layers", {}).items():
            out[layer] = out.get(layer, 0) + count
    return out


async def _one(opts: Options, load: int, feedback: bool) -> dict[str, Any]:
    points, _ = await run_server_steps(dataclasses.replace(opts, subscribers=load, steps=1, find_capacity=False,
                                                           limit=False, twcc_feedback=feedback))
    return points[-1]


async def run_cost_of_feedback(opts: Options, pairs: int) -> dict[str, Any]:
    check_options(opts)
    load = opts.subscribers
    searched: list[dict[str, Any]] = []
    if opts.find_capacity:
        searched, _ = await run_server_steps(dataclasses.replace(opts, limit=False, twcc_feedback=False))
        good = [p["load"] for p in searched if p["loss_pct"] < 0.5 and not p["generator_bound"]]
        if not good:
            raise ValueError(f"no load up to {opts.subscribers} lost less than 0.5 % without feedback")
        load = capacity_point(max(good), opts.capacity_step)
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for i in range(pairs):
        for feedback in pair_order(i):
            runs[feedback].append(await _one(opts, load, feedback))

    def side(points: list[dict[str, Any]]) -> dict[str, Any]:
        return {"cpu_us_per_packet": [p["cpu_us_per_packet"] for p in points],
                "cpu_us_per_packet_median": round(median([p["cpu_us_per_packet"] for p in points]), 3),
                "worker_cpu_pct_median": round(median([sum(p["worker_cpu_pct"]) for p in points]), 1),
                "forwarded_pps_median": round(median([p["forwarded_pps"] for p in points]), 1),
                "loss_pct_max": max(p["loss_pct"] for p in points),
                "generator_bound": any(p["generator_bound"] for p in points),
                "layers": [layers(p) for p in points]}

    without, with_fb = side(runs[False]), side(runs[True])
    return {"scenario": "fanout", "cost_of_feedback": True, "subscribers": load, "rate_pps": opts.rate,
            "seconds": opts.seconds, "pairs": pairs, "without": without, "with": with_fb,
            "ratio": round(cost_ratio(with_fb["cpu_us_per_packet"], without["cpu_us_per_packet"]), 3),
            "allocation_changed": any(allocation_changed(p) for p in runs[True]),
            "capacity_search": [{"load": p["load"], "loss_pct": p["loss_pct"], "worker_cpu_pct": p["worker_cpu_pct"]}
                                for p in searched]}


def format_result(r: dict[str, Any]) -> list[str]:
    rate = "flat out" if not r["rate_pps"] else f"{r['rate_pps']:g} pkt/s"
    lines = [f"cost of TWCC feedback: 1 -> {r['subscribers']} at {rate}, {r['pairs']} interleaved pairs of "
             f"{r['seconds']:g} s"]
    for name in ("without", "with"):
        s = r[name]
        lines.append(f"  {name:8} worker {s['cpu_us_per_packet_median']:.3f} us/pkt (runs "
                     f"{', '.join(f'{x:.3f}' for x in s['cpu_us_per_packet'])}), worker CPU "
                     f"{s['worker_cpu_pct_median']} %, {s['forwarded_pps_median']:,.0f} pkt/s, loss <= "
                     f"{s['loss_pct_max']} %" + (" GENERATOR BOUND" if s["generator_bound"] else ""))
    lines.append(f"  ratio with/without: {r['ratio']:.3f} ({100 * (r['ratio'] - 1):+.1f} %)")
    if r["capacity_search"]:
        lines.append("  capacity search without feedback: " + ", ".join(
            f"{p['load']}: {p['loss_pct']} % lost, worker {p['worker_cpu_pct']} %" for p in r["capacity_search"]))
    if r["allocation_changed"]:
        lines.append("  INVALID: the allocator paused or lowered some subscriber's video in a run with feedback "
                     f"(at the end of each: {r['with']['layers']}); that run forwarded less, it did not measure "
                     "the cost")
    return lines
