"""``fastpath.Engine``: one worker's UDP socket, SRTP, routing, rewriting and RTCP in C (docs/SEAMS.md 1).

Owns: the receive/send arenas (recvmmsg/sendmmsg), RFC 7983 demultiplexing, the tuple -> transport and
SSRC -> producer-stream tables, libsrtp contexts per transport, per-stream packet stores, per-consumer
sequence/timestamp rewriting and NACK metadata, RTCP generation (RR/SR/SDES/PLI), feedback toward
publishers (transport-wide CC feedback, generic NACK) and counters.
Must not: create a Python object per forwarded packet, log, block, or decide policy (layers preferred,
pausing and bandwidth are the Python worker's calls). STUN and DTLS datagrams go back to Python.

RFCs: 3550 (RTP/RTCP), 3711 and 7714 (SRTP), 4585 (feedback), 4588 (RTX), 5104 (FIR), 5761 and 7983 (demux),
6464 (audio level), 8285 (header extensions), 8852 (RID); draft-holmer-rmcat-transport-wide-cc-extensions-01
(TWCC). Algorithms: docs/FORWARDING.md.

Times: ``tick(now_ms)`` must use the clock ``pump()`` reads, CLOCK_MONOTONIC (``time.monotonic() * 1000``).
While a transport wants TWCC feedback the Engine turns SO_TIMESTAMPNS on for its socket: the feedback reports the
kernel's receive time of each packet (mapped onto CLOCK_MONOTONIC), not the time a batch was read.
"""

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free as libc_free
from libc.string cimport memcmp, memcpy, memmove, memset


from fastpath.mem cimport fp_calloc as calloc, fp_free as free, fp_malloc as malloc, fp_realloc as realloc
from fastpath.mem cimport fp_zalloc_lines as zalloc_lines, mem_allocated


cdef extern from *:
    void __builtin_prefetch(const void* address) nogil

