# libsrtp 2.x entry points, called through the function pointers that pylibsrtp's cffi module exposes
# (the libsrtp bundled in the pylibsrtp 1.0.0 wheel; no header and no link against a system libsrtp).
# Signatures: https://github.com/cisco/libsrtp/blob/v2.7.0/include/srtp.h
#   srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr);   (and unprotect, *_rtcp)
#   srtp_err_status_t srtp_remove_stream(srtp_t session, uint32_t ssrc);       (ssrc in network order)

ctypedef int (*srtp_fn_t)(void* ctx, void* hdr, int* length) noexcept nogil
ctypedef int (*srtp_remove_fn_t)(void* ctx, unsigned int ssrc_be) noexcept nogil

ctypedef struct SrtpFns:
    srtp_fn_t protect
    srtp_fn_t unprotect
    srtp_fn_t protect_rtcp
    srtp_fn_t unprotect_rtcp
    srtp_remove_fn_t remove_stream

# srtp_err_status_t values used by the fast path.
cdef enum:
    SRTP_ERR_OK = 0
    SRTP_ERR_AUTH_FAIL = 7
    SRTP_ERR_REPLAY_FAIL = 9
    SRTP_ERR_REPLAY_OLD = 10

# Room that protect needs after the payload: a 16-byte GCM tag (10 for HMAC-SHA1-80) plus the 4-byte SRTCP
# index (E flag); libsrtp writes no MKI because we configure none.
cdef enum:
    SRTP_MAX_TRAILER = 20
