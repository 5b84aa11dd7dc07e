"""Rooms, participants and placement against a fake worker (MediaApi) and a fake SDP layer (Negotiator).

The fakes sit exactly at the seams of ``control.rtc.participant``: every worker request is recorded, and the SDP
"offers" are a tiny line format (``m=<kind> <mid> <msid track id>``), so these tests check LiveKit's room rules
(message order, versions, subscriptions, data forwarding, permissions) and nothing about SDP text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from livekit.protocol import models, rtc

from control.auth import Claims, Grants
from control.rtc.negotiation import TransportParams
from control.rtc.participant import (
    ClientParams,
    OfferedMedia,
    PublisherAnswer,
    RemoteSide,
    SubscribedSpec,
)
from control.rtc.rooms import RoomManager, RoomSettings
from control.workers.placement import NoWorkerAvailable, WorkerLoad, choose_worker, loads_from_slots

State = models.ParticipantInfo.State


# ------------------------------------------------------------------------------------------ fakes


@dataclass
class FakePlan:
    """Stands for a TrackPlan: the m-line's mid, and the source the participant sets when it binds the track."""

    mid: str
    source: str = "unknown"


@dataclass
class FakeParams:
    ice_ufrag: str
    ice_pwd: str = "pwd"
    fingerprints: list[tuple[str, str]] = field(default_factory=lambda: [("sha-256", "AB:CD")])
    candidate_ip: str = "198.51.100.1"
    candidate_port: int = 7882
    candidates: tuple[tuple[str, str, int], ...] = ()

    def sdp_candidates(self) -> list[Any]:
        return TransportParams.sdp_candidates(self)  # type: ignore[arg-type]


class FakeMedia:
    """Records every request a room makes to its worker."""

    def __init__(self, worker_id: int = 0) -> None:
        self.worker_id = worker_id
        self.calls: list[tuple[Any, ...]] = []
        self.sent: list[tuple[str, str, bytes | str]] = []
        self.fail_send = False
        self.producer_stats: dict[str, dict[str, Any]] = {}
        self.gone: set[str] = set()  # producers the worker no longer has
        self.fail_restart = False
        self.rtx: dict[str, tuple[int, dict[int, int]]] = {}  # consumer id -> the last consume's RTX arguments

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def find(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == name]

    async def create_router(self, router_id: str) -> None:
        self.calls.append(("create_router", router_id))

    async def close_router(self, router_id: str) -> None:
        self.calls.append(("close_router", router_id))

    async def create_transport(self, router_id: str, transport_id: str, *, data_producer: Any = None,
                               data_channels: Any = ()) -> FakeParams:
        self._create(router_id, transport_id, data_producer, data_channels)
        return FakeParams(ice_ufrag=transport_id[-8:])

    def _create(self, router_id: str, transport_id: str, data_producer: Any, data_channels: Any) -> None:
        """A transport set up in one request is recorded as the separate requests it stands for."""
        self.calls.append(("create_transport", router_id, transport_id))
        if data_producer is not None:
            self.calls.append(("produce_data", transport_id, data_producer.data_producer_id, data_producer.label,
                               data_producer.relay_to_control))
        for c in data_channels:
            self.calls.append(("open_data_channel", transport_id, c.label, c.ordered, c.max_retransmits))

    async def connect(self, transport_id: str, *, role: str, fingerprints: list[tuple[str, str]],
                      sctp_port: int | None = None, max_message_size: int = 262144) -> None:
        self.calls.append(("connect", transport_id, role, sctp_port))

    async def close_transport(self, transport_id: str) -> None:
        await asyncio.sleep(0)  # a real request suspends: cancellation would land here
        self.calls.append(("close_transport", transport_id))

    async def restart_ice(self, transport_id: str, ice_ufrag: str, ice_pwd: str) -> None:
        if self.fail_restart:
            raise RuntimeError("worker refused the ICE restart")
        self.calls.append(("restart_ice", transport_id, ice_ufrag))

    async def get_stats(self, transport_id: str) -> dict[str, Any]:
        return {"producers": {pid: dict(snap) for pid, snap in self.producer_stats.items()}}

    async def produce(self, transport_id: str, producer_id: str, track: Any) -> None:
        if producer_id in self.gone:
            raise ValueError(f"worker refused producer {producer_id!r}")
        self.calls.append(("produce", transport_id, producer_id, track))

    async def consume(self, transport_id: str, consumer_id: str, producer_id: str, *, out_ssrc: int,
                      pt_map: dict[int, int], nack: bool = True, spatial: int = -1, paused: bool = False,
                      rtx_ssrc: int = 0, rtx_pt_map: dict[int, int] | None = None) -> None:
        if producer_id in self.gone:
            raise KeyError(f"producer {producer_id!r} not found")
        self.calls.append(("consume", transport_id, consumer_id, producer_id, out_ssrc, spatial, paused))
        self.rtx[consumer_id] = (rtx_ssrc, dict(rtx_pt_map or {}))

    async def close_producer(self, producer_id: str) -> None:
        self.calls.append(("close_producer", producer_id))

    async def pause_producer(self, producer_id: str) -> None:
        self.calls.append(("pause_producer", producer_id))

    async def resume_producer(self, producer_id: str) -> None:
        self.calls.append(("resume_producer", producer_id))

    async def close_consumer(self, consumer_id: str) -> None:
        self.calls.append(("close_consumer", consumer_id))

    async def pause_consumer(self, consumer_id: str) -> None:
        self.calls.append(("pause_consumer", consumer_id))

    async def resume_consumer(self, consumer_id: str) -> None:
        self.calls.append(("resume_consumer", consumer_id))

    async def set_preferred_layers(self, consumer_id: str, spatial: int) -> None:
        self.calls.append(("set_preferred_layers", consumer_id, spatial))

    async def produce_data(self, transport_id: str, data_producer_id: str, label: str, *,
                           relay_to_control: bool = False) -> None:
        self.calls.append(("produce_data", transport_id, data_producer_id, label, relay_to_control))

    async def open_data_channel(self, transport_id: str, label: str, *, ordered: bool = True,
                                max_retransmits: int | None = None) -> None:
        self.calls.append(("open_data_channel", transport_id, label, ordered, max_retransmits))

    async def send_data(self, transport_id: str, label: str, data: bytes | str) -> bool:
        self.sent.append((transport_id, label, data))
        return not self.fail_send


class FakeNegotiator:
    """Offers are lines ``m=<kind> <mid> <track id>``; answers and subscriber offers list ``a=mid``/msid. With
    ``refuse_rtx`` a subscriber's answer keeps RTX on no m-line."""

    refuse_rtx = False

    def answer(self, offer_sdp: str, local: Any) -> PublisherAnswer:
        media = []
        for line in offer_sdp.splitlines():
            if line.startswith("m="):
                kind, mid, track_id = line[2:].split()
                mime = "audio/opus" if kind == "audio" else "video/VP8"
                media.append(OfferedMedia(mid=mid, kind=kind, track_id=track_id, mime_type=mime,
                                          plan=FakePlan(mid)))
        body = "".join(f"a=mid:{m.mid}\r\n" for m in media) or "a=mid:dc\r\n"
        return PublisherAnswer(sdp="v=0\r\n" + body, remote=RemoteSide([("sha-256", "EF")], "server", 5000),
                               media=media)

    def offer(self, local: Any, tracks: list[SubscribedSpec], *, session_version: int,
              previous: str | None) -> str:
        body = "".join(f"a=mid:{t.mid}\r\na=msid:{t.stream_id} {t.track_id}\r\n" for t in tracks)
        return f"v=0\r\no=- 1 {session_version}\r\n{body}a=mid:dc\r\n"

    def parse_answer(self, answer_sdp: str) -> RemoteSide:
        return RemoteSide([("sha-256", "01")], "server", 5000, rtx_mids=frozenset() if self.refuse_rtx else None)

    def pt_map(self, spec: SubscribedSpec) -> dict[int, int]:
        return {111: 111} if spec.kind == "audio" else {96: 96}

    def rtx_pt_map(self, spec: SubscribedSpec) -> dict[int, int]:
        return {} if spec.kind == "audio" else {96: 97}


