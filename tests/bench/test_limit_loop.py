"""The limit loop (``bench._limit.run_limit``) in-process: a burst in, one protected copy per destination out.

With UDP GSO (as the Engine sends) and without it, every destination must read every packet once, in order,
decryptable with its own key and carrying its own SSRC and sequence offset; a socket that refuses segmentation
turns GSO off inside the loop without losing a packet.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading

import pytest

import fastpath
from bench._limit import run_limit
from tests import packets
from tests.fastpath.conftest import KEY_LEN, session, udp_socket

SO_NO_CHECK = 11  # socket(7): the kernel refuses UDP_SEGMENT on such a socket (EINVAL)
SSRC_BASE = 0x1000_0000


def drain(sock: socket.socket, rx, timeout: float = 0.5) -> list[bytes]:
    got = []
    while select.select([sock], [], [], timeout)[0]:
        timeout = 0.05
        got.append(rx.unprotect(sock.recv(4096)))
    return got


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("gso", "refuse"), [(True, False), (False, False), (True, True)],
                         ids=["gso", "plain", "gso-refused"])
@pytest.mark.parametrize("profile", [fastpath.PROFILE_AES128_CM_SHA1_80, fastpath.PROFILE_AEAD_AES_128_GCM],
                         ids=["aes-cm-80", "aes-gcm-128"])
def test_every_destination_gets_every_packet_in_order(profile: int, gso: bool, refuse: bool) -> None:
    in_key, out_key = os.urandom(KEY_LEN[profile]), os.urandom(KEY_LEN[profile])
    loop_sock = udp_socket()
    if refuse:
        loop_sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    dests = [udp_socket() for _ in range(3)]
    for d in dests:
        d.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sender = udp_socket()
    publisher = session(profile, in_key, True)
    sent = []
    for seq in range(40):                      # queued before the loop starts: it reads them as one batch
        pkt = packets.rtp(96, 500 + seq, 9000, 0xABCD, b"\x5a" * 900)
        sender.sendto(publisher.protect(pkt), loop_sock.getsockname())
        sent.append(pkt)
    tx = [fastpath.SrtpContext(profile, out_key, True) for _ in dests]
    rx = fastpath.SrtpContext(profile, in_key, False)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(run_limit(
        loop_sock.fileno(), [d.getsockname() for d in dests], rx, tx, 0.5, SSRC_BASE, gso=gso)))
    worker.start()
    worker.join(10)
    try:
        assert not worker.is_alive()
        assert result["received"] == 40 and result["forwarded"] == 120
        assert result["unprotect_failed"] == 0 and result["protect_failed"] == 0
        assert result["gso"] is (gso and not refuse)
        for k, d in enumerate(dests):
            got = drain(d, session(profile, out_key, False))
            assert len(got) == 40
            for pkt, out in zip(sent, got, strict=True):
                seq, = struct.unpack("!H", out[2:4])
                ssrc, = struct.unpack("!I", out[8:12])
                assert ssrc == SSRC_BASE + k
                assert seq == (struct.unpack("!H", pkt[2:4])[0] + 1000 * k) & 0xFFFF
                assert out[12:] == pkt[12:]
    finally:
        for s in [loop_sock, sender, *dests]:
            s.close()
