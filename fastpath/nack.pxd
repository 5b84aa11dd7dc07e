# NACK generation toward publishers (RFC 4585 6.2.1 Generic NACK; docs/FORWARDING.md, NACK and retransmission). One
# NackGen per video stream (encoding), a receive bitmap over the last NACK_BITMAP_BITS ext seqs (O(1) per packet, pion's
# receive log) plus an ordered pending array of missing seqs (<= NACK_MAX_PENDING, mediasoup's NackGenerator limits)
# that the Engine's tick scans: first request once an entry is NACK_FIRST_DELAY_MS old (reordering),
# retries every max(RTT, NACK_MIN_INTERVAL_MS), at most NACK_MAX_TRIES, dropped after NACK_MAX_AGE_MS or
# NACK_MAX_AGE_SEQS. A late or RTX-recovered packet sets its bit and its entry leaves on the next scan.
# On overflow, entries before the last key frame go first; if still full the list is cleared and the caller
# requests a key frame. nogil C only.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset

from fastpath.rtcp cimport RTCP_FMT_NACK, RTCP_RTPFB, rtcp_write_header
from fastpath.rtp cimport wr16, wr32

cdef enum:
    NACK_BITMAP_BITS = 16384          # power of two, > NACK_MAX_AGE_SEQS
    NACK_BITMAP_WORDS = NACK_BITMAP_BITS // 64
    NACK_MAX_PENDING = 1000
    NACK_MAX_TRIES = 10
    NACK_FIRST_DELAY_MS = 10
    NACK_MIN_INTERVAL_MS = 40
    NACK_DEFAULT_RTT_MS = 100
    NACK_MAX_AGE_MS = 1000
    NACK_MAX_AGE_SEQS = 10000
    NACK_MAX_FCI_PER_PACKET = 250     # 12 + 4 * 250 bytes, below the RTCP budget after SRTCP's trailer


ctypedef struct NackEntry:
    int64_t seq                       # ext seq
    int64_t created_ms
    int64_t sent_ms
    int32_t tries


ctypedef struct NackGen:
    uint64_t bits[NACK_BITMAP_WORDS]  # bit (seq & mask) = received
    NackEntry pending[NACK_MAX_PENDING]
    int32_t n                         # entries in pending, ascending seq
    uint8_t started
    int64_t max_seq
    int64_t last_key_seq              # -1 = none seen
    uint64_t requested                # seqs put in a NACK (retries included)
    uint64_t packets                  # NACK packets written
    uint64_t recovered                # missing seqs that arrived later
    uint64_t expired                  # given up (tries, age)
    uint64_t overflows                # pending list cleared


cdef inline void nack_reset(NackGen* g) noexcept nogil:
    """Forget everything (new SSRC or a source restart); counters are kept."""
    memset(g.bits, 0, sizeof(g.bits))
    g.n = 0
    g.started = 0
    g.max_seq = 0
    g.last_key_seq = -1


cdef inline void nack_init(NackGen* g) noexcept nogil:
    memset(g, 0, sizeof(NackGen))
    g.last_key_seq = -1


cdef inline void _nack_set(NackGen* g, int64_t seq) noexcept nogil:
    g.bits[(seq & (NACK_BITMAP_BITS - 1)) >> 6] |= (<uint64_t>1) << (seq & 63)


cdef inline void _nack_clear(NackGen* g, int64_t seq) noexcept nogil:
    g.bits[(seq & (NACK_BITMAP_BITS - 1)) >> 6] &= ~((<uint64_t>1) << (seq & 63))


cdef inline bint nack_has(const NackGen* g, int64_t seq) noexcept nogil:
    """Received, for seqs within NACK_BITMAP_BITS of the highest."""
    return (g.bits[(seq & (NACK_BITMAP_BITS - 1)) >> 6] >> (seq & 63)) & 1


cdef inline void _nack_drop_before(NackGen* g, int64_t seq) noexcept nogil:
    cdef int32_t i, w = 0
    for i in range(g.n):
        if g.pending[i].seq >= seq:
            g.pending[w] = g.pending[i]
            w += 1
    g.n = w


