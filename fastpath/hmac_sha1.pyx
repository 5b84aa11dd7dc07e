"""HMAC-SHA1 for libsrtp's AES-CM-80 profile: the auth function libsrtp calls per packet, installed in its crypto kernel.

Owns one libsrtp auth type (``srtp_auth_type_t``, libsrtp 2.7 ``crypto/include/auth.h``) for SRTP_HMAC_SHA1 and
its installation with libsrtp's public ``srtp_replace_auth_type`` when ``fastpath`` is imported, before any
session exists. libsrtp stays the SRTP engine (key derivation, replay window, AES, framing); only the keyed hash
is ours. Sessions created after installation use it; the libsrtp self-test (RFC 2202 case 0 from libsrtp's own
test data) runs on it during replacement and a failure leaves libsrtp's function in place.

Why by hand: libsrtp built against OpenSSL 3 (the pylibsrtp wheel) computes each tag through EVP_MAC, which
re-initialises the provider's HMAC context per packet (``EVP_MAC_init``, ``EVP_MD_CTX_copy_ex`` and
``sha1_copyctx`` for the inner and outer digests, parameter lookups, ``OPENSSL_cleanse``): 13 % of a worker's CPU
samples at 1,000 AES-CM-80 subscribers under py-spy, more than half of what SHA-1 itself costs. HMAC
(RFC 2104) needs only the digest states after the key blocks, so ``init`` absorbs K^ipad and K^opad once and a
packet costs two 96-byte copies plus the SHA-1 compressions, done by OpenSSL's ``SHA1_Update``/``SHA1_Final``
(the SHA-NI/AVX code of the same OpenSSL, exported by the wheel and looked up by name). The state of a session
is one 64-byte-aligned block instead of about ten OpenSSL objects, which also shortens the per-subscriber
working set at a thousand subscribers.

``MEDIAROUTER_SRTP_HMAC=libsrtp`` in the environment keeps libsrtp's own function (``installed()`` says which
is in use and why).
"""

from libc.stdint cimport uint8_t, uintptr_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

import ctypes
import os

import pylibsrtp
import pylibsrtp._binding

cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void** memptr, size_t alignment, size_t size)

cdef extern from "<string.h>" nogil:
    void explicit_bzero(void* s, size_t n)


# OpenSSL's SHA_CTX (<openssl/sha.h>, unchanged since 0.9.8): 96 bytes.
ctypedef struct SHA_CTX:
    unsigned int h0, h1, h2, h3, h4
    unsigned int Nl, Nh
    unsigned int data[16]
    unsigned int num

ctypedef int (*sha1_init_t)(SHA_CTX* c) noexcept nogil
ctypedef int (*sha1_update_t)(SHA_CTX* c, const void* data, size_t length) noexcept nogil
ctypedef int (*sha1_final_t)(unsigned char* md, SHA_CTX* c) noexcept nogil

# libsrtp 2.7 auth.h (srtp_auth_type_id_t is uint32_t; srtp_err_status_t an int-sized enum).
cdef struct srtp_auth_t
ctypedef int (*auth_alloc_t)(srtp_auth_t** ap, int key_len, int out_len) noexcept nogil
ctypedef int (*auth_dealloc_t)(srtp_auth_t* ap) noexcept nogil
ctypedef int (*auth_init_t)(void* state, const uint8_t* key, int key_len) noexcept nogil
ctypedef int (*auth_compute_t)(void* state, const uint8_t* buffer, int octets, int tag_len,
                               uint8_t* tag) noexcept nogil
ctypedef int (*auth_update_t)(void* state, const uint8_t* buffer, int octets) noexcept nogil
ctypedef int (*auth_start_t)(void* state) noexcept nogil

cdef struct srtp_auth_type_t:
    auth_alloc_t alloc
    auth_dealloc_t dealloc
    auth_init_t init
    auth_compute_t compute
    auth_update_t update
    auth_start_t start
    const char* description
    const void* test_data
    unsigned int id

cdef struct srtp_auth_t:
    const srtp_auth_type_t* type
    void* state
    int out_len
    int key_len
    int prefix_len

ctypedef int (*replace_auth_t)(const srtp_auth_type_t* at, unsigned int id) noexcept nogil

cdef enum:
    SRTP_HMAC_SHA1 = 3
    ERR_OK = 0
    ERR_BAD_PARAM = 2
    ERR_ALLOC_FAIL = 3
    ERR_AUTH_FAIL = 7
    SHA1_DIGEST = 20
    SHA1_BLOCK = 64

# One session's state: the digests after K^ipad and K^opad, the running one, and libsrtp's srtp_auth_t, in one
# cache-line-aligned allocation (inner, work and outer are the first 288 bytes a packet touches).
ctypedef struct HmacBox:
    SHA_CTX inner
    SHA_CTX work
    SHA_CTX outer
    srtp_auth_t auth

cdef sha1_init_t _sha1_init = NULL
cdef sha1_update_t _sha1_update = NULL
cdef sha1_final_t _sha1_final = NULL
cdef srtp_auth_type_t _type
cdef const char* _DESCRIPTION = b"mediarouter hmac sha-1 (precomputed pads, OpenSSL SHA1)"


cdef int _alloc(srtp_auth_t** ap, int key_len, int out_len) noexcept nogil:
    cdef void* mem = NULL
    cdef HmacBox* box
    if out_len < 0 or out_len > SHA1_DIGEST or key_len < 0:
        return ERR_BAD_PARAM
    if posix_memalign(&mem, 64, sizeof(HmacBox)) != 0:
        return ERR_ALLOC_FAIL
    memset(mem, 0, sizeof(HmacBox))
    box = <HmacBox*>mem
    box.auth.type = &_type
    box.auth.state = mem
    box.auth.out_len = out_len
    box.auth.key_len = key_len
    box.auth.prefix_len = 0
    ap[0] = &box.auth
    return ERR_OK


