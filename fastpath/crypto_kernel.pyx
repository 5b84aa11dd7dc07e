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
that the Engine can prefetch them one subscriber ahead (``prefetch_session``), and it owns the HMAC batches
(``hmac_defer``/``hmac_flush``): the tags of a send arena's packets computed together with OpenSSL's multi-buffer
SHA-1, after a start-up self-test against the one-at-a-time path (``install(hmac_batch=False)`` keeps that path).

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

The process chooses once, before its first SRTP session: ``install(srtp_crypto="libsrtp")`` keeps libsrtp's own
functions, ``install(hmac_batch=False)`` computes every tag at once; a worker calls it with its settings
(``mediarouter serve --srtp-crypto``, ``--no-hmac-batch``). A process that never calls it gets the defaults
(both replaced, tags batched) with its first ``SrtpContext`` or ``Engine`` (:func:`ensure_installed`).
``installed()`` says which functions are in use and why.
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

cdef extern from *:
    """
    /* The batch that protects on this thread queue their HMAC tags in (hmac_defer), or NULL. */
    static __thread void* mr_hmac_batch;
    """
    void* mr_hmac_batch


# ---- OpenSSL (<openssl/sha.h>, <openssl/aes.h>, <openssl/modes.h>; layouts unchanged since 1.0) -----------------

ctypedef struct SHA_CTX:
    unsigned int h0, h1, h2, h3, h4
    unsigned int Nl, Nh
    unsigned int data[16]
    unsigned int num

ctypedef struct AES_KEY:
    unsigned int rd_key[60]
    int rounds

# crypto/sha/asm/sha1-mb-x86_64.pl: n4x groups of 4 lanes, each lane its own state and its own run of whole blocks
# (a lane with 0 blocks is left alone); SHA-NI CPUs take a path that interleaves two lanes.
ctypedef struct SHA1_MB_CTX:
    unsigned int A[8]
    unsigned int B[8]
    unsigned int C[8]
    unsigned int D[8]
    unsigned int E[8]

ctypedef struct HASH_DESC:
    const unsigned char* ptr
    int blocks

ctypedef void (*sha1_multi_block_t)(SHA1_MB_CTX* ctx, const HASH_DESC* desc, int n4x) noexcept nogil
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
cdef sha1_multi_block_t _sha1_mb = NULL     # set once the batched path has passed its self-test
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
    cdef HmacBatch* b = <HmacBatch*>mr_hmac_batch
    memcpy(&box.work, &box.inner, sizeof(SHA_CTX))
    if b != NULL:
        b.open = -1
    return ERR_OK


cdef int _hmac_update(void* state, const uint8_t* buffer, int octets) noexcept nogil:
    cdef HmacBatch* b = <HmacBatch*>mr_hmac_batch
    if octets < 0:
        return ERR_BAD_PARAM
    if b != NULL:
        if b.open < 0 and b.n < HMAC_BATCH_MAX:
            b.jobs[b.n].box = state                 # queued at the compute that follows (libsrtp: start,
            b.jobs[b.n].data = buffer               # update with the packet, compute with the ROC)
            b.jobs[b.n].length = octets
            b.open = b.n
            return ERR_OK
        _hmac_unqueue(b, <HmacBox*>state)
    if octets and _sha1_update(&(<HmacBox*>state).work, buffer, <size_t>octets) != 1:
        return ERR_AUTH_FAIL
    return ERR_OK


cdef inline void _hmac_unqueue(HmacBatch* b, HmacBox* box) noexcept nogil:
    """Hash the open job's bytes into box.work after all: this tag is computed at once."""
    cdef HmacJob* j
    if b.open >= 0:
        j = &b.jobs[b.open]
        b.open = -1
        if j.length:
            _sha1_update(&box.work, j.data, <size_t>j.length)


