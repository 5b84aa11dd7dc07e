"""The signal WebSocket's writer over a real aiohttp connection: broadcasts framed once and written as they are,
per-socket frames compressed when the client negotiated permessage-deflate, the order kept either way, and a reader
that stops reading still cut off for its own backlog."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from livekit.protocol import models, rtc

from control.rtc import lk_messages as lk
from control.rtc.frames import Frame, participant_key, websocket_frame
from control.service.outbox import WebSocketSink
from tests.control.ws_reader import Reader


def _update(sid: str, metadata: str = "") -> rtc.SignalResponse:
    return lk.participant_update([models.ParticipantInfo(sid=sid, identity=sid, metadata=metadata, version=1)])


async def _serve(script: object) -> TestServer:
    """A server whose WebSocket handler hands a sink to ``script`` and drains it."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sink = WebSocketSink(ws, transport=request.transport, protocol=request.protocol, max_queued=50)
        await script(sink)  # type: ignore[operator]
        await sink.drain()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    server = TestServer(app)
    await server.start_server()
    return server


class _Transport:
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


class _Protocol:
    writing_paused = False


class _Socket:
    """An aiohttp WebSocketResponse as the sink sees it: ``compress`` is the negotiated deflate window or 0."""

    closed = False

    def __init__(self, compress: int = 0) -> None:
        self.compress = compress

    async def close(self, **kw: object) -> None:
        self.closed = True


def test_the_wire_form_is_one_final_unmasked_binary_frame() -> None:
    for size in (0, 125, 126, 65535, 65536):
        wire = websocket_frame(b"x" * size)
        assert wire[0] == 0x82 and not wire[1] & 0x80
        header = 2 if size < 126 else 4 if size < 65536 else 10
        assert len(wire) == header + size


@pytest.mark.parametrize("compress", [0, 15])
async def test_broadcasts_and_own_frames_arrive_in_order(compress: int) -> None:
    """Shared frames (written from their one framing) and per-socket frames (compressed on this socket when
    negotiated) interleave and arrive in the order they were queued, each intact."""
    big = "m" * 40_000  # above aiohttp's synchronous compression size: compressed in its executor

    async def script(sink: WebSocketSink) -> None:
        assert sink.ws.compress == compress and sink.direct
        sink.send_frame(Frame(_update("PA_a")))
        sink.send(lk.pong(1))
        sink.send_frame(Frame(_update("PA_b", big)))
        sink.send(_update("PA_c", big))
        sink.send_frame(Frame(_update("PA_d")))
        await asyncio.sleep(0)
        sink.send_frame(Frame(_update("PA_e")))

    server = await _serve(script)
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws"), compress=compress) as ws:
            got = []
            async for msg in ws:
                assert msg.type == WSMsgType.BINARY
                got.append(rtc.SignalResponse.FromString(msg.data))
        kinds = [m.WhichOneof("message") for m in got]
        assert kinds == ["update", "pong", "update", "update", "update", "update"]
        assert [m.update.participants[0].sid for m in got if m.HasField("update")] == [
            "PA_a", "PA_b", "PA_c", "PA_d", "PA_e"]
        assert got[2].update.participants[0].metadata == big and got[3].update.participants[0].metadata == big
    finally:
        await server.close()


async def test_a_reader_that_stops_reading_is_cut_off_by_its_own_backlog() -> None:
    """Written directly to the transport, frames still queue (and coalesce) once its buffer is full, and the
    connection closes when this reader's own queue passes ``max_queued``."""
    done: asyncio.Future[WebSocketSink] = asyncio.get_running_loop().create_future()

    async def script(sink: WebSocketSink) -> None:
        assert sink.direct
        payload = "p" * 60_000
        for n in range(2000):
            sink.send_frame(Frame(_update(f"PA_{n}", payload)))
            if sink.closed:
                break
            await asyncio.sleep(0)
        coalescing = Frame(_update("PA_same"), participant_key("PA_same"))
        sink.send_frame(coalescing)
        done.set_result(sink)

    server = await _serve(script)
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(server.make_url("/ws"))
            sink = await asyncio.wait_for(done, 30)
            assert sink.overflowed and sink.closed
            ws._response.connection.transport.abort()  # type: ignore[union-attr]
    finally:
        await server.close()


async def test_a_broadcast_to_many_sockets_is_written_over_several_loop_iterations() -> None:
    """One frame to 100 sockets (3 MB in all): each loop iteration writes at most WRITE_BUDGET bytes (plus the
    socket whose write crossed it), every socket gets the same framed bytes once, and all of them get it; a socket
    with a frame of its own is written in the first iteration, not after the others."""
    from control.service import outbox

    transports = [_Transport() for _ in range(100)]
    sinks = [WebSocketSink(_Socket(), transport=t, protocol=_Protocol()) for t in transports]  # type: ignore[arg-type]
    assert all(s.direct for s in sinks)
    frame = Frame(_update("PA_big", "b" * 30_000))
    for sink in sinks:
        sink.send_frame(frame)
    own = lk.pong(7)
    sinks[-1].send(own)  # a frame of its own: this socket is written first, its queue in order
    per_iteration = []
    while sum(len(t.writes) for t in transports) < 100 and len(per_iteration) < 50:
        before = sum(len(w) for t in transports for w in t.writes)
        await asyncio.sleep(0)
        per_iteration.append(sum(len(w) for t in transports for w in t.writes) - before)
        if len(per_iteration) == 1:
            assert transports[-1].writes and not transports[-2].writes
    assert transports[-1].writes == [frame.wire + websocket_frame(own.SerializeToString())]
    assert all(t.writes == [frame.wire] for t in transports[:-1])
    assert len([n for n in per_iteration if n]) >= 3
    assert max(per_iteration) <= outbox.WRITE_BUDGET + len(frame.wire)
    for sink in sinks:
        await sink.drain()


async def test_a_socket_with_permessage_deflate_gets_large_frames_compressed_once_for_all() -> None:
    """Two sockets that negotiated permessage-deflate and one that did not: the large broadcast is compressed once
    (the same bytes to both deflate sockets), the socket's own large frame compressed, small frames uncompressed;
    each socket decodes exactly what was queued, in order."""
    transports = [_Transport() for _ in range(3)]
    sinks = [WebSocketSink(_Socket(c), transport=t, protocol=_Protocol())  # type: ignore[arg-type]
             for c, t in zip((15, 15, 0), transports, strict=True)]
    broadcast = Frame(_update("PA_all", "b" * 30_000))
    own = [_update(f"PA_own{i}", "o" * 5_000) for i in range(3)]
    for sink, message in zip(sinks, own, strict=True):
        sink.send_frame(broadcast)
        sink.send(lk.pong(1))
        sink.send(message)
    for _ in range(5):
        await asyncio.sleep(0)
    expected = [[broadcast.data, lk.pong(1).SerializeToString(), m.SerializeToString()] for m in own]
    for transport, want, deflate in zip(transports, expected, (True, True, False), strict=True):
        reader = Reader()
        assert reader.messages(transport.data) == want
        assert reader.compressed == [deflate, False, deflate]
    shared = broadcast.deflated(15)
    assert transports[0].data.startswith(shared) and transports[1].data.startswith(shared)
    assert len(transports[0].data) < len(transports[2].data) // 10
    for sink in sinks:
        sink.close()
