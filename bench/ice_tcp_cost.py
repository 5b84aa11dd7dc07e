"""What ICE over TCP adds per packet: the worker-side relay of router/ice_tcp.py, measured alone.

Over UDP a forwarded packet costs the worker its Engine work and its share of one ``sendmmsg``. Over ICE-TCP the
Engine does exactly the same (it sends to the connection's relay tuple), and the relay then reads the datagram
(one ``recv`` and one Python ``bytes`` per packet), frames it (RFC 4571) and writes the frames of one wake-up with
one ``write`` to the TCP socket; toward the worker it parses frames and sends each with one ``send``. This script
measures that extra CPU in a process that runs only the relay (uvloop, as a worker does): a forked child blasts
datagrams from the "worker" address to the relay (outbound, worker -> client) or sends framed packets over TCP
(inbound, client -> worker), another child reads the other end. It prints CPU microseconds per relayed packet of
the relay's process (``time.process_time``), to set against the Engine's own per-packet cost over UDP
(docs/PERFORMANCE.md), and the relay's counters.

    python -m bench.ice_tcp_cost [--packets 200000] [--size 1200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import time

from router.ice_tcp import IceTcpServer

FIRST = bytes.fromhex("000100102112a442") + bytes(12) + struct.pack("!HH", 6, 9) + b"abcd:efgh" + bytes(3)


def _reader(port: int, packets: int, size: int, outbound: bool, sink: socket.socket) -> None:
    """Child: the client on TCP (reads frames outbound, writes them inbound)."""
    tcp = socket.create_connection(("127.0.0.1", port))
    tcp.sendall(struct.pack("!H", len(FIRST)) + FIRST)
    if outbound:
        want = packets * (size + 2)
        got = 0
        tcp.settimeout(5)
        try:
            while got < want:
                chunk = tcp.recv(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
        except TimeoutError:
            pass
    else:
        frame = struct.pack("!H", size) + bytes(size)
        batch = frame * 64
        for _ in range(packets // 64):
            tcp.sendall(batch)
        time.sleep(1)
    tcp.close()
    os._exit(0)


def _worker_side(packets: int, size: int, outbound: bool, sink: socket.socket, relay: tuple[str, int]) -> None:
    """Child: the worker's UDP socket (sends outbound at about 100k packets/s, drains inbound)."""
    if outbound:
        payload = bytes(size)
        for i in range(packets):
            sink.sendto(payload, relay)
            if i % 500 == 499:
                time.sleep(0.004)
    else:
        sink.settimeout(3)
        try:
            while True:
                sink.recv(65535)
        except TimeoutError:
            pass
    os._exit(0)


async def measure(packets: int, size: int, outbound: bool) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    server = IceTcpServer(loop, listener, sink.getsockname())
    await server.start()
    port = listener.getsockname()[1]
    reader = os.fork()
    if reader == 0:
        _reader(port, packets, size, outbound, sink)
    _, relay = await loop.run_in_executor(None, sink.recvfrom, 2048)  # the first frame, relayed
    start_cpu, start = time.process_time(), time.monotonic()
    writer = os.fork()
    if writer == 0:
        _worker_side(packets, size, outbound, sink, relay)
    counters = server.counters
    done = (lambda: counters.frames_out + counters.dropped_out >= packets) if outbound else (
        lambda: counters.frames_in >= packets // 64 * 64)
    deadline = time.monotonic() + 60
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    cpu, wall = time.process_time() - start_cpu, time.monotonic() - start
    relayed = counters.frames_out if outbound else counters.frames_in - 1
    for pid in (reader, writer):
        os.waitpid(pid, 0)
    server.close()
    sink.close()
    return {"direction": "worker->client" if outbound else "client->worker", "packets": relayed,
            "dropped": counters.dropped_out if outbound else counters.dropped_in,
            "cpu_us_per_packet": round(cpu / max(relayed, 1) * 1e6, 2), "packets_per_s": round(relayed / wall)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1200)
    args = ap.parse_args()
    import uvloop

    for outbound in (True, False):
        print(json.dumps(uvloop.run(measure(args.packets, args.size, outbound))))


if __name__ == "__main__":
    main()
