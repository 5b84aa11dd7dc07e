# Send-side bandwidth estimation toward one subscriber transport (docs/FORWARDING.md, Transport-wide congestion
# control): the transport-wide sequence element written into every RTP packet sent to it
# (draft-holmer-rmcat-transport-wide-cc-extensions-01 section 2, RFC 8285 one-byte or two-byte form), a
# power-of-two history of what was sent (send time, size), the parser of its TWCC feedback (RTCP RTPFB FMT 15,
# section 3.1 of the draft) matched against that history, and the estimator fed by it, after GCC
# (draft-ietf-rmcat-gcc-02) as libwebrtc's goog_cc does it:
# - delay-based: packets grouped by send time (5 ms bursts), the one-way delay variation between groups smoothed
#   and fitted by a trendline over 20 groups, compared with an adaptive threshold (overuse detector), and an AIMD
#   rate controller (x0.85 of the acknowledged rate on overuse, +8 %/s or about one packet per response time
#   near the last known capacity, never above 1.5x the acknowledged rate);
# - loss-based: over a window of BWE_LOSS_WINDOW_PACKETS reported packets (or BWE_LOSS_WINDOW_US with at least
#   BWE_LOSS_MIN_PACKETS, or at least BWE_LOSS_MIN_PACKETS of which BWE_LOSS_HEAVY_PCT % were lost: a rate cap's
#   overflow is acted on at once), more than 10 % lost lowers a loss limit to
#   (1 - loss/2) of the estimate (at most every 300 ms) but not below 80 % of the acknowledged rate, less than 2 %
#   lets it grow back by 8 %/s until it no longer limits, and a probe result above it lifts it (overuse or not);
# - the estimate is the lower of the two (and of the subscriber's REMB, if it sends one); a subscriber that sends
#   only REMB (no TWCC feedback yet) gets its REMB as the estimate. Never below BWE_MIN_BPS.
# All per-feedback work is allocation-free; the per-packet part (bwe_stamp_packet, bwe_record) writes a few bytes
# in place. nogil C only; the caller passes the clock (microseconds, any origin, never going back).
from libc.math cimport pow, sqrt
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from fastpath.mem cimport fp_calloc as calloc, fp_free as free
from libc.string cimport memset

from fastpath.hdrext cimport hdrext_put
from fastpath.rtp cimport rd16, rd32, wr16

cdef enum:
    BWE_HISTORY = 2048                # power of two: sent packets remembered (20k pps at a 100 ms feedback cadence)
    BWE_HISTORY_MASK = BWE_HISTORY - 1
    BWE_FMT_TWCC = 15                 # RTPFB FMT of transport-wide feedback
    BWE_FMT_REMB = 15                 # PSFB FMT of application-layer feedback (REMB: "REMB" after the SSRCs)
    BWE_REMB_ID = 0x52454D42
    BWE_TICK_US = 250                 # feedback delta unit
    BWE_REF_US = 64000                # feedback reference time unit
    BWE_GROUP_US = 5000               # packets sent within 5 ms form one group (libwebrtc's InterArrival)
    BWE_BURST_US = 5000
    BWE_TREND_WINDOW = 20
    BWE_LOSS_MIN_PACKETS = 20
    BWE_LOSS_WINDOW_PACKETS = 100     # a loss window: 5 % random loss reads above 10 % in 1 % of 100-packet windows
                                      # (binomial), in 7.5 % of 20-packet ones (each a decrease that holds)
    BWE_LOSS_WINDOW_US = 2000000      # ... or this long (a low-rate stream), with BWE_LOSS_MIN_PACKETS
    BWE_LOSS_HEAVY_PCT = 40           # ... or this much lost of BWE_LOSS_MIN_PACKETS (a cap's queue overflowing)
    BWE_ACK_WINDOW_US = 500000        # acknowledged rate: bytes received over at least this much arrival time
    BWE_MIN_BPS = 30000
    BWE_START_BPS = 1000000
    BWE_MAX_BPS = 1000000000
    BWE_DECREASE_US = 200000          # delay-based decreases at most this often (about an RTT)
    BWE_LOSS_DECREASE_US = 300000
    BWE_LOSS_ACKED_FLOOR_PCT = 80     # a loss decrease stops at this share of the acknowledged rate
    BWE_DEFAULT_RTT_MS = 100
    BWE_SENT_ACKED = 1                # BweSent.flags: reported received
    BWE_SENT_LOST = 2                 # reported lost (a later report may still say received)
    BWE_SENT_PADDING = 4              # probe padding: counts for the delay-based estimate and the probe cluster,
                                      # not for the loss-based limit (its loss says the probe rate did not fit)
    BWE_PROBE_MIN_PACKETS = 5         # a probe cluster needs this many acknowledged packets for a result
    BWE_PROBE_MIN_TAIL_PACKETS = 4    # ... and its second half this many to measure a saturated link by them
    BWE_PROBE_MIN_SPAN_US = 10000     # ... sent over at least this long: one tick's burst says nothing of a rate
    BWE_STREAM_TIMEOUT_US = 2000000   # arrivals this far apart restart the delay-based detector
    BWE_PROBE_TIMEOUT_US = 1000000    # a cluster without feedback after its end this long is evaluated as it is

