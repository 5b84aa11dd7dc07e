# SRTP contexts made by pylibsrtp, used from C through the wheel's libsrtp function pointers.
from fastpath.crypto_kernel cimport SessionState
from fastpath.includes.srtp cimport SrtpFns


cdef class SrtpContext:
    cdef readonly object session       # the pylibsrtp.Session that owns the srtp_t (kept alive here)
    cdef void* ctx                     # its srtp_t
    cdef readonly int profile
    cdef readonly bint outbound
    cdef SessionState hot              # its RTP cipher/auth state blocks when fastpath.crypto_kernel's (prefetching)


cdef SrtpFns srtp_fns() noexcept