class FakePool:
    def __init__(self, workers: int = 1) -> None:
        self.workers = [FakeMedia(i) for i in range(workers)]
        self.down: set[int] = set()

    def loads(self, rooms_per_worker: Mapping[int, int]) -> list[WorkerLoad]:
        return [WorkerLoad(i, i not in self.down, rooms_per_worker.get(i, 0)) for i in range(len(self.workers))]

    def media(self, worker_id: int) -> FakeMedia:
        return self.workers[worker_id]


class Client:
    """A SignalSink that keeps what the server sent."""

    def __init__(self) -> None:
        self.messages: list[rtc.SignalResponse] = []
        self.closed = False

    def send(self, message: rtc.SignalResponse) -> None:
        assert not self.closed, "message sent after close"
        self.messages.append(message)

    def close(self) -> None:
        self.closed = True

    def kinds(self) -> list[str]:
        return [str(m.WhichOneof("message")) for m in self.messages]

    def of(self, kind: str) -> list[Any]:
        return [getattr(m, kind) for m in self.messages if m.WhichOneof("message") == kind]

    def updates_for(self, sid: str) -> list[models.ParticipantInfo]:
        return [p for u in self.of("update") for p in u.participants if p.sid == sid]


def claims(identity: str, room: str = "r1", **grants: Any) -> Claims:
    return Claims(identity=identity, api_key="devkey", expires_at=int(time.time()) + 3600,
                  grants=Grants(room_join=True, room=room, **grants))


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


def make_manager(workers: int = 1, **overrides: Any) -> tuple[RoomManager, FakePool]:
    pool = FakePool(workers)
    settings = RoomSettings(keys={"devkey": "secret"}, **overrides)
    return RoomManager(pool, FakeNegotiator(), settings), pool


async def joined(manager: RoomManager, identity: str, room: str = "r1", *, auto_subscribe: bool = True,
                 answer: bool = True, **grants: Any) -> tuple[Any, Any, Client]:
    client = Client()
    r, p = await manager.join(claims(identity, room, **grants), ClientParams(auto_subscribe=auto_subscribe), client)
    await settle()
    if answer and client.of("offer"):
        await p.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
        await settle()
    return r, p, client


async def publish(room: Any, p: Any, cid: str, kind: str = "audio", mid: str = "0", offer_id: int = 1,
                  extra: str = "") -> str:
    req = rtc.AddTrackRequest(cid=cid, name=cid,
                              type=models.TrackType.AUDIO if kind == "audio" else models.TrackType.VIDEO,
                              source=models.TrackSource.MICROPHONE if kind == "audio" else models.TrackSource.CAMERA)
    await room.handle_add_track(p, req)
    await room.handle_offer(p, rtc.SessionDescription(type="offer", sdp=f"v=0\r\n{extra}m={kind} {mid} {cid}\r\n",
                                                      id=offer_id))
    await settle()
    return next(pub.sid for pub in p.publications.values() if pub.cid == cid)


# ------------------------------------------------------------------------------------------ tests


async def test_join_response_first_with_required_fields_then_subscriber_offer() -> None:
    manager, pool = make_manager()
    room, p, client = await joined(manager, "alice", answer=False)
    assert client.kinds()[0] == "join"
    join = client.messages[0].join
    assert join.participant.sid.startswith("PA_") and join.participant.identity == "alice"
    assert join.room.sid.startswith("RM_") and join.room.name == "r1"
    assert join.ping_interval == 5 and join.ping_timeout == 15
    assert join.server_info.version == join.server_version == "1.9.0"
    assert join.subscriber_primary and join.fast_publish
    assert [c.mime for c in join.enabled_publish_codecs] == ["audio/opus", "video/VP8"]
    assert list(join.other_participants) == []
    assert "offer" in client.kinds() and "refresh_token" in client.kinds()
    assert client.of("offer")[0].id == 1
    media = pool.workers[0]
    assert ("create_router", room.router_id) in media.calls
    assert ("open_data_channel", p.sub_transport_id, "_reliable", True, None) in media.calls
    assert ("open_data_channel", p.sub_transport_id, "_lossy", False, 0) in media.calls
    assert ("produce_data", p.pub_transport_id, p.data_producer_id, "*", True) in media.calls
    assert p.state == State.JOINED


async def test_join_response_lists_everyone_else_as_they_are_now_in_room_order() -> None:
    manager, _ = make_manager()
    room, a, _ = await joined(manager, "alice")
    _, b, _ = await joined(manager, "bob")
    await room.update_participant(a, metadata="changed")
    _, c, client_c = await joined(manager, "carol")
    others = list(client_c.messages[0].join.other_participants)
    assert [(o.identity, o.metadata) for o in others] == [("alice", "changed"), ("bob", "")]
    assert [(o.state, o.version) for o in others] == [(x.info().state, x.info().version) for x in (a, b)]
    await room.remove(b, models.DisconnectReason.CLIENT_INITIATED)
    await joined(manager, "erin", hidden=True)
    _, _, client_d = await joined(manager, "dave")
    assert [o.identity for o in client_d.messages[0].join.other_participants] == ["alice", "carol"]


async def test_second_participant_sees_first_and_first_gets_update() -> None:
    manager, _ = make_manager()
    _, a, client_a = await joined(manager, "alice")
    _, b, client_b = await joined(manager, "bob")
    join_b = client_b.messages[0].join
    assert [o.identity for o in join_b.other_participants] == ["alice"]
    updates = client_a.updates_for(b.sid)
    assert updates and updates[-1].state == State.JOINED
    assert updates[-1].identity == "bob"


async def test_concurrent_joins_each_get_join_response_first() -> None:
    manager, _ = make_manager()
    clients = [Client() for _ in range(4)]
    await asyncio.gather(*(manager.join(claims(f"p{i}"), ClientParams(), c) for i, c in enumerate(clients)))
    await settle()
    for c in clients:
        assert c.kinds()[0] == "join", c.kinds()
    # Whoever joined later is announced to the ones before it, after their own JoinResponse.
    assert sum(len(c.of("update")) for c in clients) > 0


async def test_publish_update_precedes_subscriber_offer_with_packed_msid() -> None:
    manager, pool = make_manager()
    room, a, client_a = await joined(manager, "alice")
    _, b, client_b = await joined(manager, "bob")
    offers_before = len(client_b.of("offer"))
    track_sid = await publish(room, a, "mic-1")
    assert track_sid.startswith("TR_")
    published = client_a.of("track_published")
    assert published[0].cid == "mic-1" and published[0].track.sid == track_sid
    answers = client_a.of("answer")
    assert answers[-1].id == 1 and answers[-1].type == "answer"
    media = pool.workers[0]
    assert ("produce", a.pub_transport_id, track_sid, FakePlan("0", "microphone")) in media.calls
    # B: the ParticipantUpdate listing the track comes before the offer that carries it.
    kinds = client_b.kinds()
    update_index = max(i for i, m in enumerate(client_b.messages)
                       if m.WhichOneof("message") == "update"
                       and any(t.sid == track_sid for p in m.update.participants for t in p.tracks))
    offer_index = len(kinds) - 1 - kinds[::-1].index("offer")
    assert update_index < offer_index and len(client_b.of("offer")) == offers_before + 1
    offer = client_b.of("offer")[-1]
    assert f"a=msid:{a.sid}|{track_sid} {track_sid}" in offer.sdp
    assert offer.id == 2
    consume = media.find("consume")
    assert consume and consume[-1][1] == b.sub_transport_id and consume[-1][3] == track_sid
    info = client_b.updates_for(a.sid)[-1]
    assert info.tracks[0].mid == "0" and info.tracks[0].mime_type == "audio/opus"


