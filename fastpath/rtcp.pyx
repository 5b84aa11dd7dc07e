"""Python face of the RTCP compound walker in ``rtcp.pxd`` (RFC 3550, RFC 4585, RFC 5104) and of the feedback
generators toward publishers (``twcc.pxd``: draft-holmer-rmcat-transport-wide-cc-extensions-01; ``nack.pxd``:
RFC 4585 6.2.1 generic NACK), so tests run the C code the Engine runs.

``SendEstimator`` wraps one subscriber transport's send-side estimator (``bwe.pxd``: transport-wide sequence
stamping, send history, TWCC feedback and REMB, GCC-style delay and loss estimate) with an injected clock;
``stamp_transport_seq`` is its in-place element writer.

``parse_rtcp`` returns every packet of a compound as a dict and raises ``ValueError("rtcp: ...")`` with the
same reason the Engine counts when it drops a malformed compound. ``TwccRecorder`` and ``NackGenerator``
wrap one publisher transport's arrival ring and one video stream's NACK state.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc

from fastpath.hdrext cimport hdrext_put
from fastpath.bwe cimport (
    BWE_FMT_REMB,
    BWE_FMT_TWCC,
    Bwe,
    bwe_free,
    bwe_init,
    bwe_mark_padding,
    bwe_on_feedback,
    bwe_on_remb,
    bwe_probe_expire,
    bwe_probe_start,
    bwe_record,
    bwe_stamp_packet,
)
from fastpath.nack cimport (
    NACK_MAX_FCI_PER_PACKET,
    NACK_MAX_PENDING,
    NackGen,
    nack_collect,
    nack_has,
    nack_init,
    nack_key_frame,
    nack_received,
    nack_write,
)

from fastpath.rtcp cimport RTCP_OK, RtcpItem, rtcp_next
from fastpath.rtp cimport rd16, rd32
from fastpath.seq cimport Unwrap, unwrap_seq
from fastpath.twcc cimport (
    TWCC_FEEDBACK_BYTES,
    TWCC_MIN_FEEDBACK_BYTES,
    TwccRecv,
    twcc_build,
    twcc_free,
    twcc_init,
    twcc_pending,
    twcc_record,
)

RTCP_ERROR_REASONS = ("ok", "rtcp: too short", "rtcp: bad version", "rtcp: length exceeds packet")


cdef list _report_blocks(const uint8_t[:] data, Py_ssize_t off, int count, Py_ssize_t end):
    cdef list blocks = []
    cdef int i
    cdef int32_t cum
    for i in range(count):
        if off + 24 > end:
            raise ValueError("rtcp: report block exceeds packet")
        cum = <int32_t>(rd32(&data[off + 4]) & 0xFFFFFF)
        if cum & 0x800000:
            cum -= 0x1000000
        blocks.append({
            "ssrc": rd32(&data[off]),
            "fraction_lost": data[off + 4],
            "cumulative_lost": cum,
            "highest_seq": rd32(&data[off + 8]),
            "jitter": rd32(&data[off + 12]),
            "lsr": rd32(&data[off + 16]),
            "dlsr": rd32(&data[off + 20]),
        })
        off += 24
    return blocks


cdef dict _packet(const uint8_t[:] data, RtcpItem* it):
    cdef Py_ssize_t o = it.offset
    cdef Py_ssize_t end = it.offset + it.length
    cdef dict d = {"type": it.pt, "count": it.count, "length": it.length}
    cdef Py_ssize_t i
    cdef int pid, blp, k
    if it.pt == 200:
        if it.length < 28:
            raise ValueError("rtcp: sr too short")
        d.update(ssrc=rd32(&data[o + 4]), ntp_sec=rd32(&data[o + 8]), ntp_frac=rd32(&data[o + 12]),
                 rtp_ts=rd32(&data[o + 16]), packets=rd32(&data[o + 20]), octets=rd32(&data[o + 24]),
                 reports=_report_blocks(data, o + 28, it.count, end))
    elif it.pt == 201:
        if it.length < 8:
            raise ValueError("rtcp: rr too short")
        d.update(ssrc=rd32(&data[o + 4]), reports=_report_blocks(data, o + 8, it.count, end))
    elif it.pt == 202:
        chunks = []
        i = o + 4
        for _ in range(it.count):
            if i + 4 > end:
                raise ValueError("rtcp: sdes chunk exceeds packet")
            ssrc = rd32(&data[i])
            i += 4
            cname = None
            while i < end and data[i] != 0:
                if i + 2 > end or i + 2 + data[i + 1] > end:
                    raise ValueError("rtcp: sdes item exceeds packet")
                if data[i] == 1:
                    cname = bytes(data[i + 2:i + 2 + data[i + 1]])
                i += 2 + data[i + 1]
            i = (i + 4) & ~3
            chunks.append((ssrc, cname))
        d["chunks"] = chunks
    elif it.pt in (205, 206):
        if it.length < 12:
            raise ValueError("rtcp: feedback too short")
        d.update(sender_ssrc=rd32(&data[o + 4]), media_ssrc=rd32(&data[o + 8]))
        if it.pt == 205 and it.count == 1:
            lost = []
            i = o + 12
            while i + 4 <= end:
                pid = rd16(&data[i])
                blp = rd16(&data[i + 2])
                lost.append(pid)
                for k in range(16):
                    if blp & (1 << k):
                        lost.append((pid + k + 1) & 0xFFFF)
                i += 4
            d["lost"] = lost
        elif it.pt == 206 and it.count == 4:
            entries = []
            i = o + 12
            while i + 8 <= end:
                entries.append((rd32(&data[i]), data[i + 4]))
                i += 8
            d["fir"] = entries
    else:
        d["body"] = bytes(data[o + 4:end])
    return d


def parse_rtcp(const uint8_t[:] data) -> list:
    """Walk a (decrypted) RTCP compound and return one dict per packet."""
    cdef int32_t pos = 0
    cdef RtcpItem it
    cdef int rc
    cdef list out = []
    if data.shape[0] < 4:
        raise ValueError(RTCP_ERROR_REASONS[1])
    while True:
        rc = rtcp_next(&data[0], <int32_t>data.shape[0], &pos, &it)
        if rc == 0:
            return out
        if rc < 0:
            raise ValueError(RTCP_ERROR_REASONS[-rc])
        out.append(_packet(data, &it))


cdef class TwccRecorder:
    """One publisher transport's transport-wide CC arrival ring and feedback builder (twcc.pxd)."""

    cdef TwccRecv _r

    def __cinit__(self):
        twcc_init(&self._r)

    def __dealloc__(self):
        twcc_free(&self._r)

    def record(self, seq: int, arrival_us: int, ssrc: int = 0) -> int:
        """Record the first arrival of transport-wide seq at arrival_us; returns the seqs awaiting feedback."""
        if not 0 <= seq <= 0xFFFF:
            raise ValueError(f"seq must be in 0..65535, got {seq}")
        if arrival_us < 0:
            raise ValueError(f"arrival_us must be >= 0, got {arrival_us}")
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise ValueError(f"ssrc must be in 0..2^32-1, got {ssrc}")
        return twcc_record(&self._r, <uint16_t>seq, <int64_t>arrival_us, <uint32_t>ssrc)

    def build(self, sender_ssrc: int, max_bytes: int = TWCC_FEEDBACK_BYTES) -> list:
        """Every feedback packet (RTPFB FMT 15) for what was recorded since the last build."""
        cdef uint8_t buf[2048]
        cdef int32_t n
        cdef list out = []
        if not TWCC_MIN_FEEDBACK_BYTES <= max_bytes <= 2048:
            raise ValueError(f"max_bytes must be in {TWCC_MIN_FEEDBACK_BYTES}..2048, got {max_bytes}")
        while True:
            n = twcc_build(&self._r, buf, max_bytes, <uint32_t>sender_ssrc)
            if n == 0:
                return out
            out.append(bytes(buf[:n]))

    @property
    def pending(self) -> int:
        return twcc_pending(&self._r)

    @property
    def counters(self) -> dict:
        return {"packets": self._r.packets, "duplicates": self._r.duplicates, "too_old": self._r.too_old,
                "resyncs": self._r.resyncs, "feedbacks": self._r.feedbacks}