cdef int _hmac_compute(void* state, const uint8_t* buffer, int octets, int tag_len, uint8_t* tag) noexcept nogil:
    cdef HmacBox* box = <HmacBox*>state
    cdef HmacBatch* b = <HmacBatch*>mr_hmac_batch
    cdef uint8_t digest[SHA1_DIGEST]
    if tag_len < 0 or tag_len > SHA1_DIGEST or octets < 0:
        return ERR_BAD_PARAM
    if b != NULL and b.open >= 0:
        if b.jobs[b.open].box == state and octets <= HMAC_TRAILER_MAX:
            _hmac_queue(b, buffer, octets, tag_len, tag)
            return ERR_OK
        _hmac_unqueue(b, box)
    if octets and _sha1_update(&box.work, buffer, <size_t>octets) != 1:
        return ERR_AUTH_FAIL
    _sha1_final(digest, &box.work)
    memcpy(&box.work, &box.outer, sizeof(SHA_CTX))
    _sha1_update(&box.work, digest, SHA1_DIGEST)
    _sha1_final(digest, &box.work)
    memcpy(tag, digest, <size_t>tag_len)
    return ERR_OK


# ---- HMAC batches -------------------------------------------------------------------------------------------------
#
# SHA-1 is a chain: each 64-byte block needs the previous one's result, so one packet's HMAC leaves most of the
# SHA-NI (or SIMD) units idle. A fan-out protects many packets with different keys before it sends any, so the
# Engine lets the tags wait in a batch (hmac_defer) and computes them together before the send (hmac_flush):
# OpenSSL's sha1_multi_block hashes up to four packets of one size at once, from each session's precomputed
# K^ipad and K^opad states. The result is the same HMAC (the install self-test compares the two paths, byte for byte).

cdef enum:
    HMAC_TRAILER_MAX = 16                # bytes libsrtp appends at compute (the 4-byte ROC); tail <= 2 blocks


cdef HmacBatch* hmac_batch_new() noexcept nogil:
    cdef HmacBatch* b = <HmacBatch*>zalloc_lines(sizeof(HmacBatch))
    if b != NULL:
        b.open = -1
    return b


cdef void hmac_defer(HmacBatch* b) noexcept nogil:
    """Protects on this thread queue their tags in b (NULL: compute them at once). Only while the batched path
    is installed; a batch must be flushed before the memory its packets are in is sent, reused or freed."""
    global mr_hmac_batch
    mr_hmac_batch = b if _sha1_mb != NULL else NULL


