"""Fuzz target: data channels (router/sctp.py over aiortc's SCTP: packet and chunk parsing, DATA reassembly, DCEP
DATA_CHANNEL_OPEN/ACK, RFC 8831 and 8832), what a connected peer's DTLS application data reaches.

Two DTLS endpoints joined in memory carry an established SCTP association (tests/router/test_sctp.py ``Pair``).
An input whose first byte is even becomes one unordered DATA chunk with the next TSN the server expects (second
byte: the PPID, one of DCEP 50, string 51, binary 53, empty string 56, empty binary 57; third: the stream id) whose
user data is the rest, in a packet with the right verification tag and CRC32c, so that it reaches DCEP and the
channel's message callback; an odd first byte makes the rest the packet's chunks (tag and checksum fixed).
Invariant: nothing escapes ``SctpAssociation.receive`` and its pump task survives every packet (a packet aiortc
rejects is dropped and counted); a DATA chunk never takes the association down.
"""

from __future__ import annotations

import asyncio
from struct import pack

from aiortc.rtcsctptransport import DataChunk, serialize_packet
from google_crc32c import value as crc32c

from tests.router.test_sctp import Pair

PPIDS = (50, 51, 53, 56, 57)
_loop: asyncio.AbstractEventLoop | None = None
_pair: Pair | None = None


def setup() -> None:
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def _connected() -> Pair:
    global _pair
    if _pair is None or _pair.server_assoc.state != "connected":
        if _pair is not None:
            _pair.close()
        _pair = Pair()
        await _pair.connect()
        channel = _pair.client_assoc.create_channel("probe")
        await _settle()
        assert channel.readyState == "open"
    return _pair


def _packet(sctp, data: bytes) -> bytes:  # noqa: ANN001 - the server's aiortc RTCSctpTransport
    tag = sctp._local_verification_tag  # what the server expects in every packet it receives
    if data[0] % 2 == 0:
        chunk = DataChunk(flags=0x07)  # U, B, E: one whole unordered message
        chunk.tsn = (sctp._last_received_tsn + 1) % (1 << 32)
        chunk.stream_id = data[2] if len(data) > 2 else 0
        chunk.stream_seq = 0
        chunk.protocol = PPIDS[data[1] % len(PPIDS)] if len(data) > 1 else 50
        chunk.user_data = data[3:]
        return serialize_packet(5000, 5000, tag, chunk)
    header = pack("!HHL", 5000, 5000, tag)
    body = data[1:]
    return header + pack("<L", crc32c(header + b"\x00\x00\x00\x00" + body)) + body


def seeds() -> list[bytes]:
    label, protocol = b"chat", b""
    dcep_open = pack("!BBHLHH", 3, 0, 0, 0, len(label), len(protocol)) + label + protocol
    return [b"\x00\x00\x02" + dcep_open, b"\x00\x00\x04" + pack("!BBHLHH", 3, 1, 0, 5, 2, 0) + b"rx",
            b"\x00\x01\x01hello", b"\x00\x02\x01\x00\x01", b"\x00\x03\x01\x00", b"\x00\x00\x01\x02",
            b"\x01" + bytes([4, 0, 0, 8]) + b"\x00\x01\x00\x04",  # HEARTBEAT
            b"\x01" + bytes([3, 0, 0, 16]) + bytes(12)]  # SACK


def check(data: bytes) -> None:
    setup()
    assert _loop is not None
    if not data:
        return

    async def one() -> None:
        pair = await _connected()
        pair.server_assoc.receive(_packet(pair.server_assoc._sctp, data))
        await _settle()
        pump = pair.server_assoc._pump_task
        assert pump is not None and not pump.done(), "the SCTP pump task ended"
        if data[0] % 2 == 0:
            assert pair.server_assoc.state == "connected", pair.server_assoc.state

    _loop.run_until_complete(one())


def close() -> None:
    """End the pair and the loop (the replay test's clean-up)."""
    global _loop, _pair
    if _loop is None:
        return
    if _pair is not None:
        _pair.close()
        _pair = None
    _loop.run_until_complete(_settle())
    for task in asyncio.all_tasks(_loop):
        task.cancel()
    _loop.run_until_complete(_settle())
    _loop.close()
    _loop = None
