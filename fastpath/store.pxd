# Per-stream packet store for NACK retransmission and duplicate detection: a power-of-two ring of fixed
# slots indexed by ext_seq & mask, each with a header {ext_seq, length, flags} so stale slots are never sent
# (LiveKit's bucket; docs/FORWARDING.md, Packet store). It holds decrypted packets with router-wide extension ids.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from fastpath.mem cimport fp_free as free, fp_malloc as malloc
from libc.string cimport memcpy

cdef enum:
    STORE_SLOT_BYTES = 1536        # larger packets are forwarded but not stored
    STORE_KEY = 1

ctypedef struct StoreSlot:
    int64_t ext_seq
    uint16_t length                # 0 = empty
    uint16_t flags


ctypedef struct PacketStore:
    StoreSlot* slots
    uint8_t* data
    uint32_t mask


cdef inline int store_init(PacketStore* s, uint32_t size) except -1:
    cdef uint32_t i
    if size == 0 or (size & (size - 1)) != 0:
        raise ValueError("store size must be a power of two")
    s.slots = <StoreSlot*>malloc(size * sizeof(StoreSlot))
    s.data = <uint8_t*>malloc(<size_t>size * STORE_SLOT_BYTES)
    if s.slots == NULL or s.data == NULL:
        free(s.slots)
        free(s.data)
        s.slots = NULL
        s.data = NULL
        raise MemoryError()
    for i in range(size):
        s.slots[i].length = 0
        s.slots[i].ext_seq = 0
    s.mask = size - 1
    return 0


cdef inline void store_clear(PacketStore* s) noexcept nogil:
    cdef uint32_t i
    if s.slots != NULL:
        for i in range(s.mask + 1):
            s.slots[i].length = 0


cdef inline void store_free(PacketStore* s) noexcept nogil:
    free(s.slots)
    free(s.data)
    s.slots = NULL
    s.data = NULL


cdef inline bint store_has(const PacketStore* s, int64_t ext_seq) noexcept nogil:
    cdef const StoreSlot* slot = &s.slots[ext_seq & s.mask]
    return slot.length != 0 and slot.ext_seq == ext_seq


cdef inline void store_put(PacketStore* s, int64_t ext_seq, const uint8_t* packet, int32_t length,
                           uint16_t flags) noexcept nogil:
    cdef uint32_t i = <uint32_t>(ext_seq & s.mask)
    if length <= 0 or length > STORE_SLOT_BYTES:
        s.slots[i].length = 0
        return
    memcpy(s.data + <size_t>i * STORE_SLOT_BYTES, packet, length)
    s.slots[i].ext_seq = ext_seq
    s.slots[i].length = <uint16_t>length
    s.slots[i].flags = flags


cdef inline const uint8_t* store_get(const PacketStore* s, int64_t ext_seq, int32_t* length) noexcept nogil:
    cdef uint32_t i = <uint32_t>(ext_seq & s.mask)
    if s.slots[i].length == 0 or s.slots[i].ext_seq != ext_seq:
        return NULL
    length[0] = s.slots[i].length
    return s.data + <size_t>i * STORE_SLOT_BYTES