cdef class NackGenerator:
    """One video stream's NACK generator (nack.pxd) over 16-bit sequence numbers unwrapped inside."""

    cdef NackGen* _g
    cdef Unwrap _u

    def __cinit__(self):
        self._g = <NackGen*>malloc(sizeof(NackGen))
        if self._g == NULL:
            raise MemoryError()
        nack_init(self._g)
        self._u.started = 0
        self._u.highest = 0

    def __dealloc__(self):
        free(self._g)

    cdef int64_t _ext(self, seq) except -1:
        if not 0 <= seq <= 0xFFFF:
            raise ValueError(f"seq must be in 0..65535, got {seq}")
        return unwrap_seq(&self._u, <uint16_t>seq) + 0x10000

    def receive(self, seq: int, now_ms: int) -> bool:
        """A packet arrived; True = the pending list overflowed and was cleared (request a key frame)."""
        return nack_received(self._g, self._ext(seq), now_ms)

    def key_frame(self, seq: int) -> None:
        """seq (already received) starts a key frame: on overflow, older entries are dropped first."""
        nack_key_frame(self._g, self._ext(seq))

    def nack(self, now_ms: int, rtt_ms: int, sender_ssrc: int, media_ssrc: int) -> list:
        """The NACK packets due at now_ms, split as the Engine splits them."""
        cdef uint32_t fci[NACK_MAX_PENDING]
        cdef uint8_t buf[12 + 4 * NACK_MAX_FCI_PER_PACKET]
        cdef int32_t n, i = 0, k, length
        cdef list out = []
        if rtt_ms < 0:
            raise ValueError(f"rtt_ms must be >= 0, got {rtt_ms}")
        n = nack_collect(self._g, now_ms, rtt_ms, fci, NACK_MAX_PENDING)
        while i < n:
            k = n - i if n - i < NACK_MAX_FCI_PER_PACKET else NACK_MAX_FCI_PER_PACKET
            length = nack_write(buf, <uint32_t>sender_ssrc, <uint32_t>media_ssrc, fci + i, k)
            out.append(bytes(buf[:length]))
            self._g.packets += 1
            i += k
        return out

    @property
    def pending(self) -> list:
        """The 16-bit seqs still waiting (not yet received, not given up), ascending."""
        return [<uint16_t>self._g.pending[i].seq for i in range(self._g.n)
                if not nack_has(self._g, self._g.pending[i].seq)]

    @property
    def counters(self) -> dict:
        g = self._g
        return {"requested": g.requested, "packets": g.packets, "recovered": g.recovered,
                "expired": g.expired, "overflows": g.overflows}


