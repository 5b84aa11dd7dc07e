"""DataProducer and DataConsumer: data-channel messages relayed between transports of one worker.

A DataProducer names the channel label on which a transport's peer sends (``"*"`` takes every label); each of its
DataConsumers is a channel that the server opens on another transport (DCEP, RFC 8832) and on which every message is
relayed unchanged. Such messages stay in the worker. A DataProducer made with ``relay_to_control`` also hands each
message to control (``data_producer.message``), for protocols whose data packets control must inspect (LiveKit's
DataPacket: sender identity, destination identities, permissions); control sends them on with ``transport.send_data``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.transport import WebRtcTransport

log = logging.getLogger("router.data")


class DataProducer:
    """Lifecycle: produce_data -> close (or its transport closes)."""

    def __init__(
        self, data_producer_id: str, transport: WebRtcTransport, label: str, *, relay_to_control: bool = False
    ) -> None:
        self.id = data_producer_id
        self.relay_to_control = relay_to_control
        self.transport = transport
        self.label = label
        self.consumers: dict[str, DataConsumer] = {}
        self.messages_in = 0

    def accepts(self, label: str) -> bool:
        return self.label == "*" or self.label == label

    def forward(self, data: bytes | str) -> None:
        self.messages_in += 1
        for consumer in self.consumers.values():
            consumer.send(data)


class DataConsumer:
    """A server-opened channel on the receiving transport. Lifecycle: consume_data -> open -> close."""

    def __init__(
        self, data_consumer_id: str, transport: WebRtcTransport, producer: DataProducer, label: str
    ) -> None:
        self.id = data_consumer_id
        self.transport = transport
        self.producer = producer
        self.label = label
        self.opened = False
        self.messages_out = 0
        self.messages_dropped = 0

    def open(self) -> None:
        """Ask for the channel; the transport opens it when its SCTP association is up."""
        self.transport.want_data_channel(self.label)
        self.opened = True

    def send(self, data: bytes | str) -> None:
        if self.opened and self.transport.send_data(self.label, data):
            self.messages_out += 1
        else:
            self.messages_dropped += 1

    def close(self) -> None:
        self.opened = False
