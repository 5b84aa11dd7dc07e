"""SCTP associations and data channels over two DTLS endpoints joined in memory (RFC 8261, 8831, 8832;
docs/RELIABILITY.md, F1)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import pytest

from router.dtls import DtlsCertificate, DtlsEndpoint
from router.sctp import RTCDataChannel, SctpAssociation, SctpError

CLIENT_CERT = DtlsCertificate.generate()
SERVER_CERT = DtlsCertificate.generate()


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``predicate`` holds; fail after a bounded number of iterations (no wall clock)."""
    for _ in range(5000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"timed out waiting for {what}")


class Pair:
    """A DTLS client and server delivering to each other through ``call_soon`` (an asynchronous, lossless wire),
    each with an SCTP association on top."""

    def __init__(self, *, server_max_message_size: int = 262_144) -> None:
        loop = asyncio.get_running_loop()
        self.client = DtlsEndpoint(
            CLIENT_CERT,
            "client",
            [("sha-256", SERVER_CERT.fingerprint())],
            lambda d: loop.call_soon(self._to_server, d),
        )
        self.server = DtlsEndpoint(
            SERVER_CERT,
            "server",
            [("sha-256", CLIENT_CERT.fingerprint())],
            lambda d: loop.call_soon(self._to_client, d),
        )
        self.client_assoc = SctpAssociation(self.client)
        self.server_assoc = SctpAssociation(self.server, max_message_size=server_max_message_size)
        self.client.on_application_data = self.client_assoc.receive
        self.server.on_application_data = self.server_assoc.receive
        self.received: dict[str, list[tuple[str, bytes | str]]] = {"client": [], "server": []}
        self.client_assoc.on_message = lambda label, data: self.received["client"].append((label, data))
        self.server_assoc.on_message = lambda label, data: self.received["server"].append((label, data))
        self.announced: dict[str, list[RTCDataChannel]] = {"client": [], "server": []}
        self.client_assoc.on_channel = self.announced["client"].append
        self.server_assoc.on_channel = self.announced["server"].append
        self.states: list[str] = []
        self.server_assoc.on_state_change = self.states.append

    def _to_server(self, data: bytes) -> None:
        self.server.handle(data)

    def _to_client(self, data: bytes) -> None:
        self.client.handle(data)

    async def connect(self) -> None:
        self.client.start()
        await until(lambda: self.client.state == self.server.state == "connected", "DTLS")
        await asyncio.gather(self.client_assoc.start(5000), self.server_assoc.start(5000))
        await until(lambda: self.client_assoc.state == self.server_assoc.state == "connected", "SCTP")

    def close(self) -> None:
        self.client_assoc.close()
        self.server_assoc.close()
        self.client.close()
        self.server.close()


async def test_peer_opened_channel_is_announced_and_messages_flow_both_ways() -> None:
    pair = Pair()
    await pair.connect()
    assert pair.states == ["connecting", "connected"]
    chat = pair.client_assoc.create_channel("chat", protocol="json")
    await until(lambda: pair.announced["server"] != [] and chat.readyState == "open", "DCEP OPEN/ACK")
    remote = pair.announced["server"][0]
    assert (remote.label, remote.protocol, remote.ordered) == ("chat", "json", True)
    assert chat.id is not None and chat.id % 2 == 0 and remote.id == chat.id  # DTLS client: even stream ids

    assert pair.client_assoc.send(chat, "hello")
    assert pair.client_assoc.send("chat", b"\x00\x01binary")
    assert pair.server_assoc.send("chat", "hi back")
    assert pair.server_assoc.send(remote, b"\xff" * 3000)  # fragmented over several DATA chunks
    assert pair.server_assoc.send(remote, "")
    await until(lambda: len(pair.received["server"]) == 2 and len(pair.received["client"]) == 3, "messages")
    assert pair.received["server"] == [("chat", "hello"), ("chat", b"\x00\x01binary")]
    assert pair.received["client"] == [("chat", "hi back"), ("chat", b"\xff" * 3000), ("chat", "")]
    pair.close()


