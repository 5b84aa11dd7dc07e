"""Control's own event-loop lag: how late a periodic timer fires, kept over a window, and the stall time so far.

The Supervisor's watchdog samples it on every tick (:meth:`LoopLag.tick`): a tick due at ``t`` that runs at
``t + lag`` means control's loop could not run anything for ``lag`` seconds (a blocking call, a burst of work, a
SIGSTOP of control itself). Two readings come out of it:

- :attr:`LoopLag.stalled_s`, the sum of every lag so far. The Supervisor judges a worker's heartbeat age net of the
  stall time that passed since that heartbeat: heartbeats a worker sent while control was stalled sit unread in the
  socket, so control's own stall is never held against a worker, while a worker that is really silent (hung,
  SIGSTOP) still runs out of time within the timeout of responsive control time.
- :meth:`LoopLag.summary`, the p99 and the maximum over the last ``window_s`` seconds, which ``/healthz`` reports
  next to each worker's ``loop_lag_ms``.
"""

from __future__ import annotations

import math
from collections import deque


class LoopLag:
    """Lags of one periodic timer; ``interval_s`` is the period the caller sleeps between ticks."""

    def __init__(self, interval_s: float, window_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self.stalled_s = 0.0
        self._samples: deque[tuple[float, float]] = deque()
        self._due: float | None = None

    def start(self, now: float) -> None:
        """The first tick is due one interval after ``now``."""
        self._due = now + self.interval_s

    def tick(self, now: float) -> float:
        """Records the tick that runs at ``now``; returns its lag in seconds."""
        if self._due is None:
            self.start(now)
            return 0.0
        lag = max(0.0, now - self._due)
        self._due = now + self.interval_s
        self.stalled_s += lag
        self._samples.append((now, lag))
        horizon = now - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        return lag

    def summary(self) -> dict[str, float | int]:
        """``{"p99_ms", "max_ms", "samples", "window_s"}`` over the window (0 without samples)."""
        lags = sorted(lag for _, lag in self._samples)
        if not lags:
            return {"p99_ms": 0.0, "max_ms": 0.0, "samples": 0, "window_s": self.window_s}
        p99 = lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)]
        return {"p99_ms": round(p99 * 1000.0, 3), "max_ms": round(lags[-1] * 1000.0, 3), "samples": len(lags),
                "window_s": self.window_s}
