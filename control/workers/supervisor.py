"""Worker supervision: spawn one worker per slot, pin it, watch it, respawn it, report health.

The Supervisor owns the private runtime directory (mode 0700) holding ``control.sock``, the shared
:class:`~control.workers.worker_client.ControlSocket`, and one slot per worker with a fixed core (``i % len(cpus)``
over ``os.sched_getaffinity(0)``) and UDP port (``rtc_port_base + i``). Each slot runs ``python -m router
--worker-id i --core c --control ipc://... --rtc-port P --node-ip IP --log-level L --[no-]gso --[no-]hmac-batch
--srtp-crypto C`` (every setting a worker has is on its command line; it reads none from the environment) and
waits for it:

- death is seen through the child's exit (asyncio subprocess wait, i.e. SIGCHLD/pidfd), not only heartbeats;
  every pending request fails at once with WorkerDied, ``worker_died(worker_id)`` callbacks run (for a worker
  that had announced ``worker.running``), and the slot respawns on the same core and port;
- the first respawn is immediate; further deaths back off exponentially (``backoff_initial_s`` doubling to
  ``backoff_max_s``) until a worker has run (announced ``worker.running``) for ``backoff_reset_s``: a worker that
  dies before it ever ran counts as a failure however long its start took (a slow start on a loaded host must
  not reset the crash loop), and the node reports ``degraded`` meanwhile;
- a worker that sends no heartbeat for ``heartbeat_timeout_s`` (hung, SIGSTOP) or no ``worker.running`` within
  ``start_timeout_s`` is killed with SIGKILL and handled as a death. Both ages are counted net of control's own
  stalls (control/workers/loop_lag.py): heartbeats that arrived while control's loop was blocked wait unread in
  the socket, so a stall of control never kills a healthy worker, while a worker that is really silent is killed
  after ``heartbeat_timeout_s`` of responsive control time. ``loop_lag()`` reports control's lag for ``/healthz``.

A slot never has more than one process, so there are never more worker processes than slots. Like mediasoup,
death is reported once per process; unlike mediasoup (which leaves restarts to the app), respawn is built in,
with Jicofo's one-minute failure reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import router
from control.workers import procstat
from control.workers.loop_lag import LoopLag
from control.workers.worker_client import ControlSocket, WorkerClient
from router.protocol import PROTOCOL_VERSION, Event, Method, ProtocolError, WorkerHeartbeat, WorkerRunning

log = logging.getLogger("control.workers.supervisor")

WorkerCallback = Callable[[int], None]

_MAX_UNIX_PATH = 107
_WATCH_INTERVAL_S = 0.1
# Three deaths in a row without a healthy run mark the node degraded even while the worker is up again.
_CRASH_LOOP_DEATHS = 3


@dataclass(eq=False)
class WorkerSlot:
    """One worker position: fixed id, core and port; the process in it changes on every respawn."""

    worker_id: int
    core: int
    udp_port: int
    client: WorkerClient
    process: asyncio.subprocess.Process | None = None
    pid: int | None = None
    running: bool = False
    restarts: int = 0
    spawned_at: float = 0.0
    running_since: float = 0.0
    last_heartbeat_at: float = 0.0
    stalled_at_heartbeat: float = 0.0  # control's LoopLag.stalled_s when last_heartbeat_at was set
    stalled_at_spawn: float = 0.0
    heartbeat: dict[str, Any] = field(default_factory=dict)
    consecutive_failures: int = 0
    backoff_s: float = 0.0
    last_exit: str | None = None
    rcvbuf: int = 0
    sndbuf: int = 0
    first_attempt: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def silence_s(self, now: float, stalled_s: float) -> float:
        """Seconds since the last heartbeat (or ``worker.running``) net of control's stalls since then."""
        return (now - self.last_heartbeat_at) - (stalled_s - self.stalled_at_heartbeat)

    def snapshot(self, now: float, stalled_s: float) -> dict[str, Any]:
        return {
            "id": self.worker_id,
            "pid": self.pid,
            "core": self.core,
            "udp_port": self.udp_port,
            "alive": self.running,
            "restarts": self.restarts,
            "backoff_s": self.backoff_s,
            "consecutive_failures": self.consecutive_failures,
            "last_exit": self.last_exit,
            "heartbeat_age_s": round(now - self.last_heartbeat_at, 3) if self.running else None,
            "heartbeat_silence_s": round(max(0.0, self.silence_s(now, stalled_s)), 3) if self.running else None,
            "loop_lag_ms": self.heartbeat.get("loop_lag_ms") if self.running else None,
            "pipes": self.pipe_counters() if self.running else None,
            "rcvbuf": self.rcvbuf,
            "sndbuf": self.sndbuf,
            "usage": self.usage(),
        }

    def pipe_counters(self) -> dict[str, Any]:
        """The pipe counters of the last heartbeat (router/pipe.py): transports, packets, drops, repairs."""
        counters = self.heartbeat.get("counters", {})
        if not isinstance(counters, dict):
            return {}
        return {k: v for k, v in counters.items() if k.startswith("pipe")}

    def usage(self) -> dict[str, Any] | None:
        """The kernel's accounting of the live process and its socket (``control.workers.procstat.worker_usage``)."""
        if not self.running or self.pid is None:
            return None
        try:
            return procstat.worker_usage(self.pid, self.udp_port)
        except (OSError, ValueError, IndexError):
            return None  # the process went away between the check and the read


