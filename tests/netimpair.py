"""A userspace network impairment relay for the tests: a "host" namespace joined to the current one by two TUN devices.

Why hand-written: the kernel the suite runs on has no ``netem`` qdisc (``tc qdisc ... netem`` fails), so loss and
delay cannot come from ``tc``; only ``tbf`` (a pure rate cap) exists. This relay gives loss, delay, jitter and a
rate cap in one place, with counters of what was offered to the link and what it delivered, which ``tc`` would not
give per test either.

How it works. Started in the server's namespace (``python tests/netimpair.py --name bob --host-addr 198.51.100.10``)
it opens TUN device ``<name>s`` there and routes the host's address (``/32``) to it; then it moves itself into a new
network namespace (``unshare(CLONE_NEWNET)``), the *host*, opens TUN device ``<name>h`` in it, gives it the host's
address and routes the server's network (``--peer-net``, default 198.51.100.0/24) through it. Both devices stay
attached to this process's descriptors: every IP packet the host sends comes out of ``<name>h`` and is written into
``<name>s`` (the *up* direction), every packet the server sends to the host comes out of ``<name>s`` and is written
into ``<name>h`` (*down*). Clients run in the host with ``nsenter --net=/proc/<relay pid>/ns/net``. The host
namespace and both devices exist only as long as this process: when it exits (``--seconds`` time bound, ``stop``,
end of stdin, SIGTERM) the kernel removes them, so nothing is left behind.

Each direction applies its :class:`Rule` in order: loss (random with a seed, or deterministic: every Nth packet),
then a token bucket (``rate_kbit``, ``burst_bytes``) with a bounded FIFO queue (``queue_ms`` at the rate; tail
drop), then a fixed delay plus uniform jitter (order is kept: a packet never overtakes the one before it). One
``epoll`` loop serves both devices and stdin, reads in batches and sleeps until the next packet is due.

Control, one JSON object per line on stdin, one answer per line on stdout: ``{"op": "set", "up": {...},
"down": {...}}`` (either key may be missing; a rule replaces the old one), ``{"op": "stats"}`` -> ``{"stats":
{"up": {...}, "down": {...}, "t": seconds since start}}``, ``{"op": "stop"}``. The first line printed is ``{"ready":
true, "pid": ...}`` once both ends are configured.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import errno
import fcntl
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
MTU = 1500
READ_BATCH = 64  # packets read from one device before the other gets its turn


@dataclass(frozen=True)
class Rule:
    """What one direction of the link does to packets. The default passes everything at once."""

    loss: float = 0.0  # probability that a packet is dropped (random, from ``seed``)
    loss_every: int = 0  # deterministic: drop every Nth packet (0 = off); applies besides ``loss``
    seed: int = 1
    delay_ms: float = 0.0  # fixed one-way delay
    jitter_ms: float = 0.0  # plus uniform [-jitter, +jitter], never reordering
    rate_kbit: float = 0.0  # token-bucket rate (0 = no cap)
    burst_bytes: int = 4000  # bucket depth (at least one full packet)
    queue_ms: float = 200.0  # the queue holds this long at the rate (bytes = rate * queue_ms), then tail drop

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Rule:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


class Direction:
    """One direction of the link: loss, then token bucket with its queue, then the delay line; and its counters."""

    def __init__(self, rule: Rule, out_fd: int, now: float) -> None:
        self.out_fd = out_fd
        self.queue: collections.deque[bytes] = collections.deque()
        self.queue_bytes = 0
        self.line: collections.deque[tuple[float, bytes]] = collections.deque()
        self.last_due = 0.0
        self.tokens = 0.0
        self.refilled_at = now
        self.count = 0
        self.c = dict.fromkeys(("offered_packets", "offered_bytes", "lost_packets", "queue_drops",
                                "queue_drop_bytes", "delivered_packets", "delivered_bytes", "write_errors",
                                "max_queue_bytes"), 0)
        self.rule = rule
        self.rng = random.Random(rule.seed)
        self.set_rule(rule, now)

    def set_rule(self, rule: Rule, now: float) -> None:
        if rule.seed != self.rule.seed:
            self.rng = random.Random(rule.seed)
        self.rule = rule
        self.rate = rule.rate_kbit * 1000 / 8  # bytes per second
        self.burst = max(rule.burst_bytes, MTU + 100)
        self.limit = self.rate * rule.queue_ms / 1000 + self.burst
        self.tokens = min(self.tokens, self.burst) if self.rate else 0.0
        self.refilled_at = now
        if not self.rate:  # cap lifted: what waits in the queue goes on now
            while self.queue:
                self._to_line(self.queue.popleft(), now)
            self.queue_bytes = 0

    def offer(self, packet: bytes, now: float) -> None:
        c = self.c
        c["offered_packets"] += 1
        c["offered_bytes"] += len(packet)
        self.count += 1
        rule = self.rule
        if (rule.loss_every and self.count % rule.loss_every == 0) or (rule.loss and self.rng.random() < rule.loss):
            c["lost_packets"] += 1
            return
        if not self.rate:
            self._to_line(packet, now)
            return
        if self.queue_bytes + len(packet) > self.limit:
            c["queue_drops"] += 1
            c["queue_drop_bytes"] += len(packet)
            return
        self.queue.append(packet)
        self.queue_bytes += len(packet)
        c["max_queue_bytes"] = max(c["max_queue_bytes"], self.queue_bytes)

    def _to_line(self, packet: bytes, now: float) -> None:
        rule = self.rule
        if not rule.delay_ms and not rule.jitter_ms and not self.line:
            self._write(packet)
            return
        due = now + rule.delay_ms / 1000
        if rule.jitter_ms:
            due += self.rng.uniform(-rule.jitter_ms, rule.jitter_ms) / 1000
        due = max(due, self.last_due, now)
        self.last_due = due
        self.line.append((due, packet))

    def _write(self, packet: bytes) -> None:
        try:
            os.write(self.out_fd, packet)
        except OSError:
            self.c["write_errors"] += 1
            return
        self.c["delivered_packets"] += 1
        self.c["delivered_bytes"] += len(packet)

    def pump(self, now: float) -> float:
        """Moves what is due; returns the time of the next event (``inf`` when idle)."""
        if self.rate:
            self.tokens = min(self.burst, self.tokens + (now - self.refilled_at) * self.rate)
            self.refilled_at = now
            while self.queue and self.tokens >= len(self.queue[0]):
                packet = self.queue.popleft()
                self.queue_bytes -= len(packet)
                self.tokens -= len(packet)
                self._to_line(packet, now)
        while self.line and self.line[0][0] <= now:
            self._write(self.line.popleft()[1])
        wake = self.line[0][0] if self.line else float("inf")
        if self.queue:
            wake = min(wake, now + (len(self.queue[0]) - self.tokens) / self.rate)
        return wake

    def stats(self) -> dict[str, Any]:
        return {**self.c, "queued_bytes": self.queue_bytes, "in_flight": len(self.line), "rule": self.rule.to_json()}


# ------------------------------------------------------------------------------------------- set-up


def open_tun(name: str) -> int:
    """A non-persistent TUN device ``name`` (IP packets without the packet-information header)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def enter_new_netns() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")


