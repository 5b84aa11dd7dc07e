"""The node selector: serving nodes only, least loaded by the configured measure, ties to the asking node."""

from __future__ import annotations

import pytest

from control.cluster.registry import NodeInfo
from control.cluster.selector import NoNodeAvailable, select_node


def node(node_id: str, rooms: int = 0, cpu: float = 0.0, state: str = "serving") -> NodeInfo:
    return NodeInfo(id=node_id, ip="127.0.0.1", http_port=1, rtc_port=2, cpus=2, rooms=rooms, cpu=cpu, state=state)


def test_rooms_selector_takes_the_fewest_rooms_and_ties_go_to_the_asking_node() -> None:
    nodes = [node("ND_a", rooms=4), node("ND_b", rooms=1), node("ND_c", rooms=1)]
    assert select_node(nodes, "rooms", "ND_a").id == "ND_b"
    assert select_node(nodes, "rooms", "ND_c").id == "ND_c"


def test_cpuload_selector_takes_the_least_cpu() -> None:
    nodes = [node("ND_a", rooms=0, cpu=0.71), node("ND_b", rooms=9, cpu=0.12)]
    assert select_node(nodes, "cpuload", "ND_a").id == "ND_b"
    assert select_node(nodes, "rooms", "ND_b").id == "ND_a"


def test_a_draining_node_takes_no_new_room() -> None:
    nodes = [node("ND_a", state="draining"), node("ND_b", rooms=50)]
    for mode in ("any", "cpuload", "rooms"):
        assert select_node(nodes, mode, "ND_a").id == "ND_b"
    with pytest.raises(NoNodeAvailable):
        select_node([node("ND_a", state="draining")], "rooms", "ND_a")
