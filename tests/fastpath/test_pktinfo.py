"""IP_PKTINFO in the Engine: on a socket bound to every address, each peer is answered from the address it used.

The Engine's socket is bound to 0.0.0.0 with IP_PKTINFO on (as router/ports.py binds a worker's); the peers send to
127.0.0.3, one of the host's loopback addresses that routing would never pick as a source toward 127.0.0.1. A STUN
datagram comes back from ``pump(local=True)`` with that local address; ``send`` with it, and media forwarded to a
transport bound with it (one datagram, and a train that leaves as one UDP GSO message), leave from 127.0.0.3.
"""

from __future__ import annotations

import os
import select
import socket

import fastpath
from tests import packets
from tests.fastpath.conftest import PUB_SSRC, VP8, Peer, session

ALIAS = "127.0.0.3"
STUN = bytes.fromhex("000100002112a442") + os.urandom(12)


def wildcard_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_PKTINFO", 8), 1)
    s.bind(("0.0.0.0", 0))
    s.setblocking(False)
    return s


def peer(engine: fastpath.Engine, port: int, handle: int, local: str) -> Peer:
    profile = fastpath.PROFILE_AES128_CM_SHA1_80
    peer_key, engine_key = os.urandom(30), os.urandom(30)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    engine.add_transport(handle)
    engine.bind_tuple(handle, *sock.getsockname(), local)
    engine.set_srtp(handle, profile, engine_key, peer_key)
    return Peer(sock, session(profile, peer_key, True), session(profile, engine_key, False), (ALIAS, port), handle,
                profile, engine_key)


def sources(sock: socket.socket) -> list[tuple[str, int]]:
    out = []
    while select.select([sock], [], [], 0.3)[0]:
        out.append(sock.recvfrom(4096)[1])
    return out


def test_checks_learn_their_local_address_and_everything_leaves_from_it() -> None:
    sock = wildcard_socket()
    port = sock.getsockname()[1]
    engine = fastpath.Engine(sock.fileno(), gso=True)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    try:
        client.sendto(STUN, (ALIAS, port))
        select.select([sock], [], [], 1.0)
        [(handle, data, addr, local)] = engine.pump(True)
        assert (handle, data, addr, local) == (-1, STUN, client.getsockname(), ALIAS)
        engine.send(*addr, b"\x00\x01answer", local)
        engine.send(*addr, b"\x00\x01plain")
        assert sources(client) == [(ALIAS, port), ("127.0.0.1", port)]  # without local: the route's choice

        pub, sub = peer(engine, port, 1, ALIAS), peer(engine, port, 2, ALIAS)
        engine.add_producer(10, 1, fastpath.KIND_VIDEO, b"0", [(b"", PUB_SSRC, 0)], [VP8], {}, 90000,
                            codecs={VP8: fastpath.CODEC_VP8})
        engine.add_consumer(20, 2, 10, 0x5000, {VP8: 100}, False)
        seq = 100
        for burst in (1, 6):  # one datagram (a plain message), then a train (one GSO message where the kernel can)
            for _ in range(burst):
                rtp = packets.rtp(VP8, seq, 3000, PUB_SSRC, packets.vp8_payload(key=seq == 100, size=900))
                pub.send_rtp(rtp)
                seq += 1
            select.select([sock], [], [], 1.0)
            before = engine.snapshot_engine()
            engine.pump(True)
            assert sources(sub.sock) == [(ALIAS, port)] * burst
        after = engine.snapshot_engine()
        if engine.gso:  # the train went out as one segmented message, its IP_PKTINFO after the UDP_SEGMENT cmsg
            assert (after["tx_datagrams"] - before["tx_datagrams"], after["tx_messages"] - before["tx_messages"]) \
                == (6, 1)
    finally:
        del engine
        client.close()
        sock.close()


def test_a_socket_without_pktinfo_reports_no_local_address() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    engine = fastpath.Engine(sock.fileno())
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    try:
        client.sendto(STUN, sock.getsockname())
        select.select([sock], [], [], 1.0)
        assert [(h, a, local) for h, _, a, local in engine.pump(True)] == [(-1, client.getsockname(), "")]
    finally:
        del engine
        client.close()
        sock.close()
