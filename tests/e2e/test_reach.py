"""Issue 16 acceptance: reachable behind 1:1 NAT, over ICE-TCP when UDP is blocked (and on IPv6), through coturn.

Each test runs one mode of tests/e2e/reach_netns.py (server, router and client namespaces made by the test, TEST-NET
addresses) with the unmodified ``livekit`` SDK in the client's namespace, and asserts what the clients received and
which path the worker selected for each transport. Skipped with the reason when this host cannot (not root, no
``nft``, no coturn: ``make net-deps`` installs them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import netns  # noqa: E402
import reach_netns  # noqa: E402


def reach(mode: str) -> dict[str, Any]:
    try:
        r = reach_netns.run_reach(mode, timeout_s=60)
    except netns.NetnsUnavailable as exc:
        pytest.skip(str(exc))
    detail = json.dumps({k: v for k, v in r.items() if k != "result"}, default=str)[-6000:]
    assert r.get("ok"), detail
    result: dict[str, Any] = r["result"]
    assert result["b_video"].get(f"alice {reach_netns.WIDTH}x{reach_netns.HEIGHT}", 0) >= 30, result
    assert result["b_audio"].get("alice", 0) > 0, result
    assert result["b_data"] == ["through"], result
    return result


def paths(result: dict[str, Any]) -> set[tuple[str, str]]:
    """(protocol, remote host) of every transport of alice and bob as the worker selected it."""
    return {(t["protocol"], t["remote"][0]) for transports in result["transports"].values()
            for t in transports.values()}


def test_one_to_one_nat_with_node_ip_on_no_interface() -> None:
    result = reach("nat")
    # The client reached the server only at 203.0.113.10 (DNAT); the server saw it at its own address over UDP.
    assert paths(result) == {("udp", reach_netns.CLIENT_IP)}, result["transports"]
    assert result["participants"] == {"udp": 2, "tcp": 0, "relay": 0, "connecting": 0}


def test_multi_homed_server_answers_from_the_address_checked() -> None:
    result = reach("multihomed")
    assert paths(result) == {("udp", reach_netns.CLIENT_IP)}, result["transports"]
    locals_ = {t["local"] for transports in result["transports"].values() for t in transports.values()}
    assert locals_ == {reach_netns.SECOND_IP}, result["transports"]


def test_udp_blocked_client_connects_over_ice_tcp() -> None:
    result = reach("tcp")
    assert paths(result) == {("tcp", reach_netns.CLIENT_IP)}, result["transports"]
    assert result["participants"] == {"udp": 0, "tcp": 2, "relay": 0, "connecting": 0}


def test_ipv6_client_connects_over_ice_tcp_on_ipv6() -> None:
    result = reach("ipv6")
    # The fast path forwards IPv4 only: the IPv6 address is a TCP candidate, relayed into the Engine over IPv4.
    assert paths(result) == {("tcp", reach_netns.CLIENT_IP6)}, result["transports"]
    assert result["participants"] == {"udp": 0, "tcp": 2, "relay": 0, "connecting": 0}


def test_client_that_reaches_only_coturn_is_relayed() -> None:
    result = reach("turn")
    # coturn relays from 198.51.100.1: every transport's peer is a relayed address.
    assert paths(result) == {("udp", reach_netns.ROUTER_S_IP)}, result["transports"]
    assert result["participants"] == {"udp": 0, "tcp": 0, "relay": 2, "connecting": 0}  # told by the trickled relays
    assert result["turn_expired"] == 401 and result["turn_fresh"] == 200, result


def test_udp_blocked_browser_connects_over_ice_tcp() -> None:
    """``livekit-client`` in Chromium, UDP dropped in its namespace: it subscribes over ICE-TCP (skipped without the
    browser tools: make browser-deps)."""
    try:
        r = reach_netns.run_reach("tcp_js", timeout_s=60)
    except netns.NetnsUnavailable as exc:
        pytest.skip(str(exc))
    detail = json.dumps({k: v for k, v in r.items() if k != "result"}, default=str)[-6000:]
    assert r.get("ok"), detail
    result: dict[str, Any] = r["result"]
    js = result["js"]
    assert js.get("connected") and not js.get("error"), js
    assert (js.get("video") or {}).get("framesDecoded", 0) >= 30, js
    assert (js["video"]["width"], js["video"]["height"]) == (reach_netns.WIDTH, reach_netns.HEIGHT), js
    assert (js.get("audio") or {}).get("packetsReceived", 0) > 0, js
    # The worker's selected pair for the browser's subscriber transport: its TCP connection from the client.
    assert paths(result) == {("tcp", reach_netns.CLIENT_IP)}, result["transports"]
