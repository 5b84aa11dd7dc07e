# Retransmission toward subscribers (included by engine.pyx, used by retransmit in _feedback.pxi): when a NACKed
# packet may go out again, and the RTX packet (RFC 4588 4) it goes out as when the subscriber negotiated RTX.
# The rules and their numbers: docs/FORWARDING.md, NACK and retransmission. Also the padding of bandwidth probes
# (Engine.probe, the tick): padding-only RTP packets (RFC 3550 5.1) on a consumer's RTX stream, or on its media
# SSRC at a frame boundary when it has no RTX (docs/FORWARDING.md, Probing).

cdef enum:
    RESEND_DEFAULT_RTT_MS = 100               # before the first receiver report (libwebrtc NackRequester, mediasoup)
    RESEND_MIN_RTT_MS = 20                    # floor of a measured RTT: on a LAN it can read 0 ms
    RESEND_MAX_TIMES = 3                      # resends per packet (LiveKit's sequencer maxAck)
    RESEND_MAX_AGE_VIDEO_MS = 1000            # after that a frame is late for any jitter buffer (libwebrtc history)
    RESEND_MAX_AGE_AUDIO_MS = 500             # audio playout buffers hold far less than video's
    RTX_PT_NONE = 255                         # Consumer.rtx_pt entry of a media PT without RTX
    PROBE_PAD_MAX = 255                       # padding bytes of one probe packet (the RTP padding count is a byte)
    PROBE_TICK_MAX_MS = 40                    # a late tick tops up at most this much time (no catch-up burst)
    PROBE_TICK_MAX_PACKETS = 64               # probe packets per tick at most (16 Mbit/s at 20 ms ticks)


cdef inline int32_t resend_interval_ms(const Consumer* c) noexcept nogil:
    """The least time between two resends of one packet: the subscriber's RTT (from its receiver reports), floored,
    or RESEND_DEFAULT_RTT_MS while it is unknown."""
    if c.rtt_ms < 0:
        return RESEND_DEFAULT_RTT_MS
    if c.rtt_ms < RESEND_MIN_RTT_MS:
        return RESEND_MIN_RTT_MS
    return <int32_t>c.rtt_ms if c.rtt_ms < 0x7FFFFFFF else 0x7FFFFFFF


cdef inline int32_t resend_check(EngineState* e, Consumer* c, const MetaSlot* m, uint8_t kind) noexcept nogil:
    """0 when the packet of meta slot m may be resent now, else the drop reason: aged out, resent too often, or
    resent less than one RTT ago. The first resend is not delayed (a NACK already took the subscriber a gap to
    notice), as libwebrtc's RtpPacketHistory. (A packet of a layer c left is refused before: retransmit.)"""
    cdef uint32_t now = <uint32_t>e.now_ms
    if now - m.sent_ms > <uint32_t>(RESEND_MAX_AGE_VIDEO_MS if kind == 1 else RESEND_MAX_AGE_AUDIO_MS):
        return DROP_NACK_TOO_OLD
    if m.resends >= RESEND_MAX_TIMES:
        return DROP_NACK_LIMIT
    if m.resends > 0 and now - m.resent_ms < <uint32_t>resend_interval_ms(c):
        return DROP_NACK_TOO_SOON
    return 0


cdef int send_rtx(EngineState* e, Consumer* c, const uint8_t* packet, int32_t length, uint8_t rtx_pt,
                  uint16_t osn, uint32_t ts, const Vp8Desc* vp8, uint16_t pid, uint8_t tl0) noexcept nogil:
    """Queue packet (as the store holds it) for consumer c as an RTX packet: c.rtx_ssrc, rtx_pt, the next RTX
    sequence number, the media timestamp and marker, and the rewritten media sequence number osn as the first two
    payload bytes (RFC 4588 4). Header extensions and padding stay as they are. 0 = queued."""
    cdef RtpHeader h
    cdef uint8_t* out
    if rtp_parse(packet, length, &h) != RTP_OK:
        c.drops[DROP_BAD_HEADER] += 1
        return -1
    if length + 2 + SRTP_MAX_TRAILER > SEND_SLOT_BYTES:
        c.drops[DROP_TOO_BIG] += 1
        return -1
    out = send_slot(e)
    memcpy(out, packet, h.header_len)
    wr16(out + h.header_len, osn)
    memcpy(out + h.header_len + 2, packet + h.header_len, length - h.header_len)
    rtp_set_header(out, rtx_pt, c.rtx_seq, ts, c.rtx_ssrc)
    if vp8 != NULL and vp8.present:
        vp8_write(out + 2, vp8, pid, tl0)     # the descriptor moved by the OSN's 2 bytes
    if send_rtp_out(e, c.transport, out, length + 2, 0) < 0:
        c.drops[DROP_SRTP_PROTECT] += 1
        return -1
    c.rtx_seq += 1
    c.rtx_packets += 1
    return 0


# ---- bandwidth probes: padding on an RTX stream or the media SSRC --------------------------------------------------

cdef inline int probe_rtx_pt(const Consumer* c) noexcept nogil:
    """The RTX payload type a probe of consumer c uses: that of the media PT it sends, else any it negotiated;
    -1 = none."""
    cdef int i
    if c.last_pt_out >= 0 and c.last_pt_out < 128 and c.rtx_pt[c.last_pt_out] != RTX_PT_NONE:
        return c.rtx_pt[c.last_pt_out]
    for i in range(128):
        if c.rtx_pt[i] != RTX_PT_NONE:
            return c.rtx_pt[i]
    return -1


