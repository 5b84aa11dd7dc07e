"""The media bodies of the control <-> worker channel, and the tables that pair every name with its bodies.

One frozen :class:`router.protocol.Body` per request, reply and notification of the ``media_router.*``,
``transport.*``, ``producer.*``, ``consumer.*`` and ``data_*`` methods (the ``worker.*`` bodies are in
router/protocol.py). :data:`REQUESTS` says which request and reply body goes with each :class:`Method` and
:data:`EVENTS` which body goes with each :class:`Event`: control's ``MediaClient`` sends ``Body(...).to_wire()``
and parses the reply with the reply body's ``from_wire``; the worker's handlers receive the request body already
parsed (router/channel.py ``Channel.handle``). docs/SEAMS.md §3 lists them.

Maps keyed by numbers travel as arrays of pairs (msgpack maps have string keys here); fixed-size tuples travel as
arrays. Numbers only: SDP, tokens and room names never reach a worker.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from router.protocol import (
    Body,
    Empty,
    Event,
    Method,
    WorkerDump,
    WorkerHeartbeat,
    WorkerRunning,
)

ID_MAP_BYTES = 256  # one byte per RTP header extension id a peer may use (RFC 8285 two-byte form: 1-255)
DEFAULT_MAX_MESSAGE_SIZE = 262144  # RFC 8841 default a=max-message-size when the peer names none

Fingerprint = tuple[str, str]  # (algorithm, "AB:CD:..."), as in an SDP a=fingerprint line (RFC 8122)

# ------------------------------------------------------------------------------------------ media_router.*


@dataclass(frozen=True, slots=True)
class CreateWebRtcTransportRequest(Body):
    """``media_router.create_webrtc_transport`` (target: the router id). Without credentials the worker picks
    them; with them (a resumed session keeps its ICE credentials) it uses these. With ``data_producer`` and
    ``data_channels`` the new transport gets them at once."""

    transport_id: str
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    # Set up in the same request, in this order, as ``transport.produce_data`` and ``transport.open_data_channel``
    # would right after it (a participant's join: one round trip instead of three).
    data_producer: ProduceDataRequest | None = None
    data_channels: list[OpenDataChannelRequest] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class IceCandidate(Body):
    """One ICE-lite host candidate of the worker: an announced address and its shared UDP port, or its passive
    ICE-TCP port (RFC 6544)."""

    ip: str
    port: int
    protocol: Literal["udp", "tcp"] = "udp"


@dataclass(frozen=True, slots=True)
class CreateWebRtcTransportReply(Body):
    """What control writes into its SDP for this transport."""

    ice_ufrag: str
    ice_pwd: str
    fingerprints: list[Fingerprint]
    candidate: IceCandidate  # the primary one: UDP on the first announced address
    candidates: list[IceCandidate] = field(default_factory=list)  # every candidate, the primary one first


# --------------------------------------------------------------------------------------------- transport.*


@dataclass(frozen=True, slots=True)
class ConnectRequest(Body):
    """``transport.connect``: ``role`` is the worker's DTLS role ("server" when the peer is the DTLS client);
    ``sctp_port`` is the peer's SCTP port (None: no data channels); ``max_message_size`` the peer's."""

    role: Literal["client", "server"]
    fingerprints: list[Fingerprint]
    sctp_port: int | None = None
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE


@dataclass(frozen=True, slots=True)
class IceParameters(Body):
    """``transport.restart_ice`` request and reply: the new local ICE credentials."""

    ice_ufrag: str
    ice_pwd: str


@dataclass(frozen=True, slots=True)
class GetStatsReply(Body):
    """``transport.get_stats``: slow-path state, the Engine's counters for the transport and for each of its
    producers and consumers (by id), and the slow-path counters."""

    transport: dict[str, Any]
    media: dict[str, Any]
    producers: dict[str, dict[str, Any]]
    consumers: dict[str, dict[str, Any]]
    slow_path: dict[str, int]


@dataclass(frozen=True, slots=True)
class RtpExtensions(Body):
    """A producer's negotiated RTP header extension ids (0 = not negotiated) and the peer-id -> router-id map.

    ``id_map[i]`` is the router-wide id for the peer's id ``i``; ``twcc_id`` is transport-wide (transport-cc).
    """

    id_map: bytes
    mid_id: int = 0
    rid_id: int = 0
    rrid_id: int = 0
    audio_level_id: int = 0
    twcc_id: int = 0

    def problem(self) -> tuple[str, str] | None:
        if len(self.id_map) != ID_MAP_BYTES:
            return "id_map", f"must be {ID_MAP_BYTES} bytes, not {len(self.id_map)}"
        return None


Encoding = tuple[str, int, int]  # (rid or "", ssrc or 0 = learn it, rtx ssrc or 0); index = spatial layer
Codec = tuple[int, str]  # (payload type, codec name as in SDP: "VP8", "opus")
PayloadTypePair = tuple[int, int]  # (rtx pt, apt) in rtx_apt, (pt in, pt out) in pt_map
# What a producer's track is (LiveKit's TrackSource, lower-case): the stream allocator keeps a screen share's
# resolution and lowers its frame rate first (router/temporal.py).
TrackSource = Literal["unknown", "camera", "microphone", "screen_share", "screen_share_audio"]


@dataclass(frozen=True, slots=True)
class ProduceRequest(Body):
    """``transport.produce``: one inbound track of the transport's peer; ``source`` is what the track is."""

    producer_id: str
    kind: Literal["audio", "video"]
    encodings: list[Encoding]
    payload_types: list[int]
    clock_rate: int
    extensions: RtpExtensions
    mid: str = ""
    codecs: list[Codec] = field(default_factory=list)
    rtx_apt: list[PayloadTypePair] = field(default_factory=list)
    source: TrackSource = "unknown"

    def problem(self) -> tuple[str, str] | None:
        if not self.encodings:
            return "encodings", "must hold at least one encoding"
        return None


