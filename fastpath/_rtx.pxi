# Retransmission toward subscribers (included by engine.pyx, used by retransmit in _feedback.pxi): when a NACKed
# packet may go out again, and the RTX packet (RFC 4588 4) it goes out as when the subscriber negotiated RTX.
# The rules and their numbers: docs/FORWARDING.md, NACK and retransmission.

cdef enum:
    RESEND_DEFAULT_RTT_MS = 100               # before the first receiver report (libwebrtc NackRequester, mediasoup)
    RESEND_MIN_RTT_MS = 20                    # floor of a measured RTT: on a LAN it can read 0 ms
    RESEND_MAX_TIMES = 3                      # resends per packet (LiveKit's sequencer maxAck)
    RESEND_MAX_AGE_VIDEO_MS = 1000            # after that a frame is late for any jitter buffer (libwebrtc history)
    RESEND_MAX_AGE_AUDIO_MS = 500             # audio playout buffers hold far less than video's
    RTX_PT_NONE = 255                         # Consumer.rtx_pt entry of a media PT without RTX


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
    notice), as libwebrtc's RtpPacketHistory."""
    cdef uint32_t now = <uint32_t>e.now_ms
    if now - m.sent_ms > <uint32_t>(RESEND_MAX_AGE_VIDEO_MS if kind == 1 else RESEND_MAX_AGE_AUDIO_MS):
        return DROP_NACK_TOO_OLD
    if m.resends >= RESEND_MAX_TIMES:
        return DROP_NACK_LIMIT
    if m.resends > 0 and now - m.resent_ms < <uint32_t>resend_interval_ms(c):
        return DROP_NACK_TOO_SOON
    return 0


cdef int send_rtx(EngineState* e, Consumer* c, const uint8_t* packet, int32_t length, uint8_t rtx_pt,
                  uint16_t osn, uint32_t ts) noexcept nogil:
    """Queue packet (as the store holds it) for consumer c as an RTX packet: c.rtx_ssrc, rtx_pt, the next RTX
    sequence number, the media timestamp and marker, and the rewritten media sequence number osn as the first two
    payload bytes (RFC 4588 4). Header extensions and padding stay as they are. 0 = queued."""
    cdef Transport* t = e.transports[c.transport]
    cdef RtpHeader h
    cdef uint8_t* out
    cdef int n
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
    n = length + 2
    if t.bwe != NULL:
        bwe_stamp(e, t, out, &n)              # _bwe.pxi: RTX counts in the transport-wide sequence too
    if protect_queued(e.srtp.protect, t.srtp_out, out, &n, e.hmac) != SRTP_ERR_OK:
        c.drops[DROP_SRTP_PROTECT] += 1
        return -1
    send_queue(e, c.transport, n)
    c.rtx_seq += 1
    c.rtx_packets += 1
    return 0
