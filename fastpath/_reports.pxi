# Timer work (included by engine.pyx): receiver reports toward publishers, sender reports toward
# subscribers (each compound ends with an SDES CNAME, RFC 3550 6.1/6.4), TWCC feedback and NACKs toward
# publishers (_publisher_feedback.pxi), layer re-targeting and key-frame request retries. Runs from
# Engine.tick(), never per packet.

cdef enum:
    RTCP_COMPOUND_BUDGET = 1100               # stay below the path MTU after SRTCP's trailer
    MAX_SR_PER_COMPOUND = 16


cdef int32_t write_rr_block(RecvStream* s, uint8_t* out, int64_t now_ms) noexcept nogil:
    # RFC 3550 A.3: loss since the previous report and in total.
    cdef int64_t expected = s.max_ext_seq - s.base_ext_seq + 1
    cdef int64_t lost = expected - <int64_t>s.received
    cdef int64_t expected_interval = expected - s.expected_prior
    cdef int64_t received_interval = <int64_t>(s.received - s.received_prior)
    cdef int64_t lost_interval = expected_interval - received_interval
    cdef uint8_t fraction = 0
    cdef uint32_t lsr = 0, dlsr = 0
    s.expected_prior = expected
    s.received_prior = s.received
    if expected_interval > 0 and lost_interval > 0:
        fraction = <uint8_t>((lost_interval << 8) // expected_interval)
    if s.have_sr:
        lsr = (s.sr_ntp_sec << 16) | (s.sr_ntp_frac >> 16)
        dlsr = <uint32_t>((now_ms - s.sr_arrival_ms) * 65536 // 1000)
    # The reported extended highest seq counts cycles from the first packet (we start one cycle up).
    return rtcp_write_report_block(out, s.ssrc, fraction, <int32_t>lost,
                                   <uint32_t>(s.max_ext_seq - 0x10000), s.jitter_q4 >> 4, lsr, dlsr)


cdef void send_rr(EngineState* e, int32_t t_slot, Transport* t, int64_t now_ms, uint32_t ntp_sec,
                  uint32_t ntp_frac) noexcept nogil:
    """RRs for every publisher stream of t; the first compound also carries an XR RRTR (RFC 3611 4.4) whose
    DLRR answer gives the RTT toward the publisher (NACK retry interval)."""
    cdef uint8_t* out = NULL
    cdef int32_t length = 0, count = 0, i, j
    cdef bint rrtr = True
    cdef Producer* p
    cdef RecvStream* s
    for i in range(t.producers.n):
        p = e.producers[t.producers.items[i]]
        for j in range(p.n_enc):
            s = &p.enc[j]
            if s.ssrc == 0 or not s.seq_started:
                continue
            if out == NULL:
                out = send_slot(e)
                length = 8
                count = 0
            length += write_rr_block(s, out + length, now_ms)
            count += 1
            if count == 31 or length + RTCP_REPORT_BLOCK_LEN + 64 + RTCP_XR_RRTR_LEN > RTCP_COMPOUND_BUDGET:
                finish_rr(e, t_slot, out, length, count, rrtr, ntp_sec, ntp_frac)
                rrtr = False
                out = NULL
    if out != NULL:
        finish_rr(e, t_slot, out, length, count, rrtr, ntp_sec, ntp_frac)


cdef void finish_rr(EngineState* e, int32_t t_slot, uint8_t* out, int32_t length, int32_t count, bint rrtr,
                    uint32_t ntp_sec, uint32_t ntp_frac) noexcept nogil:
    cdef Transport* t = e.transports[t_slot]
    rtcp_write_header(out, <uint8_t>count, RTCP_RR, length)
    wr32(out + 4, e.rtcp_ssrc)
    length += write_sdes(e, out + length, &e.rtcp_ssrc, 1)
    if rrtr:
        length += rtcp_write_xr_rrtr(out + length, e.rtcp_ssrc, ntp_sec, ntp_frac)
        t.rrtr_mid = (ntp_sec << 16) | (ntp_frac >> 16)
        t.rrtr_ms = e.now_ms
    send_rtcp(e, t_slot, length)


cdef int32_t write_sdes(EngineState* e, uint8_t* out, const uint32_t* ssrcs, int32_t n) noexcept nogil:
    cdef int32_t length = 4, i
    for i in range(n):
        length += rtcp_write_sdes_chunk(out + length, ssrcs[i], e.cname, e.cname_len)
    rtcp_write_header(out, <uint8_t>n, RTCP_SDES, length)
    return length


cdef void send_sr(EngineState* e, int32_t t_slot, Transport* t, int64_t now_ms, uint32_t ntp_sec,
                  uint32_t ntp_frac) noexcept nogil:
    cdef uint8_t* out = NULL
    cdef int32_t length = 0, count = 0, i
    cdef uint32_t ssrcs[MAX_SR_PER_COMPOUND]
    cdef Consumer* c
    cdef uint32_t rtp_ts, clock
    for i in range(t.consumers.n):
        c = e.consumers[t.consumers.items[i]]
        if c.packets == 0 or c.producer < 0:
            continue
        clock = e.producers[c.producer].clock_rate
        # RTP time of "now" extrapolated from the last sent packet (mediasoup RtpStreamSend).
        rtp_ts = c.ts.max_out + <uint32_t>((now_ms - c.ts.max_out_ms) * clock // 1000)
        if out == NULL:
            out = send_slot(e)
            length = 0
            count = 0
        length += rtcp_write_sr(out + length, c.out_ssrc, ntp_sec, ntp_frac, rtp_ts, <uint32_t>c.packets,
                                <uint32_t>c.bytes)
        ssrcs[count] = c.out_ssrc
        count += 1
        c.last_sr_mid = (ntp_sec << 16) | (ntp_frac >> 16)
        c.last_sr_ms = now_ms
        if count == MAX_SR_PER_COMPOUND:
            length += write_sdes(e, out + length, ssrcs, count)
            send_rtcp(e, t_slot, length)
            out = NULL
    if out != NULL:
        length += write_sdes(e, out + length, ssrcs, count)
        send_rtcp(e, t_slot, length)


cdef int32_t highest_active_layer(Producer* p, int32_t limit, int64_t now_ms) noexcept nogil:
    cdef int32_t i
    if limit < 0 or limit >= p.n_enc:
        limit = p.n_enc - 1
    for i in range(limit, -1, -1):
        if p.enc[i].ssrc != 0 and p.enc[i].last_packet_ms != 0 and now_ms - p.enc[i].last_packet_ms < STREAM_ACTIVE_MS:
            return i
    return -1


cdef void consumer_retarget(EngineState* e, Consumer* c, int64_t now_ms) noexcept nogil:
    """target = the highest receiving layer <= preferred; keep the old target if nothing is receiving."""
    cdef Producer* p
    cdef int32_t layer
    if c.producer < 0:
        return
    p = e.producers[c.producer]
    if p.n_enc == 1:
        c.target = 0
        return
    if c.pinned:
        c.target = c.preferred                # a pipe consumer carries one encoding as it is (_pipe.pxi)
        return
    layer = highest_active_layer(p, c.preferred, now_ms)
    if layer >= 0:
        c.target = layer
    elif c.target < 0:
        c.target = c.preferred if 0 <= c.preferred < p.n_enc else p.n_enc - 1


cdef void engine_tick(EngineState* e, int64_t now_ms, uint32_t ntp_sec, uint32_t ntp_frac) noexcept nogil:
    cdef int32_t i, j
    cdef Transport* t
    cdef Consumer* c
    cdef Producer* p
    e.now_ms = now_ms
    e.last_tick_ms = now_ms
    for i in range(e.cap_transports):
        t = e.transports[i]
        if t == NULL or not t.bound or t.srtp_out == NULL:
            continue
        if t.producers.n > 0 and now_ms - t.last_rr_ms >= REPORT_INTERVAL_MS:
            t.last_rr_ms = now_ms
            send_rr(e, i, t, now_ms, ntp_sec, ntp_frac)
        if t.consumers.n > 0 and now_ms - t.last_sr_ms >= REPORT_INTERVAL_MS:
            t.last_sr_ms = now_ms
            send_sr(e, i, t, now_ms, ntp_sec, ntp_frac)
        tick_twcc(e, i, t, now_ms)
        if t.probe_until_ms != 0:
            probe_tick(e, t, now_ms)          # _rtx.pxi: padding up to the probe rate
        bwe_tick(e, t, now_ms)
    for i in range(e.cap_consumers):
        c = e.consumers[i]
        if c == NULL or c.producer < 0 or c.paused:
            continue
        consumer_retarget(e, c, now_ms)
        if c.current != c.target or c.wait_keyframe:
            request_keyframe(e, e.producers[c.producer], c.target)
    for i in range(e.cap_producers):
        p = e.producers[i]
        if p == NULL:
            continue
        for j in range(p.n_enc):
            if p.enc[j].kf_pending:
                request_keyframe(e, p, j)
            if p.enc[j].nack != NULL and p.enc[j].nack.n > 0:
                send_nacks(e, p, j, now_ms)
    send_flush(e)


cdef int64_t NTP_UNIX_OFFSET_S = 2208988800  # 1900 -> 1970 (RFC 5905)


cdef void engine_tick_now(EngineState* e, int64_t now_ms) noexcept nogil:
    """engine_tick with the wall clock read now (the NTP time of the sender reports)."""
    cdef timespec wall
    clock_gettime(CLOCK_REALTIME, &wall)
    engine_tick(e, now_ms, <uint32_t>(wall.tv_sec + NTP_UNIX_OFFSET_S),
                <uint32_t>((<uint64_t>wall.tv_nsec << 32) // 1000000000))