@dataclass(frozen=True, slots=True)
class ConsumeRequest(Body):
    """``transport.consume``: forward a producer of the same worker to this transport under ``out_ssrc``.

    ``spatial`` is the preferred layer (-1 = the highest available); a ``paused`` consumer forwards nothing
    until ``consumer.resume``. With ``rtx_ssrc`` (non-zero) and ``rtx_pt_map`` (subscriber media pt -> its RTX
    pt) retransmissions go out as RTX (RFC 4588) on ``rtx_ssrc``; without, on ``out_ssrc``. ``twcc_id`` is the
    transport-cc extension id the transport's peer was offered for what it receives (0 = none): the worker then
    writes a transport-wide sequence number into every packet toward the transport and estimates its bandwidth from
    the peer's feedback (transport-wide: the first non-zero id sticks). ``playout_delay_id`` is the playout-delay
    extension id the peer was offered (0 = none): for a video consumer the worker then raises the peer's playout
    delay while its link needs repairs (router/playout.py).
    """

    consumer_id: str
    producer_id: str
    out_ssrc: int
    pt_map: list[PayloadTypePair]
    nack: bool = True
    spatial: int = -1
    paused: bool = False
    rtx_ssrc: int = 0
    rtx_pt_map: list[PayloadTypePair] = field(default_factory=list)
    twcc_id: int = 0
    playout_delay_id: int = 0

    def problem(self) -> tuple[str, str] | None:
        if not 0 <= self.twcc_id <= 255:
            return "twcc_id", f"must be in 0..255, not {self.twcc_id}"
        if not 0 <= self.playout_delay_id <= 255:
            return "playout_delay_id", f"must be in 0..255, not {self.playout_delay_id}"
        return None


@dataclass(frozen=True, slots=True)
class ProduceDataRequest(Body):
    """``transport.produce_data``: messages on ``label`` ("*" = any) go to this DataProducer's consumers and,
    with ``relay_to_control``, to control as ``data_producer.message``."""

    data_producer_id: str
    label: str
    relay_to_control: bool = False


