"""The generator's socket with UDP_GRO: a train the server sent as one UDP_SEGMENT message arrives as one buffer.

Both receive paths must split it back into the server's datagrams: the Cython loop (``LoadGen._receive``: every
datagram counted, authenticated and timed as if it had come alone, RTCP found by its destination address even with
the UDP_GRO cmsg in front of IP_PKTINFO) and the set-up dispatch (``GeneratorSocket._on_readable``). The same train
into a socket without GRO, where the kernel splits it, must give the same counts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

import pytest

import fastpath
from bench._loadgen import LoadGen
from bench.net import GeneratorSocket, participant_address, split_segments
from tests.kernel_stamps import wait_for_kernel_stamping

UDP_SEGMENT = 103
MAGIC = 0x4D524231
CM80 = fastpath.PROFILE_AES128_CM_SHA1_80
SSRC = 0x5151_0001


def send_train(sock: socket.socket, datagrams: list[bytes], destination: tuple[str, int]) -> None:
    """One sendmsg with a UDP_SEGMENT cmsg: equal datagrams, the last one may be shorter (as the Engine sends)."""
    seg = len(datagrams[0])
    assert all(len(d) == seg for d in datagrams[:-1]) and len(datagrams[-1]) <= seg
    sock.sendmsg([b"".join(datagrams)], [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("=H", seg))], 0,
                 destination)


def bench_rtp(tx: fastpath.SrtpContext, seq: int, size: int) -> bytes:
    """A protected RTP packet with the generator's payload: VP8 descriptor, MAGIC, stream 0, counter, send time."""
    rtp = bytearray(size)
    rtp[0], rtp[1] = 0x80, 96
    rtp[2:4] = seq.to_bytes(2, "big")
    rtp[8:12] = SSRC.to_bytes(4, "big")
    rtp[12:14] = b"\x10\x00"
    struct.pack_into(">IIQQ", rtp, 14, MAGIC, 0, seq, time.clock_gettime_ns(time.CLOCK_MONOTONIC))
    return tx.protect(bytes(rtp))


@pytest.mark.parametrize(("segment", "data", "parts"), [
    (0, b"abcdef", [b"abcdef"]),                              # no UDP_GRO cmsg: one datagram
    (6, b"abcdef", [b"abcdef"]),                              # a train of one
    (10, b"abcdef", [b"abcdef"]),                             # the segment length exceeds the buffer
    (2, b"abcdef", [b"ab", b"cd", b"ef"]),                    # equal segments
    (4, b"abcdef", [b"abcd", b"ef"]),                         # the last one shorter
])
def test_split_segments_table(segment: int, data: bytes, parts: list[bytes]) -> None:
    assert split_segments(data, segment) == parts


@pytest.mark.timeout(30)
@pytest.mark.parametrize("gro", [True, False], ids=["gro", "kernel-split"])
def test_loadgen_counts_every_datagram_of_a_train(gro: bool) -> None:
    net = GeneratorSocket(buffer_bytes=4 << 20, gro=gro)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert net.gro == gro
        key = os.urandom(30)
        tx = fastpath.SrtpContext(CM80, key, True)
        gen = LoadGen(net.fileno(), 0, 1, 0)
        gen.add_receiver(SSRC, fastpath.SrtpContext(CM80, key, False))
        # 50 datagrams of 1,210 bytes (the Engine keeps a message under 65,000 bytes), the last one shorter
        trains = [[bench_rtp(tx, 1000 + 50 * t + i, 1200 if i < 49 else 700) for i in range(50)] for t in range(3)]
        for train in trains:
            send_train(sender, train, (participant_address(3), net.port))
        gen.run(0.1, send=False)
        got = gen.receivers_snapshot()[0]
        assert got["received"] == got["verified"] == 150
        assert got["gaps"] == 0 and got["reordered"] == 0 and got["auth_failed"] == 0 and got["bad_payload"] == 0
        assert got["bytes"] == sum(len(d) for train in trains for d in train)
        assert sum(c for _, c in gen.latency_histogram()) == 150
        counters = gen.counters()
        assert counters["gro"] is gro and counters["truncated"] == 0
        if gro:
            assert counters["gro_buffers"] == 3 and counters["gro_datagrams"] == 150
        else:
            assert counters["gro_buffers"] == counters["gro_datagrams"] == 0
    finally:
        sender.close()
        net.close()


@pytest.mark.timeout(30)
def test_rtcp_in_a_train_is_matched_by_its_destination_address() -> None:
    """Two PLIs in one UDP_SEGMENT message: with GRO the UDP_GRO cmsg comes before IP_PKTINFO, and both must
    still reach the participant the server addressed."""
    net = GeneratorSocket(buffer_bytes=1 << 20, gro=True)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert net.gro
        server_key = os.urandom(30)
        gen = LoadGen(net.fileno(), 1, 0, 1)
        address = participant_address(4)
        gen.add_sender(address, "127.0.0.1", 9, fastpath.SrtpContext(CM80, os.urandom(30), True), 0xABC, 96, 500,
                       0.0, video=True, clock_rate=90000)
        gen.add_rtcp_endpoint(address, fastpath.SrtpContext(CM80, server_key, False))
        pli = bytes([0x81, 206, 0, 2]) + (0x5555).to_bytes(4, "big") + (0xABC).to_bytes(4, "big")
        tx = fastpath.SrtpContext(CM80, server_key, True)
        send_train(sender, [tx.protect_rtcp(pli), tx.protect_rtcp(pli)], (address, net.port))
        gen.run(0.1, send=False)
        counters = gen.counters()
        assert counters["gro_buffers"] == 1 and counters["gro_datagrams"] == 2
        assert counters["key_frame_requests"] == 2 and counters["rtcp_auth_failed"] == 0
    finally:
        sender.close()
        net.close()


