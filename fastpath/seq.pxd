# Sequence-number and timestamp arithmetic for the fast path: 16->64-bit unwrapping (LiveKit style, plain
# 64-bit compares), the per-consumer sequence rewriter (mediasoup SeqManager Sync/Drop/Input semantics on an
# O(1) offset ring; docs/FORWARDING.md, Sequence numbers) and the timestamp rewriter. RFC 3550 5.1 / appendix A.1.
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memset

cdef enum:
    SEQ_RING = 512                 # power of two; in-order gaps larger than this are not remembered
    SEQ_RING_MASK = SEQ_RING - 1
    SEQ_SLOT_VALID = 1             # the slot maps an input seq to an output seq
    SEQ_SLOT_SENT = 2
    SEQ_SLOT_DROPPED = 4

cdef enum SeqResult:
    SEQ_FORWARD = 0
    SEQ_DUPLICATE = 1
    SEQ_TOO_OLD = 2                # before the last sync point or outside the ring
    SEQ_DROPPED = 3                # this input was dropped on purpose earlier


ctypedef struct Unwrap:
    int64_t highest
    uint8_t started


cdef inline int64_t unwrap_seq(Unwrap* u, uint16_t seq) noexcept nogil:
    """Extend a 16-bit value to 64 bits relative to the highest seen (half-range rule)."""
    cdef int64_t ext
    if not u.started:
        u.started = 1
        u.highest = seq
        return seq
    ext = u.highest + <int16_t>(<uint16_t>(seq - <uint16_t>u.highest))
    if ext > u.highest:
        u.highest = ext
    return ext


cdef inline int64_t unwrap_ts(Unwrap* u, uint32_t ts) noexcept nogil:
    cdef int64_t ext
    if not u.started:
        u.started = 1
        u.highest = ts
        return ts
    ext = u.highest + <int32_t>(<uint32_t>(ts - <uint32_t>u.highest))
    if ext > u.highest:
        u.highest = ext
    return ext


ctypedef struct SeqSlot:
    uint32_t in_lo
    uint16_t out16
    uint16_t flags


ctypedef struct SeqRw:
    int64_t offset                 # out_ext = in_ext + offset for inputs after floor_in
    int64_t max_in
    int64_t max_out
    int64_t floor_in               # inputs below the last sync point are refused
    uint16_t initial_out
    uint8_t started
    uint8_t sync_pending
    SeqSlot ring[SEQ_RING]


cdef inline void seq_rw_init(SeqRw* rw, uint16_t initial_out) noexcept nogil:
    memset(rw, 0, sizeof(SeqRw))
    rw.initial_out = initial_out


cdef inline void seq_rw_sync(SeqRw* rw) noexcept nogil:
    """The next input continues at max_out + 1, whatever its number (resume, layer switch, restart)."""
    if rw.started:
        rw.sync_pending = 1


cdef inline void _seq_rw_mark(SeqRw* rw, int64_t in_ext, uint16_t flags) noexcept nogil:
    cdef SeqSlot* s = &rw.ring[in_ext & SEQ_RING_MASK]
    s.in_lo = <uint32_t>in_ext
    s.out16 = <uint16_t>(in_ext + rw.offset)
    s.flags = flags


cdef inline void _seq_rw_fill_gap(SeqRw* rw, int64_t in_ext) noexcept nogil:
    # Inputs between max_in and in_ext are missing: remember the number each would get (for late arrivals).
    cdef int64_t s = rw.max_in + 1
    if in_ext - s > SEQ_RING:
        s = in_ext - SEQ_RING
    while s < in_ext:
        _seq_rw_mark(rw, s, SEQ_SLOT_VALID)
        s += 1


cdef inline SeqResult _seq_rw_restart(SeqRw* rw, int64_t in_ext, int64_t out_ext, int64_t* out) noexcept nogil:
    rw.offset = out_ext - in_ext
    rw.max_in = in_ext
    rw.floor_in = in_ext
    rw.max_out = out_ext
    _seq_rw_mark(rw, in_ext, SEQ_SLOT_VALID | SEQ_SLOT_SENT)
    out[0] = out_ext
    return SEQ_FORWARD