class Supervisor:
    """Spawns and keeps N workers alive.

    Lifecycle: ``Supervisor(...)`` → ``await start()`` (binds, spawns, waits for every first attempt) →
    running (respawns, heartbeats) → ``await stop()`` (``worker.close``, then SIGTERM, then SIGKILL; runtime
    directory removed). Not restartable.
    """

    def __init__(self, *, workers: int, node_ip: str, rtc_port_base: int, log_level: str = "info",
                 gso: bool = True, hmac_batch: bool = True, srtp_crypto: str = "mediarouter",
                 congestion_control: bool = True, rx_hold_ms: int = 0, bind_ip: str = "", ice_tcp: bool = False,
                 quiet_events: Iterable[str] = (), python: str = sys.executable, runtime_root: str | None = None,
                 start_timeout_s: float = 10.0, heartbeat_timeout_s: float = 3.0,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 backoff_reset_s: float = 60.0, stop_timeout_s: float = 3.0) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if not 1 <= rtc_port_base or rtc_port_base + workers - 1 > 65535:
            raise ValueError(f"UDP ports {rtc_port_base}-{rtc_port_base + workers - 1} out of range 1-65535")
        self.node_ip = node_ip  # one address or several, comma-separated (announced in ICE candidates)
        self.bind_ip = bind_ip
        self.ice_tcp = ice_tcp
        self.log_level = log_level
        self.gso = gso
        self.hmac_batch = hmac_batch
        self.srtp_crypto = srtp_crypto
        self.congestion_control = congestion_control
        self.rx_hold_ms = rx_hold_ms
        self.quiet_events = sorted(quiet_events)  # events the workers need not send (worker_client.quiet_events)
        self.python = python
        self.start_timeout_s = start_timeout_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.backoff_reset_s = backoff_reset_s
        self.stop_timeout_s = stop_timeout_s
        self.runtime_dir = tempfile.mkdtemp(prefix="mediarouter-", dir=runtime_root)
        os.chmod(self.runtime_dir, 0o700)
        sock_path = os.path.join(self.runtime_dir, "control.sock")
        if len(sock_path) > _MAX_UNIX_PATH:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            raise ValueError(f"runtime path {sock_path!r} is longer than {_MAX_UNIX_PATH} bytes")
        self.endpoint = f"ipc://{sock_path}"
        self.socket = ControlSocket(self.endpoint)
        cpus = sorted(os.sched_getaffinity(0))
        self.slots = [WorkerSlot(i, cpus[i % len(cpus)], rtc_port_base + i, WorkerClient(i, self.socket))
                      for i in range(workers)]
        self._died_callbacks: list[WorkerCallback] = []
        self._running_callbacks: list[WorkerCallback] = []
        self._watchdog: asyncio.Task[None] | None = None
        self.lag = LoopLag(_WATCH_INTERVAL_S)
        self._started = False
        self._closing = False
        for slot in self.slots:
            slot.client.on_notification(self._notification_handler(slot))

    # ---------------------------------------------------------------------------------------------- API

    def client(self, worker_id: int) -> WorkerClient:
        if not 0 <= worker_id < len(self.slots):
            raise ValueError(f"no worker {worker_id} (there are {len(self.slots)})")
        return self.slots[worker_id].client

    @property
    def clients(self) -> list[WorkerClient]:
        return [slot.client for slot in self.slots]

    def on_worker_died(self, callback: WorkerCallback) -> None:
        """``callback(worker_id)`` once per death of a worker that had announced ``worker.running``."""
        self._died_callbacks.append(callback)

    def on_worker_running(self, callback: WorkerCallback) -> None:
        """``callback(worker_id)`` each time a (re)spawned worker announces ``worker.running``."""
        self._running_callbacks.append(callback)

    @property
    def status(self) -> str:
        """"ok" when every worker is running and none is in a crash loop, else "degraded"."""
        healthy = self._started and not self._closing and all(
            slot.running and slot.consecutive_failures < _CRASH_LOOP_DEATHS for slot in self.slots)
        return "ok" if healthy else "degraded"

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [slot.snapshot(now, self.lag.stalled_s) for slot in self.slots]

    def loop_lag(self) -> dict[str, float | int]:
        """Control's own event-loop lag over the last minute (``p99_ms``, ``max_ms``, ``samples``,
        ``window_s``) and ``stalled_s``, the stall time since start (control/workers/loop_lag.py)."""
        return {**self.lag.summary(), "stalled_s": round(self.lag.stalled_s, 3)}

    async def start(self) -> None:
        """Binds the control socket, spawns every worker, waits until each is running or failed once."""
        if self._started:
            raise RuntimeError("supervisor already started")
        self._started = True
        await self.socket.start()
        loop = asyncio.get_running_loop()
        for slot in self.slots:
            slot.task = loop.create_task(self._run_slot(slot), name=f"worker-slot-{slot.worker_id}")
        self._watchdog = loop.create_task(self._watch_loop(), name="worker-watchdog")
        waits = [slot.first_attempt.wait() for slot in self.slots]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), self.start_timeout_s + 1.0)
        up = sum(slot.running for slot in self.slots)
        log.info("%d of %d workers running (runtime dir %s)", up, len(self.slots), self.runtime_dir)

    async def stop(self) -> None:
        """Closes every worker (asking first, then SIGTERM, then SIGKILL); removes the runtime directory."""
        if self._closing:
            return
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        live = [slot for slot in self.slots if slot.process is not None and slot.process.returncode is None]
        await asyncio.gather(*(self._close_worker(slot) for slot in live), return_exceptions=True)
        tasks = [slot.task for slot in self.slots if slot.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *([self._watchdog] if self._watchdog else []), return_exceptions=True)
        for slot in self.slots:
            # A slot cancelled between spawn and bookkeeping must not leave its process behind.
            if slot.process is not None and slot.process.returncode is None:
                self._kill(slot, "still running after stop")
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(slot.process.wait(), self.stop_timeout_s)
            slot.client.fail_all("supervisor stopped")
        await self.socket.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        log.info("supervisor stopped")

    # ------------------------------------------------------------------------------------------- slots

    def _command(self, slot: WorkerSlot) -> list[str]:
        return [self.python, "-m", "router", "--worker-id", str(slot.worker_id), "--core", str(slot.core),
                "--control", self.endpoint, "--rtc-port", str(slot.udp_port), "--node-ip", self.node_ip,
                "--log-level", self.log_level, "--gso" if self.gso else "--no-gso",
                "--hmac-batch" if self.hmac_batch else "--no-hmac-batch", "--srtp-crypto", self.srtp_crypto,
                "--congestion-control" if self.congestion_control else "--no-congestion-control",
                "--rx-hold-ms", str(self.rx_hold_ms),
                "--ice-tcp" if self.ice_tcp else "--no-ice-tcp", *(["--bind-ip", self.bind_ip] if self.bind_ip else []),
                *(["--quiet-events", ",".join(self.quiet_events)] if self.quiet_events else [])]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The worker imports the same `router` package as this process, wherever it is installed.
        root = str(Path(router.__file__).resolve().parent.parent)
        paths = [root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        return env

    async def _run_slot(self, slot: WorkerSlot) -> None:
        first = True
        while not self._closing:
            if slot.backoff_s > 0:
                log.warning("worker %d: respawn in %.1f s", slot.worker_id, slot.backoff_s)
                await asyncio.sleep(slot.backoff_s)
                if self._closing:
                    return
            # Set before the attempt so that a failed spawn counts as a short life and backs off too.
            slot.spawned_at = time.monotonic()
            slot.stalled_at_spawn = self.lag.stalled_s
            try:
                process = await asyncio.create_subprocess_exec(
                    *self._command(slot), stdin=asyncio.subprocess.DEVNULL, env=self._environment())
            except OSError as exc:
                log.error("worker %d: cannot spawn: %s", slot.worker_id, exc)
                self._after_exit(slot, f"spawn failed: {exc}", was_running=False)
                continue
            if not first:
                slot.restarts += 1
            first = False
            slot.process, slot.pid = process, process.pid
            log.info("worker %d spawned: pid %d, core %d, udp port %d", slot.worker_id, process.pid,
                     slot.core, slot.udp_port)
            returncode = await process.wait()
            was_running = slot.running
            slot.running = False
            slot.process = None
            self._after_exit(slot, _describe_exit(returncode), was_running)

    def _after_exit(self, slot: WorkerSlot, how: str, was_running: bool) -> None:
        now = time.monotonic()
        slot.last_exit = how
        slot.client.fail_all(f"worker process exited ({how})")
        if was_running and now - slot.running_since >= self.backoff_reset_s:
            slot.consecutive_failures = 0
        slot.consecutive_failures += 1
        n = slot.consecutive_failures
        slot.backoff_s = 0.0 if n == 1 else min(self.backoff_initial_s * 2 ** (n - 2), self.backoff_max_s)
        slot.first_attempt.set()
        if self._closing:
            log.info("worker %d exited (%s)", slot.worker_id, how)
            return
        log.error("worker %d (pid %s) died: %s", slot.worker_id, slot.pid, how)
        if was_running:
            for callback in list(self._died_callbacks):
                try:
                    callback(slot.worker_id)
                except Exception:
                    log.exception("worker_died callback failed")

    async def _close_worker(self, slot: WorkerSlot) -> None:
        process = slot.process
        assert process is not None
        if slot.running:
            with contextlib.suppress(Exception):
                await slot.client.request(Method.WORKER_CLOSE, "", {}, timeout=1.0)
            try:
                await asyncio.wait_for(process.wait(), self.stop_timeout_s)
                return
            except TimeoutError:
                pass
        # A worker still starting has no channel to be asked on: signal it right away.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                await asyncio.wait_for(process.wait(), self.stop_timeout_s)
                return
            except TimeoutError:
                log.warning("worker %d ignored %s", slot.worker_id, signal.Signals(sig).name)

    def _kill(self, slot: WorkerSlot, why: str) -> None:
        if slot.process is None or slot.process.returncode is not None:
            return
        log.error("worker %d (pid %d): %s; killing it", slot.worker_id, slot.process.pid, why)
        with contextlib.suppress(ProcessLookupError):
            slot.process.send_signal(signal.SIGKILL)

    async def _watch_loop(self) -> None:
        self.lag.start(time.monotonic())
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            now = time.monotonic()
            lag_s = self.lag.tick(now)
            if lag_s > self.heartbeat_timeout_s / 2:
                log.warning("control's event loop stalled for %.1f s; workers' heartbeat ages exclude it", lag_s)
            self._watch(now)

    def _watch(self, now: float) -> None:
        """One watchdog round: ages are net of control's stalls (LoopLag.stalled_s) since the reference point."""
        stalled_s = self.lag.stalled_s
        for slot in self.slots:
            if slot.process is None:
                continue
            if slot.running:
                silent_s = slot.silence_s(now, stalled_s)
                if silent_s > self.heartbeat_timeout_s:
                    self._kill(slot, f"no heartbeat for {silent_s:.1f} s (control's stalls excluded)")
                elif slot.consecutive_failures and now - slot.running_since >= self.backoff_reset_s:
                    slot.consecutive_failures = 0
                    slot.backoff_s = 0.0
            elif (now - slot.spawned_at) - (stalled_s - slot.stalled_at_spawn) > self.start_timeout_s:
                self._kill(slot, f"no worker.running within {self.start_timeout_s:.0f} s")

    # ----------------------------------------------------------------------------------- notifications

    def _notification_handler(self, slot: WorkerSlot) -> Callable[[str, str, dict[str, Any]], None]:
        def handle(event: str, target_id: str, body: dict[str, Any]) -> None:
            if event == Event.WORKER_RUNNING:
                self._on_running(slot, body)
            elif event == Event.WORKER_HEARTBEAT:
                self._on_heartbeat(slot, body)

        return handle

    def _on_running(self, slot: WorkerSlot, body: dict[str, Any]) -> None:
        try:
            running = WorkerRunning.from_wire(body)
        except ProtocolError as exc:
            self._kill(slot, f"invalid worker.running: {exc.reason}")
            return
        if running.pid != slot.pid or slot.process is None:
            log.warning("worker %d: worker.running from stale pid %d ignored", slot.worker_id, running.pid)
            return
        if running.protocol_version != PROTOCOL_VERSION:
            self._kill(slot, f"protocol version {running.protocol_version}, expected {PROTOCOL_VERSION}")
            return
        slot.running = True
        slot.rcvbuf, slot.sndbuf = running.rcvbuf, running.sndbuf
        slot.running_since = slot.last_heartbeat_at = time.monotonic()
        slot.stalled_at_heartbeat = self.lag.stalled_s
        slot.heartbeat = {}
        slot.client.mark_running()
        slot.first_attempt.set()
        log.info("worker %d running: pid %d, core %d, udp port %d", slot.worker_id, running.pid, running.core,
                 running.udp_port)
        for callback in list(self._running_callbacks):
            try:
                callback(slot.worker_id)
            except Exception:
                log.exception("worker_running callback failed")

    def _on_heartbeat(self, slot: WorkerSlot, body: dict[str, Any]) -> None:
        if not slot.running:
            return
        try:
            beat = WorkerHeartbeat.from_wire(body)
        except ProtocolError as exc:
            log.warning("worker %d: invalid heartbeat: %s", slot.worker_id, exc.reason)
            return
        slot.last_heartbeat_at = time.monotonic()
        slot.stalled_at_heartbeat = self.lag.stalled_s
        slot.heartbeat = beat.to_wire()


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
