# Transport-wide congestion control feedback toward publishers (draft-holmer-rmcat-transport-wide-cc-
# extensions-01 section 3.1: RTCP RTPFB FMT 15; docs/FORWARDING.md, Transport-wide congestion control). One TwccRecv per
# publisher transport that negotiated the transport-cc extension: an arrival ring keyed by the unwrapped transport-wide
# seq (first arrival wins; a late seq below the window start moves the start back, as libwebrtc's
# RemoteEstimatorProxy does) and a builder that turns [start, end) into feedback packets. nogil C only.
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from fastpath.mem cimport fp_free as free, fp_malloc as malloc

from fastpath.rtcp cimport RTCP_RTPFB, rtcp_write_header
from fastpath.rtp cimport wr16, wr32
from fastpath.seq cimport Unwrap, unwrap_seq

cdef enum:
    TWCC_RING = 2048                  # power of two: arrivals remembered (20k pps at the 100 ms cadence)
    TWCC_RING_MASK = TWCC_RING - 1
    TWCC_FMT = 15
    TWCC_FEEDBACK_BYTES = 1200        # one feedback packet before SRTCP's trailer
    TWCC_MIN_FEEDBACK_BYTES = 32
    TWCC_HEADER_BYTES = 20            # RTCP header, 2 SSRCs, base seq, status count, ref time, fb count
    TWCC_INTERVAL_MS = 100
    TWCC_FLUSH_PENDING = 512          # send at once (from the packet path) when this many seqs wait
    TWCC_TICK_US = 250                # delta unit
    TWCC_REF_US = 64000               # reference time unit
    TWCC_TICKS_PER_REF = 256
    TWCC_MAX_RUN = 8191               # 13-bit run length
    TWCC_SEQ_BIAS = 0x10000           # keeps unwrapped seqs positive (slot.seq -1 = empty)
    TWCC_RESYNC_AFTER = 64            # consecutive too-old seqs: the sender's counter jumped, start again

cdef enum:  # packet status symbols
    TWCC_NOT_RECEIVED = 0
    TWCC_SMALL_DELTA = 1              # delta 0..255 ticks, 1 byte
    TWCC_LARGE_DELTA = 2              # delta -32768..32767 ticks, 2 bytes


ctypedef struct TwccSlot:
    int64_t seq                       # unwrapped + TWCC_SEQ_BIAS, -1 = empty
    int64_t arrival_us


ctypedef struct TwccRecv:
    TwccSlot* ring
    Unwrap unwrap
    int64_t start                     # first seq not reported yet
    int64_t end                       # highest recorded seq + 1
    uint8_t started
    uint8_t fb_count                  # feedback packet count (8-bit, wraps)
    uint32_t media_ssrc               # SSRC of the last packet carrying the extension
    int64_t last_feedback_ms
    uint64_t packets                  # first arrivals recorded
    uint64_t duplicates
    uint64_t too_old
    uint64_t feedbacks
    uint64_t resyncs
    int32_t old_run                   # consecutive too-old seqs


cdef inline int twcc_init(TwccRecv* r) except -1:
    cdef int32_t i
    r.ring = <TwccSlot*>malloc(TWCC_RING * sizeof(TwccSlot))
    if r.ring == NULL:
        raise MemoryError()
    for i in range(TWCC_RING):
        r.ring[i].seq = -1
    r.unwrap.started = 0
    r.started = 0
    r.start = 0
    r.end = 0
    r.fb_count = 0
    r.media_ssrc = 0
    r.last_feedback_ms = 0
    r.packets = 0
    r.duplicates = 0
    r.too_old = 0
    r.feedbacks = 0
    r.resyncs = 0
    r.old_run = 0
    return 0


cdef inline void twcc_free(TwccRecv* r) noexcept nogil:
    free(r.ring)
    r.ring = NULL


cdef inline int64_t twcc_pending(const TwccRecv* r) noexcept nogil:
    return r.end - r.start if r.started else 0


cdef inline int64_t twcc_record(TwccRecv* r, uint16_t seq, int64_t arrival_us, uint32_t ssrc) noexcept nogil:
    """Record one packet's arrival (arrival_us >= 0); returns the number of seqs waiting for feedback."""
    cdef int64_t ext = unwrap_seq(&r.unwrap, seq) + TWCC_SEQ_BIAS
    cdef TwccSlot* slot
    cdef int32_t i
    if not r.started:
        r.started = 1
        r.start = ext
        r.end = ext + 1
    elif ext >= r.end:
        r.end = ext + 1
        if r.end - r.start > TWCC_RING:
            r.start = r.end - TWCC_RING        # never reported: outside what the ring can hold
    elif ext < r.start:
        if r.end - ext > TWCC_RING:
            r.too_old += 1
            r.old_run += 1
            if r.old_run < TWCC_RESYNC_AFTER:
                return r.end - r.start
            # A jump of more than half the 16-bit space (the unwrapper took it as a step back): what was
            # not reported is lost anyway; restart the window at this seq.
            r.resyncs += 1
            for i in range(TWCC_RING):
                r.ring[i].seq = -1
            r.unwrap.started = 0
            ext = unwrap_seq(&r.unwrap, seq) + TWCC_SEQ_BIAS
            r.start = ext
            r.end = ext + 1
        else:
            r.start = ext
    r.old_run = 0
    slot = &r.ring[ext & TWCC_RING_MASK]
    if slot.seq == ext:
        r.duplicates += 1
        return r.end - r.start
    slot.seq = ext
    slot.arrival_us = arrival_us
    r.media_ssrc = ssrc
    r.packets += 1
    return r.end - r.start