cdef enum BweState:                   # the overuse detector's verdict on the last group
    BWE_NORMAL = 0
    BWE_OVERUSING = 1
    BWE_UNDERUSING = 2

cdef enum:                            # the AIMD rate controller's state
    AIMD_HOLD = 0
    AIMD_INCREASE = 1
    AIMD_DECREASE = 2


ctypedef struct BweSent:
    int64_t send_us
    uint16_t size
    uint8_t flags


ctypedef struct Bwe:
    BweSent* history                  # NULL: the peer has no transport-cc (REMB only)
    uint8_t ext_id                    # the peer's id of the transport-wide sequence element
    int64_t next_seq                  # unwrapped: the next transport-wide seq to stamp
    uint64_t stamped
    uint64_t stamp_skipped            # no room (or a malformed header) to write the element
    # feedback
    uint64_t feedback_packets
    uint64_t feedback_bad
    uint64_t acked_packets
    uint64_t lost_packets
    uint64_t unknown_packets          # reported seqs outside the history (never sent, or too old)
    # inter-arrival groups: the open one and the last complete one
    uint8_t g_open
    uint8_t p_valid
    int64_t g_first_send_us
    int64_t g_last_send_us
    int64_t g_last_arrival_us
    int64_t p_last_send_us
    int64_t p_last_arrival_us
    # trendline filter and overuse detector
    double tr_x[BWE_TREND_WINDOW]
    double tr_y[BWE_TREND_WINDOW]
    int32_t tr_n
    int32_t tr_head
    double accumulated_ms
    double smoothed_ms
    double first_arrival_ms           # -1 until the first delta
    int32_t num_deltas
    double trend
    double prev_trend
    double threshold
    double last_threshold_ms          # -1 until the first update
    double time_over_using            # -1 = not over
    int32_t overuse_counter
    uint8_t state                     # BweState
    # acknowledged rate
    int64_t ack_start_us              # -1 = no window open
    uint64_t ack_bytes
    double acked_bps                  # 0 = not measured yet
    # AIMD rate controller (delay-based estimate)
    double delay_bps
    uint8_t aimd
    uint8_t had_overuse
    int64_t aimd_last_us              # -1 = never updated
    int64_t last_decrease_us          # -1 = never
    double cap_kbps                   # link capacity estimate at overuse, -1 = unknown
    double cap_var
    int64_t rtt_ms                    # 0 = unknown (BWE_DEFAULT_RTT_MS)
    # loss-based limit
    uint32_t loss_lost
    uint32_t loss_total
    double loss                       # fraction lost in the last evaluated window
    double loss_bps                   # 0 = no loss limit
    int64_t loss_last_us              # -1 = never evaluated
    int64_t loss_window_us            # when the open loss window began, -1 = none yet
    int64_t loss_last_decrease_us     # -1 = never
    # REMB (PSFB FMT 15)
    double remb_bps                   # 0 = none received
    uint64_t remb_packets
    # the estimate
    double estimate_bps
    double reported_bps               # the last estimate reported to control (an EV_BWE_CHANGED), 0 = none
    # probe cluster (libwebrtc's ProbeBitrateEstimator): every packet sent in [pr_start_us, pr_end_us], media
    # and padding, measured on both ends once the feedback has covered the window
    int64_t pr_start_us               # -1 = no cluster open
    int64_t pr_end_us
    int64_t pr_first_send_us
    int64_t pr_last_send_us
    int64_t pr_first_arrival_us
    int64_t pr_last_arrival_us
    uint64_t pr_bytes
    int32_t pr_packets
    int32_t pr_lost
    # ... and of them, those sent in the second half of the window: once the probe filled the bottleneck's queue
    # they arrive at the bottleneck's rate, whatever burst a token bucket let through at the start
    int64_t pr_tail_first_arrival_us
    int64_t pr_tail_last_arrival_us
    uint64_t pr_tail_bytes            # bytes after the tail's first arrival (its first packet's bytes excluded)
    int32_t pr_tail_first_size
    int32_t pr_tail_packets
    uint8_t pr_done                   # a packet sent after the window was reported: the window is covered
    int64_t pr_closed_us              # the end of the last evaluated cluster's window
    double pr_arrival_bps             # the rate that cluster arrived at (0 = not measured): an overuse within
                                      # BWE_PROBE_TIMEOUT_US after it decreases from it, not from the average
    double probe_bps                  # the last cluster's result (0 = none yet)
    uint64_t probe_results            # clusters evaluated
    uint64_t probe_raises             # ... that raised the estimate
    uint64_t detector_restarts        # the delay-based detector forgot its history after a pause in arrivals


