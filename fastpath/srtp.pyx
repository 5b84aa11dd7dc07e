"""SRTP for the fast path: libsrtp 2.x (the copy bundled in the pylibsrtp 1.0.0 wheel) called from C.

Owns: libsrtp sessions (``SrtpContext``: an srtp_t made by ``srtp_create`` from a pylibsrtp ``Policy`` and freed
with the object), the allocation thread that creates a transport's two sessions (``context_pair``), and loading the
C entry points (``srtp_create``, ``srtp_dealloc``, ``srtp_protect``, ``srtp_unprotect``, ``srtp_protect_rtcp``,
``srtp_unprotect_rtcp``, ``srtp_remove_stream``) from pylibsrtp's cffi module as raw function pointers. Must not call
pylibsrtp per packet.
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
from libc.string cimport memcpy, memset
from posix.signal cimport sigfillset, sigset_t
from posix.types cimport pid_t
from posix.unistd cimport getpid

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

import pylibsrtp
import pylibsrtp._binding
from pylibsrtp import Policy
from pylibsrtp._binding import ffi, lib

from fastpath.crypto_kernel import ensure_installed

PROFILE_PLAIN = 0  # no cipher, no authentication: pipe transports between workers (fastpath/_pipe.pxi)
PROFILE_AES128_CM_SHA1_80 = 1
PROFILE_AEAD_AES_128_GCM = 7
PROFILE_AEAD_AES_256_GCM = 8

# key || salt lengths (RFC 3711 4.3, RFC 7714 12).
KEY_LENGTHS = {PROFILE_PLAIN: 30, PROFILE_AES128_CM_SHA1_80: 30, PROFILE_AEAD_AES_128_GCM: 28, PROFILE_AEAD_AES_256_GCM: 44}

_REQUIRED_SYMBOLS = ("srtp_protect", "srtp_unprotect", "srtp_protect_rtcp", "srtp_unprotect_rtcp",
                     "srtp_remove_stream", "srtp_create", "srtp_dealloc")
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

# srtp_err_status_t srtp_create(srtp_t *session, const srtp_policy_t *policy); srtp_dealloc(srtp_t session).
ctypedef int (*srtp_create_fn_t)(void** session, const void* policy) noexcept nogil
ctypedef int (*srtp_dealloc_fn_t)(void* session) noexcept nogil
cdef srtp_create_fn_t _srtp_create = <srtp_create_fn_t>_address("srtp_create")
cdef srtp_dealloc_fn_t _srtp_dealloc = <srtp_dealloc_fn_t>_address("srtp_dealloc")


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

    Lifecycle: created from DTLS-exported key material (``SrtpContext(profile, key, outbound)`` on the calling
    thread, or two at a time on the allocation thread by :func:`context_pair`), used by the Engine until the
    transport is removed or re-keyed; the srtp_t is deallocated with this object.
    """

    def __cinit__(self):
        self.ctx = NULL

    def __init__(self, int profile, bytes key, bint outbound):
        cdef SessionState hot
        cdef void* ctx = NULL
        cdef int rc
        cdef const void* p
        if self.ctx != NULL:
            raise ValueError("srtp: context already initialised")
        policy = _policy(profile, key, outbound)
        p = <const void*><uintptr_t>int(ffi.cast("uintptr_t", policy._policy))
        capture_begin()
        rc = _srtp_create(&ctx, p)
        capture_end(&hot)
        if rc != 0:
            raise ValueError(srtp_error_reason(rc))
        _adopt(self, ctx, hot, profile, outbound)

    def __dealloc__(self):
        if self.ctx != NULL:
            _srtp_dealloc(self.ctx)
            self.ctx = NULL

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


def _policy(int profile, bytes key, bint outbound) -> Policy:
    """The pylibsrtp policy of one direction (its key buffer must outlive srtp_create, not the session)."""
    if profile not in KEY_LENGTHS:
        raise ValueError(f"srtp: unsupported profile {profile}")
    if len(key) != KEY_LENGTHS[profile]:
        raise ValueError(f"srtp: key must be {KEY_LENGTHS[profile]} bytes for profile {profile}, got {len(key)}")
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND,
                    srtp_profile=profile or PROFILE_AES128_CM_SHA1_80)
    if profile == PROFILE_PLAIN:
        _plain(policy)
    policy.allow_repeat_tx = bool(outbound)
    policy.window_size = 512 if outbound else 1024
    ensure_installed()  # before the first session: AES-CM-80 then runs on fastpath.crypto_kernel's functions
    return policy


cdef void _adopt(SrtpContext self, void* ctx, SessionState hot, int profile, bint outbound) noexcept:
    self.ctx = ctx
    self.hot = hot
    if profile != PROFILE_AES128_CM_SHA1_80:
        # GCM sessions have no HMAC and libsrtp's own cipher: what was captured is the key derivation's
        # AES-ICM state, freed already.
        self.hot.cipher = NULL
        self.hot.auth = NULL
    self.profile = profile
    self.outbound = outbound


