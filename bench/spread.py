"""``python -m bench fanout --workers 2 --spread``: one room over two workers against the same room on one.

Owns the spread measurement and its figures (docs/PERFORMANCE.md, One room on two workers). Five measurements,
each on a fresh two-worker server pinned as every benchmark server is (``bench.server``):

1. **spread**: the room's publisher on worker 0 (its home), its S subscribers placed as control places them with
   room spread ``always`` (``SpreadPolicy``: each on the worker holding fewest of the room's members, so worker 0
   gets ``S // 2`` and worker 1 the rest), the publisher's producer piped to worker 1 by control's own ``RoomPipes``;
2. to 5. **half** and **whole** on each worker w: the same room entirely on worker w, with ``S // 2`` and with S
   subscribers (the other worker idle). Both workers are measured alone because their cores differ: on a host with
   fewer cores than workers + generator, one worker shares its core with the generator and pays more per packet.

All CPU figures are worker CPU microseconds per packet the publisher sent in the window (each is piped exactly once,
to the one other worker). From worker w's pair: a subscriber's cost ``c_w = (whole_w - half_w) / (S - S // 2)`` and
the intake ``in_w = half_w - c_w * (S // 2)``. The pipe's source cost is worker 0's spread figure minus ``half_0``
(the same subscribers on it), its destination cost worker 1's spread figure minus ``whole_1 - half_1`` (the cost of
the same subscribers on that worker). The CPU ratio is both workers' CPU per forwarded packet of the spread room over
the mean of ``whole_0`` and ``whole_1`` per forwarded packet (the idle worker's housekeeping left out: a host with
one worker has none). Capacity in CPU-equivalent subscribers at the run's rate, T being one core's microseconds per
published packet (1e6 / packets per second): one worker fits ``(T - in) / c`` (the mean of both workers'), two
workers, with placement balancing their load, ``(T - in_0 - source) / c_0 + (T - destination) / c_1``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from bench import report
from bench.server import BenchServer, plan_cores
from bench.session import Measurement, ParticipantSpec, RoomSpec, Session, TrackSpec, measure

log = logging.getLogger("bench")

CPU_RATIO_GOAL = 1.10
CAPACITY_RATIO_GOAL = 1.8


async def _run(opts: Any, subscribers: int, home: int,
               spread: bool) -> tuple[dict[str, Any], Measurement, list[dict[str, Any]]]:
    """One measurement of one room with ``subscribers`` at ``home``: its report point, the raw measurement and each
    worker's pipe counters from its last heartbeat."""
    from bench.scenarios import point  # bench.scenarios imports this module

    server = BenchServer(2, gso=opts.gso, hmac_batch=opts.hmac_batch, srtp_crypto=opts.srtp_crypto)
    await server.start()
    video = TrackSpec("video", opts.size, opts.rate, simulcast=opts.simulcast)
    layers = len(video.layers)
    session = Session(server, opts.srtp, gro=opts.gro, max_participants=subscribers + 9, max_streams=layers + 8,
                      max_receivers=subscribers + 8)
    try:
        await session.add_room(RoomSpec(home, (ParticipantSpec((video,), receives=False),)
                                        + tuple(ParticipantSpec() for _ in range(subscribers)), spread=spread))
        m = await measure(session.gen, server.probe(), session.net.port, session.fanout, opts.seconds,
                          verify_every=opts.verify_every, receiver_workers=session.receiver_workers)
        p = point(m, subscribers, opts.flat_out)
        p["workers"] = 2
        p["home"] = home
        p["receivers"] = session.receivers
        p["participants"] = len(session.participants)
        p["setup_s"] = round(session.setup_s, 2)
        p["worker_restarts"] = server.worker_restarts()
        p["received_by_worker"] = m.received_by_worker + [0] * (2 - len(m.received_by_worker))
        p["subscribers_by_worker"] = [sum(1 for p_ in session.participants[1:] if p_.worker == w) for w in (0, 1)]
        assert server.supervisor is not None
        pipes = [slot.pipe_counters() for slot in server.supervisor.slots]
        room = session.rooms[0]
        p["pipes_opened"] = room.pipes.opened if room.pipes is not None else 0
        return p, m, pipes
    finally:
        session.close()
        await server.stop()


