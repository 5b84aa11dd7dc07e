"""Turning scenario results into the report: the JSON object, the printed table and the plot.

Owns the result keys (issue 4: ``scenario``, ``srtp_profile``, ``subscribers``, ``forwarded_pps``,
``limit_forwarded_pps``, ``ratio_to_limit``, ``cpu_us_per_packet``, ``limit_cpu_us_per_packet``, ``loss_pct``,
``latency_ms_p50``, ``latency_ms_p99``, ``generator_bound``, ``commit``, ``machine``, plus details), how the ratio to
the limit is taken, the fixed-width table, the matplotlib figure (forwarded packets/s and CPU per packet
against load) and where a result came from (the checkout's commit, the machine).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
from typing import Any

LOW_LATENCY_P50_MS = 20.0  # a capacity step "keeps latency low" when its median one-way latency is at most this
REQUIRED_KEYS = ("scenario", "srtp_profile", "subscribers", "forwarded_pps", "limit_forwarded_pps", "ratio_to_limit",
                 "cpu_us_per_packet", "limit_cpu_us_per_packet", "loss_pct", "latency_ms_p50", "latency_ms_p99",
                 "generator_bound", "commit", "machine")


def build_result(opts: Any, points: list[dict[str, Any]], info: dict[str, Any], limit: dict[str, Any] | None,
                 capacity: int | None = None) -> dict[str, Any]:
    """The JSON object of one scenario run. Headline figures come from the last load step (for a capacity
    search: the last step that met the loss target, or the first step if none did)."""
    headline = points[-1]
    if capacity is not None:
        good = [p for p in points if p["load"] == capacity]
        headline = good[0] if good else points[0]
    result: dict[str, Any] = {
        "scenario": opts.scenario,
        "srtp_profile": {"cm80": "AES_CM_128_HMAC_SHA1_80", "gcm": "AEAD_AES_128_GCM"}[opts.srtp],
        "subscribers": headline["load"],
        "workers": headline.get("workers", opts.workers),
        "rate_pps_per_stream": opts.rate or "max",
        "packet_bytes": opts.size,
        "simulcast": opts.simulcast,
        "downlink_loss_pct": opts.downlink_loss,
        "uplink_loss_pct": opts.uplink_loss,
        "downlink_cap_kbps": opts.downlink_cap,
        "capped_pct": opts.capped,
        "twcc_feedback": bool(opts.twcc_feedback or opts.downlink_cap),
        "downlinks": headline.get("downlinks"),
        "recovered_pct": headline.get("recovered_pct"),
        "seconds": opts.seconds,
        "forwarded_pps": headline["forwarded_pps"],
        "forwarded_mbps": headline["mbps"],
        "cpu_us_per_packet": headline["cpu_us_per_packet"],
        "loss_pct": headline["loss_pct"],
        "latency_ms_p50": headline["latency_ms_p50"],
        "latency_ms_p99": headline["latency_ms_p99"],
        "rss_mb_per_worker": headline["rss_mb_per_worker"],
        "worker_cpu_pct": headline["worker_cpu_pct"],
        "generator_bound": any(p["generator_bound"] for p in points if p is headline or capacity is None),
        "generator_bound_reason": "; ".join(p["generator_bound_reason"] for p in points if p["generator_bound"]),
        "limit_forwarded_pps": None,
        "limit_cpu_us_per_packet": None,
        "ratio_to_limit": None,
        "ratio_to_limit_per_cpu": None,
        "ratio_basis": None,
        "cpu_us_over_limit": None,
    }
    if limit is not None:
        result["limit_forwarded_pps"] = limit["forwarded_pps"]
        result["limit_cpu_us_per_packet"] = limit["cpu_us_per_packet"]
        result["limit_destinations"] = limit["load"]
        result["cpu_us_over_limit"] = round(headline["cpu_us_per_packet"] - limit["cpu_us_per_packet"], 3)
        # Packets per CPU-second relative to the limit: what the forwarded-rate ratio would be if both had had
        # the whole core (the machine's cores are shared, so the rate ratio also carries the CPU each one got).
        result["ratio_to_limit_per_cpu"] = round(limit["cpu_us_per_packet"] / max(headline["cpu_us_per_packet"], 1e-9),
                                                 3)
        if opts.flat_out:
            # Both flat out: the forwarded rates compare directly.
            result["ratio_to_limit"] = round(headline["forwarded_pps"] / max(limit["forwarded_pps"], 1e-9), 3)
            result["ratio_basis"] = "forwarded packets/s, both flat out"
        else:
            # Paced load: the rate is the offered load, so compare packets per CPU-second instead.
            result["ratio_to_limit"] = round(limit["cpu_us_per_packet"] / max(headline["cpu_us_per_packet"], 1e-9), 3)
            result["ratio_basis"] = "forwarded packets per CPU-second, both at the same paced load"
        result["generator_bound"] = result["generator_bound"] or limit["generator_bound"]
        if limit["generator_bound"]:
            result["generator_bound_reason"] += f"; limit run: {limit['generator_bound_reason']}"
    if capacity is not None:
        result["capacity_subscribers"] = capacity
        result["capacity_loss_target_pct"] = 0.5
        # Loss stays low until the worker's core is full, latency does not: near that point packets queue for
        # hundreds of ms. The load a deployment can plan for also keeps the median latency low, at every step up
        # to it (the ramp's first step that queued ends it).
        low = 0
        for p in sorted(points, key=lambda p: p["load"]):
            if (p["loss_pct"] >= 0.5 or p["generator_bound"] or p["latency_ms_p50"] is None
                    or p["latency_ms_p50"] > LOW_LATENCY_P50_MS):
                break
            low = p["load"]
        result["capacity_low_latency_subscribers"] = low
        result["capacity_low_latency_p50_ms"] = LOW_LATENCY_P50_MS
    if opts.scenario == "fanout" and not opts.flat_out:
        # What one whole core would carry at the CPU cost per packet of the highest load measured (a worker that
        # shares its core with other processes falls behind before it runs out of its own CPU time).
        top = max(points, key=lambda p: p["load"])
        result["subscribers_per_core_estimate"] = int(1e6 / (top["cpu_us_per_packet"] * opts.rate))
        if limit is not None:
            # The same estimate for the limit loop (at its fan-out): the ceiling this machine puts on the figure.
            result["limit_subscribers_per_core_estimate"] = int(1e6 / (limit["cpu_us_per_packet"] * opts.rate))
    fit = cost_fit(points) if not opts.flat_out else None
    if fit is not None:
        result.update(fit)
    # The hypervisor's steal time during the measured windows (this one's and the limit loop's): figures taken
    # while a shared VM lost a noticeable share of its vCPUs are not comparable with quiet ones.
    result["host_steal_pct_max"] = max(p.get("host_steal_pct", 0.0) for p in [*points, *([limit] if limit else [])])
    result["worker_restarts"] = sum(p.get("worker_restarts", 0) for p in points)
    result["points"] = points
    result["limit"] = limit
    result.update({k: v for k, v in info.items() if k != "profile"})
    if "profile" in info:
        result["worker_profile"] = info["profile"]
    result["commit"] = commit()
    result["machine"] = machine()
    # UDP GSO in the workers (and the limit loop, in limit["limit_counters"]): None for a server at --url, as are
    # the other switches the benchmark gives the server it starts (and the limit loop).
    remote = bool(getattr(opts, "url", None))
    result["udp_gso"] = None if remote else udp_gso(opts.gso)
    result["hmac_batch"] = None if remote else opts.hmac_batch
    result["srtp_crypto"] = None if remote else opts.srtp_crypto
    result["rx_hold_ms"] = None if remote else getattr(opts, "rx_hold_ms", 0)
    # UDP_GRO on the generator's socket (bench/net.py): trains of datagrams are not split in the sender's context.
    result["generator_gro"] = any(p.get("generator_counters", {}).get("gro", False) for p in points)
    result["measured_at"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    missing = [k for k in REQUIRED_KEYS if k not in result]
    assert not missing, missing
    return result


def cost_fit(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A least-squares line through the paced load steps: the worker's CPU per second against its forwarded packets
    per second. Its slope is the *marginal* cost of one more forwarded packet, its intercept the *fixed* cost a
    worker pays per second whatever it forwards (wake-ups, timers, heartbeats). ``smallest_load_over_marginal`` is
    the smallest load's CPU per packet over the marginal cost: how much more a small fan-out pays per packet than a
    large one. None with fewer than two distinct rates."""
    xs = [float(p["forwarded_pps"]) for p in points if p.get("forwarded_pps") and p.get("cpu_us_per_packet")]
    ys = [float(p["forwarded_pps"]) * float(p["cpu_us_per_packet"]) / 1000.0 for p in points
          if p.get("forwarded_pps") and p.get("cpu_us_per_packet")]  # CPU ms per second
    if len(xs) < 2 or max(xs) - min(xs) < 1e-9:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    if slope <= 0:
        return None
    marginal_us = slope * 1000.0
    smallest = min((p for p in points if p.get("forwarded_pps") and p.get("cpu_us_per_packet")),
                   key=lambda p: p["load"])
    return {
        "marginal_us_per_packet": round(marginal_us, 3),
        "fixed_cpu_ms_per_s": round(my - slope * mx, 2),
        "smallest_load": smallest["load"],
        "smallest_load_over_marginal": round(smallest["cpu_us_per_packet"] / marginal_us, 3),
    }


