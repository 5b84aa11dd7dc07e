"""The synthetic participants' WebSocket client: RFC 6455 with permessage-deflate (RFC 7692), written by hand.

Owns one participant's ``/rtc`` connection below the LiveKit messages (``bench.lk_client`` speaks those): the TCP
connection straight to the URL's host (an IP address in every benchmark: no resolver, no happy-eyeballs), the
HTTP/1.1 upgrade with ``Sec-WebSocket-Key``/``-Accept``, masked client frames, the server's frames (fragmented or
not, ping answered with pong, close answered with close) and permessage-deflate as a browser negotiates it: offered
as ``permessage-deflate; client_max_window_bits``, compressed messages (RSV1) inflated in one context that lives as
long as the connection unless the server said ``server_no_context_takeover``, and every message we send deflated in
our own context (context takeover unless the server asked ``client_no_context_takeover``).

Why not aiohttp's client, which the benchmark used before: a ``bench join`` process opens thousands of these
connections on the cores the server under test shares, and aiohttp's per-connection Python (``ClientSession._request``,
the connector and aiohappyeyeballs, the response and header objects, a reader task and a compressor wrapper per
socket) cost the generator about 1.5 ms of CPU per join, more than the inflating and deflating itself
(docs/PERFORMANCE.md, "Large rooms: joins"). Here each message is delivered to a callback from ``data_received``: no
task and no queue per connection. Only what a LiveKit client needs: no subprotocols, no proxies, no redirects.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import ssl
import struct
import zlib
from collections.abc import Callable
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 section 7.2.1: removed after deflating, appended before inflating
OFFER = "permessage-deflate; client_max_window_bits"  # what Chrome and Firefox offer
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_HEADER_BYTES = 16384
_PEEK = 512  # bytes of a compressed message inflated to read its first byte (its first block's header included)
CLOSE_WAIT_S = 2.0

Message = Callable[[bytes], None]
Skip = Callable[[int], bool]  # given a message's first byte: True if the receiver will not use the message


class HandshakeError(Exception):
    """The server did not switch protocols: ``status`` and ``reason`` of its answer (0 when it was no HTTP)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status
        self.reason = reason


class ProtocolError(Exception):
    """The server broke RFC 6455 or RFC 7692 (the connection is closed)."""


def parse_extension(header: str) -> dict[str, str] | None:
    """The parameters of the server's ``permessage-deflate`` answer (RFC 7692 section 7.1), or None if it accepted
    none; other extensions are refused by raising :class:`ProtocolError` (we offered none)."""
    found: dict[str, str] | None = None
    for offer in filter(None, (part.strip() for part in header.split(","))):
        name, *params = (p.strip() for p in offer.split(";"))
        if name != "permessage-deflate" or found is not None:
            raise ProtocolError(f"server accepted an extension we did not offer: {offer!r}")
        found = {}
        for param in params:
            key, _, value = param.partition("=")
            found[key.strip()] = value.strip().strip('"')
    return found