def stamp_transport_seq(const uint8_t[:] packet, int ext_id, int seq, int room=64):
    """The RTP packet with seq written as its transport-wide sequence element (id ext_id), as the Engine's send
    path writes it, or None when the header is malformed or growing it needs more than room bytes."""
    cdef bytearray buf = bytearray(bytes(packet)) + bytearray(room)
    cdef uint8_t[::1] v = buf
    cdef int32_t length = <int32_t>packet.shape[0]
    if not 1 <= ext_id <= 255 or not 0 <= seq <= 0xFFFF:
        raise ValueError("ext_id must be in 1..255 and seq in 0..65535")
    if not bwe_stamp_packet(&v[0], &length, room, <uint8_t>ext_id, <uint16_t>seq):
        return None
    return bytes(buf[:length])


def put_extension(const uint8_t[:] packet, int ext_id, const uint8_t[:] data, int room=64):
    """The RTP packet with data written as its header extension element ext_id (fastpath/hdrext.pxd), as the
    Engine's send path writes the elements it adds, or None when the header is malformed, the element does not fit
    the packet's extension form, or growing it needs more than room bytes."""
    cdef bytearray buf = bytearray(bytes(packet)) + bytearray(room)
    cdef uint8_t[::1] v = buf
    cdef bytes d = bytes(data)
    cdef int32_t length = <int32_t>packet.shape[0]
    if not 1 <= ext_id <= 255 or not 1 <= len(d) <= 255:
        raise ValueError("ext_id must be in 1..255 and data 1..255 bytes")
    if not hdrext_put(&v[0], &length, room, <uint8_t>ext_id, <const uint8_t*>d, <int32_t>len(d)):
        return None
    return bytes(buf[:length])


