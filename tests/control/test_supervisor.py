"""control/workers/supervisor.py and worker_client.py with real workers: in-process and through `python -m control`.

Every process started here is killed and reaped by the `reaper` fixture, even when a test fails.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from control.workers.supervisor import Supervisor
from control.workers.worker_client import ControlSocket, WorkerClient, WorkerDied, WorkerError
from router.messages import TransportState
from router.ports import IP_MTU_DISCOVER, IP_PMTUDISC_PROBE, PortBindError, bind_udp
from router.protocol import Method, Notification, Request, Response, decode, encode
from tests.conftest import (
    ProcessReaper,
    children_of,
    free_tcp_port,
    free_udp_ports,
    pinned_cpus,
    process_gone,
    udp_port_is_free,
)

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


async def async_wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


def worker_processes(parent: int) -> list[int]:
    def is_worker(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return b"\0router\0" in f.read()
        except OSError:
            return False

    return [pid for pid in children_of(parent) if is_worker(pid)]


# --------------------------------------------------------------------------------------- worker socket


def test_bind_udp_reads_buffers_back_and_refuses_a_busy_port() -> None:
    port = free_udp_ports(1)
    bound = bind_udp("127.0.0.1", port)
    try:
        assert not bound.sock.getblocking()
        assert bound.sock.getsockname() == ("127.0.0.1", port)
        assert bound.rcvbuf == bound.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 0
        assert bound.sndbuf == bound.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) > 0
        with pytest.raises(PortBindError) as info:
            bind_udp("127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE
        assert info.value.strerror == f"cannot bind UDP 127.0.0.1:{port}: EADDRINUSE"
    finally:
        bound.sock.close()
    with pytest.raises(ValueError, match="invalid IP address 'localhost'"):
        bind_udp("localhost", port)
    with pytest.raises(ValueError, match="UDP port 0 out of range 1-65535"):
        bind_udp("127.0.0.1", 0)


def _ip_headers_sent(sender: socket.socket, count: int) -> list[tuple[int, int]]:
    """(flags+fragment offset, IP ID) of ``count`` datagrams ``sender`` sends to a local port, read back from
    a raw socket (needs CAP_NET_RAW)."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)  # PermissionError without the right
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        raw.settimeout(2.0)
        source_port = sender.getsockname()[1]
        destination = receiver.getsockname()
        for i in range(count):
            sender.sendto(b"probe %d" % i, destination)
        headers = []
        while len(headers) < count:
            packet = raw.recv(2048)
            ihl = (packet[0] & 0x0F) * 4
            ports = (int.from_bytes(packet[ihl:ihl + 2], "big"), int.from_bytes(packet[ihl + 2:ihl + 4], "big"))
            if ports == (source_port, destination[1]):
                headers.append((int.from_bytes(packet[6:8], "big"), int.from_bytes(packet[4:6], "big")))
        return headers
    finally:
        raw.close()
        receiver.close()


def test_bind_udp_sends_ipv4_with_dont_fragment_and_ip_id_zero() -> None:
    """IP_PMTUDISC_PROBE: every datagram has DF and ID 0, so the kernel never takes an ID from its shared table."""
    bound = bind_udp("127.0.0.1", free_udp_ports(1))
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert bound.sock.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER) == IP_PMTUDISC_PROBE
        plain.bind(("127.0.0.1", 0))
        try:
            ours = _ip_headers_sent(bound.sock, 3)
        except PermissionError:
            pytest.skip("reading IP headers needs a raw socket (CAP_NET_RAW)")
        assert ours == [(0x4000, 0)] * 3  # DF, offset 0, ID 0
        # The kernel's default mode numbers the same datagrams from its ID table: what the option avoids.
        assert any(ip_id != 0 for _, ip_id in _ip_headers_sent(plain, 3))
    finally:
        plain.close()
        bound.sock.close()


# ------------------------------------------------------------------------------------- in-process


