"""The Engine's pipe path (fastpath/_pipe.pxi): publisher -> Engine A -> plain RTP on loopback -> Engine B ->
subscriber, two Engines in one process.

Checks that a simulcast producer crosses with every encoding under the pipe's SSRCs and reaches B's subscriber with
the publisher's payload and timestamps (the golden bytes), that what crosses is plain RTP, that a layer switch on
B asks the publisher for a key frame of the right encoding through A, that a packet lost on the pipe is repaired
by B's NACK and A's RTX, and that pinned consumers keep their encoding whichever layers are active.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import fastpath
from tests import packets
from tests.fastpath.conftest import Peer, make_peer, udp_socket

VP8, RTX = 96, 97
LOW, HIGH = 0x1111, 0x2222  # the publisher's encodings
PIPE = [(0x9000, 0x9100), (0x9001, 0x9101)]  # the pipe's (media, rtx) SSRC per encoding
OUT_SSRC = 0x5555
PROFILE = fastpath.PROFILE_AES128_CM_SHA1_80
PIPE_T = 50  # the pipe transport's handle on each Engine
PRODUCER, PIPE_PRODUCER, SUB_CONSUMER = 10, 11, 20


@dataclass
class Pipe:
    a: fastpath.Engine
    b: fastpath.Engine
    a_sock: socket.socket
    b_sock: socket.socket
    pub: Peer
    sub: Peer

    def pump(self) -> None:
        """A until quiet, then B until quiet, twice (feedback crosses back)."""
        for _ in range(2):
            for engine, sock in ((self.a, self.a_sock), (self.b, self.b_sock)):
                while select.select([sock], [], [], 0.05)[0]:
                    engine.pump()

    def tick(self) -> None:
        now = int(time.monotonic() * 1000)
        self.a.tick(now)
        self.b.tick(now)


def header(packet: bytes) -> tuple[int, int, int, int]:
    _, b1, seq, ts, ssrc = struct.unpack("!BBHII", packet[:12])
    return b1 & 0x7F, seq, ts, ssrc


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    a_sock, b_sock = udp_socket(), udp_socket()
    a, b = fastpath.Engine(a_sock.fileno()), fastpath.Engine(b_sock.fileno())
    pub = make_peer(PROFILE, a, a_sock, 1)
    sub = make_peer(PROFILE, b, b_sock, 2)
    for engine, peer_sock in ((a, b_sock), (b, a_sock)):
        engine.add_transport(PIPE_T)
        engine.bind_tuple(PIPE_T, *peer_sock.getsockname())
        engine.set_srtp(PIPE_T, fastpath.PROFILE_PLAIN, bytes(30), bytes(30))
    a.add_producer(PRODUCER, 1, fastpath.KIND_VIDEO, b"0", [(b"q", LOW, 0), (b"f", HIGH, 0)], [VP8], {RTX: VP8},
                   90000, codecs={VP8: fastpath.CODEC_VP8})
    for layer, (ssrc, rtx) in enumerate(PIPE):
        a.add_consumer(100 + layer, PIPE_T, PRODUCER, ssrc, {VP8: VP8}, True, layer, rtx_ssrc=rtx,
                       rtx_pt_map={VP8: RTX}, pinned=True)
    b.add_producer(PIPE_PRODUCER, PIPE_T, fastpath.KIND_VIDEO, b"", [(b"", s, r) for s, r in PIPE], [VP8],
                   {RTX: VP8}, 90000, codecs={VP8: fastpath.CODEC_VP8})
    b.add_consumer(SUB_CONSUMER, 2, PIPE_PRODUCER, OUT_SSRC, {VP8: 100}, True, 1)
    yield Pipe(a, b, a_sock, b_sock, pub, sub)
    del a, b
    for s in (a_sock, b_sock, pub.sock, sub.sock):
        s.close()


def publish(pipe: Pipe, ssrc: int, seqs: list[int], *, key_first: bool = True) -> list[bytes]:
    sent = []
    for i, seq in enumerate(seqs):
        packet = packets.rtp(VP8, seq, 3000 * seq, ssrc, packets.vp8_payload(key=key_first and i == 0))
        pipe.pub.send_rtp(packet)
        sent.append(packet)
    return sent


def test_plain_profile_leaves_rtp_as_it_is() -> None:
    inbound = fastpath.SrtpContext(fastpath.PROFILE_PLAIN, bytes(30), False)
    outbound = fastpath.SrtpContext(fastpath.PROFILE_PLAIN, bytes(30), True)
    packet = packets.rtp(VP8, 7, 1234, 0xABC, b"payload" * 20)
    assert outbound.protect(packet) == packet
    assert inbound.unprotect(packet) == packet
    report = packets.rtcp_rr(0xABC)
    assert inbound.unprotect_rtcp(outbound.protect_rtcp(report)) == report


def test_every_encoding_crosses_with_the_publishers_payload_and_timestamps(pipe: Pipe) -> None:
    sent = publish(pipe, HIGH, [10, 11, 12]) + publish(pipe, LOW, [40, 41])
    pipe.pump()
    received, _ = pipe.sub.drain()
    assert [p[12:] for p in received] == [p[12:] for p in sent[:3]]  # the high layer the subscriber asked for
    assert [header(p)[2] for p in received] == [30000, 33000, 36000]
    assert {header(p)[3] for p in received} == {OUT_SSRC}
    assert [header(p)[0] for p in received] == [100] * 3
    layers = pipe.b.snapshot_producer(PIPE_PRODUCER)["layers"]
    assert [layer["packets"] for layer in layers] == [2, 3]  # both encodings crossed
    assert pipe.b.snapshot_transport(PIPE_T)["rtp_rx"] == 5
    assert [pipe.a.snapshot_consumer(100 + i)["packets"] for i in range(2)] == [2, 3]


def test_what_crosses_the_pipe_is_plain_rtp_under_the_pipe_ssrcs(pipe: Pipe) -> None:
    spy = udp_socket()
    pipe.a.bind_tuple(PIPE_T, *spy.getsockname())  # the pipe's datagrams now reach a plain socket
    try:
        sent = publish(pipe, HIGH, [10, 11])
        select.select([pipe.a_sock], [], [], 0.5)
        pipe.a.pump()
        datagrams = []
        while select.select([spy], [], [], 0.2)[0]:
            datagrams.append(spy.recv(4096))
        rtp = [d for d in datagrams if not 192 <= d[1] <= 223]
        assert [header(d)[3] for d in rtp] == [PIPE[1][0]] * 2
        assert [d[12:] for d in rtp] == [p[12:] for p in sent]
        assert [header(d)[2] for d in rtp] == [30000, 33000]
    finally:
        spy.close()


def test_layer_switch_on_b_asks_the_publisher_through_a(pipe: Pipe) -> None:
    publish(pipe, HIGH, [10, 11])
    publish(pipe, LOW, [40, 41])
    pipe.pump()
    pipe.sub.drain()
    pipe.pub.drain()
    time.sleep(0.55)  # past the key-frame request throttle on both Engines
    pipe.b.set_consumer_layer(SUB_CONSUMER, 0)
    pipe.pump()
    _, rtcp = pipe.pub.drain()
    plis = [p for c in rtcp for p in fastpath.parse_rtcp(c) if p["type"] == 206 and p["count"] == 1]
    assert [p["media_ssrc"] for p in plis] == [LOW]
    assert pipe.a.snapshot_consumer(100)["pli_rx"] >= 1
    sent = publish(pipe, LOW, [42, 43])
    pipe.pump()
    received, _ = pipe.sub.drain()
    # The payload as published, but for the VP8 PictureID (bytes 2-3 of the descriptor): B's consumer keeps it
    # continuous across its switch (docs/FORWARDING.md, VP8 payload descriptor), the pipe itself carried it as is.
    assert [p[12:14] + p[16:] for p in received] == [p[12:14] + p[16:] for p in sent]
    assert pipe.b.snapshot_consumer(SUB_CONSUMER)["current_layer"] == 0


def test_a_packet_lost_on_the_pipe_is_repaired_by_nack_and_rtx(pipe: Pipe) -> None:
    sent = publish(pipe, HIGH, [10, 11])
    pipe.pump()
    pipe.a.set_consumer_test_loss(101, 100)
    sent += publish(pipe, HIGH, [12], key_first=False)
    pipe.pump()
    pipe.a.set_consumer_test_loss(101, 0)
    sent += publish(pipe, HIGH, [13, 14], key_first=False)
    pipe.pump()
    first, _ = pipe.sub.drain()
    assert [p[12:] for p in first] == [p[12:] for i, p in enumerate(sent) if i != 2]
    assert pipe.a.snapshot_consumer(101)["test_lost"] == 1
    for _ in range(3):  # B's NACK generation: first NACK after 10 ms
        time.sleep(0.03)
        pipe.tick()
        pipe.pump()
    repaired, _ = pipe.sub.drain()
    assert [p[12:] for p in repaired] == [sent[2][12:]]
    assert header(repaired[0])[1] == (header(first[1])[1] + 1) & 0xFFFF  # the number kept for it
    assert pipe.a.snapshot_consumer(101)["retransmits"] == 1
    assert pipe.b.snapshot_producer(PIPE_PRODUCER)["layers"][1]["rtx_packets"] == 1


def test_a_loss_just_before_a_layer_pauses_is_too_old_to_resend_when_it_resumes(pipe: Pipe) -> None:
    publish(pipe, HIGH, [10, 11])
    pipe.pump()
    pipe.a.set_consumer_test_loss(101, 100)
    publish(pipe, HIGH, [12], key_first=False)  # the last packet before the publisher pauses the layer
    pipe.pump()
    pipe.a.set_consumer_test_loss(101, 0)
    time.sleep(1.2)  # longer than a video packet may wait for its resend (1 s)
    publish(pipe, HIGH, [13, 14])
    for _ in range(4):
        time.sleep(0.03)
        pipe.tick()
        pipe.pump()
    assert pipe.a.snapshot_consumer(101)["retransmits"] == 0
    assert pipe.a.snapshot_consumer(101)["drop_nack_too_old"] >= 1
    assert pipe.b.snapshot_producer(PIPE_PRODUCER)["layers"][1]["nack_requested"] >= 1


def test_a_pinned_consumer_keeps_its_encoding_when_it_is_the_only_one_sending(pipe: Pipe) -> None:
    publish(pipe, LOW, [40, 41, 42])
    pipe.pump()
    assert pipe.a.snapshot_consumer(101)["target_layer"] == 1
    assert pipe.a.snapshot_consumer(101)["packets"] == 0
    assert pipe.a.snapshot_consumer(100)["packets"] == 3


def test_pinned_consumer_needs_an_encoding(pipe: Pipe) -> None:
    with pytest.raises(ValueError, match="pinned"):
        pipe.a.add_consumer(199, PIPE_T, PRODUCER, 0x9999, {VP8: VP8}, True, -1, pinned=True)
    with pytest.raises(ValueError, match="percent"):
        pipe.a.set_consumer_test_loss(100, 101)
    assert os.environ.get("MEDIAROUTER_TEST_PIPE_LOSS_PERCENT") is None