cdef inline bint nack_received(NackGen* g, int64_t seq, int64_t now_ms) noexcept nogil:
    """One packet of the stream (media or RTX-repaired, ext seq). True = the pending list overflowed and
    was cleared: the caller must request a key frame."""
    cdef int64_t s, gap
    cdef NackEntry* en
    if not g.started:
        g.started = 1
        g.max_seq = seq
        _nack_set(g, seq)
        return False
    if seq <= g.max_seq:
        if g.max_seq - seq < NACK_BITMAP_BITS:
            _nack_set(g, seq)
        return False
    gap = seq - g.max_seq - 1
    if gap >= NACK_BITMAP_BITS:
        memset(g.bits, 0, sizeof(g.bits))
    else:
        s = g.max_seq + 1
        while s < seq:
            _nack_clear(g, s)
            s += 1
    g.max_seq = seq
    _nack_set(g, seq)
    if gap == 0:
        return False
    if g.n + gap > NACK_MAX_PENDING and g.last_key_seq >= 0:
        _nack_drop_before(g, g.last_key_seq)
    if g.n + gap > NACK_MAX_PENDING:
        g.n = 0
        g.overflows += 1
        return True
    s = seq - gap
    while s < seq:
        en = &g.pending[g.n]
        en.seq = s
        en.created_ms = now_ms
        en.sent_ms = 0
        en.tries = 0
        g.n += 1
        s += 1
    return False


cdef inline void nack_key_frame(NackGen* g, int64_t seq) noexcept nogil:
    if seq > g.last_key_seq:
        g.last_key_seq = seq


cdef inline int32_t nack_collect(NackGen* g, int64_t now_ms, int64_t rtt_ms, uint32_t* fci,
                                 int32_t max_fci) noexcept nogil:
    """Scan the pending list at now_ms: drop recovered and expired entries, and pack the seqs due for a
    request into FCIs (PID << 16 | BLP, RFC 4585 6.2.1) into fci[:max_fci]. Returns the FCI count; seqs that
    do not fit stay due for the next scan."""
    cdef int32_t i, w = 0, nf = 0
    cdef int64_t interval = rtt_ms if rtt_ms > NACK_MIN_INTERVAL_MS else NACK_MIN_INTERVAL_MS
    cdef int64_t pid = -1, d
    cdef NackEntry* en
    for i in range(g.n):
        en = &g.pending[i]
        if g.max_seq - en.seq >= NACK_MAX_AGE_SEQS:
            g.expired += 1
            continue
        if nack_has(g, en.seq):
            g.recovered += 1
            continue
        if en.tries >= NACK_MAX_TRIES or now_ms - en.created_ms > NACK_MAX_AGE_MS:
            g.expired += 1
            continue
        if now_ms - en.created_ms >= NACK_FIRST_DELAY_MS and (en.tries == 0 or now_ms - en.sent_ms >= interval):
            d = en.seq - pid
            if pid >= 0 and 0 < d <= 16:
                fci[nf - 1] |= (<uint32_t>1) << (d - 1)
                en.tries += 1
                en.sent_ms = now_ms
                g.requested += 1
            elif nf < max_fci:
                pid = en.seq
                fci[nf] = (<uint32_t>(<uint16_t>pid)) << 16
                nf += 1
                en.tries += 1
                en.sent_ms = now_ms
                g.requested += 1
        g.pending[w] = en[0]
        w += 1
    g.n = w
    return nf


cdef inline int32_t nack_write(uint8_t* out, uint32_t sender_ssrc, uint32_t media_ssrc, const uint32_t* fci,
                               int32_t n) noexcept nogil:
    """One Generic NACK (RTPFB FMT 1) with n FCIs."""
    cdef int32_t i
    rtcp_write_header(out, RTCP_FMT_NACK, RTCP_RTPFB, 12 + 4 * n)
    wr32(out + 4, sender_ssrc)
    wr32(out + 8, media_ssrc)
    for i in range(n):
        wr32(out + 12 + 4 * i, fci[i])
    return 12 + 4 * n
