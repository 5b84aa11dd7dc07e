"""MediaRouter: one room's media domain on this worker, and the Producer/Consumer records it groups.

A MediaRouter is only a namespace: the transports created in it, and through them its producers and consumers. The
fan-out tables themselves live in the Engine; these records keep what the Python side needs to answer control
(ids, kinds, pause flags, layer preferences and
allocations) and to close everything that hangs off a closed entity.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MediaRouter:
    """Lifecycle: created by ``media_router.create``, closed with all its transports by ``media_router.close``."""

    id: str
    transports: set[str] = field(default_factory=set)


@dataclass
class Producer:
    """Inbound media of one track on one transport. Lifecycle: produce -> (pause/resume)* -> close."""

    id: str
    transport_id: str
    kind: str
    mid: str
    paused: bool = False
    consumers: set[str] = field(default_factory=set)
    source: str = "unknown"  # ProduceRequest.source: "camera", "screen_share", ... (router/temporal.py)


@dataclass
class Consumer:
    """One producer's media sent on another transport. Closed with its transport or its producer."""

    id: str
    transport_id: str
    producer_id: str
    kind: str
    paused: bool = False  # control's pause (consumer.pause)
    preferred_layer: int = -1  # control's preference (consumer.set_preferred_layers), -1 = the highest
    current_layer: int = -1
    allocated_layer: int = -1  # the stream allocator's limit (router/allocator.py), -1 = none
    allocated_temporal: int = -1  # ... and its VP8 TID cap (router/temporal.py; set_consumer_temporal), -1 = all
    bw_paused: bool = False  # paused by the stream allocator: not even the lowest layer fits the estimate
    priority: int = 1  # the allocator serves higher priorities first

    @property
    def layer_cap(self) -> int:
        """The layer the Engine is asked for (``set_consumer_layer``): the lower of control's preference and the
        allocator's limit, so that neither undoes the other."""
        if self.allocated_layer < 0:
            return self.preferred_layer
        if self.preferred_layer < 0:
            return self.allocated_layer
        return min(self.preferred_layer, self.allocated_layer)
