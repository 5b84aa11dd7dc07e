"""control/rtc/participant.py on its own: a Participant needs no Room, only its seams (MediaApi, Negotiator, a
SignalSink and a ParticipantListener), and the room changes it only through its methods."""

from __future__ import annotations

import asyncio

from livekit.protocol import models, rtc
from test_rooms import Client, FakeMedia, FakeNegotiator, FakePlan, claims, settle  # tests/control is on sys.path

from control.rtc.participant import (
    ClientParams,
    NullParticipantListener,
    Participant,
    ParticipantListener,
    Subscription,
)

State = models.ParticipantInfo.State


class RecordingListener(NullParticipantListener):
    def __init__(self) -> None:
        super().__init__()
        self.created: list[Subscription] = []
        self.layers: dict[str, list[models.VideoLayer]] = {}

    def track_layers(self, track_sid: str) -> list[models.VideoLayer]:
        return self.layers.get(track_sid, [])

    def on_consumer_created(self, sub: Subscription) -> None:
        self.created.append(sub)


def participant(identity: str, media: FakeMedia, listener: ParticipantListener) -> tuple[Participant, Client]:
    sink = Client()
    p = Participant(sid=f"PA_{identity}", claims=claims(identity), client=ClientParams(), sink=sink, media=media,
                    negotiator=FakeNegotiator(), router_id="RM_test", enabled_codecs=("audio/opus", "video/VP8"),
                    listener=listener)
    return p, sink


async def test_publish_and_subscribe_without_a_room() -> None:
    media = FakeMedia()
    alice, alice_sink = participant("alice", media, NullParticipantListener())
    listener = RecordingListener()
    bob, bob_sink = participant("bob", media, listener)
    await alice.setup()
    await bob.setup()
    assert ("create_transport", "RM_test", "PA_alice.pub") in media.calls
    alice.mark_joined()
    bob.mark_joined()
    assert alice.state == State.JOINED and alice.version == 2 and bob.auto_subscribes

    req = rtc.AddTrackRequest(cid="mic", name="mic", type=models.TrackType.AUDIO,
                              source=models.TrackSource.MICROPHONE)
    pub = alice.handle_add_track(req)
    assert pub is not None and alice_sink.of("track_published")[0].track.sid == pub.sid
    published, removed = await alice.handle_offer(rtc.SessionDescription(type="offer", sdp="v=0\r\nm=audio 0 mic\r\n",
                                                                         id=1))
    assert published == [pub] and removed == [] and pub.info.mid == "0"
    # The worker learns the publication's source with the producer (router/temporal.py).
    assert ("produce", "PA_alice.pub", pub.sid, FakePlan("0", "microphone")) in media.calls

    assert bob.subscribe(alice, pub)
    await settle()
    sub = bob.subscriptions[pub.sid]
    assert listener.created == [sub]  # the listener hears of the consumer; nothing reaches a room
    assert sub.spec.out_ssrc in listener._ssrcs and sub.spec.stream_id == f"PA_alice|{pub.sid}"
    assert bob_sink.of("offer") and media.find("consume")[0][2] == f"PA_bob.{pub.sid}"
    assert alice.first_subscription(pub.sid) and not alice.first_subscription(pub.sid)
    assert not alice.first_subscription("TR_unknown")


async def test_what_the_room_changes_goes_through_methods() -> None:
    p, _ = participant("carol", FakeMedia(), NullParticipantListener())
    p.attributes.update({"a": "1", "b": "2"})
    p.update_info(name="", metadata="m", attributes={"a": "", "c": "3"})
    assert p.name == "" and p.metadata == "m" and p.attributes == {"b": "2", "c": "3"}
    p.update_info(name="Carol")
    assert p.name == "Carol" and p.metadata == "m"  # empty values keep the old ones

    assert p.accept_reliable_seq(5) and not p.accept_reliable_seq(5) and not p.accept_reliable_seq(4)
    assert p.accept_reliable_seq(6)

    policy = rtc.SubscriptionPermission(all_participants=False)
    p.set_subscription_policy(policy)
    policy.all_participants = True
    assert p.subscription_policy is not None and not p.subscription_policy.all_participants  # a copy

    assert p.take_resume_drop() == ""
    p.drop_next_resume("silent")
    assert p.take_resume_drop() == "silent" and p.take_resume_drop() == ""

    p.mark_disconnected(models.DisconnectReason.SIGNAL_CLOSE)
    assert p.state == State.DISCONNECTED and p.disconnect_reason == models.DisconnectReason.SIGNAL_CLOSE
    assert not p.auto_subscribes


async def test_timers_end_with_the_participant() -> None:
    p, _ = participant("dave", FakeMedia(), NullParticipantListener())
    fired: list[str] = []
    p.call_later(0.01, fired.append, "late")
    await p.close()
    await asyncio.sleep(0.03)
    assert fired == []
