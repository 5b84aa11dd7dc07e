# The C entry points of fastpath/crypto_kernel.pyx that other fast-path modules call.
from fastpath.includes.srtp cimport srtp_fn_t

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

# Batched HMAC-SHA1 for a send arena (see "HMAC batches" in crypto_kernel.pyx). While a thread's current batch is
# set (hmac_defer(b)), an AES-CM-80 protect through these primitives queues its tag instead of computing it; the
# packet must stay where it is until hmac_flush(b) has written every queued tag (before the arena is sent or
# reused). hmac_flush computes them several packets at a time with OpenSSL's multi-buffer SHA-1.
cdef enum:
    HMAC_BATCH_MAX = 512                 # queued tags; past this a protect computes its tag at once
    HMAC_TAIL = 128                      # the last partial block, the trailer and the padding: 1 or 2 blocks

ctypedef struct HmacJob:
    void* box                            # the session's HMAC state (digest after K^ipad, after K^opad)
    const unsigned char* data            # the authenticated bytes, in place
    int length
    int blocks                           # whole 64-byte blocks at data
    int tail_blocks
    unsigned char* tag
    int tag_len
    unsigned char tail[HMAC_TAIL]

ctypedef struct HmacBatch:
    int n
    int open                             # the job an update started and a compute has not finished, or -1
    HmacJob jobs[HMAC_BATCH_MAX]

cdef HmacBatch* hmac_batch_new() noexcept nogil
cdef void hmac_defer(HmacBatch* b) noexcept nogil
cdef void hmac_flush(HmacBatch* b) noexcept nogil


cdef inline int protect_queued(srtp_fn_t protect, void* ctx, void* packet, int* length, HmacBatch* b) noexcept nogil:
    """protect(ctx, packet, length) with its AES-CM-80 tag queued in b (written by hmac_flush); a protect that fails
    leaves nothing queued, so the packet's slot can be reused."""
    cdef int queued = b.n
    cdef int rc
    hmac_defer(b)
    rc = protect(ctx, packet, length)
    hmac_defer(NULL)
    if rc != 0:
        b.n = queued
    return rc
