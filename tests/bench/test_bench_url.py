"""``python -m bench --url``: the benchmark drives a server it did not start, through LiveKit signaling.

Starts ``mediarouter serve`` (one worker, free loopback ports, its own API key) as a subprocess, runs a small
``fanout`` and a small ``conference`` against it with ``--url`` and checks what came back: every subscriber joined
through ``/rtc`` and received its streams (packets forwarded and authenticated), the worker CPU and RSS came from the
server's ``/healthz``, and the server saw the participants leave. The same against a server on "another host" (two
network namespaces joined by a veth link, participants from ``--source-net``). Refusals (a non-loopback URL without
``--source-net``, a bad source network, the scale scenario, a wrong secret) exit with a reason. No timing is
asserted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.request import urlopen

import pytest

from tests.bench.test_bench_smoke import ROOT, _run_bench

KEY, SECRET = "benchkey", "bench-secret-0123456789abcdef0123"


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    http_port, udp_port = _free_tcp_port(), _free_udp_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "control", "serve", "--workers", "1", "--http-host",
                                 "127.0.0.1", "--http-port", str(http_port), "--rtc-port-base", str(udp_port),
                                 "--keys", f"{KEY}:{SECRET}"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=1) as reply:
                    if json.loads(reply.read())["workers"][0]["alive"]:
                        break
            except (OSError, KeyError, IndexError):
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not come up:\n" + log.read_text()
            time.sleep(0.2)
        yield f"ws://127.0.0.1:{http_port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _bench_url(url: str, args: list[str], tmp_path: Path, *, secret: str = SECRET) -> dict:
    out = tmp_path / "result.json"
    done = _run_bench([*args, "--url", url, "--api-key", KEY, "--api-secret", secret, "--seconds", "1",
                       "--no-limit", "--json", str(out)], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.timeout(150)
def test_fanout_through_signaling_forwards_to_every_subscriber(server: str, tmp_path: Path) -> None:
    result = _bench_url(server, ["fanout", "--subscribers", "3", "--rate", "200"], tmp_path)
    point = result["points"][0]
    assert result["url"] == server
    assert point["streams"] == 3 and point["stream_received_min"] > 0
    assert point["verified"] == point["received"] > 0
    assert point["auth_failed"] == 0 and point["bad_payload"] == 0
    assert result["loss_pct"] < 5
    assert result["cpu_us_per_packet"] > 0  # the worker's CPU time as the server's /healthz reports it
    assert point["rss_mb_per_worker"][0] > 8 and point["worker_socket_drops"] == 0
    assert result["server_on_this_host"] is True and result["source_net"] == "127.77.0.0/16"
    assert point["participants"] == 4  # one publisher endpoint + three subscriber endpoints


@pytest.mark.timeout(150)
def test_conference_through_signaling_everyone_receives_everyone(server: str, tmp_path: Path) -> None:
    result = _bench_url(server, ["conference", "--subscribers", "3", "--rate", "100"], tmp_path)
    point = result["points"][0]
    assert point["streams"] == 3 * 2 * 2  # each of 3 receives audio + video of the 2 others
    assert point["stream_received_min"] > 0 and point["verified"] == point["received"]
    assert point["participants"] == 6  # a publisher and a subscriber endpoint per participant


@pytest.mark.timeout(150)
def test_simulcast_through_signaling_the_server_learns_the_layers_from_rid(server: str, tmp_path: Path) -> None:
    """Published as a browser does: rids and a=simulcast in the offer, no SSRCs, MID and RID in every packet. The
    subscribers get the top layer (bad_payload counts packets of any other sender)."""
    result = _bench_url(server, ["fanout", "--subscribers", "2", "--rate", "150", "--simulcast"], tmp_path)
    point = result["points"][0]
    assert result["simulcast"] is True
    assert point["streams"] == 2 and point["stream_received_min"] > 0
    assert point["verified"] == point["received"] > 0 and point["bad_payload"] == 0
    assert result["loss_pct"] < 5


def test_wrong_secret_is_refused_with_the_server_reason(server: str, tmp_path: Path) -> None:
    done = _run_bench(["fanout", "--subscribers", "1", "--url", server, "--api-key", KEY, "--api-secret", "nope",
                       "--no-limit"], timeout=60)
    assert done.returncode == 1
    assert "join refused: HTTP 401" in done.stderr


@pytest.mark.parametrize("args, reason", [
    (["fanout", "--url", "ws://192.0.2.1:7880"], "is not on loopback: give --source-net"),
    (["fanout", "--source-net", "10.77.0.0/16"], "--source-net is for --url"),
    (["fanout", "--url", "ws://127.0.0.1:9", "--source-net", "10.77.0.0/28"], "is too small"),
    (["fanout", "--url", "ws://127.0.0.1:9", "--source-net", "10.77.0.300/16"], "is not an IPv4 network"),
    (["scale", "--url", "ws://127.0.0.1:9"], "cannot run against --url"),
    (["suite", "--url", "ws://127.0.0.1:9"], "run one scenario with --url"),
])
def test_url_refusals_exit_2_with_a_reason(args: list[str], reason: str) -> None:
    done = _run_bench(args, timeout=60)
    assert done.returncode == 2
    assert reason in done.stderr


@pytest.mark.timeout(180)
def test_fanout_against_a_server_on_another_host_reads_its_workers_from_healthz() -> None:
    """The server in one network namespace on 198.51.100.1, the benchmark in another joined by a veth link, its
    participants sending from 10.77.0.0/16 (``--source-net``) routed as the README says for two hosts."""
    from tests.e2e.netns import NetnsUnavailable, run_scenario

    try:
        outcome = run_scenario("bench_other_host", workers=1, timeout_s=120)
    except NetnsUnavailable as exc:
        pytest.skip(f"network namespace unavailable: {exc}")
    r = outcome["result"]
    assert outcome.get("ok") and r.get("returncode") == 0, json.dumps(
        {k: outcome.get(k) for k in ("error", "result")}, indent=1)[-4000:] + outcome.get("server_log", "")[-3000:]
    result = r["bench"]
    point = result["points"][0]
    assert result["server_on_this_host"] is False and result["source_net"] == "10.77.0.0/16"
    assert result["cores"] == {"generator": None, "workers": [], "shared": False}  # not pinned: no worker here
    assert point["streams"] == 3 and point["stream_received_min"] > 0
    assert point["verified"] == point["received"] > 0 and point["auth_failed"] == 0
    assert result["loss_pct"] < 5
    assert result["cpu_us_per_packet"] > 0 and point["rss_mb_per_worker"][0] > 8  # from the server's /healthz
    assert point["participants"] == 4
