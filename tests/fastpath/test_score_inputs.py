"""The Engine counters that connection-quality scoring reads (router/scores.py), with synthetic loss: a publisher
stream with holes in its sequence, repairs by RTX, and a subscriber's receiver reports."""

from __future__ import annotations

from livekit.protocol import models

from control.rtc.quality import quality_of
from router.scores import MAX_SCORE, ConsumerMeter, ProducerMeter
from tests import packets
from tests.fastpath.conftest import Rig
from tests.fastpath.test_engine import OUT_SSRC, RTX, RTX_SSRC, add_video, send_frames

Q = models.ConnectionQuality


def test_uplink_loss_is_what_neither_media_nor_rtx_delivered(rig: Rig) -> None:
    add_video(rig)
    meter = ProducerMeter("video")
    send_frames(rig, list(range(100, 200)))
    rig.pump()
    meter.update(rig.engine.snapshot_producer(10), muted=False)
    assert meter.loss_fraction == 0.0 and meter.clock_rate == 90000
    # next interval: 100 packets of which 8 never arrive and 4 more are repaired by RTX (RFC 4588)
    holes = {210, 220, 230, 240, 250, 260, 270, 280}
    repaired = [212, 222, 232, 242]
    send_frames(rig, [s for s in range(200, 300) if s not in holes and s not in repaired], key_first=False)
    rig.pump()
    for seq in repaired:
        rig.pub.send_rtp(packets.rtp(RTX, seq, 1000 + 3000 * (seq // 3), RTX_SSRC,
                                     packets.rtx_payload(seq, packets.vp8_payload(key=False))))
    rig.pump()
    score = meter.update(rig.engine.snapshot_producer(10), muted=False)
    assert meter.loss_fraction == 0.08
    assert quality_of(score) == Q.POOR  # 8 % loss on a video uplink


def test_downlink_loss_from_the_subscribers_receiver_reports(rig: Rig) -> None:
    add_video(rig)
    upstream = ProducerMeter("video")
    meter = ConsumerMeter("video")
    send_frames(rig, list(range(100, 200)))
    rig.pump()
    rig.sub.drain()
    rig.sub.send_rtcp(packets.rtcp_rr(0xABC, [(OUT_SSRC, 0, 0, 70_100, 0, 0, 0)]))
    rig.pump()
    upstream.update(rig.engine.snapshot_producer(10), muted=False)
    assert meter.update(rig.engine.snapshot_consumer(20), 0.0, muted=False, upstream=upstream) == MAX_SCORE
    send_frames(rig, list(range(200, 300)), key_first=False)
    rig.pump()
    rig.sub.drain()
    # the subscriber got 95 of the next 100: 5 % lost on its own link (the publisher's uplink was clean)
    rig.sub.send_rtcp(packets.rtcp_rr(0xABC, [(OUT_SSRC, 12, 5, 70_200, 90, 0, 0)]))
    rig.pump()
    upstream.update(rig.engine.snapshot_producer(10), muted=False)
    snapshot = rig.engine.snapshot_consumer(20)
    assert (snapshot["rr_count"], snapshot["rr_cumulative_lost"], snapshot["rr_highest_seq"]) == (2, 5, 70_200)
    score = meter.update(snapshot, 2.0, muted=False, upstream=upstream)
    assert quality_of(score) == Q.GOOD  # 5 %: 100 - 50, smoothed from 100