async def test_server_created_channels_reach_the_client() -> None:
    pair = Pair()
    # Created before the association is up, as LiveKit's "_reliable" / "_lossy" are: opened once it is.
    reliable = pair.server_assoc.create_channel("_reliable")
    lossy = pair.server_assoc.create_channel("_lossy", ordered=False, max_retransmits=0)
    assert not pair.server_assoc.send(reliable, "too early")
    await pair.connect()
    await until(lambda: len(pair.announced["client"]) == 2, "two channels announced")
    await until(lambda: reliable.readyState == lossy.readyState == "open", "ACKs")
    by_label = {c.label: c for c in pair.announced["client"]}
    assert set(by_label) == {"_reliable", "_lossy"}
    assert by_label["_lossy"].ordered is False and by_label["_lossy"].maxRetransmits == 0
    assert by_label["_reliable"].ordered is True and by_label["_reliable"].maxRetransmits is None
    assert reliable.id is not None and reliable.id % 2 == 1  # DTLS server: odd stream ids
    assert {c.label for c in pair.server_assoc.channels} == {"_reliable", "_lossy"}

    assert pair.server_assoc.send("_reliable", b"server says")
    assert pair.client_assoc.send("_lossy", b"client says")
    await until(lambda: pair.received["client"] and pair.received["server"], "messages")
    assert pair.received["client"] == [("_reliable", b"server says")]
    assert pair.received["server"] == [("_lossy", b"client says")]
    pair.close()


async def test_oversized_incoming_message_is_dropped_and_the_association_keeps_working() -> None:
    pair = Pair(server_max_message_size=1000)
    await pair.connect()
    chat = pair.client_assoc.create_channel("chat")
    await until(lambda: chat.readyState == "open", "open")
    assert pair.client_assoc.send(chat, b"x" * 1001)  # fragmented; dropped once reassembled
    assert pair.client_assoc.send(chat, b"y" * 1000)
    await until(lambda: pair.received["server"] != [], "the small message")
    assert pair.received["server"] == [("chat", b"y" * 1000)]
    assert pair.server_assoc.messages_too_large == 1
    assert pair.server_assoc.state == "connected"
    pair.close()


async def test_garbage_records_are_counted_and_ignored() -> None:
    pair = Pair()
    await pair.connect()
    pair.server_assoc.receive(b"\x00")  # too short for an SCTP common header: aiortc drops it
    chat = pair.client_assoc.create_channel("chat")
    await until(lambda: chat.readyState == "open", "open")
    # A second DCEP OPEN on a stream that is already open makes aiortc raise; the pump must survive it.
    dcep_open = b"\x03\x00\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00chat"
    await pair.client_assoc._sctp._send(chat.id, 50, dcep_open)  # PPID 50 = WebRTC DCEP
    await until(lambda: pair.server_assoc.records_bad == 1, "the bad packet to be counted")
    assert pair.client_assoc.send(chat, "still fine")
    await until(lambda: pair.received["server"] != [], "message after garbage")
    assert pair.received["server"] == [("chat", "still fine")]
    assert pair.server_assoc.state == "connected"
    pair.close()


async def test_close_aborts_the_peer_and_closes_channels() -> None:
    pair = Pair()
    await pair.connect()
    chat = pair.client_assoc.create_channel("chat")
    await until(lambda: chat.readyState == "open" and pair.announced["server"] != [], "open")
    remote = pair.announced["server"][0]
    closed: list[str] = []
    pair.client_assoc.on_state_change = closed.append
    pair.client_assoc.close()
    assert pair.client_assoc.state == "closed" and closed == ["closed"]
    assert chat.readyState == "closed" and pair.client_assoc.channels == []
    assert not pair.client_assoc.send(chat, "after close")
    await until(lambda: pair.server_assoc.state == "closed", "ABORT at the peer")
    assert remote.readyState == "closed"
    assert pair.states[-1] == "closed"
    pair.client_assoc.close()  # idempotent
    pair.close()