cdef inline bint probe_on_media(const Consumer* c) noexcept nogil:
    """Whether padding may go on c's media SSRC now (c without RTX): it has sent media, and its newest packet
    ended a frame, or its stream is stopped until a key frame (paused, waiting for one, draining). Padding between
    two packets of one frame would split the frame for the receiver's packet buffer (libwebrtc's RTPSender pads
    on the media SSRC only after a marker bit, as LiveKit's forwarder does)."""
    if not c.seq.started or not c.ts.started or c.last_pt_out < 0:
        return False
    return c.frame_end or c.paused or c.wait_keyframe or c.drain


cdef Consumer* probe_consumer(EngineState* e, Transport* t, bint ready) noexcept nogil:
    """The video consumer of t whose streams carry a probe's padding; NULL = none. One that negotiated RTX is
    preferred (padding on its RTX stream, forwarding before paused); else one that has sent media pads on its media
    SSRC, with ``ready`` only one at a frame boundary now (probe_on_media), forwarding before stopped."""
    cdef Consumer* c
    cdef Consumer* found = NULL
    cdef Consumer* media = NULL
    cdef int32_t i
    for i in range(t.consumers.n):
        c = e.consumers[t.consumers.items[i]]
        if c == NULL or c.producer < 0 or e.producers[c.producer].kind != 1:
            continue
        if c.rtx_ssrc == 0 or probe_rtx_pt(c) < 0:
            if media == NULL or media.paused and not c.paused:
                if not c.seq.started or c.last_pt_out < 0:
                    continue
                if ready and not probe_on_media(c):
                    continue
                media = c
            continue
        if c.ts.started and not c.paused:
            return c
        if found == NULL:
            found = c
    return found if found != NULL else media


cdef int send_probe_padding(EngineState* e, Consumer* c, int32_t pad) noexcept nogil:
    """Queue one padding-only RTP packet (P set, pad bytes of padding, the last one the count, RFC 3550 5.1; M
    clear) with the timestamp of c's last sent packet, stamped with the transport-wide sequence: on c's RTX stream
    (RTX SSRC and payload type, the next RTX sequence number) when c negotiated RTX, else on its media SSRC with
    the payload type it sends and the next number of its rewritten sequence (seq_rw_insert: the media after it
    moves up by one; its NACK slot is cleared, so a NACK for it resends nothing). Returns the bytes queued."""
    cdef Transport* t = e.transports[c.transport]
    cdef uint8_t* out
    cdef int n = 12 + pad
    cdef int pt
    cdef int64_t seq
    cdef bint rtx = c.rtx_ssrc != 0
    pt = probe_rtx_pt(c) if rtx else -1
    if pt < 0:
        rtx = False
        pt = c.last_pt_out
    if pt < 0 or pad < 1 or pad > PROBE_PAD_MAX:
        return 0
    if rtx:
        seq = c.rtx_seq
    else:
        seq = seq_rw_insert(c.seq)
        if seq < 0:
            return 0
        c.meta[seq & (META_RING - 1)].valid = 0
    out = send_slot(e)
    out[0] = 0xA0                             # V=2, P=1, X=0, CC=0
    out[1] = <uint8_t>(pt & 0x7F)             # M=0
    wr16(out + 2, <uint16_t>seq)
    wr32(out + 4, c.ts.max_out)
    wr32(out + 8, c.rtx_ssrc if rtx else c.out_ssrc)
    memset(out + 12, 0, pad - 1)
    out[12 + pad - 1] = <uint8_t>pad
    n = send_rtp_out(e, c.transport, out, n, 1)  # counted by the estimator, but not for its loss-based limit
    if n < 0:
        t.drops[DROP_SRTP_PROTECT] += 1
        return 0
    if rtx:
        c.rtx_seq += 1
    t.probe_packets += 1
    t.probe_bytes += n
    return n


cdef void probe_tick(EngineState* e, Transport* t, int64_t now_ms) noexcept nogil:
    """Top t's send rate up to probe_bps over the time since the last top-up (at most PROBE_TICK_MAX_MS): what was
    sent since then (media, retransmissions, earlier padding) counts, the rest is padding. The probe ends early
    once the estimator reports overuse: the link is full, more padding would only fill its queue."""
    cdef int64_t elapsed = now_ms - t.probe_last_ms
    cdef int64_t deficit, sent
    cdef int32_t k = 0, pad, q
    cdef Consumer* c
    if now_ms >= t.probe_until_ms or (t.bwe != NULL and t.bwe.state == BWE_OVERUSING and t.bwe.pr_packets > 0):
        t.probe_until_ms = 0                  # over, or the queue it builds is seen (feedback on the cluster's
        return                                # packets, not a verdict from before it): stop adding to it
    if elapsed <= 0:
        return
    if elapsed > PROBE_TICK_MAX_MS:
        elapsed = PROBE_TICK_MAX_MS
    sent = <int64_t>(t.tx_bytes - t.probe_last_tx) if t.tx_bytes > t.probe_last_tx else 0
    deficit = <int64_t>(t.probe_bps * <uint64_t>elapsed // 8000) - sent
    t.probe_last_ms = now_ms
    t.probe_last_tx = t.tx_bytes
    if deficit <= 0:
        return
    c = probe_consumer(e, t, True)
    if c == NULL:
        if probe_consumer(e, t, False) == NULL:
            t.probe_until_ms = 0              # its consumers left
        return                                # (or none is at a frame boundary in this tick: the next one)
    while deficit > 0 and k < PROBE_TICK_MAX_PACKETS:
        # 40 bytes: header, transport-wide element and SRTP tag; what is left below that is not worth a packet
        pad = PROBE_PAD_MAX if deficit > PROBE_PAD_MAX + 40 else <int32_t>(deficit - 40)
        if pad < 1:
            break
        q = send_probe_padding(e, c, pad)
        if q == 0:
            break
        deficit -= q
        t.probe_last_tx += q                  # accounted by the flush at the end of this tick
        k += 1
