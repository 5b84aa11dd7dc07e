# RTCP compound walking and the few packets the fast path writes (RFC 3550 6.4-6.5, RFC 4585 6.2-6.3,
# RFC 5104 4.3.1, RFC 3611 4.4 RRTR). The walk never reads past the datagram: each packet's length is checked first.
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy

from fastpath.rtp cimport rd16, wr16, wr32

cdef enum RtcpType:
    RTCP_SR = 200
    RTCP_RR = 201
    RTCP_SDES = 202
    RTCP_BYE = 203
    RTCP_APP = 204
    RTCP_RTPFB = 205
    RTCP_PSFB = 206
    RTCP_XR = 207

cdef enum:
    RTCP_XR_RRTR = 4                          # RFC 3611 4.4 receiver reference time
    RTCP_XR_DLRR = 5                          # RFC 3611 4.5 delay since last RR
    RTCP_XR_RRTR_LEN = 20                     # XR header + SSRC + one RRTR block
    RTCP_FMT_NACK = 1
    RTCP_FMT_PLI = 1
    RTCP_FMT_FIR = 4
    RTCP_REPORT_BLOCK_LEN = 24

cdef enum RtcpError:
    RTCP_OK = 0
    RTCP_TOO_SHORT = 1
    RTCP_BAD_VERSION = 2
    RTCP_BAD_LENGTH = 3


ctypedef struct RtcpItem:
    uint8_t pt
    uint8_t count            # RC / SC / FMT field
    int32_t offset           # start of this packet in the compound
    int32_t length           # bytes, header included


cdef inline int rtcp_next(const uint8_t* data, int32_t length, int32_t* pos, RtcpItem* item) noexcept nogil:
    """Step to the next packet of a compound: 1 = item filled, 0 = end, -RtcpError on a malformed packet."""
    cdef int32_t p = pos[0]
    cdef int32_t n
    if p >= length:
        return 0
    if length - p < 4:
        return -RTCP_TOO_SHORT
    if (data[p] >> 6) != 2:
        return -RTCP_BAD_VERSION
    n = (<int32_t>rd16(data + p + 2) + 1) * 4
    if p + n > length:
        return -RTCP_BAD_LENGTH
    item.pt = data[p + 1]
    item.count = data[p] & 0x1F
    item.offset = p
    item.length = n
    pos[0] = p + n
    return 1


cdef inline void rtcp_write_header(uint8_t* buf, uint8_t count, uint8_t pt, int32_t length) noexcept nogil:
    """length in bytes including the header; must be a multiple of 4."""
    buf[0] = 0x80 | (count & 0x1F)
    buf[1] = pt
    wr16(buf + 2, <uint16_t>(length // 4 - 1))


cdef inline int32_t rtcp_write_pli(uint8_t* buf, uint32_t sender_ssrc, uint32_t media_ssrc) noexcept nogil:
    rtcp_write_header(buf, RTCP_FMT_PLI, RTCP_PSFB, 12)
    wr32(buf + 4, sender_ssrc)
    wr32(buf + 8, media_ssrc)
    return 12


cdef inline int32_t rtcp_write_report_block(uint8_t* buf, uint32_t ssrc, uint8_t fraction_lost,
                                            int32_t cumulative_lost, uint32_t ext_highest_seq,
                                            uint32_t jitter, uint32_t lsr, uint32_t dlsr) noexcept nogil:
    cdef uint32_t cum
    if cumulative_lost > 0x7FFFFF:
        cumulative_lost = 0x7FFFFF
    elif cumulative_lost < -0x800000:
        cumulative_lost = -0x800000
    cum = <uint32_t>cumulative_lost & 0xFFFFFF
    wr32(buf, ssrc)
    wr32(buf + 4, (<uint32_t>fraction_lost << 24) | cum)
    wr32(buf + 8, ext_highest_seq)
    wr32(buf + 12, jitter)
    wr32(buf + 16, lsr)
    wr32(buf + 20, dlsr)
    return RTCP_REPORT_BLOCK_LEN


cdef inline int32_t rtcp_write_sr(uint8_t* buf, uint32_t ssrc, uint32_t ntp_sec, uint32_t ntp_frac,
                                  uint32_t rtp_ts, uint32_t packets, uint32_t octets) noexcept nogil:
    """An SR with no report blocks (28 bytes)."""
    rtcp_write_header(buf, 0, RTCP_SR, 28)
    wr32(buf + 4, ssrc)
    wr32(buf + 8, ntp_sec)
    wr32(buf + 12, ntp_frac)
    wr32(buf + 16, rtp_ts)
    wr32(buf + 20, packets)
    wr32(buf + 24, octets)
    return 28


cdef inline int32_t rtcp_sdes_chunk_len(int32_t cname_len) noexcept nogil:
    # SSRC + CNAME item (type, length, text) + at least one null, padded to 32 bits.
    return ((4 + 2 + cname_len + 1) + 3) & ~3


cdef inline int32_t rtcp_write_sdes_chunk(uint8_t* buf, uint32_t ssrc, const uint8_t* cname,
                                          int32_t cname_len) noexcept nogil:
    cdef int32_t n = rtcp_sdes_chunk_len(cname_len)
    cdef int32_t i
    wr32(buf, ssrc)
    buf[4] = 1
    buf[5] = <uint8_t>cname_len
    memcpy(buf + 6, cname, cname_len)
    for i in range(6 + cname_len, n):
        buf[i] = 0
    return n


cdef inline int32_t rtcp_write_xr_rrtr(uint8_t* buf, uint32_t ssrc, uint32_t ntp_sec, uint32_t ntp_frac) noexcept nogil:
    """An XR with one Receiver Reference Time block (the peer answers with a DLRR: RTT as a receiver)."""
    rtcp_write_header(buf, 0, RTCP_XR, RTCP_XR_RRTR_LEN)
    wr32(buf + 4, ssrc)
    buf[8] = RTCP_XR_RRTR
    buf[9] = 0
    wr16(buf + 10, 2)
    wr32(buf + 12, ntp_sec)
    wr32(buf + 16, ntp_frac)
    return RTCP_XR_RRTR_LEN
