"""SCTP association and WebRTC data channels over a :class:`router.dtls.DtlsEndpoint`'s application data.

Follows RFC 8261 (SCTP over DTLS), RFC 8831 (data channels: stream ids by DTLS role, even for the DTLS client and
odd for the server; PPIDs for string/binary/empty messages) and RFC 8832 (DCEP: DATA_CHANNEL_OPEN / ACK). The SCTP
state machine (RFC 9260, with partial reliability RFC 3758 and stream reconfiguration RFC 6525) is aiortc's
``RTCSctpTransport``, a maintained pure-Python implementation that aiortc itself runs against browsers.

How it is reused: ``RTCSctpTransport`` expects an ``RTCDtlsTransport``. It uses exactly five members of it, which
:class:`_DtlsAdapter` provides over our endpoint: ``state``, ``_role`` (picks the stream-id parity),
``_register_data_receiver``/``_unregister_data_receiver`` and ``async _send_data``. A subclass overrides two
internal hooks: ``_set_state`` (to report association state, which aiortc does not emit as an event) and
``_receive`` (to drop incoming messages above our ``max_message_size``; docs/RELIABILITY.md, F1). Incoming records go to
aiortc's ``_handle_data`` (the ``DataReceiver`` protocol) from one pump task, in arrival order; a record that makes
aiortc raise (malformed chunk, duplicate DCEP OPEN) is dropped and counted, the association carries on. Everything
else goes through aiortc's public API (``start``, ``stop``, ``RTCDataChannel``). Writing SCTP from scratch would be
~2,000 lines of retransmission, congestion and reassembly logic for no gain. Tested with aiortc 1.16.

Timers (T1/T2/T3, reconfiguration) are aiortc's and run on the asyncio loop, so unlike the STUN/ICE/DTLS objects
this one needs a running loop. Partial: reassembly of an incoming message is bounded by aiortc's advertised
receive window (1 MiB), not by ``max_message_size``; the oversized message is dropped once complete.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from aiortc.rtcdatachannel import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport

from router.dtls import DtlsEndpoint

log = logging.getLogger("router.sctp")

DEFAULT_PORT = 5000
DEFAULT_MAX_MESSAGE_SIZE = 262_144  # mediasoup's maxSctpMessageSize; what we accept from the peer
REMOTE_DEFAULT_MAX_MESSAGE_SIZE = 65_536  # RFC 8841 §6.1: when the peer's SDP has no a=max-message-size
INBOX_LIMIT = 1024  # records waiting for the pump; beyond this they are dropped (SCTP retransmits them)

__all__ = ["RTCDataChannel", "SctpAssociation", "SctpError"]


# Chunks whose body is a list of TLV parameters (RFC 9260 §3.2.1): INIT and INIT ACK after 16 fixed bytes; ABORT,
# HEARTBEAT, HEARTBEAT ACK and ERROR (causes have the same TLV layout), RE-CONFIG (RFC 6525) from the start.
_PARAMS_AT = {1: 16, 2: 16, 4: 0, 5: 0, 6: 0, 9: 0, 130: 0}


def malformed_params(packet: bytes) -> str | None:
    """Why aiortc must not see ``packet``: a parameter (or error cause) shorter than its own 4-byte header.

    aiortc 1.16's ``decode_params`` advances by the declared length, so a length of 0 never advances: one such
    packet from a connected peer (its verification tag and CRC32c are the peer's to compute) would spin the worker's
    event loop forever (found by tests/fuzz/fuzz_dcep.py; docs/RELIABILITY.md, F4). Chunk lengths themselves aiortc
    checks.
    """
    pos = 12
    while pos + 4 <= len(packet):
        kind = packet[pos]
        length = int.from_bytes(packet[pos + 2 : pos + 4], "big")
        if length < 4:
            return None  # aiortc refuses the chunk length itself
        start = _PARAMS_AT.get(kind)
        if start is not None:
            body = packet[pos + 4 : pos + length]
            at = start
            while at + 4 <= len(body):
                param_length = int.from_bytes(body[at + 2 : at + 4], "big")
                if param_length < 4:
                    return f"chunk type {kind} has a parameter of length {param_length}"
                at += param_length + (-param_length % 4)
        pos += length + (-length % 4)
    return None


class SctpError(Exception):
    """A call that does not fit the association's state."""


class _DtlsAdapter:
    """The part of aiortc's ``RTCDtlsTransport`` that ``RTCSctpTransport`` uses, over a :class:`DtlsEndpoint`."""

    def __init__(self, endpoint: DtlsEndpoint) -> None:
        self._endpoint = endpoint
        self._receiver: Any = None
        self.dropped = 0

    @property
    def state(self) -> str:
        return self._endpoint.state

    @property
    def _role(self) -> str:
        return self._endpoint.role

    def _register_data_receiver(self, receiver: Any) -> None:
        self._receiver = receiver

    def _unregister_data_receiver(self, receiver: Any) -> None:
        if self._receiver is receiver:
            self._receiver = None

    async def _send_data(self, data: bytes) -> None:
        # Like a lossy network: a packet sent while DTLS is not connected is lost and SCTP's timers deal with it.
        if self._endpoint.state != "connected":
            self.dropped += 1
            return
        self._endpoint.send_application_data(data)


class _Sctp(RTCSctpTransport):
    def __init__(self, adapter: _DtlsAdapter, port: int, owner: SctpAssociation) -> None:
        self._owner = owner
        super().__init__(cast(Any, adapter), port)

    def emit(self, event: str, *args: Any, **kwargs: Any) -> bool:
        # A channel the peer opened goes to the owner first, as a listener registered first would (one pyee ``on``
        # fewer per association), then to any listener of the event.
        if event == "datachannel":
            self._owner._on_remote_channel(args[0])
        return super().emit(event, *args, **kwargs)

    def _set_state(self, state: RTCSctpTransport.State) -> None:
        super()._set_state(state)
        self._owner._sync_state()

    async def _receive(self, stream_id: int, pp_id: int, data: bytes) -> None:
        if len(data) > self._owner.max_message_size:
            self._owner.messages_too_large += 1
            log.info(
                "dropping a %d-byte message on stream %d (max %d)", len(data), stream_id, self._owner.max_message_size
            )
            return
        await super()._receive(stream_id, pp_id, data)


class _Channel(RTCDataChannel):
    """A channel this side opens: its association hears its messages and its close from :meth:`emit`, before any
    listener of the event, instead of through two pyee listeners registered per channel (each ``on`` takes a lock
    and emits ``new_listener``: a measurable share of a transport's set-up in a burst of joins)."""

    def __init__(self, owner: SctpAssociation, transport: RTCSctpTransport,
                 parameters: RTCDataChannelParameters) -> None:
        self._owner = owner
        super().__init__(transport, parameters)

    def emit(self, event: str, *args: Any, **kwargs: Any) -> bool:
        if event == "message":
            self._owner._channel_message(self, args[0])
        elif event == "close":
            self._owner._channel_closed(self)
        return super().emit(event, *args, **kwargs)


class SctpAssociation:
    """The data-channel association of one transport. Lifecycle: new -> (start) connecting -> connected -> closed.

    Wiring: the owner feeds the DTLS endpoint's application data to :meth:`receive` (for instance
    ``dtls.on_application_data = assoc.receive``) and calls :meth:`start` once DTLS is connected. Channels opened by
    the peer are announced through ``on_channel``; channels of either side deliver messages to ``on_message(label,
    data)`` (``str`` for text, ``bytes`` for binary).
    """

    def __init__(
        self,
        dtls: DtlsEndpoint,
        *,
        port: int = DEFAULT_PORT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"SCTP port {port} outside 1..65535")
        if max_message_size <= 0:
            raise ValueError(f"max_message_size must be positive, got {max_message_size}")
        self.dtls = dtls
        self.port = port
        self.max_message_size = max_message_size
        self.state = "new"
        self.messages_too_large = 0
        self.records_dropped = 0
        self.records_bad = 0
        self.on_channel: Callable[[RTCDataChannel], None] | None = None
        self.on_message: Callable[[str, bytes | str], None] | None = None
        self.on_state_change: Callable[[str], None] | None = None
        self._channels: list[RTCDataChannel] = []
        self._adapter = _DtlsAdapter(dtls)
        self._sctp = _Sctp(self._adapter, port, self)  # announces the peer's channels to _on_remote_channel
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue(INBOX_LIMIT)
        self._pump_task: asyncio.Task[None] | None = None
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------------------------
    async def start(
        self, remote_port: int = DEFAULT_PORT, remote_max_message_size: int = REMOTE_DEFAULT_MAX_MESSAGE_SIZE
    ) -> None:
        """Send INIT (both sides initiate, RFC 8841 §9.3) and start processing received records.

        ``remote_max_message_size`` is the peer's ``a=max-message-size`` (0 = unlimited); sends above it raise.
        """
        if not 1 <= remote_port <= 65535:
            raise ValueError(f"SCTP remote port {remote_port} outside 1..65535")
        if remote_max_message_size < 0:
            raise ValueError(f"remote_max_message_size must not be negative, got {remote_max_message_size}")
        if self._closed:
            raise SctpError("association is closed")
        if self.dtls.state != "connected":
            raise SctpError(f"DTLS is not connected (state {self.dtls.state!r})")
        if self._pump_task is not None:
            raise SctpError("association already started")
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())
        await self._sctp.start(RTCSctpCapabilities(maxMessageSize=remote_max_message_size), remote_port)

    def receive(self, data: bytes) -> None:
        """One DTLS application-data record (an SCTP packet). Queued; processed in order by the pump task."""
        if self._closed:
            return
        try:
            self._inbox.put_nowait(data)
        except asyncio.QueueFull:
            self.records_dropped += 1

    async def _pump(self) -> None:
        while True:
            data = await self._inbox.get()
            reason = malformed_params(data)
            if reason is not None:
                self.records_bad += 1
                log.info("dropping an SCTP packet: %s", reason)
                continue
            try:
                await self._sctp._handle_data(data)
            except Exception as exc:  # a malformed packet must not end the association
                self.records_bad += 1
                log.info("dropping an SCTP packet that aiortc rejected: %r", exc)

    def close(self) -> None:
        """Abort the association (an ABORT chunk if it was up) and close every channel. Idempotent, synchronous."""
        if self._closed:
            return
        self._closed = True
        if self._pump_task is not None:
            self._pump_task.cancel()
            self._pump_task = None
        # aiortc's stop() sends ABORT through our adapter, whose send is synchronous, so the coroutine finishes
        # without suspending; drive it here so close() needs no loop iteration.
        coro = self._sctp.stop()
        try:
            coro.send(None)
        except StopIteration:
            pass
        else:
            coro.close()
            log.warning("aiortc stop() suspended; forcing the association closed")
            self._sctp._set_state(RTCSctpTransport.State.CLOSED)
        self._sync_state()

    def _sync_state(self) -> None:
        state = "closed" if self._closed else self._sctp.state
        if state == self.state:
            return
        self.state = state
        if self.on_state_change is not None:
            self.on_state_change(state)

    # ---- channels ----------------------------------------------------------------------------------------
    @property
    def channels(self) -> list[RTCDataChannel]:
        """Channels of both sides that are not closed yet."""
        return list(self._channels)

    def create_channel(
        self,
        label: str,
        *,
        ordered: bool = True,
        protocol: str = "",
        max_retransmits: int | None = None,
        max_packet_life_time: int | None = None,
    ) -> RTCDataChannel:
        """Open a channel from this side (DCEP OPEN is sent once the association is up). Usable before start()."""
        if self._closed:
            raise SctpError("association is closed")
        if max_retransmits is not None and max_packet_life_time is not None:
            raise ValueError("max_retransmits and max_packet_life_time are mutually exclusive")
        for name, value in (("max_retransmits", max_retransmits), ("max_packet_life_time", max_packet_life_time)):
            if value is not None and not 0 <= value <= 0xFFFFFFFF:
                raise ValueError(f"{name} {value} outside 0..4294967295")
        if len(label.encode("utf-8")) > 0xFFFF or len(protocol.encode("utf-8")) > 0xFFFF:
            raise ValueError("label and protocol must each fit in 65535 bytes")
        parameters = RTCDataChannelParameters(
            label=label,
            ordered=ordered,
            protocol=protocol,
            maxRetransmits=max_retransmits,
            maxPacketLifeTime=max_packet_life_time,
        )
        channel = _Channel(self, self._sctp, parameters)  # reports its messages and close itself
        self._channels.append(channel)
        return channel

    def _on_remote_channel(self, channel: RTCDataChannel) -> None:
        self._channels.append(channel)
        channel.on("message", lambda data: self._channel_message(channel, data))
        channel.on("close", lambda: self._channel_closed(channel))
        if self.on_channel is not None:
            self.on_channel(channel)

    def _channel_message(self, channel: RTCDataChannel, data: bytes | str) -> None:
        if self.on_message is not None:
            self.on_message(channel.label, data)

    def _channel_closed(self, channel: RTCDataChannel) -> None:
        if channel in self._channels:
            self._channels.remove(channel)

    def find_channel(self, label: str) -> RTCDataChannel | None:
        """The first open channel with this label (either side's), else None."""
        return next((c for c in self._channels if c.label == label and c.readyState == "open"), None)

    def send(self, channel: RTCDataChannel | str, data: bytes | str) -> bool:
        """Send one message on a channel (object or label). False if it is not open (yet); ValueError if the message
        is larger than the peer's max message size."""
        target = self.find_channel(channel) if isinstance(channel, str) else channel
        if target is None or target.readyState != "open" or self._closed:
            return False
        target.send(data)
        return True
