"""Rooms: LiveKit rooms in control — membership, ParticipantUpdate broadcasts, subscriptions and data
forwarding, and the connection-quality rounds (control/rtc/quality.py).

A :class:`RoomManager` auto-creates a room on its first join, places its MediaRouter on the least-loaded
worker (``control.workers.placement``) and routes worker notifications (transport states, relayed data-channel
messages) to the participant they belong to. A :class:`Room` applies LiveKit's room rules (docs/PROTOCOL.md, Participant
updates, Data packets): full ParticipantInfo updates with increasing versions, the update that lists a track before the
subscriber offer that carries it, auto-subscribe, duplicate identities replacing the old session, DISCONNECTED
updates on leave, and DataPacket forwarding with the sender set by the server, ``destination_identities`` and
canPublishData enforced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from control.auth import Claims, refresh_token
from control.config import RoomSettings
from control.rtc import events as ev
from control.rtc import limits, pacer, turn
from control.rtc import lk_messages as lk
from control.rtc.dynacast import OFF, Dynacast, enabled_layers, quality_of_layer
from control.rtc.frames import ROOM_KEY, Frame, deflate_piece, participant_key
from control.rtc.lifecycle import RoomTimers, close_delay
from control.rtc.listing import Listing, Snapshot
from control.rtc.participant import (
    DATA_LABELS,
    RELIABLE,
    ClientParams,
    MediaApi,
    Negotiator,
    Participant,
    ParticipantError,
    Publication,
    SignalSink,
    State,
    Subscription,
    consumer_owner,
    new_ssrc,
    subscriber_transport_id,
)
from control.rtc.quality import QUALITY_INTERVAL_S, Peer, QualityBook
from control.rtc.spread import PipeEnds, PipeMedia, RoomPipes, SpreadPolicy, local_ends
from control.workers.placement import NoWorkerAvailable, WorkerLoad, choose_worker
from router.messages import DataMessage, StreamState, TransportScores, TransportState, TupleChanged
from router.protocol import Event

log = logging.getLogger("control.rtc.rooms")

Reason = models.DisconnectReason
SPEAKER_INTERVAL_S = 0.4  # LiveKit's audio.update_interval
ACTIVE_LEVEL_DBOV = 35.0  # LiveKit's audio.active_level: louder than -35 dBov counts as speaking
LEVEL_STEP = 0.05  # smaller changes of a speaker's level are not re-sent
QUALITY_CHUNK = 200  # ConnectionQualityUpdates sent per loop iteration in a round
MAX_NOT_FOUND_ANSWERS = 100  # SE_TRACK_NOTFOUND answers per UpdateSubscription; the rest are only skipped


class WorkerPool(Protocol):
    """The workers rooms can be placed on (``SupervisorPool`` over the Supervisor; a fake in tests)."""

    def loads(self, rooms_per_worker: Mapping[int, int]) -> list[WorkerLoad]: ...
    def media(self, worker_id: int) -> MediaApi: ...
    def udp_port(self, worker_id: int) -> int: ...


@runtime_checkable
class OffHostPool(WorkerPool, Protocol):
    """A pool that also reaches workers of other nodes of a cluster (control/cluster/remote_pool.py): a room's new
    participant may be placed there, and pipes toward them leave the host."""

    async def place_off_host(self, room: str, router_id: str, members: Mapping[int, int]) -> int | None: ...
    async def pipe_ends(self, source: int, dest: int) -> PipeEnds: ...


class JoinRefused(Exception):
    """A join that must be answered with a plain HTTP error (status, reason)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason



class Periodic:
    """One repeating round of a room (active speakers, connection quality): ``run`` every ``interval_s`` from
    :meth:`start` until :meth:`stop` or until ``alive()`` is false. A round that raises (a worker restarting, a
    transport closing) is logged at debug and the next round tries again."""

    def __init__(self, name: str, run: Callable[[], Awaitable[object]], alive: Callable[[], bool]) -> None:
        self.name = name
        self.run = run
        self.alive = alive
        self._task: asyncio.Task[None] | None = None

    def start(self, interval_s: float) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(interval_s))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _loop(self, interval_s: float) -> None:
        while self.alive():
            await asyncio.sleep(interval_s)
            try:
                await self.run()
            except Exception as exc:
                log.debug("%s: %r", self.name, exc)


