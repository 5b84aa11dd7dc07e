# Send-side bandwidth estimation per subscriber transport (included by engine.pyx; the algorithms are in
# fastpath/bwe.pxd, docs/FORWARDING.md, Transport-wide congestion control): the stamping hook of the send path,
# the TWCC feedback and REMB hooks of the RTCP walk, the send-rate window of the tick, and EV_BWE_CHANGED when the
# estimate moves by more than BWE_REPORT_CHANGE. No Python objects.

cdef enum:
    BWE_RATE_WINDOW_MS = 500                  # sent_bps: tx_bytes over at least this much time (tick)

cdef double BWE_REPORT_CHANGE = 0.10


cdef inline void bwe_stamp(EngineState* e, Transport* t, uint8_t* out, int* n) noexcept nogil:
    """The send path's hook (send_rtp, before SRTP): give the packet at out its transport-wide seq and remember
    it. Media and retransmissions alike: every packet the peer receives counts in its feedback."""
    cdef Bwe* b = t.bwe
    cdef int32_t length = n[0]
    if b == NULL or b.history == NULL:
        return
    if bwe_stamp_packet(out, &length, SEND_SLOT_BYTES - SRTP_MAX_TRAILER - length, b.ext_id,
                        <uint16_t>b.next_seq):
        n[0] = length
        bwe_record(b, e.now_us, length)
    else:
        b.stamp_skipped += 1


cdef inline void bwe_report(EngineState* e, Transport* t, Bwe* b) noexcept nogil:
    cdef double last = b.reported_bps
    cdef double d = b.estimate_bps - last
    if last == 0 or d > BWE_REPORT_CHANGE * last or -d > BWE_REPORT_CHANGE * last:
        b.reported_bps = b.estimate_bps
        push_event(e, EV_BWE_CHANGED, t.handle, b.state, <int64_t>b.estimate_bps)


cdef inline int bwe_ensure(Transport* t) noexcept nogil:
    """The transport's estimator, created without a history when the first REMB comes before any command."""
    if t.bwe != NULL:
        return 0
    t.bwe = <Bwe*>calloc(1, sizeof(Bwe))
    if t.bwe == NULL or bwe_init(t.bwe, 0) != 0:
        free(t.bwe)
        t.bwe = NULL
        return -1
    return 0


cdef void bwe_feedback(EngineState* e, Transport* t, const uint8_t* p, int32_t length) noexcept nogil:
    """RTCP RTPFB FMT 15 from the peer (handle_rtcp)."""
    if t.bwe == NULL or t.bwe.history == NULL:
        t.drops[DROP_BAD_RTCP] += 1           # feedback for packets we never stamped
        return
    if bwe_on_feedback(t.bwe, p, length, e.now_us) == 0:
        bwe_report(e, t, t.bwe)


cdef void bwe_remb(EngineState* e, Transport* t, const uint8_t* p, int32_t length) noexcept nogil:
    """RTCP PSFB FMT 15 from the peer (handle_rtcp): a REMB is the estimate of a peer without TWCC feedback."""
    if bwe_ensure(t) != 0:
        return
    if bwe_on_remb(t.bwe, p, length) == 0:
        bwe_report(e, t, t.bwe)


cdef inline void bwe_tick(EngineState* e, Transport* t, int64_t now_ms) noexcept nogil:
    """The measured send rate toward t (engine_tick, every transport), and the end of a probe cluster that no
    feedback ended."""
    cdef int64_t span = now_ms - t.rate_ms
    if t.bwe != NULL and t.bwe.history != NULL and bwe_probe_expire(t.bwe, e.now_us):
        bwe_report(e, t, t.bwe)
    if t.rate_ms == 0 or span < 0:
        t.rate_ms = now_ms
        t.rate_bytes = t.tx_bytes
    elif span >= BWE_RATE_WINDOW_MS:
        t.sent_bps = (t.tx_bytes - t.rate_bytes) * 8000 // <uint64_t>span
        t.rate_ms = now_ms
        t.rate_bytes = t.tx_bytes