cdef inline int32_t _twcc_chunks(const uint8_t* sym, int32_t n, uint8_t* out) noexcept nogil:
    """Encode n status symbols as chunks; every chunk but the last covers >= 7 symbols."""
    cdef int32_t i = 0, pos = 0, r, k, j
    cdef uint16_t v
    cdef bint one_bit
    while i < n:
        r = 1
        while i + r < n and r < TWCC_MAX_RUN and sym[i + r] == sym[i]:
            r += 1
        if r >= 14 or i + r == n:
            v = <uint16_t>((sym[i] << 13) | r)                      # run length
            i += r
        else:
            k = n - i if n - i < 14 else 14
            one_bit = True
            for j in range(k):
                if sym[i + j] > TWCC_SMALL_DELTA:
                    one_bit = False
                    break
            if one_bit:
                v = 0x8000                                            # status vector, 14 x 1 bit
                for j in range(k):
                    if sym[i + j]:
                        v |= <uint16_t>(1 << (13 - j))
                i += k
            elif r >= 7:
                v = <uint16_t>((sym[i] << 13) | r)
                i += r
            else:
                k = n - i if n - i < 7 else 7
                v = 0xC000                                            # status vector, 7 x 2 bits
                for j in range(k):
                    v |= <uint16_t>(sym[i + j] << (12 - 2 * j))
                i += k
        wr16(out + pos, v)
        pos += 2
    return pos


cdef inline int32_t twcc_build(TwccRecv* r, uint8_t* out, int32_t max_bytes, uint32_t sender_ssrc) noexcept nogil:
    """Write one feedback packet for the seqs from r.start on and advance r.start past them; 0 = nothing
    to report. Splits (leaving the rest for the next call) before a delta that overflows int16 or before
    max_bytes (>= TWCC_MIN_FEEDBACK_BYTES) would be exceeded."""
    cdef uint8_t sym[TWCC_RING]
    cdef int16_t deltas[TWCC_RING]
    cdef int64_t base, seq, ref, cur, ticks, d
    cdef int32_t n = 0, nd = 0, delta_bytes = 0, add, pos, pad, k
    cdef uint8_t s
    cdef TwccSlot* slot
    if not r.started or r.start >= r.end or max_bytes < TWCC_MIN_FEEDBACK_BYTES:
        return 0
    base = r.start
    seq = base
    while seq < r.end and r.ring[seq & TWCC_RING_MASK].seq != seq:
        seq += 1
    if seq == r.end:
        r.start = r.end                       # only losses left, and nothing after them to anchor them
        return 0
    ref = r.ring[seq & TWCC_RING_MASK].arrival_us // TWCC_REF_US
    cur = ref * TWCC_TICKS_PER_REF
    seq = base
    while seq < r.end and n < 0xFFFF:
        slot = &r.ring[seq & TWCC_RING_MASK]
        s = TWCC_NOT_RECEIVED
        add = 0
        d = 0
        ticks = 0
        if slot.seq == seq:
            ticks = slot.arrival_us // TWCC_TICK_US
            d = ticks - cur
            if d < -32768 or d > 32767:
                break
            if 0 <= d <= 255:
                s = TWCC_SMALL_DELTA
                add = 1
            else:
                s = TWCC_LARGE_DELTA
                add = 2
        if TWCC_HEADER_BYTES + 2 * ((n + 1) // 7 + 1) + delta_bytes + add + 3 > max_bytes:
            break
        sym[n] = s
        n += 1
        if s != TWCC_NOT_RECEIVED:
            deltas[nd] = <int16_t>d
            nd += 1
            delta_bytes += add
            cur = ticks
        seq += 1
    if n == 0:
        return 0
    pos = TWCC_HEADER_BYTES
    pos += _twcc_chunks(sym, n, out + pos)
    for k in range(nd):
        if 0 <= deltas[k] <= 255:
            out[pos] = <uint8_t>deltas[k]
            pos += 1
        else:
            wr16(out + pos, <uint16_t>deltas[k])
            pos += 2
    pad = (-pos) & 3
    if pad:
        for k in range(pad - 1):
            out[pos + k] = 0
        out[pos + pad - 1] = <uint8_t>pad     # RFC 3550 6.4.1 padding: the last octet counts them
        pos += pad
    rtcp_write_header(out, TWCC_FMT, RTCP_RTPFB, pos)
    if pad:
        out[0] |= 0x20
    wr32(out + 4, sender_ssrc)
    wr32(out + 8, r.media_ssrc)
    wr16(out + 12, <uint16_t>base)
    wr16(out + 14, <uint16_t>n)
    out[16] = <uint8_t>(ref >> 16)
    out[17] = <uint8_t>(ref >> 8)
    out[18] = <uint8_t>ref
    out[19] = r.fb_count
    r.fb_count += 1
    r.feedbacks += 1
    r.start = base + n
    return pos
