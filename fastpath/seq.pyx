"""Python wrappers over the C sequence/timestamp rewriters in ``seq.pxd`` so table tests run the same code.

``SeqRewriter`` takes 16-bit input sequence numbers (unwrapped inside to 64 bits) and returns the 16-bit
output number or ``None`` when the packet must not be sent; ``last_result`` names why.
"""

from libc.stdint cimport int64_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc

from fastpath.seq cimport (
    SEQ_DROPPED,
    SEQ_DUPLICATE,
    SEQ_FORWARD,
    SEQ_TOO_OLD,
    SeqRw,
    TsRw,
    Unwrap,
    seq_rw_drop,
    seq_rw_init,
    seq_rw_input,
    seq_rw_insert,
    seq_rw_sync,
    ts_rw_input,
    ts_rw_switch,
    unwrap_seq,
    unwrap_ts,
)

SEQ_RESULT_NAMES = {SEQ_FORWARD: "forward", SEQ_DUPLICATE: "duplicate", SEQ_TOO_OLD: "too_old",
                    SEQ_DROPPED: "dropped"}


cdef class Unwrapper:
    """16-bit (or 32-bit with bits=32) to 64-bit unwrapper relative to the highest value seen."""

    cdef Unwrap _u
    cdef int _bits

    def __cinit__(self, int bits=16):
        if bits not in (16, 32):
            raise ValueError("bits must be 16 or 32")
        self._bits = bits
        self._u.started = 0
        self._u.highest = 0

    def unwrap(self, value: int) -> int:
        if self._bits == 16:
            if not 0 <= value <= 0xFFFF:
                raise ValueError("seq must be in 0..65535")
            return unwrap_seq(&self._u, <uint16_t>value)
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError("ts must be in 0..2^32-1")
        return unwrap_ts(&self._u, <uint32_t>value)


cdef class SeqRewriter:
    """Per-consumer sequence mapper: output continues without gaps across sync() and drop()."""

    cdef SeqRw* _rw
    cdef Unwrap _u
    cdef public str last_result

    def __cinit__(self, int initial_out):
        if not 0 <= initial_out <= 0xFFFF:
            raise ValueError("initial_out must be in 0..65535")
        self._rw = <SeqRw*>malloc(sizeof(SeqRw))
        if self._rw == NULL:
            raise MemoryError()
        seq_rw_init(self._rw, <uint16_t>initial_out)
        self._u.started = 0
        self._u.highest = 0
        self.last_result = ""

    def __dealloc__(self):
        free(self._rw)

    def input(self, seq: int):
        """Feed one received seq; return the output seq (0..65535) or None (see last_result)."""
        cdef int64_t out = 0
        if not 0 <= seq <= 0xFFFF:
            raise ValueError("seq must be in 0..65535")
        rc = seq_rw_input(self._rw, unwrap_seq(&self._u, <uint16_t>seq), &out)
        self.last_result = SEQ_RESULT_NAMES[rc]
        return <uint16_t>out if rc == SEQ_FORWARD else None

    def drop(self, seq: int) -> None:
        """Drop a received seq on purpose (padding, filtered layer) without a hole in the output."""
        if not 0 <= seq <= 0xFFFF:
            raise ValueError("seq must be in 0..65535")
        seq_rw_drop(self._rw, unwrap_seq(&self._u, <uint16_t>seq))

    def insert(self):
        """Take the next output seq for a packet of our own (probe padding); None before the first input."""
        cdef int64_t out = seq_rw_insert(self._rw)
        return None if out < 0 else <uint16_t>out

    def sync(self) -> None:
        """Make the next input continue at the last output + 1 (resume, layer switch)."""
        seq_rw_sync(self._rw)

    @property
    def max_out(self) -> int:
        return <uint16_t>self._rw.max_out


cdef class TsRewriter:
    """Per-consumer timestamp mapper: pass-through plus an offset that is re-based at layer switches."""

    cdef TsRw _t

    def __cinit__(self):
        self._t.offset = 0
        self._t.max_out = 0
        self._t.max_out_in = 0
        self._t.max_out_ms = 0
        self._t.started = 0

    def input(self, ts: int) -> int:
        if not 0 <= ts <= 0xFFFFFFFF:
            raise ValueError("ts must be in 0..2^32-1")
        return ts_rw_input(&self._t, <uint32_t>ts, 0)

    def switch(self, ts: int, frame_ticks: int, delta_ticks: int | None = None) -> int:
        """Re-base at a layer switch whose first packet has input ``ts``; return its output ts."""
        if not 0 <= ts <= 0xFFFFFFFF:
            raise ValueError("ts must be in 0..2^32-1")
        ts_rw_switch(&self._t, <uint32_t>ts, <uint32_t>frame_ticks, delta_ticks is not None,
                     delta_ticks if delta_ticks is not None else 0)
        return ts_rw_input(&self._t, <uint32_t>ts, 0)