async def test_control_socket_counts_bad_frames_and_routes_good_ones(runtime_root: str) -> None:
    """A raw DEALER plays worker 0: malformed, stale and unknown-peer frames are counted, never fatal."""
    endpoint = f"ipc://{os.path.join(runtime_root, 'control.sock')}"
    control = ControlSocket(endpoint)
    client = WorkerClient(0, control)
    seen: list[tuple[str, str, dict[str, Any]]] = []
    client.on_notification(lambda event, target, body: seen.append((event, target, body)))
    await control.start()
    context = zmq.asyncio.Context.instance()
    worker = context.socket(zmq.DEALER)
    stranger = context.socket(zmq.DEALER)
    worker.setsockopt(zmq.ROUTING_ID, b"w0")
    stranger.setsockopt(zmq.ROUTING_ID, b"w9")
    try:
        worker.connect(endpoint)
        stranger.connect(endpoint)
        await worker.send(b"\xc1not msgpack")
        await worker.send(encode(Request(1, "worker.dump", "", {})))
        await worker.send(encode(Response(99, True, {})))
        await stranger.send(encode(Notification("worker.heartbeat", "", {"seq": 1})))
        await worker.send(encode(Notification("producer.score", "p1", {"score": 10})))  # no such event
        await worker.send(encode(Notification("transport.dtls_state", "t1", {"state": 3})))  # a bad body
        await worker.send(encode(Notification("transport.dtls_state", "t1", {"state": "connected"})))
        assert await async_wait_until(lambda: bool(seen), 5.0)
        assert seen == [("transport.dtls_state", "t1", {"state": "connected"})]
        checked = seen[0][2]  # checked once here: its handler's from_wire gives that body without a second check
        assert TransportState.from_wire(checked) is TransportState.from_wire(checked) == TransportState("connected")
        assert (control.counters.malformed, control.counters.stale_responses,
                control.counters.unknown_peers) == (4, 1, 1)

        # One message with several frames (a worker's frames of one loop iteration): each handled, in order, a bad
        # one counted as on its own.
        await worker.send_multipart([
            encode(Notification("transport.ice_state", "t2", {"state": "connected"})),
            b"\xc1not msgpack",
            encode(Notification("transport.dtls_state", "t2", {"state": "connected"})),
        ])
        assert await async_wait_until(lambda: len(seen) == 3, 5.0)
        assert seen[1:] == [("transport.ice_state", "t2", {"state": "connected"}),
                            ("transport.dtls_state", "t2", {"state": "connected"})]
        assert control.counters.malformed == 5

        client.mark_running()
        pending = asyncio.ensure_future(client.request("producer.pause", "p1", {"a": 1}))
        request = decode(await asyncio.wait_for(worker.recv(), 5.0))
        assert isinstance(request, Request)
        assert (request.method, request.target_id, request.body) == ("producer.pause", "p1", {"a": 1})
        await worker.send(encode(Response.failure(request.id, "InvalidState", "producer p1 is closed")))
        with pytest.raises(WorkerError, match="^InvalidState: producer p1 is closed$"):
            await asyncio.wait_for(pending, 5.0)
    finally:
        worker.close(linger=0)
        stranger.close(linger=0)
        await control.close()
    with pytest.raises(WorkerDied, match="worker 0: control socket is closed"):
        await client.request("worker.dump")


@pytest.fixture
async def supervisor(runtime_root: str, reaper: ProcessReaper) -> AsyncIterator[Supervisor]:
    sup = Supervisor(workers=1, node_ip="127.0.0.1", rtc_port_base=free_udp_ports(1),
                     runtime_root=runtime_root, heartbeat_timeout_s=1.5)
    try:
        await sup.start()
        assert sup.slots[0].running, "worker did not start"
        reaper.track(sup.slots[0].pid or 0)
        yield sup
    finally:
        for slot in sup.slots:
            if slot.pid:
                reaper.track(slot.pid)
        await sup.stop()


async def test_worker_dump_answers_and_runtime_dir_is_private(supervisor: Supervisor) -> None:
    slot = supervisor.slots[0]
    assert os.stat(supervisor.runtime_dir).st_mode & 0o777 == 0o700
    reply = await supervisor.client(0).request(Method.WORKER_DUMP)
    media = reply.pop("media")
    assert reply == {"worker_id": 0, "pid": slot.pid, "core": slot.core, "udp_port": slot.udp_port}
    assert media["transports"] == 0 and media["engine_transports"] == 0
    assert supervisor.status == "ok"


