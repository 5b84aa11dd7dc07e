"""router/totals.py over a real Engine: a worker's media totals sum producers (with their layers), consumers,
transports and the Engine's own drops, and only grow, also when the objects that counted are removed."""

from __future__ import annotations

import os

from router.totals import TOTAL_NAMES, MediaTotals
from tests import packets
from tests.fastpath.conftest import Rig, rig, udp_socket  # noqa: F401  (the rig fixture)
from tests.fastpath.test_engine import PUB_SSRC, VP8, add_video, send_frames


def test_totals_sum_every_object_and_keep_what_removed_objects_counted(rig: Rig) -> None:  # noqa: F811
    totals = MediaTotals(rig.engine)
    assert totals.collect() == {"totals": dict.fromkeys(TOTAL_NAMES, 0), "drops": {}}
    add_video(rig)
    sent = send_frames(rig, list(range(100, 110)))
    rig.pub.send_raw(b"\x80" + os.urandom(60))  # RTP-looking garbage: fails authentication on transport 1
    stranger = udp_socket()
    try:
        stranger.sendto(b"\xff" + os.urandom(30), rig.sock.getsockname())  # no RFC 7983 range: an Engine drop
    finally:
        stranger.close()
    rig.pump()
    now = totals.collect()
    size = sum(len(p) for p in sent)
    assert now["totals"]["rx_packets"] == len(sent) and now["totals"]["rx_bytes"] == size
    assert now["totals"]["tx_packets"] == len(sent) and now["totals"]["keyframes_rx"] == 1
    assert now["drops"] == {"not_rtp": 1, "srtp_unprotect": 1}

    rig.engine.remove_consumer(20)  # removed: what it counted stays in the totals
    rig.engine.add_consumer(21, 2, 10, 0x6666, {VP8: 100}, True)  # a new consumer starts from its own zero
    send_frames(rig, [110, 111])
    rig.pump()
    later = totals.collect()
    assert later["totals"]["tx_packets"] == len(sent) + 2 and later["totals"]["rx_packets"] == len(sent) + 2
    rig.engine.remove_transport(1)  # the publisher's transport with its producer
    gone = totals.collect()
    assert gone["totals"] == later["totals"] and gone["drops"] == now["drops"]
    rig.sub.send_raw(packets.rtp(VP8, 1, 1, PUB_SSRC))  # unprotected on an SRTP transport: a transport drop
    rig.pump()
    assert sum(totals.collect()["drops"].values()) == 3
