# libsrtp 2.x entry points, called through the function pointers that pylibsrtp's cffi module exposes
# (the libsrtp bundled in the pylibsrtp 1.0.0 wheel; no header and no link against a system libsrtp).
# Signatures: https://github.com/cisco/libsrtp/blob/v2.7.0/include/srtp.h
#   srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr);   (and unprotect, *_rtcp)
#   srtp_err_status_t srtp_remove_stream(srtp_t session, uint32_t ssrc);       (ssrc in network order)

ctypedef int (*srtp_fn_t)(void* ctx, void* hdr, int* length) noexcept nogil
ctypedef int (*srtp_remove_fn_t)(void* ctx, unsigned int ssrc_be) noexcept nogil
# srtp_set_stream_roc / srtp_get_stream_roc (libsrtp >= 2.3, ssrc in host order): exported by the wheel's
# shared object but not by its cffi module, so they are looked up with ctypes and may be NULL.
ctypedef int (*srtp_set_roc_fn_t)(void* ctx, unsigned int ssrc, unsigned int roc) noexcept nogil
ctypedef int (*srtp_get_roc_fn_t)(void* ctx, unsigned int ssrc, unsigned int* roc) noexcept nogil

ctypedef struct SrtpFns:
    srtp_fn_t protect
    srtp_fn_t unprotect
    srtp_fn_t protect_rtcp
    srtp_fn_t unprotect_rtcp
    srtp_remove_fn_t remove_stream
    srtp_set_roc_fn_t set_stream_roc
    srtp_get_roc_fn_t get_stream_roc

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
