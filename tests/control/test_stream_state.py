"""``consumer.stream_state`` from a worker becomes StreamStateUpdate to the subscriber (docs/PROTOCOL.md).

The worker's stream allocator pauses a consumer when not even its lowest layer fits the subscriber's bandwidth;
LiveKit tells the subscriber with StreamStateUpdate {participant_sid: the publisher, track_sid, PAUSED}, and ACTIVE
when it resumes. Rooms and participants run against the fakes of tests/control/test_rooms.py.
"""

from __future__ import annotations

from livekit.protocol import rtc

from control.rtc.participant import consumer_owner, subscription_consumer_id
from router.messages import StreamState
from router.protocol import Event
from tests.control.test_rooms import joined, make_manager, publish


def test_consumer_ids_name_their_subscriber_and_track() -> None:
    assert consumer_owner(subscription_consumer_id("PA_abc", "TR_def")) == ("PA_abc", "TR_def")


async def test_stream_state_reaches_the_subscriber_only() -> None:
    manager, _ = make_manager()
    room, alice, client_a = await joined(manager, "alice")
    _, bob, client_b = await joined(manager, "bob")
    track_sid = await publish(room, alice, "cam", kind="video")
    consumer_id = bob.subscriptions[track_sid].consumer_id

    manager.on_notification(room.worker_id, Event.CONSUMER_STREAM_STATE, consumer_id,
                            StreamState(state="paused").to_wire())
    manager.on_notification(room.worker_id, Event.CONSUMER_STREAM_STATE, consumer_id,
                            StreamState(state="active").to_wire())
    updates = client_b.of("stream_state_update")
    assert [(s.participant_sid, s.track_sid, s.state) for u in updates for s in u.stream_states] == [
        (alice.sid, track_sid, rtc.StreamState.PAUSED),
        (alice.sid, track_sid, rtc.StreamState.ACTIVE),
    ]
    assert client_a.of("stream_state_update") == []

    # Another worker's event for this consumer id, or one for a subscription that is gone, is not passed on.
    manager.on_notification(room.worker_id + 1, Event.CONSUMER_STREAM_STATE, consumer_id,
                            StreamState(state="paused").to_wire())
    bob.unsubscribe(track_sid)
    manager.on_notification(room.worker_id, Event.CONSUMER_STREAM_STATE, consumer_id,
                            StreamState(state="paused").to_wire())
    manager.on_notification(room.worker_id, Event.CONSUMER_STREAM_STATE, "PA_gone.TR_gone",
                            StreamState(state="paused").to_wire())
    assert len(client_b.of("stream_state_update")) == 2
