# SRTP contexts (libsrtp sessions made from pylibsrtp policies), used from C through the wheel's libsrtp function pointers.
from fastpath.crypto_kernel cimport SessionState
from fastpath.includes.srtp cimport SrtpFns


cdef class SrtpContext:
    cdef void* ctx                     # its srtp_t, owned: srtp_dealloc'd with the object
    cdef readonly int profile
    cdef readonly bint outbound
    cdef SessionState hot              # its RTP cipher/auth state blocks when fastpath.crypto_kernel's (prefetching)


cdef SrtpFns srtp_fns() noexcept