cdef inline int bwe_init(Bwe* b, uint8_t ext_id) noexcept nogil:
    """Reset b; with ext_id != 0 allocate the send history (-1: out of memory). b must be zeroed or bwe_freed."""
    cdef BweSent* history = NULL
    if ext_id != 0:
        history = <BweSent*>calloc(BWE_HISTORY, sizeof(BweSent))
        if history == NULL:
            return -1
    memset(b, 0, sizeof(Bwe))
    b.history = history
    b.ext_id = ext_id
    b.first_arrival_ms = -1
    b.threshold = 12.5
    b.last_threshold_ms = -1
    b.time_over_using = -1
    b.ack_start_us = -1
    b.delay_bps = BWE_START_BPS
    b.aimd = AIMD_INCREASE
    b.aimd_last_us = -1
    b.last_decrease_us = -1
    b.cap_kbps = -1
    b.cap_var = 0.4
    b.loss_last_us = -1
    b.loss_window_us = -1
    b.loss_last_decrease_us = -1
    b.estimate_bps = BWE_START_BPS
    b.pr_start_us = -1
    b.pr_closed_us = -BWE_PROBE_TIMEOUT_US - 1
    return 0


cdef inline void bwe_free(Bwe* b) noexcept nogil:
    free(b.history)
    b.history = NULL


# ---- per packet: the element and the history ---------------------------------------------------------------

cdef inline int bwe_stamp_packet(uint8_t* pkt, int32_t* length, int32_t room, uint8_t ext_id,
                                 uint16_t seq) noexcept nogil:
    """Write seq as the transport-wide sequence element (id ext_id) of the RTP packet pkt[:length[0]] in place
    (fastpath/hdrext.pxd: an element with id ext_id or one blanked on ingress is reused, else one is added); room is
    how many bytes the buffer can grow by. Returns 1 when stamped, 0 when the header is malformed or there is no
    room."""
    cdef uint8_t data[2]
    wr16(data, seq)
    return hdrext_put(pkt, length, room, ext_id, data, 2)


cdef inline void bwe_mark_padding(Bwe* b) noexcept nogil:
    """The packet just recorded is probe padding (BWE_SENT_PADDING)."""
    b.history[(b.next_seq - 1) & BWE_HISTORY_MASK].flags = BWE_SENT_PADDING


cdef inline void bwe_record(Bwe* b, int64_t send_us, int32_t size) noexcept nogil:
    """Remember the packet just stamped with <uint16_t>b.next_seq and advance the sequence."""
    cdef BweSent* s = &b.history[b.next_seq & BWE_HISTORY_MASK]
    s.send_us = send_us
    s.size = <uint16_t>size
    s.flags = 0
    b.next_seq += 1
    b.stamped += 1


# ---- the delay-based estimate --------------------------------------------------------------------------------

cdef inline void _bwe_threshold(Bwe* b, double modified_trend, double now_ms) noexcept nogil:
    """The overuse threshold adapts to the trend (k_up 0.0087, k_down 0.039 per ms, clamped to 6..600)."""
    cdef double mt = modified_trend if modified_trend >= 0 else -modified_trend
    cdef double dt, k
    if b.last_threshold_ms < 0:
        b.last_threshold_ms = now_ms
    if mt > b.threshold + 15.0:
        b.last_threshold_ms = now_ms       # a spike (e.g. a route change) must not lift the threshold
        return
    k = 0.039 if mt < b.threshold else 0.0087
    dt = now_ms - b.last_threshold_ms
    if dt > 100.0:
        dt = 100.0
    elif dt < 0:
        dt = 0
    b.threshold += k * (mt - b.threshold) * dt
    if b.threshold < 6.0:
        b.threshold = 6.0
    elif b.threshold > 600.0:
        b.threshold = 600.0
    b.last_threshold_ms = now_ms


cdef inline void _bwe_detect(Bwe* b, double trend, double send_delta_ms, double now_ms) noexcept nogil:
    cdef double modified
    cdef int32_t n = b.num_deltas if b.num_deltas < 60 else 60
    if b.num_deltas < 2:
        b.state = BWE_NORMAL
        return
    modified = n * trend * 4.0
    if modified > b.threshold:
        if b.time_over_using < 0:
            b.time_over_using = send_delta_ms / 2
        else:
            b.time_over_using += send_delta_ms
        b.overuse_counter += 1
        if b.time_over_using > 10.0 and b.overuse_counter > 1 and trend >= b.prev_trend:
            b.time_over_using = 0
            b.overuse_counter = 0
            b.state = BWE_OVERUSING
    elif modified < -b.threshold:
        b.time_over_using = -1
        b.overuse_counter = 0
        b.state = BWE_UNDERUSING
    else:
        b.time_over_using = -1
        b.overuse_counter = 0
        b.state = BWE_NORMAL
    b.prev_trend = trend
    _bwe_threshold(b, modified, now_ms)


