# RTP ingress and fan-out (included by engine.pyx): unprotect, route by SSRC (MID/RID on a miss), validate
# and unwrap the sequence number, renumber extensions, store, then one rewritten copy per consumer, made when the
# run of consecutive packets of one producer layer in the receive batch ends (fanout_flush).
# docs/FORWARDING.md, Routing to Key frames; RFC 3550 A.1/A.8, RFC 4588 (RTX), RFC 8285, RFC 8852 (RID).


cdef inline uint64_t ssrc_key(int32_t t_slot, uint32_t ssrc) noexcept nogil:
    return (<uint64_t>t_slot << 32) | ssrc


cdef inline void push_event(EngineState* e, int32_t code, int32_t a, int32_t b, int64_t c) noexcept nogil:
    cdef Event* ev
    if e.ev_tail - e.ev_head >= EVENT_RING:
        e.ev_dropped += 1
        return
    ev = &e.events[e.ev_tail & (EVENT_RING - 1)]
    ev.code = code
    ev.a = a
    ev.b = b
    ev.c = c
    e.ev_tail += 1


cdef void stream_reset(RecvStream* s) noexcept nogil:
    """Forget the sequence/report state of an encoding whose SSRC changed."""
    s.seq_started = 0
    s.bad_seq = -1
    s.received = 0
    s.expected_prior = 0
    s.received_prior = 0
    s.have_transit = 0
    s.jitter_q4 = 0
    s.have_sr = 0
    store_clear(&s.store)
    if s.nack != NULL:
        nack_reset(s.nack)


cdef int32_t learn_ssrc(EngineState* e, int32_t t_slot, Transport* t, uint8_t* buf,
                        const RtpHeader* h) noexcept nogil:
    """Route an unknown SSRC by MID, then RID/RRID or the lone encoding (mediasoup Producer::GetRtpStream).
    Returns the new rx_ssrc value, or -1."""
    cdef ExtFound found
    cdef Producer* p = NULL
    cdef Producer* q
    cdef RecvStream* s
    cdef int32_t i, p_slot = -1, layer = -1, rid_off, rid_len, value
    cdef bint is_rtx
    if t.ids.mid == 0 or rtp_ext_walk(buf, h, &t.ids, &found, NULL) != RTP_OK or found.mid_off < 0:
        return -1
    for i in range(t.producers.n):
        q = e.producers[t.producers.items[i]]
        if q.mid_len == found.mid_len and memcmp(q.mid, buf + found.mid_off, found.mid_len) == 0:
            p = q
            p_slot = t.producers.items[i]
            break
    if p == NULL:
        return -1
    is_rtx = p.rtx_apt[h.pt] >= 0
    if not is_rtx and not p.media_pt[h.pt]:
        return -1
    rid_off = found.rid_off
    rid_len = found.rid_len
    if is_rtx and found.rrid_off >= 0:
        rid_off = found.rrid_off
        rid_len = found.rrid_len
    if rid_off >= 0:
        for i in range(p.n_enc):
            if p.enc[i].rid_len == rid_len and memcmp(p.enc[i].rid, buf + rid_off, rid_len) == 0:
                layer = i
                break
    elif p.n_enc == 1:
        layer = 0
    if layer < 0:
        return -1
    s = &p.enc[layer]
    value = route_pack(p_slot, layer, is_rtx)
    if is_rtx:
        if s.ssrc == 0:
            return -1                         # RTX before its media stream: nothing to repair yet
        if s.rtx_ssrc != 0:
            ht_del(&e.rx_ssrc, ssrc_key(t_slot, s.rtx_ssrc))
        s.rtx_ssrc = h.ssrc
    else:
        if s.ssrc != 0:
            ht_del(&e.rx_ssrc, ssrc_key(t_slot, s.ssrc))
        s.ssrc = h.ssrc
        stream_reset(s)
        push_event(e, EV_NEW_STREAM, p.handle, layer, h.ssrc)
    if not ht_put_reserved(&e.rx_ssrc, ssrc_key(t_slot, h.ssrc), value):
        return -1
    return value


