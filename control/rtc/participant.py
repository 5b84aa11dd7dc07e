"""Participant: one LiveKit client's session inside a Room (LiveKit's v0 dual peer-connection model).

Owns the client's two WebRTC transports on the room's worker (the publisher PC, offered by the client, and the
subscriber PC, offered by the server; the publisher transport of a participant that may subscribe but not publish is
created only when its first publisher offer arrives, :meth:`Participant.publisher_at_join`), its publications
(AddTrackRequest -> TrackInfo, bound to an offer m-line by the msid track id, RFC 8830), its subscriptions (one
consumer and one subscriber m-line per track; the consumer stays paused until the client has answered the offer that
carries its m-line), the serialised subscriber offer/answer rounds (JSEP, RFC 8829: one offer outstanding at a time)
and the signal sink its messages go to. Room-wide effects (broadcasts, auto-subscribe, data forwarding) are the
Room's (``control.rtc.rooms``): a participant knows its room only as a :class:`ParticipantListener`, and the room
changes a participant only through its methods.

SDP is written and read by ``control.rtc.negotiation`` through the small :class:`Negotiator` seam below, so that
the LiveKit state machine can be tested without SDP and the SDP layer without LiveKit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from livekit.protocol import models, rtc

from control.auth import Claims
from control.rtc import lk_messages as lk
from control.rtc import negotiation
from control.rtc.frames import Frame
from control.rtc.media import DataChannelSpec, DataProducerSpec
from control.rtc.negotiation import SubscribedTrack, TrackPlan, TransportParams

log = logging.getLogger("control.rtc.participant")


class State:
    """``ParticipantInfo.State`` values as plain ints: an attribute of the protobuf enum wrapper is a Python
    ``__getattr__`` call each time, and a broadcast compares every recipient's state."""

    JOINING: int = models.ParticipantInfo.State.JOINING
    JOINED: int = models.ParticipantInfo.State.JOINED
    ACTIVE: int = models.ParticipantInfo.State.ACTIVE
    DISCONNECTED: int = models.ParticipantInfo.State.DISCONNECTED


RELIABLE = "_reliable"
LOSSY = "_lossy"
# The subscriber PC's server-created channels (LiveKit's names): reliable, and lossy (unordered, no retransmits).
SERVER_CHANNELS = (DataChannelSpec(RELIABLE, ordered=True), DataChannelSpec(LOSSY, ordered=False, max_retransmits=0))
DATA_LABELS = (RELIABLE, LOSSY)
RID_RANK = {"q": 0, "h": 1, "f": 2}  # LiveKit's simulcast rids, low to high (videoQualityForRid)
_MID = re.compile(r"^a=mid:(\S+)", re.MULTILINE)
_ICE_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)


# --------------------------------------------------------------------------------------------- seams


# What may reach a participant before its JoinResponse: the JoinResponse itself and a refusal.
_BEFORE_JOIN = frozenset({"join", "leave"})

class SignalSink(Protocol):
    """Where a participant's SignalResponses go (the WebSocket writer, or a list in tests). A sink that also has
    ``send_frame(frame)`` (``control.service.outbox.WebSocketSink``) gets broadcasts as :class:`Frame`s, encoded
    once for everyone and coalesced by key; any other sink gets ``frame.message``."""

    def send(self, message: rtc.SignalResponse) -> None: ...

    def close(self) -> None: ...


class MediaApi(Protocol):
    """The part of ``control.rtc.media.MediaClient`` rooms and participants use."""

    async def create_router(self, router_id: str) -> None: ...
    async def close_router(self, router_id: str) -> None: ...
    async def create_transport(
        self, router_id: str, transport_id: str, *, data_producer: DataProducerSpec | None = None,
        data_channels: Sequence[DataChannelSpec] = (),
    ) -> TransportParams: ...
    async def connect(
        self, transport_id: str, *, role: str, fingerprints: list[tuple[str, str]],
        sctp_port: int | None = None, max_message_size: int = 262144,
    ) -> None: ...
    async def close_transport(self, transport_id: str) -> None: ...
    async def restart_ice(self, transport_id: str, ice_ufrag: str, ice_pwd: str) -> None: ...
    async def get_stats(self, transport_id: str) -> dict[str, Any]: ...
    async def produce(self, transport_id: str, producer_id: str, track: TrackPlan) -> None: ...
    async def consume(
        self, transport_id: str, consumer_id: str, producer_id: str, *, out_ssrc: int, pt_map: dict[int, int],
        nack: bool = True, spatial: int = -1, paused: bool = False, rtx_ssrc: int = 0,
        rtx_pt_map: dict[int, int] | None = None,
    ) -> None: ...
    async def close_producer(self, producer_id: str) -> None: ...
    async def pause_producer(self, producer_id: str) -> None: ...
    async def resume_producer(self, producer_id: str) -> None: ...
    async def close_consumer(self, consumer_id: str) -> None: ...
    async def pause_consumer(self, consumer_id: str) -> None: ...
    async def resume_consumer(self, consumer_id: str) -> None: ...
    async def set_preferred_layers(self, consumer_id: str, spatial: int) -> None: ...
    async def produce_data(
        self, transport_id: str, data_producer_id: str, label: str, *, relay_to_control: bool = False
    ) -> None: ...
    async def open_data_channel(
        self, transport_id: str, label: str, *, ordered: bool = True, max_retransmits: int | None = None
    ) -> None: ...
    async def send_data(self, transport_id: str, label: str, data: bytes | str) -> bool: ...


@dataclass(frozen=True)
class RemoteSide:
    """What the client's SDP says about its end of one peer connection."""

    fingerprints: list[tuple[str, str]]
    dtls_role: str  # the worker's DTLS role: "server" when the client is the DTLS client (a=setup:active)
    sctp_port: int | None
    max_message_size: int = 262144
    rtx_mids: frozenset[str] | None = None  # subscriber answers: the m-lines that kept RTX (None: not known)


@dataclass(frozen=True)
class OfferedMedia:
    """One active (sending) media m-line of a publisher offer, as negotiated."""

    mid: str
    kind: str  # "audio" | "video"
    track_id: str  # the msid track id = the AddTrackRequest cid
    mime_type: str  # the chosen codec, e.g. "video/VP8"
    plan: TrackPlan  # handed to MediaClient.produce as is


