"""The fan-out run: packets of one producer layer read in one receive batch are forwarded consumer by consumer.

Each consumer must see exactly what one fan-out per packet gave it (same packets, same order, continuous output
sequence numbers, holes of padding-only packets closed), its copies must queue back to back (one UDP GSO message per
consumer even when the batch's copies overflow the send arena), and a run must end where another producer's packet,
a padding-only packet or an RTCP packet comes in between.
"""

from __future__ import annotations

import select
import socket
import struct

import fastpath
from tests import packets
from tests.fastpath.conftest import PUB_SSRC, VP8, payloads

OTHER_SSRC = 0x7777


def out_seqs(got: list[tuple[int, bytes]]) -> list[int]:
    return [seq for seq, _ in got]


def continuous(seqs: list[int]) -> bool:
    return seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]


def test_each_consumers_copies_stay_together_past_the_send_arena(fanouts) -> None:
    f = fanouts(40, gso=True)                     # 40 x 12 = 480 copies: the 256-slot arena flushes mid-run
    before = f.engine.snapshot_engine()
    sent = f.burst([600] * 12)
    after = f.engine.snapshot_engine()
    assert after["tx_datagrams"] - before["tx_datagrams"] == 480
    # One message per consumer, and one more for the consumer whose copies an arena flush split.
    assert after["tx_messages"] - before["tx_messages"] <= 41
    for sub in f.subs:
        got = payloads(sub)
        assert [p for _, p in got] == [s[12:] for s in sent]
        assert continuous(out_seqs(got))


def test_a_padding_only_packet_inside_a_run_leaves_no_hole(fanouts) -> None:
    f = fanouts(2, gso=True)
    sent = []
    for i in range(8):
        if i == 4:
            pkt = packets.rtp(VP8, 100 + i, 3000, PUB_SSRC, b"", padding=200)   # a probe: never forwarded
        else:
            pkt = packets.rtp(VP8, 100 + i, 3000, PUB_SSRC, packets.vp8_payload(key=i == 0, size=500))
            sent.append(pkt)
        f.pub.send_rtp(pkt)
    f.pump_once()
    for sub in f.subs:
        got = payloads(sub)
        assert [p for _, p in got] == [s[12:] for s in sent]
        assert continuous(out_seqs(got))     # the probe's sequence number is closed, after packets 100..103
    assert f.engine.snapshot_producer(10)["layers"][0]["drop_padding_only"] == 1


def test_two_producers_interleaved_in_one_batch_keep_each_streams_order(fanouts) -> None:
    f = fanouts(2, gso=True)
    f.engine.add_producer(11, 1, fastpath.KIND_VIDEO, b"1", [(b"", OTHER_SSRC, 0)], [VP8], {}, 90000,
                          codecs={VP8: fastpath.CODEC_VP8})
    for i, sub in enumerate(f.subs):
        f.engine.add_consumer(40 + i, sub.handle, 11, 0x6000 + i, {VP8: 100}, False)
    sent: dict[int, list[bytes]] = {PUB_SSRC: [], OTHER_SSRC: []}
    for i in range(10):
        for ssrc, size in ((PUB_SSRC, 300), (OTHER_SSRC, 310)):
            pkt = packets.rtp(VP8, 200 + i, 3000, ssrc, packets.vp8_payload(key=i == 0, size=size))
            f.pub.send_rtp(pkt)
            sent[ssrc].append(pkt)
    f.pump_once()
    for i, sub in enumerate(f.subs):
        got, _ = sub.drain()
        by_ssrc: dict[int, list[bytes]] = {}
        for p in got:
            by_ssrc.setdefault(struct.unpack("!I", p[8:12])[0], []).append(p)
        for out_ssrc, ssrc in ((0x5000 + i, PUB_SSRC), (0x6000 + i, OTHER_SSRC)):
            stream = by_ssrc[out_ssrc]
            assert [p[12:] for p in stream] == [s[12:] for s in sent[ssrc]]
            assert continuous([struct.unpack("!H", p[2:4])[0] for p in stream])


def test_a_nack_read_in_the_same_batch_finds_the_packets_before_it(fanouts) -> None:
    f = fanouts(1, gso=True, nack=True)
    sub = f.subs[0]
    f.burst([400] * 4)                         # the first copies teach us the output sequence numbers
    last = out_seqs(payloads(sub))[-1]
    # One receive batch: four more packets, the subscriber's NACK for the second of them, one more packet.
    sent = [packets.rtp(VP8, 104 + i, 3000, PUB_SSRC, packets.vp8_payload(key=False, size=400)) for i in range(5)]
    for pkt in sent[:4]:
        f.pub.send_rtp(pkt)
    wanted = (last + 2) & 0xFFFF
    sub.send_rtcp(packets.rtcp_nack(0x9999, 0x5000, [wanted]))
    f.pub.send_rtp(sent[4])
    f.pump_once()
    raw = []
    while select.select([sub.sock], [], [], 0.3)[0]:
        raw.append(sub.sock.recv(4096))
    rtp = [d for d in raw if not 192 <= d[1] <= 223]
    seqs = [struct.unpack("!H", d[2:4])[0] for d in rtp]
    assert seqs.count(wanted) == 2             # forwarded, then resent for the NACK that followed it
    assert len(rtp) == 6
    assert f.engine.snapshot_consumer(20)["retransmits"] == 1
    assert f.engine.snapshot_consumer(20).get("drop_nack_miss", 0) == 0


def test_a_run_survives_a_socket_without_gso(fanouts) -> None:
    f = fanouts(3, gso=False)
    f.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sent = f.burst([700] * 9)
    for sub in f.subs:
        got = payloads(sub)
        assert [p for _, p in got] == [s[12:] for s in sent]
        assert continuous(out_seqs(got))