@dataclass(frozen=True, slots=True)
class ConsumeDataRequest(Body):
    """``transport.consume_data``: a server-opened channel relaying a DataProducer's messages; ``label`` defaults
    to the DataProducer's."""

    data_consumer_id: str
    data_producer_id: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class OpenDataChannelRequest(Body):
    """``transport.open_data_channel``: a server-created channel, opened as soon as SCTP is up."""

    label: str
    ordered: bool = True
    max_retransmits: int | None = None


@dataclass(frozen=True, slots=True)
class SendDataRequest(Body):
    """``transport.send_data``: one message on the open channel with this label."""

    label: str
    data: bytes | str


@dataclass(frozen=True, slots=True)
class SendDataReply(Body):
    """False when no channel with that label is open."""

    sent: bool


# ---------------------------------------------------------------------------------------------- consumer.*


@dataclass(frozen=True, slots=True)
class SetPreferredLayersRequest(Body):
    """``consumer.set_preferred_layers``: switch to this spatial layer on its next key frame."""

    spatial: int


# ------------------------------------------------------------------------------------------- notifications


@dataclass(frozen=True, slots=True)
class TransportState(Body):
    """``transport.ice_state``, ``transport.dtls_state`` and ``transport.sctp_state``."""

    state: str


@dataclass(frozen=True, slots=True)
class TupleChanged(Body):
    """``transport.tuple_changed``: the peer address a connectivity check selected, and over which protocol
    ("tcp": an ICE-TCP connection, whose client address this is)."""

    host: str
    port: int
    protocol: Literal["udp", "tcp"] = "udp"


@dataclass(frozen=True, slots=True)
class TransportScores(Body):
    """``transport.scores``: the connection-quality score (0-100, router/scores.py) of every producer (uplink)
    and consumer (downlink) on the transport, sent every interval in which one of them or the set changed."""

    producers: list[tuple[str, int]] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)

    def problem(self) -> tuple[str, str] | None:
        for name, pairs in (("producers", self.producers), ("consumers", self.consumers)):
            if any(not 0 <= score <= 100 for _, score in pairs):
                return name, "scores must be 0-100"
        return None


@dataclass(frozen=True, slots=True)
class StreamAdded(Body):
    """``producer.stream_added``: the first packet of a layer arrived (its SSRC learned or confirmed)."""

    layer: int
    ssrc: int


@dataclass(frozen=True, slots=True)
class LayersChanged(Body):
    """``consumer.layers_changed``: the consumer now forwards this spatial layer."""

    spatial: int


@dataclass(frozen=True, slots=True)
class StreamState(Body):
    """``consumer.stream_state``: the stream allocator (router/allocator.py) paused the consumer because not even
    its lowest layer fits the subscriber's bandwidth estimate ("paused"), or resumed it ("active")."""

    state: Literal["active", "paused"]


@dataclass(frozen=True, slots=True)
class DataMessage(Body):
    """``data_producer.message``: a message of a DataProducer made with ``relay_to_control``."""

    label: str
    data: bytes | str


# ------------------------------------------------------------------------------------ pipes between workers


PipeSsrcs = tuple[int, int]  # (media ssrc, rtx ssrc or 0) of one encoding on a pipe
# The SRTP protection profiles a pipe between hosts can use, by their DTLS-SRTP names (RFC 5764, RFC 7714), and
# the length of their master key || master salt.
PipeSrtpProfile = Literal["SRTP_AES128_CM_HMAC_SHA1_80", "SRTP_AEAD_AES_128_GCM"]
PIPE_SRTP_KEY_BYTES: dict[str, int] = {"SRTP_AES128_CM_HMAC_SHA1_80": 30, "SRTP_AEAD_AES_128_GCM": 28}