@dataclass(frozen=True)
class PublisherAnswer:
    sdp: str
    remote: RemoteSide
    media: list[OfferedMedia]


@dataclass(frozen=True)
class SubscribedSpec:
    """One media m-line of a subscriber offer."""

    mid: str
    kind: str
    plan: TrackPlan  # the publisher's
    out_ssrc: int
    stream_id: str  # "PA_x|TR_y" (LiveKit's PackStreamID)
    track_id: str  # "TR_y"
    cname: str
    rtx_ssrc: int = 0  # video: the SSRC retransmissions use when the m-line offers RTX (RFC 4588)


class Negotiator(Protocol):
    """SDP for LiveKit's two peer connections (implemented over ``control.rtc.negotiation`` in control.rtc.rooms)."""

    def answer(self, offer_sdp: str, local: TransportParams) -> PublisherAnswer: ...
    def offer(
        self, local: TransportParams, tracks: list[SubscribedSpec], *, session_version: int, previous: str | None
    ) -> str: ...
    def parse_answer(self, answer_sdp: str) -> RemoteSide: ...
    def pt_map(self, spec: SubscribedSpec) -> dict[int, int]: ...
    def rtx_pt_map(self, spec: SubscribedSpec) -> dict[int, int]: ...


class ParticipantListener(Protocol):
    """What a participant tells or asks its room (``control.rtc.rooms.Room`` implements it), as LiveKit's
    ``ParticipantListener`` and mediasoup's ``Transport::Listener``: the participant never sees the Room itself."""

    def new_ssrc(self) -> int:
        """An SSRC for a new subscriber m-line, unique in the room."""
        ...

    def track_layers(self, track_sid: str) -> list[models.VideoLayer]:
        """The simulcast layers (low to high) of a track published in the room; [] when it is gone."""
        ...

    def on_consumer_created(self, sub: Subscription) -> None:
        """The worker now has the consumer of ``sub`` (its publisher may hear TrackSubscribed)."""
        ...

    def on_subscription_changed(self, subscriber_sid: str, sub: Subscription) -> None:
        """What ``subscriber_sid`` wants of ``sub``'s track changed: its consumer was created, its settings
        (``disabled``, ``spatial``) changed or it was removed (dynacast, ``control.rtc.dynacast``)."""
        ...

    async def before_consume(self, subscriber: Participant, track_sid: str) -> None:
        """The track's producer must exist on ``subscriber``'s worker (a pipe, control/rtc/spread.py)."""
        ...

    def on_consumer_closed(self, subscriber: Participant, track_sid: str) -> None:
        """``subscriber``'s consumer of the track is gone (its pipe may close)."""
        ...

    def on_published(self, publisher: Participant) -> None:
        """A track of ``publisher`` is published now (its producer exists on the worker)."""
        ...

    def on_info_changed(self, p: Participant) -> None:
        """Something ``p``'s :meth:`Participant.info` shows changed (its entry in JoinResponses too)."""
        ...


def new_ssrc(taken: set[int]) -> int:
    """A random non-zero SSRC not in ``taken`` (RFC 3550 §8.1), added to it."""
    while True:
        ssrc = secrets.randbits(32)
        if ssrc and ssrc not in taken:
            taken.add(ssrc)
            return ssrc


class NullParticipantListener:
    """A :class:`ParticipantListener` without a room (tests): fresh SSRCs, no layers, nothing to tell."""

    def __init__(self) -> None:
        self._ssrcs: set[int] = set()

    def new_ssrc(self) -> int:
        return new_ssrc(self._ssrcs)

    def track_layers(self, track_sid: str) -> list[models.VideoLayer]:
        return []

    def on_consumer_created(self, sub: Subscription) -> None:
        pass

    def on_subscription_changed(self, subscriber_sid: str, sub: Subscription) -> None:
        pass

    async def before_consume(self, subscriber: Participant, track_sid: str) -> None:
        pass

    def on_consumer_closed(self, subscriber: Participant, track_sid: str) -> None:
        pass

    def on_published(self, publisher: Participant) -> None:
        pass

    def on_info_changed(self, p: Participant) -> None:
        pass


# ------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class ClientParams:
    """The client's query parameters on ``/rtc`` (docs/PROTOCOL.md, Query parameters)."""

    auto_subscribe: bool = True
    adaptive_stream: bool = False
    protocol: int = 0
    client_protocol: int = 0
    sdk: str = ""
    version: str = ""
    reconnect: bool = False
    sid: str = ""


@dataclass
class Publication:
    """A track the participant publishes (pending until its m-line is negotiated and produced)."""

    info: models.TrackInfo
    cid: str
    media: OfferedMedia | None = None
    subscribed_sent: bool = False  # TrackSubscribed sent to the publisher (first subscriber)

    @property
    def sid(self) -> str:
        return self.info.sid

    @property
    def producer_id(self) -> str:
        return self.info.sid

    @property
    def published(self) -> bool:
        return self.media is not None


@dataclass
class Subscription:
    """This participant receives ``track_sid`` of ``publisher_sid`` through consumer ``consumer_id``."""

    track_sid: str
    publisher_sid: str
    consumer_id: str
    spec: SubscribedSpec
    created: bool = False
    negotiated: bool = False  # the client answered an offer with its m-line; until then the consumer is paused
    removed: bool = False
    disabled: bool = False
    spatial: int = -1  # wanted simulcast layer, -1 = the highest available
    rtx: bool = False  # the consumer retransmits on spec.rtx_ssrc (RTX offered; dropped if the answer refuses it)


@dataclass
class _SubscriberPc:
    """Subscriber peer-connection negotiation state (server offers, client answers)."""

    offer_id: int = 0
    awaiting_answer: bool = False
    dirty: bool = False
    connected: bool = False
    last_offer: str | None = None
    unanswered: list[Subscription] = field(default_factory=list)  # consumers waiting for the client's answer
    next_mid: int = 1
    trickled: bool = False


