"""The AES-CM-80 crypto functions libsrtp calls per packet, installed into its crypto kernel.

Owns two libsrtp crypto types and their installation, with libsrtp's public ``srtp_replace_auth_type`` and
``srtp_replace_cipher_type``, when ``fastpath.srtp`` is imported (before any session exists):

- SRTP_HMAC_SHA1 (the 80-bit tag): HMAC (RFC 2104) over OpenSSL's ``SHA1_Update``/``SHA1_Final``;
- SRTP_AES_ICM_128 (the payload cipher, and libsrtp's key derivation): AES counter mode through OpenSSL's
  ``CRYPTO_ctr128_encrypt_ctr32`` driving its AES-NI routine ``aesni_ctr32_encrypt_blocks``.

libsrtp stays the SRTP engine (key derivation, replay windows, framing, GCM); these are the primitives under it,
computed by the same OpenSSL code of the pylibsrtp wheel (its exported symbols, looked up by name). libsrtp runs
its own known-answer tests on each type while replacing it (RFC 2202 case 0; its AES-ICM-128 vector) and a
failure, a missing symbol or a CPU without AES-NI leaves libsrtp's function in place. Sessions made after
installation use them. It also records which state blocks a new session got (``capture_begin``/``capture_end``) so
that the Engine can prefetch them one subscriber ahead (``prefetch_session``).

Why by hand: libsrtp built against OpenSSL 3 reaches both primitives through EVP and re-initialises an EVP
context for every packet: ``EVP_MAC_init`` with ``EVP_MD_CTX_copy_ex``/``sha1_copyctx`` for the tag (13 % of a
worker's CPU samples at 1,000 AES-CM-80 subscribers under py-spy), ``EVP_EncryptInit_ex`` with the packet's IV
(``evp_cipher_init_internal``, ``ossl_cipher_generic_einit``: 6-10 %). HMAC needs only the digest states after
the key blocks and counter mode only the key schedule, so ``init`` computes those once and a packet costs the
SHA-1 and AES work plus a few copies. Each session's state is one 64-byte-aligned block instead of about ten
OpenSSL objects, which also shortens the per-subscriber working set at a thousand subscribers.

AEAD-AES-128-GCM keeps libsrtp's OpenSSL cipher: the same replacement over OpenSSL's ``CRYPTO_gcm128_*`` functions
was measured at -0.17 to +0.08 us per 1,200-byte protect, because EVP's GCM runs the stitched AVX-512 code that the
GCM128 API does not reach (it encrypts, then hashes, in two passes).

``MEDIAROUTER_SRTP_CRYPTO=libsrtp`` in the environment keeps libsrtp's own functions; ``installed()`` says which
are in use and why.
"""

from libc.stdint cimport uint8_t, uintptr_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from fastpath.includes.linux cimport zalloc_lines

import ctypes
import os

import pylibsrtp
import pylibsrtp._binding

cdef extern from "<string.h>" nogil:
    void explicit_bzero(void* s, size_t n)

cdef extern from *:
    void __builtin_prefetch(const void* address) nogil

cdef extern from *:
    """
    static int mr_cpu_has_aesni(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_cpu_init();
        return __builtin_cpu_supports("aes");
    #else
        return 0;
    #endif
    }
    """
    int mr_cpu_has_aesni() nogil

cdef extern from *:
    """
    /* The states allocated while this thread captures (see capture_begin in crypto_kernel.pxd). */
    static __thread int mr_capturing;
    static __thread void* mr_captured_cipher;
    static __thread void* mr_captured_auth;
    """
    int mr_capturing
    void* mr_captured_cipher
    void* mr_captured_auth


# ---- OpenSSL (<openssl/sha.h>, <openssl/aes.h>, <openssl/modes.h>; layouts unchanged since 1.0) -----------------

ctypedef struct SHA_CTX:
    unsigned int h0, h1, h2, h3, h4
    unsigned int Nl, Nh
    unsigned int data[16]
    unsigned int num