@dataclass(frozen=True, slots=True)
class PipeSrtp(Body):
    """The SRTP keys of a pipe that leaves the host (docs/FORWARDING.md, Pipes between hosts): this worker protects
    what it sends with ``local_key`` and checks what it receives with ``remote_key`` (each the master key || master
    salt of ``profile``). The side that opens the pipe makes them with :meth:`generate`, sends them to its own worker
    and :meth:`reversed` to the other end's; they travel in clear inside the control channels, so those must be
    trusted (a private network or TLS between the nodes)."""

    profile: PipeSrtpProfile
    local_key: bytes
    remote_key: bytes

    def problem(self) -> tuple[str, str] | None:
        size = PIPE_SRTP_KEY_BYTES[self.profile]
        for name in ("local_key", "remote_key"):
            if len(getattr(self, name)) != size:
                return name, f"must be {size} bytes for {self.profile}, not {len(getattr(self, name))}"
        if self.local_key == self.remote_key:
            return "remote_key", "must differ from local_key (one key per direction)"
        return None

    @classmethod
    def generate(cls, profile: PipeSrtpProfile = "SRTP_AES128_CM_HMAC_SHA1_80") -> PipeSrtp:
        """Fresh random keys, one per direction."""
        size = PIPE_SRTP_KEY_BYTES[profile]
        return cls(profile=profile, local_key=os.urandom(size), remote_key=os.urandom(size))

    def reversed(self) -> PipeSrtp:
        """The same keys as the other end of the pipe holds them."""
        return PipeSrtp(profile=self.profile, local_key=self.remote_key, remote_key=self.local_key)


def _address_problem(body: Any) -> tuple[str, str] | None:
    """An IPv4 ``peer_ip``/``local_ip`` or "" (the Engine binds IPv4 tuples only)."""
    for name in ("peer_ip", "local_ip"):
        value = getattr(body, name)
        if value:
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                return name, f"must be an IPv4 address or empty, not {value!r}"
    return None


@dataclass(frozen=True, slots=True)
class PipeRequest(Body):
    """``producer.pipe`` (target: the producer on the worker that receives it from its publisher): send every
    encoding of the producer, decrypted, to the worker whose UDP port is ``peer_port`` on this host, encoding ``i``
    under ``ssrcs[i]`` (docs/FORWARDING.md, Pipe transports). ``pipe_id`` names this pipe for ``producer.unpipe``;
    ``payload_types`` and ``rtx_apt`` are the producer's (the pipe keeps them).

    Between hosts (docs/FORWARDING.md, Pipes between hosts): ``peer_ip`` is the other worker's address ("" = this
    host's, the worker's own announced address), ``local_ip`` the address the pipe's packets leave from, which the
    other end names as its ``peer_ip`` ("" = the kernel's choice), and ``srtp`` the keys (required when ``peer_ip``
    is not this host's; None = plain RTP, for pipes on one host)."""

    pipe_id: str
    peer_port: int
    ssrcs: list[PipeSsrcs]
    payload_types: list[int]
    rtx_apt: list[PayloadTypePair] = field(default_factory=list)
    peer_ip: str = ""
    local_ip: str = ""
    srtp: PipeSrtp | None = None

    def problem(self) -> tuple[str, str] | None:
        if not self.ssrcs:
            return "ssrcs", "must hold at least one encoding"
        if not 1 <= self.peer_port <= 65535:
            return "peer_port", f"must be a UDP port, not {self.peer_port}"
        return _address_problem(self)


@dataclass(frozen=True, slots=True)
class UnpipeRequest(Body):
    """``producer.unpipe``: stop the pipe ``pipe_id`` of the target producer (nothing when it is not open)."""

    pipe_id: str


@dataclass(frozen=True, slots=True)
class PipeProduceRequest(Body):
    """``media_router.produce_pipe`` (target: the router id): the receiving end of a pipe, a producer ``producer_id``
    in this router fed by the worker whose UDP port is ``peer_port``, with the pipe's SSRCs as its ``encodings``
    (rid "", ssrc, rtx ssrc) and the original producer's payload types, codecs, RTX pairs and clock rate. Its
    consumers are made with ``transport.consume`` as for any producer; ``producer.close`` ends it. ``peer_ip``,
    ``local_ip`` and ``srtp`` as in :class:`PipeRequest`, seen from this end (``srtp`` is the source's, reversed).
    ``source`` is the original producer's (:class:`ProduceRequest`)."""

    producer_id: str
    peer_port: int
    kind: Literal["audio", "video"]
    encodings: list[Encoding]
    payload_types: list[int]
    clock_rate: int
    codecs: list[Codec] = field(default_factory=list)
    rtx_apt: list[PayloadTypePair] = field(default_factory=list)
    peer_ip: str = ""
    local_ip: str = ""
    srtp: PipeSrtp | None = None
    source: TrackSource = "unknown"

    def problem(self) -> tuple[str, str] | None:
        if not self.encodings or any(ssrc == 0 for _, ssrc, _ in self.encodings):
            return "encodings", "must hold at least one encoding, each with its ssrc"
        if not 1 <= self.peer_port <= 65535:
            return "peer_port", f"must be a UDP port, not {self.peer_port}"
        return _address_problem(self)