BWE_STATE_NAMES = ("normal", "overusing", "underusing")


cdef class SendEstimator:
    """One subscriber transport's send-side bandwidth estimator (bwe.pxd), driven by the caller's clock."""

    cdef Bwe _b

    def __cinit__(self, int ext_id=5):
        if not 0 <= ext_id <= 255:
            raise ValueError(f"ext_id must be in 0..255, got {ext_id}")
        if bwe_init(&self._b, <uint8_t>ext_id) != 0:
            raise MemoryError()

    def __dealloc__(self):
        bwe_free(&self._b)

    def stamp(self, const uint8_t[:] packet, long long send_us) -> bytes:
        """Stamp packet with the next transport-wide seq and record it as sent at send_us."""
        out = stamp_transport_seq(packet, self._b.ext_id, <uint16_t>self._b.next_seq)
        if out is None:
            raise ValueError("packet could not be stamped")
        bwe_record(&self._b, send_us, len(out))
        return out

    def sent(self, long long send_us, int size, bint padding=False) -> int:
        """Record a packet of size bytes sent at send_us without building it; returns its 16-bit seq. ``padding``:
        probe padding, as the Engine marks it (counted for the delay-based estimate, not the loss-based limit)."""
        cdef uint16_t seq = <uint16_t>self._b.next_seq
        if self._b.history == NULL:
            raise ValueError("no history: ext_id 0 (REMB only)")
        bwe_record(&self._b, send_us, size)
        if padding:
            bwe_mark_padding(&self._b)
        return seq

    def probe(self, long long now_us, long long duration_us) -> None:
        """Open a probe cluster: the packets sent in [now_us, now_us + duration_us] are measured together."""
        bwe_probe_start(&self._b, now_us, duration_us)

    def expire_probe(self, long long now_us) -> bool:
        """The Engine's tick: evaluate a probe cluster no feedback ended, BWE_PROBE_TIMEOUT_US after its end."""
        return bwe_probe_expire(&self._b, now_us) == 1

    def feedback(self, const uint8_t[:] compound, long long now_us) -> int:
        """Feed every TWCC feedback and REMB packet of an RTCP compound at now_us; returns how many were used."""
        cdef int32_t pos = 0
        cdef RtcpItem it
        cdef int used = 0
        while rtcp_next(&compound[0], <int32_t>compound.shape[0], &pos, &it) == 1:
            if it.pt == 205 and it.count == BWE_FMT_TWCC:
                used += bwe_on_feedback(&self._b, &compound[it.offset], it.length, now_us) == 0
            elif it.pt == 206 and it.count == BWE_FMT_REMB:
                used += bwe_on_remb(&self._b, &compound[it.offset], it.length) == 0
        return used

    @property
    def next_seq(self) -> int:
        return self._b.next_seq & 0xFFFF

    @next_seq.setter
    def next_seq(self, int seq) -> None:
        """Start the transport-wide sequence at seq (tests of the 16-bit wrap)."""
        self._b.next_seq = seq

    @property
    def stats(self) -> dict:
        b = &self._b
        return {"bwe_bps": int(b.estimate_bps), "bwe_state": BWE_STATE_NAMES[b.state], "bwe_loss": b.loss,
                "bwe_delay_bps": int(b.delay_bps), "bwe_loss_bps": int(b.loss_bps),
                "bwe_acked_bps": int(b.acked_bps), "bwe_remb_bps": int(b.remb_bps), "trend": b.trend,
                "threshold": b.threshold, "twcc_stamped": b.stamped,
                "twcc_feedback_packets": b.feedback_packets, "twcc_feedback_bad": b.feedback_bad,
                "twcc_acked": b.acked_packets, "twcc_lost": b.lost_packets, "twcc_unknown": b.unknown_packets,
                "bwe_probe_pending": int(b.pr_start_us >= 0), "bwe_probe_bps": int(b.probe_bps),
                "bwe_probe_results": b.probe_results, "bwe_probe_raises": b.probe_raises,
                "bwe_detector_restarts": b.detector_restarts}
