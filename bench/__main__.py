"""``python -m bench``: run one benchmark scenario, or the quick default suite (``make bench``).

Usage::

    python -m bench <fanout|conference|audio|scale> [--subscribers S] [--seconds T] [--workers W]
                    [--srtp cm80|gcm] [--rate PPS] [--size BYTES] [--steps N] [--find-capacity] [--simulcast]
                    [--downlink-loss PCT] [--uplink-loss PCT] [--twcc-feedback] [--downlink-cap KBPS --capped PCT]
                    [--aiortc] [--no-limit] [--repeat N] [--cost-of-feedback]
                    [--json FILE] [--plot FILE.png] [--url URL] [--source-net CIDR] [--profile-worker [FILE]]
                    [--api-key KEY] [--api-secret SECRET] [--no-gso] [--no-hmac-batch] [--srtp-crypto C] [--no-gro]
    python -m bench fanout --workers 2 --spread [--subscribers S] [--seconds T] [--rate PPS] [--json FILE]
    python -m bench fanout --tcp [--subscribers S] [--seconds T] [--rate PPS] [--steps N] [--json FILE]

``--tcp`` measures the fan-out twice in one run, the subscribers over UDP and then over ICE-TCP (bench/tcp_bridge.py:
a TCP connection per subscriber to the worker's ICE-TCP port), and reports the worker's CPU per forwarded packet of
both, their difference and the bridge's own (client-side) CPU.
    python -m bench fanout --janus --subscribers 100 --steps 4 [--seconds T] [--repeat N] [--json FILE]

``--janus`` (bench/janus.py) measures the same loads through Janus's streaming plugin (the Debian package, in a
network namespace the bench creates, pinned to the worker's core) after mediarouter, in its default set-up and with
``event_loops = 1``, and prints ``x janus``: Janus's CPU per forwarded packet / mediarouter's at each load.

``--spread`` (bench/spread.py) puts one room on both workers, its producer piped from one to the other, and compares
it with the same room on one worker: the pipe's CPU per piped packet on each side, the CPU ratio and the capacity.
``--cost-of-feedback`` (bench/feedback_cost.py) measures one fanout load in interleaved pairs without and with
``--twcc-feedback`` and prints the worker's CPU per forwarded packet of both and their ratio (with
``--find-capacity``: at 0.8 of the largest load that loses < 0.5 % without feedback).
    python -m bench suite [--quick] [--repeat N] [--json FILE] [--plot FILE.png] [--no-gso] ...
    python -m bench join --participants N [--url URL] [--workers W] [--concurrency C] [--json FILE]

``join`` (bench/join.py) measures how fast one room admits N participants through the whole LiveKit join.
    python -m bench churn [--cycles N] [--warmup N] [--every N] [--storm ROOMS] [--json FILE]

``churn`` is the memory check after abrupt leaves (``bench/churn.py``): join / publish / vanish cycles against one
worker's media side in this process, with RSS, glibc heap, the Engine's C state and every registry after a warm-up.

Owns the command line, the suite's list of cases and the printed summary. Each run starts its own server
(control's Supervisor in this process, workers pinned away from the generator's core when there are cores to spare)
unless ``--url ws://HOST:PORT`` names a running one, on this host or another (then ``--source-net``): every participant
joins it through LiveKit signaling with a token signed by ``--api-key``/``--api-secret`` (``bench.remote``).

The fast-path switches are the server's (control/config.py): ``--[no-]gso``, ``--[no-]hmac-batch`` and
``--srtp-crypto`` go to the workers the benchmark starts and to the limit loop (``--srtp-crypto`` also to this
process's generator), ``--[no-]gro`` is the generator socket's UDP_GRO (bench/net.py). Their defaults are the
environment's ``MEDIAROUTER_GSO``, ``MEDIAROUTER_HMAC_BATCH``, ``MEDIAROUTER_SRTP_CRYPTO`` and ``MEDIAROUTER_GRO``
(e.g. ``MEDIAROUTER_GSO=0``), else on and ``mediarouter``; the JSON records them (``udp_gso``, ``hmac_batch``,
``srtp_crypto``, ``generator_gro``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from bench import report
from bench.lk_client import SignalingError
from bench.peer import SetupError
from bench.remote import RemoteError, check_url
from bench.scenarios import SCENARIOS, Options, fanout_degree, run_limit, run_server_steps
from control.config import SRTP_CRYPTO, ConfigError, from_environment, parse_flag

log = logging.getLogger("bench")
STEAL_WARN_PCT = 3.0


async def run_one(opts: Options, label: str | None = None) -> dict[str, Any]:
    if opts.spread:
        from bench.spread import run_spread

        result = await run_spread(opts)
        if label:
            result["label"] = label
        return result
    udp_points: list[dict[str, Any]] = []
    if opts.tcp:  # the same fan-out over UDP first, on a fresh server: the comparison of the same run
        udp_points, _ = await run_server_steps(dataclasses.replace(opts, tcp=False, tcp_listen=True, limit=False))
    points, info = await run_server_steps(opts)
    capacity = None
    if opts.find_capacity:
        good = [p["load"] for p in points if p["loss_pct"] < 0.5 and not p["generator_bound"]]
        capacity = max(good) if good else 0
    limit = None
    if opts.limit:
        # The limit runs at the fan-out of the headline figures: the capacity found, or the last load measured.
        dests = fanout_degree(opts)
        if opts.scenario == "fanout":
            dests = capacity or points[-1]["load"]
        size = opts.size if opts.scenario != "audio" else 100
        limit = await run_limit(opts, max(1, dests), size)
    janus_result = await _janus(opts, points, info) if opts.janus else {}
    aiortc_result = None
    if opts.aiortc:
        from bench.aiortc_relay import run_aiortc_relay

        aiortc_result = await run_aiortc_relay(opts)
    result = report.build_result(opts, points, info, limit, capacity)
    if udp_points:
        result["tcp_vs_udp"] = report.tcp_vs_udp(udp_points, points)
    result.update(janus_result)
    if aiortc_result is not None:
        result["aiortc_relay"] = aiortc_result
        ours = 1e6 / max(result["cpu_us_per_packet"], 1e-9)
        theirs = aiortc_result["packets_per_cpu_second"]
        result["ratio_to_aiortc"] = round(ours / max(theirs, 1e-9), 2)
        if limit is not None:
            # The ceiling of that ratio on this machine: the limit loop's own packets per CPU-second against aiortc's.
            limit_pps_per_cpu = 1e6 / max(limit["cpu_us_per_packet"], 1e-9)
            result["limit_ratio_to_aiortc"] = round(limit_pps_per_cpu / max(theirs, 1e-9), 2)
    if label:
        result["label"] = label
    return result


async def _janus(opts: Options, points: list[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """Janus at the loads just measured, on the worker's core (``bench.janus``): ``{"janus": x janus table}``, or
    ``{"janus_skipped": why}`` when Janus cannot run here."""
    from bench import janus

    cores = info["cores"]
    try:
        table = await asyncio.to_thread(
            janus.run_janus, [p["load"] for p in points], generator_core=cores["generator"],
            janus_core=cores["workers"][0], seconds=opts.seconds, rate=opts.rate, size=opts.size,
            verify_every=opts.verify_every, srtp_crypto=opts.srtp_crypto)
    except janus.JanusUnavailable as exc:
        log.warning("Janus skipped: %s", exc)
        return {"janus_skipped": str(exc)}
    return {"janus": janus.compare(points, table)}


def suite_cases(quick: bool) -> list[tuple[str, Options]]:
    """The default suite: the limit comparison with both profiles, a capacity point, the other scenarios (a
    conference also with simulcast publishers), aiortc."""
    s = 1.0 if quick else 2.0
    return [
        ("fanout 1->10 max", Options("fanout", subscribers=10, seconds=s, rate=0, srtp="cm80", aiortc=True,
                                     verify_every=2)),
        ("fanout 1->10 max", Options("fanout", subscribers=10, seconds=s, rate=0, srtp="gcm", verify_every=2)),
        ("fanout 1->10 1000/s", Options("fanout", subscribers=10, seconds=s, rate=1000, aiortc=True)),
        ("fanout 1.5 Mbps ramp", Options("fanout", subscribers=800, seconds=s, rate=156, steps=4)),
        ("conference 8 a+v", Options("conference", subscribers=8, seconds=s, rate=156)),
        ("conference 8 simulcast", Options("conference", subscribers=8, seconds=s, rate=156, simulcast=True)),
        ("audio 200, rooms of 4", Options("audio", subscribers=200, seconds=s, rate=50, size=100)),
        ("scale 400 on 1..2", Options("scale", subscribers=400, seconds=s, rate=156, workers=2)),
        ("fanout 1.5 Mbps vs Janus", Options("fanout", subscribers=100, seconds=s, rate=156, steps=4, limit=False,
                                             janus=True)),
    ]


SWITCHES = ("gso", "hmac_batch", "srtp_crypto", "gro", "rx_hold_ms")


def switch_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """The fast-path switches' defaults: the environment variables the server reads (control/config.py) and
    ``MEDIAROUTER_GRO`` for the generator, else on and ``mediarouter``. Raises ConfigError for a bad value."""
    gso = from_environment("gso", environ)
    hmac_batch = from_environment("hmac_batch", environ)
    srtp_crypto = (from_environment("srtp_crypto", environ) or "mediarouter").lower()
    if srtp_crypto not in SRTP_CRYPTO:
        raise ConfigError(f"MEDIAROUTER_SRTP_CRYPTO must be one of {', '.join(SRTP_CRYPTO)}, not {srtp_crypto!r}")
    gro = environ.get("MEDIAROUTER_GRO", "").strip()
    rx_hold_ms = from_environment("rx_hold_ms", environ)
    return {"gso": True if gso is None else gso, "hmac_batch": True if hmac_batch is None else hmac_batch,
            "srtp_crypto": srtp_crypto, "gro": parse_flag("MEDIAROUTER_GRO", gro) if gro else True,
            "rx_hold_ms": rx_hold_ms or 0}


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``report.combine_runs``, with the medians of the Janus comparison when the runs made one."""
    combined = report.combine_runs(runs)
    tables = [r["janus"] for r in runs if r.get("janus")]
    if len(tables) > 1:
        from bench.janus import combine_tables

        combined["janus"] = combine_tables(tables)
    return combined