async def test_offer_before_add_track_binds_when_request_arrives() -> None:
    manager, pool = make_manager()
    room, a, client_a = await joined(manager, "alice")
    await room.handle_offer(a, rtc.SessionDescription(type="offer", sdp="v=0\r\nm=video 0 cam-1\r\n", id=3))
    assert client_a.of("answer")[-1].id == 3
    assert not pool.workers[0].find("produce")
    await room.handle_add_track(a, rtc.AddTrackRequest(cid="cam-1", type=models.TrackType.VIDEO,
                                                       source=models.TrackSource.CAMERA, width=640, height=480))
    produced = pool.workers[0].find("produce")
    assert len(produced) == 1 and produced[0][3] == FakePlan("0", "camera")  # the source the request names
    assert a.info().tracks[0].mime_type == "video/VP8"


async def test_late_joiner_is_auto_subscribed_in_first_offer() -> None:
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    track_sid = await publish(room, a, "mic-1")
    _, c, client_c = await joined(manager, "carol", answer=False)
    join = client_c.messages[0].join
    assert [t.sid for t in join.other_participants[0].tracks] == [track_sid]
    first_offer = client_c.of("offer")[0]
    assert f"a=msid:{a.sid}|{track_sid} {track_sid}" in first_offer.sdp


async def test_auto_subscribe_off_needs_update_subscription() -> None:
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    track_sid = await publish(room, a, "mic-1")
    _, b, client_b = await joined(manager, "bob", auto_subscribe=False)
    assert track_sid not in client_b.of("offer")[-1].sdp
    room.handle_subscription(b, rtc.UpdateSubscription(track_sids=[track_sid], subscribe=True))
    await settle()
    assert track_sid in client_b.of("offer")[-1].sdp
    room.handle_subscription(b, rtc.UpdateSubscription(track_sids=["TR_missing00000"], subscribe=True))
    assert client_b.of("subscription_response")[-1].err == models.SubscriptionError.SE_TRACK_NOTFOUND
    await b.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
    room.handle_subscription(b, rtc.UpdateSubscription(track_sids=[track_sid], subscribe=False))
    await settle()
    assert track_sid not in client_b.of("offer")[-1].sdp
    assert ("close_consumer", f"{b.sid}.{track_sid}") in pool.workers[0].calls


async def test_answer_sends_connect_and_resumes_together() -> None:
    """The subscriber transport's connect and the answered consumers' resumes go out without waiting for each
    other's reply (the worker takes them in order); the answer is done when all are, and a failed connect fails it."""
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    track_sid = await publish(room, a, "mic-1")
    _, b, _ = await joined(manager, "bob", answer=False)
    media = pool.workers[0]
    release = asyncio.Event()
    real_connect = media.connect

    async def slow_connect(transport_id: str, **kw: Any) -> None:
        await release.wait()
        await real_connect(transport_id, **kw)

    media.connect = slow_connect  # type: ignore[method-assign]
    answering = asyncio.create_task(b.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=1)))
    await settle()
    assert ("resume_consumer", f"{b.sid}.{track_sid}") in media.calls  # sent while connect is still in flight
    assert all(call[1] != b.sub_transport_id for call in media.find("connect"))
    assert not answering.done()
    release.set()
    await answering
    assert any(call[1] == b.sub_transport_id for call in media.find("connect"))
    # A refused connect fails the answer: the offer stays outstanding.
    _, c, _ = await joined(manager, "carol", answer=False)

    async def refused(transport_id: str, **kw: Any) -> None:
        raise RuntimeError("worker refused connect")

    media.connect = refused  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="refused connect"):
        await c.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=1))
    with pytest.raises(ValueError, match="answer id 2"):  # still awaiting offer 1's answer, not a new round
        await c.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=2))


async def test_only_one_subscriber_offer_outstanding() -> None:
    manager, _ = make_manager()
    room, a, _ = await joined(manager, "alice")
    _, b, client_b = await joined(manager, "bob", answer=False)
    assert len(client_b.of("offer")) == 1
    await publish(room, a, "mic-1")
    assert len(client_b.of("offer")) == 1  # waits for the answer to offer 1
    await b.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=1))
    await settle()
    assert [o.id for o in client_b.of("offer")] == [1, 2]
    with pytest.raises(ValueError, match="answer id 7 does not match offer id 2"):
        await b.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=7))


async def test_can_publish_false_refused_but_subscribes() -> None:
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    track_sid = await publish(room, a, "mic-1")
    _, v, client_v = await joined(manager, "viewer", can_publish=False)
    assert not client_v.messages[0].join.fast_publish
    await room.handle_add_track(v, rtc.AddTrackRequest(cid="x", type=models.TrackType.AUDIO))
    refused = client_v.of("request_response")[-1]
    assert refused.reason == rtc.RequestResponse.Reason.NOT_ALLOWED and refused.add_track.cid == "x"
    assert not client_v.of("track_published")
    assert track_sid in client_v.of("offer")[0].sdp


async def test_publish_sources_enforced() -> None:
    manager, _ = make_manager()
    room, a, client_a = await joined(manager, "alice", can_publish_sources=("microphone",))
    await room.handle_add_track(a, rtc.AddTrackRequest(cid="cam", type=models.TrackType.VIDEO,
                                                       source=models.TrackSource.CAMERA))
    assert client_a.of("request_response")[-1].reason == rtc.RequestResponse.Reason.NOT_ALLOWED
    await room.handle_add_track(a, rtc.AddTrackRequest(cid="mic", type=models.TrackType.AUDIO,
                                                       source=models.TrackSource.MICROPHONE))
    assert client_a.of("track_published")[-1].cid == "mic"


async def test_leave_broadcasts_disconnected_and_frees_transports() -> None:
    manager, pool = make_manager(departure_timeout=0)  # the room closes with its last leave
    room, a, client_a = await joined(manager, "alice")
    _, b, client_b = await joined(manager, "bob")
    version = client_a.updates_for(b.sid)[-1].version
    await room.remove(b, models.DisconnectReason.CLIENT_INITIATED)
    gone = client_a.updates_for(b.sid)[-1]
    assert gone.state == State.DISCONNECTED
    assert gone.disconnect_reason == models.DisconnectReason.CLIENT_INITIATED
    assert gone.version > version
    assert ("close_transport", b.pub_transport_id) in pool.workers[0].calls
    assert ("close_transport", b.sub_transport_id) in pool.workers[0].calls
    assert client_b.closed
    await room.remove(a, models.DisconnectReason.CLIENT_INITIATED)
    await settle()
    assert ("close_router", room.router_id) in pool.workers[0].calls
    assert "r1" not in manager.rooms
    assert manager.targets == {}  # no worker object id still routes to a session


