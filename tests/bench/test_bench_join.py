"""``python -m bench join``: a small run against a server the benchmark starts itself (``python -m control serve``
on loopback). Every participant joins through ``/rtc``, ICE and DTLS and gets the publisher's media; the figures
come back in the JSON, the server saw everyone leave and no worker was killed. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_join_runs_end_to_end_and_reports_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "join.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "bench", "join", "--participants", "4", "--concurrency", "2",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert (r["scenario"], r["participants"], r["joined"], r["failed"], r["workers_killed"]) == ("join", 4, 4, 0, 0)
    assert 0 < r["signal_join_ms_p50"] <= r["join_to_media_ms_p50"] <= r["join_to_media_ms_p99"]
    assert r["joins_per_s"] > 0 and r["control_cpu_ms_per_join"] > 0 and r["control_loop_lag_ms_p99"] >= 0
    # the stages after the JoinResponse, in order (no stage ends before the one before it), p50 within p99
    assert set(r["stage_ms"]) == {"offer", "connect", "media"}
    assert all(0 <= p50 <= p99 for p50, p99 in r["stage_ms"].values())
    assert r["leave_s"] is not None  # ListParticipants showed only the publisher again
    # each process's share: control, the one worker, this generator
    assert set(r["cpu_ms_per_join"]) == {"control", "worker 0", "generator"}
    assert all(ms > 0 for ms in r["cpu_ms_per_join"].values())
    assert r["cpu_ms_per_join"]["control"] == r["control_cpu_ms_per_join"]
    for figure in ("joins/s", "join -> first media", "JoinResponse -> offer", "offer -> ICE+DTLS done",
                   "control CPU per join", "CPU per join", "control loop lag",
                   "leave", "workers killed"):
        assert figure in proc.stdout


def test_join_refuses_bad_arguments() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "bench", "join", "--participants", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--participants" in proc.stderr
