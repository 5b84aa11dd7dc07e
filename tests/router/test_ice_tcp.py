"""ICE over TCP in-process (router/ice_tcp.py): a real Engine and MediaService, a client on a loopback TCP socket.

Checks what the acceptance test cannot see from outside: the RFC 4571 framing both ways, that a connection is found
by the ufrag of its first Binding request and answered with the client's own TCP address in XOR-MAPPED-ADDRESS, that
anything else as a first frame closes the connection, and that a client reading too slowly loses datagrams (counted)
instead of growing the worker's memory.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router import ice_tcp, stun
from router.media_service import MediaService
from router.messages import CreateWebRtcTransportReply, CreateWebRtcTransportRequest, TupleChanged
from router.protocol import Empty, Method
from tests.router.fakes import FakeChannel, FakeWorker


@pytest.fixture
async def service() -> AsyncIterator[tuple[MediaService, FakeChannel]]:
    worker = FakeWorker(asyncio.get_running_loop(), ice_tcp=True, node_ips=("192.0.2.7", "192.0.2.8"))
    media = MediaService(worker)  # type: ignore[arg-type]
    media.start()
    await asyncio.sleep(0.05)  # the listener starts in a task
    try:
        yield media, worker.channel
    finally:
        stop(media, worker, worker.tcp_sock)


def stop(media: Any, worker: Any, *tcp_socks: socket.socket | None) -> None:
    """Stops what the fixture started: the ICE-TCP listener, the tick, the UDP reader, the sockets."""
    assert media.ice_tcp is not None
    media.ice_tcp.close()
    if media._tick_task is not None:
        media._tick_task.cancel()
    worker.loop.remove_reader(worker.sock.fileno())
    worker.sock.close()
    for sock in tcp_socks:
        assert sock is not None
        sock.close()


async def create(channel: FakeChannel) -> CreateWebRtcTransportReply:
    await channel.handlers[Method.MEDIA_ROUTER_CREATE]("r", Empty().to_wire())
    wire = await channel.handlers[Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT](
        "r", CreateWebRtcTransportRequest(transport_id="t").to_wire())
    assert wire is not None
    return CreateWebRtcTransportReply.from_wire(wire)


def framed(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 3))
    return await asyncio.wait_for(reader.readexactly(length), 3)


async def test_candidates_announce_every_address_over_udp_then_tcp(service: Any) -> None:
    media, ch = service
    reply = await create(ch)
    port = media.worker.rtc_port
    assert reply.candidate.ip == "192.0.2.7" and reply.candidate.protocol == "udp"
    assert [(c.protocol, c.ip, c.port) for c in reply.candidates] == [
        ("udp", "192.0.2.7", port), ("udp", "192.0.2.8", port), ("tcp", "192.0.2.7", port), ("tcp", "192.0.2.8", port)]


async def test_first_binding_request_finds_the_transport_and_maps_the_tcp_address(service: Any) -> None:
    media, ch = service
    reply = await create(ch)
    reader, writer = await asyncio.open_connection("127.0.0.1", media.worker.rtc_port)
    try:
        check = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
        check.add_username(f"{reply.ice_ufrag}:peer").add_priority(1).add_ice_controlling(1).add_use_candidate()
        # two frames in one write, the second split: the framing must not care how TCP cuts the stream
        second = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
        second.add_username(f"{reply.ice_ufrag}:peer").add_priority(1).add_ice_controlling(1)
        data = framed(check.to_bytes(reply.ice_pwd.encode())) + framed(second.to_bytes(reply.ice_pwd.encode()))
        writer.write(data[:-7])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(data[-7:])
        responses = [stun.parse(await read_frame(reader)) for _ in range(2)]
        client = writer.get_extra_info("sockname")
        for response, request in zip(responses, (check, second), strict=True):
            assert response.cls == stun.StunClass.SUCCESS
            assert response.transaction_id == request.transaction_id
            value = response.get(stun.ATTR_XOR_MAPPED_ADDRESS)
            assert value is not None
            assert stun.decode_xor_address(value, response.transaction_id) == (client[0], client[1])
        transport = media.transports.get("t")
        assert transport.tcp_peer == (client[0], client[1]) and transport.tuple != transport.tcp_peer
        assert transport.dump()["protocol"] == "tcp"
        changed = [n for n in ch.notifications if n[0] == "transport.tuple_changed"]
        assert changed == [("transport.tuple_changed", "t",
                            TupleChanged(host=client[0], port=client[1], protocol="tcp").to_wire())]
        stats = media.ice_tcp.stats()
        assert (stats["ice_tcp_frames_in"], stats["ice_tcp_connections"]) == (2, 1)
        assert stats["ice_tcp_frames_out"] == 2 and stats["ice_tcp_dropped_out"] == 0
    finally:
        writer.close()


async def test_ipv6_is_announced_over_tcp_only_and_relayed_into_the_ipv4_engine() -> None:
    """An IPv6 address beside the IPv4 UDP port: a TCP candidate only (the Engine's tuples are IPv4), and a client
    on the IPv6 listener is checked, mapped to its own IPv6 address and bound through its IPv4 relay tuple."""
    from router.ports import bind_tcp

    worker = FakeWorker(asyncio.get_running_loop(), ice_tcp=True, node_ips=("192.0.2.7", "2001:db8::7"))
    worker.tcp6_sock = bind_tcp("::1", worker.rtc_port, v6only=True)  # the worker binds ::, the test ::1
    media = MediaService(worker)  # type: ignore[arg-type]
    media.start()
    await asyncio.sleep(0.05)
    ch = worker.channel
    try:
        reply = await create(ch)
        port = worker.rtc_port
        assert [(c.protocol, c.ip, c.port) for c in reply.candidates] == [
            ("udp", "192.0.2.7", port), ("tcp", "192.0.2.7", port), ("tcp", "2001:db8::7", port)]
        reader, writer = await asyncio.open_connection("::1", port)
        try:
            check = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
            check.add_username(f"{reply.ice_ufrag}:peer").add_priority(1).add_ice_controlling(1).add_use_candidate()
            writer.write(framed(check.to_bytes(reply.ice_pwd.encode())))
            response = stun.parse(await read_frame(reader))
            client = writer.get_extra_info("sockname")
            assert response.cls == stun.StunClass.SUCCESS
            value = response.get(stun.ATTR_XOR_MAPPED_ADDRESS)
            assert value is not None
            assert stun.decode_xor_address(value, response.transaction_id) == ("::1", client[1])
            transport = media.transports.get("t")
            assert transport.tcp_peer == ("::1", client[1])
            assert transport.tuple is not None and transport.tuple[0] == "127.0.0.1"  # the relay: IPv4 to the Engine
            changed = [n for n in ch.notifications if n[0] == "transport.tuple_changed"]
            assert changed == [("transport.tuple_changed", "t",
                                TupleChanged(host="::1", port=client[1], protocol="tcp").to_wire())]
        finally:
            writer.close()
    finally:
        stop(media, worker, worker.tcp_sock, worker.tcp6_sock)


async def test_a_first_frame_that_is_no_binding_request_closes_the_connection(service: Any) -> None:
    media, _ = service
    reader, writer = await asyncio.open_connection("127.0.0.1", media.worker.rtc_port)
    try:
        writer.write(framed(b"\x16\xfe\xfd" + bytes(40)))  # a DTLS record before any check
        assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the worker
        assert media.ice_tcp.counters.refused == 1 and not media.ice_tcp.connections
    finally:
        writer.close()


class SlowTransport:
    """An asyncio transport whose peer reads nothing: everything written stays buffered."""

    def __init__(self) -> None:
        self.buffered = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.buffered += len(data)


async def test_a_slow_reader_loses_datagrams_and_the_buffer_stays_bounded() -> None:
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    worker_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    worker_side.bind(("127.0.0.1", 0))
    server = ice_tcp.IceTcpServer(loop, listener, worker_side.getsockname())
    connection = ice_tcp.IceTcpConnection(server)
    connection.transport = SlowTransport()  # type: ignore[assignment]
    connection.peer = ("192.0.2.9", 5000)
    connection._open_relay()
    try:
        assert connection.relay_addr is not None
        packet = bytes(1200)
        for _ in range(3):
            for _ in range(200):  # 240 kB per round, about what a worker forwards in 100 ms at 20 Mbit/s
                worker_side.sendto(packet, connection.relay_addr)
            await asyncio.sleep(0.05)
            connection._from_worker()
        slow = connection.transport
        assert slow.buffered <= ice_tcp.WRITE_LIMIT_BYTES
        assert server.counters.frames_out == slow.buffered // 1202
        assert server.counters.dropped_out == 600 - server.counters.frames_out > 0
    finally:
        connection._close()
        worker_side.close()
        listener.close()