class Room:
    """One LiveKit room, living on one worker's MediaRouter; the :class:`~control.rtc.participant.ParticipantListener`
    of its participants."""

    def __init__(
        self,
        *,
        name: str,
        worker_id: int,
        media: MediaApi,
        negotiator: Negotiator,
        settings: RoomSettings,
        on_empty: Callable[[Room], None],
        targets: dict[str, Room] | None = None,
        events: ev.RoomEvents | None = None,
        refusals: Counter[str] | None = None,
        pool: WorkerPool | None = None,
        spread: SpreadPolicy | None = None,
    ) -> None:
        self.sid = lk.new_room_sid()
        self.targets = targets if targets is not None else {}  # node-wide: worker object id -> room
        self.name = name
        self.worker_id = worker_id
        self.media = media
        self.negotiator = negotiator
        self.settings = settings
        self.router_id = self.sid
        self.created_ms = time.time_ns() // 1_000_000
        self.participants: dict[str, Participant] = {}  # identity -> session
        # Every session in the room that has published a track (on_published; a superset of the publishers):
        # info() counts publishers and find_track looks for a track among these, not over the whole room.
        self._published: dict[str, Participant] = {}  # sid -> session
        self._order: dict[str, int] = {}  # sid -> place in the room's order of joins (sorts ``_published``)
        self._joins = 0
        # Every session's entry in others' JoinResponses (Participant.listed), in the room's order; those whose info
        # changed since (on_info_changed) are encoded again when the next JoinResponse goes out.
        self._listing = Listing()  # sid -> entry, by block (control/rtc/listing.py)
        self._stale: dict[str, Participant] = {}  # sid -> session whose entry is out of date
        self.by_target: dict[str, Participant] = {}  # worker object id -> session
        self._ssrcs: set[int] = set()
        self._on_empty = on_empty
        self.joining = 0  # joins in flight (the room is not empty while one is)
        self.metadata = ""
        self.closing = False
        self.max_participants = 0  # 0 = no limit (CreateRoom can set one)
        self.events = events if events is not None else ev.RoomEvents()
        # lifetime of the empty room (control/rtc/lifecycle.py); CreateRoom can set both timeouts
        self.empty_timeout = settings.empty_timeout
        self.departure_timeout = settings.departure_timeout
        self.ever_joined = False
        self.created_by_api = False
        self._permission_sent: dict[tuple[str, str], bool] = {}  # (subscriber sid, track sid) -> last told
        self._level_marks: dict[str, tuple[float, int]] = {}  # producer id -> (audio_level_sum, count) seen
        self._speaking: dict[str, float] = {}  # participant sid -> level last announced
        self._speakers = Periodic(f"room {self.sid}: speaker detection", self.detect_speakers, self.is_open)
        self.dynacast = Dynacast(pause_delay_s=settings.dynacast_pause_delay_s)
        self.quality = QualityBook()  # the workers' connection-quality scores (control/rtc/quality.py)
        self._quality = Periodic(f"room {self.sid}: connection quality", self._quality_round, self.is_open)
        self.refusals: Counter[str] = refusals if refusals is not None else Counter()
        self._batched: dict[str, models.ParticipantInfo] = {}  # sid -> state waiting for the next batch
        self._flush_timer: asyncio.TimerHandle | None = None
        self._room_update_timer: asyncio.TimerHandle | None = None
        self._data_buckets: dict[str, limits.TokenBucket] = {}  # participant sid -> its DataPacket rate
        self.closed = False
        # A room over several workers (control/rtc/spread.py): the worker of each participant (by sid), the
        # workers holding this room's MediaRouter, and the pipes between them.
        self.pool = pool
        # The pool if it can place off this host (a cluster's), found once: a runtime protocol's ``isinstance`` looks
        # every member up (2 % of control's samples under ``bench join`` as a check on every join).
        self._off_host: OffHostPool | None = pool if isinstance(pool, OffHostPool) else None
        self.spread = spread or SpreadPolicy("never")
        self.worker_of: dict[str, int] = {}
        self._members: Counter[int] = Counter()  # worker -> sessions on it (worker_of counted, for placement)
        self.router_workers: set[int] = {worker_id}
        self.pipes = RoomPipes(self.router_id, self._pipe_media, self._pipe_ends, self.new_ssrc)

    # ---- workers (control/rtc/spread.py) ---------------------------------------------------------------

    def media_for(self, worker_id: int) -> MediaApi:
        return self.media if worker_id == self.worker_id or self.pool is None else self.pool.media(worker_id)

    def _pipe_media(self, worker_id: int) -> PipeMedia:
        return self.media_for(worker_id)  # type: ignore[return-value]  # MediaClient has the pipe requests

    async def _pipe_ends(self, source: int, dest: int) -> PipeEnds:
        assert self.pool is not None, "pipes need the worker pool"
        if self._off_host is not None:
            return await self._off_host.pipe_ends(source, dest)
        return local_ends(self.pool.udp_port, source, dest)

    def workers(self) -> list[int]:
        """The workers this room uses: its home and every participant's."""
        return sorted({self.worker_id, *self.worker_of.values()})

    async def _place(self) -> tuple[int, MediaApi]:
        """The worker (and its MediaClient) of a new participant; the room's router is created there first."""
        worker_id = self.worker_id
        if self.pool is not None and self.spread.mode != "never":
            members = dict(self._members)
            worker_id = self.spread.place(self.worker_id, members, self.pool.loads({}))
            if self._off_host is not None:  # a cluster may place it on another node's worker
                remote = await self._off_host.place_off_host(self.name, self.router_id, members)
                worker_id = worker_id if remote is None else remote
        media = self.media_for(worker_id)
        if worker_id not in self.router_workers:
            await media.create_router(self.router_id)
            self.router_workers.add(worker_id)
        return worker_id, media

    async def before_consume(self, subscriber: Participant, track_sid: str) -> None:
        found = self.find_track(track_sid)
        if found is None or found[1].media is None:
            return
        source = self.worker_of.get(found[0].sid, self.worker_id)
        dest = self.worker_of.get(subscriber.sid, self.worker_id)
        await self.pipes.ensure(track_sid, found[1].media.plan, source, dest, subscriber.sid)

    def on_info_changed(self, p: Participant) -> None:
        if p.sid in self._listing:
            self._stale[p.sid] = p

    def on_published(self, publisher: Participant) -> None:
        if self.participants.get(publisher.identity) is publisher:
            self._published[publisher.sid] = publisher

    def _position(self, p: Participant) -> int:
        return self._order.get(p.sid, 0)

    def on_consumer_closed(self, subscriber: Participant, track_sid: str) -> None:
        self.pipes.release(track_sid, self.worker_of.get(subscriber.sid, self.worker_id), subscriber.sid)

    def info(self) -> models.Room:
        # A session is DISCONNECTED only once remove() has taken it out of ``participants``: every one listed
        # counts, and only those that have published (``_published``) need a look for a published track.
        return lk.room_info(
            sid=self.sid,
            name=self.name,
            creation_time_ms=self.created_ms,
            metadata=self.metadata,
            max_participants=self.max_participants,
            empty_timeout=self.empty_timeout,
            departure_timeout=self.departure_timeout,
            num_participants=len(self.participants),
            num_publishers=sum(1 for p in self._published.values() if p.is_publisher),
            enabled_codecs=self.settings.enabled_codecs,
        )

    def new_ssrc(self) -> int:
        return new_ssrc(self._ssrcs)

    def find_track(self, track_sid: str) -> tuple[Participant, Publication] | None:
        for p in self._published.values():
            pub = p.publications.get(track_sid)
            if pub is not None and pub.published:
                return p, pub
        return None

    def track_layers(self, track_sid: str) -> list[models.VideoLayer]:
        found = self.find_track(track_sid)
        return list(found[1].info.layers) if found else []

    def by_sid(self, sid: str) -> Participant | None:
        return next((p for p in self.participants.values() if p.sid == sid), None)

    # ---- membership ------------------------------------------------------------------------------

    def admit(self, claims: Claims) -> None:
        """Raises JoinRefused when the room is full (a returning identity replaces itself and always fits)."""
        cap = self.max_participants or self.settings.max_participants_per_room
        if cap and claims.identity not in self.participants and len(self.participants) >= cap:
            self.refusals[limits.ROOM_PARTICIPANTS] += 1
            raise JoinRefused(403, "room has exceeded its max participants")

    async def join(self, claims: Claims, client: ClientParams, sink: SignalSink) -> Participant:
        """Sends JoinResponse, announces the newcomer, subscribes it and sends the first subscriber offer."""
        self.admit(claims)
        old = self.participants.get(claims.identity)
        if old is not None:
            old.send(lk.leave(Reason.DUPLICATE_IDENTITY))
            await self.remove(old, Reason.DUPLICATE_IDENTITY)
        worker_id, media = await self._place()
        p = Participant(sid=lk.new_participant_sid(), claims=claims, client=client, sink=sink, media=media,
                        negotiator=self.negotiator, router_id=self.router_id,
                        enabled_codecs=self.settings.enabled_codecs, listener=self)
        self.worker_of[p.sid] = worker_id
        self._members[worker_id] += 1
        self.participants[p.identity] = p
        self._joins += 1
        self._order[p.sid] = self._joins
        self._listing.put(p.sid, b"")
        self._stale[p.sid] = p
        for target in (p.pub_transport_id, p.sub_transport_id, p.data_producer_id):
            self.by_target[target] = p
            self.targets[target] = self
        try:
            await p.setup()
        except Exception:
            await self.remove(p, Reason.JOIN_FAILURE, announce=False)
            raise
        await pacer.turn()  # the rest runs in one step: a turn of the loop pacer first (control/rtc/pacer.py)
        # Everyone else's info as encoded once per change (Participant.listed; hidden ones are empty) and compressed
        # once per block of participants (control/rtc/listing.py): no copy, encode or compression of every other
        # participant per newcomer, no Python step per participant.
        room_info = self.info()
        others = self._listed_others(p)
        listed = others.raw()
        head = lk.join_response_head(
            room_info,
            p.info(),
            len(listed),
            server_version=self.settings.server_version,
            node_id=self.settings.node_id,
            region=self.settings.region,
            ping_interval=self.settings.ping_interval,
            ping_timeout=self.settings.ping_timeout,
            subscriber_primary=p.can_subscribe,
            fast_publish=bool(p.permission.can_publish),
            enabled_publish_codecs=self.settings.enabled_codecs,
            ice_servers=self._ice_servers(p),
        )
        p.send_frame(Frame.encoded("join", head + listed,
                                   deflate=lambda wbits: deflate_piece(head, wbits) + others.deflated(wbits)))
        p.mark_joined()
        self.ever_joined = True
        self.events.emit(ev.PARTICIPANT_JOINED, room_info, p.info())
        self.broadcast(p, immediate=False)  # a newcomer publishes nothing yet
        self.send_room_update(batched=True)
        if p.auto_subscribes:
            # Only the sessions that have published (the room's index, ``_published``), in the room's order: a
            # join looks at the publishers, not at every participant. A track not published yet has no media and
            # no subscription (Participant.subscribe); its publisher is auto-subscribed to when it is published.
            for other in sorted(self._published.values(), key=self._position):
                if other is not p:
                    for pub in other.publications.values():
                        self.subscribe(p, other, pub)
        if p.can_subscribe:
            p.negotiate_subscriber()  # the first offer exists even with nothing to receive (data channels)
        self._send_refresh_token(p)
        p.call_later(self.settings.join_timeout_s, self._check_active, p)
        return p

    def _listed_others(self, p: Participant) -> Snapshot:
        """The JoinResponse entries of everyone in the room but ``p``, in the room's order."""
        listing = self._listing
        for sid, o in self._stale.items():
            if sid in listing:
                listing.put(sid, o.listed())
        self._stale.clear()
        return listing.snapshot(without=p.sid)

    def _ice_servers(self, p: Participant) -> list[rtc.ICEServer]:
        """The configured TURN servers with this participant's credentials (fresh TURN REST ones each time)."""
        return [lk.ice_server(urls, username, credential)
                for urls, username, credential in turn.ice_servers(self.settings.turn_servers, p.identity)]

    def _send_refresh_token(self, p: Participant) -> None:
        """A new token now and every ``refresh_interval_s`` while the session lives (LiveKit refreshes every few
        minutes, so that a resume after the first token expired is still accepted)."""
        if p.closed or self.participants.get(p.identity) is not p:
            return
        secret = self.settings.keys.get(p.claims.api_key)
        if secret:
            p.send(lk.refresh_token(refresh_token(p.claims, secret)))
            p.call_later(self.settings.refresh_interval_s, self._send_refresh_token, p)

    def _check_active(self, p: Participant) -> None:
        if not p.closed and p.state != State.ACTIVE and self.participants.get(p.identity) is p:
            log.info("%s did not connect within %.0f s", p.sid, self.settings.join_timeout_s)
            p.send(lk.leave(Reason.CONNECTION_TIMEOUT))
            p.spawn(self.remove(p, Reason.CONNECTION_TIMEOUT), "join timeout")

    async def remove(self, p: Participant, reason: int, *, announce: bool = True) -> None:
        """Removes a session: DISCONNECTED to the others, its tracks dropped, its transports freed."""
        if self.participants.get(p.identity) is p:
            del self.participants[p.identity]
        self._published.pop(p.sid, None)
        self._order.pop(p.sid, None)
        self._listing.discard(p.sid)
        self._stale.pop(p.sid, None)
        for target in (p.pub_transport_id, p.sub_transport_id, p.data_producer_id):
            if self.by_target.get(target) is p:
                del self.by_target[target]
                if self.targets.get(target) is self:
                    del self.targets[target]
        if p.closed:
            return
        self._dynacast_participant_gone(p)
        self._data_buckets.pop(p.sid, None)
        was_announced = p.state != State.JOINING
        p.mark_disconnected(reason)
        if was_announced:
            self._tell_left(p)
        if announce and was_announced and not p.hidden:
            self._announce(lk.disconnected(p.info(), reason), immediate=p.is_publisher)
        for track_sid in list(p.publications):
            self.pipes.producer_gone(track_sid)
        if not self.closing:  # when the whole room goes, nobody needs a new subscriber offer
            for track_sid in list(p.publications):
                for other in self.participants.values():
                    other.unsubscribe(track_sid)
        for sub in p.subscriptions.values():
            self._ssrcs.discard(sub.spec.out_ssrc)
        if announce and not self.closing and self.participants:
            self.send_room_update(batched=True)
        await p.close()
        gone = self.worker_of.pop(p.sid, None)
        if gone is not None:
            self._members[gone] -= 1
            if not self._members[gone]:
                del self._members[gone]
        self.check_empty()

    def _tell_left(self, p: Participant) -> None:
        """Room events of a session that ends: its published tracks go, then the participant."""
        info = self.info()
        for pub in p.publications.values():
            if pub.published:
                self.events.emit(ev.TRACK_UNPUBLISHED, info, p.info(), pub.info)
        self.events.emit(ev.PARTICIPANT_LEFT, info, p.info())

    def check_empty(self) -> None:
        if not self.participants and not self.joining and not self.closed:
            self._on_empty(self)

    def check_empty_now(self) -> None:
        """The empty room's timeout passed: it closes unless somebody came back."""
        if not self.participants and not self.joining and not self.closed:
            self.closing = True
            self._on_empty(self)

    def signal_closed(self, p: Participant, sink: SignalSink | None = None) -> None:
        """The client's WebSocket closed without a leave: keep the session for the grace period (unless the
        session has already moved to a newer signal connection)."""
        if p.closed or (sink is not None and p.sink is not sink):
            return

        def expire() -> None:
            if not p.closed and self.participants.get(p.identity) is p:
                log.info("%s: signal gone for %.0f s, removing", p.sid, self.settings.grace_period_s)
                p.spawn(self.remove(p, Reason.SIGNAL_CLOSE), "grace removal")

        p.signal_lost(self.settings.grace_period_s, expire)

    async def resume(self, p: Participant, sink: SignalSink) -> None:
        """A resume (``reconnect=1``) of a live session on a new WebSocket (docs/PROTOCOL.md, Resume):
        ReconnectResponse, everyone's state, the room, then an ICE-restart subscriber offer. The client follows
        with its own publisher ICE restart."""
        p.attach(sink)
        p.send(lk.reconnect(server_version=self.settings.server_version, node_id=self.settings.node_id,
                            region=self.settings.region, last_message_seq=p.last_reliable_seq,
                            ice_servers=self._ice_servers(p)))
        others = [o.info() for o in self.participants.values() if o is not p and not o.hidden]
        p.send(lk.participant_update([p.info(), *others]))
        p.send(lk.room_update(self.info()))
        await p.restart_subscriber_ice()

    # ---- state broadcasts ------------------------------------------------------------------------

    def broadcast(self, p: Participant, *, immediate: bool = True) -> None:
        """Full info of ``p`` (bumped by the caller) to everyone, encoded once; hidden participants only to
        themselves. Not ``immediate`` (a plain subscriber's join, connection or leave): ``p`` hears it at once,
        the others with the next batch when the room is large (:meth:`_announce`)."""
        if p.hidden:
            p.send_frame(Frame(lk.participant_update([p.info()]), participant_key(p.sid)))
            return
        self._announce(p.info(), immediate=immediate, itself=p)

    # ---- ParticipantUpdate batching (large rooms; docs/PROTOCOL.md, Flow control) ------------------------

    def batching(self) -> bool:
        """Whether plain subscribers' joins and leaves are batched: the room has at least
        ``update_batch_min_participants`` participants."""
        return len(self.participants) >= self.settings.update_batch_min_participants

    def _announce(self, info: models.ParticipantInfo, *, immediate: bool, itself: Participant | None = None) -> None:
        """One participant's state to the room: now (one frame, encoded once, coalesced per participant in each
        socket's queue) or, when it may wait and the room is large, with the next batch."""
        frame = Frame(lk.participant_update([info]), participant_key(info.sid))
        if not immediate and self.batching():
            self._batched[info.sid] = info
            self._schedule_flush()
            if itself is not None:
                itself.send_frame(frame)
            return
        self._batched.pop(info.sid, None)  # this state is newer than the batched one
        for other in self.participants.values():
            other.send_frame(frame)

    def _schedule_flush(self) -> None:
        if self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(self.settings.update_batch_interval_s, self.flush_updates)

    def flush_updates(self) -> None:
        """Sends what waited for the batch: one ParticipantUpdate with every batched participant, encoded once for
        everyone."""
        self._flush_timer = None
        batched, self._batched = list(self._batched.values()), {}
        if self.closed or self.closing or not batched:
            return
        frame = Frame(lk.participant_update(batched))
        for p in self.participants.values():
            p.send_frame(frame)

    def on_consumer_created(self, sub: Subscription) -> None:
        """The first subscriber of a track: the publisher hears TrackSubscribed (LocalTrackSubscribed event)."""
        publisher = self.by_sid(sub.publisher_sid)
        if publisher is not None and publisher.first_subscription(sub.track_sid):
            publisher.send(lk.track_subscribed(sub.track_sid))

    def send_room_update(self, *, batched: bool = False) -> None:
        """RoomUpdate (participant and publisher counts) to everyone still in the room, encoded once; ``batched``
        (a count changed) in a large room: at most every ``room_update_interval_s``, with the counts of then."""
        if batched and self.batching():
            if self._room_update_timer is None:
                loop = asyncio.get_running_loop()
                self._room_update_timer = loop.call_later(self.settings.room_update_interval_s,
                                                          self._room_update_due)
            return
        frame = Frame(lk.room_update(self.info()), ROOM_KEY)
        for p in self.participants.values():
            p.send_frame(frame)

    def _room_update_due(self) -> None:
        self._room_update_timer = None
        if not (self.closed or self.closing):
            self.send_room_update()

    def on_transport_event(self, p: Participant, transport_id: str, event: str, state: str) -> None:
        if p.on_transport_state(transport_id, event, state):
            self.broadcast(p, immediate=p.is_publisher)

    # ---- publishing ------------------------------------------------------------------------------

    def _tracks_removed(self, p: Participant, removed: list[Publication]) -> None:
        """``p``'s info changed (new version to everyone), and ``removed`` are gone: nobody subscribes to them and
        dynacast forgets them."""
        p.bump()
        self.broadcast(p)
        for pub in removed:
            self.events.emit(ev.TRACK_UNPUBLISHED, self.info(), p.info(), pub.info)
            self.pipes.producer_gone(pub.sid)
            self.dynacast.remove_track(pub.sid)
            for other in self.participants.values():
                other.unsubscribe(pub.sid)

    def tracks_changed(self, p: Participant, published: list[Publication], removed: list[Publication]) -> None:
        """After a negotiation: announce first (update with the tracks), then subscribe (offers follow)."""
        if not published and not removed:
            return
        self._tracks_removed(p, removed)
        for pub in published:
            self.events.emit(ev.TRACK_PUBLISHED, self.info(), p.info(), pub.info)
            self._dynacast_published(p, pub)
            for other in self.participants.values():
                if other is not p and other.auto_subscribes:
                    self.subscribe(other, p, pub)

    async def handle_offer(self, p: Participant, sd: rtc.SessionDescription) -> None:
        published, removed = await p.handle_offer(sd)
        self.tracks_changed(p, published, removed)

    async def handle_add_track(self, p: Participant, req: rtc.AddTrackRequest) -> None:
        if self._refuse_track(p, req):
            return
        if p.handle_add_track(req) is not None:
            p.prepare_publisher()  # a lazy publisher transport is ready sooner for the offer that follows
            self.tracks_changed(p, await p.bind_pending(), [])

    def _refuse_track(self, p: Participant, req: rtc.AddTrackRequest) -> bool:
        """True (and RequestResponse LIMIT_EXCEEDED sent) when a new track would pass ``max_tracks_per_participant``
        or ``max_pending_tracks``; a repeated request for a track it has is never refused."""
        if any(pub.cid == req.cid for pub in p.publications.values()):
            return False
        most, most_pending = self.settings.max_tracks_per_participant, self.settings.max_pending_tracks
        pending = sum(1 for pub in p.publications.values() if not pub.published)
        if most and len(p.publications) >= most:
            name, message = limits.TRACKS, f"participant has {most} tracks already"
        elif most_pending and pending >= most_pending:
            name, message = limits.PENDING_TRACKS, f"participant has {most_pending} tracks waiting for an offer"
        else:
            return False
        self.refusals[name] += 1
        p.send(lk.request_response(rtc.RequestResponse.Reason.LIMIT_EXCEEDED, add_track=req, message=message))
        return True

    async def handle_mute(self, p: Participant, req: rtc.MuteTrackRequest) -> None:
        pub = await p.handle_mute(req)
        self.dynacast.set_muted(pub.sid, pub.info.muted)
        if pub.published:
            p.bump()
            self.broadcast(p)

    async def unpublish(self, p: Participant, track_sid: str) -> None:
        """Server-initiated unpublish: the client is told, subscribers renegotiate."""
        pub = await p.unpublish(track_sid)
        p.send(lk.track_unpublished(track_sid))
        if pub is not None:
            self.tracks_changed(p, [], [pub])

    def handle_subscription(self, p: Participant, req: rtc.UpdateSubscription) -> None:
        """Subscribes or unsubscribes the tracks named; a request naming more tracks than a participant may
        subscribe to is cut there, and at most MAX_NOT_FOUND_ANSWERS unknown tracks are answered per request."""
        sids = list(req.track_sids) + [s for pt in req.participant_tracks for s in pt.track_sids]
        cap = self.settings.max_subscriptions_per_participant
        unique = list(dict.fromkeys(sids))
        if cap and len(unique) > cap:
            self.refusals[limits.SUBSCRIPTIONS] += len(unique) - cap
            unique = unique[:cap]
        not_found = 0
        tracks = self._published_tracks() if req.subscribe and len(unique) > 1 else None
        for track_sid in unique:
            if not req.subscribe:
                p.unsubscribe(track_sid)
                continue
            found = tracks.get(track_sid) if tracks is not None else self.find_track(track_sid)
            if found is None or found[0] is p:
                not_found += 1
                if not_found <= MAX_NOT_FOUND_ANSWERS:
                    p.send(lk.subscription_response(track_sid, models.SubscriptionError.SE_TRACK_NOTFOUND))
                continue
            if not p.can_subscribe:
                continue
            self.subscribe(p, found[0], found[1])

    def _published_tracks(self) -> dict[str, tuple[Participant, Publication]]:
        return {pub.sid: (p, pub) for p in self.participants.values() for pub in p.publications.values()
                if pub.published}

    # ---- subscription permissions (a publisher's SubscriptionPermission, docs/PROTOCOL.md) ----------------------

    @staticmethod
    def allowed(subscriber: Participant, publisher: Participant, track_sid: str) -> bool:
        policy = publisher.subscription_policy
        if policy is None or policy.all_participants:
            return True
        for rule in policy.track_permissions:
            if rule.participant_sid == subscriber.sid or (
                    rule.participant_identity and rule.participant_identity == subscriber.identity):
                return rule.all_tracks or track_sid in rule.track_sids
        return False

    def _tell_permission(self, subscriber: Participant, publisher: Participant, track_sid: str,
                         allowed: bool) -> None:
        key = (subscriber.sid, track_sid)
        if self._permission_sent.get(key, True) != allowed:
            self._permission_sent[key] = allowed
            update = rtc.SubscriptionPermissionUpdate(participant_sid=publisher.sid, track_sid=track_sid,
                                                      allowed=allowed)
            subscriber.send(rtc.SignalResponse(subscription_permission_update=update))

    def subscribe(self, subscriber: Participant, publisher: Participant, pub: Publication) -> bool:
        """Subscribes unless the publisher's permissions exclude this subscriber (who is then told so)."""
        if not self.allowed(subscriber, publisher, pub.sid):
            self._tell_permission(subscriber, publisher, pub.sid, False)
            return False
        cap = self.settings.max_subscriptions_per_participant
        if cap and pub.sid not in subscriber.subscriptions and subscriber.active_subscriptions() >= cap:
            self.refusals[limits.SUBSCRIPTIONS] += 1
            subscriber.send(lk.subscription_response(pub.sid, models.SubscriptionError.SE_UNKNOWN))
            return False
        return subscriber.subscribe(publisher, pub)

    def handle_subscription_permission(self, p: Participant, msg: rtc.SubscriptionPermission) -> None:
        """A publisher's new permissions: excluded subscribers lose the tracks, newly allowed auto-subscribers
        get them, and each affected subscriber hears SubscriptionPermissionUpdate."""
        p.set_subscription_policy(msg)
        for other in list(self.participants.values()):
            if other is p:
                continue
            for pub in [x for x in p.publications.values() if x.published]:
                if self.allowed(other, p, pub.sid):
                    self._tell_permission(other, p, pub.sid, True)
                    if other.auto_subscribes:
                        self.subscribe(other, p, pub)
                else:
                    other.unsubscribe(pub.sid)
                    self._tell_permission(other, p, pub.sid, False)

    # ---- dynacast (control.rtc.dynacast; docs/PROTOCOL.md, Dynacast) -------------------------------

    def _dynacast_published(self, p: Participant, pub: Publication) -> None:
        """A published video track: its publisher will hear which of its layers anybody wants."""
        if pub.media is None or pub.media.kind != "video":
            return
        track_sid, codec = pub.sid, pub.media.mime_type

        def tell(quality: int) -> None:
            p.send(lk.subscribed_quality_update(track_sid, codec, enabled_layers(quality)))

        self.dynacast.add_track(track_sid, tell, muted=bool(pub.info.muted))

    def on_subscription_changed(self, subscriber_sid: str, sub: Subscription) -> None:
        """What a subscriber asks of a track (ParticipantListener): nothing until its consumer exists, nothing when
        disabled or removed, else the quality of the layer it is set to (allocation: as asked, for now)."""
        if sub.removed or not sub.created:
            self.dynacast.remove_subscription(sub.track_sid, subscriber_sid)
            return
        quality = OFF if sub.disabled else quality_of_layer(self.track_layers(sub.track_sid), sub.spatial)
        self.dynacast.set_requested(sub.track_sid, subscriber_sid, quality)

    def _dynacast_participant_gone(self, p: Participant) -> None:
        for track_sid in p.publications:
            self.dynacast.remove_track(track_sid)
        self.dynacast.remove_subscriber(p.sid)

    # ---- data ------------------------------------------------------------------------------------

    def forward_data(self, sender: Participant, label: str, data: bytes | str) -> int:
        """One DataPacket from ``sender``'s publisher PC to its destinations; returns how many it went to."""
        if label not in DATA_LABELS:
            return 0
        if not sender.permission.can_publish_data:
            log.debug("%s may not publish data; packet dropped", sender.sid)
            return 0
        if isinstance(data, str):
            log.debug("%s sent a text data message; LiveKit packets are binary", sender.sid)
            return 0
        if not self._data_allowed(sender, len(data)):
            return 0
        try:
            packet = models.DataPacket.FromString(data)
        except DecodeError:
            log.debug("%s sent an undecodable DataPacket", sender.sid)
            return 0
        if packet.WhichOneof("value") in (None, "metrics"):
            return 0
        identity, sid = ("", "") if sender.hidden else (sender.identity, sender.sid)
        packet.participant_identity = identity
        packet.participant_sid = sid
        destinations = list(packet.destination_identities)
        if packet.HasField("user"):
            packet.user.participant_identity = identity
            packet.user.participant_sid = sid
            destinations += [d for d in packet.user.destination_identities if d not in destinations]
            del packet.user.destination_identities[:]
            packet.user.destination_identities.extend(destinations)
        del packet.destination_identities[:]
        packet.destination_identities.extend(destinations)
        if label == RELIABLE and packet.sequence and not sender.accept_reliable_seq(packet.sequence):
            return 0
        payload = packet.SerializeToString()
        wanted = set(destinations)
        count = 0
        for other in self.participants.values():
            if other is sender or other.state == State.DISCONNECTED:
                continue
            if wanted and other.identity not in wanted:
                continue
            other.spawn(other.send_data(label, payload), f"data to {other.sid}")
            count += 1
        return count

    def _data_allowed(self, sender: Participant, size: int) -> bool:
        """``max_data_packet_bytes`` and ``data_packets_per_s`` (bursts of twice that); a refusal is counted and
        the packet dropped, as LiveKit drops what it cannot forward."""
        most = self.settings.max_data_packet_bytes
        if most and size > most:
            self.refusals[limits.DATA_SIZE] += 1
            return False
        rate = self.settings.data_packets_per_s
        if rate:
            now = time.monotonic()
            bucket = self._data_buckets.get(sender.sid)
            if bucket is None or sender.closed:
                bucket = self._data_buckets[sender.sid] = limits.TokenBucket.full(rate, 2 * rate, now)
            if not bucket.take(now):
                self.refusals[limits.DATA_RATE] += 1
                return False
        return True

    async def close(self, reason: int = Reason.ROOM_DELETED) -> None:
        self.closing = True
        for p in list(self.participants.values()):
            p.send(lk.leave(reason))
            await self.remove(p, reason, announce=False)
        self.dynacast.close()
        self.check_empty()
        self.closed = True

    # ---- active speakers (RFC 6464 audio levels, averaged by the worker's fast path) -------------------

    def is_open(self) -> bool:
        return not self.closed

    def start_speaker_detection(self, interval_s: float = SPEAKER_INTERVAL_S) -> None:
        self._speakers.start(interval_s)

    def stop_speaker_detection(self) -> None:
        self._speakers.stop()

    async def detect_speakers(self) -> list[models.SpeakerInfo]:
        """One round: mean audio level per publisher since the last round -> SpeakersChanged with the changes."""
        levels: dict[str, float] = {}
        for p in list(self.participants.values()):
            audio = [pub for pub in p.publications.values()
                     if pub.media is not None and pub.media.kind == "audio" and not pub.info.muted]
            if not audio or p.closed:
                continue
            stats = await p.media.get_stats(p.pub_transport_id)
            loudest: float | None = None
            for pub in audio:
                snap = stats.get("producers", {}).get(pub.producer_id)
                if not snap:
                    continue
                total, count = float(snap.get("audio_level_sum", 0)), int(snap.get("audio_level_count", 0))
                last_total, last_count = self._level_marks.get(pub.producer_id, (0.0, 0))
                self._level_marks[pub.producer_id] = (total, count)
                if count > last_count:
                    dbov = (total - last_total) / (count - last_count)
                    loudest = dbov if loudest is None else min(loudest, dbov)
            if loudest is not None and loudest <= ACTIVE_LEVEL_DBOV:
                levels[p.sid] = round(min(1.0, 10 ** (-loudest / 20)), 4)
        changed: list[models.SpeakerInfo] = []
        for sid, level in levels.items():
            before = self._speaking.get(sid)
            if before is None or abs(before - level) >= LEVEL_STEP:
                changed.append(models.SpeakerInfo(sid=sid, level=level, active=True))
                self._speaking[sid] = level
        present = {p.sid for p in self.participants.values()}
        for sid in list(self._speaking):
            if sid not in levels:
                del self._speaking[sid]
                if sid in present:
                    changed.append(models.SpeakerInfo(sid=sid, level=0.0, active=False))
        if changed:
            message = lk.speakers_changed(changed)
            for p in self.participants.values():
                p.send(message)
        return changed

    # ---- connection quality (scores from the worker, control/rtc/quality.py) ------------------------

    def on_scores(self, p: Participant, transport_id: str, scores: TransportScores) -> None:
        self.quality.on_scores(p.sid, transport_id, scores)

    def start_quality_updates(self, interval_s: float = QUALITY_INTERVAL_S) -> None:
        self._quality.start(interval_s)

    def stop_quality_updates(self) -> None:
        self._quality.stop()

    async def _quality_round(self) -> None:
        """A round of :meth:`send_quality_updates` that yields to the loop after every :data:`QUALITY_CHUNK`
        messages: in a room of thousands, one round would otherwise hold control's loop for tens of ms."""
        by_sid, rounds = self._quality_messages()
        for start in range(0, len(rounds), QUALITY_CHUNK):
            if start:
                await asyncio.sleep(0)
            for sid, infos in rounds[start:start + QUALITY_CHUNK]:
                by_sid[sid].send(lk.connection_quality(infos))

    def send_quality_updates(self) -> int:
        """One round: ConnectionQualityUpdate to the active participants when a quality changed or a participant
        is new (each hears about itself and the participants it subscribes to). Returns the messages sent."""
        by_sid, rounds = self._quality_messages()
        for sid, infos in rounds:
            by_sid[sid].send(lk.connection_quality(infos))
        return len(rounds)

    def _quality_messages(self) -> tuple[dict[str, Participant], list[tuple[str, list[rtc.ConnectionQualityInfo]]]]:
        active = [p for p in self.participants.values() if p.state == State.ACTIVE and not p.closed]
        self.quality.forget(p.sid for p in self.participants.values())
        peers = [Peer(p.sid, p.client.protocol,
                      frozenset(s.publisher_sid for s in p.subscriptions.values() if not s.removed)) for p in active]
        return {p.sid: p for p in active}, self.quality.round(peers)

    # ---- server API (Twirp RoomService) ------------------------------------------------------------

    async def remove_participant(self, p: Participant) -> None:
        """Server-initiated removal: the client is told (leave PARTICIPANT_REMOVED), the others see it go."""
        p.send(lk.leave(Reason.PARTICIPANT_REMOVED))
        await self.remove(p, Reason.PARTICIPANT_REMOVED)

    async def admin_mute(self, p: Participant, track_sid: str, muted: bool) -> models.TrackInfo:
        """Server-initiated mute: the client mutes its local track, subscribers see the new state."""
        pub = await p.handle_mute(rtc.MuteTrackRequest(sid=track_sid, muted=muted))
        p.send(lk.mute(track_sid, muted))
        self.dynacast.set_muted(pub.sid, pub.info.muted)
        if pub.published:
            p.bump()
            self.broadcast(p)
        return pub.info

    async def update_participant(self, p: Participant, *, name: str = "", metadata: str = "",
                                 attributes: Mapping[str, str] | None = None,
                                 permission: models.ParticipantPermission | None = None) -> models.ParticipantInfo:
        """Name, metadata, attributes (an empty value deletes the key) or permission changed by the server. A
        revoked publish permission unpublishes the tracks it no longer covers (the client is told)."""
        p.update_info(name=name, metadata=metadata, attributes=attributes)
        removed: list[Publication] = []
        if permission is not None:
            p.set_permission(permission)
            if not permission.can_subscribe:
                for track_sid in list(p.subscriptions):
                    p.unsubscribe(track_sid)
            for pub in list(p.publications.values()):
                sources = permission.can_publish_sources
                if permission.can_publish and (not sources or pub.info.source in sources):
                    continue
                gone = await p.unpublish(pub.sid)
                p.send(lk.track_unpublished(pub.sid))
                if gone is not None:
                    removed.append(gone)
        self._tracks_removed(p, removed)
        return p.info()

    def send_server_data(self, payload: bytes, *, reliable: bool, destinations: list[str], topic: str = "") -> int:
        """A user DataPacket from the server (no sender identity) to ``destinations`` or everyone."""
        kind = models.DataPacket.Kind.RELIABLE if reliable else models.DataPacket.Kind.LOSSY
        packet = models.DataPacket(kind=kind, destination_identities=destinations,
                                   user=models.UserPacket(payload=payload, destination_identities=destinations))
        if topic:
            packet.user.topic = topic
        data = packet.SerializeToString()
        label = RELIABLE if reliable else "_lossy"
        wanted = set(destinations)
        count = 0
        for p in self.participants.values():
            if p.state != State.DISCONNECTED and (not wanted or p.identity in wanted):
                p.spawn(p.send_data(label, data), f"server data to {p.sid}")
                count += 1
        return count

    def set_metadata(self, metadata: str) -> models.Room:
        self.metadata = metadata
        info = self.info()
        frame = Frame(lk.room_update(info), ROOM_KEY)
        for p in self.participants.values():
            p.send_frame(frame)
        return info


