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

Impaired links: ``host = await ctx.client_host("bob", downlink=Rule(loss=0.05, delay_ms=50))`` gives a client a
network namespace of its own (a "host", 198.51.100.10 and up) whose link to the server's namespace goes through the
userspace impairment relay of tests/netimpair.py (the kernel has no netem). ``host.spawn(argv)`` runs a process in
it, ``await host.set(downlink=Rule(rate_kbit=500))`` changes a rule mid-run, ``await host.stats()`` returns the
relay's counters per direction. The relay exits with the scenario (and by its own time bound), taking the host's
namespace and devices with it. ``await ctx.worker_stats(room, identity)`` returns the worker's
``transport.get_stats`` for that participant's transports: the server runs with one extra test-only route,
``GET /e2e/stats`` (see :func:`serve_with_stats`).

A scenario module may set ``SERVER_ENV`` (a dict of ``MEDIAROUTER_*`` variables for the server) and ``DEV_MODE =
True`` (the server runs without API keys, in development mode, and ``ctx.token`` uses the development key).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the relay and its Rule
from netimpair import Rule  # noqa: E402

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


HOST_ADDR_BASE = 10  # client hosts get 198.51.100.10, .11, ...
RELAY = Path(__file__).resolve().parents[1] / "netimpair.py"


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
    timeout_s: float = 90.0
    hosts: list[ClientHost] = field(default_factory=list)

    async def client_host(self, name: str, *, uplink: Rule | None = None, downlink: Rule | None = None) -> ClientHost:
        """A client host ``name`` (at most 12 characters) whose link goes through the impairment relay."""
        addr = f"198.51.100.{HOST_ADDR_BASE + len(self.hosts)}"
        host = await ClientHost.start(name, addr, uplink or Rule(), downlink or Rule(), self.timeout_s + 20)
        self.hosts.append(host)
        return host

    async def worker_stats(self, room: str, identity: str) -> dict[str, Any]:
        """The worker's ``transport.get_stats`` for the participant's ``pub`` and ``sub`` transports."""
        from urllib.parse import urlencode

        url = f"{self.http}/e2e/stats?{urlencode({'room': room, 'identity': identity})}"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        stats: dict[str, Any] = json.loads(body)
        return stats

    async def close_hosts(self) -> None:
        for host in self.hosts:
            await host.close()

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


class ClientHost:
    """A client's network namespace behind the impairment relay (tests/netimpair.py), and the processes in it."""

    def __init__(self, name: str, addr: str, relay: asyncio.subprocess.Process, pid: int) -> None:
        self.name = name
        self.addr = addr
        self.relay = relay
        self.pid = pid  # the relay's pid: its network namespace is the host's
        self.procs: list[asyncio.subprocess.Process] = []
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, name: str, addr: str, uplink: Rule, downlink: Rule, seconds: float) -> ClientHost:
        relay = await asyncio.create_subprocess_exec(
            sys.executable, str(RELAY), "--name", name, "--host-addr", addr, "--seconds", str(seconds),
            "--up", json.dumps(uplink.to_json()), "--down", json.dumps(downlink.to_json()),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)  # in our group: the outer kill reaches it
        assert relay.stdout is not None
        line = await asyncio.wait_for(relay.stdout.readline(), 10)
        ready = json.loads(line or b"{}")
        if not ready.get("ready"):
            relay.kill()
            await relay.wait()
            raise RuntimeError(f"relay for {name} did not start")
        return cls(name, addr, relay, int(ready["pid"]))

    async def _ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.relay.stdin is not None and self.relay.stdout is not None
        async with self._lock:
            self.relay.stdin.write(json.dumps(cmd).encode() + b"\n")
            await self.relay.stdin.drain()
            answer: dict[str, Any] = json.loads(await asyncio.wait_for(self.relay.stdout.readline(), 5))
        return answer

    async def set(self, *, uplink: Rule | None = None, downlink: Rule | None = None) -> None:
        """Replaces the rule of either direction (``None``: unchanged)."""
        cmd: dict[str, Any] = {"op": "set"}
        if uplink is not None:
            cmd["up"] = uplink.to_json()
        if downlink is not None:
            cmd["down"] = downlink.to_json()
        await self._ask(cmd)

    async def stats(self) -> dict[str, Any]:
        """The relay's counters: ``{"t": s, "up": {...}, "down": {...}}`` (offered, lost, queue drops, delivered)."""
        stats: dict[str, Any] = (await self._ask({"op": "stats"}))["stats"]
        return stats

    async def spawn(self, argv: list[str]) -> asyncio.subprocess.Process:
        """Runs ``argv`` in the host's namespace, stdout piped (killed with the host)."""
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net=/proc/{self.pid}/ns/net", "--", *argv, stdout=asyncio.subprocess.PIPE,
            cwd=ROOT, env=env)  # nsenter execs argv: the pid is the client's
        self.procs.append(proc)
        return proc

    async def close(self) -> None:
        for proc in [*self.procs, self.relay]:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)


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


