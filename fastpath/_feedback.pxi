# RTCP ingress (included by engine.pyx): SR and XR DLRR from publishers; RR, NACK, PLI and FIR from
# subscribers. RFC 3550 6.4, RFC 4585 6.2.1 (NACK) and 6.3.1 (PLI), RFC 5104 4.3.1 (FIR), RFC 3611 4.5 (DLRR). Key-frame requests toward
# publishers are PLIs, throttled to one per publisher SSRC per KEYFRAME_THROTTLE_MS.


cdef void request_keyframe(EngineState* e, Producer* p, int32_t layer) noexcept nogil:
    cdef RecvStream* s
    cdef Transport* t
    cdef uint8_t* out
    if layer < 0 or layer >= p.n_enc or p.kind != 1:
        return
    s = &p.enc[layer]
    if s.ssrc == 0:
        s.kf_pending = 1                      # sent once the stream's SSRC is learned
        return
    if s.last_kf_request_ms != 0 and e.now_ms - s.last_kf_request_ms < KEYFRAME_THROTTLE_MS:
        s.kf_pending = 1
        return
    t = e.transports[p.transport]
    if not t.bound or t.srtp_out == NULL:
        s.kf_pending = 1
        return
    out = send_slot(e)
    if send_rtcp(e, p.transport, rtcp_write_pli(out, e.rtcp_ssrc, s.ssrc)) != 0:
        return
    s.last_kf_request_ms = e.now_ms if e.now_ms != 0 else 1
    s.kf_pending = 0
    s.kf_requests += 1
    push_event(e, EV_KEY_FRAME_REQUESTED, p.handle, layer, s.ssrc)


cdef void consumer_request_keyframe(EngineState* e, Consumer* c) noexcept nogil:
    if c.producer < 0:
        return
    request_keyframe(e, e.producers[c.producer], c.current if c.current >= 0 else c.target)


cdef void consumer_hole(EngineState* e, Producer* p, Consumer* c) noexcept nogil:
    """The subscriber NACKed a video packet of its current layer that will not be resent (aged out, resent
    RESEND_MAX_TIMES already, or gone from the store): its decoder cannot go on past that hole until a key frame,
    which a libwebrtc receiver asks for itself only after about 3 s without a decodable frame. Ask the publisher now,
    at most once per HOLE_KEYFRAME_MS per consumer (and the per-layer PLI throttle on top)."""
    if p.kind != 1 or c.current < 0:
        return
    if c.hole_kf_ms != 0 and e.now_ms - c.hole_kf_ms < HOLE_KEYFRAME_MS:
        return
    c.hole_kf_ms = e.now_ms if e.now_ms != 0 else 1
    c.hole_keyframes += 1
    request_keyframe(e, p, c.current)