async def test_publisher_leaving_removes_its_tracks_from_subscribers() -> None:
    manager, _ = make_manager()
    room, a, _ = await joined(manager, "alice")
    track_sid = await publish(room, a, "mic-1")
    _, b, client_b = await joined(manager, "bob")
    assert track_sid in client_b.of("offer")[-1].sdp
    await room.remove(a, models.DisconnectReason.CLIENT_INITIATED)
    await settle()
    assert track_sid not in client_b.of("offer")[-1].sdp


async def test_duplicate_identity_replaces_old_session() -> None:
    manager, _ = make_manager()
    room, a, client_a = await joined(manager, "alice")
    _, b1, client_b1 = await joined(manager, "bob")
    _, b2, client_b2 = await joined(manager, "bob")
    assert client_b1.of("leave")[-1].reason == models.DisconnectReason.DUPLICATE_IDENTITY
    assert client_b1.closed and b1.closed
    assert room.participants["bob"] is b2 and b2.sid != b1.sid
    assert client_a.updates_for(b1.sid)[-1].state == State.DISCONNECTED
    assert client_a.updates_for(b2.sid)[-1].state == State.JOINED
    assert client_b2.messages[0].join.other_participants[0].identity == "alice"


async def test_duplicate_identity_alone_keeps_room() -> None:
    manager, pool = make_manager()
    room, _, _ = await joined(manager, "solo")
    room2, p2, _ = await joined(manager, "solo")
    assert room2 is room and not room.closed
    assert room.participants["solo"] is p2
    assert ("close_router", room.router_id) not in pool.workers[0].calls


async def test_versions_increase_on_every_change() -> None:
    manager, _ = make_manager()
    room, a, _ = await joined(manager, "alice")
    _, b, client_b = await joined(manager, "bob")
    track_sid = await publish(room, a, "mic-1")
    await room.handle_mute(a, rtc.MuteTrackRequest(sid=track_sid, muted=True))
    await room.handle_mute(a, rtc.MuteTrackRequest(sid=track_sid, muted=False))
    versions = [u.version for u in client_b.updates_for(a.sid)]
    assert versions == sorted(set(versions)) and len(versions) >= 3


async def test_mute_pauses_producer_and_broadcasts() -> None:
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    _, _, client_b = await joined(manager, "bob")
    track_sid = await publish(room, a, "mic-1")
    await room.handle_mute(a, rtc.MuteTrackRequest(sid=track_sid, muted=True))
    assert ("pause_producer", track_sid) in pool.workers[0].calls
    assert client_b.updates_for(a.sid)[-1].tracks[0].muted
    await room.handle_mute(a, rtc.MuteTrackRequest(sid=track_sid, muted=False))
    assert ("resume_producer", track_sid) in pool.workers[0].calls
    assert not client_b.updates_for(a.sid)[-1].tracks[0].muted
    with pytest.raises(ValueError, match="no published track 'TR_nope'"):
        await room.handle_mute(a, rtc.MuteTrackRequest(sid="TR_nope", muted=True))


async def test_unpublish_by_reoffer_without_the_track() -> None:
    manager, pool = make_manager()
    room, a, client_a = await joined(manager, "alice")
    _, b, client_b = await joined(manager, "bob")
    audio = await publish(room, a, "mic-1", mid="0")
    video = await publish(room, a, "cam-1", kind="video", mid="1", offer_id=2, extra="m=audio 0 mic-1\r\n")
    await b.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
    await settle()
    assert {t.sid for t in client_b.updates_for(a.sid)[-1].tracks} == {audio, video}
    await room.handle_offer(a, rtc.SessionDescription(type="offer", sdp="v=0\r\nm=video 1 cam-1\r\n", id=3))
    await settle()
    assert ("close_producer", audio) in pool.workers[0].calls
    assert [t.sid for t in client_b.updates_for(a.sid)[-1].tracks] == [video]
    await b.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
    await settle()
    assert audio not in client_b.of("offer")[-1].sdp and video in client_b.of("offer")[-1].sdp


async def test_becomes_active_on_subscriber_dtls_connected() -> None:
    manager, _ = make_manager()
    room, a, client_a = await joined(manager, "alice")
    _, b, _ = await joined(manager, "bob")
    manager.on_notification(0, "transport.dtls_state", b.pub_transport_id, {"state": "connected"})
    assert b.state == State.JOINED
    manager.on_notification(0, "transport.dtls_state", b.sub_transport_id, {"state": "connected"})
    assert b.state == State.ACTIVE
    assert client_a.updates_for(b.sid)[-1].state == State.ACTIVE


def user_packet(payload: bytes, *, to: list[str] | None = None, seq: int = 0,
                claimed: str = "mallory") -> bytes:
    return models.DataPacket(
        kind=models.DataPacket.Kind.RELIABLE, participant_identity=claimed, sequence=seq,
        user=models.UserPacket(payload=payload, topic="t", destination_identities=to or []),
    ).SerializeToString()


async def test_data_to_destination_only_with_sender_set_by_server() -> None:
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    _, b, _ = await joined(manager, "bob")
    _, c, _ = await joined(manager, "carol")
    manager.on_notification(0, "data_producer.message", a.data_producer_id,
                            {"label": "_reliable", "data": user_packet(b"hi", to=["bob"], seq=1)})
    await settle()
    sent = pool.workers[0].sent
    assert [(tid, label) for tid, label, _ in sent] == [(b.sub_transport_id, "_reliable")]
    packet = models.DataPacket.FromString(sent[0][2])
    assert packet.participant_identity == "alice" and packet.participant_sid == a.sid
    assert packet.user.participant_identity == "alice" and packet.user.payload == b"hi"
    assert list(packet.destination_identities) == ["bob"] and packet.sequence == 1
    # a repeated or older sequence on the reliable channel is dropped
    assert room.forward_data(a, "_reliable", user_packet(b"again", to=["bob"], seq=1)) == 0
    # no destinations: everyone but the sender, lossy stays lossy
    assert room.forward_data(a, "_lossy", user_packet(b"all")) == 2
    await settle()
    assert {(tid, label) for tid, label, _ in sent[1:]} == {(b.sub_transport_id, "_lossy"),
                                                          (c.sub_transport_id, "_lossy")}


async def test_data_forwarding_rpc_and_refusals() -> None:
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    _, b, _ = await joined(manager, "bob")
    _, quiet, _ = await joined(manager, "quiet", can_publish_data=False)
    rpc = models.DataPacket(destination_identities=["bob"],
                            rpc_request=models.RpcRequest(id="1", method="m", payload="p")).SerializeToString()
    assert room.forward_data(a, "_reliable", rpc) == 1
    assert room.forward_data(quiet, "_reliable", user_packet(b"x")) == 0
    assert room.forward_data(a, "_reliable", b"\xff\xff\xff") == 0
    assert room.forward_data(a, "_reliable", "text") == 0
    assert room.forward_data(a, "_data_track", user_packet(b"x")) == 0
    metrics_packet = models.DataPacket()
    metrics_packet.metrics.SetInParent()
    metrics = metrics_packet.SerializeToString()
    assert room.forward_data(a, "_lossy", metrics) == 0
    await settle()
    assert len(pool.workers[0].sent) == 1
    assert models.DataPacket.FromString(pool.workers[0].sent[0][2]).rpc_request.method == "m"


async def test_data_to_a_participant_without_subscriber_pc_uses_its_publisher_pc() -> None:
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    _, mute, client_m = await joined(manager, "nosub", can_subscribe=False)
    assert not client_m.messages[0].join.subscriber_primary and not client_m.of("offer")
    room.forward_data(a, "_reliable", user_packet(b"x", to=["nosub"]))
    await settle()
    assert [(tid, label) for tid, label, _ in pool.workers[0].sent] == [(mute.pub_transport_id, "_reliable")]