from fastpath.counters cimport (
    DROP_BAD_HEADER,
    DROP_BAD_RTCP,
    DROP_BAD_SEQ,
    DROP_BAD_VERSION,
    DROP_DUPLICATE,
    DROP_LAYER_FILTERED,
    DROP_NACK_LIMIT,
    DROP_NACK_OTHER_LAYER,
    DROP_NACK_MISS,
    DROP_NACK_TOO_OLD,
    DROP_NACK_TOO_SOON,
    DROP_NO_ROUTE,
    DROP_NO_SRTP,
    DROP_NOT_RTP,
    DROP_PADDING_ONLY,
    DROP_PAUSED,
    DROP_REASON_COUNT,
    DROP_RTX_EMPTY,
    DROP_SEND_FAILED,
    DROP_SEQ_TOO_OLD,
    DROP_SRTP_PROTECT,
    DROP_SRTP_UNPROTECT,
    DROP_TEMPORAL_FILTERED,
    DROP_TOO_BIG,
    DROP_TOO_SHORT,
    DROP_UNKNOWN_SSRC,
    DROP_UNKNOWN_TUPLE,
    DROP_UNSUPPORTED_ADDRESS,
    DROP_UNSUPPORTED_PT,
    DROP_WAIT_KEYFRAME,
)
from fastpath.bwe cimport (
    BWE_FMT_REMB,
    BWE_FMT_TWCC,
    BWE_HISTORY,
    BWE_OVERUSING,
    BWE_PROBE_TIMEOUT_US,
    Bwe,
    BweSent,
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
from fastpath.crypto_kernel cimport hmac_batch_new, hmac_flush, prefetch_session, protect_queued
from fastpath.demux cimport KIND_DTLS, KIND_RTCP, KIND_STUN, KIND_UNKNOWN, PacketKind, demux_classify
from fastpath.gso cimport GsoArena, GsoMsg, gso_group, gso_layout, gso_refused, gso_supported
from fastpath.hdrext cimport hdrext_put
from fastpath.includes.linux cimport (
    AF_INET,
    AF_INET6,
    CLOCK_REALTIME,
    CMSG_DATA,
    CMSG_FIRSTHDR,
    CMSG_LEN,
    CMSG_NXTHDR,
    CMSG_SPACE,
    EAGAIN,
    EINTR,
    EWOULDBLOCK,
    IP_PKTINFO,
    IPPROTO_IP,
    MSG_DONTWAIT,
    MSG_TRUNC,
    SCM_TIMESTAMPNS,
    SO_TIMESTAMPNS,
    SOL_SOCKET,
    clock_gettime,
    cmsghdr,
    errno,
    getsockopt,
    htonl,
    in_addr,
    in_pktinfo,
    htons,
    inet_ntop,
    inet_pton,
    iovec,
    mmsghdr,
    monotonic_ms,
    monotonic_us,
    msghdr,
    ntohs,
    recvmmsg,
    sendmmsg,
    sendmsg,
    sendto,
    setsockopt,
    sockaddr,
    sockaddr_in,
    sockaddr_in6,
    socklen_t,
    timespec,
)
from fastpath.includes.srtp cimport SRTP_ERR_OK, SRTP_ERR_REPLAY_OLD, SRTP_MAX_TRAILER
from fastpath.keyframe cimport CODEC_UNKNOWN, CODEC_VP8, keyframe_detect
from fastpath.nack cimport (
    NACK_DEFAULT_RTT_MS,
    NACK_MAX_FCI_PER_PACKET,
    NACK_MAX_PENDING,
    NackGen,
    nack_collect,
    nack_init,
    nack_key_frame,
    nack_received,
    nack_reset,
    nack_write,
)
from fastpath.rtcp cimport (
    RTCP_FMT_FIR,
    RTCP_FMT_NACK,
    RTCP_FMT_PLI,
    RTCP_PSFB,
    RTCP_REPORT_BLOCK_LEN,
    RTCP_RR,
    RTCP_RTPFB,
    RTCP_SDES,
    RTCP_SR,
    RTCP_XR,
    RTCP_XR_DLRR,
    RTCP_XR_RRTR_LEN,
    RtcpItem,
    rtcp_next,
    rtcp_write_header,
    rtcp_write_pli,
    rtcp_write_report_block,
    rtcp_write_sdes_chunk,
    rtcp_write_sr,
    rtcp_write_xr_rrtr,
)
from fastpath.rtp cimport (
    RTP_BAD_VERSION,
    RTP_OK,
    RTP_TOO_SHORT,
    ExtFound,
    RtpHeader,
    rd16,
    rd32,
    rtp_ext_find,
    rtp_ext_walk,
    rtp_parse,
    rtp_set_header,
    wr16,
    wr32,
)
from fastpath.seq cimport SEQ_DUPLICATE, SEQ_FORWARD, SEQ_RING_MASK, SeqResult, seq_rw_drop, seq_rw_init, seq_rw_input, seq_rw_insert, seq_rw_sync, ts_rw_input, ts_rw_switch
from fastpath.srtp cimport SrtpContext, srtp_fns
from fastpath.vp8 cimport (
    VP8_TID_ALL,
    Vp8Desc,
    vp8_desc_none,
    vp8_filter,
    vp8_munge,
    vp8_munger_init,
    vp8_munger_sync,
    vp8_parse,
    vp8_set_max_temporal,
    vp8_write,
)
from fastpath.srtp import context_pair
from fastpath.store cimport STORE_KEY, store_clear, store_free, store_get, store_has, store_init, store_put
from fastpath.table cimport ht_del, ht_free, ht_get, ht_init, ht_put, ht_put_reserved, ht_reserve
from fastpath.twcc cimport (
    TWCC_FEEDBACK_BYTES,
    TWCC_FLUSH_PENDING,
    TWCC_INTERVAL_MS,
    TwccRecv,
    twcc_build,
    twcc_free,
    twcc_init,
    twcc_pending,
    twcc_record,
)

import os

from fastpath.counters import DROP_REASON_NAMES
from fastpath.crypto_kernel import ensure_installed

include "_pipe.pxi"
include "_playout.pxi"
include "_send.pxi"
include "_gso.pxi"
include "_forward.pxi"
include "_rtx.pxi"
include "_feedback.pxi"
include "_publisher_feedback.pxi"
include "_reports.pxi"
include "_bwe.pxi"
include "_timers.pxi"

CNAME = b"mediarouter"


cdef int il_append(IntList* l, int32_t v) except -1:
    cdef int32_t* items
    if l.n == l.cap:
        items = <int32_t*>realloc(l.items, (l.cap * 2 + 4) * sizeof(int32_t))
        if items == NULL:
            raise MemoryError()
        l.items = items
        l.cap = l.cap * 2 + 4
    l.items[l.n] = v
    l.n += 1
    return 0


cdef void il_remove(IntList* l, int32_t v) noexcept nogil:
    cdef int32_t i
    for i in range(l.n):
        if l.items[i] == v:
            l.items[i] = l.items[l.n - 1]
            l.n -= 1
            return


cdef inline uint64_t tuple_key(uint32_t addr_be, uint16_t port_be) noexcept nogil:
    return (<uint64_t>addr_be << 16) | port_be


cdef uint32_t rng_next(EngineState* e) noexcept nogil:
    # xorshift64*: initial sequence numbers and the RTCP SSRC only, not security relevant.
    e.rng ^= e.rng >> 12
    e.rng ^= e.rng << 25
    e.rng ^= e.rng >> 27
    return <uint32_t>((e.rng * 2685821657736338717ULL) >> 32)


cdef int64_t rx_arrival_us(EngineState* e) noexcept nogil:
    """Arrival time (e.now_us's clock) of the datagram being handled: the kernel's receive timestamp when
    SO_TIMESTAMPNS is on (packets that waited in the socket buffer keep their own times, which the
    publisher's delay-based estimate needs), else the time of the recvmmsg that returned it.

    The socket's queue is in arrival order, so the times never go back (``last_rx_at_us``): the kernel turns
    timestamping on from a deferred work item after the first socket asks, and until it runs it stamps a datagram
    when it is read, later than a datagram that arrives after the switch and is stamped on arrival."""
    cdef msghdr* h
    cdef cmsghdr* c
    cdef timespec ts
    cdef int64_t at
    if not e.kernel_ts or e.cur_rx < 0:
        return e.now_us
    h = &e.recv_msgs[e.cur_rx].msg_hdr
    c = CMSG_FIRSTHDR(h)
    while c != NULL:
        if c.cmsg_level == SOL_SOCKET and c.cmsg_type == SCM_TIMESTAMPNS:
            memcpy(&ts, CMSG_DATA(c), sizeof(timespec))
            at = <int64_t>ts.tv_sec * 1000000 + ts.tv_nsec // 1000 - e.realtime_offset_us - e.epoch_us
            # A stepped wall clock would move it: only trust it within the last second before now.
            if e.now_us - 1000000 < at <= e.now_us:
                if at < e.last_rx_at_us:
                    at = e.last_rx_at_us
                e.last_rx_at_us = at
                return at
            return e.now_us
        c = CMSG_NXTHDR(h, c)
    return e.now_us


cdef int on_datagram(EngineState* e, int32_t i, int32_t* t_out) noexcept nogil:
    """Handle received datagram i of the arena; 1 = give it to Python (STUN/DTLS) with t_out set."""
    cdef uint8_t* buf = e.recv_buf + <size_t>i * RECV_SLOT_BYTES
    cdef int32_t n = e.recv_msgs[i].msg_len
    cdef PacketKind kind
    cdef sockaddr_in* sa
    cdef int32_t t_slot = -1
    cdef Transport* t
    if (e.recv_msgs[i].msg_hdr.msg_flags & MSG_TRUNC) or n > RECV_MAX_DATAGRAM:
        e.drops[DROP_TOO_BIG] += 1
        return 0
    kind = demux_classify(buf, n)
    if kind == KIND_UNKNOWN:
        e.drops[DROP_NOT_RTP] += 1
        return 0
    if e.recv_addr[i].sin6_family == AF_INET:
        sa = <sockaddr_in*>&e.recv_addr[i]
        t_slot = ht_get(&e.tuples, tuple_key(sa.sin_addr.s_addr, sa.sin_port))
    if kind == KIND_STUN:
        t_out[0] = -1
        if t_slot >= 0:
            e.transports[t_slot].stun_rx += 1
            t_out[0] = e.transports[t_slot].handle
        return 1
    if t_slot < 0:
        e.drops[DROP_UNKNOWN_TUPLE if e.recv_addr[i].sin6_family == AF_INET else DROP_UNSUPPORTED_ADDRESS] += 1
        return 0
    t = e.transports[t_slot]
    t.rx_packets += 1
    t.rx_bytes += n
    if kind == KIND_DTLS:
        t.dtls_rx += 1
        t_out[0] = t.handle
        return 1
    if t.srtp_in == NULL:
        t.drops[DROP_NO_SRTP] += 1
        return 0
    if kind == KIND_RTCP:
        fanout_flush(e)                       # a NACK, SR or PLI sees every earlier packet forwarded
        handle_rtcp(e, t_slot, t, buf, n)
    else:
        e.cur_rx = i
        handle_rtp(e, t_slot, t, buf, n)
        e.cur_rx = -1
    return 0


cdef tuple _address(sockaddr_in6* addr):
    cdef char text[64]
    cdef sockaddr_in* sa
    if addr.sin6_family == AF_INET:
        sa = <sockaddr_in*>addr
        inet_ntop(AF_INET, &sa.sin_addr, text, sizeof(text))
        return (text.decode(), ntohs(sa.sin_port))
    inet_ntop(AF_INET6, &addr.sin6_addr, text, sizeof(text))
    return (text.decode(), ntohs(addr.sin6_port))


cdef str _local_address(msghdr* h):
    """The local address a datagram was sent to (its IP_PKTINFO cmsg), or "" when it carries none."""
    cdef cmsghdr* c = CMSG_FIRSTHDR(h)
    cdef in_pktinfo info
    cdef char text[64]
    while c != NULL:
        if c.cmsg_level == IPPROTO_IP and c.cmsg_type == IP_PKTINFO:
            memcpy(&info, CMSG_DATA(c), sizeof(in_pktinfo))
            inet_ntop(AF_INET, &info.ipi_addr, text, sizeof(text))
            return text.decode()
        c = CMSG_NXTHDR(h, c)
    return ""


cdef void _write_pktinfo(uint64_t* buffer, uint32_t local_be) noexcept nogil:
    """An IP_PKTINFO cmsg asking the kernel to send from local_be (ip(7): ipi_spec_dst, any interface)."""
    cdef cmsghdr* c = <cmsghdr*>buffer
    cdef in_pktinfo info
    memset(&info, 0, sizeof(in_pktinfo))
    info.ipi_spec_dst.s_addr = local_be
    c.cmsg_len = CMSG_LEN(sizeof(in_pktinfo))
    c.cmsg_level = IPPROTO_IP
    c.cmsg_type = IP_PKTINFO
    memcpy(CMSG_DATA(c), &info, sizeof(in_pktinfo))


cdef dict _drops(const uint64_t* drops):
    cdef int i
    return {"drop_" + DROP_REASON_NAMES[i]: drops[i] for i in range(DROP_REASON_COUNT) if drops[i]}


# Engine.totals() names, in TOTAL_* order (engine.pxd): the heartbeat's media totals (router/totals.py).
TOTAL_NAMES = ("rx_packets", "rx_bytes", "keyframes_rx", "keyframe_requests_tx", "nacks_tx", "rtx_rx",
               "tx_packets", "tx_bytes", "retransmits", "nacks_rx", "plis_rx")


cdef void _sum_drops(uint64_t* into, const uint64_t* drops) noexcept nogil:
    cdef int i
    for i in range(DROP_REASON_COUNT):
        into[i] += drops[i]


cdef void _sum_producer(uint64_t* tot, uint64_t* drops, Producer* pr) noexcept nogil:
    cdef RecvStream* s
    cdef int32_t i
    for i in range(pr.n_enc):
        s = &pr.enc[i]
        tot[TOTAL_RX_PACKETS] += s.packets
        tot[TOTAL_RX_BYTES] += s.bytes
        tot[TOTAL_KEYFRAMES_RX] += s.keyframes
        tot[TOTAL_KEYFRAME_REQUESTS_TX] += s.kf_requests
        tot[TOTAL_RTX_RX] += s.rtx_packets
        if s.nack != NULL:
            tot[TOTAL_NACKS_TX] += s.nack.requested
        _sum_drops(drops, s.drops)


cdef void _sum_consumer(uint64_t* tot, uint64_t* drops, Consumer* co) noexcept nogil:
    tot[TOTAL_TX_PACKETS] += co.packets
    tot[TOTAL_TX_BYTES] += co.bytes
    tot[TOTAL_RETRANSMITS] += co.retransmits
    tot[TOTAL_NACKS_RX] += co.nack_rx
    tot[TOTAL_PLIS_RX] += co.pli_rx
    _sum_drops(drops, co.drops)


cdef class Engine:
    """The per-worker fast path. See docs/SEAMS.md section 1 for the command set.

    Lifecycle: created with the worker's bound, non-blocking UDP socket fd (Python keeps the socket
    object alive); commands build transports/producers/consumers; ``pump()`` runs on socket readability,
    ``tick()`` every 10-20 ms; dropping the Engine frees all C state (not the socket).
    """

    cdef EngineState* st
    cdef dict _t
    cdef dict _p
    cdef dict _c
    cdef dict _srtp
    cdef list _free_t
    cdef list _free_p
    cdef list _free_c
    cdef uint32_t _rx_budget
    cdef object _slow_path                # on_readable's Python callback (set_reader), or None
    cdef bint _reader_local
    cdef readonly int fd
    cdef readonly int batch_size

    def __cinit__(self, int fd, *, int batch_size=64, bint gso=True):
        cdef int32_t i
        cdef EngineState* e
        cdef int on
        cdef socklen_t on_len
        if fd < 0:
            raise ValueError(f"fd must be a socket descriptor, got {fd}")
        if not 1 <= batch_size <= 1024:
            raise ValueError(f"batch_size must be in 1..1024, got {batch_size}")
        self.fd = fd
        self.batch_size = batch_size
        self._t = {}
        self._p = {}
        self._c = {}
        self._srtp = {}
        self._free_t = []
        self._free_p = []
        self._free_c = []
        self._rx_budget = 0
        e = <EngineState*>calloc(1, sizeof(EngineState))
        if e == NULL:
            raise MemoryError()
        self.st = e
        e.fd = fd
        e.srtp = srtp_fns()
        e.rng = int.from_bytes(os.urandom(8), "little") | 1
        e.rtcp_ssrc = rng_next(e) | 1
        e.now_ms = monotonic_ms()
        e.epoch_us = monotonic_us()
        e.batch = batch_size
        e.gso = gso and gso_supported(fd)
        on = 0
        on_len = sizeof(int)
        # The owner turned IP_PKTINFO on (a socket bound to every address): learn each check's local address.
        e.pktinfo = getsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, &on_len) == 0 and on != 0
        memcpy(e.cname, <const char*>CNAME, len(CNAME))
        e.cname_len = len(CNAME)
        ht_init(&e.tuples, 64)
        ht_init(&e.rx_ssrc, 64)
        ht_init(&e.tx_ssrc, 64)
        e.recv_buf = <uint8_t*>malloc(<size_t>batch_size * RECV_SLOT_BYTES)
        e.recv_msgs = <mmsghdr*>calloc(batch_size, sizeof(mmsghdr))
        e.recv_iov = <iovec*>calloc(batch_size, sizeof(iovec))
        e.recv_addr = <sockaddr_in6*>calloc(batch_size, sizeof(sockaddr_in6))
        e.recv_cmsg = <uint8_t*>calloc(batch_size, RECV_CMSG_BYTES)
        e.send_buf = <uint8_t*>malloc(<size_t>SEND_BATCH * SEND_SLOT_BYTES)
        ensure_installed()                    # the crypto kernel decides whether tags are batched
        e.hmac = hmac_batch_new()
        e.run = <PendingRtp*>calloc(batch_size, sizeof(PendingRtp))
        if (e.recv_buf == NULL or e.recv_msgs == NULL or e.recv_iov == NULL or e.recv_addr == NULL
                or e.recv_cmsg == NULL or e.send_buf == NULL or e.run == NULL or e.hmac == NULL):
            raise MemoryError()
        e.cur_rx = -1
        e.kernel_ts = 0                       # on while a transport wants TWCC feedback (_want_timestamps)
        for i in range(batch_size):
            e.recv_iov[i].iov_base = e.recv_buf + <size_t>i * RECV_SLOT_BYTES
            e.recv_iov[i].iov_len = RECV_MAX_DATAGRAM
            e.recv_msgs[i].msg_hdr.msg_iov = &e.recv_iov[i]
            e.recv_msgs[i].msg_hdr.msg_iovlen = 1
            e.recv_msgs[i].msg_hdr.msg_name = &e.recv_addr[i]
            e.recv_msgs[i].msg_hdr.msg_control = e.recv_cmsg + <size_t>i * RECV_CMSG_BYTES
        for i in range(SEND_BATCH):
            e.send_iov[i].iov_base = e.send_buf + <size_t>i * SEND_SLOT_BYTES
            e.send_msgs[i].msg_hdr.msg_iov = &e.send_iov[i]
            e.send_msgs[i].msg_hdr.msg_iovlen = 1
            e.send_msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
        self._grow_transports()
        self._grow_producers()
        self._grow_consumers()

    def __dealloc__(self):
        cdef EngineState* e = self.st
        cdef int32_t i
        if e == NULL:
            return
        for i in range(e.cap_consumers):
            if e.consumers[i] != NULL:
                _free_consumer(e.consumers[i])
        for i in range(e.cap_producers):
            if e.producers[i] != NULL:
                _free_producer(e.producers[i])
        for i in range(e.cap_transports):
            if e.transports[i] != NULL:
                _free_transport(e.transports[i])
        free(e.transports)
        free(e.producers)
        free(e.consumers)
        ht_free(&e.tuples)
        ht_free(&e.rx_ssrc)
        ht_free(&e.tx_ssrc)
        free(e.recv_buf)
        free(e.recv_msgs)
        free(e.recv_iov)
        free(e.recv_addr)
        free(e.recv_cmsg)
        free(e.send_buf)
        libc_free(e.hmac)                    # crypto_kernel allocated it (uncounted there)
        free(e.run)
        free(e)
        self.st = NULL

    # ---- slot tables (grown by commands only) ----

    cdef _grow_transports(self):
        cdef int32_t old = self.st.cap_transports
        cdef int32_t new = old * 2 + 16
        cdef Transport** arr = <Transport**>realloc(self.st.transports, new * sizeof(Transport*))
        if arr == NULL:
            raise MemoryError()
        memset(arr + old, 0, (new - old) * sizeof(Transport*))
        self.st.transports = arr
        self.st.cap_transports = new
        self._free_t.extend(range(new - 1, old - 1, -1))

    cdef _grow_producers(self):
        cdef int32_t old = self.st.cap_producers
        cdef int32_t new = old * 2 + 16
        cdef Producer** arr = <Producer**>realloc(self.st.producers, new * sizeof(Producer*))
        if arr == NULL:
            raise MemoryError()
        memset(arr + old, 0, (new - old) * sizeof(Producer*))
        self.st.producers = arr
        self.st.cap_producers = new
        self._free_p.extend(range(new - 1, old - 1, -1))

    cdef _grow_consumers(self):
        cdef int32_t old = self.st.cap_consumers
        cdef int32_t new = old * 2 + 64
        cdef Consumer** arr = <Consumer**>realloc(self.st.consumers, new * sizeof(Consumer*))
        if arr == NULL:
            raise MemoryError()
        memset(arr + old, 0, (new - old) * sizeof(Consumer*))
        self.st.consumers = arr
        self.st.cap_consumers = new
        self._free_c.extend(range(new - 1, old - 1, -1))

    cdef int32_t _t_slot(self, int t) except -1:
        slot = self._t.get(t)
        if slot is None:
            raise ValueError(f"unknown transport {t}")
        return slot

    cdef int32_t _p_slot(self, int p) except -1:
        slot = self._p.get(p)
        if slot is None:
            raise ValueError(f"unknown producer {p}")
        return slot

    cdef int32_t _c_slot(self, int c) except -1:
        slot = self._c.get(c)
        if slot is None:
            raise ValueError(f"unknown consumer {c}")
        return slot

    # ---- transports ----

    def add_transport(self, int t) -> None:
        cdef Transport* tr
        if t < 0:
            raise ValueError(f"handle must be >= 0, got {t}")
        if t in self._t:
            raise ValueError(f"transport {t} already exists")
        if not self._free_t:
            self._grow_transports()
        slot = self._free_t.pop()
        tr = <Transport*>zalloc_lines(sizeof(Transport))
        if tr == NULL:
            raise MemoryError()
        tr.handle = t
        self.st.transports[slot] = tr
        self._t[t] = slot

    def set_extension_map(self, int t, int mid_id, int rid_id, int rrid_id, int audio_level_id,
                          const uint8_t[:] id_map, *, int twcc_id=0) -> None:
        """The peer's extension ids on transport t. ``twcc_id`` (the peer's transport-cc id, 0 = not
        negotiated) turns on transport-wide CC feedback toward this transport; the arrival state is kept
        when the map is set again."""
        cdef Transport* tr = self.st.transports[self._t_slot(t)]
        cdef TwccRecv* twcc
        for name, value in (("mid_id", mid_id), ("rid_id", rid_id), ("rrid_id", rrid_id),
                            ("audio_level_id", audio_level_id), ("twcc_id", twcc_id)):
            if not 0 <= value <= 255:
                raise ValueError(f"{name} must be in 0..255 (0 = not negotiated), got {value}")
        if id_map.shape[0] != 256:
            raise ValueError(f"id_map must be 256 bytes, got {id_map.shape[0]}")
        if twcc_id and tr.twcc == NULL:
            twcc = <TwccRecv*>calloc(1, sizeof(TwccRecv))
            if twcc == NULL:
                raise MemoryError()
            try:
                twcc_init(twcc)
            except BaseException:
                free(twcc)
                raise
            tr.twcc = twcc
            self.st.twcc_transports += 1
            _want_timestamps(self.st)
        tr.ids.mid = mid_id
        tr.ids.rid = rid_id
        tr.ids.rrid = rrid_id
        tr.ids.audio_level = audio_level_id
        tr.ids.twcc = twcc_id
        memcpy(tr.id_map, &id_map[0], 256)
        tr.has_id_map = 1

    def set_transport_cc(self, int t, int ext_id) -> None:
        """The id under which the peer of transport t negotiated transport-cc for what the Engine sends it
        (0 = not negotiated). With an id every RTP packet toward t gets a transport-wide sequence number and the
        peer's TWCC feedback drives the send-side bandwidth estimate (snapshot_transport: ``bwe_*``; events:
        EV_BWE_CHANGED). Setting it again keeps the history and the estimate."""
        cdef Transport* tr = self.st.transports[self._t_slot(t)]
        cdef BweSent* history
        if not 0 <= ext_id <= 255:
            raise ValueError(f"ext_id must be in 0..255 (0 = not negotiated), got {ext_id}")
        if tr.bwe == NULL:
            if bwe_ensure(tr) != 0:
                raise MemoryError()
        if ext_id and tr.bwe.history == NULL:
            history = <BweSent*>calloc(BWE_HISTORY, sizeof(BweSent))
            if history == NULL:
                raise MemoryError()
            send_flush(self.st)
            tr.bwe.history = history
        tr.bwe.ext_id = ext_id

    def probe(self, int t, long long bps, int duration_ms) -> bool:
        """Start a bandwidth probe cluster toward transport t: for duration_ms the tick tops the transport's send
        rate up to bps with padding-only packets on the RTX stream of one of its video consumers (or, when none
        negotiated RTX, on the media SSRC of one that has sent media, at frame boundaries), stamped with the
        transport-wide sequence, and the estimator measures the cluster (docs/FORWARDING.md, Probing). A probe
        still running is replaced. False (nothing sent) without such a consumer, without transport-cc toward t,
        or before t is bound with SRTP keys."""
        cdef EngineState* e = self.st
        cdef Transport* tr = e.transports[self._t_slot(t)]
        if bps <= 0 or duration_ms <= 0:
            raise ValueError(f"bps and duration_ms must be positive, got {bps}, {duration_ms}")
        if tr.bwe == NULL or tr.bwe.history == NULL or not tr.bound or tr.srtp_out == NULL:
            return False
        if probe_consumer(e, tr, False) == NULL:
            return False
        tr.probe_bps = <uint64_t>bps
        tr.probe_until_ms = e.now_ms + duration_ms
        tr.probe_last_ms = e.now_ms
        tr.probe_last_tx = tr.tx_bytes
        tr.probe_clusters += 1
        bwe_probe_start(tr.bwe, e.now_us, <int64_t>duration_ms * 1000)
        return True

    def bind_tuple(self, int t, str host, int port, str local="") -> None:
        """Packets from host:port are transport t's and its packets go there; with ``local`` (the address the
        peer's check came to, from ``pump(local=True)``) they leave from that address (IP_PKTINFO)."""
        cdef int32_t slot = self._t_slot(t)
        cdef Transport* tr = self.st.transports[slot]
        cdef uint32_t addr = 0
        cdef uint32_t local_be = 0
        cdef uint64_t key
        cdef bytes host_b = host.encode()
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        if inet_pton(AF_INET, host_b, &addr) != 1:
            raise ValueError(f"fastpath binds IPv4 tuples only, got {host!r}")
        if local and inet_pton(AF_INET, local.encode(), &local_be) != 1:
            raise ValueError(f"local address must be IPv4, got {local!r}")
        key = tuple_key(addr, htons(port))
        other = ht_get(&self.st.tuples, key)
        if other >= 0 and other != slot:
            raise ValueError(f"tuple {host}:{port} is already bound to transport "
                             f"{self.st.transports[other].handle}")
        send_flush(self.st)
        if tr.bound:
            ht_del(&self.st.tuples, tr.tuple_key)
        tr.addr.sin_family = AF_INET
        tr.addr.sin_port = htons(port)
        tr.addr.sin_addr.s_addr = addr
        tr.tuple_key = key
        tr.bound = 1
        tr.has_local = local_be != 0
        if tr.has_local:
            _write_pktinfo(tr.local_cmsg, local_be)
        ht_put(&self.st.tuples, key, slot)

    def set_srtp(self, int t, int profile, bytes local_key, bytes remote_key) -> None:
        cdef int32_t slot = self._t_slot(t)
        cdef Transport* tr = self.st.transports[slot]
        cdef SrtpContext rx
        cdef SrtpContext tx
        rx, tx = context_pair(profile, local_key, remote_key)
        send_flush(self.st)
        self._srtp[slot] = (rx, tx)
        tr.srtp_in = rx.ctx
        tr.srtp_out = tx.ctx
        tr.out_hot = tx.hot
        tr.fail_count = 0

    def remove_transport(self, int t) -> None:
        cdef int32_t slot = self._t_slot(t)
        cdef Transport* tr = self.st.transports[slot]
        send_flush(self.st)
        for i in [tr.consumers.items[k] for k in range(tr.consumers.n)]:
            self.remove_consumer(self.st.consumers[i].handle)
        for i in [tr.producers.items[k] for k in range(tr.producers.n)]:
            self.remove_producer(self.st.producers[i].handle)
        if tr.bound:
            ht_del(&self.st.tuples, tr.tuple_key)
        self._srtp.pop(slot, None)
        if tr.twcc != NULL:
            self.st.twcc_transports -= 1
            _want_timestamps(self.st)
        _sum_drops(self.st.retired_drops, tr.drops)
        _free_transport(tr)
        self.st.transports[slot] = NULL
        del self._t[t]
        self._free_t.append(slot)

    # ---- producers ----

    def add_producer(self, int p, int t, int kind, bytes mid, list encodings, list payload_types,
                     dict rtx_apt, int clock_rate, *, dict codecs=None) -> None:
        """Add inbound media. ``codecs`` (docs/SEAMS.md section 1) maps PT -> CODEC_* for key-frame
        detection; without it a video producer's packets are never recognised as key frames, so
        consumers start and switch layers on the first packet instead."""
        cdef int32_t t_slot = self._t_slot(t)
        cdef Transport* tr = self.st.transports[t_slot]
        cdef Producer* pr
        cdef RecvStream* s
        cdef int32_t slot, i
        cdef uint32_t ssrc
        if p < 0:
            raise ValueError(f"handle must be >= 0, got {p}")
        if p in self._p:
            raise ValueError(f"producer {p} already exists")
        if kind not in (0, 1):
            raise ValueError(f"kind must be 0 (audio) or 1 (video), got {kind}")
        if len(mid) > MAX_MID_LEN:
            raise ValueError(f"mid longer than {MAX_MID_LEN} bytes")
        if not 1 <= len(encodings) <= MAX_ENCODINGS:
            raise ValueError(f"a producer has 1..{MAX_ENCODINGS} encodings, got {len(encodings)}")
        if clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, got {clock_rate}")
        if not payload_types:
            raise ValueError("payload_types must not be empty")
        for pt in list(payload_types) + list(rtx_apt) + list(rtx_apt.values()) + list(codecs or ()):
            if not 0 <= pt <= 127:
                raise ValueError(f"payload type {pt} out of range 0..127")
        for apt in rtx_apt.values():
            if apt not in payload_types:
                raise ValueError(f"rtx apt {apt} is not a media payload type")
        ssrcs = []
        for enc in encodings:
            rid, media_ssrc, rtx_ssrc = enc
            if len(rid) > MAX_RID_LEN:
                raise ValueError(f"rid longer than {MAX_RID_LEN} bytes")
            if not 0 <= media_ssrc <= 0xFFFFFFFF or not 0 <= rtx_ssrc <= 0xFFFFFFFF:
                raise ValueError("ssrc out of range")
            if rtx_ssrc and not media_ssrc:
                raise ValueError("an rtx_ssrc needs its media ssrc")
            if not media_ssrc and not rid and len(encodings) > 1:
                raise ValueError("a simulcast encoding needs an ssrc or a rid")
            ssrcs.extend(x for x in (media_ssrc, rtx_ssrc) if x)
        if len(set(ssrcs)) != len(ssrcs):
            raise ValueError("duplicate ssrc in encodings")
        for x in ssrcs:
            if ht_get(&self.st.rx_ssrc, ssrc_key(t_slot, x)) >= 0:
                raise ValueError(f"ssrc {x} is already used on transport {t}")
        if mid:
            for i in range(tr.producers.n):
                if self.st.producers[tr.producers.items[i]].mid_len == len(mid) and \
                        memcmp(self.st.producers[tr.producers.items[i]].mid, <const char*>mid, len(mid)) == 0:
                    raise ValueError(f"mid {mid!r} is already used on transport {t}")
        if not self._free_p:
            self._grow_producers()
        pr = <Producer*>calloc(1, sizeof(Producer))
        if pr == NULL:
            raise MemoryError()
        try:
            pr.handle = p
            pr.transport = t_slot
            pr.kind = kind
            memcpy(pr.mid, <const char*>mid, len(mid))
            pr.mid_len = len(mid)
            pr.n_enc = len(encodings)
            pr.clock_rate = clock_rate
            for i in range(128):
                pr.rtx_apt[i] = -1
                pr.codec[i] = CODEC_UNKNOWN
            for pt in payload_types:
                pr.media_pt[pt] = 1
            for pt, apt in rtx_apt.items():
                pr.rtx_apt[pt] = apt
            for pt, codec in (codecs or {}).items():
                pr.codec[pt] = codec
            for i in range(pr.n_enc):
                s = &pr.enc[i]
                s.bad_seq = -1
                store_init(&s.store, STORE_SLOTS_VIDEO if kind == 1 else STORE_SLOTS_AUDIO)
                if kind == 1:
                    s.nack = <NackGen*>malloc(sizeof(NackGen))
                    if s.nack == NULL:
                        raise MemoryError()
                    nack_init(s.nack)
        except BaseException:
            _free_producer(pr)
            raise
        slot = self._free_p.pop()
        self._rx_budget += 2 * pr.n_enc
        ht_reserve(&self.st.rx_ssrc, self._rx_budget)
        for i, enc in enumerate(encodings):
            rid, media_ssrc, rtx_ssrc = enc
            s = &pr.enc[i]
            memcpy(s.rid, <const char*>rid, len(rid))
            s.rid_len = len(rid)
            s.ssrc = media_ssrc
            s.rtx_ssrc = rtx_ssrc
            if media_ssrc:
                ht_put(&self.st.rx_ssrc, ssrc_key(t_slot, media_ssrc), route_pack(slot, i, False))
            if rtx_ssrc:
                ht_put(&self.st.rx_ssrc, ssrc_key(t_slot, rtx_ssrc), route_pack(slot, i, True))
        self.st.producers[slot] = pr
        il_append(&tr.producers, slot)
        self._p[p] = slot

    def remove_producer(self, int p) -> None:
        cdef int32_t slot = self._p_slot(p)
        cdef Producer* pr = self.st.producers[slot]
        cdef Transport* tr = self.st.transports[pr.transport]
        cdef Consumer* c
        cdef int32_t i
        send_flush(self.st)
        for i in range(pr.consumers.n):
            c = self.st.consumers[pr.consumers.items[i]]
            c.producer = -1
            push_event(self.st, EV_PRODUCER_CLOSED, c.handle, 0, 0)
        for i in range(pr.n_enc):
            for x in (pr.enc[i].ssrc, pr.enc[i].rtx_ssrc):
                if x:
                    ht_del(&self.st.rx_ssrc, ssrc_key(pr.transport, x))
                    if tr.srtp_in != NULL:
                        self.st.srtp.remove_stream(tr.srtp_in, htonl(x))
        il_remove(&tr.producers, slot)
        self._rx_budget -= 2 * pr.n_enc
        _sum_producer(self.st.retired, self.st.retired_drops, pr)
        _free_producer(pr)
        self.st.producers[slot] = NULL
        del self._p[p]
        self._free_p.append(slot)

    def request_key_frame(self, int p) -> None:
        cdef Producer* pr = self.st.producers[self._p_slot(p)]
        cdef int32_t i
        self.st.now_ms = monotonic_ms()
        for i in range(pr.n_enc):
            request_keyframe(self.st, pr, i)
        send_flush(self.st)

    # ---- consumers ----

    def add_consumer(self, int c, int t, int p, unsigned int out_ssrc, dict pt_map, bint nack,
                     int spatial=-1, *, unsigned int rtx_ssrc=0, dict rtx_pt_map=None, bint pinned=False) -> None:
        """Forward producer p to transport t as consumer c under out_ssrc. With rtx_ssrc (non-zero) and
        rtx_pt_map (subscriber media PT -> RTX PT) retransmissions go out as RTX (RFC 4588), else on out_ssrc.
        ``pinned`` (a pipe consumer, _pipe.pxi) forwards encoding ``spatial`` only, whichever layers are active."""
        cdef int32_t t_slot = self._t_slot(t)
        cdef int32_t p_slot = self._p_slot(p)
        cdef Transport* tr = self.st.transports[t_slot]
        cdef Producer* pr = self.st.producers[p_slot]
        cdef Consumer* co
        cdef int32_t slot, i
        if c < 0:
            raise ValueError(f"handle must be >= 0, got {c}")
        if c in self._c:
            raise ValueError(f"consumer {c} already exists")
        if out_ssrc == 0:
            raise ValueError("out_ssrc must not be 0")
        if ht_get(&self.st.tx_ssrc, ssrc_key(t_slot, out_ssrc)) >= 0:
            raise ValueError(f"out_ssrc {out_ssrc} is already used on transport {t}")
        if not pt_map:
            raise ValueError("pt_map must not be empty")
        for k, v in pt_map.items():
            if not 0 <= k <= 127 or not 0 <= v <= 127:
                raise ValueError(f"pt_map entry {k}->{v} out of range 0..127")
        if not -1 <= spatial < pr.n_enc:
            raise ValueError(f"spatial must be in -1..{pr.n_enc - 1}, got {spatial}")
        if pinned and spatial < 0:
            raise ValueError("a pinned consumer needs its encoding (spatial >= 0)")
        if rtx_ssrc != 0:
            if rtx_ssrc == out_ssrc or ht_get(&self.st.tx_ssrc, ssrc_key(t_slot, rtx_ssrc)) >= 0:
                raise ValueError(f"rtx_ssrc {rtx_ssrc} is already used on transport {t}")
            if not rtx_pt_map:
                raise ValueError("rtx_ssrc needs a non-empty rtx_pt_map")
        for k, v in (rtx_pt_map or {}).items():
            if not 0 <= k <= 127 or not 0 <= v <= 127:
                raise ValueError(f"rtx_pt_map entry {k}->{v} out of range 0..127")
        if not self._free_c:
            self._grow_consumers()
        co = <Consumer*>zalloc_lines(sizeof(Consumer))
        if co == NULL:
            raise MemoryError()
        co.seq = <SeqRw*>zalloc_lines(sizeof(SeqRw))
        co.meta = <MetaSlot*>calloc(META_RING, sizeof(MetaSlot))
        if co.seq == NULL or co.meta == NULL:
            _free_consumer(co)
            raise MemoryError()
        slot = self._free_c.pop()
        co.handle = c
        co.transport = t_slot
        co.producer = p_slot
        co.out_ssrc = out_ssrc
        for i in range(128):
            co.pt_map[i] = -1
        for k, v in pt_map.items():
            co.pt_map[k] = v
        co.last_pt_in = 255
        co.nack = nack
        memset(co.rtx_pt, RTX_PT_NONE, sizeof(co.rtx_pt))
        if rtx_ssrc != 0:
            co.rtx_ssrc = rtx_ssrc
            co.rtx_seq = <uint16_t>(1000 + rng_next(self.st) % 31768)
            for k, v in rtx_pt_map.items():
                co.rtx_pt[k] = v
        # Initial output seq in [1000, 32767] (mediasoup): below 2^15 so an early wrap cannot confuse a
        # libsrtp receiver's rollover guess.
        seq_rw_init(co.seq, 1000 + rng_next(self.st) % 31768)
        vp8_munger_init(&co.vp8)
        co.preferred = spatial
        co.pinned = pinned
        co.current = -1
        co.target = -1
        co.rtt_ms = -1
        ht_put(&self.st.tx_ssrc, ssrc_key(t_slot, out_ssrc), slot)
        self.st.consumers[slot] = co
        il_append(&pr.consumers, slot)
        il_append(&tr.consumers, slot)
        self._c[c] = slot
        self.st.now_ms = monotonic_ms()
        consumer_retarget(self.st, co, self.st.now_ms)
        request_keyframe(self.st, pr, co.target)
        send_flush(self.st)

    def set_consumer_layer(self, int c, int spatial) -> None:
        cdef Consumer* co = self.st.consumers[self._c_slot(c)]
        if co.producer < 0:
            raise ValueError(f"consumer {c} has no producer")
        if not -1 <= spatial < self.st.producers[co.producer].n_enc:
            raise ValueError(f"spatial must be in -1..{self.st.producers[co.producer].n_enc - 1}, "
                             f"got {spatial}")
        co.preferred = spatial
        self.st.now_ms = monotonic_ms()
        consumer_retarget(self.st, co, self.st.now_ms)
        if co.target != co.current:
            request_keyframe(self.st, self.st.producers[co.producer], co.target)
            send_flush(self.st)

    def lower_consumer_layer(self, int c, int spatial) -> None:
        """A downswitch under congestion (the stream allocator's): as set_consumer_layer, and when the new target
        is below the layer being forwarded, that layer stops at once instead of running on until the target's key
        frame (asked for now) arrives, so the key frame does not queue behind, or get dropped with, packets the link
        cannot carry; its retransmissions stop too. At most DRAIN_MAX_MS (docs/FORWARDING.md, Simulcast
        switching)."""
        cdef Consumer* co
        self.set_consumer_layer(c, spatial)
        co = self.st.consumers[self._c_slot(c)]
        if 0 <= co.target < co.current:
            co.drain = 1
            co.drain_until_ms = self.st.now_ms + DRAIN_MAX_MS

    def set_consumer_temporal(self, int c, int temporal) -> None:
        """Forward only the temporal layers <= temporal of consumer c's VP8 stream (-1 = all): pictures above it are
        dropped with the sequence numbers and PictureIDs closed up, so the subscriber sees no gap; TL0PICIDX goes
        out as sent. A lower cap applies at the next picture, a higher one at the next layer-sync picture of the
        layer above (or key frame). Packets without a TID (no T bit) are never filtered."""
        cdef Consumer* co = self.st.consumers[self._c_slot(c)]
        if not -1 <= temporal <= VP8_TID_ALL:
            raise ValueError(f"temporal must be in -1..{VP8_TID_ALL}, got {temporal}")
        vp8_set_max_temporal(&co.vp8, temporal)

    def set_consumer_test_loss(self, int c, int percent) -> None:
        """Test hook: drop ``percent`` % of c's first sends (never its retransmissions), as a lossy link would."""
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be in 0..100, got {percent}")
        self.st.consumers[self._c_slot(c)].test_loss = percent

    def set_playout_delay(self, int c, int ext_id, int min_ms, int max_ms) -> None:
        """Tell c's receiver to hold its video for at least min_ms and at most max_ms before showing it (the
        playout-delay element with id ext_id, written into c's packets for a second from now; ext_id 0 stops)."""
        if not 0 <= ext_id <= 255:
            raise ValueError(f"ext_id must be in 0..255 (0 = not negotiated), got {ext_id}")
        if not 0 <= min_ms <= max_ms <= PLAYOUT_MAX_UNITS * 10:
            raise ValueError(f"need 0 <= min_ms <= max_ms <= {PLAYOUT_MAX_UNITS * 10}, got {min_ms}, {max_ms}")
        playout_set(self.st.consumers[self._c_slot(c)], monotonic_us() - self.st.epoch_us, <uint8_t>ext_id,
                    min_ms // 10, max_ms // 10)

    def pause_consumer(self, int c) -> None:
        self.st.consumers[self._c_slot(c)].paused = 1

    def resume_consumer(self, int c) -> None:
        cdef Consumer* co = self.st.consumers[self._c_slot(c)]
        if not co.paused:
            return
        co.paused = 0
        # Continue at last+1 (mediasoup SeqManager Sync); video waits for a key frame it asks for now (a consumer
        # that never forwarded waits for its first layer switch, which needs one too).
        seq_rw_sync(co.seq)
        vp8_munger_sync(&co.vp8)
        if co.producer >= 0 and self.st.producers[co.producer].kind == 1:
            co.wait_keyframe = co.current >= 0
            self.st.now_ms = monotonic_ms()
            consumer_request_keyframe(self.st, co)
            send_flush(self.st)

    def remove_consumer(self, int c) -> None:
        cdef int32_t slot = self._c_slot(c)
        cdef Consumer* co = self.st.consumers[slot]
        cdef Transport* tr = self.st.transports[co.transport]
        send_flush(self.st)
        if co.producer >= 0:
            il_remove(&self.st.producers[co.producer].consumers, slot)
        il_remove(&tr.consumers, slot)
        ht_del(&self.st.tx_ssrc, ssrc_key(co.transport, co.out_ssrc))
        if tr.srtp_out != NULL:
            self.st.srtp.remove_stream(tr.srtp_out, htonl(co.out_ssrc))
            if co.rtx_ssrc != 0:
                self.st.srtp.remove_stream(tr.srtp_out, htonl(co.rtx_ssrc))
        _sum_consumer(self.st.retired, self.st.retired_drops, co)
        _free_consumer(co)
        self.st.consumers[slot] = NULL
        del self._c[c]
        self._free_c.append(slot)

    # ---- I/O, time, events, counters ----

    def pump(self, bint local=False) -> list:
        """Drain the socket (up to PUMP_BUDGET_BATCHES batches or PUMP_BUDGET_TX sends), forward RTP/RTCP
        natively and return the STUN/DTLS datagrams as (transport handle or -1, data, (host, port)); with
        ``local`` as (handle, data, (host, port), local address) where the socket has IP_PKTINFO on ("" if not)."""
        cdef list out = self._pump(local)
        return out if out is not None else []

    def set_reader(self, slow_path, bint local=False) -> None:
        """What :meth:`on_readable` calls when a wake-up has work for Python: ``slow_path(datagrams)`` with
        pump()'s list (None when only events are pending); ``local`` as for pump(). None: on_readable only pumps."""
        if slow_path is not None and not callable(slow_path):
            raise TypeError("slow_path must be callable or None")
        self._slow_path = slow_path
        self._reader_local = local

    def on_readable(self) -> None:
        """The socket's reader callback (the worker's event loop calls it directly): pump() in C, and a call into
        Python (set_reader's ``slow_path``) only if STUN or DTLS arrived or an event is pending. A wake-up that
        only forwards media builds no Python object and runs no Python code."""
        cdef list out = self._pump(self._reader_local)
        if (out is not None or self.st.ev_head != self.st.ev_tail) and self._slow_path is not None:
            self._slow_path(out)

    cdef list _pump(self, bint local):
        """pump()'s work; None instead of an empty list."""
        cdef EngineState* e = self.st
        cdef int n, i, batches = 0
        cdef int32_t t_out = -1
        cdef timespec wall
        cdef list out = None
        cdef uint64_t tx_start = e.tx_datagrams + <uint64_t>e.n_send
        e.wakeups += 1
        while batches < PUMP_BUDGET_BATCHES:
            for i in range(e.batch):
                e.recv_msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6)
                if e.kernel_ts or e.pktinfo:
                    e.recv_msgs[i].msg_hdr.msg_controllen = RECV_CMSG_BYTES
            n = recvmmsg(e.fd, e.recv_msgs, e.batch, MSG_DONTWAIT, NULL)
            if n <= 0:
                if n < 0 and errno == EINTR:
                    continue
                if n < 0 and errno != EAGAIN and errno != EWOULDBLOCK:
                    e.recv_errors += 1
                break
            e.now_us = monotonic_us()
            e.now_ms = e.now_us // 1000
            if e.kernel_ts:
                clock_gettime(CLOCK_REALTIME, &wall)
                e.realtime_offset_us = <int64_t>wall.tv_sec * 1000000 + wall.tv_nsec // 1000 - e.now_us
            e.now_us -= e.epoch_us
            e.pumps += 1
            for i in range(n):
                e.rx_datagrams += 1
                if on_datagram(e, i, &t_out):
                    data = (<char*>(e.recv_buf + <size_t>i * RECV_SLOT_BYTES))[:e.recv_msgs[i].msg_len]
                    if out is None:
                        out = []
                    if local:
                        out.append((t_out, data, _address(&e.recv_addr[i]),
                                    _local_address(&e.recv_msgs[i].msg_hdr) if e.pktinfo else ""))
                    else:
                        out.append((t_out, data, _address(&e.recv_addr[i])))
            fanout_flush(e)                   # before the next recvmmsg reuses the arena
            batches += 1
            if n < e.batch:
                break                         # the queue was empty: skip the EAGAIN round trip
            if e.tx_datagrams + <uint64_t>e.n_send - tx_start >= PUMP_BUDGET_TX:
                # NOTE: a large fan-out turns one batch into tens of thousands of sends; the reader fires again
                # at once while the socket stays readable, so yielding here costs no throughput but lets the
                # worker's loop answer control and send heartbeats (an overloaded worker is not a hung one).
                break
        send_flush(e)
        if e.auto_tick_ms > 0 and batches > 0 and e.now_ms - e.last_tick_ms >= e.auto_tick_ms:
            # The timers ride on the wake-up that packets caused (Engine.auto_tick_ms), after its media left: no
            # wake-up of their own. engine_tick flushes what it queued.
            e.pump_ticks += 1
            engine_tick_now(e, e.now_ms)
        return out

    def send(self, str host, int port, bytes data, str local="") -> None:
        """Slow-path output (STUN responses, DTLS records) to host:port, sent at once; from ``local`` (IPv4,
        IP_PKTINFO) when given."""
        cdef sockaddr_in sa4
        cdef sockaddr_in6 sa6
        cdef bytes host_b = host.encode()
        cdef ssize_t r
        cdef uint32_t local_be = 0
        cdef uint64_t control[LOCAL_CMSG_WORDS]
        cdef msghdr h
        cdef iovec v
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        memset(&sa4, 0, sizeof(sa4))
        memset(&sa6, 0, sizeof(sa6))
        if inet_pton(AF_INET, host_b, &sa4.sin_addr) == 1:
            sa4.sin_family = AF_INET
            sa4.sin_port = htons(port)
            if local and inet_pton(AF_INET, local.encode(), &local_be) != 1:
                raise ValueError(f"local address must be IPv4, got {local!r}")
            if local_be:
                _write_pktinfo(control, local_be)
                v.iov_base = <void*><const char*>data
                v.iov_len = len(data)
                memset(&h, 0, sizeof(h))
                h.msg_name = &sa4
                h.msg_namelen = sizeof(sa4)
                h.msg_iov = &v
                h.msg_iovlen = 1
                h.msg_control = control
                h.msg_controllen = CMSG_SPACE(sizeof(in_pktinfo))
                r = sendmsg(self.fd, &h, MSG_DONTWAIT)
            else:
                r = sendto(self.fd, <const char*>data, len(data), MSG_DONTWAIT, <sockaddr*>&sa4, sizeof(sa4))
        elif inet_pton(AF_INET6, host_b, &sa6.sin6_addr) == 1:
            sa6.sin6_family = AF_INET6
            sa6.sin6_port = htons(port)
            r = sendto(self.fd, <const char*>data, len(data), MSG_DONTWAIT, <sockaddr*>&sa6, sizeof(sa6))
        else:
            raise ValueError(f"not an IP address: {host!r}")
        if r < 0:
            raise OSError(errno, os.strerror(errno))
        self.st.tx_datagrams += 1

    def tick(self, long long now_ms) -> None:
        """Timers: RR toward publishers and SR+SDES toward subscribers about every second per transport,
        transport-wide CC feedback toward publishers every TWCC_INTERVAL_MS, NACKs toward publishers,
        layer re-targeting, key-frame request retries. now_ms is CLOCK_MONOTONIC in milliseconds."""
        cdef int64_t now_us = now_ms * 1000 - self.st.epoch_us
        if now_us > self.st.now_us:
            self.st.now_us = now_us           # send times of what the tick sends (_bwe.pxi)
        engine_tick_now(self.st, now_ms)

    def next_due_ms(self, long long now_ms) -> int:
        """When tick() next has work (the same clock as tick's now_ms, at most NEXT_DUE_MAX_MS ahead; now_ms or
        earlier when something is due): RTCP reports, TWCC feedback, the send-rate window, a probe cluster's
        timeout; now_ms + TICK_FINE_MS while a timer needs every tick (probe padding, NACKs, key-frame requests,
        layer switches). The worker's tick sleeps until then (docs/FORWARDING.md, Timers)."""
        return engine_next_due(self.st, now_ms)

    @property
    def auto_tick_ms(self) -> int:
        """0, or: pump() also runs tick()'s timers when a batch arrives at least this many ms after the last tick
        (the worker sets TICK_FINE_MS, so a busy worker's timers keep their cadence without waking for them)."""
        return self.st.auto_tick_ms

    @auto_tick_ms.setter
    def auto_tick_ms(self, int ms) -> None:
        self.st.auto_tick_ms = ms if ms > 0 else 0

    @property
    def last_tick_ms(self) -> int:
        """The now_ms of the last timer run (tick() or pump()'s), 0 before the first."""
        return self.st.last_tick_ms

    @property
    def wakeups(self) -> int:
        """pump() calls so far (the worker's wake-ups for its socket)."""
        return self.st.wakeups

    def poll_events(self) -> list:
        cdef EngineState* e = self.st
        cdef Event* ev
        cdef list out = []
        while e.ev_head != e.ev_tail:
            ev = &e.events[e.ev_head & (EVENT_RING - 1)]
            e.ev_head += 1
            if ev.code in (EV_NEW_STREAM, EV_KEY_FRAME_REQUESTED, EV_STREAM_RESTARTED):
                out.append((ev.code, ev.a, ev.b, ev.c))
            elif ev.code == EV_LAYER_SWITCHED:
                out.append((ev.code, ev.a, ev.b))
            elif ev.code == EV_SRTP_STREAM_RESET:
                out.append((ev.code, ev.a, ev.c))
            elif ev.code == EV_BWE_CHANGED:
                out.append((ev.code, ev.a, ev.c, ev.b))
            else:
                out.append((ev.code, ev.a))
        return out

    @property
    def gso(self) -> bool:
        """True while queued datagrams to one transport leave as one segmented message (UDP GSO)."""
        return bool(self.st.gso)

    @gso.setter
    def gso(self, bint on) -> None:
        send_flush(self.st)
        self.st.gso = on and gso_supported(self.fd)
        self.st.gso_refusals = 0

    @property
    def transport_count(self) -> int:
        """Transports the Engine holds (the worker's tick slows down while there are none)."""
        return len(self._t)

    def totals(self) -> dict:
        """The worker's media totals for its heartbeat, summed in C over every live transport, producer layer and
        consumer plus what removed ones counted (so they only grow): ``{"totals": {TOTAL_NAMES...}, "drops":
        {reason: n}}``, drops including the Engine's own (datagrams no transport owns)."""
        cdef EngineState* e = self.st
        cdef uint64_t tot[TOTAL_COUNT]
        cdef uint64_t drops[DROP_REASON_COUNT]
        cdef int32_t i
        memcpy(tot, e.retired, sizeof(tot))
        memcpy(drops, e.retired_drops, sizeof(drops))
        _sum_drops(drops, e.drops)
        for i in range(e.cap_transports):
            if e.transports[i] != NULL:
                _sum_drops(drops, e.transports[i].drops)
        for i in range(e.cap_producers):
            if e.producers[i] != NULL:
                _sum_producer(tot, drops, e.producers[i])
        for i in range(e.cap_consumers):
            if e.consumers[i] != NULL:
                _sum_consumer(tot, drops, e.consumers[i])
        return {"totals": {TOTAL_NAMES[i]: tot[i] for i in range(TOTAL_COUNT)},
                "drops": {DROP_REASON_NAMES[i]: drops[i] for i in range(DROP_REASON_COUNT) if drops[i]}}

    def snapshot_engine(self) -> dict:
        cdef EngineState* e = self.st
        d = {"rx_datagrams": e.rx_datagrams, "tx_datagrams": e.tx_datagrams, "tx_messages": e.tx_messages,
             "gso": int(e.gso), "gso_errno": e.gso_errno, "gso_refused": e.gso_refused,
             "recv_errors": e.recv_errors,
             "pumps": e.pumps, "wakeups": e.wakeups, "pump_ticks": e.pump_ticks,
             "events_dropped": e.ev_dropped, "transports": len(self._t),
             "producers": len(self._p), "consumers": len(self._c), "kernel_timestamps": int(e.kernel_ts)}
        d.update(_drops(e.drops))
        d["c_bytes"], d["c_blocks"] = mem_allocated()   # the Engine module's own C state (fastpath/mem.pxd)
        d["srtp_sessions"] = len(self._srtp)
        return d

    def snapshot_transport(self, int t) -> dict:
        cdef Transport* tr = self.st.transports[self._t_slot(t)]
        d = {"rx_packets": tr.rx_packets, "rx_bytes": tr.rx_bytes, "tx_packets": tr.tx_packets,
             "tx_bytes": tr.tx_bytes, "rtp_rx": tr.rtp_rx, "rtcp_rx": tr.rtcp_rx, "rtcp_tx": tr.rtcp_tx,
             "stun_rx": tr.stun_rx, "dtls_rx": tr.dtls_rx, "srtp_resets": tr.srtp_resets,
             "bound": int(tr.bound), "srtp": int(tr.srtp_in != NULL), "rtt_ms": tr.rtt_ms,
             "sent_bps": tr.sent_bps, "probing": int(tr.probe_until_ms != 0),
             "probe_clusters": tr.probe_clusters, "probe_packets": tr.probe_packets,
             "probe_bytes": tr.probe_bytes, "rtx_bytes": tr.rtx_bytes}
        if tr.twcc != NULL:
            d.update(twcc_packets=tr.twcc.packets, twcc_duplicates=tr.twcc.duplicates,
                     twcc_too_old=tr.twcc.too_old, twcc_resyncs=tr.twcc.resyncs,
                     twcc_feedbacks=tr.twcc.feedbacks, twcc_pending=twcc_pending(tr.twcc))
        if tr.bwe != NULL:
            d.update(_bwe_snapshot(tr.bwe))
        d.update(_drops(tr.drops))
        return d

    def transport_estimate(self, int t):
        """The send-side estimate toward a transport as ``snapshot_transport`` reports it, without the rest of the
        snapshot: ``(bwe_bps, bwe_state, bwe_loss, bwe_probe_pending, rtx_bytes, twcc_feedback_packets,
        remb_packets)``, or None when the transport has no estimator (no transport-cc). The stream allocator
        (router/allocator.py) reads it for every transport with consumers twice a second."""
        cdef Transport* tr = self.st.transports[self._t_slot(t)]
        cdef Bwe* b = tr.bwe
        if b == NULL:
            return None
        return (int(b.estimate_bps), BWE_STATES[b.state], round(b.loss, 4), int(b.pr_start_us >= 0), tr.rtx_bytes,
                b.feedback_packets, b.remb_packets)

    def snapshot_producer(self, int p) -> dict:
        cdef Producer* pr = self.st.producers[self._p_slot(p)]
        cdef RecvStream* s
        cdef int32_t i
        layers = []
        for i in range(pr.n_enc):
            s = &pr.enc[i]
            layer = {"ssrc": s.ssrc, "rtx_ssrc": s.rtx_ssrc, "packets": s.packets, "bytes": s.bytes,
                     "rtx_packets": s.rtx_packets, "keyframes": s.keyframes, "kf_requests": s.kf_requests,
                     "received": s.received,
                     "expected": (s.max_ext_seq - s.base_ext_seq + 1) if s.seq_started else 0,
                     "jitter": s.jitter_q4 >> 4, "sr_count": s.sr_count,
                     "temporal_bytes": [s.tid_bytes[0], s.tid_bytes[1], s.tid_bytes[2], s.tid_bytes[3]],
                     "temporal_pictures": [s.tid_pictures[0], s.tid_pictures[1], s.tid_pictures[2],
                                           s.tid_pictures[3]]}
            if s.nack != NULL:
                layer.update(nack_requested=s.nack.requested, nack_packets=s.nack.packets,
                             nack_recovered=s.nack.recovered, nack_expired=s.nack.expired,
                             nack_overflows=s.nack.overflows, nack_pending=s.nack.n)
            layer.update(_drops(s.drops))
            layers.append(layer)
        return {"packets": sum(x["packets"] for x in layers), "bytes": sum(x["bytes"] for x in layers),
                "consumers": pr.consumers.n, "audio_level_sum": pr.audio_level_sum,
                "audio_level_count": pr.audio_level_count, "layers": layers, "clock_rate": pr.clock_rate}

    def snapshot_consumer(self, int c) -> dict:
        cdef Consumer* co = self.st.consumers[self._c_slot(c)]
        d = {"packets": co.packets, "bytes": co.bytes, "retransmits": co.retransmits, "nack_rx": co.nack_rx,
             "pli_rx": co.pli_rx, "layer_switches": co.layer_switches, "current_layer": co.current,
             "target_layer": co.target, "paused": int(co.paused), "draining": int(co.drain), "rr_count": co.rr_count,
             "rr_fraction_lost": co.rr_fraction_lost, "rr_cumulative_lost": co.rr_cumulative_lost,
             "rr_highest_seq": co.rr_highest_seq, "rr_jitter": co.rr_jitter, "rtt_ms": co.rtt_ms,
             "rtx_ssrc": co.rtx_ssrc, "rtx_packets": co.rtx_packets,
             "temporal_layer": co.vp8.tid_max, "temporal_target": co.vp8.tid_target,
             "hole_keyframes": co.hole_keyframes, "pinned": int(co.pinned), "test_lost": co.test_lost,
             "playout_stamped": co.pd_stamped}
        d.update(_drops(co.drops))
        return d


