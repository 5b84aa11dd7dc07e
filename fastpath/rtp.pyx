"""Python face of the RTP header parser and extension walker in ``rtp.pxd`` (RFC 3550, RFC 8285).

The Engine uses the same inline C helpers on every packet; these wrappers exist for tests and tools and
raise ``ValueError`` with the exact C reason for bad input.
"""

from libc.stdint cimport uint8_t

from fastpath.rtp cimport (
    ExtFound,
    ExtIds,
    RTP_OK,
    RtpHeader,
    rtp_ext_walk,
    rtp_parse,
)

RTP_ERROR_REASONS = (
    "ok",
    "rtp: too short",
    "rtp: bad version",
    "rtp: csrc list exceeds packet",
    "rtp: extension exceeds packet",
    "rtp: bad padding",
    "rtp: extension element exceeds block",
)


cdef list _extensions(const uint8_t[:] data, RtpHeader* h):
    cdef list out = []
    cdef Py_ssize_t i, end, n
    cdef uint8_t b
    if h.ext_offset < 0:
        return out
    i = h.ext_offset + 4
    end = i + h.ext_len
    if h.ext_profile == 0xBEDE:
        while i < end:
            b = data[i]
            if b == 0:
                i += 1
                continue
            if (b >> 4) == 15:
                break
            n = (b & 0x0F) + 1
            out.append((b >> 4, bytes(data[i + 1:i + 1 + n])))
            i += 1 + n
    elif (h.ext_profile & 0xFFF0) == 0x1000:
        while i < end:
            if data[i] == 0:
                i += 1
                continue
            n = data[i + 1]
            out.append((data[i], bytes(data[i + 2:i + 2 + n])))
            i += 2 + n
    return out


def parse_rtp(const uint8_t[:] data) -> dict:
    """Parse one RTP packet; raise ValueError("rtp: ...") exactly as the Engine would drop it."""
    cdef RtpHeader h
    cdef ExtIds ids
    cdef ExtFound found
    cdef int rc
    cdef bytearray copy
    if data.shape[0] == 0:
        raise ValueError(RTP_ERROR_REASONS[1])
    rc = rtp_parse(&data[0], <int>data.shape[0], &h)
    if rc != RTP_OK:
        raise ValueError(RTP_ERROR_REASONS[rc])
    ids.mid = 0
    ids.rid = 0
    ids.rrid = 0
    ids.audio_level = 0
    ids.twcc = 0
    copy = bytearray(data)
    rc = rtp_ext_walk(<uint8_t*>(<char*>copy), &h, &ids, &found, NULL)
    if rc != RTP_OK:
        raise ValueError(RTP_ERROR_REASONS[rc])
    return {
        "marker": bool(h.marker),
        "payload_type": h.pt,
        "sequence_number": h.seq,
        "timestamp": h.ts,
        "ssrc": h.ssrc,
        "csrc_count": h.csrc_count,
        "extension_profile": h.ext_profile if h.has_ext else None,
        "extensions": _extensions(data, &h),
        "header_len": h.header_len,
        "payload": bytes(data[h.header_len:h.header_len + h.payload_len]),
        "padding_len": h.padding_len,
    }


def rewrite_extensions(const uint8_t[:] data, const uint8_t[:] id_map, int mid_id=0, int rid_id=0,
                       int rrid_id=0, int audio_level_id=0) -> tuple:
    """Renumber extension ids with ``id_map`` (len 256) as the Engine does on ingress.

    Returns (new packet bytes, {"mid": bytes|None, "rid": bytes|None, "rrid": bytes|None,
    "audio_level": int|None}) read with the peer's ids before renumbering.
    """
    cdef RtpHeader h
    cdef ExtIds ids
    cdef ExtFound found
    cdef int rc
    cdef bytearray copy
    if id_map.shape[0] != 256:
        raise ValueError("id_map must be 256 bytes")
    for v in (mid_id, rid_id, rrid_id, audio_level_id):
        if not 0 <= v <= 255:
            raise ValueError("extension ids must be in 0..255")
    if data.shape[0] == 0:
        raise ValueError(RTP_ERROR_REASONS[1])
    rc = rtp_parse(&data[0], <int>data.shape[0], &h)
    if rc != RTP_OK:
        raise ValueError(RTP_ERROR_REASONS[rc])
    ids.mid = mid_id
    ids.rid = rid_id
    ids.rrid = rrid_id
    ids.audio_level = audio_level_id
    ids.twcc = 0
    copy = bytearray(data)
    rc = rtp_ext_walk(<uint8_t*>(<char*>copy), &h, &ids, &found, &id_map[0])
    if rc != RTP_OK:
        raise ValueError(RTP_ERROR_REASONS[rc])
    out = bytes(copy)
    return out, {
        "mid": out[found.mid_off:found.mid_off + found.mid_len] if found.mid_off >= 0 else None,
        "rid": out[found.rid_off:found.rid_off + found.rid_len] if found.rid_off >= 0 else None,
        "rrid": out[found.rrid_off:found.rrid_off + found.rrid_len] if found.rrid_off >= 0 else None,
        "audio_level": found.audio_level if found.audio_level >= 0 else None,
    }
