# RTP fixed header (RFC 3550 section 5.1) and header extensions (RFC 8285 one-byte and two-byte forms):
# parse once, read MID/RID/audio level, renumber extension ids in place. All helpers are nogil C.
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t


cdef inline uint16_t rd16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t rd32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void wr16(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline void wr32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef enum RtpError:
    RTP_OK = 0
    RTP_TOO_SHORT = 1
    RTP_BAD_VERSION = 2
    RTP_BAD_CSRC = 3
    RTP_BAD_EXTENSION = 4
    RTP_BAD_PADDING = 5
    RTP_BAD_EXTENSION_ELEMENT = 6

# The renumbered id for elements whose peer id is not negotiated router-wide (see docs/SEAMS.md).
cdef enum:
    EXT_ID_UNUSED = 14
    RTP_EXT_PROFILE_ONE_BYTE = 0xBEDE
    RTP_EXT_PROFILE_TWO_BYTE = 0x1000


ctypedef struct RtpHeader:
    uint8_t marker
    uint8_t pt
    uint8_t has_padding
    uint8_t has_ext
    uint8_t csrc_count
    uint16_t seq
    uint32_t ts
    uint32_t ssrc
    int32_t ext_offset       # offset of the 4-byte extension header, -1 if none
    int32_t ext_len          # bytes of extension data after that header
    uint16_t ext_profile
    int32_t header_len       # fixed header + CSRCs + extension block = payload offset
    int32_t payload_len      # without padding
    int32_t padding_len


ctypedef struct ExtIds:
    uint8_t mid
    uint8_t rid
    uint8_t rrid
    uint8_t audio_level
    uint8_t twcc             # transport-wide sequence number (draft-holmer-rmcat-transport-wide-cc-01)


ctypedef struct ExtFound:
    int32_t mid_off
    int32_t mid_len
    int32_t rid_off
    int32_t rid_len
    int32_t rrid_off
    int32_t rrid_len
    int32_t audio_level     # RFC 6464 byte (V bit + level), -1 if absent


cdef inline int rtp_parse(const uint8_t* data, int32_t length, RtpHeader* h) noexcept nogil:
    """Validate and parse the fixed header, CSRCs, extension block and padding (RFC 3550 5.1, A.1)."""
    cdef int32_t off, ext_words, pad
    if length < 12:
        return RTP_TOO_SHORT
    if (data[0] >> 6) != 2:
        return RTP_BAD_VERSION
    h.has_padding = (data[0] >> 5) & 1
    h.has_ext = (data[0] >> 4) & 1
    h.csrc_count = data[0] & 0x0F
    h.marker = data[1] >> 7
    h.pt = data[1] & 0x7F
    h.seq = rd16(data + 2)
    h.ts = rd32(data + 4)
    h.ssrc = rd32(data + 8)
    off = 12 + 4 * h.csrc_count
    if off > length:
        return RTP_BAD_CSRC
    h.ext_offset = -1
    h.ext_len = 0
    h.ext_profile = 0
    if h.has_ext:
        if off + 4 > length:
            return RTP_BAD_EXTENSION
        h.ext_profile = rd16(data + off)
        ext_words = rd16(data + off + 2)
        h.ext_offset = off
        h.ext_len = ext_words * 4
        off += 4 + h.ext_len
        if off > length:
            return RTP_BAD_EXTENSION
    h.header_len = off
    pad = 0
    if h.has_padding:
        pad = data[length - 1]
        if pad == 0 or off + pad > length:
            return RTP_BAD_PADDING
    h.padding_len = pad
    h.payload_len = length - off - pad
    return RTP_OK


cdef inline uint8_t _ext_new_id(const uint8_t* id_map, uint8_t peer_id, uint8_t max_id) noexcept nogil:
    cdef uint8_t mapped = id_map[peer_id]
    if mapped == 0 or mapped > max_id:
        return EXT_ID_UNUSED
    return mapped


cdef inline void _ext_note(const ExtIds* ids, ExtFound* found, uint8_t peer_id, int32_t off,
                           int32_t n, const uint8_t* data) noexcept nogil:
    if peer_id == 0:
        return
    if peer_id == ids.mid:
        found.mid_off = off
        found.mid_len = n
    elif peer_id == ids.rid:
        found.rid_off = off
        found.rid_len = n
    elif peer_id == ids.rrid:
        found.rrid_off = off
        found.rrid_len = n
    elif peer_id == ids.audio_level and n >= 1:
        found.audio_level = data[off]


cdef inline int rtp_ext_walk(uint8_t* data, const RtpHeader* h, const ExtIds* ids, ExtFound* found,
                             const uint8_t* id_map) noexcept nogil:
    """Walk the extension block: note MID/RID/RRID/audio level by the peer's ids and, when id_map is not
    NULL, renumber each element in place to the router-wide id (unmapped ids become EXT_ID_UNUSED).
    Returns RTP_OK or RTP_BAD_EXTENSION_ELEMENT. Offsets in found are from the packet start."""
    cdef int32_t i, end, n
    cdef uint8_t b, peer_id
    found.mid_off = -1
    found.mid_len = 0
    found.rid_off = -1
    found.rid_len = 0
    found.rrid_off = -1
    found.rrid_len = 0
    found.audio_level = -1
    if h.ext_offset < 0:
        return RTP_OK
    i = h.ext_offset + 4
    end = i + h.ext_len
    if h.ext_profile == RTP_EXT_PROFILE_ONE_BYTE:
        while i < end:
            b = data[i]
            if b == 0:
                i += 1
                continue
            peer_id = b >> 4
            if peer_id == 15:
                break
            n = (b & 0x0F) + 1
            if i + 1 + n > end:
                return RTP_BAD_EXTENSION_ELEMENT
            _ext_note(ids, found, peer_id, i + 1, n, data)
            if id_map != NULL:
                data[i] = <uint8_t>((_ext_new_id(id_map, peer_id, 14) << 4) | (b & 0x0F))
            i += 1 + n
    elif (h.ext_profile & 0xFFF0) == RTP_EXT_PROFILE_TWO_BYTE:
        while i < end:
            peer_id = data[i]
            if peer_id == 0:
                i += 1
                continue
            if i + 2 > end:
                return RTP_BAD_EXTENSION_ELEMENT
            n = data[i + 1]
            if i + 2 + n > end:
                return RTP_BAD_EXTENSION_ELEMENT
            _ext_note(ids, found, peer_id, i + 2, n, data)
            if id_map != NULL:
                data[i] = _ext_new_id(id_map, peer_id, 255)
            i += 2 + n
    return RTP_OK


cdef inline int32_t rtp_ext_find(const uint8_t* data, const RtpHeader* h, uint8_t ext_id,
                                 int32_t* length) noexcept nogil:
    """Offset (from the packet start) of the first element with the peer's id ext_id, or -1; its data
    length in length[0]. Read-only; malformed blocks give -1."""
    cdef int32_t i, end, n
    cdef uint8_t b
    if h.ext_offset < 0 or ext_id == 0:
        return -1
    i = h.ext_offset + 4
    end = i + h.ext_len
    if h.ext_profile == RTP_EXT_PROFILE_ONE_BYTE:
        while i < end:
            b = data[i]
            if b == 0:
                i += 1
                continue
            if (b >> 4) == 15:
                return -1
            n = (b & 0x0F) + 1
            if i + 1 + n > end:
                return -1
            if (b >> 4) == ext_id:
                length[0] = n
                return i + 1
            i += 1 + n
    elif (h.ext_profile & 0xFFF0) == RTP_EXT_PROFILE_TWO_BYTE:
        while i < end:
            if data[i] == 0:
                i += 1
                continue
            if i + 2 > end:
                return -1
            n = data[i + 1]
            if i + 2 + n > end:
                return -1
            if data[i] == ext_id:
                length[0] = n
                return i + 2
            i += 2 + n
    return -1


cdef inline void rtp_set_header(uint8_t* data, uint8_t pt, uint16_t seq, uint32_t ts,
                                uint32_t ssrc) noexcept nogil:
    """Rewrite PT (keeping the marker), sequence number, timestamp and SSRC in place."""
    data[1] = (data[1] & 0x80) | (pt & 0x7F)
    wr16(data + 2, seq)
    wr32(data + 4, ts)
    wr32(data + 8, ssrc)