cdef void _want_timestamps(EngineState* e) noexcept nogil:
    """Kernel receive timestamps (SO_TIMESTAMPNS) only while some transport wants TWCC feedback, the one user of
    arrival times: once any socket asks for them the kernel stamps every packet it receives, which on loopback
    includes everything this worker sends (about 2 % of a fan-out worker's CPU)."""
    cdef int want = 1 if e.twcc_transports > 0 else 0
    if want == e.kernel_ts:
        return
    if setsockopt(e.fd, SOL_SOCKET, SO_TIMESTAMPNS, &want, sizeof(int)) == 0:
        e.kernel_ts = want
    elif not want:
        e.kernel_ts = 0


BWE_STATES = ("normal", "overusing", "underusing")


cdef dict _bwe_snapshot(Bwe* b):
    """The send-side estimate toward a transport (docs/FORWARDING.md, Transport-wide congestion control)."""
    return {"bwe_bps": int(b.estimate_bps), "bwe_state": BWE_STATES[b.state], "bwe_loss": round(b.loss, 4),
            "bwe_delay_bps": int(b.delay_bps), "bwe_loss_bps": int(b.loss_bps), "bwe_acked_bps": int(b.acked_bps),
            "bwe_remb_bps": int(b.remb_bps), "remb_packets": b.remb_packets, "twcc_ext_id": b.ext_id,
            "twcc_stamped": b.stamped, "twcc_stamp_skipped": b.stamp_skipped,
            "twcc_feedback_packets": b.feedback_packets, "twcc_feedback_bad": b.feedback_bad,
            "twcc_acked": b.acked_packets, "twcc_lost": b.lost_packets, "twcc_unknown": b.unknown_packets,
            "bwe_probe_pending": int(b.pr_start_us >= 0), "bwe_probe_bps": int(b.probe_bps),
            "bwe_probe_results": b.probe_results, "bwe_probe_raises": b.probe_raises,
            "bwe_detector_restarts": b.detector_restarts}


cdef void _free_transport(Transport* t) noexcept nogil:
    if t.bwe != NULL:
        bwe_free(t.bwe)
        free(t.bwe)
    if t.twcc != NULL:
        twcc_free(t.twcc)
        free(t.twcc)
    free(t.producers.items)
    free(t.consumers.items)
    free(t)


cdef void _free_producer(Producer* p) noexcept nogil:
    cdef int32_t i
    for i in range(MAX_ENCODINGS):
        store_free(&p.enc[i].store)
        free(p.enc[i].nack)
    free(p.consumers.items)
    free(p)


cdef void _free_consumer(Consumer* c) noexcept nogil:
    free(c.seq)
    free(c.meta)
    free(c)
