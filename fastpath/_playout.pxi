# Playout delay toward a subscriber (included by engine.pyx; docs/FORWARDING.md, Playout delay): the
# playout-delay header extension (http://www.webrtc.org/experiments/rtp-hdrext/playout-delay: 12 bits of minimum and
# 12 bits of maximum delay in 10 ms units) written into a consumer's packets for a while after the worker set a new
# value (Engine.set_playout_delay). A receiver keeps the last value it saw, so the element rides only for
# PLAYOUT_STAMP_US after each change. No Python objects.

cdef enum:
    PLAYOUT_MAX_UNITS = 0xFFF                 # 40.95 s in 10 ms units

cdef int64_t PLAYOUT_STAMP_US = 1000000       # how long each new value is written into every packet


cdef inline void playout_stamp(EngineState* e, Consumer* c, uint8_t* out, int* n) noexcept nogil:
    """The send path's hook for consumers with pd_on (send_rtp, before the transport-wide sequence and SRTP)."""
    cdef int32_t length = n[0]
    if e.now_us >= c.pd_until_us:
        c.pd_on = 0
        return
    if hdrext_put(out, &length, SEND_SLOT_BYTES - SRTP_MAX_TRAILER - length, c.pd_id, c.pd_data, 3):
        n[0] = length
        c.pd_stamped += 1


cdef inline void playout_set(Consumer* c, int64_t now_us, uint8_t ext_id, int min_units, int max_units) noexcept nogil:
    c.pd_id = ext_id
    c.pd_data[0] = <uint8_t>(min_units >> 4)
    c.pd_data[1] = <uint8_t>(((min_units & 0x0F) << 4) | (max_units >> 8))
    c.pd_data[2] = <uint8_t>(max_units & 0xFF)
    c.pd_until_us = now_us + PLAYOUT_STAMP_US
    c.pd_on = ext_id != 0