def subscriber_transport_id(participant_sid: str) -> str:
    """The worker transport id of a participant's subscriber PC."""
    return f"{participant_sid}.sub"


def subscription_consumer_id(subscriber_sid: str, track_sid: str) -> str:
    """The worker consumer id of a subscription; :func:`consumer_owner` is its inverse."""
    return f"{subscriber_sid}.{track_sid}"


def consumer_owner(consumer_id: str) -> tuple[str, str]:
    """(subscriber participant sid, track sid) of a consumer id made by :func:`subscription_consumer_id` (sids
    hold no dot)."""
    subscriber_sid, _, track_sid = consumer_id.partition(".")
    return subscriber_sid, track_sid


class ParticipantError(ValueError):
    """A signal request this participant cannot carry out; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------------------- session


class Participant:
    """One client's session. Created by the Room, driven by signaling (``handle_*``) and worker events."""

    def __init__(
        self,
        *,
        sid: str,
        claims: Claims,
        client: ClientParams,
        sink: SignalSink,
        media: MediaApi,
        negotiator: Negotiator,
        router_id: str,
        enabled_codecs: Sequence[str],
        listener: ParticipantListener,
    ) -> None:
        self.sid = sid
        self.claims = claims
        self.identity = claims.identity
        self.name = claims.name
        self.metadata = claims.metadata
        self.attributes = dict(claims.attributes)
        self.permission = claims.permission()
        self.client = client
        self.sink = sink
        self._send_frame: Callable[[Frame], None] | None = getattr(sink, "send_frame", None)
        self.media = media
        self.negotiator = negotiator
        self.router_id = router_id  # the room's MediaRouter on the worker
        self.enabled_codecs = tuple(enabled_codecs)
        self.listener = listener
        self.state: int = State.JOINING
        self.version = 1
        self.joined_at_ms = time.time_ns() // 1_000_000
        self.pub_transport_id = f"{sid}.pub"
        self.sub_transport_id = subscriber_transport_id(sid)
        self.data_producer_id = f"{sid}.data"
        self.pub_params: TransportParams | None = None
        self.sub_params: TransportParams | None = None
        self.publications: dict[str, Publication] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.last_reliable_seq = 0
        self.disconnect_reason: int = models.DisconnectReason.UNKNOWN_REASON
        self._pending_media: dict[str, OfferedMedia] = {}  # mid -> m-line without an AddTrackRequest yet
        self._pub_connected = False
        self._pub_setup: asyncio.Task[TransportParams] | None = None  # the publisher transport's creation
        self._pub_remote_ufrag = ""
        self._pub_trickled = False
        self.tuples: dict[str, tuple[str, int, str]] = {}  # transport id -> (host, port, protocol) the worker selected
        self.relay_addresses: set[tuple[str, int]] = set()  # the client's trickled relay candidates (TURN)
        self._sub = _SubscriberPc()
        self._sub_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._grace: asyncio.TimerHandle | None = None
        self._timers: list[asyncio.TimerHandle] = []  # cancelled on close (e.g. the join timeout)
        self._drop_next_resume = ""  # SimulateScenario: "", "silent" or "after_reconnect"
        self.subscription_policy: rtc.SubscriptionPermission | None = None  # None: everyone may subscribe
        self._info: models.ParticipantInfo | None = None  # info() until the next change
        self._listed: tuple[models.ParticipantInfo, bytes] | None = None  # listed(): the info it encodes, bytes
        self.closed = False

    # ---- shared helpers --------------------------------------------------------------------------

    @property
    def hidden(self) -> bool:
        return bool(self.permission.hidden)

    @property
    def is_publisher(self) -> bool:
        """Whether any of its tracks is published (its state changes go out at once, never batched)."""
        return any(pub.published for pub in self.publications.values())

    @property
    def can_subscribe(self) -> bool:
        return bool(self.permission.can_subscribe)

    @property
    def auto_subscribes(self) -> bool:
        """Subscribes to the room's tracks as they are published: asked for it, may subscribe, and in the room."""
        return self.client.auto_subscribe and self.can_subscribe and self.state in (State.JOINED, State.ACTIVE)

    def send(self, message: rtc.SignalResponse) -> None:
        # Nothing may precede the JoinResponse (SDKs fail the join on any other first message). What others
        # broadcast while this participant is still being set up is in the JoinResponse's snapshot anyway.
        if self.closed or (self.state == State.JOINING and message.WhichOneof("message") not in _BEFORE_JOIN):
            return
        self.sink.send(message)

    def send_frame(self, frame: Frame) -> None:
        """A frame shared with others (a broadcast): its bytes are encoded once, whoever receives it."""
        if self.closed or (self.state == State.JOINING and frame.kind not in _BEFORE_JOIN):
            return
        if self._send_frame is not None:
            self._send_frame(frame)
        else:
            self.sink.send(frame.message)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Runs ``coro`` in the background, logging (never raising) its failure."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("%s %s failed: %r", self.sid, what, t.exception())

        task.add_done_callback(done)

    def info(self) -> models.ParticipantInfo:
        """Full ParticipantInfo with every published track (clients unpublish tracks missing from it). Built once
        per change (see :meth:`changed`) and shared: callers copy it, never modify it."""
        if self._info is None:
            self._info = self._build_info()
        return self._info

    def listed(self) -> bytes:
        """:meth:`info` as an entry of another participant's JoinResponse (``lk.listed_participant``), checked and
        encoded once per change of the info; empty for a hidden participant (never listed to others)."""
        info = self.info()
        if self._listed is None or self._listed[0] is not info:
            self._listed = (info, b"" if info.permission.hidden else lk.listed_participant(info))
        return self._listed[1]

    def changed(self) -> None:
        """Something :meth:`info` shows changed: the next call builds it again."""
        self._info_changed()

    def _info_changed(self) -> None:
        self._info = None
        self.listener.on_info_changed(self)

    def _build_info(self) -> models.ParticipantInfo:
        tracks = [p.info for p in self.publications.values() if p.published]
        return lk.participant_info(
            sid=self.sid,
            identity=self.identity,
            name=self.name,
            joined_at_ms=self.joined_at_ms,
            permission=self.permission,
            state=self.state,
            tracks=tracks,
            metadata=self.metadata,
            attributes=self.attributes,
            kind=self.claims.participant_kind(),
            version=self.version,
            client_protocol=self.client.client_protocol,
            is_publisher=bool(tracks),
        )

    def bump(self) -> None:
        self.version += 1
        self._info_changed()

    # ---- what the room changes -------------------------------------------------------------------

    def mark_joined(self) -> None:
        """The JoinResponse is out: JOINED, with a new version."""
        self.state = State.JOINED
        self.bump()

    def mark_disconnected(self, reason: int) -> None:
        self.disconnect_reason = reason
        self.state = State.DISCONNECTED
        self._info_changed()

    def update_info(self, *, name: str = "", metadata: str = "", attributes: Mapping[str, str] | None = None) -> None:
        """LiveKit's rule for name, metadata and attributes: empty values keep the old ones, except that an
        attribute with an empty value is deleted."""
        self._info_changed()
        if name:
            self.name = name
        if metadata:
            self.metadata = metadata
        for key, value in (attributes or {}).items():
            if value:
                self.attributes[key] = value
            else:
                self.attributes.pop(key, None)

    def set_permission(self, permission: models.ParticipantPermission) -> None:
        self.permission = permission
        self._info_changed()

    def set_subscription_policy(self, policy: rtc.SubscriptionPermission) -> None:
        """Who may subscribe to this participant's tracks (a copy of the publisher's SubscriptionPermission)."""
        self.subscription_policy = rtc.SubscriptionPermission()
        self.subscription_policy.CopyFrom(policy)

    def accept_reliable_seq(self, sequence: int) -> bool:
        """False for a reliable DataPacket whose sequence number was seen already (a resent packet)."""
        if sequence <= self.last_reliable_seq:
            return False
        self.last_reliable_seq = sequence
        return True

    def first_subscription(self, track_sid: str) -> bool:
        """True once per published track: when its first subscriber's consumer exists (TrackSubscribed is due)."""
        pub = self.publications.get(track_sid)
        first = pub is not None and not pub.subscribed_sent
        if pub is not None:
            pub.subscribed_sent = True
        return first

    def call_later(self, delay_s: float, callback: Callable[..., object], *args: object) -> None:
        """Runs ``callback(*args)`` after ``delay_s`` unless the participant is closed first."""
        self._timers.append(asyncio.get_running_loop().call_later(delay_s, callback, *args))

    def drop_next_resume(self, how: str) -> None:
        """SimulateScenario: the next resume loses its signal connection, ``"silent"``ly or ``"after_reconnect"``."""
        self._drop_next_resume = how

    def take_resume_drop(self) -> str:
        """How the resume now under way is to be dropped ("" = not at all); asked once per resume."""
        how, self._drop_next_resume = self._drop_next_resume, ""
        return how

    # ---- life cycle ------------------------------------------------------------------------------

    @property
    def publisher_at_join(self) -> bool:
        """Whether the publisher transport is created at join rather than on the first publisher offer: when the
        client negotiates its publisher PC right after the JoinResponse anyway, i.e. when the publisher PC is
        primary (no subscribe permission) or the JoinResponse says ``fast_publish`` (= canPublish; every LiveKit
        SDK then offers at once). Created with the subscriber transport, in parallel, that first offer's answer
        does not wait for a worker round trip; a subscribe-only participant costs one transport, not two
        (docs/PROTOCOL.md, Join)."""
        return bool(self.permission.can_publish) or not self.can_subscribe

    @property
    def has_publisher_transport(self) -> bool:
        """The publisher transport exists on the worker (a lazy one only after the first publisher offer)."""
        return self.pub_params is not None

    async def setup(self) -> None:
        """Creates the subscriber transport with the server's data channels and, if :attr:`publisher_at_join`, the
        publisher transport with its data relay: each request sets up its transport whole, both in flight at
        once."""
        sub = self.media.create_transport(self.router_id, self.sub_transport_id, data_channels=SERVER_CHANNELS)
        if self.publisher_at_join:
            _, self.sub_params = await asyncio.gather(self._publisher_transport(), sub)
        else:
            self.sub_params = await sub

    def prepare_publisher(self) -> None:
        """Starts creating the publisher transport if it is not there yet (an AddTrackRequest: its offer follows)."""
        if self._pub_setup is None and self.pub_params is None and not self.closed:
            task = asyncio.get_running_loop().create_task(self._create_publisher())
            task.add_done_callback(self._publisher_created)
            self._pub_setup = task

    def _publisher_created(self, task: asyncio.Task[TransportParams]) -> None:
        if (task.cancelled() or task.exception() is not None) and self._pub_setup is task:
            self._pub_setup = None  # the next offer tries again

    async def _publisher_transport(self) -> TransportParams:
        """The publisher transport's parameters, created now (one worker request) or by the creation under way."""
        if self.pub_params is not None:
            return self.pub_params
        self.prepare_publisher()
        if self._pub_setup is None:
            raise ParticipantError("the session is closed")
        try:
            # A cancelled caller must not cancel the creation: its transport would be left on the worker.
            return await asyncio.shield(self._pub_setup)
        except ParticipantError:
            raise
        except Exception as exc:
            raise ParticipantError(f"cannot create the publisher transport: {exc!r}") from exc

    async def _create_publisher(self) -> TransportParams:
        # Client data arrives on the channels the client opens on its publisher PC; control applies LiveKit's
        # DataPacket rules (sender, destinations, canPublishData) and re-sends it (docs/PROTOCOL.md, Data packets).
        params = await self.media.create_transport(
            self.router_id, self.pub_transport_id,
            data_producer=DataProducerSpec(self.data_producer_id, "*", relay_to_control=True),
        )
        if self.closed:  # closed while the worker created it: close() did not know of it
            try:
                await self.media.close_transport(self.pub_transport_id)
            except Exception as exc:
                log.debug("%s: close %s: %r", self.sid, self.pub_transport_id, exc)
            raise ParticipantError("the session is closed")
        self.pub_params = params
        return params

    def signal_lost(self, grace_s: float, on_expire: Callable[[], None]) -> None:
        """The WebSocket is gone without a leave: ``on_expire`` runs after ``grace_s`` unless closed first."""
        if self.closed or self._grace is not None:
            return
        self._grace = asyncio.get_running_loop().call_later(grace_s, on_expire)

    def attach(self, sink: SignalSink) -> None:
        """A resumed signal connection replaces the old one (which is closed) and stops the grace timer."""
        old, self.sink = self.sink, sink
        self._send_frame = getattr(sink, "send_frame", None)
        if old is not sink:
            old.close()
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    async def restart_subscriber_ice(self) -> None:
        """New ICE credentials on the subscriber transport and a new offer carrying them (resume, RFC 8839)."""
        self.sub_params = await self._restart_ice(self.sub_transport_id, self.sub_params)
        self._sub.awaiting_answer = False
        self.negotiate_subscriber()

    async def _restart_ice(self, transport_id: str, params: TransportParams | None) -> TransportParams:
        if params is None:
            raise ParticipantError(f"transport {transport_id} is not set up")
        ufrag, pwd = secrets.token_hex(4), secrets.token_hex(16)
        await self.media.restart_ice(transport_id, ufrag, pwd)
        return dataclasses.replace(params, ice_ufrag=ufrag, ice_pwd=pwd)

    async def close(self) -> None:
        """Frees the worker side (its transports: their producers, consumers and channels) and the sink. A publisher
        transport still being created is closed by its creation (:meth:`_create_publisher`)."""
        if self.closed:
            return
        self.closed = True
        if self._grace is not None:
            self._grace.cancel()
        for timer in self._timers:
            timer.cancel()
        if self._sub_task is not None and not self._sub_task.done():
            self._sub_task.cancel()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:  # a removal running as this participant's own task must finish
                task.cancel()
        self.sink.close()
        for sub in self.subscriptions.values():
            if sub.created:
                self.listener.on_consumer_closed(self, sub.track_sid)
        transports = (self.pub_transport_id, self.sub_transport_id) if self.pub_params is not None \
            else (self.sub_transport_id,)
        for tid in transports:
            try:
                await self.media.close_transport(tid)
            except Exception as exc:  # a dead worker has nothing left to free
                log.debug("%s: close %s: %r", self.sid, tid, exc)

    def on_stream_state(self, track_sid: str, paused: bool) -> None:
        """The worker's stream allocator paused a subscription (its lowest layer does not fit this subscriber's
        bandwidth) or resumed it: StreamStateUpdate, as LiveKit sends it (docs/PROTOCOL.md)."""
        sub = self.subscriptions.get(track_sid)
        if sub is not None and not sub.removed:
            self.send(lk.stream_state_update(sub.publisher_sid, track_sid, paused))

    # ---- the path (diagnostics) -------------------------------------------------------------------------

    def note_remote_candidate(self, candidate: str) -> None:
        """A candidate the client trickled: its relayed addresses tell a TURN path from a direct one (RFC 8839 §5.1
        grammar: foundation component transport priority address port ``typ`` type ...)."""
        parts = candidate.removeprefix("candidate:").split()
        if len(parts) >= 8 and parts[6] == "typ" and parts[7] == "relay" and parts[5].isdigit():
            self.relay_addresses.add((parts[4], int(parts[5])))

    def on_tuple(self, transport_id: str, host: str, port: int, protocol: str) -> None:
        self.tuples[transport_id] = (host, port, protocol)

    def path(self, transport_id: str | None = None) -> str:
        """How a transport (default: the primary one) reaches the worker: "udp" (host, server- or peer-reflexive),
        "tcp" (ICE-TCP), "relay" (through the client's TURN server), or "connecting" before a check selected one."""
        if transport_id is None:
            transport_id = self.sub_transport_id if self.can_subscribe else self.pub_transport_id
        selected = self.tuples.get(transport_id)
        if selected is None:
            return "connecting"
        host, port, protocol = selected
        if protocol == "tcp":
            return "tcp"
        return "relay" if (host, port) in self.relay_addresses else "udp"

    def on_transport_state(self, transport_id: str, event: str, state: str) -> bool:
        """Worker transport events; returns True when the participant just became ACTIVE."""
        primary = self.sub_transport_id if self.can_subscribe else self.pub_transport_id
        if transport_id == primary and event == "transport.dtls_state" and state == "connected":
            if self.state in (State.JOINING, State.JOINED):
                self.state = State.ACTIVE
                self.bump()
                return True
        return False

    # ---- publisher PC ----------------------------------------------------------------------------

    async def handle_offer(self, sd: rtc.SessionDescription) -> tuple[list[Publication], list[Publication]]:
        """Answers a publisher offer; returns (newly published, unpublished) publications."""
        if sd.type != "offer":
            raise ParticipantError(f"publisher description must be an offer, not {sd.type!r}")
        remote_ufrag = _ICE_UFRAG.search(sd.sdp)
        ufrag = remote_ufrag.group(1) if remote_ufrag else ""
        if self.pub_params is None:
            # The first offer of a participant without a publisher transport: one worker round trip (or less
            # when an AddTrackRequest started it). Its ICE credentials are fresh: no restart to do.
            await self._publisher_transport()
        elif self._pub_remote_ufrag and ufrag and ufrag != self._pub_remote_ufrag:
            # The client restarted ICE (after a resume): the answerer changes its credentials too (RFC 8839).
            self.pub_params = await self._restart_ice(self.pub_transport_id, self.pub_params)
        self._pub_remote_ufrag = ufrag or self._pub_remote_ufrag
        try:
            result = self.negotiator.answer(sd.sdp, self.pub_params)
        except ValueError as exc:  # SdpError / NegotiationError: the client's offer cannot be answered
            raise ParticipantError(f"cannot answer the publisher offer: {exc}") from exc
        if not self._pub_connected:
            await self.media.connect(
                self.pub_transport_id,
                role=result.remote.dtls_role,
                fingerprints=result.remote.fingerprints,
                sctp_port=result.remote.sctp_port,
                max_message_size=result.remote.max_message_size,
            )
            self._pub_connected = True
        active = {m.mid: m for m in result.media}
        removed = [p for p in self.publications.values() if p.media is not None and p.media.mid not in active]
        bound_mids = {p.media.mid for p in self.publications.values() if p.media is not None}
        self._pending_media = {mid: m for mid, m in self._pending_media.items() if mid in active}
        for mid, m in active.items():
            if mid not in bound_mids:
                self._pending_media[mid] = m
        published = await self._bind_pending()
        for pub in removed:
            await self._unpublish(pub)
        self.send(lk.answer(result.sdp, sd.id))
        if not self._pub_trickled:
            self._pub_trickled = True
            self._trickle(result.sdp, self.pub_params, rtc.SignalTarget.PUBLISHER)
        return published, removed

    def handle_add_track(self, req: rtc.AddTrackRequest) -> Publication | None:
        """AddTrackRequest -> TrackPublishedResponse (or RequestResponse NOT_ALLOWED / UNSUPPORTED_TYPE)."""
        if not self.permission.can_publish or (
            self.permission.can_publish_sources and req.source not in self.permission.can_publish_sources
        ):
            self.send(lk.request_response(rtc.RequestResponse.Reason.NOT_ALLOWED, add_track=req,
                                          message="participant may not publish this source"))
            return None
        if req.type not in (models.TrackType.AUDIO, models.TrackType.VIDEO):
            self.send(lk.request_response(rtc.RequestResponse.Reason.UNSUPPORTED_TYPE, add_track=req,
                                          message="only audio and video tracks are supported"))
            return None
        for pub in self.publications.values():
            if pub.cid == req.cid:
                self.send(lk.track_published(req.cid, pub.info))  # a repeated request gets the same track
                return pub
        try:
            info = lk.track_info(req, enabled_codecs=self.enabled_codecs)
        except ValueError as exc:
            self.send(lk.request_response(rtc.RequestResponse.Reason.INVALID_REQUEST, add_track=req,
                                          message=str(exc)))
            return None
        pub = Publication(info=info, cid=req.cid)
        self.publications[info.sid] = pub
        self.send(lk.track_published(req.cid, info))
        return pub

    async def bind_pending(self) -> list[Publication]:
        """Binds m-lines that arrived before their AddTrackRequest; returns the newly published tracks."""
        return await self._bind_pending()

    async def _bind_pending(self) -> list[Publication]:
        waiting = [p for p in self.publications.values() if p.media is None]
        published: list[Publication] = []
        for mid, media in list(self._pending_media.items()):
            match = next((p for p in waiting if p.cid == media.track_id), None)
            if match is None:
                # Firefox-style msid track ids differ from the cid: match by kind when it is unambiguous.
                same_kind = [p for p in waiting if _kind_of(p.info) == media.kind]
                unmatched_media = [m for m in self._pending_media.values() if m.kind == media.kind]
                if len(same_kind) == 1 and len(unmatched_media) == 1 and not any(
                    p.cid == m.track_id for p in waiting for m in self._pending_media.values()
                ):
                    match = same_kind[0]
            if match is None:
                continue
            del self._pending_media[mid]
            waiting.remove(match)
            media.plan.source = models.TrackSource.Name(match.info.source).lower() \
                if match.info.source in models.TrackSource.values() else "unknown"
            try:
                await self.media.produce(self.pub_transport_id, match.producer_id, media.plan)
                if match.info.muted:
                    await self.media.pause_producer(match.producer_id)
            except Exception as exc:  # the answer still goes out; this track stays unpublished
                log.warning("%s: cannot produce %s (mid %s): %r", self.sid, match.sid, mid, exc)
                continue
            match.media = media
            self.listener.on_published(self)
            match.info.mid = mid
            match.info.mime_type = media.mime_type
            self.changed()
            published.append(match)
        return published

    async def _unpublish(self, pub: Publication) -> None:
        self.publications.pop(pub.sid, None)
        self.changed()
        if pub.media is not None:
            pub.media = None
            await self.media.close_producer(pub.producer_id)

    async def unpublish(self, track_sid: str) -> Publication | None:
        pub = self.publications.get(track_sid)
        if pub is None:
            return None
        was_published = pub.published
        await self._unpublish(pub)
        return pub if was_published else None

    async def handle_mute(self, req: rtc.MuteTrackRequest) -> Publication:
        pub = self.publications.get(req.sid)
        if pub is None:
            raise ParticipantError(f"no published track {req.sid!r}")
        if pub.info.muted != req.muted:
            pub.info.muted = req.muted
            self.changed()
            if pub.published:
                if req.muted:
                    await self.media.pause_producer(pub.producer_id)
                else:
                    await self.media.resume_producer(pub.producer_id)
        return pub

    # ---- subscriber PC ---------------------------------------------------------------------------

    def subscribe(self, publisher: Participant, pub: Publication) -> bool:
        """Adds a subscription to ``pub`` (re-offers the subscriber PC); False if already subscribed."""
        if pub.media is None:
            return False
        existing = self.subscriptions.get(pub.sid)
        if existing is not None and not existing.removed:
            return False
        mid = str(self._sub.next_mid)
        self._sub.next_mid += 1
        spec = SubscribedSpec(
            mid=mid,
            kind=pub.media.kind,
            plan=pub.media.plan,
            out_ssrc=self.listener.new_ssrc(),
            stream_id=f"{publisher.sid}|{pub.sid}",
            track_id=pub.sid,
            cname=publisher.sid,
            rtx_ssrc=self.listener.new_ssrc() if pub.media.kind == "video" else 0,
        )
        self.subscriptions[pub.sid] = Subscription(
            track_sid=pub.sid, publisher_sid=publisher.sid, consumer_id=subscription_consumer_id(self.sid, pub.sid),
            spec=spec,
        )
        self.negotiate_subscriber()
        return True

    def active_subscriptions(self) -> int:
        return sum(1 for sub in self.subscriptions.values() if not sub.removed)

    def unsubscribe(self, track_sid: str) -> bool:
        sub = self.subscriptions.get(track_sid)
        if sub is None or sub.removed:
            return False
        sub.removed = True
        self.listener.on_subscription_changed(self.sid, sub)
        self.negotiate_subscriber()
        return True

    async def set_track_settings(self, req: rtc.UpdateTrackSettings) -> None:
        """``disabled`` (or quality OFF) pauses a subscription; width/height pick the smallest simulcast layer that
        covers them, else ``quality`` is the highest layer wanted. Settings that arrive before the consumer exists
        are applied when it is created."""
        for track_sid in req.track_sids:
            sub = self.subscriptions.get(track_sid)
            if sub is None or sub.removed:
                continue
            disabled = req.disabled or (not (req.width or req.height) and req.quality == models.VideoQuality.OFF)
            spatial = sub.spatial
            layers = self.listener.track_layers(track_sid)
            if not disabled and len(layers) > 1:
                spatial = _layer_for(layers, req)
            changed_pause = disabled != sub.disabled
            changed_layer = spatial != sub.spatial
            sub.disabled, sub.spatial = disabled, spatial
            if changed_pause or changed_layer:
                self.listener.on_subscription_changed(self.sid, sub)
            if not sub.created:
                continue
            if changed_pause and sub.negotiated:  # before the answer the consumer stays paused anyway
                if disabled:
                    await self.media.pause_consumer(sub.consumer_id)
                else:
                    await self.media.resume_consumer(sub.consumer_id)
            if changed_layer and spatial >= 0:
                log.debug("%s: %s -> spatial layer %d of %d", self.sid, track_sid, spatial, len(layers))
                await self.media.set_preferred_layers(sub.consumer_id, spatial)

    def negotiate_subscriber(self) -> None:
        """Schedules a subscriber offer; only one offer is outstanding at a time (JSEP)."""
        self._sub.dirty = True
        if self.closed or self.sub_params is None:
            return
        if self._sub_task is None or self._sub_task.done():
            self._sub_task = asyncio.get_running_loop().create_task(self._offer_subscriber())

    async def _offer_subscriber(self) -> None:
        try:
            while self._sub.dirty and not self._sub.awaiting_answer and not self.closed:
                self._sub.dirty = False
                for sub in list(self.subscriptions.values()):
                    if sub.removed:
                        del self.subscriptions[sub.track_sid]
                        if sub.created:
                            await self.media.close_consumer(sub.consumer_id)
                            self.listener.on_consumer_closed(self, sub.track_sid)
                specs: list[SubscribedSpec] = []
                for sub in list(self.subscriptions.values()):
                    if not sub.created:
                        try:
                            await self._consume(sub, rtx=True)
                        except Exception as exc:  # e.g. the track went away meanwhile: offer without it
                            log.warning("%s: cannot consume %s: %r", self.sid, sub.track_sid, exc)
                            self.listener.on_consumer_closed(self, sub.track_sid)  # a pipe opened for it may close
                            del self.subscriptions[sub.track_sid]
                            self.send(lk.subscription_response(sub.track_sid,
                                                               models.SubscriptionError.SE_TRACK_NOTFOUND))
                            continue
                        sub.created = True
                        self._sub.unanswered.append(sub)
                        self.listener.on_consumer_created(sub)
                        self.listener.on_subscription_changed(self.sid, sub)
                    specs.append(sub.spec)
                self._sub.offer_id += 1
                sdp = self.negotiator.offer(
                    self.sub_params, specs, session_version=self._sub.offer_id, previous=self._sub.last_offer
                )
                self._sub.last_offer = sdp
                self._sub.awaiting_answer = True
                self.send(lk.offer(sdp, self._sub.offer_id))
                if not self._sub.trickled:
                    self._sub.trickled = True
                    self._trickle(sdp, self.sub_params, rtc.SignalTarget.SUBSCRIBER)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: subscriber offer failed", self.sid)

    async def _consume(self, sub: Subscription, *, rtx: bool) -> None:
        """Creates the worker's consumer of ``sub``, paused; with ``rtx`` it retransmits as RTX if the m-line
        offers it."""
        rtx_pt_map = self.negotiator.rtx_pt_map(sub.spec) if rtx else {}
        await self.listener.before_consume(self, sub.track_sid)
        await self.media.consume(
            self.sub_transport_id,
            sub.consumer_id,
            sub.track_sid,
            out_ssrc=sub.spec.out_ssrc,
            pt_map=self.negotiator.pt_map(sub.spec),
            spatial=sub.spatial,
            # Nothing is sent before the client has answered: RTP that reaches libwebrtc
            # before its receiver exists can leave the track without a decodable frame.
            paused=True,
            rtx_ssrc=sub.spec.rtx_ssrc if rtx_pt_map else 0,
            rtx_pt_map=rtx_pt_map,
        )
        sub.rtx = bool(rtx_pt_map)

    async def handle_answer(self, sd: rtc.SessionDescription) -> None:
        """The client's answer to our subscriber offer (JS echoes the id, Rust sends 0)."""
        if sd.type != "answer":
            raise ParticipantError(f"subscriber description must be an answer, not {sd.type!r}")
        if not self._sub.awaiting_answer:
            raise ParticipantError("no subscriber offer is outstanding")
        if sd.id and sd.id != self._sub.offer_id:
            raise ParticipantError(f"answer id {sd.id} does not match offer id {self._sub.offer_id}")
        remote = self.negotiator.parse_answer(sd.sdp)
        # The transport's connect and the answered consumers' starts go to the worker together, not one after the
        # other's reply: the worker takes them in order, and a subscriber's first media waits for its consumer's
        # resume as much as for its DTLS handshake (a round trip through control saved on every join).
        steps = [self._connect_subscriber(remote)] if not self._sub.connected else []
        answered, self._sub.unanswered = self._sub.unanswered, []
        for sub in answered:
            if self.subscriptions.get(sub.track_sid) is not sub or sub.removed:
                continue
            sub.negotiated = True
            steps.append(self._start_consumer(sub, remote))
        failed = [r for r in await asyncio.gather(*steps, return_exceptions=True) if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        self._sub.awaiting_answer = False
        if self._sub.dirty:
            self.negotiate_subscriber()

    async def _connect_subscriber(self, remote: RemoteSide) -> None:
        await self.media.connect(
            self.sub_transport_id,
            role=remote.dtls_role,
            fingerprints=remote.fingerprints,
            sctp_port=remote.sctp_port,
            max_message_size=remote.max_message_size,
        )
        self._sub.connected = True

    async def _start_consumer(self, sub: Subscription, remote: RemoteSide) -> None:
        """An answered subscription's consumer starts sending (unless disabled); re-made without RTX first if the
        client refused RTX for its m-line."""
        if sub.rtx and remote.rtx_mids is not None and sub.spec.mid not in remote.rtx_mids:
            # The client refused RTX (RFC 4588 is optional): retransmit on the media SSRC instead.
            await self.media.close_consumer(sub.consumer_id)
            await self._consume(sub, rtx=False)
        if not sub.disabled:
            await self.media.resume_consumer(sub.consumer_id)

    def _trickle(self, sdp: str, params: TransportParams | None, target: int) -> None:
        """Our host candidates as trickles too (they are also in the SDP)."""
        match = _MID.search(sdp)
        if match is None or params is None:
            return
        for c in params.sdp_candidates():
            tail = "".join(f" {k} {v}" for k, v in c.extensions)
            candidate = (f"candidate:{c.foundation} 1 {c.transport} {c.priority} {c.ip} {c.port} typ host{tail}"
                         " generation 0")
            self.send(lk.trickle(candidate, sdp_mid=match.group(1), sdp_mline_index=0, target=target,
                                 username_fragment=params.ice_ufrag))

    # ---- data ------------------------------------------------------------------------------------

    async def send_data(self, label: str, payload: bytes) -> bool:
        """A DataPacket to this client on its primary PC: the subscriber PC's server-created channel, or for a
        participant that cannot subscribe (no subscriber PC), its own channel on its publisher PC (docs/PROTOCOL.md)."""
        if self.closed:
            return False
        if self.can_subscribe:
            return await self.media.send_data(self.sub_transport_id, label, payload)
        if self.pub_params is None:
            return False
        return await self.media.send_data(self.pub_transport_id, label, payload)


def _layer_for(layers: list[models.VideoLayer], req: rtc.UpdateTrackSettings) -> int:
    """Spatial index (layers sorted low to high) for a subscriber's wanted size or quality."""
    if req.width or req.height:
        for index, layer in enumerate(layers):
            if layer.width >= req.width and layer.height >= req.height:
                return index
        return len(layers) - 1
    best = 0
    for index, layer in enumerate(layers):
        if layer.quality <= req.quality:
            best = index
    return best


def _kind_of(info: models.TrackInfo) -> str:
    return "video" if info.type == models.TrackType.VIDEO else "audio"


class LiveKitNegotiator:
    """:class:`Negotiator` over ``control.rtc.negotiation``.

    Publisher answers accept opus and VP8 first (the codecs announced in ``enabled_publish_codecs``; the codec
    order of the answer decides what libwebrtc sends, docs/PROTOCOL.md, Codecs); subscriber offers carry the
    server's data channel m-line and one sendonly m-line per subscription with LiveKit's packed msid.
    """

    def __init__(self, allow_video_codecs: tuple[str, ...] | None = ("VP8", "H264", "VP9")) -> None:
        self.allow_video_codecs = allow_video_codecs

    def answer(self, offer_sdp: str, local: TransportParams) -> PublisherAnswer:
        sdp, plan = negotiation.answer_offer(offer_sdp, local, allow_video_codecs=self.allow_video_codecs)
        for track in plan.tracks:
            # LiveKit rids name qualities (q < h < f); the Rust SDK offers them high first ("a=simulcast:send
            # h;q"), while the worker's layer index must go from low to high (docs/SEAMS.md §1).
            if len(track.encodings) > 1 and all(e[0] in RID_RANK for e in track.encodings):
                track.encodings = sorted(track.encodings, key=lambda e: RID_RANK[e[0]])
        media = [
            OfferedMedia(
                mid=t.mid,
                kind=t.kind,
                track_id=(t.msid[1] or "") if t.msid else "",
                mime_type=f"{t.kind}/{t.codecs[0].name}",
                plan=t,
            )
            for t in plan.tracks
        ]
        remote = RemoteSide(
            fingerprints=list(plan.fingerprints),
            dtls_role=plan.local_dtls_role,
            sctp_port=plan.sctp.port if plan.sctp else None,
            max_message_size=plan.sctp.max_message_size if plan.sctp else 262144,
        )
        return PublisherAnswer(sdp=sdp, remote=remote, media=media)

    def _subscribed(self, spec: SubscribedSpec) -> SubscribedTrack:
        rtx_pt = negotiation.subscriber_rtx_pt(spec.plan) if spec.rtx_ssrc else None
        return SubscribedTrack(
            mid=spec.mid,
            kind=spec.kind,
            codec=negotiation.subscriber_codec(spec.plan),
            out_ssrc=spec.out_ssrc,
            stream_id=spec.stream_id,
            track_id=spec.track_id,
            cname=spec.cname,
            rtx_pt=rtx_pt,
            rtx_ssrc=spec.rtx_ssrc if rtx_pt is not None else 0,
        )

    def offer(
        self, local: TransportParams, tracks: list[SubscribedSpec], *, session_version: int, previous: str | None
    ) -> str:
        return negotiation.subscriber_offer(
            local,
            [self._subscribed(s) for s in tracks],
            data_channel=True,
            session_version=session_version,
            previous=previous,
        )

    def parse_answer(self, answer_sdp: str) -> RemoteSide:
        remote = negotiation.parse_answer(answer_sdp)
        return RemoteSide(
            fingerprints=list(remote.fingerprints),
            dtls_role=remote.local_dtls_role,
            sctp_port=remote.sctp.port if remote.sctp else None,
            max_message_size=remote.sctp.max_message_size if remote.sctp else 262144,
            rtx_mids=frozenset(mid for mid, m in remote.media.items() if negotiation.answered_rtx(m)),
        )

    def pt_map(self, spec: SubscribedSpec) -> dict[int, int]:
        return negotiation.consumer_pt_map(spec.plan, self._subscribed(spec))

    def rtx_pt_map(self, spec: SubscribedSpec) -> dict[int, int]:
        return negotiation.consumer_rtx_pt_map(self._subscribed(spec))