async def test_hidden_participant_not_listed_and_anonymous_data() -> None:
    manager, pool = make_manager()
    room, a, client_a = await joined(manager, "alice")
    _, h, client_h = await joined(manager, "ghost", hidden=True)
    assert not client_a.updates_for(h.sid)
    _, b, client_b = await joined(manager, "bob")
    assert [o.identity for o in client_b.messages[0].join.other_participants] == ["alice"]
    room.forward_data(h, "_reliable", user_packet(b"boo", to=["bob"]))
    await settle()
    packet = models.DataPacket.FromString(pool.workers[0].sent[-1][2])
    assert packet.participant_identity == "" and packet.participant_sid == ""


async def test_grace_period_removes_session_after_signal_loss() -> None:
    manager, pool = make_manager(grace_period_s=0.01)
    room, a, client_a = await joined(manager, "alice")
    _, b, _ = await joined(manager, "bob")
    room.signal_closed(b)
    for _ in range(100):
        if b.closed:
            break
        await asyncio.sleep(0.01)
    assert b.closed and "bob" not in room.participants
    for _ in range(100):
        if ("close_transport", b.sub_transport_id) in pool.workers[0].calls:
            break
        await asyncio.sleep(0.01)
    assert ("close_transport", b.pub_transport_id) in pool.workers[0].calls
    assert ("close_transport", b.sub_transport_id) in pool.workers[0].calls
    gone = client_a.updates_for(b.sid)[-1]
    assert gone.state == State.DISCONNECTED and gone.disconnect_reason == models.DisconnectReason.SIGNAL_CLOSE


async def test_two_rooms_on_two_workers_are_separate() -> None:
    manager, pool = make_manager(workers=2)
    room1, a, client_a = await joined(manager, "alice", room="one")
    room2, b, client_b = await joined(manager, "bob", room="two")
    assert {room1.worker_id, room2.worker_id} == {0, 1}
    await publish(room1, a, "mic-1")
    assert not client_b.updates_for(a.sid) and not client_a.updates_for(b.sid)
    assert not pool.workers[room2.worker_id].find("produce")
    assert pool.workers[room1.worker_id].find("produce")


async def test_worker_death_sends_reconnect_and_drops_rooms() -> None:
    manager, _ = make_manager()
    room, a, client_a = await joined(manager, "alice")
    manager.on_worker_died(0)
    await settle()
    leave = client_a.of("leave")[-1]
    assert leave.action == rtc.LeaveRequest.Action.RECONNECT
    assert manager.rooms == {} and a.closed
    assert manager.targets == {}


async def test_no_worker_available() -> None:
    manager, pool = make_manager(worker_wait_s=0.05)
    pool.down.add(0)
    with pytest.raises(NoWorkerAvailable, match="no worker is running"):
        await manager.join(claims("alice"), ClientParams(), Client())


async def test_join_waits_for_a_respawning_worker() -> None:
    manager, pool = make_manager(worker_wait_s=5.0)
    pool.down.add(0)
    asyncio.get_running_loop().call_later(0.05, pool.down.discard, 0)
    room, p = await manager.join(claims("alice"), ClientParams(), Client())
    assert room.worker_id == 0 and p.state == State.JOINED


async def test_track_settings_pause_and_layers() -> None:
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    _, b, _ = await joined(manager, "bob")
    req = rtc.AddTrackRequest(cid="cam", type=models.TrackType.VIDEO, source=models.TrackSource.CAMERA,
                              width=1280, height=720, layers=[
                                  models.VideoLayer(quality=models.VideoQuality.LOW, width=320, height=180),
                                  models.VideoLayer(quality=models.VideoQuality.MEDIUM, width=640, height=360),
                                  models.VideoLayer(quality=models.VideoQuality.HIGH, width=1280, height=720)])
    await room.handle_add_track(a, req)
    await room.handle_offer(a, rtc.SessionDescription(type="offer", sdp="v=0\r\nm=video 0 cam\r\n", id=1))
    await settle()
    track_sid = a.info().tracks[0].sid
    consumer = f"{b.sid}.{track_sid}"
    await b.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
    await b.set_track_settings(rtc.UpdateTrackSettings(track_sids=[track_sid], width=500, height=300))
    assert ("set_preferred_layers", consumer, 1) in pool.workers[0].calls
    await b.set_track_settings(rtc.UpdateTrackSettings(track_sids=[track_sid], disabled=True))
    assert ("pause_consumer", consumer) in pool.workers[0].calls
    await b.set_track_settings(rtc.UpdateTrackSettings(track_sids=[track_sid], disabled=False, width=500,
                                                       height=300))
    assert ("resume_consumer", consumer) in pool.workers[0].calls
    await b.set_track_settings(rtc.UpdateTrackSettings(track_sids=[track_sid], quality=models.VideoQuality.LOW))
    assert pool.workers[0].calls[-1] == ("set_preferred_layers", consumer, 0)
    await b.set_track_settings(rtc.UpdateTrackSettings(track_sids=[track_sid], quality=models.VideoQuality.HIGH))
    assert pool.workers[0].calls[-1] == ("set_preferred_layers", consumer, 2)
    await b.set_track_settings(rtc.UpdateTrackSettings(track_sids=[track_sid], quality=models.VideoQuality.OFF))
    assert pool.workers[0].calls[-1] == ("pause_consumer", consumer)
    # settings given before the consumer exists are applied when it is created
    _, c, _ = await joined(manager, "carol", auto_subscribe=False, answer=False)
    room.handle_subscription(c, rtc.UpdateSubscription(track_sids=[track_sid], subscribe=True))
    await c.set_track_settings(rtc.UpdateTrackSettings(track_sids=[track_sid], width=320, height=180))
    await c.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
    await settle()
    created = [x for x in pool.workers[0].find("consume") if x[1] == c.sub_transport_id]
    assert created == [("consume", c.sub_transport_id, f"{c.sid}.{track_sid}", track_sid, created[0][4], 0, True)]
    assert ("resume_consumer", f"{c.sid}.{track_sid}") not in pool.workers[0].calls  # its offer is unanswered
    await c.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
    assert pool.workers[0].calls[-1] == ("resume_consumer", f"{c.sid}.{track_sid}")


async def test_consumer_is_paused_until_the_subscriber_answers_the_offer_with_its_track() -> None:
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    _, b, client_b = await joined(manager, "bob")
    _, c, client_c = await joined(manager, "carol")
    await publish(room, a, "mic")
    await settle()
    track_sid = a.info().tracks[0].sid
    for p, client in ((b, client_b), (c, client_c)):
        consumer = f"{p.sid}.{track_sid}"
        assert [x[-1] for x in pool.workers[0].find("consume") if x[2] == consumer] == [True]  # created paused
        assert ("resume_consumer", consumer) not in pool.workers[0].calls
        assert track_sid in client.of("offer")[-1].sdp  # the offer carrying the track is out, unanswered
    # carol turns the track off before answering: her consumer stays paused after the answer
    await c.set_track_settings(rtc.UpdateTrackSettings(track_sids=[track_sid], disabled=True))
    await b.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
    await c.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
    await settle()
    resumed = [x[1] for x in pool.workers[0].find("resume_consumer")]
    assert resumed == [f"{b.sid}.{track_sid}"]
    assert ("pause_consumer", f"{c.sid}.{track_sid}") not in pool.workers[0].calls
    await c.set_track_settings(rtc.UpdateTrackSettings(track_sids=[track_sid], disabled=False))
    assert pool.workers[0].calls[-1] == ("resume_consumer", f"{c.sid}.{track_sid}")


