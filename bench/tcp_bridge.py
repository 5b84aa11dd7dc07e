"""ICE over TCP for the benchmark's subscribers: a bridge process between the generator's UDP socket and a worker's
passive ICE-TCP port (RFC 6544, RFC 4571 framing).

The generator (``bench._loadgen``) speaks UDP only: one socket, every synthetic participant on its own address. For
``python -m bench fanout --tcp`` each subscriber gets, in this separate process, a TCP connection *from its own
address* to the worker's ICE-TCP port (the UDP port's number, router/ice_tcp.py) and a UDP "face" on loopback that
the subscriber talks to instead of the worker's UDP port. Datagrams the subscriber sends to its face (ICE check, DTLS,
consent, RTCP reports) are framed onto its TCP connection; frames from the worker are cut out of the TCP stream and
sent to the subscriber's address from the face. So the worker sees real ICE-TCP clients: the first frame of each
connection is the subscriber's Binding request, the XOR-MAPPED-ADDRESS is the subscriber's own address, and every
forwarded packet goes through the worker's relay and its TCP socket. What the bridge itself spends (the client side
of TCP, which a real client pays on its own machine) is in its own process and reported apart (:meth:`TcpBridge.stats`),
not in the worker's CPU; on a host with few cores it competes with the worker, which the report notes.

Parent side: ``bridge = TcpBridge(); await bridge.start()``, ``await bridge.open(client_ip, host, tcp_port,
generator_port)`` -> the face ``(host, port)``, ``await bridge.stats()``, ``await bridge.close()``. The child reads
one JSON command per line on stdin and answers one JSON line on stdout; it exits at EOF.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import sys
import time
from typing import Any

_LENGTH = struct.Struct("!H")
FACE_BUFFER_BYTES = 4 << 20
_RECV_BYTES = 65535


class BridgeError(RuntimeError):
    """The bridge process failed or answered with an error."""


class TcpBridge:
    """The parent's handle on the bridge process."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.tcp_bridge", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))

    async def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise BridgeError("the bridge is not running")
        async with self._lock:  # one command at a time: answers come back in order
            proc.stdin.write(json.dumps(command).encode() + b"\n")
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), 15)
        if not line:
            raise BridgeError(f"the bridge exited ({proc.returncode})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise BridgeError(answer["error"])
        return answer

    async def open(self, client_ip: str, host: str, tcp_port: int, generator_port: int) -> tuple[str, int]:
        """A TCP connection from ``client_ip`` to ``host:tcp_port``; returns the face the client sends to."""
        answer = await self._ask({"open": [client_ip, host, tcp_port, generator_port]})
        face = answer["face"]
        return str(face[0]), int(face[1])

    async def stats(self) -> dict[str, Any]:
        """The bridge's CPU seconds so far and its frame counters."""
        return await self._ask({"stats": True})

    async def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# ------------------------------------------------------------------------------------------- child


class _Counters:
    def __init__(self) -> None:
        self.connections = 0
        self.frames_up = 0  # subscriber -> worker
        self.frames_down = 0  # worker -> subscriber
        self.dropped_down = 0  # the generator's socket would not take it at once


class _Link(asyncio.Protocol):
    """One subscriber: its TCP connection to the worker and its UDP face toward the generator."""

    def __init__(self, loop: asyncio.AbstractEventLoop, face: socket.socket, counters: _Counters) -> None:
        self.loop = loop
        self.face = face
        self.counters = counters
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        self.loop.add_reader(self.face.fileno(), self._from_generator)

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        view = memoryview(data)
        pos, end = 0, len(data)
        face, counters = self.face, self.counters
        while end - pos >= 2:
            length = (data[pos] << 8) | data[pos + 1]
            if end - pos - 2 < length:
                break
            try:
                face.send(view[pos + 2 : pos + 2 + length])
                counters.frames_down += 1
            except OSError:
                counters.dropped_down += 1
            pos += 2 + length
        if pos < end:
            self._buffer += view[pos:]

    def _from_generator(self) -> None:
        frames: list[bytes] = []
        while True:
            try:
                datagram = self.face.recv(_RECV_BYTES)
            except OSError:
                break
            frames.append(_LENGTH.pack(len(datagram)))
            frames.append(datagram)
        if frames and self.transport is not None:
            self.counters.frames_up += len(frames) // 2
            self.transport.write(b"".join(frames))

    def connection_lost(self, exc: Exception | None) -> None:
        self.loop.remove_reader(self.face.fileno())
        self.face.close()


async def _open(loop: asyncio.AbstractEventLoop, counters: _Counters, client_ip: str, host: str, port: int,
                generator_port: int) -> tuple[str, int]:
    face = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        face.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, FACE_BUFFER_BYTES)
        face.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, FACE_BUFFER_BYTES)
        face.bind(("127.0.0.1", 0))
        face.connect((client_ip, generator_port))  # only the subscriber's datagrams are read from it
        face.setblocking(False)
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tcp.bind((client_ip, 0))  # the worker maps the subscriber to its own address, as the generator checks
        tcp.setblocking(False)
        await loop.sock_connect(tcp, (host, port))
        await loop.create_connection(lambda: _Link(loop, face, counters), sock=tcp)
    except BaseException:
        face.close()
        tcp.close()
        raise
    counters.connections += 1
    name = face.getsockname()
    return name[0], name[1]


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    counters = _Counters()
    while line := await reader.readline():
        command = json.loads(line)
        try:
            if "open" in command:
                answer: dict[str, Any] = {"face": list(await _open(loop, counters, *command["open"]))}
            else:
                answer = {"cpu_s": time.process_time(), "wall_s": time.monotonic(), **vars(counters)}
        except Exception as exc:  # noqa: BLE001 - the parent raises it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def main() -> None:
    try:
        import uvloop

        uvloop.run(_serve())
    except ImportError:
        asyncio.run(_serve())


if __name__ == "__main__":
    main()
