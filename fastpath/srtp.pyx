"""SRTP for the fast path: libsrtp 2.x (the copy bundled in the pylibsrtp 1.0.0 wheel) called from C.

Owns: creating libsrtp sessions through pylibsrtp (``SrtpContext``) and loading the C entry points
(``srtp_protect``, ``srtp_unprotect``, ``srtp_protect_rtcp``, ``srtp_unprotect_rtcp``, ``srtp_remove_stream``)
from pylibsrtp's cffi module as raw function pointers. Must not call pylibsrtp per packet.
RFC 3711 (SRTP), RFC 7714 (AES-GCM), RFC 5764 (DTLS-SRTP profiles).

Inbound contexts use ``ssrc_any_inbound``; outbound ones ``ssrc_any_outbound`` with ``allow_repeat_tx`` so a
NACK retransmission with the same sequence number can be protected again. Inbound contexts keep a 1024-packet
replay window; outbound ones 512, which libsrtp shifts on every protected packet (a measurable share of the
fan-out cost at a thousand subscribers) and which still covers every resend the Engine makes (its per-consumer
NACK metadata ring, META_RING in engine.pxd, holds 512 packets and older requests are refused before protect).

``protect_batched`` protects a list of packets the way the Engine's send flush does (AES-CM-80 tags written
together at the end), so tests can compare its bytes with ``SrtpContext.protect``'s.

The first ``SrtpContext`` of a process installs ``fastpath.crypto_kernel`` (libsrtp's HMAC-SHA1 and AES-ICM-128,
the AES-CM-80 primitives) with its defaults unless the process called ``crypto_kernel.install`` with its own choice
before; see that module for why.
"""

from libc.stdint cimport uint8_t, uintptr_t
from libc.stdlib cimport free
from libc.string cimport memcpy

from fastpath.crypto_kernel cimport HmacBatch, capture_begin, capture_end, hmac_batch_new, hmac_flush, protect_queued
from fastpath.includes.linux cimport htonl
from fastpath.includes.srtp cimport (
    SRTP_MAX_TRAILER,
    SrtpFns,
    srtp_fn_t,
    srtp_get_roc_fn_t,
    srtp_remove_fn_t,
    srtp_set_roc_fn_t,
)

import ctypes
from concurrent.futures import ThreadPoolExecutor

import pylibsrtp
import pylibsrtp._binding
from pylibsrtp import Policy, Session
from pylibsrtp._binding import ffi, lib

from fastpath.crypto_kernel import ensure_installed

PROFILE_PLAIN = 0  # no cipher, no authentication: pipe transports between workers (fastpath/_pipe.pxi)
PROFILE_AES128_CM_SHA1_80 = 1
PROFILE_AEAD_AES_128_GCM = 7
PROFILE_AEAD_AES_256_GCM = 8

# key || salt lengths (RFC 3711 4.3, RFC 7714 12).
KEY_LENGTHS = {PROFILE_PLAIN: 30, PROFILE_AES128_CM_SHA1_80: 30, PROFILE_AEAD_AES_128_GCM: 28, PROFILE_AEAD_AES_256_GCM: 44}

_REQUIRED_SYMBOLS = ("srtp_protect", "srtp_unprotect", "srtp_protect_rtcp", "srtp_unprotect_rtcp",
                     "srtp_remove_stream")
_missing = [name for name in _REQUIRED_SYMBOLS if not hasattr(lib, name)]
if _missing:
    raise ImportError(
        f"fastpath needs the libsrtp 2.x entry points of pylibsrtp 1.0.0; pylibsrtp "
        f"{getattr(pylibsrtp, '__version__', '?')} lacks {', '.join(_missing)}"
    )

cdef SrtpFns _fns


cdef uintptr_t _address(str name) except 0:
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))


_fns.protect = <srtp_fn_t>_address("srtp_protect")
_fns.unprotect = <srtp_fn_t>_address("srtp_unprotect")
_fns.protect_rtcp = <srtp_fn_t>_address("srtp_protect_rtcp")
_fns.unprotect_rtcp = <srtp_fn_t>_address("srtp_unprotect_rtcp")
_fns.remove_stream = <srtp_remove_fn_t>_address("srtp_remove_stream")