def test_choose_worker_least_loaded() -> None:
    loads = [WorkerLoad(0, True, rooms=1), WorkerLoad(1, True, rooms=0, transports=4), WorkerLoad(2, False)]
    assert choose_worker(loads) == 1
    assert choose_worker([WorkerLoad(0, True, rooms=2), WorkerLoad(1, True, rooms=2)]) == 0
    with pytest.raises(NoWorkerAvailable, match="no worker is running"):
        choose_worker([WorkerLoad(0, False)])


def test_loads_from_supervisor_slots() -> None:
    @dataclass
    class C:
        available: bool

    @dataclass
    class Slot:
        worker_id: int
        running: bool
        client: C
        heartbeat: dict[str, Any]

    slots = [Slot(0, True, C(True), {"counters": {"transports": 6, "consumers": 4}}),
             Slot(1, True, C(False), {}),
             Slot(2, True, C(True), {"counters": {"transports": "x"}})]
    loads = loads_from_slots(slots, {2: 1})
    assert loads[0] == WorkerLoad(0, True, 0, 6, 4)
    assert not loads[1].available
    assert loads[2] == WorkerLoad(2, True, 1, 0, 0)
    assert choose_worker(loads) == 0  # 6 transports + 4 consumers (8) < one room (10)


# ----------------------------------------------------------------- with the real SDP layer (control.rtc.negotiation)

DATA = __import__("pathlib").Path(__file__).resolve().parents[1] / "data"


class NegotiatingMedia(FakeMedia):
    """FakeMedia whose transports have real ICE/DTLS parameters, so that control.rtc.negotiation can write SDP."""

    async def create_transport(self, router_id: str, transport_id: str, *, data_producer: Any = None,
                               data_channels: Any = ()) -> Any:
        from control.rtc.negotiation import TransportParams

        self._create(router_id, transport_id, data_producer, data_channels)
        return TransportParams(ice_ufrag=f"u{len(self.calls):04d}", ice_pwd="p" * 24,
                               fingerprints=[("sha-256", ":".join(["AB"] * 32))],
                               candidate_ip="198.51.100.1", candidate_port=7882)


async def test_real_negotiation_binds_msid_tracks_and_aiortc_answers_subscriber_offer() -> None:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from control.rtc import sdp
    from control.rtc.participant import LiveKitNegotiator

    pool = FakePool(1)
    pool.workers = [NegotiatingMedia(0)]
    manager = RoomManager(pool, LiveKitNegotiator(), RoomSettings(keys={"devkey": "secret"}))
    offer = (DATA / "aiortc_offer.sdp").read_text()
    msids = {m.kind: m.msids[0].track for m in sdp.parse(offer).media if m.msids}
    client_a = Client()
    room, a = await manager.join(claims("alice"), ClientParams(), client_a)
    for kind, cid in msids.items():
        await room.handle_add_track(a, rtc.AddTrackRequest(
            cid=cid, type=models.TrackType.AUDIO if kind == "audio" else models.TrackType.VIDEO,
            source=models.TrackSource.MICROPHONE if kind == "audio" else models.TrackSource.CAMERA))
    await room.handle_offer(a, rtc.SessionDescription(type="offer", sdp=offer, id=4))
    answer = client_a.of("answer")[-1]
    assert answer.id == 4 and "a=ice-lite" in answer.sdp and "a=setup:passive" in answer.sdp
    produced = pool.workers[0].find("produce")
    assert sorted(c[3].kind for c in produced) == ["audio", "video"]
    tracks = {t.type: t for t in a.info().tracks}
    assert tracks[models.TrackType.AUDIO].mime_type.lower() == "audio/opus"
    assert tracks[models.TrackType.VIDEO].mime_type.startswith("video/")
    trickle = client_a.of("trickle")[0]
    assert trickle.target == rtc.SignalTarget.PUBLISHER and "198.51.100.1 7882 typ host" in trickle.candidateInit

    client_b = Client()
    _, b = await manager.join(claims("bob"), ClientParams(), client_b)
    await settle()
    sub_offer = client_b.of("offer")[-1]
    parsed = sdp.parse(sub_offer.sdp)
    media_msids = [(m.msids[0].stream, m.msids[0].track) for m in parsed.media if m.msids]
    assert sorted(media_msids) == sorted((f"{a.sid}|{t.sid}", t.sid) for t in a.info().tracks)
    assert [m.kind for m in parsed.media].count("application") == 1
    pc = RTCPeerConnection()
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sub_offer.sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await b.handle_answer(rtc.SessionDescription(type="answer", sdp=pc.localDescription.sdp, id=sub_offer.id))
    finally:
        await pc.close()
    connects = [c for c in pool.workers[0].find("connect") if c[1] == b.sub_transport_id]
    assert connects == [("connect", b.sub_transport_id, "server", 5000)]
    consumed = {c[3] for c in pool.workers[0].find("consume") if c[1] == b.sub_transport_id}
    assert consumed == {t.sid for t in a.info().tracks}


async def test_speakers_from_audio_levels() -> None:
    manager, pool = make_manager()
    room, a, client_a = await joined(manager, "alice")
    _, b, client_b = await joined(manager, "bob")
    mic = await publish(room, a, "mic-1")
    media = pool.workers[0]
    media.producer_stats[mic] = {"audio_level_sum": 0, "audio_level_count": 0}
    assert await room.detect_speakers() == []
    media.producer_stats[mic] = {"audio_level_sum": 20 * 50, "audio_level_count": 50}  # -20 dBov: speaking
    changed = await room.detect_speakers()
    assert [(s.sid, s.active) for s in changed] == [(a.sid, True)]
    assert changed[0].level == pytest.approx(0.1, abs=1e-3)
    speakers = client_b.of("speakers_changed")[-1].speakers
    assert speakers[0].sid == a.sid and speakers[0].active and client_a.of("speakers_changed")
    media.producer_stats[mic] = {"audio_level_sum": 20 * 50 + 20 * 10, "audio_level_count": 60}
    assert await room.detect_speakers() == []  # same level: nothing new to say
    media.producer_stats[mic] = {"audio_level_sum": 1200 + 127 * 50, "audio_level_count": 110}  # silence
    changed = await room.detect_speakers()
    assert [(s.sid, s.active, s.level) for s in changed] == [(a.sid, False, 0.0)]
    await room.handle_mute(a, rtc.MuteTrackRequest(sid=mic, muted=True))
    assert await room.detect_speakers() == []


async def test_track_subscribed_once_and_room_updates() -> None:
    manager, _ = make_manager()
    room, a, client_a = await joined(manager, "alice")
    track_sid = await publish(room, a, "mic-1")
    assert client_a.of("track_subscribed") == []
    _, b, _ = await joined(manager, "bob")
    _, c, _ = await joined(manager, "carol")
    assert [t.track_sid for t in client_a.of("track_subscribed")] == [track_sid]
    assert client_a.of("room_update")[-1].room.num_participants == 3
    assert client_a.of("room_update")[-1].room.num_publishers == 1
    await room.remove(c, models.DisconnectReason.CLIENT_INITIATED)
    assert client_a.of("room_update")[-1].room.num_participants == 2
    assert room.info().num_publishers == 1
    await room.unpublish(a, track_sid)
    assert room.info().num_publishers == 0
    assert room.find_track(track_sid) is None
    bob_track = await publish(room, b, "mic-2")
    assert room.info().num_publishers == 1
    found = room.find_track(bob_track)
    assert found is not None and found[0] is b
    await room.remove(b, models.DisconnectReason.CLIENT_INITIATED)
    assert (room.info().num_participants, room.info().num_publishers) == (1, 0)
    assert room.find_track(bob_track) is None


