"""The "limit" baseline of docs/PERFORMANCE.md: the minimal SRTP forwarder, run in its own process on a worker core.

Owns running ``bench._limit.run_limit`` (recvmmsg, unprotect once, rewrite SSRC and sequence number per
destination, protect per destination, sendmmsg; no SFU logic; built from the fast path's SRTP and RTP primitives)
as a child process pinned like a worker, fed and read
by the same load generator as mediarouter, so that both are measured the same way (the kernel's CPU accounting of
the forwarding process over the same window, packets counted by the generator's receivers). The keys are made here
(no DTLS: the limit has no signaling). Destination k gets SSRC ``LIMIT_SSRC_BASE + k`` (as ``run_limit`` writes).

Child protocol (``python -m bench.limit``): one JSON line on stdin {core, profile, rx_key, tx_key, dests, seconds,
gso, hmac_batch, srtp_crypto} (the switches a worker gets, control/config.py); the child answers its UDP port as one
line, waits for "go", forwards for ``seconds`` and prints its counters.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from router.ports import IP_MTU_DISCOVER, IP_PMTUDISC_PROBE

LIMIT_SSRC_BASE = 0x1000_0000


class LimitProcess:
    """``start()`` spawns the child and returns its UDP port; ``go()`` starts forwarding; ``result()`` waits."""

    def __init__(self, core: int, profile: int, rx_key: bytes, tx_key: bytes, dests: list[tuple[str, int]],
                 seconds: float, *, gso: bool = True, hmac_batch: bool = True,
                 srtp_crypto: str = "mediarouter") -> None:
        if not dests:
            raise ValueError("the limit loop needs at least one destination")
        self.config = {"core": core, "profile": profile, "rx_key": rx_key.hex(), "tx_key": tx_key.hex(),
                       "dests": [list(d) for d in dests], "seconds": seconds, "gso": gso, "hmac_batch": hmac_batch,
                       "srtp_crypto": srtp_crypto}
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> int:
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
        self.process = subprocess.Popen([sys.executable, "-m", "bench.limit"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env, cwd=root)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(self.config) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("limit loop process failed to start")
        self.port = int(line)
        return self.port

    def go(self) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self, timeout: float) -> dict[str, int]:
        assert self.process is not None and self.process.stdout is not None
        out, _ = self.process.communicate(timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _child() -> None:
    import fastpath
    from bench._limit import run_limit
    from fastpath import crypto_kernel

    config = json.loads(sys.stdin.readline())
    # Before its first SRTP session, as a worker does: the same primitives and tag batching as the workers.
    crypto_kernel.install(srtp_crypto=config["srtp_crypto"], hmac_batch=config["hmac_batch"])
    os.sched_setaffinity(0, {config["core"]})
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option, size in ((33, 8 << 20), (32, 8 << 20)):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE, as a worker does
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except PermissionError:
            pass
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)  # DF, IP ID 0: as a worker does
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    profile = int(config["profile"])
    rx = fastpath.SrtpContext(profile, bytes.fromhex(config["rx_key"]), False)
    dests = [(str(h), int(p)) for h, p in config["dests"]]
    tx = [fastpath.SrtpContext(profile, bytes.fromhex(config["tx_key"]), True) for _ in dests]
    print(sock.getsockname()[1], flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    stats = run_limit(sock.fileno(), dests, rx, tx, float(config["seconds"]), LIMIT_SSRC_BASE,
                      gso=config["gso"])  # UDP GSO like a worker's, and the same switch
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    _child()
