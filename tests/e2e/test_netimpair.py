"""The impairment relay (tests/netimpair.py) on its own: real UDP traffic through it in a namespace of its own.

tests/netimpair_probe.py measures each rule (loss, delay with jitter, rate cap with a bounded queue) once; the tests
below hold the measurements to the rules within statistical tolerance. Skipped where no network namespace can be
made (not root, no unshare/ip).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netimpair_probe import run_probe  # noqa: E402
from netns import NetnsUnavailable, check_available  # noqa: E402

try:
    check_available()
except NetnsUnavailable as exc:
    pytest.skip(f"network namespace unavailable: {exc}", allow_module_level=True)


@pytest.fixture(scope="module")
def measured() -> dict[str, Any]:
    return run_probe()


def test_random_loss_is_within_tolerance_and_the_pattern_is_exact(measured: dict[str, Any]) -> None:
    r = measured["loss_random"]
    # 10 % loss over 2000 packets: the binomial standard deviation is 0.67 %; 3 % is more than four of them.
    assert 0.87 <= r["echoed"] / r["sent"] <= 0.93, r
    assert 0.07 <= r["relay_lost"] / r["relay_offered"] <= 0.13, r
    assert measured["loss_every_10"] == {"sent": 1000, "echoed": 900}


def test_delay_and_jitter_stay_within_their_bounds(measured: dict[str, Any]) -> None:
    d = measured["delay"]
    # 40 +- 5 ms down, 10 ms up: every round trip is 45 to 55 ms plus the relay's wake-up and the host's scheduling.
    assert d["echoed"] == d["sent"], d
    assert 45.0 <= d["rtt_min_ms"] and d["rtt_max_ms"] <= 90.0, d
    assert 47.0 <= d["rtt_median_ms"] <= 60.0, d


def test_rate_cap_holds_with_a_bounded_queue(measured: dict[str, Any]) -> None:
    r = measured["rate"]
    assert r["offered_kbit"] >= 1900, r
    assert 900 <= r["delivered_kbit"] <= 1100, r  # 1000 kbit/s cap
    assert r["relay_queue_drops"] > 0 and r["relay_offered_bytes"] > 1.8 * r["relay_delivered_bytes"], r
    # the queue holds 200 ms at the rate plus the burst: 25,000 + 4,000 bytes at most
    assert r["max_queue_bytes"] <= 29_000 and r["max_rtt_ms"] <= 300, r