async def test_publisher_ice_restart_gets_new_server_credentials() -> None:
    manager, pool = make_manager()
    room, a, client_a = await joined(manager, "alice")
    await room.handle_offer(a, rtc.SessionDescription(type="offer", sdp="v=0\r\na=ice-ufrag:aaaa\r\n", id=1))
    await room.handle_offer(a, rtc.SessionDescription(type="offer", sdp="v=0\r\na=ice-ufrag:aaaa\r\n", id=2))
    assert not pool.workers[0].find("restart_ice")
    before = a.pub_params.ice_ufrag
    await room.handle_offer(a, rtc.SessionDescription(type="offer", sdp="v=0\r\na=ice-ufrag:bbbb\r\n", id=3))
    restarts = pool.workers[0].find("restart_ice")
    assert [r[1] for r in restarts] == [a.pub_transport_id]
    assert a.pub_params.ice_ufrag == restarts[0][2] != before
    assert [x.id for x in client_a.of("answer")] == [1, 2, 3]


async def test_consume_failure_drops_the_subscription_and_still_offers() -> None:
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    mic = await publish(room, a, "mic-1")
    cam = await publish(room, a, "cam-1", kind="video", mid="1", offer_id=2, extra="m=audio 0 mic-1\r\n")
    pool.workers[0].gone.add(mic)
    _, b, client_b = await joined(manager, "bob", answer=False)
    offer = client_b.of("offer")[-1].sdp
    assert cam in offer and mic not in offer
    assert client_b.of("subscription_response")[-1].track_sid == mic
    assert set(b.subscriptions) == {cam}


def test_livekit_negotiator_orders_simulcast_layers_low_to_high() -> None:
    from control.rtc.negotiation import TransportParams
    from control.rtc.participant import LiveKitNegotiator

    offer = (DATA / "chrome_simulcast_offer.sdp").read_text().replace("\r\n", "\n").replace("\n", "\r\n")
    assert "a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f" in offer
    # the same offer with the rids listed high first, as the Rust SDK writes them ("a=simulcast:send h;q")
    high_first = offer.replace("a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f",
                               "a=rid:f send\r\na=rid:h send\r\na=rid:q send\r\na=simulcast:send f;h;q")
    local = TransportParams(ice_ufrag="uuuu", ice_pwd="p" * 24, fingerprints=[("sha-256", ":".join(["AB"] * 32))],
                            candidate_ip="198.51.100.1", candidate_port=7882)
    for text in (offer, high_first):
        answer = LiveKitNegotiator().answer(text, local)
        video = next(m for m in answer.media if m.kind == "video")
        assert [e[0] for e in video.plan.encodings] == ["q", "h", "f"]


async def test_subscription_permissions_of_a_publisher() -> None:
    manager, _ = make_manager()
    room, a, _ = await joined(manager, "alice")
    _, b, client_b = await joined(manager, "bob")
    _, c, client_c = await joined(manager, "carol")
    mic = await publish(room, a, "mic-1")
    assert mic in b.subscriptions and mic in c.subscriptions
    only_bob = rtc.SubscriptionPermission(all_participants=False, track_permissions=[
        rtc.TrackPermission(
            participant_identity="bob", all_tracks=True)])
    room.handle_subscription_permission(a, only_bob)
    assert mic in b.subscriptions and not b.subscriptions[mic].removed
    assert c.subscriptions[mic].removed
    update = client_c.of("subscription_permission_update")[-1]
    assert (update.participant_sid, update.track_sid, update.allowed) == (a.sid, mic, False)
    assert client_b.of("subscription_permission_update") == []
    # an explicit request from an excluded subscriber is refused the same way, and said only once
    room.handle_subscription(c, rtc.UpdateSubscription(track_sids=[mic], subscribe=True))
    assert len(client_c.of("subscription_permission_update")) == 1
    await c.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
    await settle()
    assert mic not in client_c.of("offer")[-1].sdp
    room.handle_subscription_permission(a, rtc.SubscriptionPermission(all_participants=True))
    await c.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
    await settle()
    assert client_c.of("subscription_permission_update")[-1].allowed
    assert mic in client_c.of("offer")[-1].sdp


async def test_a_refused_producer_still_gets_the_answer() -> None:
    manager, pool = make_manager()
    room, a, client_a = await joined(manager, "alice")
    pub = a.handle_add_track(rtc.AddTrackRequest(cid="mic-1", type=models.TrackType.AUDIO))
    assert pub is not None
    pool.workers[0].gone.add(pub.sid)
    await room.handle_offer(a, rtc.SessionDescription(type="offer", sdp="v=0\r\nm=audio 0 mic-1\r\n", id=9))
    assert client_a.of("answer")[-1].id == 9
    assert a.info().tracks == [] and not pub.published


async def test_unanswerable_offer_is_refused_with_a_reason() -> None:
    from control.rtc.participant import LiveKitNegotiator

    pool = FakePool(1)
    pool.workers = [NegotiatingMedia(0)]
    manager = RoomManager(pool, LiveKitNegotiator(), RoomSettings(keys={"devkey": "secret"}))
    room, a = await manager.join(claims("alice"), ClientParams(), Client())
    with pytest.raises(ValueError, match="cannot answer the publisher offer: "):
        await room.handle_offer(a, rtc.SessionDescription(type="offer", sdp="v=0\r\nbogus\r\n", id=1))


async def test_video_consumer_retransmits_as_rtx_unless_the_answer_refuses_it() -> None:
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    _, b, _ = await joined(manager, "bob")
    _, c, _ = await joined(manager, "carol")
    cam = await publish(room, a, "cam", kind="video")
    worker = pool.workers[0]
    b_cam, c_cam = f"{b.sid}.{cam}", f"{c.sid}.{cam}"
    rtx_ssrc = b.subscriptions[cam].spec.rtx_ssrc
    assert rtx_ssrc not in (0, b.subscriptions[cam].spec.out_ssrc)
    assert worker.rtx[b_cam] == (rtx_ssrc, {96: 97}) and worker.rtx[c_cam][0] != 0
    await b.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
    await settle()
    assert ("close_consumer", b_cam) not in worker.calls and ("resume_consumer", b_cam) in worker.calls
    manager.negotiator.refuse_rtx = True  # carol's answer drops RTX: her consumer is re-created without it
    await c.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
    await settle()
    names = [x[0] for x in worker.calls if c_cam in x]
    assert names == ["consume", "close_consumer", "consume", "resume_consumer"]
    assert worker.rtx[c_cam] == (0, {})