# ---- the allocation thread ----------------------------------------------------------------------------------------
# One pthread per process (made on the first context_pair, again after a fork), started with every signal blocked.
# A caller posts one job (two policies) under _mu, signals _wake and waits on _done with the GIL released; the thread
# creates both sessions, marks the job done and broadcasts _done. One job at a time: a second caller waits until
# _job is NULL again.

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_create(pthread_t* thread, const void* attr, void* (*start)(void*) noexcept nogil, void* arg)
    int pthread_detach(pthread_t thread)
    int pthread_mutex_init(pthread_mutex_t* mutex, const void* attr)
    int pthread_mutex_lock(pthread_mutex_t* mutex)
    int pthread_mutex_unlock(pthread_mutex_t* mutex)
    int pthread_cond_init(pthread_cond_t* cond, const void* attr)
    int pthread_cond_wait(pthread_cond_t* cond, pthread_mutex_t* mutex)
    int pthread_cond_signal(pthread_cond_t* cond)
    int pthread_cond_broadcast(pthread_cond_t* cond)
    int pthread_sigmask(int how, const sigset_t* set, sigset_t* old)
    enum:
        SIG_SETMASK


ctypedef struct AllocJob:
    const void* policies[2]
    void* sessions[2]
    SessionState hot[2]
    int status[2]
    int done


cdef pthread_mutex_t _mu
cdef pthread_cond_t _wake
cdef pthread_cond_t _done
cdef AllocJob* _job = NULL
cdef pid_t _thread_pid = 0      # the process whose allocation thread runs (0: none yet)
cdef unsigned long _jobs_run = 0


cdef void* _allocation_thread(void* arg) noexcept nogil:
    global _job, _jobs_run
    cdef AllocJob* job
    cdef int i
    pthread_mutex_lock(&_mu)
    while True:
        while _job == NULL or _job.done:
            pthread_cond_wait(&_wake, &_mu)
        job = _job
        pthread_mutex_unlock(&_mu)
        for i in range(2):
            capture_begin()
            job.status[i] = _srtp_create(&job.sessions[i], job.policies[i])
            capture_end(&job.hot[i])
        pthread_mutex_lock(&_mu)
        job.done = 1
        _job = NULL
        _jobs_run += 1
        pthread_cond_broadcast(&_done)
    return NULL


cdef int _ensure_thread() except -1:
    global _thread_pid, _job
    cdef pid_t pid = getpid()
    cdef pthread_t thread
    cdef sigset_t all_signals, old
    cdef int rc
    if _thread_pid == pid:
        return 0
    # First use, or a child after fork(): the parent's thread does not exist here, its locks may be held.
    pthread_mutex_init(&_mu, NULL)
    pthread_cond_init(&_wake, NULL)
    pthread_cond_init(&_done, NULL)
    _job = NULL
    sigfillset(&all_signals)
    pthread_sigmask(SIG_SETMASK, &all_signals, &old)  # the thread inherits it: signals stay with Python's threads
    rc = pthread_create(&thread, NULL, _allocation_thread, NULL)
    pthread_sigmask(SIG_SETMASK, &old, NULL)
    if rc != 0:
        raise OSError(rc, "srtp: cannot start the allocation thread")
    pthread_detach(thread)
    _thread_pid = pid
    return 0


def allocation_jobs() -> int:
    """How many context pairs the allocation thread has created in this process (for tests)."""
    return _jobs_run


def context_pair(int profile, bytes local_key, bytes remote_key) -> tuple:
    """(inbound, outbound) contexts for one transport, their libsrtp sessions created on one long-lived thread.

    glibc serves each thread from its own malloc arena, so every libsrtp/OpenSSL allocation of a worker's
    sessions lands packed together in that thread's arena instead of scattered between Python objects on the
    main heap. With a thousand subscribers the per-packet protect touches each session's cipher and HMAC state
    once per packet; packing them measurably lowers the cache and TLB misses (bench: the limit loop with its
    sessions scattered between other allocations costs +0.4 us per packet at 1,000 destinations).

    The thread is a plain pthread of this module (not a Python thread): the policies are built here, the thread only
    runs ``srtp_create`` twice, and the caller waits for it with the GIL released; the hand-off costs a condition
    variable's signal and wake-up each way, about a fifth of what a ``ThreadPoolExecutor`` submit and
    ``Future.result`` cost."""
    cdef AllocJob job
    cdef SrtpContext rx, tx
    cdef int i
    policies = (_policy(profile, remote_key, False), _policy(profile, local_key, True))
    memset(&job, 0, sizeof(job))
    for i in range(2):
        job.policies[i] = <const void*><uintptr_t>int(ffi.cast("uintptr_t", policies[i]._policy))
    _ensure_thread()
    with nogil:
        _post(&job)
    for i in range(2):
        if job.status[i] != 0:
            for i in range(2):
                if job.status[i] == 0:
                    _srtp_dealloc(job.sessions[i])
            raise ValueError(srtp_error_reason(job.status[0] or job.status[1]))
    rx = SrtpContext.__new__(SrtpContext)
    _adopt(rx, job.sessions[0], job.hot[0], profile, False)
    tx = SrtpContext.__new__(SrtpContext)
    _adopt(tx, job.sessions[1], job.hot[1], profile, True)
    return rx, tx


cdef void _post(AllocJob* job) noexcept nogil:
    global _job
    pthread_mutex_lock(&_mu)
    while _job != NULL:
        pthread_cond_wait(&_done, &_mu)
    _job = job
    pthread_cond_signal(&_wake)
    while not job.done:
        pthread_cond_wait(&_done, &_mu)
    pthread_mutex_unlock(&_mu)
