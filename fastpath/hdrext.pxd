# Writing one RTP header extension element (RFC 8285) into a packet in place, for the elements the router itself
# adds toward subscribers: the transport-wide sequence (bwe.pxd) and the playout delay (_playout.pxi). Parsing and
# renumbering what publishers sent lives in fastpath/rtp.pxd; this is the write side, nogil C, no allocation.
#
# An element with the same id, or one that ingress blanked (EXT_ID_UNUSED: an element whose peer id is not
# forwarded, e.g. the publisher's own transport-cc or abs-send-time) with room for the data, is reused (surplus bytes
# become padding); else the element is appended to the packet's extension block (padded to a 32-bit word), or a new
# one-byte block (two-byte for ids above 14) is opened when the packet has none.
from libc.stdint cimport int32_t, uint8_t, uint16_t
from libc.string cimport memcpy, memmove, memset

from fastpath.rtp cimport EXT_ID_UNUSED, RTP_EXT_PROFILE_ONE_BYTE, RTP_EXT_PROFILE_TWO_BYTE, rd16, wr16

cdef enum:
    HDREXT_ONE_BYTE_MAX_ID = 14
    HDREXT_ONE_BYTE_MAX_LEN = 16


cdef inline int _hdrext_open(uint8_t* pkt, int32_t* length, int32_t room, int32_t at, int32_t n) noexcept nogil:
    """Open n bytes at offset at (everything after it moves up); 0 when the buffer has no room."""
    if room < n:
        return 0
    memmove(pkt + at + n, pkt + at, length[0] - at)
    length[0] += n
    return 1


cdef inline void _hdrext_element(uint8_t* at, bint one_byte, uint8_t ext_id, const uint8_t* data, int32_t dlen,
                                 int32_t span) noexcept nogil:
    """Write the element's header and data at at, then zero (padding) up to span bytes."""
    cdef int32_t head = 1 if one_byte else 2
    if one_byte:
        at[0] = <uint8_t>((ext_id << 4) | (dlen - 1))
    else:
        at[0] = ext_id
        at[1] = <uint8_t>dlen
    memcpy(at + head, data, dlen)
    if span > head + dlen:
        memset(at + head + dlen, 0, span - head - dlen)


cdef inline int hdrext_put(uint8_t* pkt, int32_t* length, int32_t room, uint8_t ext_id, const uint8_t* data,
                           int32_t dlen) noexcept nogil:
    """Write data[:dlen] as element ext_id of the RTP packet pkt[:length[0]]; room is how many bytes the buffer can
    grow by. Returns 1 when written, 0 when the header is malformed, the element does not fit the packet's
    extension form, or there is no room."""
    cdef int32_t n = length[0]
    cdef int32_t off, i, end, ln, span, head
    cdef uint8_t b, eid
    cdef uint16_t profile
    cdef bint one
    if n < 12 or ext_id == 0 or dlen < 1 or dlen > 255:
        return 0
    off = 12 + 4 * (pkt[0] & 0x0F)
    if not (pkt[0] & 0x10):
        one = ext_id <= HDREXT_ONE_BYTE_MAX_ID and dlen <= HDREXT_ONE_BYTE_MAX_LEN
        span = ((1 if one else 2) + dlen + 3) & ~3
        if off > n or not _hdrext_open(pkt, length, room, off, 4 + span):
            return 0
        pkt[0] |= 0x10
        wr16(pkt + off, RTP_EXT_PROFILE_ONE_BYTE if one else RTP_EXT_PROFILE_TWO_BYTE)
        wr16(pkt + off + 2, <uint16_t>(span // 4))
        _hdrext_element(pkt + off + 4, one, ext_id, data, dlen, span)
        return 1
    if off + 4 > n:
        return 0
    profile = rd16(pkt + off)
    i = off + 4
    end = i + 4 * <int32_t>rd16(pkt + off + 2)
    if end > n:
        return 0
    one = profile == RTP_EXT_PROFILE_ONE_BYTE
    if not one and (profile & 0xFFF0) != RTP_EXT_PROFILE_TWO_BYTE:
        return 0
    if one and (ext_id > HDREXT_ONE_BYTE_MAX_ID or dlen > HDREXT_ONE_BYTE_MAX_LEN):
        return 0
    head = 1 if one else 2
    while i < end:
        b = pkt[i]
        if b == 0:                            # padding
            i += 1
            continue
        if one:
            eid = b >> 4
            if eid == 15:                     # the rest of the block is to be ignored (RFC 8285 4.2)
                break
            ln = (b & 0x0F) + 1
        else:
            if i + 2 > end:
                return 0
            eid = b
            ln = pkt[i + 1]
        if i + head + ln > end:
            return 0
        if ln >= dlen and (eid == ext_id or eid == EXT_ID_UNUSED):
            _hdrext_element(pkt + i, one, ext_id, data, dlen, head + ln)
            return 1
        i += head + ln
    span = (head + dlen + 3) & ~3
    if not _hdrext_open(pkt, length, room, end, span):
        return 0
    _hdrext_element(pkt + end, one, ext_id, data, dlen, span)
    wr16(pkt + off + 2, <uint16_t>(rd16(pkt + off + 2) + span // 4))
    return 1