cdef int64_t stream_update_seq(EngineState* e, Producer* p, int32_t layer, RecvStream* s,
                               uint16_t seq) noexcept nogil:
    """RFC 3550 A.1 validation on 64-bit ext seqs. Returns the ext seq, or -1 to drop (bad jump)."""
    cdef uint16_t udelta
    cdef int64_t ext
    cdef int32_t i
    cdef Consumer* c
    if not s.seq_started:
        s.seq_started = 1
        s.max_ext_seq = seq + 0x10000           # one cycle of headroom keeps early reordering positive
        s.base_ext_seq = s.max_ext_seq
        s.bad_seq = -1
        return s.max_ext_seq
    udelta = <uint16_t>(seq - <uint16_t>s.max_ext_seq)
    if udelta < MAX_DROPOUT:
        ext = s.max_ext_seq + udelta
        s.max_ext_seq = ext
        return ext
    if udelta <= 0x10000 - MAX_MISORDER:
        if s.bad_seq != seq:
            s.bad_seq = (seq + 1) & 0xFFFF
            return -1
        # Two sequential packets after a big jump: the source restarted. Re-sync everything downstream, after
        # the packets before the jump have gone out.
        fanout_flush(e)
        ext = s.max_ext_seq + udelta
        s.max_ext_seq = ext
        s.base_ext_seq = ext
        s.received = 0
        s.expected_prior = 0
        s.received_prior = 0
        s.bad_seq = -1
        store_clear(&s.store)
        if s.nack != NULL:
            nack_reset(s.nack)
        for i in range(p.consumers.n):
            c = e.consumers[p.consumers.items[i]]
            if c.current == layer:
                seq_rw_sync(c.seq)
                vp8_munger_sync(&c.vp8)
        s.kf_pending = 1
        push_event(e, EV_STREAM_RESTARTED, p.handle, layer, s.ssrc)
        return ext
    # Reordered (or duplicated) packet from before the highest one.
    return s.max_ext_seq - (0x10000 - udelta)