cdef inline void _bwe_trend(Bwe* b, double recv_delta_ms, double send_delta_ms, double arrival_ms) noexcept nogil:
    """One group-to-group delay variation into the trendline (smoothing 0.9, window BWE_TREND_WINDOW)."""
    cdef double mx = 0, my = 0, num = 0, den = 0, trend
    cdef int32_t i, k
    if b.num_deltas < 1000:
        b.num_deltas += 1
    if b.first_arrival_ms < 0:
        b.first_arrival_ms = arrival_ms
    b.accumulated_ms += recv_delta_ms - send_delta_ms
    b.smoothed_ms = 0.9 * b.smoothed_ms + 0.1 * b.accumulated_ms
    k = (b.tr_head + b.tr_n) % BWE_TREND_WINDOW if b.tr_n < BWE_TREND_WINDOW else b.tr_head
    b.tr_x[k] = arrival_ms - b.first_arrival_ms
    b.tr_y[k] = b.smoothed_ms
    if b.tr_n < BWE_TREND_WINDOW:
        b.tr_n += 1
    else:
        b.tr_head = (b.tr_head + 1) % BWE_TREND_WINDOW
    trend = b.prev_trend
    if b.tr_n == BWE_TREND_WINDOW:
        for i in range(BWE_TREND_WINDOW):
            mx += b.tr_x[i]
            my += b.tr_y[i]
        mx /= BWE_TREND_WINDOW
        my /= BWE_TREND_WINDOW
        for i in range(BWE_TREND_WINDOW):
            num += (b.tr_x[i] - mx) * (b.tr_y[i] - my)
            den += (b.tr_x[i] - mx) * (b.tr_x[i] - mx)
        if den != 0:
            trend = num / den
    b.trend = trend
    _bwe_detect(b, trend, send_delta_ms, arrival_ms)


cdef inline void _bwe_restart_detector(Bwe* b) noexcept nogil:
    """Forget the inter-arrival groups, the trendline and the overuse detector's verdict (libwebrtc's
    DelayBasedBwe does so after 2 s without packets); the estimates stay."""
    b.g_open = 0
    b.p_valid = 0
    b.tr_n = 0
    b.tr_head = 0
    b.accumulated_ms = 0
    b.smoothed_ms = 0
    b.first_arrival_ms = -1
    b.num_deltas = 0
    b.trend = 0
    b.prev_trend = 0
    b.time_over_using = -1
    b.overuse_counter = 0
    b.state = BWE_NORMAL
    b.detector_restarts += 1


cdef inline void _bwe_arrival(Bwe* b, int64_t send_us, int64_t arrival_us, int32_t size) noexcept nogil:
    """One packet reported received: the acknowledged rate and the send-time groups."""
    cdef int64_t span
    cdef double sample
    if b.ack_start_us < 0 or arrival_us < b.ack_start_us:
        b.ack_start_us = arrival_us           # the window opens at this arrival: its bytes came before it
        b.ack_bytes = 0
    else:
        b.ack_bytes += size
        span = arrival_us - b.ack_start_us
        if span >= BWE_ACK_WINDOW_US:
            sample = b.ack_bytes * 8.0 * 1000000.0 / span
            b.acked_bps = sample if b.acked_bps == 0 else 0.5 * b.acked_bps + 0.5 * sample
            b.ack_start_us = arrival_us
            b.ack_bytes = 0
    if b.g_open and arrival_us - b.g_last_arrival_us > BWE_STREAM_TIMEOUT_US:
        _bwe_restart_detector(b)              # nothing arrived for a while (a paused track): the old groups and
        b.ack_start_us = arrival_us           # the trend they made say nothing about the link now
        b.ack_bytes = 0
    if not b.g_open:
        b.g_open = 1
        b.g_first_send_us = send_us
        b.g_last_send_us = send_us
        b.g_last_arrival_us = arrival_us
        return
    if send_us < b.g_first_send_us:
        return                                # reordered behind the open group: no information
    if send_us - b.g_first_send_us <= BWE_GROUP_US or (
            arrival_us - b.g_last_arrival_us < BWE_BURST_US
            and (arrival_us - b.g_last_arrival_us) - (send_us - b.g_last_send_us) < 0):
        if send_us > b.g_last_send_us:
            b.g_last_send_us = send_us
        if arrival_us > b.g_last_arrival_us:
            b.g_last_arrival_us = arrival_us
        return
    if b.p_valid:
        _bwe_trend(b, (b.g_last_arrival_us - b.p_last_arrival_us) / 1000.0,
                   (b.g_last_send_us - b.p_last_send_us) / 1000.0, b.g_last_arrival_us / 1000.0)
    b.p_last_send_us = b.g_last_send_us
    b.p_last_arrival_us = b.g_last_arrival_us
    b.p_valid = 1
    b.g_first_send_us = send_us
    b.g_last_send_us = send_us
    b.g_last_arrival_us = arrival_us


cdef inline void _bwe_capacity(Bwe* b, double acked_kbps) noexcept nogil:
    """The link capacity seen at an overuse (kbit/s, exponential average and normalised variance)."""
    cdef double err
    if b.cap_kbps < 0:
        b.cap_kbps = acked_kbps
    else:
        b.cap_kbps = 0.95 * b.cap_kbps + 0.05 * acked_kbps
    err = b.cap_kbps - acked_kbps
    b.cap_var = 0.95 * b.cap_var + 0.05 * err * err / (b.cap_kbps if b.cap_kbps > 1 else 1)
    if b.cap_var < 0.4:
        b.cap_var = 0.4
    elif b.cap_var > 2.5:
        b.cap_var = 2.5