cdef inline SeqResult seq_rw_input(SeqRw* rw, int64_t in_ext, int64_t* out) noexcept nogil:
    """Map one input ext seq to its output ext seq; SEQ_FORWARD means send it with out[0]."""
    cdef int64_t d
    cdef SeqSlot* slot
    if not rw.started:
        rw.started = 1
        return _seq_rw_restart(rw, in_ext, rw.initial_out, out)
    if rw.sync_pending:
        rw.sync_pending = 0
        return _seq_rw_restart(rw, in_ext, rw.max_out + 1, out)
    d = in_ext - rw.max_in
    if d > 0:
        _seq_rw_fill_gap(rw, in_ext)
        _seq_rw_mark(rw, in_ext, SEQ_SLOT_VALID | SEQ_SLOT_SENT)
        rw.max_in = in_ext
        out[0] = in_ext + rw.offset
        if out[0] > rw.max_out:
            rw.max_out = out[0]
        return SEQ_FORWARD
    if d == 0:
        return SEQ_DUPLICATE
    if in_ext < rw.floor_in or -d >= SEQ_RING:
        return SEQ_TOO_OLD
    slot = &rw.ring[in_ext & SEQ_RING_MASK]
    if slot.in_lo != <uint32_t>in_ext or not (slot.flags & SEQ_SLOT_VALID):
        return SEQ_TOO_OLD
    if slot.flags & SEQ_SLOT_DROPPED:
        return SEQ_DROPPED
    if slot.flags & SEQ_SLOT_SENT:
        return SEQ_DUPLICATE
    slot.flags |= SEQ_SLOT_SENT
    out[0] = rw.max_out - <uint16_t>(<uint16_t>rw.max_out - slot.out16)
    return SEQ_FORWARD


cdef inline int64_t seq_rw_insert(SeqRw* rw) noexcept nogil:
    """Take the next output number for a packet of our own (a probe's padding on the media SSRC): later inputs
    move up by one, so no number is used twice and none is left out. -1 before the first input."""
    if not rw.started:
        return -1
    rw.max_out += 1
    if not rw.sync_pending:
        rw.offset += 1              # max_out == max_in + offset holds (a pending sync starts at max_out + 1)
    return rw.max_out


cdef inline void seq_rw_drop(SeqRw* rw, int64_t in_ext) noexcept nogil:
    """Drop an input on purpose (padding-only, filtered) without leaving a hole in the output."""
    cdef SeqSlot* slot
    if not rw.started or rw.sync_pending:
        return
    if in_ext > rw.max_in:
        _seq_rw_fill_gap(rw, in_ext)
        _seq_rw_mark(rw, in_ext, SEQ_SLOT_VALID | SEQ_SLOT_DROPPED)
        rw.max_in = in_ext
        rw.offset -= 1
    elif in_ext >= rw.floor_in and rw.max_in - in_ext < SEQ_RING:
        slot = &rw.ring[in_ext & SEQ_RING_MASK]
        # NOTE: an old input's number was already reserved; dropping it leaves that one hole.
        if slot.in_lo == <uint32_t>in_ext and not (slot.flags & SEQ_SLOT_SENT):
            slot.flags |= SEQ_SLOT_DROPPED


ctypedef struct TsRw:
    uint32_t offset                # out = in + offset (mod 2^32)
    uint32_t max_out               # highest output ts sent
    uint32_t max_out_in            # the input ts that produced max_out
    int64_t max_out_ms             # arrival time of that packet (for SR extrapolation)
    uint8_t started


cdef inline uint32_t ts_rw_input(TsRw* t, uint32_t in_ts, int64_t now_ms) noexcept nogil:
    cdef uint32_t out = in_ts + t.offset
    if not t.started or <int32_t>(out - t.max_out) > 0:
        t.started = 1
        t.max_out = out
        t.max_out_in = in_ts
        t.max_out_ms = now_ms
    return out


cdef inline void ts_rw_switch(TsRw* t, uint32_t in_ts, uint32_t frame_ticks, uint8_t have_delta,
                              int64_t delta_ticks) noexcept nogil:
    """Re-base so that in_ts maps after max_out: by delta_ticks (capture-time distance from the last sent
    packet, known from SRs) when have_delta and positive, else by one frame (frame_ticks)."""
    cdef uint32_t target
    if not t.started:
        t.offset = 0
        return
    if have_delta and delta_ticks > 0 and delta_ticks < 0x7FFFFFFF:
        target = t.max_out + <uint32_t>delta_ticks
    else:
        target = t.max_out + frame_ticks
    t.offset = target - in_ts
