"""Run a real-client scenario inside a private network namespace that the test creates itself.

libwebrtc (inside the ``livekit`` SDK) offers no loopback candidates, so the server and the clients need a real
interface address. As root, ``unshare --net`` gives this process a namespace of its own; in it ``lo`` is brought up
and a dummy interface gets the TEST-NET-2 address 198.51.100.1/24 (RFC 5737), which the server advertises as its
ICE candidate. ``python -m control serve`` and the scenario's clients run inside; nothing leaves the namespace,
every process is killed at the end and the scenario's result comes back as one JSON line on stdout.

Outer use (pytest): ``run_scenario("basic", workers=1)`` -> dict (raises :class:`NetnsUnavailable` when not root
or without unshare/ip, so the test can skip with that reason). Inner use (what the outer one runs):
``unshare --net -- python tests/e2e/netns.py --inner SCENARIO --workers N``.

A scenario is ``tests/e2e/lk_scenarios/<name>.py`` with ``async def run(ctx: Context, result: dict) -> None``
that records what it observed in ``result`` as it goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_IP = "198.51.100.1"
PEER_IP = "198.51.100.2"
PREFIX = 24
HTTP_PORT = 7880
RTC_PORT_BASE = 7882
API_KEY = "e2ekey"
API_SECRET = "e2e-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
RESULT_MARK = "NETNS-RESULT "
ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "lk_scenarios"


class NetnsUnavailable(RuntimeError):
    """This host cannot run the namespace harness (reason in the message)."""


@dataclass(frozen=True)
class Context:
    """What a scenario gets: where the server is and how to mint tokens."""

    url: str  # ws://198.51.100.1:7880
    http: str  # http://198.51.100.1:7880
    api_key: str
    api_secret: str
    workers: int
    rtc_port_base: int

    def token(self, identity: str, room: str, **grants: Any) -> str:
        """A token from livekit-api's AccessToken (the real SDK), with VideoGrants overrides."""
        from livekit import api

        video = api.VideoGrants(**{"room_join": True, "room": room, **grants})
        return (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_name(identity)
            .with_grants(video)
            .to_jwt()
        )


# ------------------------------------------------------------------------------------------- outer


def check_available() -> None:
    if os.geteuid() != 0:
        raise NetnsUnavailable("needs root to create a network namespace")
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            raise NetnsUnavailable(f"{tool} is not installed")
    probe = subprocess.run(["unshare", "--net", "--", "true"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        raise NetnsUnavailable(f"unshare --net failed: {probe.stderr.strip() or probe.returncode}")


def run_scenario(name: str, *, workers: int = 1, timeout_s: float = 90.0, log_level: str = "info") -> dict[str, Any]:
    """Runs scenario ``name`` in a fresh namespace; returns its result dict (with ``server_log`` on failure)."""
    check_available()
    if not (SCENARIOS / f"{name}.py").is_file():
        raise ValueError(f"no scenario {name!r} in {SCENARIOS}")
    cmd = ["unshare", "--net", "--", sys.executable, str(Path(__file__).resolve()), "--inner", name,
           "--workers", str(workers), "--timeout", str(timeout_s), "--log-level", log_level]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s + 30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise RuntimeError(
            f"scenario {name} did not finish in {timeout_s + 30:.0f} s; stderr tail:\n{err[-4000:]}"
        ) from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK):])
            result.setdefault("stderr_tail", err[-4000:])
            return result
    raise RuntimeError(f"scenario {name} printed no result (exit {proc.returncode}); stderr tail:\n{err[-4000:]}")


# ------------------------------------------------------------------------------------------- inner


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def setup_network() -> None:
    """lo up, and an interface with the TEST-NET-2 node address (private to this namespace): a dummy device, or
    where the kernel has no dummy driver, one end of a veth pair whose other end (198.51.100.2) stays here too."""
    _ip("link", "set", "lo", "up")
    try:
        _ip("link", "add", "mr0", "type", "dummy")
    except subprocess.CalledProcessError:
        _ip("link", "add", "mr0", "type", "veth", "peer", "name", "mr1")
        _ip("addr", "add", f"{PEER_IP}/{PREFIX}", "dev", "mr1")
        _ip("link", "set", "mr1", "up")
    _ip("addr", "add", f"{NODE_IP}/{PREFIX}", "dev", "mr0")
    _ip("link", "set", "mr0", "up")


def _healthz(http: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{http}/healthz", timeout=1) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except OSError:
        return None


def start_server(workers: int, log_path: str, log_level: str) -> subprocess.Popen[bytes]:
    args = ["serve", "--node-ip", NODE_IP, "--workers", str(workers), "--http-host", NODE_IP,
            "--http-port", str(HTTP_PORT), "--rtc-port-base", str(RTC_PORT_BASE),
            "--keys", f"{API_KEY}:{API_SECRET}", "--log-level", log_level]
    cmd = [sys.executable, "-m", "control", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True)


def wait_ready(proc: subprocess.Popen[bytes], http: str, workers: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        health = _healthz(http)
        if health and health.get("status") == "ok" and len(health.get("workers", [])) == workers:
            return
        time.sleep(0.1)
    raise RuntimeError(f"server not healthy within {timeout_s:.0f} s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the control process (it stops its workers), then SIGKILL to whatever is left of the group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group: workers too
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def load_scenario(name: str) -> Any:
    if str(SCENARIOS) not in sys.path:
        sys.path.insert(0, str(SCENARIOS))  # scenarios share lk_scenarios/common.py
    path = SCENARIOS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"lk_scenarios.{name}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load scenario {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inner(name: str, workers: int, timeout_s: float, log_level: str) -> dict[str, Any]:
    setup_network()
    http = f"http://{NODE_IP}:{HTTP_PORT}"
    ctx = Context(url=f"ws://{NODE_IP}:{HTTP_PORT}", http=http, api_key=API_KEY, api_secret=API_SECRET,
                  workers=workers, rtc_port_base=RTC_PORT_BASE)
    log_dir = tempfile.mkdtemp(prefix="mr-netns-")
    log_path = os.path.join(log_dir, "server.log")
    server = start_server(workers, log_path, log_level)
    partial: dict[str, Any] = {}  # the scenario fills it as it goes, so a failure still shows how far it got
    result: dict[str, Any]
    try:
        wait_ready(server, http, workers)
        scenario = load_scenario(name)
        asyncio.run(asyncio.wait_for(scenario.run(ctx, partial), timeout_s))
        result = {"ok": True, "result": partial}
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the test as data
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                  "result": partial}
    finally:
        stop_server(server)
    with open(log_path, "rb") as f:
        log_text = f.read().decode(errors="replace")
    shutil.rmtree(log_dir, ignore_errors=True)
    result["server_log"] = log_text[-12000:]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inner", metavar="SCENARIO", help="run inside an already private namespace")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("scenario", nargs="?", help="outer mode: scenario to run in a new namespace")
    args = parser.parse_args()
    if args.inner:
        result = inner(args.inner, args.workers, args.timeout, args.log_level)
        sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
        sys.stdout.flush()
        return 0 if result.get("ok") else 1
    if not args.scenario:
        parser.error("give a scenario name (or --inner)")
    result = run_scenario(args.scenario, workers=args.workers, timeout_s=args.timeout, log_level=args.log_level)
    print(json.dumps(result, indent=2))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