cdef inline void _bwe_rate(Bwe* b, int64_t now_us) noexcept nogil:
    """The AIMD rate controller, once per feedback packet, driven by the detector's state."""
    cdef double dt_s, inc, new, limit, frame_bits, packets, response_ms
    cdef double acked = b.acked_bps
    cdef double upper, probe_arrival
    if b.state == BWE_OVERUSING:
        b.aimd = AIMD_DECREASE
    elif b.state == BWE_UNDERUSING:
        b.aimd = AIMD_HOLD
    elif b.aimd == AIMD_HOLD:
        b.aimd = AIMD_INCREASE
    dt_s = 0 if b.aimd_last_us < 0 else (now_us - b.aimd_last_us) / 1000000.0
    if dt_s < 0:
        dt_s = 0
    elif dt_s > 1:
        dt_s = 1
    b.aimd_last_us = now_us
    if acked > 0 and not b.had_overuse and b.delay_bps < acked:
        b.delay_bps = acked                   # before any overuse the link carries at least what arrives
    if b.aimd == AIMD_INCREASE:
        if b.cap_kbps >= 0:
            upper = b.cap_kbps + 3 * sqrt(b.cap_kbps * b.cap_var)
            if acked / 1000.0 > upper:
                b.cap_kbps = -1               # above what was the capacity: it changed, search again
        if b.cap_kbps >= 0:
            # Near the known capacity: about one packet per response time (additive).
            frame_bits = b.delay_bps / 30.0
            packets = <double>(<int64_t>(frame_bits / (1200 * 8.0)) + 1)
            response_ms = 100.0 + (b.rtt_ms if b.rtt_ms > 0 else BWE_DEFAULT_RTT_MS)
            inc = frame_bits / packets * 1000.0 / response_ms
            if inc < 4000:
                inc = 4000
            inc *= dt_s
        else:
            inc = b.delay_bps * (pow(1.08, dt_s) - 1.0)
            if inc < 1000 * dt_s:
                inc = 1000 * dt_s
        new = b.delay_bps + inc
        if acked > 0:
            limit = 1.5 * acked + 10000
            if new > limit:
                new = limit if limit > b.delay_bps else b.delay_bps
        b.delay_bps = new
    elif b.aimd == AIMD_DECREASE:
        if b.last_decrease_us < 0 or now_us - b.last_decrease_us >= BWE_DECREASE_US:
            if b.pr_start_us >= 0 and b.pr_packets >= BWE_PROBE_MIN_PACKETS \
                    and b.pr_last_send_us - b.pr_first_send_us >= BWE_PROBE_MIN_SPAN_US \
                    and b.pr_last_arrival_us > b.pr_first_arrival_us:
                # During a probe the link's throughput is what the cluster arrives at; the acknowledged rate
                # (a 500 ms average, mostly before the probe) would take the estimate below the media rate.
                probe_arrival = b.pr_bytes * 8.0 * 1000000.0 / (b.pr_last_arrival_us - b.pr_first_arrival_us)
                if probe_arrival > acked:
                    acked = probe_arrival
            elif b.pr_start_us < 0 and now_us - b.pr_closed_us < BWE_PROBE_TIMEOUT_US \
                    and b.pr_arrival_bps > acked:
                # The overuse a probe caused is often seen only after its cluster was evaluated: the same holds
                # for a second after it (measured: a 320 px subscriber capped at 500 kbit/s paused at 150 kbit/s).
                acked = b.pr_arrival_bps
            new = 0.85 * (acked if acked > 0 else b.delay_bps)
            if new < b.delay_bps:
                b.delay_bps = new
            if acked > 0:
                _bwe_capacity(b, acked / 1000.0)
            b.had_overuse = 1
            b.last_decrease_us = now_us
        b.aimd = AIMD_HOLD
    if b.delay_bps < BWE_MIN_BPS:
        b.delay_bps = BWE_MIN_BPS
    elif b.delay_bps > BWE_MAX_BPS:
        b.delay_bps = BWE_MAX_BPS


# ---- the loss-based limit and the estimate --------------------------------------------------------------------