cdef int _dealloc(srtp_auth_t* a) noexcept nogil:
    cdef void* mem = a.state
    explicit_bzero(mem, sizeof(HmacBox))  # the digest states are as secret as the key
    free(mem)
    return ERR_OK


cdef int _init(void* state, const uint8_t* key, int key_len) noexcept nogil:
    cdef HmacBox* box = <HmacBox*>state
    cdef uint8_t block[SHA1_BLOCK]
    cdef int i
    if key_len < 0 or key_len > SHA1_BLOCK:  # SRTP's auth keys are 20 bytes (RFC 3711 8.2)
        return ERR_BAD_PARAM
    memset(block, 0, SHA1_BLOCK)
    if key_len > 0:
        memcpy(block, key, <size_t>key_len)
    for i in range(SHA1_BLOCK):
        block[i] ^= 0x36
    _sha1_init(&box.inner)
    _sha1_update(&box.inner, block, SHA1_BLOCK)
    for i in range(SHA1_BLOCK):
        block[i] ^= 0x36 ^ 0x5c
    _sha1_init(&box.outer)
    _sha1_update(&box.outer, block, SHA1_BLOCK)
    explicit_bzero(block, SHA1_BLOCK)
    memcpy(&box.work, &box.inner, sizeof(SHA_CTX))
    return ERR_OK


cdef int _start(void* state) noexcept nogil:
    cdef HmacBox* box = <HmacBox*>state
    memcpy(&box.work, &box.inner, sizeof(SHA_CTX))
    return ERR_OK


cdef int _update(void* state, const uint8_t* buffer, int octets) noexcept nogil:
    if octets < 0:
        return ERR_BAD_PARAM
    if octets and _sha1_update(&(<HmacBox*>state).work, buffer, <size_t>octets) != 1:
        return ERR_AUTH_FAIL
    return ERR_OK


cdef int _compute(void* state, const uint8_t* buffer, int octets, int tag_len, uint8_t* tag) noexcept nogil:
    cdef HmacBox* box = <HmacBox*>state
    cdef uint8_t digest[SHA1_DIGEST]
    if tag_len < 0 or tag_len > SHA1_DIGEST or octets < 0:
        return ERR_BAD_PARAM
    if octets and _sha1_update(&box.work, buffer, <size_t>octets) != 1:
        return ERR_AUTH_FAIL
    _sha1_final(digest, &box.work)
    memcpy(&box.work, &box.outer, sizeof(SHA_CTX))
    _sha1_update(&box.work, digest, SHA1_DIGEST)
    _sha1_final(digest, &box.work)
    memcpy(tag, digest, <size_t>tag_len)
    return ERR_OK


def _symbol(library: ctypes.CDLL, name: str) -> int:
    try:
        return ctypes.cast(getattr(library, name), ctypes.c_void_p).value or 0
    except AttributeError:
        return 0


_status = "not installed"


def install() -> str:
    """Replace libsrtp's HMAC-SHA1 with this one (once per process); returns :func:`installed`."""
    global _status, _sha1_init, _sha1_update, _sha1_final
    cdef int rc
    if _status.startswith("mediarouter"):
        return _status
    if os.environ.get("MEDIAROUTER_SRTP_HMAC", "").lower() == "libsrtp":
        _status = "libsrtp (MEDIAROUTER_SRTP_HMAC=libsrtp)"
        return _status
    # The shared object cffi already loaded: dlopen returns its handle, dlsym finds its exported symbols.
    library = ctypes.CDLL(pylibsrtp._binding.__file__)
    addresses = {name: _symbol(library, name) for name in
                 ("SHA1_Init", "SHA1_Update", "SHA1_Final", "srtp_replace_auth_type", "srtp_hmac_test_case_0")}
    missing = [name for name, address in addresses.items() if not address]
    if missing:
        _status = f"libsrtp (pylibsrtp's library lacks {', '.join(missing)})"
        return _status
    _sha1_init = <sha1_init_t><uintptr_t>addresses["SHA1_Init"]
    _sha1_update = <sha1_update_t><uintptr_t>addresses["SHA1_Update"]
    _sha1_final = <sha1_final_t><uintptr_t>addresses["SHA1_Final"]
    _type.alloc = _alloc
    _type.dealloc = _dealloc
    _type.init = _init
    _type.compute = _compute
    _type.update = _update
    _type.start = _start
    _type.description = _DESCRIPTION
    _type.test_data = <const void*><uintptr_t>addresses["srtp_hmac_test_case_0"]
    _type.id = SRTP_HMAC_SHA1
    rc = (<replace_auth_t><uintptr_t>addresses["srtp_replace_auth_type"])(&_type, SRTP_HMAC_SHA1)
    if rc != 0:
        reason = pylibsrtp.ERRORS[rc] if 0 <= rc < len(pylibsrtp.ERRORS) else f"error {rc}"
        _status = f"libsrtp (replacing its HMAC-SHA1 failed: {reason})"
        return _status
    _status = "mediarouter (precomputed HMAC pads over OpenSSL SHA1)"
    return _status


def installed() -> str:
    """Which HMAC-SHA1 new libsrtp sessions use: "mediarouter (...)" or "libsrtp (reason)"."""
    return _status