def run_scenario(name: str, *, workers: int = 1, timeout_s: float = 90.0, log_level: str = "info",
                 env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs scenario ``name`` in a fresh namespace; returns its result dict (with ``server_log`` on failure).
    ``env`` is added to the server's environment (settings as ``MEDIAROUTER_*`` variables, test hooks)."""
    check_available()
    if not (SCENARIOS / f"{name}.py").is_file():
        raise ValueError(f"no scenario {name!r} in {SCENARIOS}")
    cmd = [str(Path(__file__).resolve()), "--inner", name, "--workers", str(workers), "--timeout", str(timeout_s),
           "--log-level", log_level]
    return run_inner(cmd, f"scenario {name}", timeout_s + 30, env)


def run_inner(argv: list[str], what: str, timeout_s: float, env: dict[str, str] | None = None,
              mark: str = RESULT_MARK) -> dict[str, Any]:
    """Runs ``python argv`` in a new network namespace (its own session, killed as a group when done or after
    ``timeout_s``) and returns the JSON it printed after ``mark``, with its stderr tail."""
    cmd = ["unshare", "--net", "--", sys.executable, *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True, env=dict(os.environ, **(env or {})))
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise RuntimeError(f"{what} did not finish in {timeout_s:.0f} s; stderr tail:\n{err[-4000:]}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for line in reversed(out.splitlines()):
        if line.startswith(mark):
            result: dict[str, Any] = json.loads(line[len(mark):])
            result.setdefault("stderr_tail", err[-4000:])
            return result
    raise RuntimeError(f"{what} printed no result (exit {proc.returncode}); stderr tail:\n{err[-4000:]}")


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


def start_server(workers: int, log_path: str, log_level: str, *, dev_mode: bool = False,
                 server_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    args = ["serve", "--node-ip", NODE_IP, "--workers", str(workers), "--http-host", NODE_IP,
            "--http-port", str(HTTP_PORT), "--rtc-port-base", str(RTC_PORT_BASE), "--log-level", log_level]
    if not dev_mode:
        args += ["--keys", f"{API_KEY}:{API_SECRET}"]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", *args]
    env = {k: v for k, v in os.environ.items() if not (dev_mode and k == "MEDIAROUTER_KEYS")}
    env.update(server_env or {}, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
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


async def _e2e_stats(request: Any) -> Any:
    """``GET /e2e/stats?room=&identity=``: the worker's transport.get_stats for the participant's transports."""
    from aiohttp import web

    from control.service.keys import MANAGER_KEY

    room = request.app[MANAGER_KEY].rooms.get(request.query.get("room", ""))
    p = room.participants.get(request.query.get("identity", "")) if room is not None else None
    if p is None:
        raise web.HTTPNotFound(text="no such participant")
    out: dict[str, Any] = {}
    for key, transport_id in (("pub", p.pub_transport_id), ("sub", p.sub_transport_id)):
        try:
            out[key] = await p.media.get_stats(transport_id)  # the participant's own worker
        except Exception as exc:  # noqa: BLE001 - reported, the scenario decides
            out[key] = {"error": repr(exc)}
    return web.json_response(out, dumps=lambda o: json.dumps(o, default=str))


def serve_with_stats(argv: list[str]) -> int:
    """``python -m control serve`` plus the test-only route ``GET /e2e/stats`` (added where the LiveKit routes are)."""
    import control.app as app_module
    from control.cli import main as control_main

    add_livekit = app_module.add_livekit

    def add_livekit_and_stats(app: Any, manager: Any) -> None:
        add_livekit(app, manager)
        app.router.add_get("/e2e/stats", _e2e_stats)

    app_module.add_livekit = add_livekit_and_stats
    return int(control_main(argv) or 0)


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


async def _run_with_hosts(scenario: Any, ctx: Context, partial: dict[str, Any], timeout_s: float) -> None:
    try:
        await asyncio.wait_for(scenario.run(ctx, partial), timeout_s)
    finally:
        await ctx.close_hosts()


def inner(name: str, workers: int, timeout_s: float, log_level: str) -> dict[str, Any]:
    setup_network()
    scenario = load_scenario(name)
    dev_mode = bool(getattr(scenario, "DEV_MODE", False))
    http = f"http://{NODE_IP}:{HTTP_PORT}"
    api_key, api_secret = ("devkey", "secret") if dev_mode else (API_KEY, API_SECRET)
    ctx = Context(url=f"ws://{NODE_IP}:{HTTP_PORT}", http=http, api_key=api_key, api_secret=api_secret,
                  workers=workers, rtc_port_base=RTC_PORT_BASE, timeout_s=timeout_s)
    log_dir = tempfile.mkdtemp(prefix="mr-netns-")
    log_path = os.path.join(log_dir, "server.log")
    server = start_server(workers, log_path, log_level, dev_mode=dev_mode,
                          server_env=dict(getattr(scenario, "SERVER_ENV", {})))
    partial: dict[str, Any] = {}  # the scenario fills it as it goes, so a failure still shows how far it got
    result: dict[str, Any]
    try:
        wait_ready(server, http, workers)
        asyncio.run(_run_with_hosts(scenario, ctx, partial, timeout_s))
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
    parser.add_argument("--scenario", dest="named", metavar="SCENARIO", help="same as the positional scenario")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("scenario", nargs="?", help="outer mode: scenario to run in a new namespace")
    if sys.argv[1:2] == ["--serve"]:  # the server process of the inner mode
        return serve_with_stats(sys.argv[2:])
    args = parser.parse_args()
    args.scenario = args.scenario or args.named
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