cdef void retransmit(EngineState* e, Consumer* c, uint16_t out_seq) noexcept nogil:
    """Resend the packet that went out as out_seq, rewritten as before (same seq, ts and SSRC), or wrapped as RTX
    when the subscriber negotiated it; at most RESEND_MAX_TIMES times, once per RTT, and not once aged out
    (_rtx.pxi)."""
    cdef MetaSlot* m = &c.meta[out_seq & (META_RING - 1)]
    cdef Producer* p
    cdef RecvStream* s
    cdef const uint8_t* data
    cdef int32_t length = 0
    cdef int32_t reason
    cdef int64_t ext
    cdef int16_t out_pt
    cdef int rc
    cdef RtpHeader h
    cdef Vp8Desc vp8
    if not m.valid or m.out16 != out_seq or c.producer < 0 \
            or <uint16_t>(<uint16_t>c.seq.max_out - out_seq) >= META_RING:
        # Unknown, or older than the outbound SRTP replay window (512, fastpath/srtp.pyx) would accept.
        c.drops[DROP_NACK_MISS] += 1
        return
    p = e.producers[c.producer]
    if <int32_t>m.layer != c.current or (c.drain and consumer_draining(e, c)):
        # A layer the consumer has left (or is leaving under congestion): its key frame supersedes the packet, and
        # on a congested link (the usual reason to switch down) resending it only deepens the queue.
        c.drops[DROP_NACK_OTHER_LAYER] += 1
        return
    reason = resend_check(e, c, m, p.kind)
    if reason != 0:
        c.drops[reason] += 1
        if reason != DROP_NACK_TOO_SOON:
            consumer_hole(e, p, c)
        return
    s = &p.enc[m.layer]
    ext = s.max_ext_seq - <uint32_t>(<uint32_t>s.max_ext_seq - m.src_lo)
    data = store_get(&s.store, ext, &length)
    if data == NULL:
        c.drops[DROP_NACK_MISS] += 1
        consumer_hole(e, p, c)
        return
    out_pt = c.pt_map[data[1] & 0x7F]
    if out_pt < 0:
        c.drops[DROP_UNSUPPORTED_PT] += 1
        return
    vp8_desc_none(&vp8)
    if m.vp8 and rtp_parse(data, length, &h) == RTP_OK:
        vp8_parse(data, h.header_len, h.payload_len, &vp8)   # resent with the PictureID it first went out with
    if c.rtx_ssrc != 0 and c.rtx_pt[out_pt] != RTX_PT_NONE:
        rc = send_rtx(e, c, data, length, c.rtx_pt[out_pt], out_seq, m.out_ts, &vp8, m.vp8_pid, m.vp8_tl0)
    else:
        rc = send_rtp(e, c, data, length, <uint8_t>out_pt, out_seq, m.out_ts, &vp8, m.vp8_pid, m.vp8_tl0)
    if rc == 0:
        c.retransmits += 1
        e.transports[c.transport].rtx_bytes += <uint64_t>length
        m.resends += 1
        m.resent_ms = <uint32_t>e.now_ms


cdef void handle_report_blocks(EngineState* e, int32_t t_slot, const uint8_t* p, int32_t count,
                               const uint8_t* end) noexcept nogil:
    cdef int32_t i, cidx
    cdef Consumer* c
    cdef uint32_t cum, lsr, dlsr
    for i in range(count):
        if p + RTCP_REPORT_BLOCK_LEN > end:
            return
        cidx = ht_get(&e.tx_ssrc, ssrc_key(t_slot, rd32(p)))
        if cidx >= 0:
            c = e.consumers[cidx]
            c.rr_count += 1
            c.rr_fraction_lost = p[4]
            cum = rd32(p + 4) & 0xFFFFFF
            c.rr_cumulative_lost = <int32_t>(cum - 0x1000000 if cum & 0x800000 else cum)
            c.rr_highest_seq = rd32(p + 8)
            c.rr_jitter = rd32(p + 12)
            lsr = rd32(p + 16)
            dlsr = rd32(p + 20)
            if lsr != 0 and lsr == c.last_sr_mid:
                c.rtt_ms = e.now_ms - c.last_sr_ms - (<int64_t>dlsr * 1000) // 65536
                if c.rtt_ms < 0:
                    c.rtt_ms = 0
        p += RTCP_REPORT_BLOCK_LEN


cdef void handle_xr(EngineState* e, Transport* t, const uint8_t* p, const uint8_t* end) noexcept nogil:
    """XR report blocks: a DLRR sub-block for our RRTR gives the RTT toward this publisher (RFC 3611 4.5)."""
    cdef const uint8_t* q
    cdef int32_t block
    cdef uint32_t lrr, dlrr
    cdef int64_t rtt
    while p + 4 <= end:
        block = (<int32_t>rd16(p + 2) + 1) * 4
        if p + block > end:
            return
        if p[0] == RTCP_XR_DLRR:
            q = p + 4
            while q + 12 <= p + block:
                lrr = rd32(q + 4)
                dlrr = rd32(q + 8)
                if rd32(q) == e.rtcp_ssrc and lrr != 0 and lrr == t.rrtr_mid:
                    rtt = e.now_ms - t.rrtr_ms - (<int64_t>dlrr * 1000) // 65536
                    t.rtt_ms = rtt if rtt > 0 else 1
                q += 12
        p += block


