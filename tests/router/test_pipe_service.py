"""Pipes between two MediaServices in one process (router/pipe.py): the requests control sends, packets from a
publisher on worker A to a subscriber on worker B, and the life of both ends; keyed pipes (SRTP, as between hosts,
here over loopback): what leaves A is SRTP under the keys given, B decrypts and rewrites it, a wrong key is a
counted drop.

The two services run real Engines on their own loopback sockets, driven by the event loop as in a worker. The
publisher's and subscriber's transports are keyed directly (no DTLS): what is under test is the pipe between the
services, not the handshake.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pylibsrtp import Policy, Session

import fastpath
from router.media_service import MediaService
from router.messages import (
    ConsumeRequest,
    CreateWebRtcTransportRequest,
    PipeProduceRequest,
    PipeRequest,
    PipeSrtp,
    ProduceRequest,
    RtpExtensions,
    UnpipeRequest,
)
from router.protocol import Body, Empty, Method, RequestError
from tests import packets
from tests.router.fakes import FakeChannel, FakeWorker

VP8, RTX = 96, 97
PUB_SSRC = 0x1111
PIPE_SSRCS = [(0x9000, 0x9100)]
VIDEO = ProduceRequest(producer_id="TR_video", kind="video", mid="1", encodings=[("", PUB_SSRC, 0)],
                       payload_types=[VP8, RTX], codecs=[(VP8, "VP8")], rtx_apt=[(RTX, VP8)], clock_rate=90000,
                       extensions=RtpExtensions(id_map=bytes(256)))


@dataclass
class Side:
    media: MediaService
    channel: FakeChannel
    worker: FakeWorker

    async def call(self, method: Method, target: str, body: Body) -> None:
        assert await self.channel.handlers[method](target, body.to_wire()) is not None


def session(key: bytes, outbound: bool) -> Session:
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND)
    policy.allow_repeat_tx = outbound
    return Session(policy)


class Peer:
    """A client of one side, keyed directly on the side's transport."""

    def __init__(self, side: Side, transport_id: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        mine, theirs = os.urandom(30), os.urandom(30)
        handle = side.media.transports.get(transport_id).handle
        side.media.engine.bind_tuple(handle, *self.sock.getsockname())
        side.media.engine.set_srtp(handle, fastpath.PROFILE_AES128_CM_SHA1_80, theirs, mine)
        self.tx, self.rx = session(mine, True), session(theirs, False)
        self.to = ("127.0.0.1", side.worker.rtc_port)

    def send(self, packet: bytes) -> None:
        self.sock.sendto(self.tx.protect(packet), self.to)

    async def receive(self, timeout: float = 1.0) -> list[bytes]:
        got: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await asyncio.sleep(0.02)
            while select.select([self.sock], [], [], 0)[0]:
                data = self.sock.recv(4096)
                if not 192 <= data[1] <= 223:
                    got.append(self.rx.unprotect(data))
            if got and loop.time() > deadline - timeout / 2:
                break
        return got


@pytest.fixture
async def sides() -> AsyncIterator[tuple[Side, Side]]:
    made: list[Side] = []
    for _ in range(2):
        worker = FakeWorker(asyncio.get_running_loop())
        media = MediaService(worker)  # type: ignore[arg-type]
        media.start()
        made.append(Side(media, worker.channel, worker))
    try:
        yield made[0], made[1]
    finally:
        for side in made:
            if side.media._tick_task is not None:
                side.media._tick_task.cancel()
            side.worker.loop.remove_reader(side.worker.sock.fileno())
            side.worker.sock.close()


async def open_pipe(a: Side, b: Side, srtp: PipeSrtp | None = None, b_srtp: PipeSrtp | None = None,
                    peer_ip: str = "") -> tuple[Peer, Peer]:
    """A publisher on A, a subscriber on B, and the pipe between them (A's end keyed with ``srtp``, B's with
    ``b_srtp``, by default ``srtp`` reversed)."""
    for side, transport in ((a, "pub"), (b, "sub")):
        await side.call(Method.MEDIA_ROUTER_CREATE, "r", Empty())
        await side.call(Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT, "r",
                        CreateWebRtcTransportRequest(transport_id=transport))
    publisher, subscriber = Peer(a, "pub"), Peer(b, "sub")
    await a.call(Method.TRANSPORT_PRODUCE, "pub", VIDEO)
    if b_srtp is None and srtp is not None:
        b_srtp = srtp.reversed()
    await b.call(Method.MEDIA_ROUTER_PRODUCE_PIPE, "r", PipeProduceRequest(
        producer_id="TR_video", peer_port=a.worker.rtc_port, kind="video",
        encodings=[("", s, r) for s, r in PIPE_SSRCS], payload_types=VIDEO.payload_types,
        clock_rate=90000, codecs=VIDEO.codecs, rtx_apt=VIDEO.rtx_apt, peer_ip=peer_ip, srtp=b_srtp))
    await a.call(Method.PRODUCER_PIPE, "TR_video", PipeRequest(
        pipe_id="TR_video>w1", peer_port=b.worker.rtc_port, ssrcs=PIPE_SSRCS, payload_types=VIDEO.payload_types,
        rtx_apt=VIDEO.rtx_apt, peer_ip=peer_ip, srtp=srtp))
    await b.call(Method.TRANSPORT_CONSUME, "sub", ConsumeRequest(consumer_id="c", producer_id="TR_video",
                                                                 out_ssrc=0x5555, pt_map=[(VP8, 100)]))
    return publisher, subscriber


def frames(seqs: range) -> list[bytes]:
    return [packets.rtp(VP8, s, 3000 * s, PUB_SSRC, packets.vp8_payload(key=s == seqs[0])) for s in seqs]


async def test_a_producer_on_a_reaches_a_subscriber_on_b(sides: tuple[Side, Side]) -> None:
    a, b = sides
    publisher, subscriber = await open_pipe(a, b)
    sent = frames(range(100, 110))
    for packet in sent:
        publisher.send(packet)
    received = await subscriber.receive()
    assert [p[12:] for p in received] == [p[12:] for p in sent]
    counters_a, counters_b = a.media.heartbeat(), b.media.heartbeat()
    assert (counters_a["pipe_transports"], counters_a["pipes_out"]) == (1, 1)
    assert counters_a["pipe_tx_packets"] >= 10  # the media, and RTCP reports
    assert (counters_b["pipe_transports"], counters_b["pipes_out"]) == (1, 0)
    assert counters_b["pipe_rx_packets"] >= 10 and counters_b["pipe_drops"] == 0
    assert "TR_video" in b.media.producers  # the destination end, under the original producer's id


async def test_unpipe_and_router_close_free_both_ends(sides: tuple[Side, Side]) -> None:
    a, b = sides
    publisher, subscriber = await open_pipe(a, b)
    await a.call(Method.PRODUCER_PIPE, "TR_video", PipeRequest(
        pipe_id="TR_video>w1", peer_port=b.worker.rtc_port, ssrcs=PIPE_SSRCS, payload_types=[VP8]))  # idempotent
    assert a.media.heartbeat()["pipes_out"] == 1
    await a.call(Method.PRODUCER_UNPIPE, "TR_video", UnpipeRequest(pipe_id="TR_video>w1"))
    assert (a.media.heartbeat()["pipe_transports"], a.media.heartbeat()["pipes_out"]) == (0, 0)
    for packet in frames(range(1, 4)):
        publisher.send(packet)
    assert await subscriber.receive(0.3) == []
    await b.call(Method.MEDIA_ROUTER_CLOSE, "r", Empty())
    assert "TR_video" not in b.media.producers
    assert b.media.heartbeat()["pipe_transports"] == 0


async def test_closing_the_producer_closes_its_pipes(sides: tuple[Side, Side]) -> None:
    a, b = sides
    await open_pipe(a, b)
    await a.call(Method.PRODUCER_CLOSE, "TR_video", Empty())
    assert (a.media.heartbeat()["pipes_out"], a.media.heartbeat()["pipe_transports"]) == (0, 0)
    await b.call(Method.PRODUCER_CLOSE, "TR_video", Empty())
    assert b.media.heartbeat()["pipe_transports"] == 0
    assert "c" not in b.media.consumers


async def test_a_pipe_to_its_own_port_is_refused(sides: tuple[Side, Side]) -> None:
    a, _ = sides
    await a.call(Method.MEDIA_ROUTER_CREATE, "r", Empty())
    await a.call(Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT, "r", CreateWebRtcTransportRequest(transport_id="pub"))
    await a.call(Method.TRANSPORT_PRODUCE, "pub", VIDEO)
    with pytest.raises(RequestError):
        await a.call(Method.PRODUCER_PIPE, "TR_video", PipeRequest(
            pipe_id="x", peer_port=a.worker.rtc_port, ssrcs=PIPE_SSRCS, payload_types=[VP8]))
    assert a.media.heartbeat()["pipe_transports"] == 0


# ------------------------------------------------------------------------------------- keyed pipes (SRTP)


def seq(packet: bytes) -> int:
    return int.from_bytes(packet[2:4], "big")


@pytest.mark.parametrize("profile", ["SRTP_AES128_CM_HMAC_SHA1_80", "SRTP_AEAD_AES_128_GCM"])
async def test_a_keyed_pipe_arrives_decrypted_and_rewritten(sides: tuple[Side, Side], profile: str) -> None:
    a, b = sides
    publisher, subscriber = await open_pipe(a, b, PipeSrtp.generate(profile), peer_ip="127.0.0.1")  # type: ignore[arg-type]
    sent = frames(range(100, 120))
    for packet in sent:
        publisher.send(packet)
    received = await subscriber.receive()
    assert [p[12:] for p in received] == [p[12:] for p in sent]
    assert {int.from_bytes(p[8:12], "big") for p in received} == {0x5555}  # the subscriber's SSRC
    assert [seq(p) for p in received] == [(seq(received[0]) + i) & 0xFFFF for i in range(len(sent))]
    assert {p[1] & 0x7F for p in received} == {100}  # the subscriber's payload type
    counters_a, counters_b = a.media.heartbeat(), b.media.heartbeat()
    assert counters_a["pipe_srtp_transports"] == counters_b["pipe_srtp_transports"] == 1
    assert counters_b["pipe_rx_packets"] >= len(sent)
    assert counters_b["pipe_drops"] == counters_b["pipe_srtp_drops"] == 0


async def test_what_leaves_a_keyed_pipe_is_srtp_under_its_key(sides: tuple[Side, Side]) -> None:
    a, _ = sides
    wire = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # stands for the other host's worker: reads the wire
    wire.bind(("127.0.0.1", 0))
    try:
        await a.call(Method.MEDIA_ROUTER_CREATE, "r", Empty())
        await a.call(Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT, "r", CreateWebRtcTransportRequest(transport_id="pub"))
        publisher = Peer(a, "pub")
        await a.call(Method.TRANSPORT_PRODUCE, "pub", VIDEO)
        srtp = PipeSrtp.generate()
        await a.call(Method.PRODUCER_PIPE, "TR_video", PipeRequest(
            pipe_id="p", peer_ip="127.0.0.1", peer_port=wire.getsockname()[1], ssrcs=PIPE_SSRCS,
            payload_types=VIDEO.payload_types, rtx_apt=VIDEO.rtx_apt, srtp=srtp))
        sent = frames(range(1, 6))
        for packet in sent:
            publisher.send(packet)
        await asyncio.sleep(0.3)
        datagrams = []
        while select.select([wire], [], [], 0)[0]:
            data = wire.recv(4096)
            if not 192 <= data[1] <= 223:  # RTP, not the RTCP reports
                datagrams.append(data)
        assert len(datagrams) == len(sent)
        assert all(len(d) == len(p) + 10 for d, p in zip(datagrams, sent, strict=True))  # HMAC-SHA1-80's tag
        assert all(p[12:] not in d for d, p in zip(datagrams, sent, strict=True))  # the payload is encrypted
        rx = session(srtp.local_key, False)  # the other end's receiving key is this end's local key
        assert [rx.unprotect(d)[12:] for d in datagrams] == [p[12:] for p in sent]
    finally:
        wire.close()


async def test_a_wrong_key_is_a_counted_drop_and_a_rekey_mends_it(sides: tuple[Side, Side]) -> None:
    a, b = sides
    srtp = PipeSrtp.generate()
    wrong = PipeSrtp(profile=srtp.profile, local_key=srtp.remote_key, remote_key=bytes(30))  # B cannot check A's
    publisher, subscriber = await open_pipe(a, b, srtp, b_srtp=wrong, peer_ip="127.0.0.1")
    for packet in frames(range(1, 11)):
        publisher.send(packet)
    assert await subscriber.receive(0.5) == []
    counters_b = b.media.heartbeat()
    assert counters_b["pipe_srtp_drops"] >= 10  # every packet (and A's RTCP reports), none taken in
    assert b.media.engine.snapshot_producer(b.media.producers.handle("TR_video"))["packets"] == 0
    assert b.media.pipes.snapshot()["transports"][f"127.0.0.1:{a.worker.rtc_port}"]["drop_srtp_unprotect"] >= 10
    # A second pipe over the same pair of workers with the right keys re-keys B's end: the video flows again.
    await b.call(Method.MEDIA_ROUTER_PRODUCE_PIPE, "r", PipeProduceRequest(
        producer_id="TR_audio", peer_ip="127.0.0.1", peer_port=a.worker.rtc_port, kind="audio",
        encodings=[("", 0x9200, 0)], payload_types=[111], clock_rate=48000, codecs=[(111, "opus")],
        srtp=srtp.reversed()))
    assert b.media.heartbeat()["pipe_rekeys"] == 1
    sent = frames(range(11, 21))
    for packet in sent:
        publisher.send(packet)
    received = await subscriber.receive()
    assert [p[12:] for p in received] == [p[12:] for p in sent]


async def test_a_pipe_leaving_the_host_needs_keys(sides: tuple[Side, Side]) -> None:
    a, _ = sides
    await a.call(Method.MEDIA_ROUTER_CREATE, "r", Empty())
    await a.call(Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT, "r", CreateWebRtcTransportRequest(transport_id="pub"))
    await a.call(Method.TRANSPORT_PRODUCE, "pub", VIDEO)
    with pytest.raises(RequestError, match="needs srtp keys"):
        await a.call(Method.PRODUCER_PIPE, "TR_video", PipeRequest(
            pipe_id="x", peer_ip="198.51.100.2", peer_port=a.worker.rtc_port, ssrcs=PIPE_SSRCS, payload_types=[VP8]))
    assert a.media.heartbeat()["pipe_transports"] == 0
    # Keyed, the same port number on another host is another worker: accepted.
    await a.call(Method.PRODUCER_PIPE, "TR_video", PipeRequest(
        pipe_id="x", peer_ip="198.51.100.2", peer_port=a.worker.rtc_port, ssrcs=PIPE_SSRCS, payload_types=[VP8],
        srtp=PipeSrtp.generate()))
    assert (a.media.heartbeat()["pipe_transports"], a.media.heartbeat()["pipe_srtp_transports"]) == (1, 1)
