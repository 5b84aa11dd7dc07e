"""Which node a new room goes to (LiveKit's ``node_selector``): ``any``, ``cpuload`` or ``rooms``.

Only serving nodes are candidates (a draining node takes no new room). ``rooms`` takes the node with the fewest
rooms, ``cpuload`` the one with the lowest CPU load (in tenths, then the fewest rooms); ties go to the asking node
(so that a quiet cluster keeps a room where its first client came in), then to the lowest id. ``any`` takes a
random serving node.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from control.cluster.registry import NodeInfo


class NoNodeAvailable(Exception):
    """No node of the cluster is serving."""


def select_node(nodes: Sequence[NodeInfo], mode: str, local_id: str) -> NodeInfo:
    serving = [n for n in nodes if n.state == "serving"]
    if not serving:
        raise NoNodeAvailable("no serving node in the cluster")
    if mode == "any":
        return random.choice(serving)

    def measure(node: NodeInfo) -> tuple[float, int, int, str]:
        cpu = round(node.cpu, 1) if mode == "cpuload" else 0.0  # tenths: noise does not move rooms around
        return cpu, node.rooms, 0 if node.id == local_id else 1, node.id

    return min(serving, key=measure)