MEDIAN_KEYS = ("forwarded_pps", "forwarded_mbps", "cpu_us_per_packet", "limit_forwarded_pps", "limit_cpu_us_per_packet",
               "ratio_to_limit", "ratio_to_limit_per_cpu", "cpu_us_over_limit", "loss_pct", "latency_ms_p50",
               "latency_ms_p99", "ratio_to_aiortc", "limit_ratio_to_aiortc", "capacity_subscribers",
               "capacity_low_latency_subscribers",
               "subscribers_per_core_estimate", "limit_subscribers_per_core_estimate", "host_steal_pct_max",
               "marginal_us_per_packet", "fixed_cpu_ms_per_s", "smallest_load_over_marginal")


def tcp_vs_udp(udp: list[dict[str, Any]], tcp: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``fanout --tcp``: per load step, the worker's CPU per forwarded packet with the subscribers over UDP and over
    ICE-TCP (the same load on two fresh servers of one run), the difference, and the client-side bridge's figures."""
    out = []
    for u, t in zip(udp, tcp, strict=False):
        out.append({
            "load": t["load"],
            "udp_cpu_us_per_packet": u["cpu_us_per_packet"],
            "tcp_cpu_us_per_packet": t["cpu_us_per_packet"],
            "tcp_extra_us_per_packet": round(t["cpu_us_per_packet"] - u["cpu_us_per_packet"], 3),
            "tcp_over_udp": round(t["cpu_us_per_packet"] / max(u["cpu_us_per_packet"], 1e-9), 2),
            "udp_forwarded_pps": u["forwarded_pps"], "tcp_forwarded_pps": t["forwarded_pps"],
            "udp_loss_pct": u["loss_pct"], "tcp_loss_pct": t["loss_pct"],
            "udp_latency_ms_p50": u["latency_ms_p50"], "tcp_latency_ms_p50": t["latency_ms_p50"],
            "generator_bound": u["generator_bound"] or t["generator_bound"],
            "tcp_bridge": t.get("tcp_bridge"),
        })
    return out


def _combine_tcp_vs_udp(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each step's UDP and TCP CPU per packet as the median over the runs, the difference and ratio from those."""
    out = []
    for rows in zip(*runs, strict=False):
        row = dict(rows[len(rows) // 2])
        for key in ("udp_cpu_us_per_packet", "tcp_cpu_us_per_packet", "udp_loss_pct", "tcp_loss_pct"):
            row[key] = round(statistics.median(r[key] for r in rows), 3)
        row["tcp_extra_us_per_packet"] = round(row["tcp_cpu_us_per_packet"] - row["udp_cpu_us_per_packet"], 3)
        row["tcp_over_udp"] = round(row["tcp_cpu_us_per_packet"] / max(row["udp_cpu_us_per_packet"], 1e-9), 2)
        row["generator_bound"] = any(r["generator_bound"] for r in rows)
        row["median_of"] = len(rows)
        out.append(row)
    return out


def format_tcp_vs_udp(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        bridge = r.get("tcp_bridge") or {}
        lines.append(f"{r['load']} subscribers: worker {r['udp_cpu_us_per_packet']} us/pkt over UDP, "
                     f"{r['tcp_cpu_us_per_packet']} over ICE-TCP (+{r['tcp_extra_us_per_packet']}, "
                     f"{r['tcp_over_udp']}x); loss {r['udp_loss_pct']} / {r['tcp_loss_pct']} %; the client-side "
                     f"bridge {bridge.get('cpu_us_per_frame')} us/frame ({bridge.get('cpu_pct')} % CPU)"
                     + (" [generator bound]" if r["generator_bound"] else ""))
    return lines


def combine_runs(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from repeated runs of the same case: the median of each headline figure (the machine is shared
    and noisy; compare medians), ``generator_bound`` if any run was, every run's figures under ``runs``, and the
    points of the run whose forwarded rate is the median."""
    if len(results) == 1:
        return results[0]
    by_rate = sorted(results, key=lambda r: r["forwarded_pps"])
    combined = dict(by_rate[len(by_rate) // 2])
    for key in MEDIAN_KEYS:
        values = [r[key] for r in results if isinstance(r.get(key), int | float) and not isinstance(r[key], bool)]
        if values:
            combined[key] = round(statistics.median(values), 3)
    combined["generator_bound"] = any(r["generator_bound"] for r in results)
    combined["generator_bound_reason"] = "; ".join(r["generator_bound_reason"] for r in results
                                                   if r["generator_bound_reason"])
    combined["runs"] = [{k: r.get(k) for k in (*MEDIAN_KEYS, "generator_bound", "measured_at")} for r in results]
    if all(r.get("tcp_vs_udp") for r in results):
        combined["tcp_vs_udp"] = _combine_tcp_vs_udp([r["tcp_vs_udp"] for r in results])
        for run, r in zip(combined["runs"], results, strict=True):
            run["tcp_vs_udp"] = r["tcp_vs_udp"]
    combined["median_of"] = len(results)
    return combined


def write_json(path: str, result: dict[str, Any] | list[dict[str, Any]]) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


COLUMNS = (("scenario", "case", 24, "s"), ("srtp", "srtp", 5, "s"), ("load", "load", 6, "d"),
           ("forwarded_pps", "fwd pkt/s", 10, ",.0f"), ("forwarded_mbps", "Mbps", 7, ".0f"),
           ("cpu_us_per_packet", "us/pkt", 7, ".2f"), ("limit_cpu_us_per_packet", "lim us", 7, ".2f"),
           ("ratio_to_limit", "x limit", 8, ".2f"), ("ratio_to_limit_per_cpu", "x lim/cpu", 9, ".2f"),
           ("loss_pct", "loss %", 7, ".3f"),
           ("latency_ms_p50", "p50 ms", 7, ".2f"), ("latency_ms_p99", "p99 ms", 7, ".2f"),
           ("rss", "RSS MB", 7, "s"), ("gen", "gen", 4, "s"))


def table_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        rows.append({
            "scenario": r.get("label", r["scenario"]),
            "srtp": "gcm" if "GCM" in r["srtp_profile"] else "cm80",
            "load": r["subscribers"],
            "forwarded_pps": r["forwarded_pps"],
            "forwarded_mbps": r["forwarded_mbps"],
            "cpu_us_per_packet": r["cpu_us_per_packet"],
            "limit_cpu_us_per_packet": r["limit_cpu_us_per_packet"],
            "ratio_to_limit": r["ratio_to_limit"],
            "ratio_to_limit_per_cpu": r.get("ratio_to_limit_per_cpu"),
            "loss_pct": r["loss_pct"],
            "latency_ms_p50": r["latency_ms_p50"],
            "latency_ms_p99": r["latency_ms_p99"],
            "rss": "/".join(f"{x:.0f}" for x in r["rss_mb_per_worker"]),
            "gen": "BND" if r["generator_bound"] else "ok",
        })
    return rows


def format_table(results: list[dict[str, Any]]) -> str:
    head = " ".join(f"{title:>{width}}" if i else f"{title:<{width}}"
                    for i, (_, title, width, _) in enumerate(COLUMNS))
    lines = [head, "-" * len(head)]
    for row in table_rows(results):
        cells = []
        for i, (key, _, width, spec) in enumerate(COLUMNS):
            text = _fmt(row[key], spec)
            cells.append(f"{text:>{width}}" if i else f"{text:<{width}}")
        lines.append(" ".join(cells))
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: str) -> None:
    """Forwarded packets/s (offered load dashed) and worker CPU per forwarded packet (the limit loop's dotted)
    against load. With several results, only those with more than one load step are drawn (a ramp says more than
    a point), and ``scale`` (whose x axis is workers) only when it is alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [r for r in results if len(r["points"]) > 1] if len(results) > 1 else results
    if any(r["scenario"] != "scale" for r in drawn):
        drawn = [r for r in drawn if r["scenario"] != "scale"]
    if not drawn:
        drawn = results[:1]
    by_workers = all(r["scenario"] == "scale" for r in drawn)
    xlabel = "workers" if by_workers else "receiving streams"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for r in drawn:
        pts = r["points"]
        label = f"{r.get('label', r['scenario'])} ({'gcm' if 'GCM' in r['srtp_profile'] else 'cm80'})"
        xs = [p["workers"] if by_workers else p["receivers"] for p in pts]
        line = ax1.plot(xs, [p["forwarded_pps"] for p in pts], marker="o", label=label)[0]
        ax1.plot(xs, [p["expected"] / p["seconds"] for p in pts], linestyle="--", linewidth=1,
                 color=line.get_color())
        ax2.plot(xs, [p["cpu_us_per_packet"] for p in pts], marker="o", label=label, color=line.get_color())
        if r.get("limit_cpu_us_per_packet") is not None:
            ax2.axhline(r["limit_cpu_us_per_packet"], linestyle=":", linewidth=1, color=line.get_color())
    ax1.set_xlabel(xlabel)
    ax1.set_ylabel("forwarded pkt/s (dashed: offered)")
    ax1.grid(True, alpha=0.3)
    ax2.set_xlabel(xlabel)
    ax2.set_ylabel("worker CPU us/pkt (dotted: limit)")
    ax2.set_ylim(bottom=0)
    ax2.grid(True, alpha=0.3)
    ax1.legend(fontsize=7)
    fig.suptitle(f"mediarouter bench: {results[0]['machine']} @ {results[0]['commit']}, "
                 f"{results[0].get('measured_at', '')}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def udp_gso(wanted: bool = True) -> bool:
    """Whether a worker started here segments its sends (fastpath/gso.pxd): the kernel has UDP_SEGMENT and the
    benchmark's gso switch is on (``--no-gso`` turns it off; the limit loop follows the same switch)."""
    import socket

    import fastpath

    if not wanted:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return bool(fastpath.Engine(s.fileno()).gso)


def machine() -> str:
    """CPU model, vCPU count and kernel, e.g. "AMD EPYC 7B13, 2 vCPU, Linux 6.1"."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} vCPU, Linux {platform.release()}"


def commit() -> str:
    """The git commit of the checkout the benchmark runs from ("unknown" outside git), "+dirty" if modified."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
