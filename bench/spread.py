"""``python -m bench fanout --workers 2 --spread``: one room over two workers against the same room on one.

Owns the spread measurement and its figures (docs/PERFORMANCE.md, One room on two workers). Three measurements,
each on a fresh two-worker server pinned as every benchmark server is (``bench.server``):

1. **spread**: the room's publisher on worker 0 (its home), its S subscribers placed as control places them with
   room spread ``always`` (``SpreadPolicy``: each on the worker holding fewest of the room's members, so worker 0
   gets ``S // 2`` and worker 1 the rest), the publisher's producer piped to worker 1 by control's own ``RoomPipes``;
2. **half** and 3. **whole**: the same room entirely on worker 0, with ``S // 2`` and then S subscribers (worker 1
   idle).

All CPU figures are worker CPU microseconds per packet the publisher sent in the window (each is piped exactly once,
to the one other worker). From the one-worker pair: a subscriber's cost ``c = (whole - half) / (S - S // 2)`` and
the intake ``in = half - c * (S // 2)``. The pipe's source cost is worker 0's spread figure minus ``half`` (the
same subscribers on it), its destination cost worker 1's spread figure minus ``whole - half`` (the same subscribers
on it). The CPU ratio is both workers' CPU per forwarded packet of the spread room over worker 0's of the whole
room (the idle worker 1's housekeeping is left out of the one-worker figure: a host with one worker has none).
Capacity in CPU-equivalent subscribers at the run's rate: one worker fits ``(T - in) / c`` and two workers, with
placement balancing their load, ``(2T - in - source - destination) / c``, T being one core's microseconds per
published packet (1e6 / packets per second).
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


async def _run(opts: Any, subscribers: int, spread: bool) -> tuple[dict[str, Any], Measurement, list[dict[str, Any]]]:
    """One measurement of one room with ``subscribers``: its report point, the raw measurement and each worker's
    pipe counters from its last heartbeat."""
    from bench.scenarios import point  # bench.scenarios imports this module

    server = BenchServer(2, gso=opts.gso, hmac_batch=opts.hmac_batch, srtp_crypto=opts.srtp_crypto)
    await server.start()
    video = TrackSpec("video", opts.size, opts.rate, simulcast=opts.simulcast)
    layers = len(video.layers)
    session = Session(server, opts.srtp, gro=opts.gro, max_participants=subscribers + 9, max_streams=layers + 8,
                      max_receivers=subscribers + 8)
    try:
        await session.add_room(RoomSpec(0, (ParticipantSpec((video,), receives=False),)
                                        + tuple(ParticipantSpec() for _ in range(subscribers)), spread=spread))
        m = await measure(session.gen, server.probe(), session.net.port, session.fanout, opts.seconds,
                          verify_every=opts.verify_every, receiver_workers=session.receiver_workers)
        p = point(m, subscribers, opts.flat_out)
        p["workers"] = 2
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


def figures(subscribers: int, half_n: int, rate_pps: float, spread: Measurement, half: Measurement,
            whole: Measurement) -> dict[str, Any]:
    """The spread figures from the three measurements (see the module's docstring)."""
    a_half, a_whole = _per_sent(half, 0), _per_sent(whole, 0)
    c = (a_whole - a_half) / max(subscribers - half_n, 1)
    intake = a_half - c * half_n
    source = _per_sent(spread, 0) - a_half
    dest = _per_sent(spread, 1) - (a_whole - a_half)
    # One worker is worker 0 alone (a host without the idle worker 1); two workers count both.
    one_worker = 1e6 * whole.worker_cpu_s[0] / max(whole.received, 1)
    ratio = spread.cpu_us_per_packet / max(one_worker, 1e-9)
    budget = 1e6 / rate_pps if rate_pps > 0 else 0.0
    out: dict[str, Any] = {
        "subscriber_us_per_packet": round(c, 3),
        "intake_us_per_packet": round(intake, 3),
        "pipe_source_us_per_piped_packet": round(source, 3),
        "pipe_destination_us_per_piped_packet": round(dest, 3),
        "cpu_us_per_forwarded_packet_spread": round(spread.cpu_us_per_packet, 3),
        "cpu_us_per_forwarded_packet_one_worker": round(one_worker, 3),
        "cpu_ratio_spread_to_one_worker": round(ratio, 3),
        "cpu_ratio_goal": CPU_RATIO_GOAL,
        "capacity_one_worker_subscribers": None,
        "capacity_two_workers_subscribers": None,
        "capacity_ratio": None,
        "capacity_ratio_goal": CAPACITY_RATIO_GOAL,
    }
    if budget > 0 and c > 0:
        one = (budget - intake) / c
        two = (2 * budget - intake - source - dest) / c
        out["capacity_one_worker_subscribers"] = round(one)
        out["capacity_two_workers_subscribers"] = round(two)
        out["capacity_ratio"] = round(two / max(one, 1e-9), 3)
    return out


async def run_spread(opts: Any) -> dict[str, Any]:
    """The spread room, then the same room on one worker at half and at full size; one result object."""
    if opts.subscribers < 2:
        raise ValueError("--spread needs at least 2 subscribers (one on each worker)")
    p_spread, m_spread, pipes = await _run(opts, opts.subscribers, True)
    half_n = p_spread["subscribers_by_worker"][0]
    p_half, m_half, _ = await _run(opts, half_n, False)
    p_whole, m_whole, _ = await _run(opts, opts.subscribers, False)
    rate = m_spread.sent / max(m_spread.seconds, 1e-9)  # the publisher's packets per second (every layer)
    plan = plan_cores(2)
    info = {"cores": {"generator": plan.generator, "workers": plan.workers, "shared": plan.shared}}
    result = report.build_result(replace(opts, workers=2), [p_spread], info, None)
    result["spread"] = {
        "subscribers_by_worker": p_spread["subscribers_by_worker"],
        "forwarded_by_worker": p_spread["received_by_worker"],
        "piped_packets": m_spread.sent,
        "pipes_opened": p_spread["pipes_opened"],
        "pipe_counters_by_worker": pipes,
        "worker_cpu_pct": p_spread["worker_cpu_pct"],
        "one_worker_half": {k: p_half[k] for k in ("load", "cpu_us_per_packet", "worker_cpu_pct", "loss_pct")},
        "one_worker_whole": {k: p_whole[k] for k in ("load", "cpu_us_per_packet", "worker_cpu_pct", "loss_pct")},
        **figures(opts.subscribers, half_n, rate, m_spread, m_half, m_whole),
    }
    result["generator_bound"] = any(p["generator_bound"] for p in (p_spread, p_half, p_whole))
    result["generator_bound_reason"] = "; ".join(p["generator_bound_reason"] for p in (p_spread, p_half, p_whole)
                                                 if p["generator_bound"])
    result["worker_restarts"] = sum(p["worker_restarts"] for p in (p_spread, p_half, p_whole))
    log.info("spread: %s", result["spread"])
    return result


def format_spread(s: dict[str, Any]) -> list[str]:
    """The printed lines of a spread result."""
    lines = [
        f"subscribers per worker {s['subscribers_by_worker']}, packets forwarded per worker "
        f"{s['forwarded_by_worker']}, {s['piped_packets']} packets piped",
        f"pipe: source side {s['pipe_source_us_per_piped_packet']} us, destination side "
        f"{s['pipe_destination_us_per_piped_packet']} us per piped packet (a subscriber: "
        f"{s['subscriber_us_per_packet']} us, taking a packet in: {s['intake_us_per_packet']} us)",
        f"worker CPU per forwarded packet: {s['cpu_us_per_forwarded_packet_spread']} us on two workers, "
        f"{s['cpu_us_per_forwarded_packet_one_worker']} us on one: {s['cpu_ratio_spread_to_one_worker']}x "
        f"(goal <= {s['cpu_ratio_goal']}x)",
    ]
    if s["capacity_ratio"] is not None:
        lines.append(f"capacity in CPU-equivalent subscribers: {s['capacity_two_workers_subscribers']} on two "
                     f"workers, {s['capacity_one_worker_subscribers']} on one: {s['capacity_ratio']}x "
                     f"(goal >= {s['capacity_ratio_goal']}x)")
    return lines
