# cython: language_level=3
"""Counted malloc/calloc/realloc/free for the fast path's own C state (leak checks: docs/RELIABILITY.md, K7).

Each extension module that cimports these keeps its own two counters (the C code below is static per module):
bytes and blocks currently held, measured with glibc's ``malloc_usable_size``, so a block freed here that was not
counted here (or the other way round) only skews the figure, never corrupts the heap. ``mem_allocated()`` reads
them; the Engine reports its module's in ``snapshot_engine()`` (``c_bytes``, ``c_blocks``).
"""

cdef extern from *:
    """
    #include <malloc.h>
    #include <stdlib.h>
    #include <string.h>
    static size_t fp_mem_bytes = 0;
    static size_t fp_mem_blocks = 0;
    static inline void fp_mem_add(void* p) {
        if (p != NULL) {
            __atomic_add_fetch(&fp_mem_bytes, malloc_usable_size(p), __ATOMIC_RELAXED);
            __atomic_add_fetch(&fp_mem_blocks, 1, __ATOMIC_RELAXED);
        }
    }
    static inline void fp_mem_sub(void* p) {
        if (p != NULL) {
            __atomic_sub_fetch(&fp_mem_bytes, malloc_usable_size(p), __ATOMIC_RELAXED);
            __atomic_sub_fetch(&fp_mem_blocks, 1, __ATOMIC_RELAXED);
        }
    }
    static inline void* fp_malloc(size_t n) { void* p = malloc(n); fp_mem_add(p); return p; }
    static inline void* fp_calloc(size_t k, size_t n) { void* p = calloc(k, n); fp_mem_add(p); return p; }
    static inline void fp_free(void* p) { fp_mem_sub(p); free(p); }
    static inline void* fp_realloc(void* old, size_t n) {
        size_t was = old != NULL ? malloc_usable_size(old) : 0;
        void* p = realloc(old, n);
        if (p == NULL) return NULL;          /* old is still allocated and still counted */
        if (old != NULL) {
            __atomic_sub_fetch(&fp_mem_bytes, was, __ATOMIC_RELAXED);
            __atomic_sub_fetch(&fp_mem_blocks, 1, __ATOMIC_RELAXED);
        }
        fp_mem_add(p);
        return p;
    }
    static inline void* fp_zalloc_lines(size_t n) {
        void* p = NULL;
        if (posix_memalign(&p, 64, n) != 0) return NULL;
        memset(p, 0, n);
        fp_mem_add(p);
        return p;
    }
    static inline size_t fp_mem_bytes_now(void) { return __atomic_load_n(&fp_mem_bytes, __ATOMIC_RELAXED); }
    static inline size_t fp_mem_blocks_now(void) { return __atomic_load_n(&fp_mem_blocks, __ATOMIC_RELAXED); }
    """
    void* fp_malloc(size_t n) nogil
    void* fp_calloc(size_t k, size_t n) nogil
    void* fp_realloc(void* p, size_t n) nogil
    void fp_free(void* p) nogil
    void* fp_zalloc_lines(size_t n) nogil   # zeroed, on a cache line (fastpath/includes/linux.pxd zalloc_lines)
    size_t fp_mem_bytes_now() nogil
    size_t fp_mem_blocks_now() nogil


cdef inline tuple mem_allocated():
    """(bytes, blocks) this module's counted allocations hold now."""
    return fp_mem_bytes_now(), fp_mem_blocks_now()
