"""Leak checks after abrupt leaves (docs/RELIABILITY.md, K7): join / publish / vanish
cycles against a worker's media side (bench/churn.py: a real Engine, real ICE, DTLS and SRTP from synthetic
peers, media forwarded), then everything it held must be back at its baseline.

Exact: transports, producers, consumers, the Engine's slots and SRTP sessions, file descriptors, asyncio tasks.
Within a small margin: the Engine's own C allocations (fastpath/mem.pxd) and Python's (tracemalloc). A cycle leaks
hundreds of KiB of C state (packet stores) or tens of KiB of Python objects (a transport with its DTLS context),
so one leaked entity per cycle is far outside either margin. The longer run is ``python -m bench churn``.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
import warnings

from bench.churn import Churn, ChurnHost, rss_bytes, settle
from router.heap import HeapTrimmer, heap_stats

CYCLES = 200         # one join / publish / subscribe / media / vanish round each (~0.1 s)
STORM_ROOMS = 10     # then 20 participants at once, gone at once
C_MARGIN = 4096      # bytes of Engine C state
PY_MARGIN = 96 << 10  # bytes of Python objects (a leaked transport is ~8 KiB: one per cycle is 1.6 MiB)


async def test_abrupt_churn_returns_every_entity_and_allocation_to_baseline() -> None:
    host = ChurnHost(asyncio.get_running_loop())
    churn = Churn(host)
    try:
        for _ in range(3):
            await churn.cycle()
        await churn.storm(STORM_ROOMS)  # the Engine's slot tables grow to the peak once, and stay
        gc.collect()
        tracemalloc.start()
        # pytest keeps a record of every warning raised inside a test (pyOpenSSL's deprecation of X509 objects, ~200
        # here): they are its allocations, not the worker's, and took the measured growth from ~20 KiB to ~110.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                base = await settle(host)
                forwarded = churn.forwarded
                for _ in range(CYCLES):
                    await churn.cycle()
                await churn.storm(STORM_ROOMS)
                end = await settle(host)
            finally:
                tracemalloc.stop()
        assert churn.forwarded - forwarded >= (CYCLES + STORM_ROOMS) * 20  # media flowed in every room
        assert end.counts() == base.counts()
        assert base.transports == base.srtp_sessions == base.engine_consumers == 0
        assert end.c_bytes - base.c_bytes <= C_MARGIN, (base.c_bytes, end.c_bytes)
        assert end.c_blocks == base.c_blocks
        assert end.py_bytes - base.py_bytes <= PY_MARGIN, (base.py_bytes, end.py_bytes)
    finally:
        churn.close()
        host.close()


async def test_the_heap_trimmer_gives_a_crowd_s_memory_back() -> None:
    """After a crowd left, the freed heap goes back to the kernel (router/heap.py): without the trim glibc keeps
    it as a high-water mark and the worker's RSS stays at the peak."""
    if not heap_stats():
        import pytest

        pytest.skip("not glibc: no mallinfo2/malloc_trim")
    host = ChurnHost(asyncio.get_running_loop())
    churn = Churn(host)
    trimmer = HeapTrimmer(min_free_bytes=1 << 20, interval_s=0.0)
    host.media.heap.interval_s = float("inf")  # only this trimmer, at the moments the test picks
    try:
        await churn.storm(2)
        await settle(host)
        trimmer.tick(time.monotonic())
        trimmer.join(30)
        base = rss_bytes()
        await churn.storm(40)  # 80 participants: tens of MiB of packet stores and contexts
        await settle(host)
        peak, before = rss_bytes(), heap_stats()
        assert trimmer.tick(time.monotonic()), before
        trimmer.join(30)
        assert trimmer.trims >= 1
        assert rss_bytes() - base < 8 << 20, (base, peak, rss_bytes(), before, heap_stats())
    finally:
        churn.close()
        host.close()