cdef inline void _bwe_loss(Bwe* b, int64_t now_us) noexcept nogil:
    cdef double dt_s, new, floor
    if b.loss_window_us < 0:
        b.loss_window_us = now_us
    if b.loss_total < BWE_LOSS_MIN_PACKETS:
        return
    if b.loss_total < BWE_LOSS_WINDOW_PACKETS and now_us - b.loss_window_us < BWE_LOSS_WINDOW_US \
            and b.loss_lost * 100 < b.loss_total * BWE_LOSS_HEAVY_PCT:
        return                                # random loss needs a larger sample than a cap's overflow
    b.loss = <double>b.loss_lost / b.loss_total
    dt_s = 0 if b.loss_last_us < 0 else (now_us - b.loss_last_us) / 1000000.0
    if dt_s > 1:
        dt_s = 1
    elif dt_s < 0:
        dt_s = 0
    if b.loss > 0.10:
        if b.loss_last_decrease_us < 0 or now_us - b.loss_last_decrease_us >= \
                BWE_LOSS_DECREASE_US + (b.rtt_ms if b.rtt_ms > 0 else BWE_DEFAULT_RTT_MS) * 1000:
            # GCC's (1 - loss/2), but not below what the peer reported receiving: a queue that overflows at a
            # rate cap loses most of what is offered above the cap, and halving the estimate on each report
            # would take it far below the cap (to where not even the lowest layer fits).
            new = b.estimate_bps * (1.0 - 0.5 * b.loss)
            floor = b.acked_bps * BWE_LOSS_ACKED_FLOOR_PCT / 100.0
            if new < floor:
                new = floor if floor < b.estimate_bps else b.estimate_bps
            b.loss_bps = new
            b.loss_last_decrease_us = now_us
    elif b.loss < 0.02 and b.loss_bps > 0:
        # Grows back by 8 %/s, but (as the delay-based increase) not past 1.5x what arrives: a link that showed
        # its limit is not assumed to have more room without evidence (media that fills it, or a probe).
        new = b.loss_bps * pow(1.08, dt_s) + 1000 * dt_s
        floor = 1.5 * b.acked_bps + 10000
        if b.acked_bps > 0 and new > floor:
            new = floor if floor > b.loss_bps else b.loss_bps
        b.loss_bps = new
        if b.loss_bps >= b.delay_bps:
            b.loss_bps = 0                    # no longer the limit
    b.loss_last_us = now_us
    b.loss_window_us = now_us
    b.loss_lost = 0
    b.loss_total = 0


cdef inline void _bwe_combine(Bwe* b) noexcept nogil:
    cdef double est
    if b.feedback_packets == 0:
        est = b.remb_bps if b.remb_bps > 0 else b.estimate_bps
    else:
        est = b.delay_bps
        if b.loss_bps > 0 and b.loss_bps < est:
            est = b.loss_bps
        if b.remb_bps > 0 and b.remb_bps < est:
            est = b.remb_bps
    if est < BWE_MIN_BPS:
        est = BWE_MIN_BPS
    b.estimate_bps = est


# ---- probe clusters ----------------------------------------------------------------------------------------

cdef inline void bwe_probe_start(Bwe* b, int64_t now_us, int64_t duration_us) noexcept nogil:
    """Open a probe cluster: the packets sent from now for duration_us are measured together (a cluster still
    open is replaced)."""
    b.pr_start_us = now_us
    b.pr_end_us = now_us + duration_us
    b.pr_first_send_us = b.pr_last_send_us = -1
    b.pr_first_arrival_us = b.pr_last_arrival_us = -1
    b.pr_bytes = 0
    b.pr_packets = 0
    b.pr_lost = 0
    b.pr_done = 0
    b.pr_tail_first_arrival_us = b.pr_tail_last_arrival_us = -1
    b.pr_tail_bytes = 0
    b.pr_tail_first_size = 0
    b.pr_tail_packets = 0


cdef inline void _bwe_probe_packet(Bwe* b, int64_t send_us, int64_t arrival_us, int32_t size) noexcept nogil:
    if send_us > b.pr_end_us:
        b.pr_done = 1
        return
    if send_us < b.pr_start_us:
        return
    if b.pr_packets == 0 or send_us < b.pr_first_send_us:
        b.pr_first_send_us = send_us
    if b.pr_packets == 0 or send_us > b.pr_last_send_us:
        b.pr_last_send_us = send_us
    if b.pr_packets == 0 or arrival_us < b.pr_first_arrival_us:
        b.pr_first_arrival_us = arrival_us
    if b.pr_packets == 0 or arrival_us > b.pr_last_arrival_us:
        b.pr_last_arrival_us = arrival_us
    b.pr_bytes += size
    b.pr_packets += 1
    if send_us - b.pr_start_us < (b.pr_end_us - b.pr_start_us) // 2:
        return
    if b.pr_tail_packets == 0:
        b.pr_tail_first_arrival_us = b.pr_tail_last_arrival_us = arrival_us
        b.pr_tail_first_size = size
    elif arrival_us < b.pr_tail_first_arrival_us:
        b.pr_tail_bytes += b.pr_tail_first_size
        b.pr_tail_first_arrival_us = arrival_us
        b.pr_tail_first_size = size
    else:
        b.pr_tail_bytes += size
        if arrival_us > b.pr_tail_last_arrival_us:
            b.pr_tail_last_arrival_us = arrival_us
    b.pr_tail_packets += 1


