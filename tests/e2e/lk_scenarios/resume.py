"""Signal-only reconnects: the subscriber's SDK drops its signal WebSocket (SIMULATE_SIGNAL_RECONNECT) and
resumes with ``reconnect=1``; media keeps flowing and the session (participant sid, subscriptions) survives. Then a
server-requested full reconnect (SIMULATE_FULL_RECONNECT -> leave RECONNECT) rejoins and media flows again."""

from __future__ import annotations

from typing import Any

from common import Receiver, alice_to_bob, wait_for
from livekit import rtc
from livekit.rtc._proto import room_pb2

ROOM = "e2e-resume"


async def run(ctx: Any, result: dict[str, Any]) -> None:
    room_a, publisher, room_b, bob, events = await alice_to_bob(ctx, ROOM)
    await wait_for(lambda: bob.frames("alice", 320, 240) >= 20, 20)
    result["b_sid_before"] = room_b.local_participant.sid
    before = bob.frames("alice", 320, 240)
    await room_b.simulate_scenario(room_pb2.SIMULATE_SIGNAL_RECONNECT)
    await wait_for(lambda: "reconnected" in events, 20)
    await wait_for(lambda: bob.frames("alice", 320, 240) >= before + 30, 20)
    result["resume_events"] = list(events)
    result["b_sid_after_resume"] = room_b.local_participant.sid
    result["frames_after_resume"] = bob.frames("alice", 320, 240) - before
    result["b_subscriptions_after_resume"] = len(bob.subscribed)
    alice = Receiver(room_a).attach()
    await room_b.local_participant.publish_data(b"after resume", reliable=True, topic="t")
    await room_a.local_participant.publish_data(b"to bob", reliable=True, destination_identities=["bob"])
    await wait_for(lambda: bool(alice.data) and bool(bob.data), 10)
    result["data_after_resume"] = [d["data"] for d in alice.data + bob.data]

    events.clear()
    before = bob.frames("alice", 320, 240)
    await room_b.simulate_scenario(room_pb2.SIMULATE_FULL_RECONNECT)
    await wait_for(lambda: "reconnected" in events, 20)
    await wait_for(lambda: bob.frames("alice", 320, 240) >= before + 30, 20)
    result["full_events"] = list(events)
    result["frames_after_full"] = bob.frames("alice", 320, 240) - before
    result["connected"] = room_b.connection_state == rtc.ConnectionState.CONN_CONNECTED
    await bob.stop()
    await alice.stop()
    await publisher.stop()
    await room_b.disconnect()
    await room_a.disconnect()