class RoomManager:
    """All rooms of this node; the entry point of signaling."""

    def __init__(self, pool: WorkerPool, negotiator: Negotiator, settings: RoomSettings) -> None:
        self.pool = pool
        self.negotiator = negotiator
        self.settings = settings
        self.rooms: dict[str, Room] = {}
        self.targets: dict[str, Room] = {}
        self._creating: dict[str, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[Any]] = set()
        self.events = ev.RoomEvents()  # webhooks and metrics listen (control/rtc/events.py)
        self.timers = RoomTimers()  # empty rooms waiting to close (control/rtc/lifecycle.py)
        self._placing: dict[int, int] = {}  # worker id -> rooms being created there (create_router in flight)
        self.refusals: Counter[str] = Counter()  # limit name -> requests refused by it (for the metrics)
        self.spread = SpreadPolicy(settings.spread, settings.spread_share)  # type: ignore[arg-type]  # checked

    def rooms_per_worker(self) -> dict[int, int]:
        """Rooms per worker, counting the rooms placed and those being placed (so that rooms created at the
        same moment spread over the workers)."""
        counts = dict(self._placing)
        for room in self.rooms.values():
            counts[room.worker_id] = counts.get(room.worker_id, 0) + 1
        return counts

    async def _enter(self, name: str) -> Room:
        """The room called ``name``, placed now if new, with one more join in flight (the caller ends it)."""
        lock = self._creating.setdefault(name, asyncio.Lock())
        async with lock:
            room = self.rooms.get(name)
            if room is not None and not room.closed:
                room.joining += 1
                self.timers.cancel(room)
                return room
            self._admit_room()
            worker_id = await self._choose_worker()
            media = self.pool.media(worker_id)
            room = Room(name=name, worker_id=worker_id, media=media, negotiator=self.negotiator,
                        settings=self.settings, on_empty=self._room_empty, targets=self.targets,
                        events=self.events, refusals=self.refusals, pool=self.pool, spread=self.spread)
            self._placing[worker_id] = self._placing.get(worker_id, 0) + 1
            try:
                await media.create_router(room.router_id)
            finally:
                self._placing[worker_id] -= 1
                if not self._placing[worker_id]:
                    del self._placing[worker_id]
            self.rooms[name] = room
            room.start_speaker_detection()
            room.start_quality_updates()
            room.joining += 1
            log.info("room %s (%s) placed on worker %d", name, room.sid, worker_id)
            self.events.emit(ev.ROOM_STARTED, room.info())
            return room

    def admit(self, claims: Claims) -> None:
        """Checks a join against the node's and an existing room's limits before the WebSocket upgrade
        (JoinRefused: 503 for the node's, 403 for the room's)."""
        room = self.rooms.get(claims.room)
        if room is None or room.closed:
            self._admit_room()
        most = self.settings.max_participants_per_node
        if most and self.participant_count() >= most and (room is None or claims.identity not in room.participants):
            self.refusals[limits.NODE_PARTICIPANTS] += 1
            raise JoinRefused(503, "node has reached its participant limit")
        if room is not None and not room.closed:
            room.admit(claims)

    def _admit_room(self) -> None:
        """JoinRefused (503) when a new room would pass ``max_rooms_per_node``."""
        most = self.settings.max_rooms_per_node
        if most and len(self.rooms) + sum(self._placing.values()) >= most:
            self.refusals[limits.NODE_ROOMS] += 1
            raise JoinRefused(503, "node has reached its room limit")

    async def _choose_worker(self) -> int:
        """The least-loaded running worker; waits up to ``worker_wait_s`` for one (a respawn takes ~0.3 s)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.worker_wait_s
        while True:
            try:
                return choose_worker(self.pool.loads(self.rooms_per_worker()))
            except NoWorkerAvailable:
                if loop.time() >= deadline:
                    raise
            await asyncio.sleep(0.1)

    async def create_room(self, name: str, *, metadata: str = "", max_participants: int = 0,
                          empty_timeout: int = 0, departure_timeout: int = 0) -> Room:
        """CreateRoom: places the room now; it is closed if nobody joins within ``empty_timeout`` (0 = the
        setting's), and lives ``departure_timeout`` after its last participant left (control/rtc/lifecycle.py)."""
        room = await self._enter(name)
        room.joining -= 1
        room.created_by_api = True
        if metadata:
            room.metadata = metadata
        if max_participants:
            room.max_participants = max_participants
        if empty_timeout:
            room.empty_timeout = empty_timeout
        if departure_timeout:
            room.departure_timeout = departure_timeout
        room.check_empty()
        return room

    async def delete_room(self, name: str) -> bool:
        room = self.rooms.get(name)
        if room is None:
            return False
        await room.close(Reason.ROOM_DELETED)
        return True

    async def join(self, claims: Claims, client: ClientParams, sink: SignalSink) -> tuple[Room, Participant]:
        self.admit(claims)  # again: other joins may have filled the node since the upgrade
        room = await self._enter(claims.room)
        try:
            return room, await room.join(claims, client, sink)
        finally:
            room.joining -= 1
            room.check_empty()

    def _room_empty(self, room: Room) -> None:
        """The room has nobody in it: closed now or after its timeout (control/rtc/lifecycle.py)."""
        delay = close_delay(room)
        if delay > 0:
            self.timers.schedule(room, delay, room.check_empty_now)
            return
        self.timers.cancel(room)
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
        room.closed = True
        room.stop_speaker_detection()
        room.stop_quality_updates()
        task = asyncio.get_running_loop().create_task(self._close_router(room))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        log.info("room %s (%s) closed", room.name, room.sid)
        self.events.emit(ev.ROOM_FINISHED, room.info())

    async def _close_router(self, room: Room) -> None:
        for worker_id in sorted(room.router_workers):
            try:
                await room.media_for(worker_id).close_router(room.router_id)
            except Exception as exc:
                log.debug("close router %s on worker %d: %r", room.router_id, worker_id, exc)

    def find_session(self, claims: Claims, sid: str) -> tuple[Room, Participant] | None:
        """The live session a resume asks for: same room, same identity, same participant sid."""
        room = self.rooms.get(claims.room)
        p = room.participants.get(claims.identity) if room is not None and not room.closed else None
        if p is None or p.closed or p.sid != sid:
            return None
        return room, p

    def find(self, target_id: str) -> tuple[Room, Participant] | None:
        """The session a worker object (transport or data producer id) belongs to, in O(1)."""
        room = self.targets.get(target_id)
        p = room.by_target.get(target_id) if room is not None else None
        return (room, p) if room is not None and p is not None else None

    def on_notification(self, worker_id: int, event: str, target_id: str, body: dict[str, Any]) -> None:
        """Worker events that matter to LiveKit sessions."""
        if event == Event.CONSUMER_STREAM_STATE:
            self.on_stream_state(worker_id, target_id, StreamState.from_wire(body).state == "paused")
            return
        found = self.find(target_id)
        if found is None:
            return
        room, p = found
        if room.worker_of.get(p.sid, room.worker_id) != worker_id:
            return
        if event in (Event.TRANSPORT_DTLS_STATE, Event.TRANSPORT_ICE_STATE, Event.TRANSPORT_SCTP_STATE):
            room.on_transport_event(p, target_id, event, TransportState.from_wire(body).state)
        elif event == Event.DATA_PRODUCER_MESSAGE:
            message = DataMessage.from_wire(body)
            room.forward_data(p, message.label, message.data)
        elif event == Event.TRANSPORT_SCORES:
            room.on_scores(p, target_id, TransportScores.from_wire(body))
        elif event == Event.TRANSPORT_TUPLE_CHANGED:
            selected = TupleChanged.from_wire(body)
            p.on_tuple(target_id, selected.host, selected.port, selected.protocol)
            log.info("%s (%s) %s: %s path from %s:%d", p.identity, p.sid, target_id.rpartition(".")[2],
                     p.path(target_id), selected.host, selected.port)

    def on_stream_state(self, worker_id: int, consumer_id: str, paused: bool) -> None:
        """The worker's stream allocator paused or resumed a consumer: its subscriber hears StreamStateUpdate."""
        subscriber_sid, track_sid = consumer_owner(consumer_id)
        found = self.find(subscriber_transport_id(subscriber_sid))
        if found is not None and found[0].worker_of.get(found[1].sid, found[0].worker_id) == worker_id:
            found[1].on_stream_state(track_sid, paused)

    def on_worker_died(self, worker_id: int) -> None:
        """Every session on a dead worker is told to reconnect. A room that lived only there goes (a new one is
        placed on a live worker); a room spread over several workers loses only the sessions on the dead one: its
        pipes from and to it close, and a subscriber that reconnects is piped again (control/rtc/spread.py)."""
        for room in [r for r in self.rooms.values() if worker_id in r.workers()]:
            room.router_workers.discard(worker_id)
            room.pipes.worker_died(worker_id)
            dead = [p for p in room.participants.values() if room.worker_of.get(p.sid, room.worker_id) == worker_id]
            survivors = len(room.participants) - len(dead)
            if survivors == 0:
                del self.rooms[room.name]
                self.timers.cancel(room)
                room.closed = room.closing = True
                room.stop_speaker_detection()
                room.stop_quality_updates()
            elif room.worker_id == worker_id:
                # The home moves to a worker the room still uses.
                room.worker_id = min(room.worker_of.get(p.sid, room.worker_id) for p in room.participants.values()
                                     if p not in dead)
                if room.pool is not None:
                    room.media = room.pool.media(room.worker_id)
            for p in dead:
                p.send(lk.leave(Reason.MIGRATION, rtc.LeaveRequest.Action.RECONNECT))
                removal = room.remove(p, Reason.MIGRATION, announce=survivors > 0)
                task = asyncio.get_running_loop().create_task(removal)
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            if survivors == 0:
                self.events.emit(ev.ROOM_FINISHED, room.info())

    def participant_count(self) -> int:
        """Sessions in every room (the drain waits for none)."""
        return sum(len(room.participants) + room.joining for room in self.rooms.values())

    def paths(self) -> dict[str, int]:
        """Participants by the path of their primary transport: udp, tcp, relay, connecting (``/healthz``)."""
        counts = dict.fromkeys(("udp", "tcp", "relay", "connecting"), 0)
        for room in self.rooms.values():
            for p in room.participants.values():
                counts[p.path()] += 1
        return counts

    async def close(self) -> None:
        self.timers.cancel_all()
        for room in list(self.rooms.values()):
            await room.close(Reason.SERVER_SHUTDOWN)
        self.rooms.clear()


__all__ = ["JoinRefused", "ParticipantError", "Room", "RoomManager", "RoomSettings", "WorkerPool"]
