"""WebRtcTransport: one client's ICE-lite, DTLS and SCTP state on the worker's shared UDP port.

The transport glues the slow-path protocol objects (``ice.IceLite``, ``dtls.DtlsEndpoint``,
``sctp.SctpAssociation``) to one fast-path handle: a valid connectivity check binds the tuple in the Engine, a
connected DTLS association hands its exported SRTP keys to the Engine, and from then on RTP and RTCP never come back
to Python. It must not parse media or touch SDP; control sends it numbers.

Lifecycle: new -> (ICE checks) connected -> (DTLS) dtls connected -> closed; never reused after close.

Consent (RFC 7675; docs/RELIABILITY.md, B9): a connected transport whose peer sent no valid check on the selected tuple
for ``ice.CONSENT_TIMEOUT_MS`` goes to ice state "disconnected". The worker checks this once a second through a
:class:`ConsentSchedule`, which looks only at transports whose deadline has passed instead of at every transport.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.dtls import DtlsCertificate, DtlsEndpoint
from router.ice import CONSENT_TIMEOUT_MS, IceLite
from router.messages import TransportState, TupleChanged
from router.protocol import Body, Event

if TYPE_CHECKING:
    from router.sctp import SctpAssociation

log = logging.getLogger("router.transport")

Addr = tuple[str, int]
Notify = Callable[[Event, str, Body], None]  # (event, transport id, the event's body in router/messages.py EVENTS)

# Records that arrive before control has told us the peer's fingerprint (the client may start DTLS as soon as it
# has our offer, before its answer reaches control). They are replayed once connect() is called.
MAX_EARLY_DTLS_RECORDS = 16


class ConsentSchedule:
    """Consent deadlines of connected transports, earliest first, for the worker's once-a-second consent check.

    Each connected transport has one entry holding a time no later than the first time its consent can expire
    (:meth:`router.ice.IceLite.consent_deadline_ms`). Valid checks move the real deadline later without touching
    the schedule; :meth:`run` pops only entries that are due, checks those transports exactly as a scan of every
    transport would, and files the ones still connected again under their current deadline. A transport is popped
    about once per consent timeout, so a second's work follows the number of deadlines that came up, not the
    number of transports. Entries are lists so that :meth:`cancel` can blank one in place (the ``heapq``
    documentation's removal idiom); a blank entry is dropped when it comes up, or earlier when blank entries are
    more than half of the heap (and at least :data:`COMPACT_MIN`): a crowd that leaves at once must not hold its
    entries for a whole consent timeout (docs/RELIABILITY.md, K7).
    """

    COMPACT_MIN = 64

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []  # [due_ms, sequence, transport or None]
        self._sequence = itertools.count()
        self._blank = 0  # cancelled entries still in the heap

    def __len__(self) -> int:
        """Entries held, cancelled ones included until they come up."""
        return len(self._heap)

    def add(self, transport: WebRtcTransport, due_ms: int) -> list[Any]:
        entry = [due_ms, next(self._sequence), transport]
        heapq.heappush(self._heap, entry)
        return entry

    def cancel(self, entry: list[Any]) -> None:
        if entry[2] is None:
            return
        entry[2] = None
        self._blank += 1
        if self._blank >= self.COMPACT_MIN and 2 * self._blank > len(self._heap):
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)
            self._blank = 0

    def run(self, now_ms: int) -> None:
        """Check every transport whose entry is due at ``now_ms``."""
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            transport = heapq.heappop(heap)[2]
            if transport is not None:
                transport.consent_due(now_ms)
            elif self._blank:
                self._blank -= 1


@dataclass
class TransportStats:
    """Slow-path counters; the media counters come from the Engine snapshot."""

    stun_requests: int = 0
    stun_rejected: int = 0
    dtls_records_in: int = 0
    dtls_records_dropped: int = 0
    sctp_messages_in: int = 0
    sctp_messages_out: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class WebRtcTransport:
    """One peer connection's transport inside a MediaRouter."""

    def __init__(
        self,
        *,
        transport_id: str,
        router_id: str,
        handle: int,
        engine: Any,
        certificate: DtlsCertificate,
        ice_ufrag: str,
        ice_pwd: str,
        notify: Notify,
        on_data_message: Callable[[WebRtcTransport, str, bytes | str], None],
        consent: ConsentSchedule | None = None,
    ) -> None:
        self.id = transport_id
        self.router_id = router_id
        self.handle = handle
        self._engine = engine
        self._certificate = certificate
        self._notify = notify
        self._on_data_message = on_data_message
        self.ice = IceLite(ice_ufrag, ice_pwd)
        self._consent = consent  # None: the owner calls check_consent itself
        self._consent_entry: list[Any] | None = None
        self.dtls: DtlsEndpoint | None = None
        self.sctp: SctpAssociation | None = None
        self._sctp_remote_port: int | None = None
        self._sctp_max_message_size = 262144
        self.tuple: Addr | None = None
        self.tcp_peer: Addr | None = None  # the client's address when the selected tuple is an ICE-TCP relay
        self.local = ""  # the worker's address the selected tuple's checks came to ("" = the socket's own)
        self.ice_state = "new"
        self.dtls_state = "new"
        self.sctp_state = "new"
        self.closed = False
        self.stats = TransportStats()
        self._early_dtls: list[bytes] = []
        self._dtls_timer: asyncio.TimerHandle | None = None
        self._sctp_task: asyncio.Task[None] | None = None
        self._wanted_channels: dict[str, tuple[bool, int | None]] = {}
        self.twcc_id = 0  # the peer's transport-cc extension id, 0 until a producer negotiates it
        self.send_twcc_id = 0  # the transport-cc id of what the worker sends the peer, 0 = no send-side estimate
        self.bwe_bps = 0  # the Engine's last reported send-side estimate toward the peer (EV_BWE_CHANGED), 0 = none
        self.producer_ids: set[str] = set()  # kept by MediaService, so that close and stats need no scan
        self.consumer_ids: set[str] = set()
        # The data producers on this transport and the data consumers sending on it, in creation order (dicts used as
        # ordered sets), and the ICE ufrags that name it; kept by MediaService, so that a close needs no scan.
        self.data_producer_ids: dict[str, None] = {}
        self.data_consumer_ids: dict[str, None] = {}
        self.ufrags: list[str] = []
        engine.add_transport(handle)

    # ---- ICE ---------------------------------------------------------------------------------------------
    def handle_stun(self, data: bytes, addr: Addr, tcp_peer: Addr | None = None, local: str = "") -> None:
        """One STUN datagram from ``addr``; ``tcp_peer`` is the client's address when ``addr`` is the relay tuple
        of an ICE-TCP connection (router/ice_tcp.py): the response maps that address, the Engine binds ``addr``.
        ``local`` is the worker's address the datagram came to (IP_PKTINFO, "" when the socket is bound to one
        address): the response, and once selected everything sent on the tuple, leaves from it."""
        self.stats.stun_requests += 1
        result = self.ice.handle(data, addr, int(time.monotonic() * 1000), mapped=tcp_peer)
        if result.response is None:
            self.stats.stun_rejected += 1
            return
        self._engine.send(addr[0], addr[1], result.response, local)
        if result.select and (addr != self.tuple or local != self.local):
            self.tuple = addr
            self.local = local
            self.tcp_peer = tcp_peer
            self._engine.bind_tuple(self.handle, addr[0], addr[1], local)
            shown = tcp_peer or addr
            self._notify(Event.TRANSPORT_TUPLE_CHANGED, self.id,
                         TupleChanged(host=shown[0], port=shown[1], protocol="tcp" if tcp_peer else "udp"))
            if self.ice_state != "connected":
                self._set_ice_state("connected")
            if self.dtls is not None and self.dtls.state == "new" and self.dtls.role == "client":
                self.dtls.start()
                self._arm_dtls_timer()

    def _set_ice_state(self, state: str) -> None:
        self.ice_state = state
        self._notify(Event.TRANSPORT_ICE_STATE, self.id, TransportState(state=state))
        if state == "connected":
            self._schedule_consent(int(time.monotonic() * 1000))

    def check_consent(self, now_ms: int) -> None:
        if self.ice_state == "connected" and self.ice.consent_expired(now_ms):
            self._set_ice_state("disconnected")

    def consent_due(self, now_ms: int) -> None:
        """Called by the :class:`ConsentSchedule` when this transport's entry comes up."""
        self._consent_entry = None
        self.check_consent(now_ms)
        self._schedule_consent(now_ms)

    def _schedule_consent(self, now_ms: int) -> None:
        """Keep one schedule entry while connected, due when consent could expire at the earliest."""
        if self._consent is None:
            return
        if self._consent_entry is not None:
            self._consent.cancel(self._consent_entry)
            self._consent_entry = None
        if self.ice_state != "connected" or self.closed:
            return
        due = self.ice.consent_deadline_ms()
        if due is None:
            # Nothing selected (a tuple was removed): consent cannot expire before a check selects one again, and
            # that check moves the deadline to a full timeout after it, so a timeout from now is not too late.
            due = now_ms + CONSENT_TIMEOUT_MS
        self._consent_entry = self._consent.add(self, due)

    def restart_ice(self, ufrag: str, pwd: str) -> None:
        self.ice.restart(ufrag, pwd)

    # ---- DTLS --------------------------------------------------------------------------------------------
    def connect(
        self,
        *,
        role: str,
        fingerprints: list[tuple[str, str]],
        sctp_port: int | None,
        max_message_size: int,
    ) -> None:
        """Start DTLS toward the peer. ``role`` is our DTLS role ("client" or "server")."""
        if self.dtls is not None:
            raise InvalidState("transport already connected")
        self.dtls = DtlsEndpoint(self._certificate, role, fingerprints, self._send_dtls)
        self.dtls.on_connected = self._on_dtls_connected
        self.dtls.on_state_change = self._on_dtls_state
        self.dtls.on_application_data = self._on_dtls_application_data
        self._sctp_remote_port = sctp_port
        self._sctp_max_message_size = max_message_size
        if role == "client" and self.tuple is not None:
            self.dtls.start()
        early, self._early_dtls = self._early_dtls, []
        for record in early:
            self.dtls.handle(record)
        self._arm_dtls_timer()

    def handle_dtls(self, data: bytes) -> None:
        self.stats.dtls_records_in += 1
        if self.dtls is None:
            if len(self._early_dtls) < MAX_EARLY_DTLS_RECORDS:
                self._early_dtls.append(data)
            else:
                self.stats.dtls_records_dropped += 1
            return
        self.dtls.handle(data)
        self._arm_dtls_timer()

    def _send_dtls(self, data: bytes) -> None:
        if self.tuple is not None and not self.closed:
            self._engine.send(self.tuple[0], self.tuple[1], data, self.local)

    def _arm_dtls_timer(self) -> None:
        if self.dtls is None or self.closed:
            return
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
            self._dtls_timer = None
        delay = self.dtls.next_timeout_s()
        if delay is not None:
            self._dtls_timer = asyncio.get_running_loop().call_later(max(delay, 0.01), self._on_dtls_timer)

    def _on_dtls_timer(self) -> None:
        self._dtls_timer = None
        if self.dtls is not None and not self.closed:
            self.dtls.handle_timeout()
            self._arm_dtls_timer()

    def _on_dtls_state(self, state: str) -> None:
        self.dtls_state = state
        self._notify(Event.TRANSPORT_DTLS_STATE, self.id, TransportState(state=state))

    def _on_dtls_connected(self) -> None:
        assert self.dtls is not None
        local_key, remote_key = self.dtls.srtp_keys()
        assert self.dtls.srtp_profile is not None
        self._engine.set_srtp(self.handle, self.dtls.srtp_profile, local_key, remote_key)
        if self._sctp_remote_port is not None:
            self._start_sctp()

    def _on_dtls_application_data(self, data: bytes) -> None:
        if self.sctp is not None:
            self.sctp.receive(data)

    # ---- SCTP --------------------------------------------------------------------------------------------
    def _start_sctp(self) -> None:
        from router.sctp import SctpAssociation

        assert self.dtls is not None and self._sctp_remote_port is not None
        self.sctp = SctpAssociation(self.dtls)
        self.sctp.on_message = self._on_sctp_message
        self.sctp.on_state_change = self._on_sctp_state
        for label, (ordered, max_retransmits) in self._wanted_channels.items():
            self.sctp.create_channel(label, ordered=ordered, max_retransmits=max_retransmits)
        self._sctp_task = asyncio.get_running_loop().create_task(
            self.sctp.start(self._sctp_remote_port, self._sctp_max_message_size)
        )

    def _on_sctp_state(self, state: str) -> None:
        self.sctp_state = state
        self._notify(Event.TRANSPORT_SCTP_STATE, self.id, TransportState(state=state))

    def _on_sctp_message(self, label: str, data: bytes | str) -> None:
        self.stats.sctp_messages_in += 1
        self._on_data_message(self, label, data)

    def send_data(self, label: str, data: bytes | str) -> bool:
        """Send one message on the channel with this label (opened by us or the peer). False if none is open."""
        if self.sctp is None:
            return False
        sent = self.sctp.send(label, data)
        if sent:
            self.stats.sctp_messages_out += 1
        return sent

    def want_data_channel(
        self, label: str, *, ordered: bool = True, max_retransmits: int | None = None
    ) -> None:
        """Open a server-created channel now if SCTP is up, else as soon as it is."""
        if label in self._wanted_channels:
            return
        self._wanted_channels[label] = (ordered, max_retransmits)
        if self.sctp is not None:
            self.sctp.create_channel(label, ordered=ordered, max_retransmits=max_retransmits)

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._consent_entry is not None:
            self._consent.cancel(self._consent_entry)
            self._consent_entry = None
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
        if self.sctp is not None:
            self.sctp.close()
        if self._sctp_task is not None:
            self._sctp_task.cancel()
        if self.dtls is not None:
            self.dtls.close()
        self._engine.remove_transport(self.handle)

    def dump(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "router_id": self.router_id,
            "ice_state": self.ice_state,
            "dtls_state": self.dtls_state,
            "sctp_state": self.sctp_state,
            "tuple": list(self.tuple) if self.tuple else None,
            "protocol": "tcp" if self.tcp_peer else "udp",
            "remote": list(self.tcp_peer or self.tuple) if self.tuple else None,
            "local": self.local,
        }


class InvalidState(Exception):
    """A request that does not fit the transport's current state."""