cdef void handle_rtcp(EngineState* e, int32_t t_slot, Transport* t, uint8_t* buf, int32_t n) noexcept nogil:
    cdef int length = n
    cdef int32_t pos = 0
    cdef RtcpItem it
    cdef int rc
    cdef const uint8_t* p
    cdef const uint8_t* end
    cdef int32_t value, cidx
    cdef RecvStream* s
    cdef Consumer* c
    cdef uint16_t pid, blp
    cdef int k
    if e.srtp.unprotect_rtcp(t.srtp_in, buf, &length) != SRTP_ERR_OK:
        t.drops[DROP_SRTP_UNPROTECT] += 1
        return
    t.rtcp_rx += 1
    while True:
        rc = rtcp_next(buf, length, &pos, &it)
        if rc == 0:
            return
        if rc < 0:
            t.drops[DROP_BAD_RTCP] += 1
            return
        p = buf + it.offset
        end = p + it.length
        if it.pt == RTCP_SR and it.length >= 28:
            value = ht_get(&e.rx_ssrc, ssrc_key(t_slot, rd32(p + 4)))
            if value >= 0 and not route_is_rtx(value):
                s = &e.producers[route_slot(value)].enc[route_layer(value)]
                s.have_sr = 1
                s.sr_ntp_sec = rd32(p + 8)
                s.sr_ntp_frac = rd32(p + 12)
                s.sr_rtp = rd32(p + 16)
                s.sr_arrival_ms = e.now_ms
                s.sr_count += 1
            handle_report_blocks(e, t_slot, p + 28, it.count, end)
        elif it.pt == RTCP_RR and it.length >= 8:
            handle_report_blocks(e, t_slot, p + 8, it.count, end)
        elif it.pt == RTCP_XR and it.length >= 8:
            handle_xr(e, t, p + 8, end)
        elif it.pt == RTCP_RTPFB and it.count == RTCP_FMT_NACK and it.length >= 12:
            cidx = ht_get(&e.tx_ssrc, ssrc_key(t_slot, rd32(p + 8)))
            if cidx < 0:
                continue
            c = e.consumers[cidx]
            p += 12
            while p + 4 <= end:
                pid = rd16(p)
                blp = rd16(p + 2)
                c.nack_rx += 1
                if c.nack:
                    retransmit(e, c, pid)
                    for k in range(16):
                        if blp & (1 << k):
                            retransmit(e, c, <uint16_t>(pid + k + 1))
                p += 4
        elif it.pt == RTCP_RTPFB and it.count == BWE_FMT_TWCC:
            bwe_feedback(e, t, p, it.length)  # _bwe.pxi
        elif it.pt == RTCP_PSFB and it.count == BWE_FMT_REMB:
            bwe_remb(e, t, p, it.length)
        elif it.pt == RTCP_PSFB and it.count == RTCP_FMT_PLI and it.length >= 12:
            cidx = ht_get(&e.tx_ssrc, ssrc_key(t_slot, rd32(p + 8)))
            if cidx >= 0:
                e.consumers[cidx].pli_rx += 1
                consumer_request_keyframe(e, e.consumers[cidx])
        elif it.pt == RTCP_PSFB and it.count == RTCP_FMT_FIR and it.length >= 12:
            p += 12
            while p + 8 <= end:
                cidx = ht_get(&e.tx_ssrc, ssrc_key(t_slot, rd32(p)))
                if cidx >= 0:
                    e.consumers[cidx].pli_rx += 1
                    consumer_request_keyframe(e, e.consumers[cidx])
                p += 8