ctypedef struct AES_KEY:
    unsigned int rd_key[60]
    int rounds

ctypedef int (*sha1_init_t)(SHA_CTX* c) noexcept nogil
ctypedef int (*sha1_update_t)(SHA_CTX* c, const void* data, size_t length) noexcept nogil
ctypedef int (*sha1_final_t)(unsigned char* md, SHA_CTX* c) noexcept nogil
ctypedef int (*aes_set_key_t)(const unsigned char* user_key, int bits, AES_KEY* key) noexcept nogil
ctypedef void (*ctr128_f)(const unsigned char* inp, unsigned char* out, size_t blocks, const void* key,
                          const unsigned char* ivec) noexcept nogil
ctypedef void (*ctr128_encrypt_ctr32_t)(const unsigned char* inp, unsigned char* out, size_t length,
                                        const void* key, unsigned char* ivec, unsigned char* ecount_buf,
                                        unsigned int* num, ctr128_f ctr) noexcept nogil

# ---- libsrtp 2.7 (crypto/include/auth.h, cipher.h; type ids are uint32_t, statuses int-sized enums) ----------

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

cdef struct srtp_cipher_t
ctypedef int (*cipher_alloc_t)(srtp_cipher_t** cp, int key_len, int tag_len) noexcept nogil
ctypedef int (*cipher_dealloc_t)(srtp_cipher_t* cp) noexcept nogil
ctypedef int (*cipher_init_t)(void* state, const uint8_t* key) noexcept nogil
ctypedef int (*cipher_set_aad_t)(void* state, const uint8_t* aad, unsigned int aad_len) noexcept nogil
ctypedef int (*cipher_encrypt_t)(void* state, uint8_t* buffer, unsigned int* octets) noexcept nogil
ctypedef int (*cipher_set_iv_t)(void* state, uint8_t* iv, int direction) noexcept nogil
ctypedef int (*cipher_get_tag_t)(void* state, uint8_t* tag, unsigned int* length) noexcept nogil

cdef struct srtp_cipher_type_t:
    cipher_alloc_t alloc
    cipher_dealloc_t dealloc
    cipher_init_t init
    cipher_set_aad_t set_aad
    cipher_encrypt_t encrypt
    cipher_encrypt_t decrypt
    cipher_set_iv_t set_iv
    cipher_get_tag_t get_tag
    const char* description
    const void* test_data
    unsigned int id

cdef struct srtp_cipher_t:
    const srtp_cipher_type_t* type
    void* state
    int key_len
    int algorithm

ctypedef int (*replace_auth_t)(const srtp_auth_type_t* at, unsigned int id) noexcept nogil
ctypedef int (*replace_cipher_t)(const srtp_cipher_type_t* ct, unsigned int id) noexcept nogil

cdef enum:
    SRTP_AES_ICM_128 = 1
    SRTP_HMAC_SHA1 = 3
    ERR_OK = 0
    ERR_BAD_PARAM = 2
    ERR_ALLOC_FAIL = 3
    ERR_AUTH_FAIL = 7
    SHA1_DIGEST = 20
    SHA1_BLOCK = 64
    AES_128_KEY = 16
    SRTP_SALT = 14
    AES_ICM_128_KEY_WITH_SALT = 30  # SRTP_AES_ICM_128_KEY_LEN_WSALT

# One HMAC's state: the digests after K^ipad and K^opad and the running one (the first 288 bytes a packet touches),
# then libsrtp's srtp_auth_t, in one cache-line-aligned allocation.
ctypedef struct HmacBox:
    SHA_CTX inner
    SHA_CTX work
    SHA_CTX outer
    srtp_auth_t auth

# One AES-ICM's state: the running counter block (salt XOR packet IV), the salt, the keystream of a partly used
# block and how much of it is used, the AES-NI key schedule, then libsrtp's srtp_cipher_t.
ctypedef struct IcmBox:
    uint8_t counter[16]
    uint8_t offset[16]
    uint8_t ecount[16]
    unsigned int num
    AES_KEY key
    srtp_cipher_t cipher

