# The C entry points of fastpath/crypto_kernel.pyx that other fast-path modules call.

ctypedef struct SessionState:
    void* cipher     # the RTP cipher's state block (AES-ICM-128), NULL when libsrtp's own cipher is in use
    void* auth       # the RTP HMAC-SHA1 state block, NULL likewise

# Between capture_begin() and capture_end(), on one thread, the first AES-ICM and HMAC states allocated are
# recorded: libsrtp allocates a stream's RTP cipher and auth before its RTCP ones and before the key derivation's
# cipher, so around srtp_create of an AES-CM-80 session they are the RTP ones.
cdef void capture_begin() noexcept nogil
cdef void capture_end(SessionState* out) noexcept nogil
# Request the lines a protect touches in those blocks (a prefetch never faults).
cdef void prefetch_session(const SessionState* s) noexcept nogil
