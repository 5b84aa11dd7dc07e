"""The participants' hand-written WebSocket client (``bench.ws_client``): against aiohttp's server it negotiates
permessage-deflate as a browser offers it, inflates the server's compressed messages in one context and deflates its
own in another (context takeover both ways), answers pings and closes; frames split anywhere across reads, fragmented
messages and a refused upgrade are handled."""

from __future__ import annotations

import asyncio
import os
import struct
import zlib

import pytest
from aiohttp import web

from bench import ws_client


async def _server(handler: object) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/rtc", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"ws://127.0.0.1:{port}/rtc?access_token=x"


def test_deflate_both_ways_with_context_takeover() -> None:
    payload = os.urandom(200) * 3  # compressible within itself; a repeat is far smaller with the kept context

    async def main() -> None:
        seen: dict[str, object] = {}

        async def handler(request: web.Request) -> web.WebSocketResponse:
            seen["offer"] = request.headers.get("Sec-WebSocket-Extensions")
            ws = web.WebSocketResponse(compress=True)
            await ws.prepare(request)
            got = [await ws.receive_bytes() for _ in range(3)]
            seen["got"] = got
            for _ in range(3):
                await ws.send_bytes(payload)
            await ws.receive()  # the client's close
            return ws

        runner, url = await _server(handler)
        received: list[bytes] = []
        closed: list[bool] = []
        wire = bytearray()
        try:
            ws = await ws_client.connect(url, received.append, lambda: closed.append(True), deflate=True)
            assert ws.deflate
            original = ws.data_received

            def spy(data: bytes) -> None:
                wire.extend(data)  # the server's frames as they came off the socket
                original(data)

            ws.data_received = spy  # type: ignore[method-assign]
            sent: list[bytes] = []
            real_write = ws._transport.write  # type: ignore[union-attr]
            ws._transport.write = lambda data: (sent.append(data), real_write(data))  # type: ignore[union-attr]
            for _ in range(3):
                ws.send(payload)
            for _ in range(100):
                if len(received) == 3:
                    break
                await asyncio.sleep(0.01)
            await ws.close()
        finally:
            await runner.cleanup()
        assert seen["offer"] == "permessage-deflate; client_max_window_bits"
        assert seen["got"] == [payload] * 3  # aiohttp inflated what we deflated, in its kept context
        assert received == [payload] * 3
        frames = _server_frames(bytes(wire))
        assert all(first & 0x40 for first, _ in frames[:3])  # the server's messages were compressed (RSV1)
        assert frames[1][1] < frames[0][1] / 4  # the repeat referred to the first: the inflate context was kept
        assert all(frame[0] & 0x40 and frame[1] & 0x80 for frame in sent[:3])  # compressed and masked
        assert len(sent[1]) < len(sent[0]) / 4  # our own context kept too
        assert closed == [True] and ws.closed

    asyncio.run(main())


def _server_frames(stream: bytes) -> list[tuple[int, int]]:
    """(first byte, payload length) of each unmasked frame in ``stream``."""
    out = []
    pos = 0
    while pos + 2 <= len(stream):
        n, start = stream[pos + 1] & 0x7F, pos + 2
        if n == 126:
            n, start = int.from_bytes(stream[pos + 2:pos + 4], "big"), pos + 4
        elif n == 127:
            n, start = int.from_bytes(stream[pos + 2:pos + 10], "big"), pos + 10
        out.append((stream[pos], n))
        pos = start + n
    return out


def test_without_deflate_nothing_is_compressed() -> None:
    async def main() -> None:
        async def handler(request: web.Request) -> web.WebSocketResponse:
            assert "Sec-WebSocket-Extensions" not in request.headers
            ws = web.WebSocketResponse(compress=True)
            await ws.prepare(request)
            await ws.send_bytes(await ws.receive_bytes())
            await ws.receive()
            return ws

        runner, url = await _server(handler)
        received: list[bytes] = []
        try:
            ws = await ws_client.connect(url, received.append, lambda: None)
            assert not ws.deflate
            ws.send(b"hello")
            for _ in range(100):
                if received:
                    break
                await asyncio.sleep(0.01)
            await ws.close()
        finally:
            await runner.cleanup()
        assert received == [b"hello"]

    asyncio.run(main())


def test_a_refused_upgrade_raises_with_the_status() -> None:
    async def main() -> None:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(status=503, text="busy")

        runner, url = await _server(handler)
        try:
            with pytest.raises(ws_client.HandshakeError) as caught:
                await ws_client.connect(url, lambda _: None, lambda: None, deflate=True)
        finally:
            await runner.cleanup()
        assert caught.value.status == 503

    asyncio.run(main())


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _server_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        return bytes([first, n]) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def _unmask(frame: bytes) -> tuple[int, bytes]:
    n = frame[1] & 0x7F
    pos = 2 + {126: 2, 127: 8}.get(n, 0)
    key = frame[pos:pos + 4]
    return frame[0], ws_client.mask(frame[pos + 4:], key)