async def test_pending_request_fails_at_once_when_the_worker_is_killed(supervisor: Supervisor) -> None:
    died: list[int] = []
    supervisor.on_worker_died(died.append)
    client = supervisor.client(0)
    pid = supervisor.slots[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    pending = asyncio.ensure_future(client.request(Method.WORKER_DUMP, timeout=30.0))
    await asyncio.sleep(0.2)
    assert not pending.done()
    assert client.pending == 1
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerDied) as info:
        await asyncio.wait_for(pending, 1.0)
    assert info.value.worker_id == 0
    assert info.value.reason == "worker process exited (killed by SIGKILL)"
    assert died == [0]
    assert client.pending == 0


async def test_false_response_timeout_and_unavailable_worker(supervisor: Supervisor) -> None:
    client = supervisor.client(0)
    with pytest.raises(WorkerError) as info:
        await client.request("transport.frobnicate", "t1", {})
    assert (info.value.error, info.value.reason) == ("UnknownMethod", "no handler for 'transport.frobnicate'")
    with pytest.raises(WorkerError) as info:
        await client.request("transport.get_stats", "t1", {})
    assert (info.value.error, info.value.reason) == ("NotFound", "transport 't1' not found")
    with pytest.raises(WorkerError) as info:
        await client.request("transport.produce", "t1", {})
    assert (info.value.error, info.value.reason) == ("TypeError", "ProduceRequest: missing field 'producer_id'")
    pid = supervisor.slots[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(TimeoutError):
            await client.request(Method.WORKER_DUMP, timeout=0.2)
        assert client.pending == 0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (await client.request(Method.WORKER_DUMP))["pid"] == pid
    await supervisor.stop()
    with pytest.raises(WorkerDied, match="worker 0: worker is not running"):
        await client.request(Method.WORKER_DUMP)


async def test_worker_ignores_the_signals_mediasoup_ignores(supervisor: Supervisor) -> None:
    pid = supervisor.slots[0].pid
    assert pid is not None
    for sig in (signal.SIGPIPE, signal.SIGHUP, signal.SIGALRM, signal.SIGUSR1, signal.SIGUSR2):
        os.kill(pid, sig)
    await asyncio.sleep(0.2)
    assert (await supervisor.client(0).request(Method.WORKER_DUMP))["pid"] == pid
    assert supervisor.slots[0].restarts == 0


async def test_hung_worker_is_killed_after_missing_heartbeats_and_respawned(supervisor: Supervisor,
                                                                           reaper: ProcessReaper) -> None:
    slot = supervisor.slots[0]
    died: list[int] = []
    running: list[int] = []
    supervisor.on_worker_died(died.append)
    supervisor.on_worker_running(running.append)
    old_pid = slot.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGSTOP)
    assert await async_wait_until(lambda: slot.running and slot.pid != old_pid, 6.0)
    reaper.track(slot.pid or 0)
    assert process_gone(old_pid)
    assert (slot.restarts, slot.last_exit, died, running) == (1, "killed by SIGKILL", [0], [0])
    assert (await supervisor.client(0).request(Method.WORKER_DUMP))["pid"] == slot.pid


def test_a_stall_of_control_kills_no_healthy_worker_but_a_hung_one_still_dies(
        runtime_root: str, reaper: ProcessReaper) -> None:
    # On uvloop, as control runs: libuv runs due timers before it polls for I/O, so after a stall the watchdog
    # looks at the workers before the heartbeats waiting in the socket are read.
    import uvloop

    uvloop.run(_stall_scenario(runtime_root, reaper))


