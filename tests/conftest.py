"""Shared test fixtures: free loopback ports, a short private runtime root, and a process reaper.

Every process a test starts goes through :class:`ProcessReaper`, whose finalizer kills each process group it
started (and any extra pid it was told about) with SIGKILL and reaps it, so no test leaves a process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ports import free_port_base  # noqa: E402 (after ROOT is on the path)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port the kernel just handed out on ``host`` (free at the time of the call)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def udp_port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_udp_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive ports free over UDP and TCP (a worker's RTC port takes both with ICE over
    TCP), below the kernel's ephemeral range (bench/ports.py says why)."""
    return free_port_base(count, host=host)


def pinned_cpus(pid: int) -> str:
    """The CPU list a process may run on (``Cpus_allowed_list`` in /proc/<pid>/status), e.g. ``"1"``."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Cpus_allowed_list for {pid}")


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists or is a zombie (exited, not yet reaped by its new parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


class ProcessReaper:
    """Starts processes in their own process group and kills every group and tracked pid at teardown."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.pids: set[int] = set()

    def spawn(self, args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(args, start_new_session=True, **kwargs)  # type: ignore[call-overload]
        self.processes.append(process)
        return process

    def track(self, pid: int) -> None:
        """Also kill ``pid`` at teardown (a grandchild that may outlive its group leader)."""
        self.pids.add(pid)

    def cleanup(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


@pytest.fixture
def reaper() -> Iterator[ProcessReaper]:
    r = ProcessReaper()
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture
def runtime_root() -> Iterator[str]:
    """A short private directory for runtime sockets (AF_UNIX paths are limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="mrt-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def wait_for(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll ``predicate`` every ``step_s`` until it holds or ``timeout_s`` passed; its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step_s)
    return predicate()