def set_up(name: str, host_addr: str, peer_net: str) -> tuple[int, int]:
    """Server-side device with the route to the host, then the host namespace with its device, address and route."""
    server_dev, host_dev = f"{name}s", f"{name}h"
    server_fd = open_tun(server_dev)
    ip("link", "set", server_dev, "mtu", str(MTU), "up")
    ip("route", "add", f"{host_addr}/32", "dev", server_dev)
    enter_new_netns()
    host_fd = open_tun(host_dev)
    ip("link", "set", "lo", "up")
    ip("addr", "add", f"{host_addr}/32", "dev", host_dev)
    ip("link", "set", host_dev, "mtu", str(MTU), "up")
    ip("route", "add", peer_net, "dev", host_dev, "src", host_addr)
    return server_fd, host_fd


# ------------------------------------------------------------------------------------------- loop


def _read_batch(fd: int, direction: Direction, now: float) -> None:
    for _ in range(READ_BATCH):
        try:
            packet = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                return
            raise
        direction.offer(packet, now)


def _answer(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(server_fd: int, host_fd: int, up: Rule, down: Rule, seconds: float) -> None:
    """The relay loop until ``seconds`` passed, ``stop`` or end of stdin."""
    started = time.monotonic()
    deadline = started + seconds
    directions = {"up": Direction(up, server_fd, started), "down": Direction(down, host_fd, started)}
    source = {host_fd: directions["up"], server_fd: directions["down"]}
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    pending = b""
    poller = select.epoll()
    for fd in (server_fd, host_fd):
        poller.register(fd, select.EPOLLIN)
    try:
        poller.register(stdin, select.EPOLLIN)
    except PermissionError:  # a regular file or /dev/null: no control channel, the time bound ends the relay
        pass
    wake = float("inf")
    while True:
        now = time.monotonic()
        if now >= deadline:
            return
        timeout = max(0.0, min(wake, deadline) - now)
        for fd, _ in poller.poll(timeout):
            if fd == stdin:
                chunk = os.read(stdin, 65536)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip() and not _command(json.loads(line), directions, started):
                        return
            else:
                _read_batch(fd, source[fd], time.monotonic())
        now = time.monotonic()
        wake = min(d.pump(now) for d in directions.values())


def _command(cmd: dict[str, Any], directions: dict[str, Direction], started: float) -> bool:
    op = cmd.get("op")
    now = time.monotonic()
    if op == "set":
        for key in ("up", "down"):
            if key in cmd:
                directions[key].set_rule(Rule.from_json(cmd[key]), now)
        _answer({"ok": True})
    elif op == "stats":
        _answer({"stats": {"t": round(now - started, 3), **{k: d.stats() for k, d in directions.items()}}})
    elif op == "stop":
        _answer({"ok": True})
        return False
    else:
        _answer({"error": f"unknown op {op!r}"})
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="device prefix (at most 12 characters): <name>s, <name>h")
    parser.add_argument("--host-addr", required=True, help="the host's address, e.g. 198.51.100.10")
    parser.add_argument("--peer-net", default="198.51.100.0/24", help="the server's network, routed from the host")
    parser.add_argument("--up", default="{}", help="JSON Rule for host -> server")
    parser.add_argument("--down", default="{}", help="JSON Rule for server -> host")
    parser.add_argument("--seconds", type=float, default=120.0, help="time bound: the relay exits after it")
    args = parser.parse_args()
    if len(args.name) > 12:
        parser.error("--name: at most 12 characters")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server_fd, host_fd = set_up(args.name, args.host_addr, args.peer_net)
    _answer({"ready": True, "pid": os.getpid()})
    serve(server_fd, host_fd, Rule.from_json(json.loads(args.up)), Rule.from_json(json.loads(args.down)),
          args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
