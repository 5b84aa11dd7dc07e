"""Fixtures for the fast-path tests: an Engine on loopback between a publisher and a subscriber peer.

Each peer is a plain UDP socket with its own pylibsrtp sessions (the keys DTLS would have exported), so
the Engine's C SRTP path is checked against pylibsrtp's Python one.
"""

from __future__ import annotations

import os
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pylibsrtp import Policy, Session

import fastpath
from tests import packets

PUB_SSRC = 0x1111
VP8 = 96
SO_NO_CHECK = 11  # socket(7): no UDP checksum on send, which the kernel refuses to combine with UDP_SEGMENT
KEY_LEN = {fastpath.PROFILE_AES128_CM_SHA1_80: 30, fastpath.PROFILE_AEAD_AES_128_GCM: 28}


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def session(profile: int, key: bytes, outbound: bool) -> Session:
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND,
                    srtp_profile=profile)
    policy.allow_repeat_tx = outbound
    policy.window_size = 1024
    return Session(policy)


@dataclass
class Peer:
    """A remote endpoint: sends protected packets to the Engine, reads what the Engine sends it."""

    sock: socket.socket
    tx: Session
    rx: Session
    engine_addr: tuple[str, int]
    handle: int
    profile: int
    rx_key: bytes

    def forget_received(self) -> None:
        """A fresh inbound session: packets already seen can be received again (to read retransmissions)."""
        self.rx = session(self.profile, self.rx_key, False)

    @property
    def addr(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def send_rtp(self, packet: bytes) -> None:
        self.sock.sendto(self.tx.protect(packet), self.engine_addr)

    def send_rtcp(self, packet: bytes) -> None:
        self.sock.sendto(self.tx.protect_rtcp(packet), self.engine_addr)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.engine_addr)

    def drain(self, timeout: float = 0.2) -> tuple[list[bytes], list[bytes]]:
        """All datagrams queued for this peer, decrypted: (rtp packets, rtcp compounds)."""
        rtp_out: list[bytes] = []
        rtcp_out: list[bytes] = []
        while select.select([self.sock], [], [], timeout)[0]:
            timeout = 0.02
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            if 192 <= data[1] <= 223:
                rtcp_out.append(self.rx.unprotect_rtcp(data))
            else:
                rtp_out.append(self.rx.unprotect(data))
        return rtp_out, rtcp_out


@dataclass
class Rig:
    engine: fastpath.Engine
    sock: socket.socket
    pub: Peer
    sub: Peer
    profile: int

    def pump(self, expect_input: bool = True) -> list:
        if expect_input:
            select.select([self.sock], [], [], 1.0)
        out = []
        while True:
            got = self.engine.pump()
            out.extend(got)
            if not select.select([self.sock], [], [], 0.01)[0]:
                return out


def make_peer(profile: int, engine: fastpath.Engine, engine_sock: socket.socket, handle: int) -> Peer:
    n = KEY_LEN[profile]
    peer_key, engine_key = os.urandom(n), os.urandom(n)
    sock = udp_socket()
    engine.add_transport(handle)
    engine.bind_tuple(handle, *sock.getsockname())
    engine.set_srtp(handle, profile, engine_key, peer_key)
    return Peer(sock, session(profile, peer_key, True), session(profile, engine_key, False),
                engine_sock.getsockname(), handle, profile, engine_key)


@pytest.fixture(params=[fastpath.PROFILE_AES128_CM_SHA1_80, fastpath.PROFILE_AEAD_AES_128_GCM],
                ids=["aes-cm-80", "aes-gcm-128"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    profile = request.param
    sock = udp_socket()
    engine = fastpath.Engine(sock.fileno())
    pub = make_peer(profile, engine, sock, 1)
    sub = make_peer(profile, engine, sock, 2)
    ids = bytearray(256)
    ids[1], ids[2], ids[3], ids[5] = 1, 2, 3, 5
    engine.set_extension_map(1, 1, 2, 3, 0, bytes(ids))
    yield Rig(engine, sock, pub, sub, profile)
    del engine
    for s in (sock, pub.sock, sub.sock):
        s.close()


class Fanout:
    """One publisher peer and N subscriber peers, each subscriber consuming the publisher's one video producer."""

    def __init__(self, profile: int, subscribers: int, *, gso: bool, batch_size: int = 64, nack: bool = False) -> None:
        self.sock = udp_socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.engine = fastpath.Engine(self.sock.fileno(), batch_size=batch_size, gso=gso)
        self.pub = make_peer(profile, self.engine, self.sock, 1)
        self.engine.add_producer(10, 1, fastpath.KIND_VIDEO, b"0", [(b"", PUB_SSRC, 0)], [VP8], {}, 90000,
                                 codecs={VP8: fastpath.CODEC_VP8})
        self.subs: list[Peer] = []
        for i in range(subscribers):
            sub = make_peer(profile, self.engine, self.sock, 2 + i)
            sub.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.engine.add_consumer(20 + i, 2 + i, 10, 0x5000 + i, {VP8: 100}, nack)
            self.subs.append(sub)

    def burst(self, sizes: list[int], first_seq: int = 100) -> list[bytes]:
        """Send one packet per size (the first a key frame), then let the Engine read them in one pump."""
        sent = []
        for i, size in enumerate(sizes):
            pkt = packets.rtp(VP8, first_seq + i, 3000, PUB_SSRC, packets.vp8_payload(key=i == 0, size=size))
            self.pub.send_rtp(pkt)
            sent.append(pkt)
        self.pump_once()
        return sent

    def pump_once(self) -> None:
        """One Engine.pump(): what was sent before it is read in one receive batch."""
        select.select([self.sock], [], [], 1.0)
        self.engine.pump()

    def close(self) -> None:
        del self.engine
        for s in [self.sock, self.pub.sock, *(p.sock for p in self.subs)]:
            s.close()


@pytest.fixture(params=[fastpath.PROFILE_AES128_CM_SHA1_80, fastpath.PROFILE_AEAD_AES_128_GCM],
                ids=["aes-cm-80", "aes-gcm-128"])
def fanout_profile(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture
def fanouts(fanout_profile: int) -> Iterator:
    """A factory of Fanout rigs (closed at the end of the test), once per SRTP profile."""
    made: list[Fanout] = []

    def factory(subscribers: int, **kw: object) -> Fanout:
        f = Fanout(fanout_profile, subscribers, **kw)
        made.append(f)
        return f

    yield factory
    for f in made:
        f.close()


def payloads(sub: Peer) -> list[tuple[int, bytes]]:
    got, _ = sub.drain()
    return [(struct.unpack("!H", p[2:4])[0], p[12:]) for p in got]
