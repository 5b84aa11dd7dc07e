"""Measures what the impairment relay (tests/netimpair.py) does to real traffic, inside a namespace of its own.

Run as ``unshare --net -- python tests/netimpair_probe.py`` (``run_probe()`` does that and returns the JSON). In the
fresh namespace it builds the server side the way tests/e2e/netns.py does (lo, a veth end with 198.51.100.1), starts
the relay for a host 198.51.100.10, runs a UDP echo in the host (it answers every datagram with its first 16 bytes,
so the up direction carries little) and sends numbered, timestamped datagrams from the server side. Three phases,
each with its own rules (set through the relay's control channel):

- ``loss``: down 10 % random loss (seed 7), then down ``loss_every`` 10 (deterministic); the share of echoes back;
- ``delay``: down 40 ms +- 5 ms, up 10 ms; round-trip times of the echoes;
- ``rate``: down capped at 1000 kbit/s, 1200-byte datagrams offered at 2 Mbit/s for 3 s; the rate at which echoes
  come back, and the relay's counters of bytes offered, delivered and dropped at the queue.

The result is one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER, HOST, PORT = "198.51.100.1", "198.51.100.10", 9000
HEADER = struct.Struct("!Qd")  # sequence number, send time (monotonic)

ECHO = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(0.5)
end = time.monotonic() + float(sys.argv[3])
print("echo ready", flush=True)
while time.monotonic() < end:
    try:
        data, addr = s.recvfrom(65536)
    except socket.timeout:
        continue
    s.sendto(data[:16], addr)
"""


class Relay:
    """The relay process and its line protocol."""

    def __init__(self, seconds: float) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "netimpair.py"), "--name", "np", "--host-addr",
                                      HOST, "--seconds", str(seconds)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline() or "{}")
        if not ready.get("ready"):
            raise RuntimeError(f"relay did not start: {ready}")
        self.pid = int(ready["pid"])

    def ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def stop(self) -> None:
        try:
            self.ask({"op": "stop"})
            self.proc.wait(timeout=5)
        finally:
            self.proc.kill()
            self.proc.wait()


def send_and_collect(count: int, interval_s: float, size: int) -> tuple[int, list[float], list[float]]:
    """Sends ``count`` datagrams of ``size`` bytes, one per ``interval_s``; returns (sent, rtts, echo times)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((SERVER, 0))
    sock.settimeout(0.2)
    rtts: list[float] = []
    arrivals: list[float] = []
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            try:
                data = sock.recv(64)
            except TimeoutError:
                continue
            now = time.monotonic()
            _, sent_at = HEADER.unpack(data[:HEADER.size])
            rtts.append(now - sent_at)
            arrivals.append(now)

    thread = threading.Thread(target=receive)
    thread.start()
    pad = b"\0" * (size - HEADER.size)
    start = time.monotonic()
    for seq in range(count):
        target = start + seq * interval_s
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.sendto(HEADER.pack(seq, time.monotonic()) + pad, (HOST, PORT))
    time.sleep(0.5)  # the last echoes (the longest queue plus delay is well under this)
    done.set()
    thread.join()
    sock.close()
    return count, rtts, arrivals


def probe() -> dict[str, Any]:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "link", "add", "mr0", "type", "veth", "peer", "name", "mr1"], check=True)
    subprocess.run(["ip", "addr", "add", f"{SERVER}/24", "dev", "mr0"], check=True)
    subprocess.run(["ip", "link", "set", "mr0", "up"], check=True)
    subprocess.run(["ip", "link", "set", "mr1", "up"], check=True)
    relay = Relay(seconds=40)
    echo = subprocess.Popen(["nsenter", f"--net=/proc/{relay.pid}/ns/net", "--", sys.executable, "-c", ECHO, HOST,
                             str(PORT), "35"], stdout=subprocess.PIPE, text=True)
    out: dict[str, Any] = {}
    try:
        assert echo.stdout is not None
        echo.stdout.readline()
        # loss: random, then deterministic
        relay.ask({"op": "set", "down": {"loss": 0.10, "seed": 7}})
        sent, rtts, _ = send_and_collect(2000, 0.001, 200)
        stats = relay.ask({"op": "stats"})["stats"]["down"]
        out["loss_random"] = {"sent": sent, "echoed": len(rtts), "relay_offered": stats["offered_packets"],
                              "relay_lost": stats["lost_packets"]}
        relay.ask({"op": "set", "down": {"loss_every": 10}})
        sent, rtts, _ = send_and_collect(1000, 0.001, 200)
        out["loss_every_10"] = {"sent": sent, "echoed": len(rtts)}
        # delay
        relay.ask({"op": "set", "down": {"delay_ms": 40, "jitter_ms": 5}, "up": {"delay_ms": 10}})
        sent, rtts, _ = send_and_collect(200, 0.005, 200)
        ms = sorted(r * 1000 for r in rtts)
        out["delay"] = {"sent": sent, "echoed": len(ms), "rtt_min_ms": round(ms[0], 2),
                        "rtt_median_ms": round(statistics.median(ms), 2), "rtt_max_ms": round(ms[-1], 2)}
        # rate cap
        relay.ask({"op": "set", "down": {"rate_kbit": 1000}, "up": {}})
        before = relay.ask({"op": "stats"})["stats"]["down"]
        sent, rtts, arrivals = send_and_collect(625, 0.0048, 1200)  # 1228 bytes on the wire at 2.05 Mbit/s, 3 s
        after = relay.ask({"op": "stats"})["stats"]["down"]
        window = [t for t in arrivals if arrivals[0] + 0.5 <= t <= arrivals[0] + 2.5]  # steady state, 2 s
        wire = 1200 + 28
        out["rate"] = {
            "sent": sent, "echoed": len(rtts), "offered_kbit": round(sent * wire * 8 / 3.0 / 1000, 1),
            "delivered_kbit": round(len(window) * wire * 8 / 2.0 / 1000, 1),
            "relay_offered_bytes": after["offered_bytes"] - before["offered_bytes"],
            "relay_delivered_bytes": after["delivered_bytes"] - before["delivered_bytes"],
            "relay_queue_drops": after["queue_drops"] - before["queue_drops"],
            "max_queue_bytes": after["max_queue_bytes"], "max_rtt_ms": round(max(rtts) * 1000, 1)}
    finally:
        echo.kill()
        echo.wait()
        relay.stop()
    return out


def run_probe(timeout_s: float = 60.0) -> dict[str, Any]:
    """Runs the probe in a new network namespace (needs root and unshare) and returns its measurements."""
    if shutil.which("unshare") is None:
        raise RuntimeError("unshare is not installed")
    proc = subprocess.run(["unshare", "--net", "--", sys.executable, str(Path(__file__).resolve())],
                          capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"probe failed ({proc.returncode}): {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("needs root")
    print(json.dumps(probe()))
