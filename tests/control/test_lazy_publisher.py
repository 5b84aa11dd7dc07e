"""A subscribe-only participant's publisher transport is created on its first publisher offer, not at join.

Against the fakes of ``tests/control/test_rooms.py`` (every worker request recorded): a participant whose token
does not allow publishing gets one transport at join (its subscriber PC); its first publisher offer (data channels,
or tracks after a permission change) creates the publisher transport and is answered; leave, resume, ICE restart
and the worker's failures before and after that offer. With canPublish (``fast_publish``: the SDKs offer at once)
or without canSubscribe (the publisher PC is primary) both transports are still created at join.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit.protocol import models, rtc

from control.rtc.participant import ParticipantError
from control.service.signaling import transport_paths
from tests.control.test_rooms import Client, FakeMedia, claims, joined, make_manager, settle

VIEWER = {"can_publish": False, "can_publish_data": True}


def offer(offer_id: int, ufrag: str = "aaaa", media: str = "") -> rtc.SessionDescription:
    return rtc.SessionDescription(type="offer", sdp=f"v=0\r\na=ice-ufrag:{ufrag}\r\n{media}", id=offer_id)


def created(media: FakeMedia) -> list[str]:
    return [c[2] for c in media.find("create_transport")]


async def test_a_subscribe_only_participant_gets_one_transport_at_join() -> None:
    manager, pool = make_manager()
    _, v, client = await joined(manager, "viewer", **VIEWER)
    join = client.messages[0].join
    assert join.subscriber_primary and not join.fast_publish
    assert created(pool.workers[0]) == [v.sub_transport_id]
    assert not v.has_publisher_transport and v.pub_params is None
    assert not [c for c in pool.workers[0].calls if v.pub_transport_id in c]  # no request names it
    assert client.of("offer")  # the subscriber side is unchanged: its first offer is out


@pytest.mark.parametrize("grants", [{}, {"can_subscribe": False}], ids=["canPublish", "publisher-primary"])
async def test_publishers_and_publisher_primary_sessions_get_both_transports_at_join(grants: dict[str, Any]) -> None:
    manager, pool = make_manager()
    _, p, _ = await joined(manager, "alice", **grants)
    assert set(created(pool.workers[0])) == {p.pub_transport_id, p.sub_transport_id}
    assert p.has_publisher_transport
    assert ("produce_data", p.pub_transport_id, p.data_producer_id, "*", True) in pool.workers[0].calls


async def test_the_first_offer_creates_the_publisher_transport_and_is_answered() -> None:
    manager, pool = make_manager()
    room, v, client = await joined(manager, "viewer", **VIEWER)
    await room.handle_offer(v, offer(7))
    worker = pool.workers[0]
    assert created(worker) == [v.sub_transport_id, v.pub_transport_id]
    assert ("produce_data", v.pub_transport_id, v.data_producer_id, "*", True) in worker.calls  # its data relay
    assert worker.calls.index(("create_transport", room.router_id, v.pub_transport_id)) \
        < worker.calls.index(("connect", v.pub_transport_id, "server", 5000))
    assert [a.id for a in client.of("answer")] == [7]
    trickles = [t for t in client.of("trickle") if t.target == rtc.SignalTarget.PUBLISHER]
    assert trickles and all(v.pub_params.ice_ufrag in t.candidateInit for t in trickles)
    await room.handle_offer(v, offer(8))  # a later offer uses it
    assert created(worker).count(v.pub_transport_id) == 1 and not worker.find("restart_ice")
    assert [a.id for a in client.of("answer")] == [7, 8]


async def test_data_from_a_lazy_publisher_pc_reaches_the_room() -> None:
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    _, v, _ = await joined(manager, "viewer", **VIEWER)
    await room.handle_offer(v, offer(1))
    packet = models.DataPacket(user=models.UserPacket(payload=b"hi"))
    assert room.forward_data(v, "_reliable", packet.SerializeToString()) == 1
    await settle()
    assert [(tid, label) for tid, label, _ in pool.workers[0].sent] == [(a.sub_transport_id, "_reliable")]


async def test_a_permission_to_publish_granted_later_publishes_through_a_new_transport() -> None:
    manager, pool = make_manager()
    room, v, client = await joined(manager, "viewer", **VIEWER)
    permission = models.ParticipantPermission()
    permission.CopyFrom(v.permission)
    permission.can_publish = True
    v.set_permission(permission)
    await room.handle_add_track(v, rtc.AddTrackRequest(cid="mic", name="mic", type=models.TrackType.AUDIO,
                                                       source=models.TrackSource.MICROPHONE))
    await settle()
    worker = pool.workers[0]
    assert v.pub_transport_id in created(worker)  # the AddTrackRequest started it: its offer follows
    await room.handle_offer(v, offer(2, media="m=audio 0 mic\r\n"))
    track_sid = next(iter(v.publications))
    assert created(worker).count(v.pub_transport_id) == 1
    assert [c[1:3] for c in worker.find("produce")] == [(v.pub_transport_id, track_sid)]
    assert [a.id for a in client.of("answer")] == [2]


async def test_leave_before_the_first_offer_frees_only_the_subscriber_transport() -> None:
    manager, pool = make_manager()
    room, a, _ = await joined(manager, "alice")
    _, v, client = await joined(manager, "viewer", **VIEWER)
    await room.remove(v, models.DisconnectReason.CLIENT_INITIATED)
    closes = [c[1] for c in pool.workers[0].find("close_transport")]
    assert closes == [v.sub_transport_id] and client.closed
    assert all(v.sid not in target for target in manager.targets)


async def test_leave_after_the_first_offer_frees_both_transports() -> None:
    manager, pool = make_manager()
    room, v, _ = await joined(manager, "viewer", **VIEWER)
    await room.handle_offer(v, offer(1))
    await room.remove(v, models.DisconnectReason.CLIENT_INITIATED)
    closes = {c[1] for c in pool.workers[0].find("close_transport")}
    assert closes == {v.pub_transport_id, v.sub_transport_id}


class SlowMedia(FakeMedia):
    """A worker whose publisher transports are created only when ``release`` is set, or fail once with ``fail``."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False

    async def create_transport(self, router_id: str, transport_id: str, *, data_producer: Any = None,
                               data_channels: Any = ()) -> Any:
        if transport_id.endswith(".pub"):
            await self.release.wait()
            if self.fail:
                self.fail = False
                raise RuntimeError("worker refused the transport")
        return await super().create_transport(router_id, transport_id, data_producer=data_producer,
                                              data_channels=data_channels)