cdef inline void _put_be32(uint8_t* p, unsigned int v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef void _hmac_queue(HmacBatch* b, const uint8_t* trailer, int octets, int tag_len, uint8_t* tag) noexcept nogil:
    """Finish the open job: the last partial block of its bytes, the trailer, SHA-1 padding and the length of
    K^ipad || bytes || trailer in bits, in the job's tail."""
    cdef HmacJob* j = &b.jobs[b.open]
    cdef int rem = j.length % SHA1_BLOCK
    cdef int t = rem + octets
    cdef int end = SHA1_BLOCK if t + 9 <= SHA1_BLOCK else 2 * SHA1_BLOCK
    cdef unsigned long long bits = 8 * (<unsigned long long>SHA1_BLOCK + <unsigned long long>j.length + octets)
    j.blocks = j.length // SHA1_BLOCK
    memcpy(j.tail, j.data + <size_t>j.blocks * SHA1_BLOCK, <size_t>rem)
    if octets:
        memcpy(j.tail + rem, trailer, <size_t>octets)
    j.tail[t] = 0x80
    memset(j.tail + t + 1, 0, <size_t>(end - t - 1))
    _put_be32(j.tail + end - 8, <unsigned int>(bits >> 32))
    _put_be32(j.tail + end - 4, <unsigned int>bits)
    j.tail_blocks = end // SHA1_BLOCK
    j.tag = tag
    j.tag_len = tag_len
    b.n += 1
    b.open = -1


cdef inline void _lane_load(SHA1_MB_CTX* ctx, int i, const SHA_CTX* s) noexcept nogil:
    ctx.A[i] = s.h0
    ctx.B[i] = s.h1
    ctx.C[i] = s.h2
    ctx.D[i] = s.h3
    ctx.E[i] = s.h4


cdef inline void _lane_digest(const SHA1_MB_CTX* ctx, int i, uint8_t* out) noexcept nogil:
    _put_be32(out, ctx.A[i])
    _put_be32(out + 4, ctx.B[i])
    _put_be32(out + 8, ctx.C[i])
    _put_be32(out + 12, ctx.D[i])
    _put_be32(out + 16, ctx.E[i])


cdef void hmac_flush(HmacBatch* b) noexcept nogil:
    """Write every queued tag, four packets per sha1_multi_block call (inner whole blocks, inner tails, outer)."""
    cdef SHA1_MB_CTX ctx
    cdef HASH_DESC desc[4]
    cdef uint8_t outer[4][SHA1_BLOCK]
    cdef uint8_t digest[SHA1_DIGEST]
    cdef HmacJob* j
    cdef int g = 0, lanes, i
    if b == NULL:
        return
    b.open = -1                                     # a protect that failed half-way queued nothing
    while g < b.n:
        # Lanes of one call hash the same number of blocks: OpenSSL's SHA-NI path gives wrong digests for a pair of
        # lanes shorter than another pair (it serves TLS records of equal length). Consecutive tags of a fan-out
        # are mostly the same packet size, so this costs little.
        lanes = 1
        while lanes < 4 and g + lanes < b.n and b.jobs[g + lanes].blocks == b.jobs[g].blocks \
                and b.jobs[g + lanes].tail_blocks == b.jobs[g].tail_blocks:
            lanes += 1
        memset(&ctx, 0, sizeof(ctx))
        for i in range(4):
            desc[i].ptr = outer[0]
            desc[i].blocks = 0
        for i in range(lanes):
            j = &b.jobs[g + i]
            _lane_load(&ctx, i, &(<HmacBox*>j.box).inner)
            desc[i].ptr = j.data
            desc[i].blocks = j.blocks
        _sha1_mb(&ctx, desc, 1)
        for i in range(lanes):
            j = &b.jobs[g + i]
            desc[i].ptr = j.tail
            desc[i].blocks = j.tail_blocks
        _sha1_mb(&ctx, desc, 1)
        for i in range(lanes):
            j = &b.jobs[g + i]
            _lane_digest(&ctx, i, outer[i])
            outer[i][SHA1_DIGEST] = 0x80
            memset(outer[i] + SHA1_DIGEST + 1, 0, SHA1_BLOCK - SHA1_DIGEST - 1 - 8)
            _put_be32(outer[i] + SHA1_BLOCK - 8, 0)
            _put_be32(outer[i] + SHA1_BLOCK - 4, 8 * (SHA1_BLOCK + SHA1_DIGEST))
            _lane_load(&ctx, i, &(<HmacBox*>j.box).outer)
            desc[i].ptr = outer[i]
            desc[i].blocks = 1
        _sha1_mb(&ctx, desc, 1)
        for i in range(lanes):
            j = &b.jobs[g + i]
            _lane_digest(&ctx, i, digest)
            memcpy(j.tag, digest, <size_t>j.tag_len)
        g += lanes
    b.n = 0
    explicit_bzero(outer, sizeof(outer))


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


def _install_hmac(symbols: dict[str, int], hmac_batch: bool) -> str:
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
    batches = _install_batches(symbols) if hmac_batch else "; tags one at a time: hmac_batch off"
    return "mediarouter (precomputed HMAC pads over OpenSSL SHA1" + batches + ")"


# Lengths the self-test authenticates: empty, around each block boundary, RTP audio and video sizes.
_SELFTEST_LENGTHS = (0, 1, 12, 51, 52, 55, 56, 63, 64, 65, 100, 119, 120, 127, 128, 129, 1000, 1200, 1210, 1214,
                     512, 1200, 64, 123, 1214, 1214, 1214, 1214, 64, 64, 1200, 12)


def _install_batches(symbols: dict[str, int]) -> str:
    """Turn on batched tags if sha1_multi_block is there and gives, for every test length and batch size, the
    tags the one-at-a-time path gives."""
    global _sha1_mb
    address = _symbols("sha1_multi_block")["sha1_multi_block"]
    if not address:
        return "; tags one at a time: no sha1_multi_block"
    _sha1_mb = <sha1_multi_block_t><uintptr_t>address
    if not _selftest_batches():
        _sha1_mb = NULL
        return "; tags one at a time: the batched self-test failed"
    return "; tags in batches of 4 with OpenSSL's multi-buffer SHA-1"


def _selftest_batches() -> bool:
    global mr_hmac_batch
    cdef HmacBatch* b = hmac_batch_new()
    cdef HmacBox* boxes[3]
    cdef bytes key, data, roc
    cdef list cases = [], expected = []
    cdef uint8_t* tags = NULL
    cdef int i, k, n
    if b == NULL:
        return False
    tags = <uint8_t*>zalloc_lines(HMAC_BATCH_MAX * 16)
    for k in range(3):
        boxes[k] = <HmacBox*>zalloc_lines(sizeof(HmacBox))
    try:
        if tags == NULL or boxes[0] == NULL or boxes[1] == NULL or boxes[2] == NULL:
            return False
        for k in range(3):
            key = os.urandom(20)
            _hmac_init(boxes[k], key, 20)
        for i, length in enumerate(_SELFTEST_LENGTHS * 2):     # mixed sizes and sessions
            cases.append((i % 3, os.urandom(length), os.urandom(4)))
        for k, data, roc in cases:
            _hmac_start(boxes[k])
            _hmac_update(boxes[k], data, len(data))
            _hmac_compute(boxes[k], roc, 4, 10, tags)
            expected.append(tags[:10])
        for n in (1, 2, 3, 4, 5, 7, 9, 27, len(cases)):       # batch sizes, by prefix
            mr_hmac_batch = b
            try:
                for i in range(n):
                    k, data, roc = cases[i]
                    _hmac_start(boxes[k])
                    _hmac_update(boxes[k], data, len(data))
                    _hmac_compute(boxes[k], roc, 4, 10, tags + 16 * i)
            finally:
                mr_hmac_batch = NULL
            if b.n != n:
                return False
            hmac_flush(b)
            if any(tags[16 * i:16 * i + 10] != expected[i] for i in range(n)):
                return False
        return True
    finally:
        for k in range(3):
            if boxes[k] != NULL:
                explicit_bzero(boxes[k], sizeof(HmacBox))
                free(boxes[k])
        free(tags)
        free(b)


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


SRTP_CRYPTO = ("mediarouter", "libsrtp")
_chosen: tuple[str, bool] | None = None


def install(srtp_crypto: str = "mediarouter", hmac_batch: bool = True) -> dict[str, str]:
    """Replace libsrtp's HMAC-SHA1 and AES-ICM-128 with these (``srtp_crypto="mediarouter"``) or keep libsrtp's
    (``"libsrtp"``), with the tags batched or not; returns :func:`installed`.

    Once per process, before its first SRTP session: a second call with the same choice changes nothing, one
    with another choice raises RuntimeError (sessions made already keep the functions they got)."""
    global _chosen
    if srtp_crypto not in SRTP_CRYPTO:
        raise ValueError(f"srtp_crypto must be one of {', '.join(SRTP_CRYPTO)}, not {srtp_crypto!r}")
    choice = (srtp_crypto, bool(hmac_batch))
    if _chosen is not None:
        if _chosen != choice:
            raise RuntimeError(f"the SRTP crypto kernel is installed already (srtp_crypto={_chosen[0]!r}, "
                               f"hmac_batch={_chosen[1]}); install() must come before the first SRTP session")
        return installed()
    _chosen = choice
    assert 3 * sizeof(SHA_CTX) <= 64 * HMAC_HOT_LINES and sizeof(IcmBox) - sizeof(srtp_cipher_t) <= 64 * ICM_HOT_LINES
    if srtp_crypto == "libsrtp":
        for name in _status:
            _status[name] = "libsrtp (srtp_crypto=libsrtp)"
        return installed()
    for name, needs in _NEEDS.items():
        symbols = _symbols(*needs)
        missing = [symbol for symbol, address in symbols.items() if not address]
        if missing:
            _status[name] = f"libsrtp (pylibsrtp's library lacks {', '.join(missing)})"
        elif name == "hmac_sha1":
            _status[name] = _install_hmac(symbols, choice[1])
        else:
            _status[name] = _install_icm(symbols)
    return installed()


def ensure_installed() -> None:
    """The defaults of :func:`install` unless the process chose already: called before a session or an Engine is
    made, so that every session of a process uses the same functions."""
    if _chosen is None:
        install()


def installed() -> dict[str, str]:
    """What new libsrtp sessions use per primitive: "mediarouter (...)" or "libsrtp (reason)"."""
    return dict(_status)