def _parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("scenario", choices=(*SCENARIOS, "suite"))
    ap.add_argument("--subscribers", type=int, default=10,
                    help="fanout/scale: subscribers; conference/audio: participants (default 10)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per load step (default 3)")
    ap.add_argument("--workers", type=int, default=1, help="workers (scale: 1..W); default 1")
    ap.add_argument("--srtp", choices=("cm80", "gcm"), default="cm80")
    ap.add_argument("--rate", type=float, default=156.0,
                    help="packets/s per video stream (audio streams send 50/s); 0 = as fast as possible")
    ap.add_argument("--size", type=int, default=1200, help="RTP packet bytes of video streams (default 1200)")
    ap.add_argument("--room-size", type=int, default=4, help="audio: participants per room (default 4)")
    ap.add_argument("--steps", type=int, default=1, help="fanout: measure at N evenly spaced loads up to S")
    ap.add_argument("--find-capacity", action="store_true",
                    help="fanout: add --capacity-step subscribers per step until loss >= 0.5 %% (S is the maximum)")
    ap.add_argument("--capacity-step", type=int, default=200)
    ap.add_argument("--verify-every", type=int, default=None,
                    help="subscribers authenticate+decrypt every Nth packet (all are counted); default 1, and 2 "
                         "flat out (--rate 0), where the generator's one-at-a-time HMAC checks would otherwise "
                         "fall behind the worker's batched tags")
    ap.add_argument("--simulcast", action="store_true",
                    help="video publishers send three layers (1/10, 1/3 and all of --rate); subscribers get the top")
    ap.add_argument("--downlink-loss", type=float, default=0.0, metavar="PCT",
                    help="drop PCT %% of the packets reaching subscribers and NACK them, as a lossy downlink and a "
                         "browser would; loss %% is then what retransmission left (default 0)")
    ap.add_argument("--uplink-loss", type=float, default=0.0, metavar="PCT",
                    help="lose PCT %% of the publishers' packets; they answer the server's NACKs from a 512-packet "
                         "history, as browsers do (paced rates only; default 0)")
    ap.add_argument("--downlink-cap", type=float, default=0.0, metavar="KBPS",
                    help="fanout: --capped PCT %% of the subscribers get a token-bucket downlink of KBPS kbit/s "
                         "(200 ms queue) in the generator; every subscriber then answers with transport-wide CC "
                         "feedback, as a browser does; the report compares the capped subscribers with the others")
    ap.add_argument("--capped", type=float, default=0.0, metavar="PCT", help="see --downlink-cap")
    ap.add_argument("--twcc-feedback", action="store_true",
                    help="fanout: subscribers answer with transport-wide CC feedback (the server's bandwidth "
                         "estimation and stream allocation run for them), without a cap")
    ap.add_argument("--spread", action="store_true",
                    help="fanout --workers 2: one room over both workers (room spread always, the producer piped) "
                         "against the same room on one worker (bench/spread.py; no limit loop)")
    ap.add_argument("--tcp", action="store_true",
                    help="fanout: the subscribers over ICE-TCP (RFC 6544/4571), after the same run over UDP; reports "
                         "the worker's CPU per forwarded packet of both (bench/tcp_bridge.py)")
    ap.add_argument("--janus", action="store_true",
                    help="fanout: also measure each load through Janus's streaming plugin, default set-up and "
                         "event_loops = 1, and print x janus (bench/janus.py; needs root and the janus package)")
    ap.add_argument("--cost-of-feedback", action="store_true",
                    help="fanout: the worker's CPU per forwarded packet with --twcc-feedback against without, "
                         "--repeat interleaved pairs (default 3), medians and their ratio (bench/feedback_cost.py); "
                         "with --find-capacity at 0.8 of the largest load that loses < 0.5 %% without feedback")
    ap.add_argument("--no-limit", action="store_true", help="skip the limit-loop baseline")
    ap.add_argument("--aiortc", action="store_true", help="also measure the aiortc relay baseline")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--plot", metavar="FILE.png")
    ap.add_argument("--url", metavar="ws://HOST:PORT",
                    help="drive a running mediarouter through LiveKit signaling instead of starting one (not with "
                         "scale); its worker CPU, RSS and drops are read from its /healthz")
    ap.add_argument("--source-net", metavar="CIDR",
                    help="--url: the network the participants send from, one address each (default 127.77.0.0/16 "
                         "on loopback; required for a server on another host: local here, routed back from there)")
    ap.add_argument("--api-key", default=os.environ.get("LIVEKIT_API_KEY", "devkey"),
                    help="--url: key the participants' tokens are signed with (env LIVEKIT_API_KEY; default devkey)")
    ap.add_argument("--api-secret", default=os.environ.get("LIVEKIT_API_SECRET", "secret"),
                    help="--url: its secret (env LIVEKIT_API_SECRET; default secret, the server's dev key)")
    ap.add_argument("--profile-worker", nargs="?", const="worker-profile", metavar="FILE",
                    help="record the worker with py-spy (or perf) during the last measurement")
    ap.add_argument("--repeat", type=int, default=None,
                    help="run each case N times and report the median of each figure (runs listed in the JSON)")
    ap.add_argument("--quick", action="store_true", help="suite: 1 s per step instead of 2")
    ap.add_argument("--gso", action=argparse.BooleanOptionalAction,
                    help="workers and the limit loop send with UDP GSO (default on; env MEDIAROUTER_GSO)")
    ap.add_argument("--hmac-batch", action=argparse.BooleanOptionalAction,
                    help="workers and the limit loop batch AES-CM-80 tags (default on; env MEDIAROUTER_HMAC_BATCH)")
    ap.add_argument("--srtp-crypto", choices=SRTP_CRYPTO,
                    help="AES-CM-80 primitives under libsrtp everywhere but the aiortc relay (default mediarouter; "
                         "env MEDIAROUTER_SRTP_CRYPTO)")
    ap.add_argument("--gro", action=argparse.BooleanOptionalAction,
                    help="UDP_GRO on the generator's socket (default on; env MEDIAROUTER_GRO)")
    ap.add_argument("--rx-hold-ms", type=int, metavar="MS",
                    help="the workers' rx_hold_ms (control/config.py; default 0 = off; env MEDIAROUTER_RX_HOLD_MS)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.set_defaults(**switch_defaults(os.environ if environ is None else environ))
    return ap


async def _main(args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    switches = {name: getattr(args, name) for name in SWITCHES}
    if args.scenario == "suite":
        for label, case in suite_cases(args.quick):
            opts = dataclasses.replace(case, **switches)
            print(f"... {label} ({opts.srtp})", file=sys.stderr, flush=True)
            results.append(_combine([await run_one(opts, label) for _ in range(args.repeat or 1)]))
    else:
        opts = Options(args.scenario, subscribers=args.subscribers, seconds=args.seconds, workers=args.workers,
                       srtp=args.srtp, rate=args.rate, size=args.size, room_size=args.room_size,
                       steps=max(args.steps, 4 if args.plot and args.scenario == "fanout" else 1),
                       find_capacity=args.find_capacity, capacity_step=args.capacity_step,
                       verify_every=args.verify_every or (2 if args.rate == 0 else 1), simulcast=args.simulcast,
                       limit=not args.no_limit and not args.spread, spread=args.spread, tcp=args.tcp,
                       downlink_loss=args.downlink_loss, uplink_loss=args.uplink_loss, aiortc=args.aiortc,
                       janus=args.janus,
                       downlink_cap=args.downlink_cap, capped=args.capped, twcc_feedback=args.twcc_feedback,
                       profile_worker=args.profile_worker, url=args.url,
                       source_net=args.source_net, api_key=args.api_key,
                       api_secret=args.api_secret, **switches)
        if args.cost_of_feedback:
            from bench.feedback_cost import format_result, run_cost_of_feedback

            r = await run_cost_of_feedback(dataclasses.replace(opts, limit=False), args.repeat or 3)
            print("\n".join(format_result(r)))
            if args.json:
                report.write_json(args.json, r)
            return 0
        runs = [await run_one(opts) for _ in range(args.repeat or 1)]
        if opts.spread and len(runs) > 1:
            from bench.spread import combine

            results.append(combine(runs))
        else:
            results.append(_combine(runs))
    print(report.format_table(results))
    for r in results:
        notes = []
        if r.get("ratio_to_aiortc") is not None:
            notes.append(f"{r['ratio_to_aiortc']}x the aiortc relay's packets per CPU-second"
                         + (f" (the limit loop: {r['limit_ratio_to_aiortc']}x)"
                            if r.get("limit_ratio_to_aiortc") is not None else ""))
        if r.get("capacity_subscribers") is not None:
            notes.append(f"capacity {r['capacity_subscribers']} subscribers at < 0.5 % loss (median latency "
                         f"{r['latency_ms_p50']} ms there); {r['capacity_low_latency_subscribers']} with the median "
                         f"latency also under {r['capacity_low_latency_p50_ms']:.0f} ms")
        if r.get("subscribers_per_core_estimate") is not None:
            notes.append(f"{r['subscribers_per_core_estimate']} subscribers at {r['rate_pps_per_stream']} pkt/s would "
                         f"fill one whole core at this CPU cost per packet"
                         + (f" (the limit loop: {r['limit_subscribers_per_core_estimate']})"
                            if r.get("limit_subscribers_per_core_estimate") is not None else ""))
        if r.get("marginal_us_per_packet") is not None:
            notes.append(f"cost fit over the loads: marginal {r['marginal_us_per_packet']} us per forwarded packet, "
                         f"fixed {r['fixed_cpu_ms_per_s']} ms of CPU per second; at {r['smallest_load']} subscribers "
                         f"{r['smallest_load_over_marginal']}x the marginal cost")
        if r.get("server_on_this_host") is False and (r.get("limit") or r.get("aiortc_relay")):
            notes.append("the baselines ran on this host, the server on another: their ratios compare two machines")
        if r.get("tcp_vs_udp"):
            notes.extend(report.format_tcp_vs_udp(r["tcp_vs_udp"]))
        if r.get("janus"):
            from bench.janus import format_compare

            notes.extend(format_compare(r["janus"]))
        if r.get("janus_skipped"):
            notes.append(f"Janus skipped: {r['janus_skipped']}")
        if r.get("spread"):
            from bench.spread import format_spread

            notes.extend(format_spread(r["spread"]))
        if r.get("worker_restarts"):
            notes.append(f"INVALID: {r['worker_restarts']} worker death(s) during the run")
        if r.get("host_steal_pct_max", 0) >= STEAL_WARN_PCT:
            notes.append(f"NOISY HOST: the hypervisor stole up to {r['host_steal_pct_max']} % of the vCPUs' time "
                         "during a measurement; repeat when the machine is quiet")
        if r["generator_bound"]:
            notes.append(f"GENERATOR BOUND: {r['generator_bound_reason']}")
        if r.get("worker_profile"):
            prof = r["worker_profile"]
            notes.append(f"worker profile ({prof.get('tool')}): {prof.get('output') or prof.get('error')}"
                         + (f" ({prof['samples']} busy samples; {prof['waiting_samples']} of waiting threads left out)"
                            if prof.get("waiting_samples") else ""))
            for name, pct in (prof.get("top_self") or [])[:10]:
                notes.append(f"    {pct:5.1f} %  {name}")
        if notes:
            print(f"{r.get('label', r['scenario'])}: " + "\n  ".join(notes))
    print(f"{results[0]['machine']}; commit {results[0]['commit']}; {time.monotonic() - started:.0f} s")
    if args.json:
        report.write_json(args.json, results if args.scenario == "suite" else results[0])
    if args.plot:
        report.plot(results, args.plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["join"]:
        from bench.join import main as join_main

        return join_main(argv[1:])
    if argv[:1] == ["churn"]:
        from bench import churn

        return churn.main(argv[1:])
    try:
        parser = _parser()
    except ConfigError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    # This process's SRTP sessions (the generator's) use the primitives the workers use.
    from fastpath import crypto_kernel

    crypto_kernel.install(srtp_crypto=args.srtp_crypto, hmac_batch=args.hmac_batch)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.url:
        try:
            check_url(args.url, args.source_net)
        except RemoteError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2
        if args.scenario == "suite":
            print("bench: the suite starts its own servers; run one scenario with --url", file=sys.stderr)
            return 2
    if args.cost_of_feedback and args.scenario != "fanout":
        print("bench: --cost-of-feedback is for the fanout scenario", file=sys.stderr)
        return 2
    if args.repeat is not None and args.repeat < 1:
        print("bench: --repeat must be at least 1", file=sys.stderr)
        return 2
    if args.verify_every is not None and args.verify_every < 1:
        print("bench: --verify-every must be at least 1", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args))
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except (SetupError, SignalingError, RemoteError, RuntimeError) as exc:
        print(f"bench: the run failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
