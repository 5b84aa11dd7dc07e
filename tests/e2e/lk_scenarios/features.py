"""More of the LiveKit surface with real SDK clients: RPC and text streams between participants (rpc_* and
stream_* DataPackets forwarded by the server), active speakers from audio levels, mute/unmute seen by a
subscriber, own metadata updates (canUpdateOwnMetadata) and unpublish."""

from __future__ import annotations

import asyncio
from typing import Any

from common import Publisher, Receiver, connect, wait_for
from livekit import rtc

ROOM = "e2e-features"


async def run(ctx: Any, result: dict[str, Any]) -> None:
    room_a = await connect(ctx.url, ctx.token("alice", ROOM, can_update_own_metadata=True))
    room_b = await connect(ctx.url, ctx.token("bob", ROOM))
    bob = Receiver(room_b).attach()
    speakers: list[list[str]] = []
    room_b.on("active_speakers_changed", lambda ps: speakers.append(sorted(p.identity for p in ps)))
    events: list[str] = []
    room_b.on("track_muted", lambda p, pub: events.append(f"muted {p.identity} {pub.kind}"))
    room_b.on("track_unmuted", lambda p, pub: events.append(f"unmuted {p.identity} {pub.kind}"))
    room_b.on("track_unpublished", lambda pub, p: events.append(f"unpublished {p.identity} {pub.kind}"))
    room_b.on("participant_metadata_changed", lambda p, old, new: events.append(f"metadata {p.identity} {new}"))

    @room_b.local_participant.register_rpc_method("greet")
    async def greet(data: rtc.RpcInvocationData) -> str:
        return f"hello {data.caller_identity}: {data.payload}"

    texts: list[str] = []

    def on_text(reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            texts.append(f"{identity}: {await reader.read_all()}")

        asyncio.create_task(read())

    room_b.register_text_stream_handler("chat", on_text)

    publisher = Publisher(room_a, 320, 240)
    result["published"] = await publisher.publish()
    await wait_for(lambda: bob.frames("alice", 320, 240) >= 10 and bob.audio.get("alice", 0) > 20, 20)
    result["b_video"] = dict(bob.video)

    result["rpc"] = await room_a.local_participant.perform_rpc(destination_identity="bob", method="greet",
                                                               payload="hi", response_timeout=10)
    await room_a.local_participant.send_text("a chat line", topic="chat", destination_identities=["bob"])
    await wait_for(lambda: bool(texts), 10)
    result["texts"] = list(texts)

    await wait_for(lambda: any("alice" in s for s in speakers), 10)
    result["speakers"] = list(speakers)

    audio_pub = next(p for p in room_a.local_participant.track_publications.values()
                     if p.kind == rtc.TrackKind.KIND_AUDIO)
    audio_pub.track.mute()
    await wait_for(lambda: any(e.startswith("muted alice") for e in events), 10)
    audio_pub.track.unmute()
    await wait_for(lambda: any(e.startswith("unmuted alice") for e in events), 10)

    await room_a.local_participant.set_metadata("alice-meta")
    await wait_for(lambda: "metadata alice alice-meta" in events, 10)

    await room_a.local_participant.unpublish_track(audio_pub.sid)
    await wait_for(lambda: any(e.startswith("unpublished alice") for e in events), 10)
    result["events"] = list(events)
    remote = room_b.remote_participants.get(room_a.local_participant.sid) or next(
        p for p in room_b.remote_participants.values() if p.identity == "alice")
    result["b_sees_alice_tracks"] = sorted(int(p.kind) for p in remote.track_publications.values())

    await bob.stop()
    await publisher.stop()
    await room_b.disconnect()
    await room_a.disconnect()
