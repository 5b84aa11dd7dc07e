# The VP8 payload descriptor (RFC 7741 4.2) as a consumer forwards it: parse the descriptor of a received packet
# once (Vp8Desc), then per consumer filter by temporal layer and rewrite PictureID and TL0PICIDX (Vp8Munger) so
# that both stay continuous for the receiver across simulcast switches and dropped temporal layers, in place in
# the consumer's copy and in the width the packet has (7 or 15 bits; nothing moves). docs/FORWARDING.md,
# "VP8 payload descriptor". Header-only: C types, no state beyond what the caller passes in.
from libc.stdint cimport int8_t, int32_t, uint8_t, uint16_t

cdef enum:
    VP8_TID_ALL = 3                           # the highest TID the descriptor can carry: no temporal filtering
    VP8_PID_MASK_LONG = 0x7FFF
    VP8_PID_MASK_SHORT = 0x7F


ctypedef struct Vp8Desc:
    # Offsets are from the start of the RTP packet (header included), so that a copy (or an RTX copy shifted by
    # its 2-byte OSN) is written at the same place.
    uint8_t present                           # a VP8 payload whose descriptor parsed
    uint8_t start                             # S = 1 and PID = 0: the first packet of a picture
    uint8_t has_pid                           # I
    uint8_t pid_long                          # M: a 15-bit PictureID
    uint8_t has_tl0                           # L
    uint8_t y                                 # layer sync: this picture refers to TL0 pictures only
    int8_t tid                                # TID, -1 without the T bit
    uint16_t pid
    uint8_t tl0
    uint16_t pid_at
    uint16_t tl0_at


ctypedef struct Vp8Munger:
    # Per consumer. out PictureID = in + pid_offset (mod 2^15, written in the packet's width); pictures before
    # pid_from (a packet reordered across the last offset change) take pid_prev_offset.
    uint8_t started
    uint8_t sync_pending                      # the next packet (a new layer's key frame) continues at last + 1
    uint8_t have_pid                          # last_pid is set
    uint8_t have_tl0
    uint8_t tid_max                           # pictures with a higher TID are dropped ...
    uint8_t tid_target                        # ... and tid_max moves toward this at picture starts
    uint8_t dropping                          # dropped_pid is the last picture dropped
    uint8_t tl0_offset
    uint8_t last_tl0                          # highest TL0PICIDX sent
    uint16_t pid_offset
    uint16_t pid_prev_offset
    uint16_t pid_from
    uint16_t last_pid                         # highest PictureID sent
    uint16_t dropped_pid


cdef inline void vp8_desc_none(Vp8Desc* d) noexcept nogil:
    d.present = 0


cdef inline bint vp8_parse(const uint8_t* packet, int32_t payload_at, int32_t payload_len, Vp8Desc* d) noexcept nogil:
    """Parse the descriptor of the VP8 payload at packet + payload_at into d; False (d.present = 0) when it is
    too short. Reads only inside the payload."""
    cdef const uint8_t* p = packet + payload_at
    cdef int32_t off = 1
    cdef uint8_t x
    d.present = 0
    d.has_pid = 0
    d.pid_long = 0
    d.has_tl0 = 0
    d.y = 0
    d.tid = -1
    d.pid = 0
    d.tl0 = 0
    d.start = 0
    d.pid_at = 0
    d.tl0_at = 0
    if payload_len < 1:
        return False
    d.start = (p[0] & 0x10) != 0 and (p[0] & 0x07) == 0
    if p[0] & 0x80:                           # X: the extension byte follows
        if payload_len < 2:
            return False
        x = p[1]
        off = 2
        if x & 0x80:                          # I: PictureID
            if off >= payload_len:
                return False
            d.has_pid = 1
            if p[off] & 0x80:                 # M: 15 bits
                if off + 1 >= payload_len:
                    return False
                d.pid_long = 1
                d.pid = ((<uint16_t>(p[off] & 0x7F)) << 8) | p[off + 1]
                d.pid_at = <uint16_t>(payload_at + off)
                off += 2
            else:
                d.pid = p[off] & 0x7F
                d.pid_at = <uint16_t>(payload_at + off)
                off += 1
        if x & 0x40:                          # L: TL0PICIDX
            if off >= payload_len:
                return False
            d.has_tl0 = 1
            d.tl0 = p[off]
            d.tl0_at = <uint16_t>(payload_at + off)
            off += 1
        if x & 0x30:                          # T or K: the TID/Y/KEYIDX byte
            if off >= payload_len:
                return False
            if x & 0x20:
                d.tid = <int8_t>(p[off] >> 6)
                d.y = (p[off] & 0x20) != 0
    d.present = 1
    return True