async def _stall_scenario(runtime_root: str, reaper: ProcessReaper) -> None:
    # Control's loop is blocked for three heartbeat timeouts (a blocking call injected here, as a burst of work
    # or a SIGSTOP of control would): heartbeats pile up unread, which is no reason to kill anyone.
    timeout_s = 1.5
    sup = Supervisor(workers=2, node_ip="127.0.0.1", rtc_port_base=free_udp_ports(2), runtime_root=runtime_root,
                     heartbeat_timeout_s=timeout_s)
    died: list[int] = []
    sup.on_worker_died(died.append)
    try:
        await sup.start()
        assert all(slot.running for slot in sup.slots), "workers did not start"
        pids = [slot.pid for slot in sup.slots]
        for pid in pids:
            reaper.track(pid or 0)
        await asyncio.sleep(0.3)
        time.sleep(3 * timeout_s)  # noqa: ASYNC251 - the stall under test
        await asyncio.sleep(1.0)  # ten watchdog rounds after the stall
        assert [slot.pid for slot in sup.slots] == pids and died == []
        assert [slot.restarts for slot in sup.slots] == [0, 0] and sup.status == "ok"
        lag = sup.loop_lag()
        assert lag["max_ms"] >= 3 * timeout_s * 1000 * 0.9 and lag["stalled_s"] >= 3 * timeout_s * 0.9
        assert all(w["heartbeat_silence_s"] < timeout_s for w in sup.snapshot())

        # A worker that is really hung is still killed, even when control stalls at the same time.
        hung = sup.slots[1]
        os.kill(pids[1] or 0, signal.SIGSTOP)
        time.sleep(3 * timeout_s)  # noqa: ASYNC251
        assert await async_wait_until(lambda: hung.pid != pids[1] and hung.running, 15.0), hung.last_exit
        reaper.track(hung.pid or 0)
        assert process_gone(pids[1] or 0)
        assert (hung.restarts, hung.last_exit, died) == (1, "killed by SIGKILL", [1])
        assert (sup.slots[0].pid, sup.slots[0].restarts) == (pids[0], 0)
        assert (await sup.client(1).request(Method.WORKER_DUMP))["pid"] == hung.pid
    finally:
        for slot in sup.slots:
            if slot.pid:
                reaper.track(slot.pid)
        await sup.stop()


async def test_crash_loop_backs_off_exponentially_then_recovers(runtime_root: str,
                                                                 reaper: ProcessReaper) -> None:
    port = free_udp_ports(1)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", port))
    sup = Supervisor(workers=1, node_ip="127.0.0.1", rtc_port_base=port, runtime_root=runtime_root,
                     backoff_initial_s=0.05, backoff_max_s=0.4, backoff_reset_s=1.0)
    slot = sup.slots[0]
    died: list[int] = []
    sup.on_worker_died(died.append)
    delays: list[float] = []
    most_workers = 0
    try:
        await sup.start()
        while slot.consecutive_failures < 6:
            if not delays or delays[-1] != slot.backoff_s:
                delays.append(slot.backoff_s)
            most_workers = max(most_workers, len(worker_processes(os.getpid())))
            assert sup.status == "degraded"
            await asyncio.sleep(0.01)
            if slot.pid:
                reaper.track(slot.pid)
        assert delays[:5] == [0.0, 0.05, 0.1, 0.2, 0.4]
        assert most_workers <= 1
        assert slot.last_exit == "exit code 3"
        assert died == []  # it never ran, so no room can have used it
        blocker.close()
        # A loaded host may take seconds to start a worker: the waits are generous, the order is what counts.
        assert await async_wait_until(lambda: slot.running, 20.0)
        assert slot.consecutive_failures >= 3 and sup.status == "degraded"
        # After backoff_reset_s of uptime the failure count resets and the node is healthy again.
        assert await async_wait_until(lambda: sup.status == "ok", 20.0)
        assert (slot.consecutive_failures, slot.backoff_s) == (0, 0.0)
    finally:
        blocker.close()
        if slot.pid:
            reaper.track(slot.pid)
        await sup.stop()
    assert not os.path.exists(sup.runtime_dir)


# ------------------------------------------------------------------------------ python -m control


@dataclass
class ControlServer:
    process: subprocess.Popen[bytes]
    http_port: int
    rtc_port_base: int
    log: Path

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return dict(json.load(response))

    def try_health(self) -> dict[str, Any] | None:
        try:
            return self.health()
        except OSError:
            return None

    def wait_all_alive(self, timeout: float = 15.0) -> dict[str, Any]:
        state: dict[str, Any] = {}

        def all_alive() -> bool:
            nonlocal state
            state = self.try_health() or {}
            return bool(state) and all(w["alive"] for w in state["workers"])

        assert wait_until(all_alive, timeout, 0.05), f"workers not alive: {state}\n{self.log.read_text()}"
        return state


