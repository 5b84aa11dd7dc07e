"""router/heap.py's rule: trim when the free heap grew by ``min_free_bytes`` over its lowest value since the last
trim, at most every ``interval_s``, one trim at a time (glibc's figures replaced by a script)."""

from __future__ import annotations

import pytest

from router import heap


def test_trims_on_growth_of_the_free_heap_not_on_its_level(monkeypatch: pytest.MonkeyPatch) -> None:
    free = [0]
    trims: list[int] = []
    monkeypatch.setattr(heap, "_LIBC", object())
    monkeypatch.setattr(heap, "heap_stats", lambda: {"heap_in_use": 1, "heap_free": free[0]})
    monkeypatch.setattr(heap, "malloc_trim", lambda: trims.append(free[0]) or True)
    trimmer = heap.HeapTrimmer(min_free_bytes=100, interval_s=5.0)

    def tick(now: float, value: int) -> bool:
        free[0] = value
        done = trimmer.tick(now)
        trimmer.join(5)
        return done

    assert not tick(10.0, 50)      # grew by 50 from 0: not enough
    assert not tick(12.0, 500)     # within the interval: not even looked at
    assert tick(15.0, 500)         # grew by 500
    assert not tick(20.0, 500)     # still 500 free: already given back, no second trim
    assert not tick(25.0, 20)      # a new crowd reused it
    assert tick(30.0, 400)         # and left: grew by 380 over the low of 20
    assert trims == [500, 400] and trimmer.trims == 2
    assert trimmer.trimmed_free_bytes == 500 + 380