async def test_bad_arguments_and_states() -> None:
    loop_pair = Pair()
    with pytest.raises(SctpError, match="^DTLS is not connected \\(state 'new'\\)$"):
        await loop_pair.server_assoc.start(5000)
    with pytest.raises(ValueError, match="^SCTP port 0 outside 1..65535$"):
        SctpAssociation(loop_pair.server, port=0)
    with pytest.raises(ValueError, match="^max_message_size must be positive, got 0$"):
        SctpAssociation(loop_pair.server, max_message_size=0)
    with pytest.raises(ValueError, match="^max_retransmits and max_packet_life_time are mutually exclusive$"):
        loop_pair.server_assoc.create_channel("x", max_retransmits=1, max_packet_life_time=100)
    await loop_pair.connect()
    with pytest.raises(SctpError, match="^association already started$"):
        await loop_pair.server_assoc.start(5000)
    chat = loop_pair.client_assoc.create_channel("chat")
    await until(lambda: chat.readyState == "open", "open")
    with pytest.raises(ValueError, match="only supports messages up to 65536 bytes"):
        loop_pair.client_assoc.send(chat, b"z" * 70_000)  # the peer's default max-message-size (RFC 8841)
    assert not loop_pair.client_assoc.send("no such label", "x")
    loop_pair.close()
    with pytest.raises(SctpError, match="^association is closed$"):
        loop_pair.client_assoc.create_channel("late")