cdef inline void vp8_munger_init(Vp8Munger* m) noexcept nogil:
    m.started = 0
    m.sync_pending = 0
    m.have_pid = 0
    m.have_tl0 = 0
    m.tid_max = VP8_TID_ALL
    m.tid_target = VP8_TID_ALL
    m.dropping = 0
    m.tl0_offset = 0
    m.last_tl0 = 0
    m.pid_offset = 0
    m.pid_prev_offset = 0
    m.pid_from = 0
    m.last_pid = 0
    m.dropped_pid = 0


cdef inline void vp8_munger_sync(Vp8Munger* m) noexcept nogil:
    """The next packet starts another stream (a layer switch at its key frame, a resume): its PictureID and
    TL0PICIDX continue at the last ones sent + 1."""
    if m.started:
        m.sync_pending = 1


cdef inline void vp8_set_max_temporal(Vp8Munger* m, int32_t tid) noexcept nogil:
    """Forward temporal layers <= tid (tid < 0 or >= VP8_TID_ALL: all). A lower cap applies at the next picture
    start, a higher one at a layer-sync picture of the next layer up (or a key frame)."""
    m.tid_target = VP8_TID_ALL if tid < 0 or tid >= VP8_TID_ALL else <uint8_t>tid


cdef inline bint _pid_before(uint16_t a, uint16_t b, bint long_pid) noexcept nogil:
    """a is an earlier PictureID than b (half-range rule in the packet's width)."""
    cdef uint16_t mask = VP8_PID_MASK_LONG if long_pid else VP8_PID_MASK_SHORT
    cdef uint16_t diff = <uint16_t>(b - a) & mask
    return diff != 0 and diff <= (mask >> 1)


cdef inline bint vp8_filter(Vp8Munger* m, const Vp8Desc* d, int key) noexcept nogil:
    """True when the packet's temporal layer is above the consumer's cap (drop it; a dropped picture's PictureID
    is taken out of the numbering). Packets without a TID always pass."""
    if d.tid < 0:
        return False
    if d.start:
        if key == 1 or m.tid_target < m.tid_max:
            m.tid_max = m.tid_target
        elif m.tid_target > m.tid_max and d.y and d.tid == m.tid_max + 1:
            m.tid_max = <uint8_t>d.tid        # a layer-sync picture of the next layer up: safe to add it
    if d.tid <= m.tid_max:
        return False
    if d.has_pid and m.started and (not m.dropping or m.dropped_pid != d.pid):
        m.dropping = 1
        m.dropped_pid = d.pid
        m.pid_prev_offset = m.pid_offset
        m.pid_from = d.pid + 1
        m.pid_offset -= 1
    return True


cdef inline void vp8_munge(Vp8Munger* m, const Vp8Desc* d, uint16_t* pid, uint8_t* tl0) noexcept nogil:
    """The PictureID and TL0PICIDX the consumer's copy of a forwarded packet carries (where the packet has them)."""
    cdef uint16_t out
    cdef uint8_t t
    if m.sync_pending:
        m.sync_pending = 0
        m.dropping = 0
        if d.has_pid and m.have_pid:
            m.pid_offset = <uint16_t>(m.last_pid + 1 - d.pid)
            m.pid_prev_offset = m.pid_offset
            m.pid_from = d.pid
        if d.has_tl0 and m.have_tl0:
            m.tl0_offset = <uint8_t>(m.last_tl0 + 1 - d.tl0)
    m.started = 1
    if d.has_pid:
        if _pid_before(d.pid, m.pid_from, d.pid_long):
            out = <uint16_t>(d.pid + m.pid_prev_offset)
        else:
            out = <uint16_t>(d.pid + m.pid_offset)
        out &= VP8_PID_MASK_LONG if d.pid_long else VP8_PID_MASK_SHORT
        if not m.have_pid or _pid_before(m.last_pid, out, d.pid_long):
            m.last_pid = out
            m.have_pid = 1
        pid[0] = out
    if d.has_tl0:
        t = <uint8_t>(d.tl0 + m.tl0_offset)
        if not m.have_tl0 or <int8_t>(<uint8_t>(t - m.last_tl0)) > 0:
            m.last_tl0 = t
            m.have_tl0 = 1
        tl0[0] = t


cdef inline void vp8_write(uint8_t* packet, const Vp8Desc* d, uint16_t pid, uint8_t tl0) noexcept nogil:
    """Write pid and tl0 into a copy of the packet d was parsed from (same layout), in the packet's widths."""
    if d.has_pid:
        if d.pid_long:
            packet[d.pid_at] = 0x80 | <uint8_t>((pid >> 8) & 0x7F)
            packet[d.pid_at + 1] = <uint8_t>(pid & 0xFF)
        else:
            packet[d.pid_at] = <uint8_t>(pid & 0x7F)
    if d.has_tl0:
        packet[d.tl0_at] = tl0
