"""control/rtc/pacer.py: a burst of session steps is spread over loop iterations, each starting paced work only
while its budget lasts; turns are free when there is budget, and a cancelled waiter does not hold the others."""

from __future__ import annotations

import asyncio
from collections import Counter

from control.rtc.pacer import Pacer


class Clock:
    """A fake clock: each step of work below advances it, so the budget does not depend on this host's speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _burst(pacer: Pacer, clock: Clock, steps: int, work_s: float) -> Counter[int]:
    """``steps`` tasks take a turn each and then work ``work_s``; returns the steps that ran per loop iteration."""
    loop = asyncio.get_running_loop()
    iteration = [0]
    running = [True]

    def tick() -> None:  # one call per loop iteration
        iteration[0] += 1
        if running[0]:
            loop.call_soon(tick)

    per_iteration: Counter[int] = Counter()

    async def step() -> None:
        await pacer.turn()
        per_iteration[iteration[0]] += 1
        clock.now += work_s

    loop.call_soon(tick)
    await asyncio.gather(*(step() for _ in range(steps)))
    running[0] = False
    return per_iteration


def test_a_burst_is_spread_over_iterations_within_the_budget() -> None:
    clock = Clock()
    pacer = Pacer(budget_s=0.010, wake=4, clock=clock)
    per_iteration = asyncio.run(_burst(pacer, clock, 40, 0.004))
    assert sum(per_iteration.values()) == 40
    assert max(per_iteration.values()) <= 3  # 0, 4 and 8 ms into the window; the 4th would start at 12 ms
    assert len(per_iteration) >= 14
    assert pacer.waits > 0


def test_turns_are_free_while_there_is_budget() -> None:
    clock = Clock()
    pacer = Pacer(budget_s=0.010, clock=clock)
    per_iteration = asyncio.run(_burst(pacer, clock, 40, 0.0))
    assert list(per_iteration.values()) == [40]
    assert pacer.waits == 0


def test_a_cancelled_waiter_gives_its_place_up() -> None:
    clock = Clock()
    pacer = Pacer(budget_s=0.010, wake=1, clock=clock)

    async def main() -> list[str]:
        done: list[str] = []

        async def step(name: str) -> None:
            await pacer.turn()
            clock.now += 0.020  # over the budget: everyone after waits for a later iteration
            done.append(name)

        first = asyncio.ensure_future(step("first"))
        waiting = [asyncio.ensure_future(step(name)) for name in ("a", "b", "c")]
        await asyncio.sleep(0)  # first has run; a, b and c wait for a later iteration
        assert done == ["first"] and pacer.waits == 3
        waiting[0].cancel()
        await asyncio.gather(first, *waiting, return_exceptions=True)
        return done

    assert asyncio.run(main()) == ["first", "b", "c"]
