"""A WebSocket client's reading of server frames with permessage-deflate, for tests of what control writes."""

from __future__ import annotations

import struct
import zlib


class Reader:
    """A client's side of permessage-deflate with context takeover (RFC 7692 section 7.2.2): one decompressor for
    the whole connection, each compressed message ended with the flush tail before it is inflated."""

    def __init__(self, wbits: int = 15) -> None:
        self.inflate = zlib.decompressobj(-wbits)
        self.compressed: list[bool] = []

    def messages(self, stream: bytes) -> list[bytes]:
        out, pos = [], 0
        while pos < len(stream):
            first, second = stream[pos], stream[pos + 1]
            assert first & 0x80 and first & 0x0F == 2 and not second & 0x80  # FIN, binary, unmasked
            n, pos = second & 0x7F, pos + 2
            if n == 126:
                n, pos = struct.unpack_from("!H", stream, pos)[0], pos + 2
            elif n == 127:
                n, pos = struct.unpack_from("!Q", stream, pos)[0], pos + 8
            payload, pos = stream[pos:pos + n], pos + n
            compressed = bool(first & 0x40)
            self.compressed.append(compressed)
            out.append(self.inflate.decompress(payload + b"\x00\x00\xff\xff") if compressed else payload)
        return out