async def test_dynacast_tells_the_publisher_which_layers_its_subscribers_want() -> None:
    manager, _ = make_manager(dynacast_pause_delay_s=0.05)
    room, a, client_a = await joined(manager, "alice")
    req = rtc.AddTrackRequest(cid="cam", type=models.TrackType.VIDEO, source=models.TrackSource.CAMERA,
                              width=1280, height=720, layers=[
                                  models.VideoLayer(quality=models.VideoQuality.LOW, width=320, height=180),
                                  models.VideoLayer(quality=models.VideoQuality.MEDIUM, width=640, height=360),
                                  models.VideoLayer(quality=models.VideoQuality.HIGH, width=1280, height=720)])
    await room.handle_add_track(a, req)
    await room.handle_offer(a, rtc.SessionDescription(type="offer", sdp="v=0\r\nm=video 0 cam\r\n", id=1))
    await publish(room, a, "mic", mid="1", offer_id=2, extra="m=video 0 cam\r\n")
    video_sid = next(pub.sid for pub in a.publications.values() if pub.cid == "cam")

    def told() -> list[tuple[str, list[bool], list[str]]]:
        return [(u.track_sid, [q.enabled for q in u.subscribed_qualities], [c.codec for c in u.subscribed_codecs])
                for u in client_a.of("subscribed_quality_update")]

    assert told() == []
    _, b, _ = await joined(manager, "bob")  # auto-subscribed: its consumer starts on the highest layer
    assert told() == [(video_sid, [True, True, True], ["vp8"])]  # at once, for the video track only
    await b.set_track_settings(rtc.UpdateTrackSettings(track_sids=[video_sid], quality=models.VideoQuality.LOW))
    assert len(told()) == 1  # turning layers off waits the pause delay
    await asyncio.sleep(0.1)
    assert told()[1:] == [(video_sid, [True, False, False], ["vp8"])]
    await b.set_track_settings(rtc.UpdateTrackSettings(track_sids=[video_sid], quality=models.VideoQuality.HIGH))
    assert told()[2:] == [(video_sid, [True, True, True], ["vp8"])]  # turning them on does not
    _, c, _ = await joined(manager, "carol")  # a second subscriber on the same layer changes nothing
    await b.set_track_settings(rtc.UpdateTrackSettings(track_sids=[video_sid], disabled=True))
    await c.set_track_settings(rtc.UpdateTrackSettings(track_sids=[video_sid], width=600, height=340))
    await asyncio.sleep(0.1)
    assert told()[3:] == [(video_sid, [True, True, False], ["vp8"])]  # bob counts as nothing, carol wants MEDIUM
    await room.remove(c, models.DisconnectReason.CLIENT_INITIATED)
    await asyncio.sleep(0.1)
    assert told()[4:] == [(video_sid, [False, False, False], ["vp8"])]  # nobody wants anything
    await b.set_track_settings(rtc.UpdateTrackSettings(track_sids=[video_sid], disabled=False,
                                                       quality=models.VideoQuality.HIGH))
    assert told()[5:] == [(video_sid, [True, True, True], ["vp8"])]
    # unpublished: nothing more about it, even when its subscriber goes
    await room.handle_offer(a, rtc.SessionDescription(type="offer", sdp="v=0\r\nm=audio 1 mic\r\n", id=3))
    await settle()
    assert video_sid not in room.dynacast.tracks
    room.handle_subscription(b, rtc.UpdateSubscription(track_sids=[video_sid], subscribe=False))
    await asyncio.sleep(0.1)
    assert len(told()) == 6


# ------------------------------------------------------------------------------------------ connection quality


async def active(manager: RoomManager, identity: str, protocol: int = 16) -> tuple[Any, Any, Client]:
    """A participant whose SDK speaks ``protocol``, with both transports connected (ACTIVE)."""
    client = Client()
    room, p = await manager.join(claims(identity), ClientParams(protocol=protocol), client)
    await settle()
    if client.of("offer"):
        await p.handle_answer(rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=0))
        await settle()
    for transport_id in (p.pub_transport_id, p.sub_transport_id):
        manager.on_notification(0, "transport.dtls_state", transport_id, {"state": "connected"})
    assert p.state == State.ACTIVE
    return room, p, client


def qualities(client: Client) -> list[list[tuple[str, int]]]:
    return [[(u.participant_sid, u.quality) for u in m.updates] for m in client.of("connection_quality")]


async def test_connection_quality_rounds_reach_participants_only_when_due_and_changed() -> None:
    Q = models.ConnectionQuality
    manager, _ = make_manager()
    room, a, client_a = await active(manager, "alice")
    mic = await publish(room, a, "mic-1")
    _, b, client_b = await active(manager, "bob")
    sub = b.subscriptions[mic]
    # the first round: everyone is new, and without scores EXCELLENT (MOS 4.5); bob also hears of alice, whom he
    # subscribes to, alice only of herself
    assert room.send_quality_updates() == 2
    assert qualities(client_a) == [[(a.sid, Q.EXCELLENT)]]
    assert qualities(client_b) == [[(b.sid, Q.EXCELLENT), (a.sid, Q.EXCELLENT)]]
    assert client_b.of("connection_quality")[0].updates[0].score == pytest.approx(4.5)
    assert room.send_quality_updates() == 0  # nothing changed: nothing sent
    # bob's downlink goes bad (the worker's score of his consumer), alice's uplink stays fine
    manager.on_notification(0, "transport.scores", b.sub_transport_id, {"consumers": [[sub.consumer_id, 30]]})
    manager.on_notification(0, "transport.scores", a.pub_transport_id, {"producers": [[mic, 95]]})
    assert room.send_quality_updates() == 2
    assert qualities(client_b)[-1] == [(b.sid, Q.POOR), (a.sid, Q.EXCELLENT)]
    assert qualities(client_a)[-1] == [(a.sid, Q.EXCELLENT)]  # she does not subscribe to bob
    assert 1.0 < client_b.of("connection_quality")[-1].updates[0].score < 2.5
    # nothing arrives at all: LOST, told as POOR to an SDK older than protocol 11
    _, c, client_c = await active(manager, "carol", protocol=9)
    manager.on_notification(0, "transport.scores", c.pub_transport_id, {"producers": [["x", 20]]})
    manager.on_notification(0, "transport.scores", b.sub_transport_id, {"consumers": [[sub.consumer_id, 10]]})
    room.send_quality_updates()
    assert qualities(client_b)[-1][0] == (b.sid, Q.LOST)
    assert qualities(client_c)[-1][0] == (c.sid, Q.POOR)
    # a bad body is dropped before it reaches the room (control/workers/worker_client.py checks it), so the room
    # never sees a score outside 0-100; the loop runs rounds every interval
    room.stop_quality_updates()
    sent = len(client_b.of("connection_quality"))
    room.start_quality_updates(interval_s=0.05)
    manager.on_notification(0, "transport.scores", b.sub_transport_id, {"consumers": [[sub.consumer_id, 100]]})
    await asyncio.sleep(0.02)
    assert len(client_b.of("connection_quality")) == sent  # not due yet
    await asyncio.sleep(0.06)
    assert qualities(client_b)[-1][0] == (b.sid, Q.EXCELLENT)
    await room.remove(b, models.DisconnectReason.CLIENT_INITIATED)
    room.send_quality_updates()
    assert b.sid not in room.quality.scores  # a participant that left is forgotten
    room.stop_quality_updates()


async def test_a_quality_round_of_a_large_room_yields_to_the_loop_between_chunks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The periodic round sends QUALITY_CHUNK messages per loop iteration; every active participant still gets its
    update, once."""
    from control.rtc import rooms

    monkeypatch.setattr(rooms, "QUALITY_CHUNK", 2)
    manager, _ = make_manager()
    sessions = [await active(manager, f"p{n}") for n in range(5)]
    room = sessions[0][0]
    round_task = asyncio.ensure_future(room._quality_round())
    sent_per_iteration = []
    while not round_task.done():
        before = sum(len(c.of("connection_quality")) for _, _, c in sessions)
        await asyncio.sleep(0)
        sent_per_iteration.append(sum(len(c.of("connection_quality")) for _, _, c in sessions) - before)
    assert [len(c.of("connection_quality")) for _, _, c in sessions] == [1] * 5
    assert max(sent_per_iteration) <= 2 and len([n for n in sent_per_iteration if n]) >= 3
