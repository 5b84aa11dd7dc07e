"""Issue 18, rooms across hosts (the media half): a pipe between two hosts carries a producer with SRTP on it.

Runs tests/e2e/xpipe_netns.py: two network namespaces made by the test (TEST-NET-2 addresses, one veth pair), one
worker's media side in each on the same UDP port, driven by the requests control would relay between nodes
(``producer.pipe`` and ``media_router.produce_pipe`` with ``peer_ip``, ``local_ip`` and ``srtp``). Asserts that the
subscriber on host 2 receives every packet of the publisher on host 1, rewritten to its own SSRC, payload type and
consecutive sequence numbers, and that nothing crossed between the hosts in clear. Skipped with the reason when this
host cannot create namespaces (not root).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import netns  # noqa: E402
import xpipe_netns  # noqa: E402


def test_a_pipe_between_two_hosts_carries_srtp_and_the_subscriber_gets_the_media() -> None:
    try:
        r = xpipe_netns.run_xpipe(timeout_s=30)
    except netns.NetnsUnavailable as exc:
        pytest.skip(str(exc))
    detail = json.dumps(r, default=str)[-6000:]
    assert r.get("ok") and r.get("dest"), detail
    sent, received = r["sent"], r["dest"]["received"]
    assert [p["payload"] for p in received] == [p["payload"] for p in sent], detail
    assert {(p["ssrc"], p["pt"]) for p in received} == {(0x5555, 100)}, detail  # the consumer's, not the pipe's
    first = received[0]["seq"]
    assert [p["seq"] for p in received] == [(first + i) & 0xFFFF for i in range(len(sent))], detail
    source, dest = r["source"], r["dest"]["counters"]
    assert source["pipe_srtp_transports"] == dest["pipe_srtp_transports"] == 1, detail
    assert source["pipe_tx_packets"] >= len(sent) and dest["pipe_srtp_drops"] == 0, detail
    # On the veth between the hosts: every media packet, none in clear, each with HMAC-SHA1-80's 10-byte tag.
    wire = r["wire"]
    assert len(wire) == len(sent), detail
    assert not any(w["cleartext"] for w in wire), detail
    assert [w["length"] for w in wire] == [p["length"] + 10 for p in sent], detail