@pytest.fixture
def start_control(reaper: ProcessReaper, runtime_root: str, tmp_path: Path) -> Callable[..., ControlServer]:
    def start(workers: int = 2, rtc_port_base: int | None = None) -> ControlServer:
        http_port = free_tcp_port()
        rtc_port_base = rtc_port_base or free_udp_ports(workers)
        log = tmp_path / f"control-{http_port}.log"
        env = {**os.environ, "TMPDIR": runtime_root, "PYTHONPATH": str(ROOT)}
        with open(log, "wb") as out:
            process = reaper.spawn(
                [sys.executable, "-m", "control", "serve", "--workers", str(workers),
                 "--http-host", "127.0.0.1", "--http-port", str(http_port),
                 "--rtc-port-base", str(rtc_port_base), "--keys", "k:s"],
                cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        return ControlServer(process, http_port, rtc_port_base, log)

    return start


def test_workers_are_pinned_bound_and_replaced_after_sigkill(start_control: Callable[..., ControlServer],
                                                             reaper: ProcessReaper) -> None:
    server = start_control(workers=2)
    health = server.wait_all_alive()
    assert health["status"] == "ok"
    workers = health["workers"]
    cpus = sorted(os.sched_getaffinity(0))
    for i, worker in enumerate(workers):
        reaper.track(worker["pid"])
        assert {"id", "pid", "core", "udp_port", "alive", "restarts"} <= worker.keys()
        assert (worker["id"], worker["core"], worker["udp_port"]) == (i, cpus[i % len(cpus)],
                                                                      server.rtc_port_base + i)
        assert pinned_cpus(worker["pid"]) == str(worker["core"])
        assert not udp_port_is_free(worker["udp_port"])
        # The kernel's accounting of this process and its socket, for a benchmark on another host.
        usage = worker["usage"]
        assert usage["rss_bytes"] > 8 << 20 and usage["cpu_s"] > 0 and usage["run_s"] > 0, usage
        assert usage["udp_drops"] == 0 and usage["udp_rx_queue_bytes"] == 0, usage
    assert health["host"]["cpu_ticks"] > health["host"]["steal_ticks"] >= 0
    assert sorted(worker_processes(server.process.pid)) == sorted(w["pid"] for w in workers)

    old = workers[0]
    os.kill(old["pid"], signal.SIGKILL)
    replaced: dict[str, Any] = {}

    def respawned() -> bool:
        nonlocal replaced
        state = server.try_health()
        if not state:
            return False
        replaced = state["workers"][0]
        return bool(replaced["alive"] and replaced["pid"] != old["pid"] and replaced["restarts"] == 1)

    # The first respawn is immediate (no backoff); the wait allows for a slow worker start on a loaded host.
    assert wait_until(respawned, 20.0), f"worker 0 not back within 20 s: {replaced}"
    assert (replaced["backoff_s"], replaced["consecutive_failures"]) == (0.0, 1)
    reaper.track(replaced["pid"])
    assert (replaced["core"], replaced["udp_port"]) == (old["core"], old["udp_port"])
    assert pinned_cpus(replaced["pid"]) == str(old["core"])
    assert not udp_port_is_free(old["udp_port"])
    other = server.health()["workers"][1]
    assert (other["pid"], other["restarts"]) == (workers[1]["pid"], 0)


def test_killing_control_takes_every_worker_down(start_control: Callable[..., ControlServer],
                                                 reaper: ProcessReaper) -> None:
    server = start_control(workers=2)
    workers = server.wait_all_alive()["workers"]
    for worker in workers:
        reaper.track(worker["pid"])
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=5)
    assert wait_until(lambda: all(process_gone(w["pid"]) for w in workers), 5.0)
    # NOTE: a multi-threaded process's leader shows as a zombie while its other threads still exit and hold the
    # socket, so the ports are checked within the same 5 s bound rather than at the instant the leader is gone.
    assert wait_until(lambda: all(udp_port_is_free(w["udp_port"]) for w in workers), 5.0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(start_control: Callable[..., ControlServer], reaper: ProcessReaper,
                                   runtime_root: str, sig: signal.Signals) -> None:
    server = start_control(workers=2)
    workers = server.wait_all_alive()["workers"]
    for worker in workers:
        reaper.track(worker["pid"])
    assert len(os.listdir(runtime_root)) == 1
    server.process.send_signal(sig)
    assert server.process.wait(timeout=10) == 0
    assert all(process_gone(w["pid"]) for w in workers)
    assert all(udp_port_is_free(w["udp_port"]) for w in workers)
    assert os.listdir(runtime_root) == []


def test_a_stopped_control_kills_no_worker_when_it_continues(start_control: Callable[..., ControlServer],
                                                              reaper: ProcessReaper) -> None:
    # The whole control process (its ZeroMQ I/O thread too) stops for three heartbeat timeouts (3 s each), as a
    # stall of control would hold it: at SIGCONT the watchdog runs before the waiting heartbeats are read, and it
    # must not hold control's own stall against the workers.
    control = start_control(workers=2)
    before = control.wait_all_alive()
    for worker in before["workers"]:
        reaper.track(worker["pid"])
    control.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(9.0)
    finally:
        control.process.send_signal(signal.SIGCONT)
    time.sleep(1.5)  # fifteen watchdog rounds after the stop
    after = control.health()
    assert [(w["pid"], w["restarts"], w["alive"]) for w in after["workers"]] == \
        [(w["pid"], 0, True) for w in before["workers"]], control.log.read_text()
    lag = after["control"]["loop_lag"]
    assert lag["max_ms"] >= 8000 and lag["stalled_s"] >= 8.0
    assert "killing it" not in control.log.read_text()


def test_crash_loop_reports_degraded_without_a_fork_storm(start_control: Callable[..., ControlServer],
                                                          reaper: ProcessReaper) -> None:
    rtc_port_base = free_udp_ports(2)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    delays: list[float] = []
    try:
        # Worker 1's port is taken before control starts, so that worker can never bind it.
        blocker.bind(("127.0.0.1", rtc_port_base + 1))
        control = start_control(workers=2, rtc_port_base=rtc_port_base)

        def backed_off_to_two_seconds() -> bool:
            state = control.try_health()
            for pid in worker_processes(control.process.pid):
                reaper.track(pid)
            assert len(worker_processes(control.process.pid)) <= 2
            if not state:
                return False
            assert state["status"] == "degraded"
            worker = state["workers"][1]
            assert not worker["alive"]
            if not delays or delays[-1] != worker["backoff_s"]:
                delays.append(worker["backoff_s"])
            return bool(worker["backoff_s"] >= 2.0)

        # Four failed starts and 3.5 s of backoff: a loaded host may take seconds per start, hence the bound.
        assert wait_until(backed_off_to_two_seconds, 40.0, 0.05), f"delays seen: {delays}"
        state = control.health()
        assert state["workers"][0]["alive"]
        assert state["workers"][1]["restarts"] >= 3
        assert state["workers"][1]["last_exit"] == "exit code 3"
        growth = [d for d in delays if d > 0]
        assert growth == sorted(growth) and {0.5, 1.0, 2.0} <= set(growth)
    finally:
        blocker.close()


async def test_a_worker_that_cannot_be_spawned_backs_off(runtime_root: str) -> None:
    sup = Supervisor(workers=1, node_ip="127.0.0.1", rtc_port_base=free_udp_ports(1),
                     runtime_root=runtime_root, python="/nonexistent/python3", backoff_initial_s=0.05,
                     backoff_max_s=0.1, start_timeout_s=1.0)
    slot = sup.slots[0]
    try:
        await sup.start()
        assert await async_wait_until(lambda: slot.consecutive_failures >= 3, 5.0)
        assert slot.backoff_s == 0.1
        assert (slot.last_exit or "").startswith("spawn failed: ")
        assert slot.pid is None and sup.status == "degraded"
    finally:
        await sup.stop()
