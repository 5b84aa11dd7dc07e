# Feedback toward publishers (included by engine.pyx): transport-wide CC feedback (draft-holmer-rmcat-
# transport-wide-cc-extensions-01, twcc.pxd) and generic NACKs (RFC 4585 6.2.1, nack.pxd), both protected
# with the publisher transport's SRTCP session. TWCC goes out every TWCC_INTERVAL_MS from tick(), or at
# once from the packet path when TWCC_FLUSH_PENDING seqs wait; NACKs are scanned on every tick().
# docs/FORWARDING.md, NACK and retransmission, Transport-wide congestion control. No Python objects.


cdef void send_twcc(EngineState* e, int32_t t_slot, Transport* t) noexcept nogil:
    """Report every recorded arrival of transport t (as many feedback packets as needed)."""
    cdef uint8_t* out
    cdef int32_t n
    if t.twcc == NULL or not t.bound or t.srtp_out == NULL:
        return
    t.twcc.last_feedback_ms = e.now_ms
    while True:
        out = send_slot(e)
        n = twcc_build(t.twcc, out, TWCC_FEEDBACK_BYTES, e.rtcp_ssrc)
        if n == 0:
            return
        send_rtcp(e, t_slot, n)


cdef inline void tick_twcc(EngineState* e, int32_t t_slot, Transport* t, int64_t now_ms) noexcept nogil:
    if t.twcc != NULL and twcc_pending(t.twcc) > 0 and now_ms - t.twcc.last_feedback_ms >= TWCC_INTERVAL_MS:
        send_twcc(e, t_slot, t)


cdef void send_nacks(EngineState* e, Producer* p, int32_t layer, int64_t now_ms) noexcept nogil:
    """NACK the seqs of encoding `layer` that are due, in packets of at most NACK_MAX_FCI_PER_PACKET FCIs."""
    cdef RecvStream* s = &p.enc[layer]
    cdef Transport* t = e.transports[p.transport]
    cdef uint32_t fci[NACK_MAX_PENDING]
    cdef int32_t n, i = 0, k
    cdef int64_t rtt = t.rtt_ms if t.rtt_ms > 0 else NACK_DEFAULT_RTT_MS
    if s.nack == NULL or s.nack.n == 0 or s.ssrc == 0 or not t.bound or t.srtp_out == NULL:
        return
    n = nack_collect(s.nack, now_ms, rtt, fci, NACK_MAX_PENDING)
    while i < n:
        k = n - i if n - i < NACK_MAX_FCI_PER_PACKET else NACK_MAX_FCI_PER_PACKET
        if send_rtcp(e, p.transport, nack_write(send_slot(e), e.rtcp_ssrc, s.ssrc, fci + i, k)) == 0:
            s.nack.packets += 1
        i += k
