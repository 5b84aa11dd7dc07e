"""``python -m bench fanout --workers 2 --spread``: one room over two workers, the producer piped between them.

The end-to-end test runs the option at 4 subscribers for half a second per measurement (five fresh two-worker
servers, synthetic participants with ICE, DTLS and SRTP) and asserts the report's fields, that the subscribers were
split over both workers, that both forwarded packets and that the pipe carried them; never a timing. The figures'
arithmetic and the option's refusals are checked without a server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scenarios import Options
from bench.session import Measurement
from bench.spread import FIGURE_KEYS, PER_WORKER_KEYS, combine, figures

ROOT = Path(__file__).resolve().parents[2]
SPREAD_KEYS = ("subscribers_by_worker", "forwarded_by_worker", "piped_packets", "pipes_opened",
               "pipe_counters_by_worker", "pipe_source_us_per_piped_packet", "pipe_destination_us_per_piped_packet",
               "subscriber_us_per_packet", "intake_us_per_packet", "cpu_us_per_forwarded_packet_spread",
               "cpu_us_per_forwarded_packet_one_worker", "cpu_ratio_spread_to_one_worker",
               "capacity_one_worker_subscribers", "capacity_two_workers_subscribers", "capacity_ratio")


@pytest.mark.timeout(150)
def test_spread_fanout_splits_the_room_and_both_workers_forward(tmp_path: Path) -> None:
    out = tmp_path / "spread.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "bench", "fanout", "--workers", "2", "--spread", "--subscribers",
                             "4", "--seconds", "0.5", "--json", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    result = json.loads(out.read_text())
    spread = result["spread"]
    assert set(SPREAD_KEYS) <= set(spread)
    assert result["workers"] == 2 and result["subscribers"] == 4 and result["worker_restarts"] == 0
    assert spread["subscribers_by_worker"] == [2, 2]  # room spread "always": half on each worker
    assert all(n > 0 for n in spread["forwarded_by_worker"])  # both workers forwarded
    assert sum(spread["forwarded_by_worker"]) == result["points"][0]["received"]
    assert spread["pipes_opened"] == 1 and spread["piped_packets"] > 0
    source, dest = spread["pipe_counters_by_worker"]
    assert source["pipes_out"] == 1 and source["pipe_tx_packets"] > 0  # worker 0 sent the publisher's packets
    assert dest["pipe_rx_packets"] > 0  # and worker 1 took them in
    assert result["points"][0]["auth_failed"] == 0
    assert [(r["home"], r["load"]) for r in spread["one_worker"]] == [(0, 2), (0, 4), (1, 2), (1, 4)]
    assert "pipe: source side" in stdout and "worker CPU per forwarded packet" in stdout


def _m(cpu: list[float], sent: int, received: int) -> Measurement:
    return Measurement(seconds=1.0, sent=sent, expected=received, received=received, received_bytes=0, gaps=0,
                       reordered=0, verified=0, auth_failed=0, bad_payload=0, latency_ms_p50=None,
                       latency_ms_p99=None, server_cpu_s=cpu, server_run_s=cpu, server_rss=[0, 0], server_drops=0,
                       generator_drops=0, generator_cpu_s=0.0, generator_late=0, generator_behind=0,
                       generator_rx_backlog=0, generator_max_late_ms=0.0, snmp_rcvbuf_errors=0, counters={})


def test_figures_recover_the_costs_of_a_linear_worker() -> None:
    """Workers costing 3 us to take a packet in, 2 us per subscriber (worker 1, on a busier core: 4 us and 2.5 us),
    1 us (source) and 1.5 us (destination) per piped packet: the figures give those costs back."""
    sent, n, half = 1000, 10, 5
    cost = 1e-6 * sent

    def alone(worker: int, subs: int) -> Measurement:
        intake, per_sub = ((3, 2), (4, 2.5))[worker]
        cpu = [0.0, 0.0]
        cpu[worker] = (intake + per_sub * subs) * cost
        return _m(cpu, sent, subs * sent)

    spread = _m([(3 + 1 + 2 * half) * cost, (1.5 + 2.5 * (n - half)) * cost], sent, n * sent)
    f = figures(n, half, 100.0, spread, (alone(0, half), alone(1, half)), (alone(0, n), alone(1, n)))
    assert f["subscriber_us_per_packet"] == pytest.approx([2.0, 2.5])
    assert f["intake_us_per_packet"] == pytest.approx([3.0, 4.0])
    assert f["pipe_source_us_per_piped_packet"] == pytest.approx(1.0)
    assert f["pipe_destination_us_per_piped_packet"] == pytest.approx(1.5)
    spread_us = (3 + 1 + 2 * half + 1.5 + 2.5 * (n - half)) / n
    one_us = ((3 + 2 * n) / n + (4 + 2.5 * n) / n) / 2
    assert f["cpu_ratio_spread_to_one_worker"] == pytest.approx(spread_us / one_us, abs=1e-3)
    # one core = 10,000 us per published packet at 100 pkt/s
    one = ((10000 - 3) / 2 + (10000 - 4) / 2.5) / 2
    two = (10000 - 3 - 1) / 2 + (10000 - 1.5) / 2.5
    assert f["capacity_one_worker_subscribers"] == pytest.approx(one, abs=1)
    assert f["capacity_two_workers_subscribers"] == pytest.approx(two, abs=1)


@pytest.mark.parametrize("kwargs", [{"workers": 1}, {"workers": 3}, {"rate": 0}, {"find_capacity": True},
                                    {"steps": 2}, {"url": "ws://127.0.0.1:7880"}])
def test_spread_refuses_what_it_cannot_measure(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="--spread"):
        Options("fanout", **{"workers": 2, "spread": True, **kwargs})


def test_repeated_runs_give_each_figure_its_median() -> None:
    def run(x: float) -> dict:
        figures_ = {k: x for k in FIGURE_KEYS}
        figures_.update({k: [x, 2 * x] for k in PER_WORKER_KEYS})
        return {"scenario": "fanout", "spread": figures_}

    combined = combine([run(1.0), run(5.0), run(3.0)])
    assert combined["spread"]["cpu_ratio_spread_to_one_worker"] == 3.0
    assert combined["spread"]["subscriber_us_per_packet"] == [3.0, 6.0]
    assert len(combined["spread_runs"]) == 3