def slow_manager() -> tuple[Any, SlowMedia]:
    manager, pool = make_manager()
    pool.workers[0] = SlowMedia()
    return manager, pool.workers[0]


async def test_leave_while_the_publisher_transport_is_created_closes_it_when_it_exists() -> None:
    manager, worker = slow_manager()
    room, v, client = await joined(manager, "viewer", **VIEWER)
    worker.release.clear()
    answering = asyncio.get_running_loop().create_task(room.handle_offer(v, offer(1)))
    await settle()
    await room.remove(v, models.DisconnectReason.CLIENT_INITIATED)
    assert [c[1] for c in worker.find("close_transport")] == [v.sub_transport_id]
    worker.release.set()
    with pytest.raises(ParticipantError, match="closed"):
        await answering
    assert [c[1] for c in worker.find("close_transport")] == [v.sub_transport_id, v.pub_transport_id]
    assert not worker.find("connect") or all(c[1] != v.pub_transport_id for c in worker.find("connect"))
    assert not client.of("answer")


async def test_a_failed_creation_refuses_that_offer_and_the_next_one_tries_again() -> None:
    manager, worker = slow_manager()
    room, v, client = await joined(manager, "viewer", **VIEWER)
    worker.fail = True
    with pytest.raises(ParticipantError, match="cannot create the publisher transport"):
        await room.handle_offer(v, offer(1))
    assert not v.has_publisher_transport and not client.of("answer")
    await room.handle_offer(v, offer(2))
    assert v.has_publisher_transport and [a.id for a in client.of("answer")] == [2]


async def test_resume_before_the_first_offer_restarts_only_the_subscriber_and_the_offer_creates() -> None:
    manager, pool = make_manager()
    room, v, _ = await joined(manager, "viewer", **VIEWER)
    fresh = Client()
    await room.resume(v, fresh)
    await settle()
    worker = pool.workers[0]
    assert [r[1] for r in worker.find("restart_ice")] == [v.sub_transport_id]
    assert fresh.of("reconnect") and fresh.of("offer")
    assert not v.has_publisher_transport
    await room.handle_offer(v, offer(1, ufrag="cccc"))  # an SDK that now publishes: a plain first offer
    assert [r[1] for r in worker.find("restart_ice")] == [v.sub_transport_id]
    assert v.pub_transport_id in created(worker) and [a.id for a in fresh.of("answer")] == [1]


async def test_resume_and_ice_restart_after_the_first_offer() -> None:
    manager, pool = make_manager()
    room, v, _ = await joined(manager, "viewer", **VIEWER)
    await room.handle_offer(v, offer(1, ufrag="aaaa"))
    before = v.pub_params.ice_ufrag
    fresh = Client()
    await room.resume(v, fresh)
    await room.handle_offer(v, offer(2, ufrag="bbbb"))  # the client's own ICE restart follows a resume
    restarts = pool.workers[0].find("restart_ice")
    assert [r[1] for r in restarts] == [v.sub_transport_id, v.pub_transport_id]
    assert v.pub_params.ice_ufrag == restarts[1][2] != before
    assert created(pool.workers[0]).count(v.pub_transport_id) == 1
    assert [a.id for a in fresh.of("answer")] == [2]


async def test_worker_death_before_the_first_offer() -> None:
    manager, pool = make_manager()
    _, v, client = await joined(manager, "viewer", **VIEWER)
    manager.on_worker_died(0)
    await settle()
    assert client.of("leave")[-1].action == rtc.LeaveRequest.Action.RECONNECT and v.closed
    assert [c[1] for c in pool.workers[0].find("close_transport")] == [v.sub_transport_id]
    assert manager.targets == {}


async def test_validate_header_says_none_for_a_publisher_transport_not_created() -> None:
    manager, _ = make_manager()
    room, v, _ = await joined(manager, "viewer", **VIEWER)
    viewer = claims("viewer", **VIEWER)
    assert transport_paths(manager, viewer) == "pub=none, sub=connecting"
    await room.handle_offer(v, offer(1))
    assert transport_paths(manager, viewer) == "pub=connecting, sub=connecting"
    assert v.path() == "connecting"  # the primary (subscriber) transport