def _per_sent(m: Measurement, worker: int) -> float:
    """Worker ``worker``'s CPU microseconds per packet the publisher sent in the window."""
    return 1e6 * m.worker_cpu_s[worker] / max(m.sent, 1)


def _per_forwarded(m: Measurement, worker: int) -> float:
    return 1e6 * m.worker_cpu_s[worker] / max(m.received, 1)


def figures(subscribers: int, half_n: int, rate_pps: float, spread: Measurement,
            half: tuple[Measurement, Measurement], whole: tuple[Measurement, Measurement]) -> dict[str, Any]:
    """The spread figures from the measurements (see the module's docstring); ``half[w]`` and ``whole[w]`` are the
    room alone on worker w."""
    a_half = [_per_sent(half[w], w) for w in (0, 1)]
    a_whole = [_per_sent(whole[w], w) for w in (0, 1)]
    c = [(a_whole[w] - a_half[w]) / max(subscribers - half_n, 1) for w in (0, 1)]
    intake = [a_half[w] - c[w] * half_n for w in (0, 1)]
    source = _per_sent(spread, 0) - a_half[0]
    dest = _per_sent(spread, 1) - (a_whole[1] - a_half[1])
    one_worker = [_per_forwarded(whole[w], w) for w in (0, 1)]
    ratio = spread.cpu_us_per_packet / max(sum(one_worker) / 2, 1e-9)
    budget = 1e6 / rate_pps if rate_pps > 0 else 0.0
    out: dict[str, Any] = {
        "subscriber_us_per_packet": [round(x, 3) for x in c],
        "intake_us_per_packet": [round(x, 3) for x in intake],
        "pipe_source_us_per_piped_packet": round(source, 3),
        "pipe_destination_us_per_piped_packet": round(dest, 3),
        "cpu_us_per_forwarded_packet_spread": round(spread.cpu_us_per_packet, 3),
        "cpu_us_per_forwarded_packet_one_worker": [round(x, 3) for x in one_worker],
        "cpu_ratio_spread_to_one_worker": round(ratio, 3),
        "cpu_ratio_goal": CPU_RATIO_GOAL,
        "capacity_one_worker_subscribers": None,
        "capacity_two_workers_subscribers": None,
        "capacity_ratio": None,
        "capacity_ratio_goal": CAPACITY_RATIO_GOAL,
    }
    if budget > 0 and min(c) > 0:
        one = sum((budget - intake[w]) / c[w] for w in (0, 1)) / 2
        two = (budget - intake[0] - source) / c[0] + (budget - dest) / c[1]
        out["capacity_one_worker_subscribers"] = round(one)
        out["capacity_two_workers_subscribers"] = round(two)
        out["capacity_ratio"] = round(two / max(one, 1e-9), 3)
    return out


FIGURE_KEYS = ("pipe_source_us_per_piped_packet", "pipe_destination_us_per_piped_packet",
               "cpu_us_per_forwarded_packet_spread", "cpu_ratio_spread_to_one_worker",
               "capacity_one_worker_subscribers", "capacity_two_workers_subscribers", "capacity_ratio")
PER_WORKER_KEYS = ("subscriber_us_per_packet", "intake_us_per_packet", "cpu_us_per_forwarded_packet_one_worker")