def _window(params: dict[str, str], name: str) -> int:
    value = params.get(name, "")
    bits = int(value) if value else 15
    if not 8 <= bits <= 15:
        raise ProtocolError(f"{name}={value} out of range")
    return max(9, bits)  # zlib's raw deflate has no 8-bit window; 9 reads what an 8-bit window wrote


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``key`` (RFC 6455 section 5.3)."""
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def frame(opcode: int, payload: bytes, *, rsv1: bool = False, key: bytes | None = None) -> bytes:
    """One final client frame (masked with ``key``, random when None)."""
    key = os.urandom(4) if key is None else key
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + key + mask(payload, key)


class WebSocket(asyncio.Protocol):
    """One client connection; ``on_message(data)`` receives every binary message (text messages too, as UTF-8
    bytes), ``on_close()`` is called once when the connection ends for any reason."""

    def __init__(self, on_message: Message, on_close: Callable[[], None], skip: Skip | None = None) -> None:
        self._on_message = on_message
        self._on_close = on_close
        self._skip = skip
        self.skipped = 0  # compressed messages left uninflated after their first byte (see _inflated)
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        loop = asyncio.get_running_loop()
        self._handshake: asyncio.Future[bytes] = loop.create_future()  # the raw header block once it arrived
        self._open = False  # the HTTP answer's header arrived
        self._ready = False  # ... and was accepted: frames are parsed
        self._closed = False
        self._lost: asyncio.Future[None] = loop.create_future()
        self._fragments: list[bytes] = []
        self._fragment_rsv1 = False
        self._inflate: zlib._Decompress | None = None  # type: ignore[name-defined]
        self._deflate: zlib._Compress | None = None  # type: ignore[name-defined]
        self.deflate = False  # permessage-deflate negotiated
        self._server_bits = 15
        self._client_bits = 15
        self._server_takeover = True
        self._client_takeover = True

    @property
    def closed(self) -> bool:
        return self._closed

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._handshake.done():
            self._handshake.set_exception(ConnectionError(f"connection closed during the handshake: {exc}"))
        if not self._lost.done():
            self._lost.set_result(None)
        self._finish()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._open:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEADER_BYTES:
                    self._fail(ProtocolError("HTTP answer header too long"))
                return
            head = bytes(self._buffer[:end])
            del self._buffer[:end + 4]
            self._open = True  # frames that follow the header in this read are parsed below, after validation
            if not self._handshake.done():
                self._handshake.set_result(head)
            return  # connect() validates the header, then parses what is buffered
        if self._ready:
            self._parse()

    # -- connection set-up

    def _start(self, head: bytes, key: bytes, deflate: bool) -> None:
        """Checks the server's 101 answer (RFC 6455 section 4.1) and the negotiated extension."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise HandshakeError(0, f"not an HTTP answer: {lines[0][:80]!r}")
        status, reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
        if status != 101:
            raise HandshakeError(status, reason)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
        if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in headers.get("connection", "").lower():
            raise HandshakeError(status, "101 without Upgrade: websocket")
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise HandshakeError(status, "wrong Sec-WebSocket-Accept")
        params = parse_extension(headers.get("sec-websocket-extensions", ""))
        if params is not None:
            if not deflate:
                raise ProtocolError("server accepted permessage-deflate, which we did not offer")
            self.deflate = True
            self._server_bits = _window(params, "server_max_window_bits")
            self._client_bits = _window(params, "client_max_window_bits")
            self._server_takeover = "server_no_context_takeover" not in params
            self._client_takeover = "client_no_context_takeover" not in params

    # -- frames in

    def _parse(self) -> None:
        """Every whole frame in the buffer, removed from it once at the end (a read carries dozens of a room's
        broadcasts: no copy of the rest per frame). A final unfragmented data frame, the common case, is delivered
        here; anything else goes through :meth:`_frame`."""
        buf = self._buffer
        view = memoryview(buf)  # deflated payloads are read through it, without a copy (released before the del)
        size = len(buf)
        pos = 0
        while size - pos >= 2 and not self._closed:
            first, second = buf[pos], buf[pos + 1]
            if second & 0x80:
                self._fail(ProtocolError("a masked frame from the server"))
                return
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            pos = end
            if first == 0xC2 and self.deflate and not self._fragments:  # FIN, RSV1, binary: a deflated message
                self._inflated(view[start:end])
            elif first == 0x82 and not self._fragments:  # FIN, binary
                self._on_message(bytes(buf[start:end]))
            else:
                self._frame(first, bytes(buf[start:end]))
        view.release()
        del buf[:pos]

    def _frame(self, first: int, payload: bytes) -> None:
        fin, rsv1, opcode = first & 0x80, bool(first & 0x40), first & 0x0F
        if first & 0x30 or (rsv1 and not self.deflate):
            self._fail(ProtocolError(f"reserved bits set in a frame: {first:#04x}"))
        elif opcode >= 0x8:
            if not fin or len(payload) > 125:
                self._fail(ProtocolError("a fragmented or long control frame"))
            elif opcode == OP_PING:
                self._write(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self._write(OP_CLOSE, payload[:2])  # echo the status code (RFC 6455 section 5.5.1)
                self._shutdown()
        elif opcode == OP_CONT:
            if not self._fragments:
                self._fail(ProtocolError("a continuation frame without a message"))
                return
            self._fragments.append(payload)
            if fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._deliver(data, self._fragment_rsv1)
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._fragments:
                self._fail(ProtocolError("a new message inside a fragmented one"))
            elif fin:
                self._deliver(payload, rsv1)
            else:
                self._fragments = [payload]
                self._fragment_rsv1 = rsv1
        else:
            self._fail(ProtocolError(f"unknown opcode {opcode}"))

    def _deliver(self, payload: bytes, compressed: bool) -> None:
        if compressed:
            self._inflated(payload)
        else:
            self._on_message(payload)

    def _inflated(self, payload: bytes | bytearray | memoryview) -> None:
        if self._inflate is None or not self._server_takeover:
            self._inflate = zlib.decompressobj(-self._server_bits)
        try:
            if self._skip is not None and not self._server_takeover:
                # Each message has a context of its own (server_no_context_takeover): one the receiver will not use
                # needs no more than its first byte (inflated from the head of the payload, where the first block's
                # code tables are), and nothing after it depends on the rest.
                first = self._inflate.decompress(payload[:_PEEK], 1)
                if first and self._skip(first[0]):
                    self.skipped += 1
                    return
                data = first + self._inflate.decompress(self._inflate.unconsumed_tail + payload[_PEEK:] + _TAIL)
            else:
                data = self._inflate.decompress(bytes(payload) + _TAIL)
        except zlib.error as exc:
            self._fail(ProtocolError(f"cannot inflate a message: {exc}"))
            return
        self._on_message(data)

    # -- frames out

    def send(self, data: bytes) -> None:
        """One binary message (deflated when permessage-deflate was negotiated, as a browser does)."""
        if self._closed:
            raise ConnectionError("WebSocket is closed")
        if self.deflate:
            if self._deflate is None or not self._client_takeover:
                self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self._client_bits)
            body = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
            if body.endswith(_TAIL):
                body = body[:-4]
            self._write(OP_BINARY, body, rsv1=True)
        else:
            self._write(OP_BINARY, data)

    def _write(self, opcode: int, payload: bytes, *, rsv1: bool = False) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame(opcode, payload, rsv1=rsv1))

    async def close(self, code: int = 1000) -> None:
        """Sends a close frame and waits (at most ``CLOSE_WAIT_S``) for the server to close the connection."""
        if self._closed or self._transport is None:
            return
        self._write(OP_CLOSE, code.to_bytes(2, "big"))
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), CLOSE_WAIT_S)
        except TimeoutError:
            pass
        self._shutdown()

    # -- ending

    def _fail(self, exc: Exception) -> None:
        if not self._handshake.done():
            self._handshake.set_exception(exc)
        self._write(OP_CLOSE, (1002).to_bytes(2, "big"))
        self._shutdown()

    def _shutdown(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._finish()

    def _finish(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close()


async def connect(url: str, on_message: Message, on_close: Callable[[], None], *, deflate: bool = False,
                  timeout: float = 15.0, skip: Skip | None = None) -> WebSocket:
    """A WebSocket to ``url`` (``ws://`` or ``wss://``); raises :class:`HandshakeError` when the server answers with
    anything but ``101``, ``OSError`` when it cannot be reached, ``TimeoutError`` after ``timeout``. ``skip``: where
    the server compresses each message on its own, the compressed messages it says yes to (by their first byte)
    are not inflated further nor delivered."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    key = base64.b64encode(os.urandom(16))
    request = (f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
               + (f"Sec-WebSocket-Extensions: {OFFER}\r\n" if deflate else "") + "\r\n").encode()
    loop = asyncio.get_running_loop()
    ws = WebSocket(on_message, on_close, skip)

    async def open_() -> None:
        transport, _ = await loop.create_connection(lambda: ws, parts.hostname, port,
                                                    ssl=ssl.create_default_context() if secure else None)
        ws._transport = transport  # uvloop calls connection_made only after create_connection returned
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(request)
        head = await ws._handshake
        ws._start(head, key, deflate)

    try:
        async with asyncio.timeout(timeout):  # no task of its own, unlike asyncio.wait_for
            await open_()
    except BaseException:
        ws._closed = True  # no on_close for a connection that never opened
        if ws._transport is not None:
            ws._transport.abort()
        raise
    ws._ready = True
    ws._parse()  # frames that arrived with the 101 answer or since
    return ws