@pytest.mark.timeout(30)
def test_a_datagram_larger_than_a_slot_is_counted_as_truncated_not_as_media() -> None:
    net = GeneratorSocket(buffer_bytes=1 << 20, gro=False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        key = os.urandom(30)
        tx = fastpath.SrtpContext(CM80, key, True)
        gen = LoadGen(net.fileno(), 0, 1, 0)
        gen.add_receiver(SSRC, fastpath.SrtpContext(CM80, key, False))
        sender.sendto(bench_rtp(tx, 1, 3000), ("127.0.0.1", net.port))
        sender.sendto(bench_rtp(tx, 2, 1200), ("127.0.0.1", net.port))
        gen.run(0.1, send=False)
        assert gen.counters()["truncated"] == 1
        got = gen.receivers_snapshot()[0]
        assert got["received"] == got["verified"] == 1 and got["auth_failed"] == 0
    finally:
        sender.close()
        net.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("gro", [True, False], ids=["gro", "kernel-split"])
def test_setup_dispatch_hands_on_each_datagram_of_a_train(gro: bool) -> None:
    async def scenario() -> list[bytes]:
        net = GeneratorSocket(buffer_bytes=1 << 20, gro=gro)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        got: list[bytes] = []
        try:
            address = participant_address(7)
            net.register(address, lambda data, _addr: got.append(data))
            net.start_dispatch()
            send_train(sender, [b"A" * 100, b"B" * 100, b"C" * 40], (address, net.port))
            for _ in range(100):
                if len(got) >= 3:
                    break
                await asyncio.sleep(0.01)
        finally:
            sender.close()
            net.close()
        return got

    assert asyncio.run(scenario()) == [b"A" * 100, b"B" * 100, b"C" * 40]


def _twcc_arrival_deltas_us(fb: bytes) -> list[int]:
    """The receive deltas (us) of a transport-wide CC feedback packet whose packets were all received
    (draft-holmer-rmcat-transport-wide-cc-extensions-01 3.1: run-length or status-vector chunks, then deltas)."""
    count = int.from_bytes(fb[14:16], "big")
    pos, symbols = 20, []
    while len(symbols) < count:
        chunk = int.from_bytes(fb[pos:pos + 2], "big")
        pos += 2
        if not chunk & 0x8000:
            symbols += [(chunk >> 13) & 3] * (chunk & 0x1FFF)
        elif chunk & 0x4000:
            symbols += [(chunk >> (12 - 2 * k)) & 3 for k in range(7)]
        else:
            symbols += [(chunk >> (13 - k)) & 1 for k in range(14)]
    deltas = []
    for sym in symbols[:count]:
        assert sym in (1, 2), "every packet was received"
        size = sym
        deltas.append(int.from_bytes(fb[pos:pos + size], "big", signed=size == 2) * 250)
        pos += size
    return deltas


@pytest.mark.timeout(30)
def test_downlink_feedback_reports_when_a_packet_reached_the_socket_not_when_it_was_read() -> None:
    """Two packets 200 ms apart, read by one recvmmsg after both arrived: the feedback must show them 200 ms apart
    (the kernel's receive times), as a receiver that is not busy sending would, not 0 ms (the read's time)."""
    net = GeneratorSocket(buffer_bytes=1 << 20, gro=False)
    # When no other socket of the host had them on, both packets were once stamped at the read (gap 0, in a full
    # suite); the generator's socket keeps them on from here.
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        wait_for_kernel_stamping()
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(5)
        key = os.urandom(30)
        gen = LoadGen(net.fileno(), 0, 1, 0)
        address = participant_address(5)
        d = gen.add_downlink(fastpath.SrtpContext(CM80, key, True), address, "127.0.0.1", sink.getsockname()[1],
                             0x7777, 3)
        gen.add_receiver(SSRC, fastpath.SrtpContext(CM80, os.urandom(30), False), downlink=d, rtx=True)
        for twcc_seq in (10, 11):
            rtp = bytearray(40)
            rtp[0], rtp[1] = 0x90, 97  # X bit: a one-byte header extension block with the transport-wide seq
            rtp[2:4] = twcc_seq.to_bytes(2, "big")
            rtp[8:12] = SSRC.to_bytes(4, "big")
            rtp[12:20] = b"\xbe\xde\x00\x01" + bytes([(3 << 4) | 1]) + twcc_seq.to_bytes(2, "big") + b"\x00"
            sender.sendto(bytes(rtp), (address, net.port))
            if twcc_seq == 10:
                time.sleep(0.2)
        gen.run(0.3)  # no senders: only the feedback goes out
        fb = fastpath.SrtpContext(CM80, key, False).unprotect_rtcp(sink.recv(2048))
        assert fb[1] == 205 and fb[0] & 0x1F == 15
        assert int.from_bytes(fb[12:14], "big") == 10 and int.from_bytes(fb[14:16], "big") == 2
        gap_us = _twcc_arrival_deltas_us(fb)[1]
        assert 150_000 <= gap_us <= 400_000
    finally:
        sender.close()
        sink.close()
        net.close()