cdef inline void stream_jitter(RecvStream* s, uint32_t clock_rate, int64_t now_ms, uint32_t ts) noexcept nogil:
    # RFC 3550 A.8 with the jitter kept scaled by 16.
    cdef uint32_t arrival = <uint32_t>(now_ms * clock_rate // 1000)
    cdef uint32_t transit = arrival - ts
    cdef int32_t d
    if s.have_transit:
        d = <int32_t>(transit - s.transit)
        if d < 0:
            d = -d
        s.jitter_q4 += <uint32_t>d - ((s.jitter_q4 + 8) >> 4)
    s.transit = transit
    s.have_transit = 1


cdef inline void prefetch_struct(Consumer* c) noexcept nogil:
    __builtin_prefetch(c)
    __builtin_prefetch((<uint8_t*>c) + 64)


cdef inline void prefetch_state(EngineState* e, Consumer* c, int64_t ext) noexcept nogil:
    # c's own lines were requested one consumer earlier: follow its pointers now.
    __builtin_prefetch(e.transports[c.transport])
    __builtin_prefetch(c.seq)
    __builtin_prefetch(&c.seq.ring[ext & SEQ_RING_MASK])


cdef inline void prefetch_crypto(EngineState* e, Consumer* c) noexcept nogil:
    # c's transport line was requested one consumer earlier: its libsrtp session and the cipher/HMAC states.
    cdef Transport* t = e.transports[c.transport]
    __builtin_prefetch(t.srtp_out)
    prefetch_session(&t.out_hot)


cdef void consumer_switch(EngineState* e, Producer* p, Consumer* c, int32_t layer, uint32_t in_ts) noexcept nogil:
    """Start forwarding `layer` to c at this key frame: sequence continues at last+1, ts re-based."""
    cdef RecvStream* old
    cdef RecvStream* new = &p.enc[layer]
    cdef double t_old, t_new
    cdef int64_t delta = 0
    cdef uint8_t have_delta = 0
    if c.current >= 0:
        seq_rw_sync(c.seq)
        vp8_munger_sync(&c.vp8)               # PictureID and TL0PICIDX continue too (vp8.pxd)
        old = &p.enc[c.current]
        if old.have_sr and new.have_sr and p.clock_rate > 0:
            # Capture times from each layer's last SR (NTP in seconds), docs/FORWARDING.md, Timestamps.
            t_old = (old.sr_ntp_sec + old.sr_ntp_frac / 4294967296.0
                     + <int32_t>(c.ts.max_out_in - old.sr_rtp) / <double>p.clock_rate)
            t_new = (new.sr_ntp_sec + new.sr_ntp_frac / 4294967296.0
                     + <int32_t>(in_ts - new.sr_rtp) / <double>p.clock_rate)
            delta = <int64_t>((t_new - t_old) * p.clock_rate)
            have_delta = 1
        ts_rw_switch(&c.ts, in_ts, p.clock_rate // 30 if p.clock_rate >= 30 else 1, have_delta, delta)
    c.current = layer
    c.wait_keyframe = 0
    c.drain = 0
    c.layer_switches += 1
    push_event(e, EV_LAYER_SWITCHED, c.handle, layer, 0)


cdef bint consumer_draining(EngineState* e, Consumer* c) noexcept nogil:
    """True while a congestion downswitch holds back c's current layer (Engine.lower_consumer_layer): until the
    target layer's key frame switches it, for at most DRAIN_MAX_MS, and only while the target is still lower."""
    if 0 <= c.target < c.current and e.now_ms < c.drain_until_ms:
        return True
    c.drain = 0
    return False


cdef void forward_to(EngineState* e, Producer* p, int32_t layer, Consumer* c, const uint8_t* buf,
                     int32_t length, const RtpHeader* h, int64_t ext, int key, const Vp8Desc* vp8) noexcept nogil:
    cdef Transport* t = e.transports[c.transport]
    cdef int16_t out_pt
    cdef int64_t out_ext = 0
    cdef uint32_t out_ts
    cdef uint16_t pid = 0
    cdef uint8_t tl0 = 0
    cdef SeqResult r
    cdef MetaSlot* m
    if c.paused:
        c.drops[DROP_PAUSED] += 1
        return
    if not t.bound or t.srtp_out == NULL:
        c.drops[DROP_NO_ROUTE] += 1
        return
    if c.current != layer:
        # Only the target layer may replace the current one, and only at a key frame (or when the
        # codec has no key-frame detection, key == -1).
        if layer != c.target:
            c.drops[DROP_LAYER_FILTERED] += 1
            return
        if key == 0:
            c.drops[DROP_WAIT_KEYFRAME if c.current < 0 else DROP_LAYER_FILTERED] += 1
            return
        consumer_switch(e, p, c, layer, h.ts)
    elif c.drain and consumer_draining(e, c):
        c.drops[DROP_LAYER_FILTERED] += 1
        return
    elif c.wait_keyframe:
        if key == 0:
            c.drops[DROP_WAIT_KEYFRAME] += 1
            return
        c.wait_keyframe = 0
    if h.pt == c.last_pt_in:
        out_pt = c.last_pt_out
    else:
        out_pt = c.pt_map[h.pt]
        c.last_pt_in = h.pt
        c.last_pt_out = out_pt
    if out_pt < 0:
        c.drops[DROP_UNSUPPORTED_PT] += 1
        return
    if vp8.present and vp8_filter(&c.vp8, vp8, key):
        # Above the consumer's temporal layer: the receiver sees neither a sequence gap nor a PictureID gap.
        seq_rw_drop(c.seq, ext)
        c.drops[DROP_TEMPORAL_FILTERED] += 1
        return
    r = seq_rw_input(c.seq, ext, &out_ext)
    if r != SEQ_FORWARD:
        c.drops[DROP_DUPLICATE if r == SEQ_DUPLICATE else DROP_SEQ_TOO_OLD] += 1
        return
    out_ts = ts_rw_input(&c.ts, h.ts, e.now_ms)
    if vp8.present:
        vp8_munge(&c.vp8, vp8, &pid, &tl0)
    if send_rtp(e, c, buf, length, <uint8_t>out_pt, <uint16_t>out_ext, out_ts, vp8, pid, tl0) != 0:
        return
    m = &c.meta[out_ext & (META_RING - 1)]
    m.vp8 = vp8.present
    m.vp8_pid = pid
    m.vp8_tl0 = tl0
    m.src_lo = <uint32_t>ext
    m.out16 = <uint16_t>out_ext
    m.out_ts = out_ts
    m.layer = <uint8_t>layer
    m.valid = 1
    m.sent_ms = <uint32_t>e.now_ms
    m.resends = 0
    if out_ext == c.seq.max_out:
        c.frame_end = h.marker                # the newest packet: padding may follow it only at a frame's end
    c.packets += 1
    c.bytes += length


cdef int srtp_recover_gap(EngineState* e, Transport* t, Producer* p, int32_t value, uint8_t* buf,
                          int32_t n) noexcept nogil:
    """Resynchronise libsrtp after a forward jump of more than 2^15 packets; the new length or -1.

    NOTE: libsrtp then guesses the rollover counter one too low and rejects every packet as replay_old
    before touching the buffer (docs/FORWARDING.md, SRTP). The true index is the first one above our last
    authenticated index + 2^15 with this packet's seq; srtp_set_stream_roc pins that ROC for the next
    unprotect (libsrtp's "packet index advanced" path), trying up to 4 ROCs for even longer stalls.
    Without srtp_set_stream_roc, the stream is removed so the ssrc_any_inbound template re-creates it
    (this only recovers senders still at ROC 0)."""
    cdef uint32_t ssrc = rd32(buf + 8)
    cdef uint32_t roc = 0
    cdef uint16_t seq = rd16(buf + 2)
    cdef RecvStream* s = &p.enc[route_layer(value)]
    cdef int64_t local, candidate
    cdef int length, k
    # A failed AEAD attempt may have decrypted the buffer in place: every attempt starts from a copy.
    cdef uint8_t original[RECV_SLOT_BYTES]
    memcpy(original, buf, n)
    if not route_is_rtx(value) and s.seq_started and e.srtp.set_stream_roc != NULL and e.srtp.get_stream_roc != NULL:
        if e.srtp.get_stream_roc(t.srtp_in, ssrc, &roc) == SRTP_ERR_OK:
            local = (<int64_t>roc << 16) | (<uint16_t>s.max_ext_seq)
            candidate = (local & ~(<int64_t>0xFFFF)) | seq
            while candidate <= local + 0x8000:
                candidate += 0x10000
            for k in range(4):
                e.srtp.set_stream_roc(t.srtp_in, ssrc, <uint32_t>((candidate >> 16) + k))
                memcpy(buf, original, n)
                length = n
                if e.srtp.unprotect(t.srtp_in, buf, &length) == SRTP_ERR_OK:
                    return length
            e.srtp.set_stream_roc(t.srtp_in, ssrc, 0)
            return -1
    e.srtp.remove_stream(t.srtp_in, htonl(ssrc))
    memcpy(buf, original, n)
    length = n
    if e.srtp.unprotect(t.srtp_in, buf, &length) == SRTP_ERR_OK:
        return length
    return -1


cdef inline int rtp_unprotect(EngineState* e, int32_t t_slot, Transport* t, uint8_t* buf, int32_t n,
                              uint32_t ssrc) noexcept nogil:
    """Unprotect in place: the plaintext length, or -1 (dropped). A stream that keeps failing as replay_old (a
    forward jump libsrtp misreads) is resynchronised after SRTP_RESET_AFTER packets (srtp_recover_gap)."""
    cdef int length = n
    cdef int rc
    cdef int32_t value
    rc = e.srtp.unprotect(t.srtp_in, buf, &length)
    if rc != SRTP_ERR_OK:
        t.drops[DROP_SRTP_UNPROTECT] += 1
        if rc != SRTP_ERR_REPLAY_OLD:
            return -1
        value = ht_get(&e.rx_ssrc, ssrc_key(t_slot, ssrc))
        if value < 0:
            return -1
        if t.fail_ssrc != ssrc:
            t.fail_ssrc = ssrc
            t.fail_count = 0
        t.fail_count += 1
        if t.fail_count < SRTP_RESET_AFTER:
            return -1
        t.fail_count = 0
        length = srtp_recover_gap(e, t, e.producers[route_slot(value)], value, buf, n)
        if length < 0:
            return -1
        t.srtp_resets += 1
        t.drops[DROP_SRTP_UNPROTECT] -= 1
        push_event(e, EV_SRTP_STREAM_RESET, t.handle, 0, ssrc)
    elif t.fail_ssrc == ssrc:
        t.fail_count = 0
    return length


cdef inline bint rtp_header_in(EngineState* e, int32_t t_slot, Transport* t, uint8_t* buf, int length,
                               RtpHeader* h, uint32_t ssrc) noexcept nogil:
    """Parse the fixed header into h (False: dropped) and record the transport-wide seq for TWCC feedback."""
    cdef int rc = rtp_parse(buf, length, h)
    cdef int32_t twcc_off, twcc_len = 0
    if rc != RTP_OK:
        t.drops[DROP_TOO_SHORT if rc == RTP_TOO_SHORT else
                (DROP_BAD_VERSION if rc == RTP_BAD_VERSION else DROP_BAD_HEADER)] += 1
        return False
    t.rtp_rx += 1
    if t.ids.twcc != 0:
        # Every authenticated packet with a transport-wide seq counts for the publisher's estimate, also
        # the ones the later stages drop (padding and RTX probes, unknown SSRCs).
        twcc_off = rtp_ext_find(buf, h, t.ids.twcc, &twcc_len)
        if twcc_off >= 0 and twcc_len >= 2 and \
                twcc_record(t.twcc, rd16(buf + twcc_off), rx_arrival_us(e), ssrc) >= TWCC_FLUSH_PENDING:
            send_twcc(e, t_slot, t)
    return True


cdef inline int32_t rtp_route(EngineState* e, int32_t t_slot, Transport* t, uint8_t* buf, const RtpHeader* h,
                              uint32_t ssrc) noexcept nogil:
    """The route value of the packet's SSRC (learnt by MID/RID on a miss), or -1 (dropped)."""
    cdef int32_t value = ht_get(&e.rx_ssrc, ssrc_key(t_slot, ssrc))
    if value >= 0:
        return value
    fanout_flush(e)                           # a new stream may replace the run's
    value = learn_ssrc(e, t_slot, t, buf, h)
    if value < 0:
        t.drops[DROP_UNKNOWN_SSRC] += 1
        # An authenticated but unroutable SSRC: free the libsrtp stream it just created (MS #437).
        e.srtp.remove_stream(t.srtp_in, htonl(ssrc))
    return value


cdef inline uint8_t* rtp_media(Producer* p, RecvStream* s, bint rtx, uint8_t* buf, int* length,
                               RtpHeader* h) noexcept nogil:
    """Check the payload type and turn an RTX packet into the media packet it carries: where the packet now starts
    (length and h follow), or NULL (dropped)."""
    cdef int16_t apt
    if not rtx:
        if not p.media_pt[h.pt]:
            s.drops[DROP_UNSUPPORTED_PT] += 1
            return NULL
        return buf
    apt = p.rtx_apt[h.pt]
    if apt < 0:
        s.drops[DROP_UNSUPPORTED_PT] += 1
        return NULL
    if h.payload_len < 2:
        s.drops[DROP_RTX_EMPTY] += 1
        return NULL
    # RFC 4588: restore OSN, media SSRC and PT; slide the header over the 2-byte OSN.
    h.seq = rd16(buf + h.header_len)
    memmove(buf + 2, buf, h.header_len)
    buf += 2
    length[0] -= 2
    h.payload_len -= 2
    h.pt = <uint8_t>apt
    h.ssrc = s.ssrc
    rtp_set_header(buf, h.pt, h.seq, h.ts, h.ssrc)
    s.rtx_packets += 1
    return buf


cdef inline bint rtp_extensions_in(Transport* t, Producer* p, RecvStream* s, uint8_t* buf,
                                   const RtpHeader* h) noexcept nogil:
    """Renumber the header extensions to the subscribers' ids and read the audio level (False: dropped)."""
    cdef ExtFound found
    if rtp_ext_walk(buf, h, &t.ids, &found, t.id_map if t.has_id_map else NULL) != RTP_OK:
        s.drops[DROP_BAD_HEADER] += 1
        return False
    if found.audio_level >= 0:
        p.audio_level_sum += found.audio_level & 0x7F
        p.audio_level_count += 1
    return True


cdef inline int64_t stream_sequence(EngineState* e, Producer* p, int32_t layer, RecvStream* s,
                                    uint16_t seq) noexcept nogil:
    """The packet's extended seq, or -1 (dropped: a bad jump or a duplicate). Feeds NACK generation, which asks
    for a key frame when the losses are too many to repair."""
    cdef int64_t ext = stream_update_seq(e, p, layer, s, seq)
    if ext < 0:
        s.drops[DROP_BAD_SEQ] += 1
        return -1
    if s.nack != NULL and nack_received(s.nack, ext, e.now_ms):
        request_keyframe(e, p, layer)         # too many losses to repair
    if store_has(&s.store, ext):
        s.drops[DROP_DUPLICATE] += 1
        return -1
    return ext


cdef inline void stream_padding(EngineState* e, Producer* p, int32_t layer, RecvStream* s,
                                int64_t ext) noexcept nogil:
    """Drop a padding-only packet (probing), never forwarded: consumers close the hole it would leave (after the
    run's earlier packets are theirs)."""
    cdef int32_t i
    s.drops[DROP_PADDING_ONLY] += 1
    fanout_flush(e)
    for i in range(p.consumers.n):
        if e.consumers[p.consumers.items[i]].current == layer:
            seq_rw_drop(e.consumers[p.consumers.items[i]].seq, ext)


cdef inline int stream_store(EngineState* e, Producer* p, RecvStream* s, bint rtx, uint8_t* buf, int length,
                             const RtpHeader* h, int64_t ext) noexcept nogil:
    """Detect a key frame, keep the packet for retransmission and count it (receiver-report state only for
    media, not RTX). Returns the key-frame flag forward_to needs: 1, 0, or -1 (no detection: audio, unknown
    codec)."""
    cdef int key = -1
    if p.kind == 1:
        key = keyframe_detect(p.codec[h.pt], buf + h.header_len, h.payload_len)
        if key == 1:
            s.keyframes += 1
            s.kf_pending = 0
            if s.nack != NULL:
                nack_key_frame(s.nack, ext)
    store_put(&s.store, ext, buf, length, STORE_KEY if key == 1 else 0)
    s.packets += 1
    s.bytes += length
    if not rtx:
        s.received += 1
        if ext == s.max_ext_seq:
            stream_jitter(s, p.clock_rate, e.now_ms, h.ts)
    return key


cdef void handle_rtp(EngineState* e, int32_t t_slot, Transport* t, uint8_t* buf, int32_t n) noexcept nogil:
    """One RTP datagram from t, in its stages: unprotect, parse, route, media payload (RTX unwrapped), extensions,
    sequence, store, then onto the fan-out run. Each stage that drops a packet counts it and returns a failure."""
    cdef RtpHeader h
    cdef uint32_t ssrc = rd32(buf + 8)
    cdef int length
    cdef int32_t value, p_slot, layer
    cdef bint rtx
    cdef Producer* p
    cdef RecvStream* s
    cdef int64_t ext
    cdef int key
    length = rtp_unprotect(e, t_slot, t, buf, n, ssrc)
    if length < 0 or not rtp_header_in(e, t_slot, t, buf, length, &h, ssrc):
        return
    value = rtp_route(e, t_slot, t, buf, &h, ssrc)
    if value < 0:
        return
    p_slot = route_slot(value)
    layer = route_layer(value)
    rtx = route_is_rtx(value)
    p = e.producers[p_slot]
    s = &p.enc[layer]
    if e.n_run > 0 and (e.run_p != p_slot or e.run_layer != layer):
        fanout_flush(e)                       # the run holds one producer layer
    buf = rtp_media(p, s, rtx, buf, &length, &h)
    if buf == NULL or not rtp_extensions_in(t, p, s, buf, &h):
        return
    ext = stream_sequence(e, p, layer, s, h.seq)
    if ext < 0:
        return
    s.last_packet_ms = e.now_ms
    if h.payload_len == 0:
        stream_padding(e, p, layer, s, ext)
        return
    key = stream_store(e, p, s, rtx, buf, length, &h, ext)
    fanout_queue(e, p_slot, layer, buf, length, &h, ext, key, p.codec[h.pt] == CODEC_VP8)


cdef inline void fanout_queue(EngineState* e, int32_t p_slot, int32_t layer, uint8_t* buf, int32_t length,
                              const RtpHeader* h, int64_t ext, int key, bint vp8) noexcept nogil:
    """Add a packet to the fan-out run (handle_rtp has flushed a run of another producer or layer); a VP8 payload's
    descriptor is parsed here, once for every consumer."""
    cdef PendingRtp* r = &e.run[e.n_run]
    cdef RecvStream* s
    if e.n_run == 0:
        e.run_p = p_slot
        e.run_layer = layer
    r.buf = buf
    r.length = length
    r.h = h[0]
    r.ext = ext
    r.key = key
    if vp8:
        vp8_parse(buf, h.header_len, h.payload_len, &r.vp8)
        if r.vp8.present and 0 <= r.vp8.tid < 4:
            s = &e.producers[p_slot].enc[layer]
            s.tid_bytes[r.vp8.tid] += length
            s.tid_pictures[r.vp8.tid] += r.vp8.start
    else:
        vp8_desc_none(&r.vp8)
    e.n_run += 1


cdef void fanout_flush(EngineState* e) noexcept nogil:
    """Forward the run: every consumer gets its copies of the run's packets in order, one consumer after another.

    Between two runs nothing else touches consumer state, so each consumer sees the same packets in the same order
    as with one fan-out per packet; what changes is that its copies queue back to back (the send arena groups them
    into one UDP GSO message) and its state is fetched once per run. The loop is bound by cache misses on
    per-consumer state: while one consumer's copies are protected and queued, the next one's SRTP states are on
    their way, the transport and sequence slot of the one after, and the struct of the third (each stage reads
    pointers from lines the previous stage requested)."""
    cdef int32_t n = e.n_run
    cdef int32_t i, j, n_consumers
    cdef int32_t* items
    cdef Producer* p
    cdef Consumer* c
    cdef PendingRtp* r
    cdef int64_t ext
    if n == 0:
        return
    e.n_run = 0
    p = e.producers[e.run_p]
    ext = e.run[0].ext
    n_consumers = p.consumers.n
    items = p.consumers.items
    for i in range(min(n_consumers, 3)):
        prefetch_struct(e.consumers[items[i]])
    for i in range(min(n_consumers, 2)):
        prefetch_state(e, e.consumers[items[i]], ext)
    if n_consumers > 0:
        prefetch_crypto(e, e.consumers[items[0]])
    for i in range(n_consumers):
        if i + 3 < n_consumers:
            prefetch_struct(e.consumers[items[i + 3]])
        if i + 2 < n_consumers:
            prefetch_state(e, e.consumers[items[i + 2]], ext)
        if i + 1 < n_consumers:
            prefetch_crypto(e, e.consumers[items[i + 1]])
        c = e.consumers[items[i]]
        for j in range(n):
            r = &e.run[j]
            forward_to(e, p, e.run_layer, c, r.buf, r.length, &r.h, r.ext, r.key, &r.vp8)