# Lines a protect touches from a block's start: HmacBox's three SHA_CTX (288 bytes), IcmBox up to key.rounds (296).
cdef enum:
    HMAC_HOT_LINES = 5
    ICM_HOT_LINES = 5

cdef sha1_init_t _sha1_init = NULL
cdef sha1_update_t _sha1_update = NULL
cdef sha1_final_t _sha1_final = NULL
cdef aes_set_key_t _aes_set_key = NULL
cdef ctr128_f _aes_ctr32_blocks = NULL
cdef ctr128_encrypt_ctr32_t _ctr128_encrypt = NULL
cdef srtp_auth_type_t _hmac_type
cdef srtp_cipher_type_t _icm_type
cdef const char* _HMAC_DESCRIPTION = b"hmac sha-1 (mediarouter: precomputed pads over OpenSSL SHA1)"
cdef const char* _ICM_DESCRIPTION = b"AES-128 counter mode (mediarouter: OpenSSL AES-NI ctr32)"


# ---- HMAC-SHA1 -------------------------------------------------------------------------------------------------

cdef int _hmac_alloc(srtp_auth_t** ap, int key_len, int out_len) noexcept nogil:
    global mr_captured_auth
    if out_len < 0 or out_len > SHA1_DIGEST or key_len < 0 or key_len > SHA1_BLOCK:
        return ERR_BAD_PARAM
    cdef HmacBox* box = <HmacBox*>zalloc_lines(sizeof(HmacBox))
    if box == NULL:
        return ERR_ALLOC_FAIL
    if mr_capturing and mr_captured_auth == NULL:
        mr_captured_auth = box
    box.auth.type = &_hmac_type
    box.auth.state = box
    box.auth.out_len = out_len
    box.auth.key_len = key_len
    box.auth.prefix_len = 0
    ap[0] = &box.auth
    return ERR_OK


cdef int _hmac_dealloc(srtp_auth_t* a) noexcept nogil:
    cdef void* box = a.state
    explicit_bzero(box, sizeof(HmacBox))  # the digest states are as secret as the key
    free(box)
    return ERR_OK


cdef int _hmac_init(void* state, const uint8_t* key, int key_len) noexcept nogil:
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


cdef int _hmac_start(void* state) noexcept nogil:
    cdef HmacBox* box = <HmacBox*>state
    memcpy(&box.work, &box.inner, sizeof(SHA_CTX))
    return ERR_OK


cdef int _hmac_update(void* state, const uint8_t* buffer, int octets) noexcept nogil:
    if octets < 0:
        return ERR_BAD_PARAM
    if octets and _sha1_update(&(<HmacBox*>state).work, buffer, <size_t>octets) != 1:
        return ERR_AUTH_FAIL
    return ERR_OK


cdef int _hmac_compute(void* state, const uint8_t* buffer, int octets, int tag_len, uint8_t* tag) noexcept nogil:
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


# ---- AES-ICM-128 (RFC 3711 4.1.1) -------------------------------------------------------------------------------

cdef int _icm_alloc(srtp_cipher_t** cp, int key_len, int tag_len) noexcept nogil:
    global mr_captured_cipher
    if key_len != AES_ICM_128_KEY_WITH_SALT:
        return ERR_BAD_PARAM
    cdef IcmBox* box = <IcmBox*>zalloc_lines(sizeof(IcmBox))
    if box == NULL:
        return ERR_ALLOC_FAIL
    if mr_capturing and mr_captured_cipher == NULL:
        mr_captured_cipher = box
    box.cipher.type = &_icm_type
    box.cipher.state = box
    box.cipher.key_len = key_len
    box.cipher.algorithm = SRTP_AES_ICM_128
    cp[0] = &box.cipher
    return ERR_OK


