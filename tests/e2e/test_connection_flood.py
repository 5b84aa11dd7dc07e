"""Issue 15 acceptance, finding 1 (unauthenticated fd exhaustion), with the unmodified ``livekit`` SDK.

The scenario (tests/e2e/lk_scenarios/conn_flood.py) runs in a private network namespace with its own
``python -m control serve``, whose connection settings come from this test's environment: a header deadline of
8 s (instead of 10) and at most 1,500 connections per address waiting to authenticate. Skipped only when this host
cannot create a network namespace.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sdk_scenario import scenario  # noqa: E402

CONNECTED = 1  # livekit.rtc.ConnectionState.CONN_CONNECTED


def test_silent_connections_are_closed_and_refused_while_healthz_and_a_join_work(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAROUTER_HEADER_TIMEOUT_S", "8")
    monkeypatch.setenv("MEDIAROUTER_MAX_PENDING_PER_ADDRESS", "1500")
    r = scenario("conn_flood", workers=1, timeout_s=90)
    # During the flood: /healthz answers, with the flood's connections pending, and the SDK joins.
    assert [h["status"] for h in r["health_during"]] == [200, 200], r["health_during"]
    assert r["health_during"][0]["connections"]["pending"] >= 1500, r["health_during"]
    assert r["joined_sid"].startswith("PA_") and r["connection_state"] == CONNECTED
    # The 500 over the per-address cap got a 503 at once; the others were closed without a byte by the deadline.
    assert r["outcomes"] == {"503": 500, "closed": 1500}, (r["outcomes"], r["health_after"])
    after = r["health_after"]
    assert after["status"] == 200 and after["connections"]["refused"]["address"] == 500, after
    assert after["connections"]["pending"] <= 2, after  # this request (and the SDK's, closing)
