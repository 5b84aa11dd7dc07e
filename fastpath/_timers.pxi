# The Engine's next timer (included by engine.pyx): when engine_tick (_reports.pxi) next has work, so that the
# worker's tick can sleep until then instead of waking every 20 ms (docs/FORWARDING.md, Timers). No Python objects.

cdef int64_t engine_next_due(EngineState* e, int64_t now_ms) noexcept nogil:
    """The earliest time (the tick's clock, ms) at which engine_tick has something to do, at most NEXT_DUE_MAX_MS
    ahead: each transport's next RR and SR (REPORT_INTERVAL_MS after the last), its TWCC feedback while arrivals
    wait (TWCC_INTERVAL_MS after the last), its send-rate window (BWE_RATE_WINDOW_MS) and the timeout of an open
    probe cluster. Timers that run on every tick (a probe's padding, NACK retries, key-frame request retries, a
    consumer waiting for a key frame or a layer, simulcast re-targeting) make it now + TICK_FINE_MS, today's tick.
    The same conditions as engine_tick, read without acting; O(transports + consumers + producers)."""
    cdef int32_t i, j
    cdef Transport* t
    cdef Consumer* c
    cdef Producer* p
    cdef int64_t due = now_ms + NEXT_DUE_MAX_MS
    cdef int64_t soon = now_ms + TICK_FINE_MS
    for i in range(e.cap_transports):
        t = e.transports[i]
        if t == NULL or not t.bound or t.srtp_out == NULL:
            continue
        if t.probe_until_ms != 0:
            return soon
        if t.producers.n > 0 and t.last_rr_ms + REPORT_INTERVAL_MS < due:
            due = t.last_rr_ms + REPORT_INTERVAL_MS
        if t.consumers.n > 0 and t.last_sr_ms + REPORT_INTERVAL_MS < due:
            due = t.last_sr_ms + REPORT_INTERVAL_MS
        if t.twcc != NULL and twcc_pending(t.twcc) > 0 and t.twcc.last_feedback_ms + TWCC_INTERVAL_MS < due:
            due = t.twcc.last_feedback_ms + TWCC_INTERVAL_MS
        if t.bwe != NULL and t.bwe.history != NULL and t.bwe.pr_start_us >= 0:
            if (t.bwe.pr_end_us + BWE_PROBE_TIMEOUT_US + e.epoch_us) // 1000 + 1 < due:
                due = (t.bwe.pr_end_us + BWE_PROBE_TIMEOUT_US + e.epoch_us) // 1000 + 1
        if t.rate_ms == 0:
            due = now_ms
        elif t.rate_ms + BWE_RATE_WINDOW_MS < due:
            due = t.rate_ms + BWE_RATE_WINDOW_MS
    for i in range(e.cap_consumers):
        c = e.consumers[i]
        if c == NULL or c.producer < 0 or c.paused:
            continue
        p = e.producers[c.producer]
        if c.current != c.target or c.wait_keyframe:
            return soon
        if p.n_enc == 1:
            if c.target != 0:
                return soon
        elif not c.pinned or c.target != c.preferred:
            return soon                       # simulcast: a layer may start or stop between two ticks
    for i in range(e.cap_producers):
        p = e.producers[i]
        if p == NULL:
            continue
        for j in range(p.n_enc):
            if p.enc[j].kf_pending or (p.enc[j].nack != NULL and p.enc[j].nack.n > 0):
                return soon
    return due
