# Open-addressing hash table uint64 key -> int32 value (linear probing, load <= 0.5, backward-shift
# deletion, so no tombstones). Grows only in ht_put/ht_reserve, which commands call; lookups are nogil.
from libc.stdint cimport int32_t, uint32_t, uint64_t
from fastpath.mem cimport fp_free as free, fp_malloc as malloc


ctypedef struct HashTable:
    uint64_t* keys
    int32_t* values                # -1 = empty
    uint32_t mask
    uint32_t count


cdef inline uint64_t ht_hash(uint64_t k) noexcept nogil:
    # splitmix64 finaliser.
    k ^= k >> 30
    k *= 0xBF58476D1CE4E5B9ULL
    k ^= k >> 27
    k *= 0x94D049BB133111EBULL
    k ^= k >> 31
    return k


cdef inline int ht_init(HashTable* t, uint32_t capacity) except -1:
    cdef uint32_t size = 16
    cdef uint32_t i
    while size < capacity * 2:
        size <<= 1
    t.keys = <uint64_t*>malloc(size * sizeof(uint64_t))
    t.values = <int32_t*>malloc(size * sizeof(int32_t))
    if t.keys == NULL or t.values == NULL:
        free(t.keys)
        free(t.values)
        raise MemoryError()
    for i in range(size):
        t.values[i] = -1
    t.mask = size - 1
    t.count = 0
    return 0


cdef inline void ht_free(HashTable* t) noexcept nogil:
    free(t.keys)
    free(t.values)
    t.keys = NULL
    t.values = NULL


cdef inline int32_t ht_get(const HashTable* t, uint64_t key) noexcept nogil:
    cdef uint32_t i = <uint32_t>ht_hash(key) & t.mask
    while t.values[i] != -1:
        if t.keys[i] == key:
            return t.values[i]
        i = (i + 1) & t.mask
    return -1


cdef inline void _ht_insert(HashTable* t, uint64_t key, int32_t value) noexcept nogil:
    cdef uint32_t i = <uint32_t>ht_hash(key) & t.mask
    while t.values[i] != -1:
        if t.keys[i] == key:
            t.values[i] = value
            return
        i = (i + 1) & t.mask
    t.keys[i] = key
    t.values[i] = value
    t.count += 1


cdef inline int ht_reserve(HashTable* t, uint32_t entries) except -1:
    """Make room so that `entries` more inserts need no growth (ht_put_reserved may then run nogil)."""
    cdef HashTable bigger
    cdef uint32_t i
    if (t.count + entries) * 2 <= t.mask + 1:
        return 0
    ht_init(&bigger, t.count + entries)
    for i in range(t.mask + 1):
        if t.values[i] != -1:
            _ht_insert(&bigger, t.keys[i], t.values[i])
    ht_free(t)
    t[0] = bigger
    return 0


cdef inline int ht_put(HashTable* t, uint64_t key, int32_t value) except -1:
    ht_reserve(t, 1)
    _ht_insert(t, key, value)
    return 0


cdef inline bint ht_put_reserved(HashTable* t, uint64_t key, int32_t value) noexcept nogil:
    """Insert without growing; False if the table is at its load limit (the caller reserved too little)."""
    if (t.count + 1) * 2 > t.mask + 1:
        return False
    _ht_insert(t, key, value)
    return True


cdef inline bint ht_del(HashTable* t, uint64_t key) noexcept nogil:
    cdef uint32_t i = <uint32_t>ht_hash(key) & t.mask
    cdef uint32_t j, k
    while t.values[i] != -1:
        if t.keys[i] == key:
            break
        i = (i + 1) & t.mask
    else:
        return False
    j = i
    while True:
        j = (j + 1) & t.mask
        if t.values[j] == -1:
            break
        k = <uint32_t>ht_hash(t.keys[j]) & t.mask
        # Move j into the hole at i unless its home slot k lies cyclically in (i, j].
        if (i <= j and (k <= i or k > j)) or (i > j and k <= i and k > j):
            t.keys[i] = t.keys[j]
            t.values[i] = t.values[j]
            i = j
    t.values[i] = -1
    t.count -= 1
    return True