cdef inline double bwe_probe_rate(Bwe* b) noexcept nogil:
    """The open cluster's result as libwebrtc's ProbeBitrateEstimator takes it: the lower of the rate it was
    sent at and the rate it arrived at, and 0.95 of the arrival rate when that is below 0.9 of the send rate (the
    link was saturated). 0 = no result: too few packets, more than 10 % lost, sent within less than
    BWE_PROBE_MIN_SPAN_US (padding goes out in one burst per tick: a cluster that got one tick, e.g. on a late
    tick, measured a burst, and gave estimates of hundreds of Mbit/s on a 2 Mbit/s link), or arriving at more
    than twice the rate it was sent at (libwebrtc's kMaxValidRatio: not a measurement of the link).

    A saturated link is measured by the cluster's tail when that arrived slower than the whole: the packets sent
    in the second half of the window, queued behind the first, arrive at the bottleneck's rate, while a token
    bucket that was full when the cluster started lets its burst through at the send rate and inflates the whole
    cluster's arrival rate (a paused subscriber's 100 kbit/s link measured 158 kbit/s and could be resumed into a
    link that cannot carry its lowest layer; libwebrtc does not guard against this, and recovers by its delay
    detector after the raise)."""
    cdef double send_bps, recv_bps, tail_bps
    if b.pr_packets < BWE_PROBE_MIN_PACKETS or b.pr_lost * 10 > b.pr_packets + b.pr_lost:
        return 0
    if b.pr_last_send_us - b.pr_first_send_us < BWE_PROBE_MIN_SPAN_US or b.pr_last_arrival_us <= b.pr_first_arrival_us:
        return 0
    send_bps = b.pr_bytes * 8.0 * 1000000.0 / (b.pr_last_send_us - b.pr_first_send_us)
    recv_bps = b.pr_bytes * 8.0 * 1000000.0 / (b.pr_last_arrival_us - b.pr_first_arrival_us)
    if recv_bps > 2.0 * send_bps:
        return 0
    if recv_bps < 0.9 * send_bps:
        if b.pr_tail_packets >= BWE_PROBE_MIN_TAIL_PACKETS \
                and b.pr_tail_last_arrival_us > b.pr_tail_first_arrival_us:
            tail_bps = b.pr_tail_bytes * 8.0 * 1000000.0 / (b.pr_tail_last_arrival_us - b.pr_tail_first_arrival_us)
            if tail_bps < recv_bps:
                recv_bps = tail_bps
        return 0.95 * recv_bps
    return send_bps if send_bps < recv_bps else recv_bps


cdef inline void _bwe_probe_result(Bwe* b) noexcept nogil:
    """Close the cluster. A result above the delay-based estimate, without overuse, becomes the estimate (as
    goog_cc's delay-based estimator takes a probe result): the 1.5x-acknowledged ceiling of the AIMD increase no
    longer holds the estimate down to what is being sent. A result above a loss limit lifts the limit to it
    (libwebrtc resets its loss-based estimate to a probe's result) with or without overuse: the cluster got
    through with at most 10 % lost at that rate, which is what the loss limit is about, and the queue the overuse
    saw already lowered the delay-based estimate (to 0.85 of what the cluster arrived at, _bwe_rate), which
    limits the estimate by itself. Skipping the lift on overuse could hold the estimate at a cap's loss limit after
    the cap was lifted, however many probes got through (seen once on a loaded host: a screen share held at
    322-365 kbit/s for 12 s; reproduced with synthetic feedback in tests/fastpath/test_probe.py)."""
    cdef double r = bwe_probe_rate(b)
    cdef int raised = 0
    b.pr_start_us = -1
    b.pr_closed_us = b.pr_end_us
    b.pr_arrival_bps = 0
    if b.pr_packets >= BWE_PROBE_MIN_PACKETS and b.pr_last_arrival_us > b.pr_first_arrival_us \
            and b.pr_last_send_us - b.pr_first_send_us >= BWE_PROBE_MIN_SPAN_US:
        b.pr_arrival_bps = b.pr_bytes * 8.0 * 1000000.0 / (b.pr_last_arrival_us - b.pr_first_arrival_us)
    b.probe_results += 1
    if r <= 0:
        return
    b.probe_bps = r
    if b.state != BWE_OVERUSING and r > b.delay_bps:
        b.delay_bps = r if r < BWE_MAX_BPS else BWE_MAX_BPS
        b.cap_kbps = -1                       # the capacity seen at the last overuse no longer holds
        if b.aimd == AIMD_HOLD:
            b.aimd = AIMD_INCREASE
        raised = 1
    if b.loss_bps > 0 and b.loss_bps < r:
        # A loss limit below the result goes up to it (and away once the delay-based estimate is no higher):
        # after losses the link is found again only this way while little is sent (a paused track, a low layer).
        b.loss_bps = 0 if r >= b.delay_bps else r
        raised = 1
    b.probe_raises += raised


cdef inline int bwe_probe_expire(Bwe* b, int64_t now_us) noexcept nogil:
    """Evaluate a cluster whose feedback did not end it (nothing sent after it: a paused track is probed with
    padding alone, and no later packet's feedback marks the cluster done) once BWE_PROBE_TIMEOUT_US passed after
    its end. 1 = evaluated (the estimate may have changed)."""
    if b.pr_start_us < 0 or now_us - b.pr_end_us <= BWE_PROBE_TIMEOUT_US:
        return 0
    _bwe_probe_result(b)
    _bwe_combine(b)
    return 1


# ---- feedback ----------------------------------------------------------------------------------------------

ctypedef struct _BweCursor:
    const uint8_t* p
    int32_t length
    int32_t dpos                      # next receive delta
    int64_t arrival_us
    int64_t last                      # highest seq stamped so far
    uint16_t seq                      # the status's seq
    uint8_t bad