def _opened(received: list[bytes], closed: list[bool], *, deflate: bool,
            skip: ws_client.Skip | None = None) -> tuple[ws_client.WebSocket, _Transport]:
    ws = ws_client.WebSocket(received.append, lambda: closed.append(True), skip)
    transport = _Transport()
    ws.connection_made(transport)  # type: ignore[arg-type]
    ws.deflate = deflate
    ws._open = ws._ready = True
    return ws, transport


def test_split_reads_fragments_ping_and_close() -> None:
    async def main() -> None:
        received: list[bytes] = []
        closed: list[bool] = []
        ws, transport = _opened(received, closed, deflate=True)
        big = os.urandom(70000)  # a 64-bit length
        deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        text = b"fragmented and compressed " * 20
        body = deflater.compress(text) + deflater.flush(zlib.Z_SYNC_FLUSH)
        assert body.endswith(b"\x00\x00\xff\xff")
        body = body[:-4]
        half = len(body) // 2
        stream = (_server_frame(ws_client.OP_BINARY, big)
                  + _server_frame(ws_client.OP_BINARY, body[:half], fin=False, rsv1=True)
                  + _server_frame(ws_client.OP_PING, b"hi")  # a control frame between fragments
                  + _server_frame(ws_client.OP_CONT, body[half:])
                  + _server_frame(ws_client.OP_CLOSE, (1000).to_bytes(2, "big")))
        for i in range(0, len(stream), 997):  # reads that split headers and payloads anywhere
            ws.data_received(stream[i:i + 997])
        assert received == [big, text]
        answers = [_unmask(frame) for frame in transport.written]
        assert answers == [(0x80 | ws_client.OP_PONG, b"hi"), (0x80 | ws_client.OP_CLOSE, (1000).to_bytes(2, "big"))]
        assert transport.closed and closed == [True]
        with pytest.raises(ConnectionError):
            ws.send(b"late")

    asyncio.run(main())


def test_server_no_context_takeover_inflates_each_message_alone() -> None:
    async def main() -> None:
        received: list[bytes] = []
        ws, _ = _opened(received, [], deflate=True)
        ws._server_takeover = False
        for text in (b"first message", b"second message"):
            deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)  # a fresh context each
            body = (deflater.compress(text) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
            ws.data_received(_server_frame(ws_client.OP_BINARY, body, rsv1=True))
        assert received == [b"first message", b"second message"]

    asyncio.run(main())


def _deflated_alone(message: bytes) -> bytes:
    deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)  # a fresh context, full flush
    return (deflater.compress(message) + deflater.flush(zlib.Z_FULL_FLUSH))[:-4]


@pytest.mark.parametrize("takeover", [False, True])
def test_skipped_messages_are_not_inflated_past_their_first_byte(takeover: bool) -> None:
    """With server_no_context_takeover, a compressed message the receiver declines by its first byte is dropped
    there; the messages around it arrive whole. With context takeover every message is inflated (the context
    needs every byte) and delivered; the receiver's own check then applies."""
    async def main() -> None:
        received: list[bytes] = []
        ws, _ = _opened(received, [], deflate=True, skip=lambda first: first == 0x2A)
        ws._server_takeover = takeover
        big_ignored = b"\x2a" + os.urandom(50000)
        big_kept = b"\x0a" + os.urandom(5000)  # compressed far past the bytes read for the first one
        messages = [b"\x0akept" * 300, big_ignored, b"\x12also kept", b"\x2a", big_kept]
        if takeover:
            deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
            bodies = [(deflater.compress(m) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4] for m in messages]
        else:
            bodies = [_deflated_alone(m) for m in messages]
        for body in bodies:
            ws.data_received(_server_frame(ws_client.OP_BINARY, body, rsv1=True))
        if takeover:
            assert received == messages and ws.skipped == 0
        else:
            assert received == [messages[0], messages[2], big_kept] and ws.skipped == 2
        ws.data_received(_server_frame(ws_client.OP_BINARY, b"\x0auncompressed"))  # RSV1 clear: delivered as is
        assert received[-1] == b"\x0auncompressed"

    asyncio.run(main())


def test_protocol_errors_close_the_connection() -> None:
    async def main() -> None:
        closed: list[bool] = []
        ws, transport = _opened([], closed, deflate=False)
        ws.data_received(_server_frame(ws_client.OP_BINARY, b"x", rsv1=True))  # RSV1 without the extension
        assert transport.closed and closed == [True]
        assert _unmask(transport.written[-1])[1] == (1002).to_bytes(2, "big")

    asyncio.run(main())


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_client_frames_are_masked_with_the_right_length(size: int) -> None:
    payload = os.urandom(size)
    first, body = _unmask(ws_client.frame(ws_client.OP_BINARY, payload, rsv1=True, key=b"\x01\x02\x03\x04"))
    assert first == 0x80 | 0x40 | ws_client.OP_BINARY and body == payload


def test_extension_answers() -> None:
    assert ws_client.parse_extension("") is None
    assert ws_client.parse_extension("permessage-deflate; server_no_context_takeover; client_max_window_bits=10") \
        == {"server_no_context_takeover": "", "client_max_window_bits": "10"}
    with pytest.raises(ws_client.ProtocolError):
        ws_client.parse_extension("x-webkit-deflate-frame")
