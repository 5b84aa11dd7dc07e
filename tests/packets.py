"""Byte-by-byte builders for RTP and RTCP test packets (RFC 3550, RFC 4585, RFC 5104, RFC 8285, RFC 7741).

Kept independent of the fast path's own code so tests compare two implementations.
"""

from __future__ import annotations

import struct


def rtp(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes = b"\x00" * 20,
    *,
    marker: bool = False,
    extensions: list[tuple[int, bytes]] | None = None,
    two_byte: bool = False,
    csrcs: tuple[int, ...] = (),
    padding: int = 0,
) -> bytes:
    """One RTP packet; ``extensions`` are (id, data) elements in the one-byte (default) or two-byte form."""
    b0 = 0x80 | len(csrcs)
    ext_block = b""
    if extensions is not None:
        b0 |= 0x10
        body = b""
        for ext_id, data in extensions:
            if two_byte:
                body += bytes([ext_id, len(data)]) + data
            else:
                if not 1 <= len(data) <= 16 or not 1 <= ext_id <= 14:
                    raise ValueError("one-byte element needs id 1..14 and 1..16 bytes")
                body += bytes([(ext_id << 4) | (len(data) - 1)]) + data
        body += b"\x00" * (-len(body) % 4)
        profile = 0x1000 if two_byte else 0xBEDE
        ext_block = struct.pack("!HH", profile, len(body) // 4) + body
    pad = b""
    if padding:
        b0 |= 0x20
        pad = b"\x00" * (padding - 1) + bytes([padding])
    header = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    header += b"".join(struct.pack("!I", c) for c in csrcs)
    return header + ext_block + payload + pad


def vp8_payload(key: bool, size: int = 100) -> bytes:
    """VP8 payload descriptor (X=1, S=1, PID=0, 15-bit picture id) + a payload header whose P bit says key."""
    descriptor = bytes([0x90, 0x80, 0x80, 0x01])
    return descriptor + bytes([0x00 if key else 0x01]) + b"\x42" * (size - 5)


def rtx_payload(osn: int, original_payload: bytes) -> bytes:
    return struct.pack("!H", osn) + original_payload


def rtcp_header(count: int, pt: int, body: bytes) -> bytes:
    assert len(body) % 4 == 0
    return struct.pack("!BBH", 0x80 | count, pt, (len(body) + 4) // 4 - 1) + body


def rtcp_rr(ssrc: int, blocks: list[tuple[int, int, int, int, int, int, int]] = ()) -> bytes:
    """blocks: (ssrc, fraction_lost, cumulative_lost, highest_seq, jitter, lsr, dlsr)."""
    body = struct.pack("!I", ssrc)
    for b_ssrc, fraction, cum, highest, jitter, lsr, dlsr in blocks:
        loss = (fraction << 24) | (cum & 0xFFFFFF)
        body += struct.pack("!IIIIII", b_ssrc, loss, highest, jitter, lsr, dlsr)
    return rtcp_header(len(blocks), 201, body)


def rtcp_sr(ssrc: int, ntp_sec: int, ntp_frac: int, rtp_ts: int, packets: int, octets: int) -> bytes:
    return rtcp_header(0, 200, struct.pack("!IIIIII", ssrc, ntp_sec, ntp_frac, rtp_ts, packets, octets))


def rtcp_sdes(ssrc: int, cname: bytes) -> bytes:
    chunk = struct.pack("!I", ssrc) + bytes([1, len(cname)]) + cname + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return rtcp_header(1, 202, chunk)


def rtcp_nack(sender: int, media: int, lost: list[int]) -> bytes:
    """Generic NACK (RTPFB FMT 1) packing lost seqs into PID/BLP pairs."""
    fci = b""
    remaining = sorted(set(lost))
    while remaining:
        pid = remaining.pop(0)
        blp = 0
        for s in list(remaining):
            if 1 <= ((s - pid) & 0xFFFF) <= 16:
                blp |= 1 << (((s - pid) & 0xFFFF) - 1)
                remaining.remove(s)
        fci += struct.pack("!HH", pid, blp)
    return rtcp_header(1, 205, struct.pack("!II", sender, media) + fci)


def rtcp_pli(sender: int, media: int) -> bytes:
    return rtcp_header(1, 206, struct.pack("!II", sender, media))


def rtcp_fir(sender: int, media: int, seq_nr: int) -> bytes:
    return rtcp_header(4, 206, struct.pack("!II", sender, 0) + struct.pack("!IB3x", media, seq_nr))