async def run_spread(opts: Any) -> dict[str, Any]:
    """The spread room, then the same room alone on each worker at half and at full size; one result object."""
    if opts.subscribers < 2:
        raise ValueError("--spread needs at least 2 subscribers (one on each worker)")
    p_spread, m_spread, pipes = await _run(opts, opts.subscribers, 0, True)
    half_n = p_spread["subscribers_by_worker"][0]
    runs = [await _run(opts, n, w, False) for w in (0, 1) for n in (half_n, opts.subscribers)]
    (p_h0, m_h0, _), (p_w0, m_w0, _), (p_h1, m_h1, _), (p_w1, m_w1, _) = runs
    rate = m_spread.sent / max(m_spread.seconds, 1e-9)  # the publisher's packets per second (every layer)
    plan = plan_cores(2)
    info = {"cores": {"generator": plan.generator, "workers": plan.workers, "shared": plan.shared}}
    result = report.build_result(replace(opts, workers=2), [p_spread], info, None)
    every = [p_spread, p_h0, p_w0, p_h1, p_w1]
    result["spread"] = {
        "subscribers_by_worker": p_spread["subscribers_by_worker"],
        "forwarded_by_worker": p_spread["received_by_worker"],
        "piped_packets": m_spread.sent,
        "pipes_opened": p_spread["pipes_opened"],
        "pipe_counters_by_worker": pipes,
        "worker_cpu_pct": p_spread["worker_cpu_pct"],
        "one_worker": [{k: p[k] for k in ("home", "load", "cpu_us_per_packet", "worker_cpu_pct", "loss_pct")}
                       for p in every[1:]],
        **figures(opts.subscribers, half_n, rate, m_spread, (m_h0, m_h1), (m_w0, m_w1)),
    }
    result["generator_bound"] = any(p["generator_bound"] for p in every)
    result["generator_bound_reason"] = "; ".join(p["generator_bound_reason"] for p in every if p["generator_bound"])
    result["worker_restarts"] = sum(p["worker_restarts"] for p in every)
    result["host_steal_pct_max"] = max(p.get("host_steal_pct", 0.0) for p in every)
    log.info("spread: %s", result["spread"])
    return result


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """``--repeat``: the spread figures' medians over the runs, each on its own (each run's under
    ``spread_runs``); the rest is the first run's."""
    import statistics

    combined = dict(results[0])
    spread = dict(combined["spread"])
    for key in FIGURE_KEYS:
        values = [r["spread"][key] for r in results if r["spread"][key] is not None]
        median = statistics.median(values) if values else None
        spread[key] = None if median is None else round(median) if key.startswith("capacity_") and \
            key != "capacity_ratio" else round(median, 3)
    for key in PER_WORKER_KEYS:
        spread[key] = [round(statistics.median(r["spread"][key][w] for r in results), 3) for w in (0, 1)]
    combined["spread"] = spread
    combined["spread_runs"] = [{k: r["spread"][k] for k in (*FIGURE_KEYS, *PER_WORKER_KEYS)} for r in results]
    return combined


def format_spread(s: dict[str, Any]) -> list[str]:
    """The printed lines of a spread result."""
    lines = [
        f"subscribers per worker {s['subscribers_by_worker']}, packets forwarded per worker "
        f"{s['forwarded_by_worker']}, {s['piped_packets']} packets piped",
        f"pipe: source side {s['pipe_source_us_per_piped_packet']} us, destination side "
        f"{s['pipe_destination_us_per_piped_packet']} us per piped packet (a subscriber: "
        f"{s['subscriber_us_per_packet']} us, taking a packet in: {s['intake_us_per_packet']} us, worker 0 and 1)",
        f"worker CPU per forwarded packet: {s['cpu_us_per_forwarded_packet_spread']} us on two workers, "
        f"{s['cpu_us_per_forwarded_packet_one_worker']} us on worker 0 or 1 alone: "
        f"{s['cpu_ratio_spread_to_one_worker']}x "
        f"(goal <= {s['cpu_ratio_goal']}x)",
    ]
    if s["capacity_ratio"] is not None:
        lines.append(f"capacity in CPU-equivalent subscribers: {s['capacity_two_workers_subscribers']} on two "
                     f"workers, {s['capacity_one_worker_subscribers']} on one: {s['capacity_ratio']}x "
                     f"(goal >= {s['capacity_ratio_goal']}x)")
    return lines
