"""``python -m bench.pipe_cost``: CPU microseconds per piped packet on each side of a pipe between two workers.

Two Engines in this process, each on its own loopback socket, stand for two workers (docs/FORWARDING.md, Pipe
transports). A publisher socket sends SRTP (AES-CM-80, 1,200-byte VP8 packets) to Engine A in batches of 32; the
thread CPU time of every ``pump()`` is summed per Engine and divided by the packets its producer took in. Three set-ups,
each run ``--repeat`` times (medians printed):

- ``alone``: A receives and decrypts, and forwards to nobody (the cost of taking a packet in);
- ``subscriber``: A forwards to one SRTP subscriber (the cost one more subscriber adds: ``subscriber - alone``);
- ``pipe``: A forwards to one pinned pipe consumer toward B, and B takes the plain packet in as the pipe's producer
  with no subscriber (the source's cost ``pipe - alone`` on A, the destination's cost on B);
- ``pipe_srtp``, ``pipe_gcm``: the same pipe keyed as between hosts (docs/FORWARDING.md, Pipes between hosts), with
  AES-CM-128-HMAC-SHA1-80 or AEAD-AES-128-GCM: A encrypts each piped packet once more and B decrypts it.

A room spread over two workers pays ``source + destination`` once per packet and destination worker, whatever the
number of subscribers there, so against the same room on one worker its total worker CPU per forwarded packet grows by
about ``(source + destination) / (subscribers on the destination x per-subscriber cost)``. The kernel's loopback work
is in these figures (sendmmsg on A, recvmmsg on B, in each Engine's thread). Nothing is asserted.

Usage::

    python -m bench.pipe_cost [--packets N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import struct
import time

from pylibsrtp import Policy, Session

import fastpath

VP8 = 96
CM80 = fastpath.PROFILE_AES128_CM_SHA1_80
BATCH = 32
# The pipe set-ups and their SRTP profile: plain between the workers of one host, keyed between hosts.
PIPES = {"pipe": fastpath.PROFILE_PLAIN, "pipe_srtp": CM80, "pipe_gcm": fastpath.PROFILE_AEAD_AES_128_GCM}


def _socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    return s


def _session(key: bytes, outbound: bool) -> Session:
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND)
    policy.allow_repeat_tx = outbound
    return Session(policy)


def _keyed(engine: fastpath.Engine, handle: int, peer: socket.socket) -> Session:
    """Transport ``handle`` toward ``peer`` with fresh keys; returns the peer's outbound session."""
    theirs, mine = os.urandom(30), os.urandom(30)
    engine.add_transport(handle)
    engine.bind_tuple(handle, *peer.getsockname())
    engine.set_srtp(handle, CM80, mine, theirs)
    return _session(theirs, True)


def run(mode: str, packets: int) -> tuple[float, float]:
    """(A's, B's) CPU microseconds per packet its producer took in."""
    a_sock, b_sock, pub_sock, sub_sock = _socket(), _socket(), _socket(), _socket()
    a, b = fastpath.Engine(a_sock.fileno()), fastpath.Engine(b_sock.fileno())
    try:
        pub_tx = _keyed(a, 1, pub_sock)
        a.add_producer(10, 1, fastpath.KIND_VIDEO, b"0", [(b"", 0x1111, 0)], [VP8], {}, 90000)
        if mode == "subscriber":
            _keyed(a, 2, sub_sock)
            a.add_consumer(20, 2, 10, 0x5555, {VP8: VP8}, True)
        if mode in PIPES:
            profile = PIPES[mode]
            size = 28 if profile == fastpath.PROFILE_AEAD_AES_128_GCM else 30
            a_to_b, b_to_a = os.urandom(size), os.urandom(size)
            for engine, peer, mine, theirs in ((a, b_sock, a_to_b, b_to_a), (b, a_sock, b_to_a, a_to_b)):
                engine.add_transport(50)
                engine.bind_tuple(50, *peer.getsockname())
                engine.set_srtp(50, profile, mine, theirs)
            a.add_consumer(100, 50, 10, 0x9000, {VP8: VP8}, True, 0, pinned=True)
            b.add_producer(11, 50, fastpath.KIND_VIDEO, b"", [(b"", 0x9000, 0)], [VP8], {}, 90000)
        payload = b"\x10\x00" + bytes(1200 - 14)
        wire = [pub_tx.protect(struct.pack("!BBHII", 0x80, VP8, i & 0xFFFF, 3000 * (i // 5), 0x1111) + payload)
                for i in range(packets)]
        to_a = ("127.0.0.1", a_sock.getsockname()[1])
        a_cpu = b_cpu = 0.0
        for i in range(0, packets, BATCH):
            for datagram in wire[i:i + BATCH]:
                pub_sock.sendto(datagram, to_a)
            start = time.thread_time()
            a.pump()
            a_cpu += time.thread_time() - start
            if mode in PIPES and select.select([b_sock], [], [], 0.05)[0]:
                start = time.thread_time()
                b.pump()
                b_cpu += time.thread_time() - start
        a_in = a.snapshot_producer(10)["packets"]
        b_in = b.snapshot_producer(11)["packets"] if mode in PIPES else 0
        return a_cpu / max(a_in, 1) * 1e6, (b_cpu / b_in * 1e6 if b_in else 0.0)
    finally:
        del a, b
        for s in (a_sock, b_sock, pub_sock, sub_sock):
            s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {"alone": [], "subscriber": [], **{m: [] for m in PIPES}}
    for _ in range(args.repeat):
        for mode, results in runs.items():
            results.append(run(mode, args.packets))
    med = {mode: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for mode, v in runs.items()}
    print(f"taking a packet in (A alone):              {med['alone'][0]:6.2f} us/packet")
    print(f"one SRTP subscriber on A:                 +{med['subscriber'][0] - med['alone'][0]:6.2f} us/packet")
    for mode, name in (("pipe", "plain pipe"), ("pipe_srtp", "SRTP pipe (CM-80)"), ("pipe_gcm", "SRTP pipe (GCM)")):
        print(f"{name + ', source side (A):':42s}+{med[mode][0] - med['alone'][0]:6.2f} us/packet")
        print(f"{name + ', destination side (B):':42s} {med[mode][1]:6.2f} us/packet")


if __name__ == "__main__":
    main()
