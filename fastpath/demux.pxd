# First-byte demultiplexing per RFC 7983 (and RFC 5761 for RTP vs RTCP).
from libc.stdint cimport uint8_t

cdef enum PacketKind:
    KIND_UNKNOWN = 0
    KIND_STUN = 1
    KIND_DTLS = 2
    KIND_RTP = 3
    KIND_RTCP = 4


cdef inline PacketKind demux_classify(const uint8_t* data, Py_ssize_t length) noexcept nogil:
    """Classify one datagram by its first bytes (RFC 7983 section 7)."""
    if length < 1:
        return KIND_UNKNOWN
    cdef uint8_t b0 = data[0]
    if b0 <= 3:
        # STUN: length >= 20 and the magic cookie 0x2112A442 (RFC 8489) in bytes 4-7.
        if (length >= 20 and data[4] == 0x21 and data[5] == 0x12 and data[6] == 0xA4
                and data[7] == 0x42):
            return KIND_STUN
        return KIND_UNKNOWN
    if 20 <= b0 <= 63:
        # DTLS record header is 13 bytes.
        return KIND_DTLS if length >= 13 else KIND_UNKNOWN
    if 128 <= b0 <= 191:
        if length >= 2 and 192 <= data[1] <= 223:
            return KIND_RTCP if length >= 4 else KIND_UNKNOWN
        return KIND_RTP if length >= 12 else KIND_UNKNOWN
    return KIND_UNKNOWN
