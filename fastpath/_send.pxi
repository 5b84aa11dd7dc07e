# Send arena (included by engine.pyx): per-consumer copies are written straight into sendmmsg slots,
# protected in place and flushed in batches, grouped per transport into UDP GSO messages while the kernel takes
# them (_gso.pxi), else one datagram per message. No Python objects.


cdef inline uint8_t* send_slot(EngineState* e) noexcept nogil:
    if e.n_send == SEND_BATCH:
        send_flush(e)
    return e.send_buf + <size_t>e.n_send * SEND_SLOT_BYTES


cdef inline void send_queue(EngineState* e, int32_t t_slot, int32_t length) noexcept nogil:
    """Queue the datagram written at send_slot(e) toward transport t_slot's tuple."""
    cdef int32_t i = e.n_send
    cdef Transport* t = e.transports[t_slot]
    e.send_iov[i].iov_len = length
    e.send_msgs[i].msg_hdr.msg_name = &t.addr
    if t.has_local:                           # the source address the peer's checks came to (IP_PKTINFO)
        e.send_msgs[i].msg_hdr.msg_control = t.local_cmsg
        e.send_msgs[i].msg_hdr.msg_controllen = CMSG_SPACE(sizeof(in_pktinfo))
    else:
        e.send_msgs[i].msg_hdr.msg_control = NULL
        e.send_msgs[i].msg_hdr.msg_controllen = 0
    e.send_t[i] = t_slot
    e.n_send = i + 1


cdef void send_flush(EngineState* e) noexcept nogil:
    hmac_flush(e.hmac)                        # the AES-CM-80 tags protect queued (crypto_kernel: HMAC batches)
    if e.n_send == 0:
        return
    if e.gso and e.n_send > 1:
        gso_flush(e)                          # _gso.pxi: falls back to send_plain when nothing coalesces
    else:
        send_plain(e, 0)
    e.n_send = 0


cdef inline void send_account(EngineState* e, int32_t k) noexcept nogil:
    cdef Transport* t = e.transports[e.send_t[k]]
    t.tx_packets += 1
    t.tx_bytes += e.send_iov[k].iov_len


cdef void send_plain(EngineState* e, int32_t i) noexcept nogil:
    """Send slots i..n_send-1, one datagram per sendmmsg message."""
    cdef int32_t k, r
    while i < e.n_send:
        r = sendmmsg(e.fd, &e.send_msgs[i], e.n_send - i, MSG_DONTWAIT)
        if r > 0:
            for k in range(i, i + r):
                send_account(e, k)
            e.tx_datagrams += r
            e.tx_messages += r
            i += r
            continue
        if errno == EINTR:
            continue
        if errno == EAGAIN or errno == EWOULDBLOCK:
            # The socket buffer is full: what is left of this batch is lost.
            while i < e.n_send:
                e.transports[e.send_t[i]].drops[DROP_SEND_FAILED] += 1
                i += 1
            break
        # A per-destination error (e.g. ECONNREFUSED from an ICMP): skip that datagram only.
        e.transports[e.send_t[i]].drops[DROP_SEND_FAILED] += 1
        i += 1


cdef inline int send_rtp_out(EngineState* e, int32_t t_slot, uint8_t* out, int n, bint padding) noexcept nogil:
    """The tail every RTP packet toward a subscriber shares (media, retransmission, RTX, probe padding), written at
    send_slot(e) with n bytes: the transport-wide sequence (_bwe.pxi; padding is marked so that the loss-based limit
    ignores it), SRTP protect with the tag queued for the next send_flush, then the send queue. Returns the bytes
    queued, or -1 when protect failed (the caller counts the drop where it belongs)."""
    cdef Transport* t = e.transports[t_slot]
    cdef int64_t stamped
    if t.bwe != NULL:
        stamped = t.bwe.next_seq
        bwe_stamp(e, t, out, &n)
        if padding and t.bwe.next_seq != stamped:
            bwe_mark_padding(t.bwe)
    if protect_queued(e.srtp.protect, t.srtp_out, out, &n, e.hmac) != SRTP_ERR_OK:
        return -1
    send_queue(e, t_slot, n)
    return n


cdef int send_rtp(EngineState* e, Consumer* c, const uint8_t* packet, int32_t length, uint8_t pt,
                  uint16_t seq, uint32_t ts, const Vp8Desc* vp8, uint16_t pid, uint8_t tl0) noexcept nogil:
    """Copy one packet for consumer c, rewrite PT/seq/ts/SSRC (and, where vp8 is present, its VP8 PictureID and
    TL0PICIDX to pid and tl0), protect and queue it. 0 = queued."""
    cdef uint8_t* out
    cdef int n = length
    if length + SRTP_MAX_TRAILER > SEND_SLOT_BYTES:
        c.drops[DROP_TOO_BIG] += 1
        return -1
    if c.test_loss != 0 and pipe_test_drop(e, c):
        return 0                              # "sent" and lost: its NACK metadata is kept, so it can be repaired
    out = send_slot(e)
    memcpy(out, packet, length)
    rtp_set_header(out, pt, seq, ts, c.out_ssrc)
    if vp8 != NULL and vp8.present:
        vp8_write(out, vp8, pid, tl0)
    if c.pd_on:
        playout_stamp(e, c, out, &n)
    if send_rtp_out(e, c.transport, out, n, 0) < 0:
        c.drops[DROP_SRTP_PROTECT] += 1
        return -1
    return 0


cdef int send_rtcp(EngineState* e, int32_t t_slot, int32_t length) noexcept nogil:
    """Protect the RTCP compound written at send_slot(e) and queue it toward t_slot."""
    cdef Transport* t = e.transports[t_slot]
    cdef int n = length
    if e.srtp.protect_rtcp(t.srtp_out, send_slot(e), &n) != SRTP_ERR_OK:
        t.drops[DROP_SRTP_PROTECT] += 1
        return -1
    send_queue(e, t_slot, n)
    t.rtcp_tx += 1
    return 0