class _SlowPathServer(asyncio.DatagramProtocol):
    """ICE-lite + DTLS + SCTP on one loopback UDP socket, demuxed by first byte (RFC 7983)."""

    def __init__(self, peer_fingerprints: list[tuple[str, str]], role: str) -> None:
        from router.ice import IceLite

        self.ice = IceLite("srvufrag", "p" * 24)
        self.dtls = DtlsEndpoint(SERVER_CERT, role, peer_fingerprints, self._send_dtls)
        self.assoc = SctpAssociation(self.dtls)
        self.dtls.on_application_data = self.assoc.receive
        self.dtls.on_connected = lambda: asyncio.get_running_loop().create_task(self.assoc.start(5000))
        self.transport: asyncio.DatagramTransport | None = None
        self.tuple: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast_datagram(transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if data and data[0] < 4:
            result = self.ice.handle(data, addr)
            if result.response is not None:
                self.transport.sendto(result.response, addr)
            if result.select:
                self.tuple = addr
                self.dtls.start()  # sends the ClientHello in the client role; no-op once started
        elif data and 20 <= data[0] <= 63 and addr == self.tuple:
            self.dtls.handle(data)

    def _send_dtls(self, data: bytes) -> None:
        if self.transport is not None and self.tuple is not None:
            self.transport.sendto(data, self.tuple)


def cast_datagram(transport: asyncio.BaseTransport) -> asyncio.DatagramTransport:
    # asyncio's UDP transport does not subclass DatagramTransport, so this is a typing cast only.
    return cast(asyncio.DatagramTransport, transport)


@pytest.mark.parametrize("our_role", ["server", "client"])
async def test_interop_with_aiortc_ice_dtls_and_data_channel(monkeypatch: pytest.MonkeyPatch, our_role: str) -> None:
    """An independent client stack (aioice full agent, aiortc DTLS + SCTP) against ours over loopback UDP."""
    import aioice.ice
    from aiortc import (
        RTCCertificate,
        RTCDtlsParameters,
        RTCDtlsTransport,
        RTCIceCandidate,
        RTCIceGatherer,
        RTCIceParameters,
        RTCIceTransport,
        RTCSctpTransport,
    )
    from aiortc.rtcdtlstransport import RTCDtlsFingerprint
    from aiortc.rtcsctptransport import RTCSctpCapabilities

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    loop = asyncio.get_running_loop()
    client_cert = RTCCertificate.generateCertificate()
    fps = [(f.algorithm, f.value) for f in client_cert.getFingerprints()]
    transport, server = await loop.create_datagram_endpoint(
        lambda: _SlowPathServer(fps, our_role), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    gatherer = RTCIceGatherer(iceServers=[])
    ice = RTCIceTransport(gatherer)
    dtls = RTCDtlsTransport(ice, [client_cert])
    sctp = RTCSctpTransport(dtls)
    try:
        await gatherer.gather()
        await ice.addRemoteCandidate(
            RTCIceCandidate(
                component=1, foundation="1", ip="127.0.0.1", port=port, priority=2130706431, protocol="udp", type="host"
            )
        )
        await ice.addRemoteCandidate(None)
        ice._connection.ice_controlling = True  # the full agent facing a lite one controls (RFC 8445 §6.1.1)
        await asyncio.wait_for(ice.start(RTCIceParameters("srvufrag", "p" * 24, iceLite=True)), 10)
        assert server.tuple is not None and server.ice.selected == server.tuple
        their_role = "client" if our_role == "server" else "server"
        dtls._set_role(their_role)
        await asyncio.wait_for(
            dtls.start(RTCDtlsParameters([RTCDtlsFingerprint("sha-256", SERVER_CERT.fingerprint())], our_role)), 10
        )
        assert dtls.state == "connected"
        await until(lambda: server.dtls.state == "connected", "our DTLS")
        assert server.dtls.srtp_profile in (1, 7)

        got: list[bytes | str] = []
        server.assoc.on_message = lambda label, data: got.append(data)
        await sctp.start(RTCSctpCapabilities(maxMessageSize=65536), 5000)
        from aiortc import RTCDataChannel
        from aiortc.rtcdatachannel import RTCDataChannelParameters

        channel = RTCDataChannel(sctp, RTCDataChannelParameters(label="chat"))
        echoes: list[bytes | str] = []
        channel.on("message", echoes.append)
        await asyncio.wait_for(until_async(lambda: channel.readyState == "open"), 10)
        channel.send("ping from aiortc")
        await asyncio.wait_for(until_async(lambda: got != []), 10)
        assert got == ["ping from aiortc"]
        assert server.assoc.send("chat", b"pong from mediarouter")
        await asyncio.wait_for(until_async(lambda: echoes != []), 10)
        assert echoes == [b"pong from mediarouter"]
    finally:
        server.assoc.close()
        server.dtls.close()
        await sctp.stop()
        await dtls.stop()
        await ice.stop()
        transport.close()


async def until_async(predicate: Callable[[], bool]) -> None:
    """Real I/O is involved here, so yield to the loop with short sleeps; the caller bounds it with wait_for."""
    while not predicate():
        await asyncio.sleep(0.005)


async def test_own_channels_report_to_the_association_before_any_listener_and_need_none() -> None:
    # A channel this side opens reports its messages and its close to the association itself (no pyee listener per
    # channel, a cost per transport in a burst of joins); a listener added by a user still hears them, after it.
    pair = Pair()
    reliable = pair.server_assoc.create_channel("_reliable")
    assert reliable.listeners("message") == [] and reliable.listeners("close") == []
    assert pair.server_assoc._sctp.listeners("datachannel") == []
    seen: list[tuple[str, bytes | str]] = []
    reliable.on("message", lambda data: seen.append(("listener", data)))
    pair.server_assoc.on_message = lambda label, data: seen.append(("association", data))
    await pair.connect()
    await until(lambda: len(pair.announced["client"]) == 1 and reliable.readyState == "open", "open")
    assert pair.client_assoc.send("_reliable", b"x")
    await until(lambda: len(seen) == 2, "the message")
    assert seen == [("association", b"x"), ("listener", b"x")]
    assert pair.server_assoc.channels == [reliable]
    pair.close()
    assert reliable.readyState == "closed" and pair.server_assoc.channels == []
