"""Control's loop pacer: how much of the many sessions' work one event-loop iteration starts.

When hundreds of participants join or leave at once, their steps become ready together (the sockets of a
thousand LeaveRequests are readable in the same poll, the replies of 64 worker requests resolve in one drain), and
the event loop runs every ready step in one iteration: a probe of control's iterations during a 1,000-participant
join found 150-450 ms iterations made of the signal sessions' steps (the start of a join up to its worker requests,
the JoinResponse after them, the answers, the leaves), and each such iteration is loop lag for everything else
(docs/PERFORMANCE.md, "Large rooms: joins").

A session's step asks for a :meth:`Pacer.turn` first. The first turn of an iteration opens a window; turns go on
at once while the window is younger than :attr:`Pacer.budget_s`; after that they wait, in order of arrival, and
:attr:`Pacer.wake` of them are woken per iteration to try again (each still within the budget of its own
iteration; one that finds the budget spent goes back to the front of the line, so no turn waits behind newer ones
for long). The work is the same; it is spread over more, shorter iterations, with the worker replies and the
socket writes of other sessions in between.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

BUDGET_S = 0.01  # paced work started per loop iteration, measured from its first turn
WAKE = 16  # waiting turns woken per iteration


class Pacer:
    """Turns of one event loop (bound to the first loop that asks; a new loop starts afresh)."""

    def __init__(self, budget_s: float = BUDGET_S, wake: int = WAKE,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.budget_s = budget_s
        self.wake = wake
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start: float | None = None  # when this iteration's window opened
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._waking = False
        self.waits = 0  # turns that had to wait (for tests and diagnostics)

    async def turn(self) -> None:
        """Returns at once while this iteration's window has budget left and nobody waits; else later."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._start, self._waiting, self._waking = loop, None, deque(), False
        if not self._waiting and self._open(loop):
            return
        self.waits += 1
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append(future)
        while True:
            self._schedule(loop)
            await future
            if self._open(loop):
                return
            # Woken, but this iteration's budget is spent: back to the front of the line, not behind newer turns.
            future = loop.create_future()
            self._waiting.appendleft(future)

    def _open(self, loop: asyncio.AbstractEventLoop) -> bool:
        now = self.clock()
        if self._start is None:
            self._start = now
            loop.call_soon(self._close_window)
            return True
        return now - self._start < self.budget_s

    def _close_window(self) -> None:
        self._start = None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._waking:
            self._waking = True
            loop.call_soon(self._wake, loop)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        self._waking = False
        woken = 0
        while self._waiting and woken < self.wake:
            future = self._waiting.popleft()
            if not future.done():  # a cancelled waiter gives its place up
                future.set_result(None)
                woken += 1
        if self._waiting:
            self._schedule(loop)


PACER = Pacer()  # control's one loop


async def turn() -> None:
    """A turn of control's pacer (:data:`PACER`)."""
    await PACER.turn()
