"""``--profile-worker``: record where a worker's CPU goes during the measured window.

Owns running an external sampling profiler against a worker pid: py-spy (``py-spy record --native --format raw``,
collapsed stacks including Cython/C frames) when it is installed, else ``perf record -g`` followed by ``perf
report --stdio``. It also reduces collapsed stacks to the top functions by self and total samples so that the
report can print where the time went. Attaching needs ptrace rights over the worker (root, or the same user with
``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from typing import Any


def _tool(name: str) -> str | None:
    local = os.path.join(os.path.dirname(sys.executable), name)
    return local if os.access(local, os.X_OK) else shutil.which(name)


class WorkerProfiler:
    """Profile process ``pid`` for ``seconds`` into ``output`` (a file name; an extension is added per tool)."""

    def __init__(self, pid: int, output: str, seconds: float) -> None:
        self.pid = pid
        self.output = output
        self.seconds = seconds
        self.tool = "py-spy" if _tool("py-spy") else "perf" if _tool("perf") else None
        self._process: subprocess.Popen[bytes] | None = None
        self.path = ""

    def start(self) -> None:
        if self.tool is None:
            return
        duration = str(max(1, int(self.seconds + 0.999)))
        if self.tool == "py-spy":
            self.path = self.output if self.output.endswith(".txt") else self.output + ".txt"
            cmd = [str(_tool("py-spy")), "record", "--native", "--format", "raw", "--rate", "250",
                   "--duration", duration, "--pid", str(self.pid), "--output", self.path]
        else:
            self.path = self.output if self.output.endswith(".data") else self.output + ".data"
            cmd = [str(_tool("perf")), "record", "-g", "-F", "999", "-o", self.path, "-p", str(self.pid), "--",
                   "sleep", duration]
        self._process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finish(self) -> dict[str, Any]:
        if self.tool is None or self._process is None:
            return {"tool": None, "error": "neither py-spy nor perf is installed"}
        try:
            _, err = self._process.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            return {"tool": self.tool, "error": "profiler did not finish"}
        if self._process.returncode != 0 or not os.path.exists(self.path):
            return {"tool": self.tool, "error": err.decode(errors="replace").strip()[-500:]}
        if self.tool == "py-spy":
            with open(self.path) as f:
                self_top, total_top, samples, waiting = summarize_collapsed(f.read())
            return {"tool": "py-spy", "output": self.path, "samples": samples, "waiting_samples": waiting,
                    "top_self": self_top, "top_total": total_top}
        report = subprocess.run([str(_tool("perf")), "report", "--stdio", "--no-children", "-i", self.path,
                                 "--percent-limit", "1"], capture_output=True, text=True, timeout=120)
        return {"tool": "perf", "output": self.path,
                "report": [line for line in report.stdout.splitlines() if line and not line.startswith("#")][:60]}


# A stack through one of these is a thread waiting (py-spy --native samples blocked threads too, e.g. the libsrtp
# allocation thread parked on its queue); such samples are not CPU time and are left out of the shares.
WAIT_FRAMES = ("PyThread_acquire_lock_timed", "epoll_wait", "epoll_pwait", "pthread_cond_wait",
               "pthread_cond_timedwait", "sem_wait", "sem_timedwait", "sem_clockwait")


def summarize_collapsed(text: str, top: int = 15) -> tuple[list[tuple[str, float]], list[tuple[str, float]], int, int]:
    """Top functions by self and by total share of busy samples from collapsed stacks ("a;b;c count" lines);
    returns (self top, total top, busy samples, waiting samples left out)."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = waiting = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if any(f.split(" (", 1)[0] in WAIT_FRAMES for f in frames):
            waiting += n
            continue
        samples += n
        self_counts[_short(frames[-1])] += n
        for name in {_short(f) for f in frames}:
            total_counts[name] += n
    if samples == 0:
        return [], [], 0, waiting

    def share(c: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / samples, 1)) for name, n in c.most_common(top)]

    return share(self_counts), share(total_counts), samples, waiting


def _short(frame: str) -> str:
    # py-spy frames look like "function (file.py:123)"; keep the function and file name.
    name, _, where = frame.partition(" (")
    return f"{name} ({os.path.basename(where.rstrip(')')).split(':')[0]})" if where else name
