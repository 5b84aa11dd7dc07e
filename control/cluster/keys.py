"""The Redis key and channel names of a cluster, in one place (every name starts with ``mediarouter:``)."""

from __future__ import annotations

PREFIX = "mediarouter:"
NODE_PATTERN = PREFIX + "node:*"


def node_key(node_id: str) -> str:
    """The node's registry entry (JSON, expires after the cluster's TTL)."""
    return f"{PREFIX}node:{node_id}"


def room_key(room: str) -> str:
    """The id of the node that owns ``room`` (SET NX, expires after the cluster's TTL)."""
    return f"{PREFIX}room:{room}"


def node_channel(node_id: str) -> str:
    """Where a node hears requests: relayed joins and RoomService calls (control/cluster/bus.py)."""
    return f"{PREFIX}bus:{node_id}"


def reply_channel(call_id: str) -> str:
    return f"{PREFIX}reply:{call_id}"


def signal_channels(connection_id: str) -> tuple[str, str]:
    """(up, down) of one relayed signal connection: client -> owner and owner -> client."""
    return f"{PREFIX}sig:{connection_id}:up", f"{PREFIX}sig:{connection_id}:down"
