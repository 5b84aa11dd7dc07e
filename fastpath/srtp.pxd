# SRTP contexts made by pylibsrtp, used from C through the wheel's libsrtp function pointers.
from fastpath.includes.srtp cimport SrtpFns


cdef class SrtpContext:
    cdef readonly object session       # the pylibsrtp.Session that owns the srtp_t (kept alive here)
    cdef void* ctx                     # its srtp_t
    cdef readonly int profile
    cdef readonly bint outbound


cdef SrtpFns srtp_fns() noexcept
