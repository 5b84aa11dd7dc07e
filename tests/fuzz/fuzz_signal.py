"""Fuzz target: SignalRequest handling (control/service/signaling.py ``dispatch``: control/rtc/lk_messages.py
``parse_signal_request``, then the room's handler of each request kind).

The input is one WebSocket frame from a joined participant (alice, who publishes and may update her metadata):
binary when the first byte is even, text (protobuf JSON) otherwise; seeds are one valid frame of each request
kind. Invariant: ``dispatch`` never raises and never reaches its catch-all (an ERROR log record); a malformed
frame or a refused request is a WARNING and the participant stays.
"""

from __future__ import annotations

from google.protobuf import json_format
from livekit.protocol import models, rtc

from control.service.signaling import dispatch
from tests.fuzz import rooms
from tests.fuzz.rooms import Harness

_h: Harness | None = None


def setup() -> None:
    global _h
    if _h is None:
        _h = Harness()


def _requests() -> list[rtc.SignalRequest]:
    r = rtc.SignalRequest
    return [
        r(ping=1), r(ping_req=rtc.Ping(timestamp=5, rtt=1)),
        r(offer=rtc.SessionDescription(type="offer", sdp="v=0\r\nm=audio 0 mic\r\n", id=2)),
        r(answer=rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=1)),
        r(trickle=rtc.TrickleRequest(candidateInit='{"candidate":"candidate:1 1 udp 1 192.0.2.1 9 typ host"}')),
        r(add_track=rtc.AddTrackRequest(cid="c2", name="screen", type=models.TrackType.VIDEO,
                                        source=models.TrackSource.SCREEN_SHARE, width=640, height=480)),
        r(mute=rtc.MuteTrackRequest(sid="TR_x", muted=True)),
        r(subscription=rtc.UpdateSubscription(track_sids=["TR_x"], subscribe=False)),
        r(track_setting=rtc.UpdateTrackSettings(track_sids=["TR_x"], disabled=False, width=320, height=180)),
        r(update_metadata=rtc.UpdateParticipantMetadata(metadata="m", name="n", attributes={"a": "b"},
                                                        request_id=3)),
        r(subscription_permission=rtc.SubscriptionPermission(all_participants=False)),
        r(simulate=rtc.SimulateScenario(speaker_update=1)),
        r(update_layers=rtc.UpdateVideoLayers(track_sid="TR_x")),
    ]


def seeds() -> list[bytes]:
    out = []
    for request in _requests():
        out.append(b"\x00" + request.SerializeToString())
        out.append(b"\x01" + json_format.MessageToJson(request).encode())
    return out


def check(data: bytes) -> None:
    setup()
    assert _h is not None
    frame: bytes | str = data[1:] if not data[:1] or data[0] % 2 == 0 else data[1:].decode("utf-8", "replace")

    async def one() -> None:
        room, alice, _ = await _h.ensure()
        await dispatch(room, alice, frame)
        await _h.settle()

    _h.run(one())
    _h.watch.check()


def close() -> None:
    global _h
    if _h is not None:
        rooms.close(_h)
        _h = None