cdef int _icm_dealloc(srtp_cipher_t* c) noexcept nogil:
    cdef void* box = c.state
    explicit_bzero(box, sizeof(IcmBox))
    free(box)
    return ERR_OK


cdef int _icm_init(void* state, const uint8_t* key) noexcept nogil:
    # key is the 16-byte AES key followed by the 14-byte salt; the salt's last two counter octets stay zero.
    cdef IcmBox* box = <IcmBox*>state
    memset(box.offset, 0, 16)
    memcpy(box.offset, key + AES_128_KEY, SRTP_SALT)
    memcpy(box.counter, box.offset, 16)
    box.num = 0
    if _aes_set_key(key, 128, &box.key) != 0:
        return ERR_BAD_PARAM
    return ERR_OK


cdef int _icm_set_iv(void* state, uint8_t* iv, int direction) noexcept nogil:
    cdef IcmBox* box = <IcmBox*>state
    cdef int i
    for i in range(16):
        box.counter[i] = box.offset[i] ^ iv[i]
    box.num = 0
    return ERR_OK


cdef int _icm_encrypt(void* state, uint8_t* buffer, unsigned int* octets) noexcept nogil:
    # Counter mode is its own inverse; a call continues the keystream where the previous one stopped.
    cdef IcmBox* box = <IcmBox*>state
    _ctr128_encrypt(buffer, buffer, octets[0], &box.key, box.counter, box.ecount, &box.num, _aes_ctr32_blocks)
    return ERR_OK


# ---- what a session's packets touch, for prefetching ------------------------------------------------------------

cdef void capture_begin() noexcept nogil:
    global mr_capturing, mr_captured_cipher, mr_captured_auth
    mr_capturing = 1
    mr_captured_cipher = NULL
    mr_captured_auth = NULL


cdef void capture_end(SessionState* out) noexcept nogil:
    global mr_capturing
    mr_capturing = 0
    out.cipher = mr_captured_cipher
    out.auth = mr_captured_auth


cdef inline void prefetch_lines(const void* p, int lines) noexcept nogil:
    cdef int i
    for i in range(lines):
        __builtin_prefetch((<const uint8_t*>p) + 64 * i)


cdef void prefetch_session(const SessionState* s) noexcept nogil:
    if s.cipher != NULL:
        prefetch_lines(s.cipher, ICM_HOT_LINES)
    if s.auth != NULL:
        prefetch_lines(s.auth, HMAC_HOT_LINES)


# ---- installation -----------------------------------------------------------------------------------------------

def _symbols(*names: str) -> dict[str, int]:
    # The shared object cffi already loaded: dlopen returns its handle, dlsym finds its exported symbols.
    library = ctypes.CDLL(pylibsrtp._binding.__file__)
    found = {}
    for name in names:
        try:
            found[name] = ctypes.cast(getattr(library, name), ctypes.c_void_p).value or 0
        except AttributeError:
            found[name] = 0
    return found


def _reason(rc: int) -> str:
    return pylibsrtp.ERRORS[rc] if 0 <= rc < len(pylibsrtp.ERRORS) else f"error {rc}"


_status: dict[str, str] = {"hmac_sha1": "libsrtp (not installed)", "aes_icm_128": "libsrtp (not installed)"}


def _install_hmac(symbols: dict[str, int]) -> str:
    global _sha1_init, _sha1_update, _sha1_final
    cdef int rc
    _sha1_init = <sha1_init_t><uintptr_t>symbols["SHA1_Init"]
    _sha1_update = <sha1_update_t><uintptr_t>symbols["SHA1_Update"]
    _sha1_final = <sha1_final_t><uintptr_t>symbols["SHA1_Final"]
    _hmac_type.alloc = _hmac_alloc
    _hmac_type.dealloc = _hmac_dealloc
    _hmac_type.init = _hmac_init
    _hmac_type.compute = _hmac_compute
    _hmac_type.update = _hmac_update
    _hmac_type.start = _hmac_start
    _hmac_type.description = _HMAC_DESCRIPTION
    _hmac_type.test_data = <const void*><uintptr_t>symbols["srtp_hmac_test_case_0"]
    _hmac_type.id = SRTP_HMAC_SHA1
    rc = (<replace_auth_t><uintptr_t>symbols["srtp_replace_auth_type"])(&_hmac_type, SRTP_HMAC_SHA1)
    if rc != 0:
        return f"libsrtp (replacing its HMAC-SHA1 failed: {_reason(rc)})"
    return "mediarouter (precomputed HMAC pads over OpenSSL SHA1)"