def _optional_symbol(name: str) -> int:
    # The same shared object cffi already loaded; dlopen returns the existing handle.
    try:
        return ctypes.cast(getattr(ctypes.CDLL(pylibsrtp._binding.__file__), name), ctypes.c_void_p).value or 0
    except (AttributeError, OSError):
        return 0


_fns.set_stream_roc = <srtp_set_roc_fn_t><uintptr_t>_optional_symbol("srtp_set_stream_roc")
_fns.get_stream_roc = <srtp_get_roc_fn_t><uintptr_t>_optional_symbol("srtp_get_stream_roc")
HAS_STREAM_ROC = _fns.set_stream_roc != NULL and _fns.get_stream_roc != NULL


cdef SrtpFns srtp_fns() noexcept:
    return _fns


def srtp_error_reason(int status) -> str:
    """The libsrtp text for an srtp_err_status_t value, prefixed "srtp: "."""
    if 0 <= status < len(pylibsrtp.ERRORS):
        return "srtp: " + pylibsrtp.ERRORS[status]
    return f"srtp: error {status}"


cdef bytes _run(SrtpContext self, srtp_fn_t fn, const uint8_t[:] data, int trailer):
    cdef int n = <int>data.shape[0]
    cdef bytearray buf = bytearray(n + trailer)
    cdef int rc
    if n == 0:
        raise ValueError("srtp: empty packet")
    memcpy(<char*>buf, &data[0], n)
    rc = fn(self.ctx, <char*>buf, &n)
    if rc != 0:
        raise ValueError(srtp_error_reason(rc))
    return bytes(buf[:n])


def protect_batched(list contexts, list packets) -> list:
    """Protect ``packets[i]`` with ``contexts[i]`` as the Engine does within one send flush: AES-CM-80 tags queued
    while protecting and written together at the end (crypto_kernel's HMAC batches). The bytes must equal
    :meth:`SrtpContext.protect`'s; for tests and tools, not per packet."""
    cdef Py_ssize_t i, count = len(packets)
    cdef list bufs = []
    cdef list sizes = []
    cdef bytearray buf
    cdef int n, rc = 0
    cdef HmacBatch* batch
    if len(contexts) != count:
        raise ValueError("one context per packet")
    for i in range(count):
        if not (<SrtpContext?>contexts[i]).outbound:
            raise ValueError("srtp: protect needs outbound contexts")
        if not 0 < len(packets[i]) <= 65000:
            raise ValueError("srtp: empty or oversized packet")
        bufs.append(bytearray(bytes(packets[i]) + bytes(SRTP_MAX_TRAILER)))
    batch = hmac_batch_new()
    if batch == NULL:
        raise MemoryError()
    try:
        for i in range(count):
            buf = bufs[i]
            n = len(packets[i])
            rc = protect_queued(_fns.protect, (<SrtpContext>contexts[i]).ctx, <char*>buf, &n, batch)
            if rc != 0:
                break
            sizes.append(n)
        hmac_flush(batch)
    finally:
        free(batch)
    if rc != 0:
        raise ValueError(srtp_error_reason(rc))
    return [bytes(bufs[i][:sizes[i]]) for i in range(count)]


def _plain(policy: Policy) -> None:
    """libsrtp's null cipher and null authentication on both of the policy's crypto policies (what
    srtp_crypto_policy_set_null_cipher_hmac_null does; pylibsrtp's cffi declares the struct opaque). Its layout is
    srtp.h's srtp_crypto_policy_t in libsrtp 2.x: cipher_type, cipher_key_len, auth_type, auth_key_len,
    auth_tag_len, sec_serv, six ints; the key length stays the AES-ICM one the key derivation reads."""
    for crypto in (ffi.addressof(policy._policy.rtp), ffi.addressof(policy._policy.rtcp)):
        fields = ffi.cast("int *", crypto)
        if fields[1] != 30:
            raise RuntimeError("srtp: unexpected srtp_crypto_policy_t layout")
        fields[0] = 0  # SRTP_NULL_CIPHER
        fields[2] = 0  # SRTP_NULL_AUTH
        fields[3] = 0
        fields[4] = 0
        fields[5] = 0  # sec_serv_none


