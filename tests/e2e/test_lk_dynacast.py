"""Dynacast (issue 13, part 4) with the unmodified ``livekit`` SDK in a network namespace (``tests/e2e/netns.py``,
scenario ``tests/e2e/lk_scenarios/dynacast.py``): when the only subscriber wants LOW, the publisher's libwebrtc stops
its high simulcast layer within 10 s (the server's pause delay is 5 s); asking for HIGH brings it back within 3 s.
Measured on the publisher's own outbound-rtp stats per rid. Skipped only without network namespaces."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sdk_scenario import scenario  # noqa: E402


def test_publisher_stops_the_high_layer_nobody_wants_and_restarts_it() -> None:
    r = scenario("dynacast", workers=1, timeout_s=60)
    assert r["b_high"], r
    assert r["rates_high"].get("f", 0) > 0, r["rates_high"]  # the high layer is sent while wanted
    stopped = r["f_stopped_after_s"]
    assert stopped is not None and stopped <= 10, r
    assert r["rates_low"].get("f", 0) == 0 and r["rates_low"].get("h", 0) == 0, r["rates_low"]
    assert r["rates_low"].get("q", 0) > 0, r["rates_low"]  # the layer bob watches keeps going
    assert sum(r["rates_low"].values()) < 1_000_000, r["rates_low"]
    assert r["b_low"], r["b_video"]
    back = r["f_sending_after_s"]
    assert back is not None and back <= 3, r
    assert r["b_high_again"], r["b_video"]
    print(json.dumps(r))