def _install_icm(symbols: dict[str, int]) -> str:
    global _aes_set_key, _aes_ctr32_blocks, _ctr128_encrypt
    cdef int rc
    if not mr_cpu_has_aesni():
        return "libsrtp (this CPU has no AES-NI)"
    _aes_set_key = <aes_set_key_t><uintptr_t>symbols["aesni_set_encrypt_key"]
    _aes_ctr32_blocks = <ctr128_f><uintptr_t>symbols["aesni_ctr32_encrypt_blocks"]
    _ctr128_encrypt = <ctr128_encrypt_ctr32_t><uintptr_t>symbols["CRYPTO_ctr128_encrypt_ctr32"]
    _icm_type.alloc = _icm_alloc
    _icm_type.dealloc = _icm_dealloc
    _icm_type.init = _icm_init
    _icm_type.set_aad = NULL
    _icm_type.encrypt = _icm_encrypt
    _icm_type.decrypt = _icm_encrypt
    _icm_type.set_iv = _icm_set_iv
    _icm_type.get_tag = NULL
    _icm_type.description = _ICM_DESCRIPTION
    _icm_type.test_data = <const void*><uintptr_t>symbols["srtp_aes_icm_128_test_case_0"]
    _icm_type.id = SRTP_AES_ICM_128
    rc = (<replace_cipher_t><uintptr_t>symbols["srtp_replace_cipher_type"])(&_icm_type, SRTP_AES_ICM_128)
    if rc != 0:
        return f"libsrtp (replacing its AES-ICM-128 failed: {_reason(rc)})"
    return "mediarouter (OpenSSL AES-NI counter mode, key schedule once per session)"


_NEEDS = {
    "hmac_sha1": ("SHA1_Init", "SHA1_Update", "SHA1_Final", "srtp_replace_auth_type", "srtp_hmac_test_case_0"),
    "aes_icm_128": ("aesni_set_encrypt_key", "aesni_ctr32_encrypt_blocks", "CRYPTO_ctr128_encrypt_ctr32",
                    "srtp_replace_cipher_type", "srtp_aes_icm_128_test_case_0"),
}


def install() -> dict[str, str]:
    """Replace libsrtp's HMAC-SHA1 and AES-ICM-128 with these (once per process); returns :func:`installed`."""
    assert 3 * sizeof(SHA_CTX) <= 64 * HMAC_HOT_LINES and sizeof(IcmBox) - sizeof(srtp_cipher_t) <= 64 * ICM_HOT_LINES
    if os.environ.get("MEDIAROUTER_SRTP_CRYPTO", "").lower() == "libsrtp":
        for name, status in _status.items():
            if not status.startswith("mediarouter"):
                _status[name] = "libsrtp (MEDIAROUTER_SRTP_CRYPTO=libsrtp)"
        return installed()
    for name, needs in _NEEDS.items():
        if _status[name].startswith("mediarouter"):
            continue
        symbols = _symbols(*needs)
        missing = [symbol for symbol, address in symbols.items() if not address]
        if missing:
            _status[name] = f"libsrtp (pylibsrtp's library lacks {', '.join(missing)})"
        elif name == "hmac_sha1":
            _status[name] = _install_hmac(symbols)
        else:
            _status[name] = _install_icm(symbols)
    return installed()


def installed() -> dict[str, str]:
    """What new libsrtp sessions use per primitive: "mediarouter (...)" or "libsrtp (reason)"."""
    return dict(_status)