# ------------------------------------------------------------------------------------------------- tables

REQUESTS: dict[Method, tuple[type[Body], type[Body]]] = {
    Method.WORKER_DUMP: (Empty, WorkerDump),
    Method.WORKER_CLOSE: (Empty, Empty),
    Method.MEDIA_ROUTER_CREATE: (Empty, Empty),
    Method.MEDIA_ROUTER_CLOSE: (Empty, Empty),
    Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT: (CreateWebRtcTransportRequest, CreateWebRtcTransportReply),
    Method.MEDIA_ROUTER_PRODUCE_PIPE: (PipeProduceRequest, Empty),
    Method.TRANSPORT_CONNECT: (ConnectRequest, Empty),
    Method.TRANSPORT_RESTART_ICE: (IceParameters, IceParameters),
    Method.TRANSPORT_CLOSE: (Empty, Empty),
    Method.TRANSPORT_GET_STATS: (Empty, GetStatsReply),
    Method.TRANSPORT_PRODUCE: (ProduceRequest, Empty),
    Method.TRANSPORT_CONSUME: (ConsumeRequest, Empty),
    Method.TRANSPORT_PRODUCE_DATA: (ProduceDataRequest, Empty),
    Method.TRANSPORT_CONSUME_DATA: (ConsumeDataRequest, Empty),
    Method.TRANSPORT_OPEN_DATA_CHANNEL: (OpenDataChannelRequest, Empty),
    Method.TRANSPORT_SEND_DATA: (SendDataRequest, SendDataReply),
    Method.PRODUCER_PAUSE: (Empty, Empty),
    Method.PRODUCER_RESUME: (Empty, Empty),
    Method.PRODUCER_CLOSE: (Empty, Empty),
    Method.PRODUCER_PIPE: (PipeRequest, Empty),
    Method.PRODUCER_UNPIPE: (UnpipeRequest, Empty),
    Method.CONSUMER_PAUSE: (Empty, Empty),
    Method.CONSUMER_RESUME: (Empty, Empty),
    Method.CONSUMER_CLOSE: (Empty, Empty),
    Method.CONSUMER_SET_PREFERRED_LAYERS: (SetPreferredLayersRequest, Empty),
    Method.CONSUMER_REQUEST_KEY_FRAME: (Empty, Empty),
    Method.DATA_PRODUCER_CLOSE: (Empty, Empty),
    Method.DATA_CONSUMER_CLOSE: (Empty, Empty),
}
"""Request body and reply body of every method."""

EVENTS: dict[Event, type[Body]] = {
    Event.WORKER_RUNNING: WorkerRunning,
    Event.WORKER_HEARTBEAT: WorkerHeartbeat,
    Event.TRANSPORT_ICE_STATE: TransportState,
    Event.TRANSPORT_DTLS_STATE: TransportState,
    Event.TRANSPORT_SCTP_STATE: TransportState,
    Event.TRANSPORT_TUPLE_CHANGED: TupleChanged,
    Event.TRANSPORT_SCORES: TransportScores,
    Event.PRODUCER_STREAM_ADDED: StreamAdded,
    Event.CONSUMER_LAYERS_CHANGED: LayersChanged,
    Event.CONSUMER_PRODUCER_CLOSED: Empty,
    Event.CONSUMER_STREAM_STATE: StreamState,
    Event.DATA_PRODUCER_MESSAGE: DataMessage,
}
"""Body of every notification."""