cdef inline void _bwe_status(Bwe* b, _BweCursor* c, uint8_t sym) noexcept nogil:
    """One packet status of a feedback packet, in seq order."""
    cdef int64_t ext
    cdef BweSent* s
    cdef int32_t delta = 0
    cdef uint16_t seq = c.seq
    c.seq += 1
    if c.bad:
        return
    if sym == 1:
        if c.dpos + 1 > c.length:
            c.bad = 1
            return
        delta = c.p[c.dpos]
        c.dpos += 1
    elif sym == 2:
        if c.dpos + 2 > c.length:
            c.bad = 1
            return
        delta = <int16_t>rd16(c.p + c.dpos)
        c.dpos += 2
    elif sym == 3:
        c.bad = 1                             # reserved symbol
        return
    if sym != 0:
        c.arrival_us += <int64_t>delta * BWE_TICK_US
    ext = c.last - <uint16_t>(<uint16_t>c.last - seq)
    if ext < 0 or c.last - ext >= BWE_HISTORY:
        b.unknown_packets += 1
        return
    s = &b.history[ext & BWE_HISTORY_MASK]
    if sym != 0:
        if s.flags & BWE_SENT_ACKED:
            return
        if s.flags & BWE_SENT_LOST:
            b.lost_packets -= 1               # late, not lost
            if b.loss_lost > 0 and not (s.flags & BWE_SENT_PADDING):
                b.loss_lost -= 1
        elif not (s.flags & BWE_SENT_PADDING):
            b.loss_total += 1
        s.flags |= BWE_SENT_ACKED
        b.acked_packets += 1
        _bwe_arrival(b, s.send_us, c.arrival_us, s.size)
        if b.pr_start_us >= 0:
            _bwe_probe_packet(b, s.send_us, c.arrival_us, s.size)
    elif not (s.flags & (BWE_SENT_ACKED | BWE_SENT_LOST)):
        s.flags |= BWE_SENT_LOST
        b.lost_packets += 1
        if not (s.flags & BWE_SENT_PADDING):
            b.loss_lost += 1
            b.loss_total += 1
        if b.pr_start_us >= 0 and b.pr_start_us <= s.send_us <= b.pr_end_us:
            b.pr_lost += 1


cdef inline int bwe_on_feedback(Bwe* b, const uint8_t* p, int32_t length, int64_t now_us) noexcept nogil:
    """A TWCC feedback packet (p: its RTCP header; length: its bytes): match every status to the history, feed
    the estimator and update the estimate. 0 = used, -1 = malformed or no history (counted in feedback_bad)."""
    cdef _BweCursor c
    cdef int32_t count, covered = 0, pos = 20, j, k
    cdef int32_t ref
    cdef uint16_t chunk
    if b.history == NULL or length < 20:
        b.feedback_bad += 1
        return -1
    count = rd16(p + 14)
    while covered < count:                    # pass 1: where the receive deltas start
        if pos + 2 > length:
            b.feedback_bad += 1
            return -1
        chunk = rd16(p + pos)
        pos += 2
        if not (chunk & 0x8000):
            covered += chunk & 0x1FFF
        elif chunk & 0x4000:
            covered += 7
        else:
            covered += 14
    ref = (<int32_t>p[16] << 16) | (<int32_t>p[17] << 8) | p[18]
    if ref & 0x800000:
        ref -= 0x1000000
    c.p = p
    c.length = length
    c.dpos = pos
    c.arrival_us = <int64_t>ref * BWE_REF_US
    c.last = b.next_seq - 1
    c.seq = rd16(p + 12)
    c.bad = 0
    pos = 20
    k = 0
    while k < count and not c.bad:            # pass 2: statuses with their deltas, in seq order
        chunk = rd16(p + pos)
        pos += 2
        if not (chunk & 0x8000):
            for j in range(chunk & 0x1FFF):
                if k == count:
                    break
                _bwe_status(b, &c, (chunk >> 13) & 3)
                k += 1
        elif chunk & 0x4000:
            for j in range(7):
                if k == count:
                    break
                _bwe_status(b, &c, (chunk >> (12 - 2 * j)) & 3)
                k += 1
        else:
            for j in range(14):
                if k == count:
                    break
                _bwe_status(b, &c, (chunk >> (13 - j)) & 1)
                k += 1
    if c.bad:
        b.feedback_bad += 1
        return -1
    b.feedback_packets += 1
    _bwe_rate(b, now_us)
    _bwe_loss(b, now_us)
    if b.pr_start_us >= 0 and (b.pr_done or now_us - b.pr_end_us > BWE_PROBE_TIMEOUT_US):
        _bwe_probe_result(b)
    _bwe_combine(b)
    return 0


cdef inline int bwe_on_remb(Bwe* b, const uint8_t* p, int32_t length) noexcept nogil:
    """A REMB (PSFB FMT 15 with the "REMB" identifier): the receiver's estimate. 0 = used, -1 = not a REMB."""
    cdef uint32_t v
    if length < 20 or rd32(p + 12) != BWE_REMB_ID:
        return -1
    v = rd32(p + 16)
    b.remb_bps = <double>(v & 0x3FFFF) * pow(2.0, <double>((v >> 18) & 0x3F))
    b.remb_packets += 1
    _bwe_combine(b)
    return 0