cdef class SrtpContext:
    """One libsrtp session (srtp_t) for one direction of one transport.

    Lifecycle: created from DTLS-exported key material, used by the Engine until the transport is removed
    or re-keyed; the pylibsrtp Session is kept in ``session`` so the srtp_t stays valid.
    """

    def __cinit__(self, int profile, bytes key, bint outbound):
        if profile not in KEY_LENGTHS:
            raise ValueError(f"srtp: unsupported profile {profile}")
        if len(key) != KEY_LENGTHS[profile]:
            raise ValueError(f"srtp: key must be {KEY_LENGTHS[profile]} bytes for profile {profile}, "
                             f"got {len(key)}")
        policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND,
                        srtp_profile=profile or PROFILE_AES128_CM_SHA1_80)
        if profile == PROFILE_PLAIN:
            _plain(policy)
        policy.allow_repeat_tx = bool(outbound)
        policy.window_size = 512 if outbound else 1024
        ensure_installed()  # before the first session: AES-CM-80 then runs on fastpath.crypto_kernel's functions
        capture_begin()
        try:
            self.session = Session(policy)
        finally:
            capture_end(&self.hot)
        if profile != PROFILE_AES128_CM_SHA1_80:
            # GCM sessions have no HMAC and libsrtp's own cipher: what was captured is the key derivation's
            # AES-ICM state, freed already.
            self.hot.cipher = NULL
            self.hot.auth = NULL
        self.ctx = <void*><uintptr_t>int(ffi.cast("uintptr_t", self.session._srtp[0]))
        self.profile = profile
        self.outbound = outbound

    def hot_states(self) -> tuple:
        """(cipher, auth) addresses of the RTP state blocks the Engine prefetches; 0 where libsrtp's own are used."""
        return <uintptr_t>self.hot.cipher, <uintptr_t>self.hot.auth

    def protect(self, const uint8_t[:] data) -> bytes:
        return _run(self, _fns.protect, data, SRTP_MAX_TRAILER)

    def unprotect(self, const uint8_t[:] data) -> bytes:
        return _run(self, _fns.unprotect, data, 0)

    def protect_rtcp(self, const uint8_t[:] data) -> bytes:
        return _run(self, _fns.protect_rtcp, data, SRTP_MAX_TRAILER)

    def unprotect_rtcp(self, const uint8_t[:] data) -> bytes:
        return _run(self, _fns.unprotect_rtcp, data, 0)

    def remove_stream(self, unsigned int ssrc) -> bool:
        """Forget the per-SSRC state (replay window, ROC); True if a stream existed."""
        return _fns.remove_stream(self.ctx, htonl(ssrc)) == 0


_allocator: ThreadPoolExecutor | None = None


def _pair(int profile, bytes local_key, bytes remote_key) -> tuple:
    return SrtpContext(profile, remote_key, False), SrtpContext(profile, local_key, True)


def context_pair(int profile, bytes local_key, bytes remote_key) -> tuple:
    """(inbound, outbound) contexts for one transport, created on one long-lived thread.

    glibc serves each thread from its own malloc arena, so every libsrtp/OpenSSL allocation of a worker's
    sessions lands packed together in that thread's arena instead of scattered between Python objects on the
    main heap. With a thousand subscribers the per-packet protect touches each session's cipher and HMAC state
    once per packet; packing them measurably lowers the cache and TLB misses (bench: the limit loop with its
    sessions scattered between other allocations costs +0.4 us per packet at 1,000 destinations)."""
    global _allocator
    if _allocator is None:
        _allocator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="srtp-alloc")
    return _allocator.submit(_pair, profile, local_key, remote_key).result()
