"""Fixtures for the fast-path tests: an Engine on loopback between a publisher and a subscriber peer.

Each peer is a plain UDP socket with its own pylibsrtp sessions (the keys DTLS would have exported), so
the Engine's C SRTP path is checked against pylibsrtp's Python one.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pylibsrtp import Policy, Session

import fastpath

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
