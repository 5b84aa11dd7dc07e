"""The load generator's hot loop: paced SRTP senders and counting SRTP receivers on one UDP socket.

Owns the per-packet work of the benchmark's synthetic participants once their ICE and DTLS set-up is done
(``bench.peer``): building RTP packets with a bench payload (publisher stream id, packet counter, send time),
protecting them with each publisher's SRTP context, sending them with ``sendmmsg`` from each participant's own
loopback address (``IP_PKTINFO`` per message, the socket is bound to the wildcard address), receiving with
``recvmmsg``, demultiplexing by SSRC, counting packets, sequence gaps and reordering per received stream,
authenticating and decrypting (every ``verify_every``-th packet) and measuring one-way latency against the
send time in the payload (``CLOCK_MONOTONIC``, same host). It also resends each participant's ICE consent
check (a pre-built STUN request) every few seconds. A subscribing participant may have a downlink
(``add_downlink``): the transport-wide sequence of every packet arriving over it is answered with transport-wide CC
feedback every 100 ms (the fast path's own builder, fastpath/twcc.pxd), optionally behind a token bucket with a
virtual FIFO queue (a rate-capped link). The loop runs without the GIL.

RFC 3550 (RTP), RFC 3711 (SRTP), RFC 7741 (VP8 payload descriptor: the first two payload bytes make the
Engine's key-frame detection see frame starts and key frames), RFC 7675 (consent freshness), RFC 4588 (RTX),
draft-holmer-rmcat-transport-wide-cc-extensions-01 (transport-wide CC).
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from fastpath.includes.linux cimport (
    AF_INET,
    CLOCK_MONOTONIC,
    CLOCK_REALTIME,
    CMSG_DATA,
    CMSG_FIRSTHDR,
    CMSG_LEN,
    CMSG_NXTHDR,
    CMSG_SPACE,
    EINTR,
    IPPROTO_UDP,
    MSG_DONTWAIT,
    MSG_TRUNC,
    SCM_TIMESTAMPNS,
    SO_TIMESTAMPNS,
    SOL_SOCKET,
    UDP_GRO,
    clock_gettime,
    cmsghdr,
    getsockopt,
    errno,
    htons,
    in_addr,
    inet_pton,
    iovec,
    mmsghdr,
    msghdr,
    recvmmsg,
    sendmmsg,
    setsockopt,
    sockaddr_in,
    socklen_t,
    timespec,
)
from fastpath.includes.srtp cimport SRTP_ERR_OK, SrtpFns
from fastpath.rtp cimport rd16, rd32, wr16, wr32
from fastpath.srtp cimport SrtpContext, srtp_fns
from fastpath.twcc cimport TWCC_FEEDBACK_BYTES, TWCC_FLUSH_PENDING, TwccRecv, twcc_build, twcc_free, twcc_init, twcc_pending, twcc_record


cdef extern from "<netinet/in.h>" nogil:
    struct in_pktinfo:
        int ipi_ifindex
        in_addr ipi_spec_dst
        in_addr ipi_addr
    int IPPROTO_IP
    int IP_PKTINFO


cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    short POLLIN
    int ppoll(pollfd* fds, unsigned long nfds, const timespec* timeout, const void* sigmask)


cdef extern from "<time.h>" nogil:
    int CLOCK_THREAD_CPUTIME_ID


cdef enum:
    SLOT = 2048
    GRO_SLOT = 65536                     # a receive slot when the socket has UDP_GRO: up to 64 datagrams in one
    MAX_ACCEPT = 16                      # source networks the receive loop reads from
    MAX_HEADER_EXT = 64                  # bytes of RTP header extension block a sender may add
    MAX_NACK_FCI = 16                    # (PID, BLP) pairs per generic NACK: up to 272 packets
    HISTORY = 512                        # packets a sender keeps for retransmission (uplink loss only)
    CMSG_SLOT = 96                       # IP_PKTINFO (32 bytes), with UDP_GRO the segment length (24) and, with
                                         # downlinks, the kernel's receive time (SO_TIMESTAMPNS, 32)
    MAGIC = 0x4D524231                   # "MRB1": bench payload marker
    PAYLOAD_OFFSET = 2                   # after the VP8 payload descriptor and payload header bytes
    BENCH_HEADER = 24                    # magic, stream id, counter, send time
    LAT_FINE = 2000                      # 10 us buckets up to 20 ms
    LAT_COARSE = 2000                    # then 1 ms buckets up to 2.02 s, last bucket = overflow
    LAT_BUCKETS = LAT_FINE + LAT_COARSE
    LATE_NS = 10000000                   # a packet sent more than 10 ms after its due time is "late"
    MAX_WAIT_NS = 5000000
    STALL_NS = 50000000                  # flat out: no packet back for 50 ms -> the window's packets are lost
    MEDIA_GAP_NS = 1000000000            # a downlink without media this long had its video paused (resumed_s)


ctypedef struct Sender:
    void* ctx
    sockaddr_in dst
    uint32_t src                         # source address, network order
    uint32_t ssrc
    uint32_t stream_id
    uint8_t pt
    uint8_t video
    int payload_len
    int64_t interval_ns                  # 0 = as fast as possible
    int64_t phase_ns
    uint32_t ts_step                     # RTP ticks per frame
    uint32_t packets_per_frame
    uint32_t keyframe_every              # frames
    uint16_t seq
    uint32_t ts
    uint64_t counter                     # packets ever sent (payload counter)
    uint64_t in_frame
    uint64_t frame
    int64_t next_due
    uint64_t sent
    uint64_t late
    uint64_t behind                      # packets due but not sent when a run ended
    int64_t max_late_ns
    uint64_t protect_failed
    uint32_t fanout                      # receivers of this stream
    uint8_t force_key                    # a PLI/FIR asked for a key frame: the next frame is one
    uint8_t ext_len                      # bytes of ``ext`` after the fixed header (0: no X bit)
    uint8_t ext[MAX_HEADER_EXT]          # the RTP header extension block, RFC 8285 (e.g. MID and RID)
    # simulated uplink loss and the publisher's answer to the server's NACKs, when configured
    uint8_t* hist                        # HISTORY plaintext packets of SLOT bytes, by sequence number
    int32_t* hist_len                    # 0 = empty
    uint16_t* hist_seq
    uint64_t up_dropped                  # packets "sent" that the simulated uplink lost
    uint64_t retransmitted               # packets sent again because the server NACKed them
    uint64_t nack_missing                # NACKed sequence numbers no longer (or never) in the history


ctypedef struct Receiver:
    void* ctx
    uint32_t ssrc
    int64_t sender                       # expected stream id in the payload, -1 = any
    uint64_t received
    uint64_t bytes
    int64_t first_ext
    int64_t max_ext
    uint64_t reordered
    uint64_t verified
    uint64_t auth_failed
    uint64_t bad_payload
    # receiver reports (RFC 3550 6.4.2) back to the server, when configured
    void* rtcp_ctx                       # the participant's outbound context
    sockaddr_in rtcp_dst
    uint32_t rtcp_src
    uint32_t reporter_ssrc
    int64_t next_rr_ns
    uint64_t rr_received                 # received at the previous report
    int64_t rr_expected                  # expected at the previous report
    uint64_t rr_sent
    # simulated downlink loss and its recovery (RFC 4585 generic NACK), when configured
    uint64_t dropped                     # packets the generator discarded as if the network had lost them
    uint64_t nacks_sent
    uint64_t nacked                      # sequence numbers asked for again
    int32_t downlink                     # index of the participant's Downlink, -1 = none
    uint8_t rtx                          # an RTX stream (RFC 4588): counted and fed to the downlink only


ctypedef struct Downlink:
    # One subscribing participant's link: its transport-wide CC feedback (what a browser sends every 100 ms) and,
    # with a cap, a token bucket with a FIFO queue in front of it. The queue is virtual: a packet that fits is
    # counted at once but reported as arriving when the bucket would have let it through, one that would wait
    # longer than the queue holds is dropped (tail drop), as a shaped link does.
    TwccRecv twcc
    uint8_t ext_id                       # the transport-wide sequence element's id, 1..14 (one-byte form)
    void* rtcp_ctx                       # the participant's outbound context
    sockaddr_in rtcp_dst
    uint32_t rtcp_src
    uint32_t sender_ssrc
    int64_t next_fb_ns
    double ns_per_byte                   # 0 = no cap
    int64_t queue_ns
    int64_t link_free_ns                 # when the virtual link has sent everything queued so far
    uint64_t offered_bytes
    uint64_t delivered_bytes
    uint64_t cap_dropped
    uint64_t no_element                  # packets without the transport-wide sequence element
    uint64_t feedback_sent
    int64_t first_ns                     # the first packet offered (never reset), 0 = none yet
    int64_t last_drop_ns                 # the cap's last tail drop (never reset), 0 = none
    int64_t media_last_ns                # the last media packet delivered (not RTX: probe padding), 0 = none
    int64_t media_gap_max_ns             # the longest time without media after the first (a paused track)
    int64_t media_resumed_ns             # the first media packet after the last gap > MEDIA_GAP_NS, 0 = none


ctypedef struct Consent:
    sockaddr_in dst
    uint32_t src
    uint8_t* data
    int length
    int64_t next_ns


cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline int64_t _realtime_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline int64_t thread_cpu_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline void wr64(uint8_t* p, uint64_t v) noexcept nogil:
    wr32(p, <uint32_t>(v >> 32))
    wr32(p + 4, <uint32_t>v)


cdef inline uint64_t rd64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>rd32(p) << 32) | rd32(p + 4)


cdef int _addr(str host, int port, sockaddr_in* sa) except -1:
    memset(sa, 0, sizeof(sockaddr_in))
    sa.sin_family = AF_INET
    sa.sin_port = htons(port)
    if inet_pton(AF_INET, host.encode(), &sa.sin_addr) != 1:
        raise ValueError(f"IPv4 address expected, got {host!r}")
    return 0


cdef bint _gro_enabled(int fd) noexcept nogil:
    """Whether the socket delivers a train of datagrams as one buffer (UDP_GRO set, udp(7))."""
    cdef int value = 0
    cdef socklen_t n = sizeof(int)
    return getsockopt(fd, IPPROTO_UDP, UDP_GRO, &value, &n) == 0 and value != 0


cdef uint32_t _ip(str host) except? 0:
    cdef in_addr a
    if inet_pton(AF_INET, host.encode(), &a) != 1:
        raise ValueError(f"IPv4 address expected, got {host!r}")
    return a.s_addr


cdef class LoadGen:
    """Senders and receivers of synthetic participants sharing one non-blocking UDP socket ``fd``.

    ``fd`` must be bound to 0.0.0.0 with ``IP_PKTINFO`` usable, so each participant can send from its own
    address. Datagrams are read only from the networks of :meth:`accept_from` (127.0.0.0/8 until it is called).
    Contexts passed in are kept alive by this object.
    """

    cdef int fd
    cdef int batch
    cdef Sender* senders
    cdef int nsenders
    cdef int max_senders
    cdef Receiver* receivers
    cdef int nreceivers
    cdef int max_receivers
    cdef int* table                      # open addressing: ssrc -> receiver index + 1
    cdef uint32_t table_mask
    cdef Consent* consents
    cdef int nconsents
    cdef int max_consents
    cdef list _keep
    cdef SrtpFns fns
    cdef uint64_t latency[LAT_BUCKETS]
    cdef uint64_t c_rtcp, c_stun, c_dtls, c_unknown, c_foreign, c_short, c_recv_calls, c_send_calls
    cdef uint64_t c_send_errors, c_consent_sent, c_polls, c_rr_sent
    cdef int64_t cpu_ns, wall_ns
    cdef uint64_t sent_weighted, recv_matched, forgiven, c_forgiven, c_blocked
    cdef int64_t window_out, last_progress_ns
    cdef bint blocked
    cdef uint8_t* rbuf
    cdef int rslot                       # bytes per receive slot: SLOT, or GRO_SLOT with UDP_GRO
    cdef bint gro
    cdef bint kernel_ts                  # SO_TIMESTAMPNS is on (a downlink's feedback reports the kernel's times)
    cdef int64_t rt_offset_ns            # CLOCK_REALTIME - CLOCK_MONOTONIC at the last recvmmsg (kernel_ts)
    cdef uint64_t c_gro_buffers, c_gro_datagrams, c_truncated
    cdef mmsghdr* rmsgs
    cdef iovec* riov
    cdef sockaddr_in* rnames
    cdef uint8_t* sbuf
    cdef mmsghdr* smsgs
    cdef iovec* siov
    cdef uint8_t* scmsg
    cdef uint8_t* rcmsg
    cdef uint32_t* rtcp_addr             # participant address (network order) -> inbound context, open addressing
    cdef void** rtcp_ctx
    cdef uint32_t rtcp_mask
    cdef uint64_t c_pli, c_rtcp_auth_failed
    cdef uint64_t drop_below                 # simulated downlink loss: drop when the PRNG draws below this
    cdef uint64_t up_drop_below              # simulated uplink loss, the same way
    cdef uint64_t c_nack_received
    cdef uint64_t rng                        # xorshift64* state
    cdef int nack_queued                     # datagrams (NACKs, retransmissions) queued during one _receive
    cdef uint32_t accept_net[MAX_ACCEPT]      # network order, already masked
    cdef uint32_t accept_mask[MAX_ACCEPT]
    cdef int naccept
    cdef Downlink* downlinks
    cdef int ndownlinks
    cdef int max_downlinks

    def __cinit__(self, int fd, int max_senders, int max_receivers, int max_consents=0, int batch=64):
        cdef int i
        cdef uint32_t size = 16
        if fd < 0:
            raise ValueError("fd must be a socket descriptor")
        if max_senders < 0 or max_receivers < 0 or max_consents < 0:
            raise ValueError("capacities must not be negative")
        if not 1 <= batch <= 1024:
            raise ValueError("batch must be in 1..1024")
        self.fd = fd
        self.batch = batch
        self.gro = _gro_enabled(fd)      # bench.net.GeneratorSocket asks for it (before any LoadGen reads)
        self.rslot = GRO_SLOT if self.gro else SLOT
        self.accept_net[0] = _ip("127.0.0.0")
        self.accept_mask[0] = _ip("255.0.0.0")
        self.naccept = 1
        self.max_senders = max_senders
        self.max_receivers = max_receivers
        self.max_consents = max_consents
        self._keep = []
        self.fns = srtp_fns()
        while size < 2 * <uint32_t>max_receivers + 2:
            size <<= 1
        self.table_mask = size - 1
        self.senders = <Sender*>calloc(max_senders + 1, sizeof(Sender))
        self.receivers = <Receiver*>calloc(max_receivers + 1, sizeof(Receiver))
        self.max_downlinks = max_receivers
        self.downlinks = <Downlink*>calloc(max_receivers + 1, sizeof(Downlink))
        if self.downlinks == NULL:
            raise MemoryError()
        self.consents = <Consent*>calloc(max_consents + 1, sizeof(Consent))
        self.table = <int*>calloc(size, sizeof(int))
        self.rbuf = <uint8_t*>calloc(batch, self.rslot)
        self.rmsgs = <mmsghdr*>calloc(batch, sizeof(mmsghdr))
        self.riov = <iovec*>calloc(batch, sizeof(iovec))
        self.rnames = <sockaddr_in*>calloc(batch, sizeof(sockaddr_in))
        self.sbuf = <uint8_t*>calloc(batch, SLOT)
        self.smsgs = <mmsghdr*>calloc(batch, sizeof(mmsghdr))
        self.siov = <iovec*>calloc(batch, sizeof(iovec))
        self.scmsg = <uint8_t*>calloc(batch, CMSG_SLOT)
        self.rcmsg = <uint8_t*>calloc(batch, CMSG_SLOT)
        size = 16
        while size < 2 * <uint32_t>max_consents + 2:
            size <<= 1
        self.rtcp_mask = size - 1
        self.rtcp_addr = <uint32_t*>calloc(size, sizeof(uint32_t))
        self.rtcp_ctx = <void**>calloc(size, sizeof(void*))
        if self.rcmsg == NULL or self.rtcp_addr == NULL or self.rtcp_ctx == NULL:
            raise MemoryError()
        if (self.senders == NULL or self.receivers == NULL or self.consents == NULL or self.table == NULL
                or self.rbuf == NULL or self.rmsgs == NULL or self.riov == NULL or self.rnames == NULL
                or self.sbuf == NULL or self.smsgs == NULL or self.siov == NULL or self.scmsg == NULL):
            raise MemoryError()
        for i in range(batch):
            self.riov[i].iov_base = self.rbuf + <size_t>i * self.rslot
            self.riov[i].iov_len = self.rslot
            self.rmsgs[i].msg_hdr.msg_iov = &self.riov[i]
            self.rmsgs[i].msg_hdr.msg_iovlen = 1
            self.rmsgs[i].msg_hdr.msg_name = &self.rnames[i]
            self.rmsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
            self.siov[i].iov_base = self.sbuf + i * SLOT
            self.smsgs[i].msg_hdr.msg_iov = &self.siov[i]
            self.smsgs[i].msg_hdr.msg_iovlen = 1
            self.smsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
            self.smsgs[i].msg_hdr.msg_control = self.scmsg + i * CMSG_SLOT
            self.smsgs[i].msg_hdr.msg_controllen = CMSG_SPACE(sizeof(in_pktinfo))
        self.reset()

    def __dealloc__(self):
        cdef int i
        if self.consents != NULL:
            for i in range(self.nconsents):
                free(self.consents[i].data)
        if self.senders != NULL:
            for i in range(self.nsenders):
                free(self.senders[i].hist)
                free(self.senders[i].hist_len)
                free(self.senders[i].hist_seq)
        free(self.senders)
        free(self.receivers)
        if self.downlinks != NULL:
            for i in range(self.ndownlinks):
                twcc_free(&self.downlinks[i].twcc)
        free(self.downlinks)
        free(self.consents)
        free(self.table)
        free(self.rbuf)
        free(self.rmsgs)
        free(self.riov)
        free(self.rnames)
        free(self.sbuf)
        free(self.smsgs)
        free(self.siov)
        free(self.scmsg)
        free(self.rcmsg)
        free(self.rtcp_addr)
        free(self.rtcp_ctx)

    # ---- configuration ---------------------------------------------------------------------------------
    def add_sender(self, str src_host, str dst_host, int dst_port, SrtpContext ctx, unsigned int ssrc, int pt,
                   int payload_len, double rate_pps, *, bint video, int clock_rate, double phase_s=0.0,
                   int frames_per_s=30, int keyframe_every=30, bytes header_ext=b"") -> int:
        """A publisher stream; returns its stream id (carried in every payload). ``rate_pps`` 0 = flat out.
        ``header_ext``: an RTP header extension block (RFC 8285: 0xBEDE, length in words, elements, padding)
        put in every packet between the fixed header and the payload, as browsers send MID and RID."""
        cdef Sender* s
        if self.nsenders >= self.max_senders:
            raise ValueError(f"more than {self.max_senders} senders")
        if not ctx.outbound:
            raise ValueError("a sender needs an outbound SRTP context")
        if not PAYLOAD_OFFSET + BENCH_HEADER <= payload_len <= SLOT - 128:
            raise ValueError(f"payload_len must be in {PAYLOAD_OFFSET + BENCH_HEADER}..{SLOT - 128}")
        if rate_pps < 0 or clock_rate <= 0 or frames_per_s <= 0 or keyframe_every <= 0:
            raise ValueError("rate_pps >= 0, clock_rate, frames_per_s and keyframe_every > 0 required")
        if not 0 <= pt <= 127:
            raise ValueError("pt must be in 0..127")
        if header_ext and (len(header_ext) > MAX_HEADER_EXT or len(header_ext) < 8 or len(header_ext) % 4
                           or (header_ext[2] << 8 | header_ext[3]) != len(header_ext) // 4 - 1):
            raise ValueError(f"header_ext must be an extension block of 8..{MAX_HEADER_EXT} bytes whose length "
                             "field counts its words after the first")
        s = &self.senders[self.nsenders]
        memset(s, 0, sizeof(Sender))
        _addr(dst_host, dst_port, &s.dst)
        s.src = _ip(src_host)
        s.ctx = ctx.ctx
        s.ssrc = ssrc
        s.stream_id = self.nsenders
        s.pt = <uint8_t>pt
        s.video = video
        s.payload_len = payload_len
        s.interval_ns = <int64_t>(1e9 / rate_pps) if rate_pps > 0 else 0
        s.phase_ns = <int64_t>(phase_s * 1e9)
        if video:
            s.packets_per_frame = max(1, <uint32_t>(rate_pps / frames_per_s + 0.5)) if rate_pps > 0 else 5
            s.ts_step = <uint32_t>(clock_rate // frames_per_s)
        else:
            s.packets_per_frame = 1
            s.ts_step = <uint32_t>(clock_rate * s.interval_ns // 1000000000) if rate_pps > 0 else 960
        s.keyframe_every = keyframe_every
        if self.up_drop_below:
            s.hist = <uint8_t*>malloc(HISTORY * SLOT)
            s.hist_len = <int32_t*>calloc(HISTORY, sizeof(int32_t))
            s.hist_seq = <uint16_t*>calloc(HISTORY, sizeof(uint16_t))
            if s.hist == NULL or s.hist_len == NULL or s.hist_seq == NULL:
                raise MemoryError()
        s.ext_len = <uint8_t>len(header_ext)
        if s.ext_len:
            memcpy(s.ext, <const uint8_t*>header_ext, s.ext_len)
        s.seq = <uint16_t>(ssrc * 7919)
        s.ts = ssrc * 104729
        self._keep.append(ctx)
        self.nsenders += 1
        return s.stream_id

    def add_receiver(self, unsigned int ssrc, SrtpContext ctx, int sender=-1, *, SrtpContext report_ctx=None,
                     str report_from=None, str report_to=None, int report_port=0,
                     unsigned int reporter_ssrc=0, int downlink=-1, bint rtx=False) -> int:
        """A stream this generator receives (demultiplexed by SSRC); ``sender`` is the expected stream id in
        its payload (-1: not checked). One inbound context may be shared by a participant's streams.

        With ``report_ctx`` (the participant's outbound context), the receiver sends an SRTCP receiver report
        for the stream about once a second from ``report_from`` to ``report_to``:``report_port``, as browsers do.
        ``downlink`` (from :meth:`add_downlink`): the stream arrives over that participant's link. ``rtx``: an
        RTX stream (retransmissions and probe padding, RFC 4588): its packets go through the downlink and are
        counted (``received``, ``bytes``), nothing else (no sequence accounting, no reports, never decrypted)."""
        cdef uint32_t h
        cdef int idx
        if report_ctx is not None and (not report_ctx.outbound or report_from is None or report_to is None):
            raise ValueError("receiver reports need an outbound context and both addresses")
        if self.nreceivers >= self.max_receivers:
            raise ValueError(f"more than {self.max_receivers} receivers")
        if ctx.outbound:
            raise ValueError("a receiver needs an inbound SRTP context")
        if not -1 <= downlink < self.ndownlinks:
            raise ValueError(f"no downlink {downlink}")
        h = (ssrc * 2654435761u) & self.table_mask
        while self.table[h] != 0:
            if self.receivers[self.table[h] - 1].ssrc == ssrc:
                raise ValueError(f"SSRC {ssrc:#x} already has a receiver")
            h = (h + 1) & self.table_mask
        idx = self.nreceivers
        memset(&self.receivers[idx], 0, sizeof(Receiver))
        self.receivers[idx].ctx = ctx.ctx
        self.receivers[idx].ssrc = ssrc
        self.receivers[idx].sender = sender
        self.receivers[idx].first_ext = -1
        self.receivers[idx].downlink = downlink
        self.receivers[idx].rtx = rtx
        if report_ctx is not None:
            _addr(report_to, report_port, &self.receivers[idx].rtcp_dst)
            self.receivers[idx].rtcp_src = _ip(report_from)
            self.receivers[idx].rtcp_ctx = report_ctx.ctx
            self.receivers[idx].reporter_ssrc = reporter_ssrc
            self.receivers[idx].next_rr_ns = <int64_t>((idx * 7919) % 1000) * 1000000   # spread over 1 s
            self._keep.append(report_ctx)
        self.table[h] = idx + 1
        if 0 <= sender < self.nsenders:
            self.senders[sender].fanout += 1
        self._keep.append(ctx)
        self.nreceivers += 1
        return idx

    def add_downlink(self, SrtpContext report_ctx, str report_from, str report_to, int report_port,
                     unsigned int sender_ssrc, int ext_id, double cap_kbps=0.0, double queue_ms=200.0) -> int:
        """A subscribing participant's link (give its index to :meth:`add_receiver` for each of its streams): the
        generator reads the transport-wide sequence element (id ``ext_id``, RFC 8285 one-byte form) of every
        packet arriving on it and sends transport-wide CC feedback (RTCP RTPFB FMT 15) every 100 ms from
        ``report_from`` to ``report_to``:``report_port``, protected with ``report_ctx``, as a browser does. With
        ``cap_kbps`` the link is a token bucket at that rate behind a FIFO queue of ``queue_ms``: packets that
        would wait longer are dropped (never counted by their receiver), the others are reported as arriving
        when the bucket lets them through."""
        cdef Downlink* d
        cdef int one = 1
        if not report_ctx.outbound:
            raise ValueError("feedback needs the participant's outbound context")
        if not 1 <= ext_id <= 14:
            raise ValueError("ext_id must be 1..14 (one-byte form)")
        if cap_kbps < 0 or queue_ms <= 0:
            raise ValueError("cap_kbps >= 0 and queue_ms > 0 required")
        if self.ndownlinks >= self.max_downlinks:
            raise ValueError(f"more than {self.max_downlinks} downlinks")
        if not self.kernel_ts:
            # The feedback reports when each packet reached this socket, as a receiver whose network thread is not
            # busy does (and as the worker reports its publishers' arrivals), not when this loop, busy sending,
            # got to it: a generator that falls behind would otherwise show the server a queue that is its own.
            self.kernel_ts = setsockopt(self.fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(int)) == 0
        d = &self.downlinks[self.ndownlinks]
        memset(d, 0, sizeof(Downlink))
        twcc_init(&d.twcc)
        d.ext_id = <uint8_t>ext_id
        d.rtcp_ctx = report_ctx.ctx
        _addr(report_to, report_port, &d.rtcp_dst)
        d.rtcp_src = _ip(report_from)
        d.sender_ssrc = sender_ssrc
        d.ns_per_byte = 8e9 / (cap_kbps * 1000.0) if cap_kbps > 0 else 0.0
        d.queue_ns = <int64_t>(queue_ms * 1e6)
        self._keep.append(report_ctx)
        self.ndownlinks += 1
        return self.ndownlinks - 1

    cdef int _downlink(self, Downlink* d, const uint8_t* p, int length, int64_t t) noexcept nogil:
        """A packet arriving on ``d`` at ``t``: 0 = dropped by the cap's queue; else its transport-wide sequence
        is recorded with the time it leaves the bucket."""
        cdef int32_t off, end, i, ln
        cdef uint8_t b
        cdef int64_t arrival = t
        d.offered_bytes += length
        if d.first_ns == 0:
            d.first_ns = t
        if d.ns_per_byte > 0:
            if d.link_free_ns < t:
                d.link_free_ns = t
            if d.link_free_ns - t > d.queue_ns:
                d.cap_dropped += 1
                d.last_drop_ns = t
                return 0
            d.link_free_ns += <int64_t>(length * d.ns_per_byte)
            arrival = d.link_free_ns
        d.delivered_bytes += length
        off = 12 + 4 * (p[0] & 0x0F)
        if not (p[0] & 0x10) or off + 4 > length or rd16(p + off) != 0xBEDE:
            d.no_element += 1
            return 1
        i = off + 4
        end = i + 4 * <int32_t>rd16(p + off + 2)
        if end > length:
            d.no_element += 1
            return 1
        while i < end:
            b = p[i]
            if b == 0:
                i += 1
                continue
            if b >> 4 == 15:
                break
            ln = (b & 0x0F) + 1
            if i + 1 + ln > end:
                break
            if b >> 4 == d.ext_id and ln >= 2:
                if twcc_record(&d.twcc, rd16(p + i + 1), arrival // 1000, rd32(p + 8)) >= TWCC_FLUSH_PENDING:
                    d.next_fb_ns = 0              # as a fast receiver does: feedback before the ring overflows
                return 1
            i += 1 + ln
        d.no_element += 1
        return 1

    cdef inline void _media_arrived(self, Downlink* d, int64_t t) noexcept nogil:
        """A media packet delivered on ``d`` at ``t``: the gaps between media packets (how long a track paused
        by the server's allocator stayed paused, and when it resumed)."""
        cdef int64_t gap
        if d.media_last_ns:
            gap = t - d.media_last_ns
            if gap > d.media_gap_max_ns:
                d.media_gap_max_ns = gap
            if gap > MEDIA_GAP_NS:
                d.media_resumed_ns = t
        d.media_last_ns = t

    cdef void _send_feedback(self, int64_t t) noexcept nogil:
        """Every 100 ms (or as soon as TWCC_FLUSH_PENDING packets wait), each downlink's transport-wide CC
        feedback for what arrived since the last one."""
        cdef int i, n = 0, plen
        cdef Downlink* d
        cdef uint8_t* p
        for i in range(self.ndownlinks):
            d = &self.downlinks[i]
            if d.next_fb_ns > t:
                continue
            d.next_fb_ns = t + 100000000
            while twcc_pending(&d.twcc) > 0:
                p = self.sbuf + n * SLOT
                plen = twcc_build(&d.twcc, p, TWCC_FEEDBACK_BYTES, d.sender_ssrc)
                if plen <= 0:
                    break
                if self.fns.protect_rtcp(d.rtcp_ctx, p, &plen) != SRTP_ERR_OK:
                    continue
                self._address(n, plen, &d.rtcp_dst, d.rtcp_src)
                d.feedback_sent += 1
                n += 1
                if n == self.batch:
                    self._flush(n)
                    n = 0
        self._flush(n)

    def downlinks_snapshot(self) -> list:
        """Per downlink: dict(offered_bytes, delivered_bytes, cap_dropped, feedback_sent, recorded, no_element) over
        the last run, and ``overflowed_s``: from its first packet to the cap's last tail drop, since it was added
        (the time the server took to fit its sending to the cap; 0 = never dropped); ``media_gap_s_max``: the
        longest time without a media packet (RTX and probe padding aside) after the first, and ``resumed_s``: from
        the first packet to the first media packet after the last gap of more than 1 s (a paused track's resume;
        0 = media never stopped that long); ``media_idle_s``: how long ago the last media packet came (-1 = none)."""
        cdef int i
        cdef Downlink* d
        out = []
        for i in range(self.ndownlinks):
            d = &self.downlinks[i]
            out.append({"offered_bytes": d.offered_bytes, "delivered_bytes": d.delivered_bytes,
                        "cap_dropped": d.cap_dropped, "feedback_sent": d.feedback_sent,
                        "recorded": d.twcc.packets, "no_element": d.no_element,
                        "overflowed_s": (d.last_drop_ns - d.first_ns) / 1e9 if d.last_drop_ns else 0.0,
                        "media_gap_s_max": d.media_gap_max_ns / 1e9,
                        "resumed_s": (d.media_resumed_ns - d.first_ns) / 1e9 if d.media_resumed_ns else 0.0,
                        "media_idle_s": (now_ns() - d.media_last_ns) / 1e9 if d.media_last_ns else -1.0})
        return out

    def set_downlink_loss(self, double pct, unsigned long long seed=0x9E3779B97F4A7C15) -> None:
        """Discard ``pct`` % of the RTP packets arriving for receivers (at random, as a lossy downlink would) and
        ask the server for every missing sequence number with a generic NACK (RFC 4585 6.2.1) from the
        receiver's report address as soon as the gap shows, as browsers do (once: a retransmission lost again
        stays lost). Needs receivers with ``report_ctx``; retransmissions count as received, so ``loss`` is what
        recovery left. 0 turns it off."""
        if not 0 <= pct <= 50:
            raise ValueError("downlink loss must be in 0..50 %")
        self.drop_below = <uint64_t>(pct / 100.0 * 18446744073709551615.0)
        self.rng = seed if seed else 1

    def set_uplink_loss(self, double pct) -> None:
        """Lose ``pct`` % of the packets the senders send (they count as sent, as a lossy uplink would have them)
        and answer the server's generic NACKs for them, and for any of the last 512 packets, by protecting and
        sending the kept packet again, as a browser's publisher does. 0 turns it off."""
        cdef int i
        cdef Sender* s
        if not 0 <= pct <= 50:
            raise ValueError("uplink loss must be in 0..50 %")
        for i in range(self.nsenders):
            s = &self.senders[i]
            if pct > 0 and s.hist == NULL:
                s.hist = <uint8_t*>malloc(HISTORY * SLOT)
                s.hist_len = <int32_t*>calloc(HISTORY, sizeof(int32_t))
                s.hist_seq = <uint16_t*>calloc(HISTORY, sizeof(uint16_t))
                if s.hist == NULL or s.hist_len == NULL or s.hist_seq == NULL:
                    raise MemoryError()
        self.up_drop_below = <uint64_t>(pct / 100.0 * 18446744073709551615.0)
        if self.rng == 0:
            self.rng = 0x9E3779B97F4A7C15

    cdef inline int _rx_slot(self) noexcept nogil:
        """A send-arena slot for a datagram built while receiving (flushed at the end of ``_receive``, or now
        when the arena is full)."""
        if self.nack_queued >= self.batch:
            self._flush(self.nack_queued)
            self.nack_queued = 0
        self.nack_queued += 1
        return self.nack_queued - 1

    cdef void _retransmit(self, Sender* s, uint16_t seq) noexcept nogil:
        cdef int k = seq & (HISTORY - 1), slot, plen
        if s.hist_len[k] == 0 or s.hist_seq[k] != seq:
            s.nack_missing += 1
            return
        slot = self._rx_slot()
        plen = s.hist_len[k]
        memcpy(self.sbuf + slot * SLOT, s.hist + k * SLOT, plen)
        if self.fns.protect(s.ctx, self.sbuf + slot * SLOT, &plen) != SRTP_ERR_OK:
            s.protect_failed += 1
            self.nack_queued -= 1
            return
        self._address(slot, plen, &s.dst, s.src)
        s.retransmitted += 1

    cdef inline uint64_t _draw(self) noexcept nogil:
        self.rng ^= self.rng >> 12
        self.rng ^= self.rng << 25
        self.rng ^= self.rng >> 27
        return self.rng * 2685821657736338717ULL

    cdef void _nack(self, Receiver* r, int64_t first, int64_t last) noexcept nogil:
        """Queue a generic NACK for the extended sequence numbers ``first..last`` of ``r``'s stream in the send
        arena (sent at the end of ``_receive``)."""
        cdef uint8_t* p
        cdef int nfci = 0, plen, slot
        cdef int64_t s = first, k
        cdef uint16_t blp
        if r.rtcp_ctx == NULL:
            return
        slot = self._rx_slot()
        p = self.sbuf + slot * SLOT
        p[0] = 0x81                                   # V=2, FMT=1 (generic NACK)
        p[1] = 205                                    # RTPFB
        wr32(p + 4, r.reporter_ssrc)
        wr32(p + 8, r.ssrc)
        while s <= last and nfci < MAX_NACK_FCI:
            blp = 0
            k = s + 1
            while k <= last and k <= s + 16:
                blp |= <uint16_t>(1 << (k - s - 1))
                k += 1
            wr16(p + 12 + 4 * nfci, <uint16_t>s)
            wr16(p + 14 + 4 * nfci, blp)
            r.nacked += k - s
            nfci += 1
            s = k
        wr16(p + 2, <uint16_t>(2 + nfci))
        plen = 12 + 4 * nfci
        if self.fns.protect_rtcp(r.rtcp_ctx, p, &plen) != SRTP_ERR_OK:
            self.nack_queued -= 1
            return
        self._address(slot, plen, &r.rtcp_dst, r.rtcp_src)
        r.nacks_sent += 1

    def accept_from(self, list networks) -> None:
        """Read datagrams only from these sources (``"a.b.c.d"`` or ``"a.b.c.d/n"``, at most 16): the server's
        addresses. Anything else counts as ``foreign`` and is dropped unread."""
        cdef int i, bits
        if not 1 <= len(networks) <= MAX_ACCEPT:
            raise ValueError(f"give 1..{MAX_ACCEPT} networks, got {len(networks)}")
        parsed = []
        for network in networks:
            address, _, prefix = str(network).partition("/")
            bits = int(prefix) if prefix else 32
            if not 0 <= bits <= 32:
                raise ValueError(f"bad prefix length in {network!r}")
            mask = 0 if bits == 0 else (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
            parsed.append((_ip(address), _ip(".".join(str((mask >> s) & 0xFF) for s in (24, 16, 8, 0)))))
        for i in range(len(parsed)):
            self.accept_mask[i] = parsed[i][1]
            self.accept_net[i] = parsed[i][0] & parsed[i][1]
        self.naccept = len(parsed)

    def add_rtcp_endpoint(self, str host, SrtpContext ctx) -> None:
        """SRTCP the server sends to ``host`` (a participant's address) is authenticated with ``ctx`` (the
        participant's inbound context) and read for PLI/FIR toward that participant's senders. Capacity: the
        ``max_consents`` given at construction."""
        cdef uint32_t a = _ip(host)
        cdef uint32_t h = (a * 2654435761u) & self.rtcp_mask
        cdef int used = 0
        if ctx.outbound:
            raise ValueError("RTCP from the server needs an inbound SRTP context")
        for i in range(self.rtcp_mask + 1):
            used += self.rtcp_addr[i] != 0
        if used >= self.max_consents:
            raise ValueError(f"more than {self.max_consents} RTCP endpoints")
        while self.rtcp_addr[h] != 0 and self.rtcp_addr[h] != a:
            h = (h + 1) & self.rtcp_mask
        self.rtcp_addr[h] = a
        self.rtcp_ctx[h] = ctx.ctx
        self._keep.append(ctx)

    def add_consent(self, str src_host, str dst_host, int dst_port, bytes request, double first_s) -> None:
        """Resend ``request`` (an authenticated STUN Binding request) from src to dst every consent period."""
        cdef Consent* c
        if self.nconsents >= self.max_consents:
            raise ValueError(f"more than {self.max_consents} consent checks")
        if not 20 <= len(request) <= SLOT:
            raise ValueError("STUN request length out of range")
        c = &self.consents[self.nconsents]
        _addr(dst_host, dst_port, &c.dst)
        c.src = _ip(src_host)
        c.data = <uint8_t*>calloc(1, len(request))
        if c.data == NULL:
            raise MemoryError()
        memcpy(c.data, <const uint8_t*>request, len(request))
        c.length = len(request)
        c.next_ns = <int64_t>(first_s * 1e9)
        self.nconsents += 1

    def reset(self) -> None:
        """Zero every counter and the latency histogram (configuration and stream state stay)."""
        cdef int i
        cdef Sender* s
        cdef Receiver* r
        cdef Downlink* d
        for i in range(self.nsenders):
            s = &self.senders[i]
            s.sent = 0
            s.late = 0
            s.behind = 0
            s.max_late_ns = 0
            s.protect_failed = 0
            s.up_dropped = 0
            s.retransmitted = 0
            s.nack_missing = 0
        for i in range(self.nreceivers):
            r = &self.receivers[i]
            r.received = 0
            r.bytes = 0
            r.reordered = 0
            r.verified = 0
            r.auth_failed = 0
            r.bad_payload = 0
            r.dropped = 0
            r.nacks_sent = 0
            r.nacked = 0
            r.first_ext = -1
        for i in range(self.ndownlinks):
            d = &self.downlinks[i]
            d.offered_bytes = d.delivered_bytes = d.cap_dropped = d.no_element = d.feedback_sent = 0
        memset(self.latency, 0, sizeof(self.latency))
        self.c_rtcp = self.c_stun = self.c_dtls = self.c_unknown = self.c_foreign = self.c_short = 0
        self.c_recv_calls = self.c_send_calls = self.c_send_errors = self.c_consent_sent = self.c_polls = 0
        self.c_forgiven = self.c_blocked = self.c_rr_sent = 0
        self.c_gro_buffers = self.c_gro_datagrams = self.c_truncated = 0
        self.c_pli = self.c_rtcp_auth_failed = self.c_nack_received = 0
        self.cpu_ns = self.wall_ns = 0

    # ---- the loop --------------------------------------------------------------------------------------
    def run(self, double seconds, bint send=True, int verify_every=1, double consent_period_s=5.0,
            int flat_window=256) -> None:
        """Send (if ``send``) and receive for ``seconds``; paced senders start their schedule now.

        Flat-out senders (rate 0) are window-limited: at most ``flat_window`` of their packets times their
        fan-out may be on the way (sent and not yet received back), so the forwarder under test always has
        work queued but its socket never overflows (no drops, bounded queueing delay)."""
        cdef int64_t start, deadline, cpu0, end
        cdef int i, flat
        cdef int64_t total_fanout
        cdef Sender* s
        if seconds < 0 or verify_every < 1 or consent_period_s <= 0:
            raise ValueError("seconds >= 0, verify_every >= 1 and consent_period_s > 0 required")
        if flat_window < 1:
            raise ValueError("flat_window must be >= 1")
        start = now_ns()
        total_fanout = 0
        flat = 0
        for i in range(self.nsenders):
            self.senders[i].next_due = start + self.senders[i].phase_ns
            if self.senders[i].interval_ns == 0:
                flat += 1
                total_fanout += max(1, self.senders[i].fanout)
        self.window_out = flat_window * (total_fanout // flat if flat else 1)
        self.sent_weighted = self.recv_matched = self.forgiven = 0
        self.last_progress_ns = start
        for i in range(self.nconsents):
            self.consents[i].next_ns = start + (self.consents[i].next_ns % <int64_t>(consent_period_s * 1e9))
        for i in range(self.nreceivers):
            self.receivers[i].next_rr_ns = start + (self.receivers[i].next_rr_ns % 1000000000)
        deadline = start + <int64_t>(seconds * 1e9)
        cpu0 = thread_cpu_ns()
        with nogil:
            self._loop(deadline, send, verify_every, <int64_t>(consent_period_s * 1e9))
        if send:
            end = now_ns()
            for i in range(self.nsenders):
                s = &self.senders[i]
                if s.interval_ns > 0 and s.next_due < end:
                    s.behind += <uint64_t>((end - s.next_due) // s.interval_ns + 1)
        self.cpu_ns += thread_cpu_ns() - cpu0
        self.wall_ns += now_ns() - start

    cdef void _loop(self, int64_t deadline, bint send, int verify_every, int64_t consent_ns) noexcept nogil:
        cdef int64_t t, wake, rr = 0
        cdef int i, got, saturating = 0
        cdef pollfd pfd
        cdef timespec ts
        for i in range(self.nsenders):
            if self.senders[i].interval_ns == 0:
                saturating = 1
        pfd.fd = self.fd
        pfd.events = POLLIN
        while True:
            t = now_ns()
            if t >= deadline:
                break
            got = 0
            for i in range(16):
                if self._receive(verify_every) < self.batch:
                    break
                got = 1
            if send:
                wake = self._send_due(t, saturating, &rr)
                self._send_consents(t, consent_ns)
                self._send_reports(t)
                if self.ndownlinks:
                    self._send_feedback(t)
            else:
                wake = t + MAX_WAIT_NS
            if saturating and send and not self.blocked:
                continue
            if got:
                continue
            if self.blocked:
                wake = t + 1000000
            t = now_ns()
            if wake > deadline:
                wake = deadline
            if wake - t > MAX_WAIT_NS:
                wake = t + MAX_WAIT_NS
            if wake > t:
                ts.tv_sec = (wake - t) // 1000000000
                ts.tv_nsec = (wake - t) % 1000000000
                self.c_polls += 1
                ppoll(&pfd, 1, &ts, NULL)

    cdef inline bint _accepted(self, uint32_t src) noexcept nogil:
        cdef int k
        for k in range(self.naccept):
            if (src & self.accept_mask[k]) == self.accept_net[k]:
                return True
        return False

    cdef int _receive(self, int verify_every) noexcept nogil:
        """One ``recvmmsg``: every datagram of the batch counted (a UDP_GRO buffer split into its datagrams), then
        the NACKs its gaps asked for sent. Returns the messages read."""
        cdef int n, i, length, seg, off
        cdef uint8_t* p
        cdef int64_t t
        for i in range(self.batch):
            self.rmsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
            self.rmsgs[i].msg_hdr.msg_control = self.rcmsg + i * CMSG_SLOT
            self.rmsgs[i].msg_hdr.msg_controllen = CMSG_SLOT
        n = recvmmsg(self.fd, self.rmsgs, self.batch, MSG_DONTWAIT, NULL)
        self.c_recv_calls += 1
        if n <= 0:
            return 0
        t = now_ns()
        if self.kernel_ts:
            self.rt_offset_ns = _realtime_ns() - t
        self.nack_queued = 0
        for i in range(n):
            p = self.rbuf + <size_t>i * self.rslot
            length = self.rmsgs[i].msg_len
            if not self._accepted(self.rnames[i].sin_addr.s_addr):
                self.c_foreign += 1
                continue
            if self.rmsgs[i].msg_hdr.msg_flags & MSG_TRUNC:
                self.c_truncated += 1                 # larger than a receive slot: never half-counted
                continue
            seg = self._gro_segment(i) if self.gro else 0
            if seg <= 0 or seg >= length:
                self._datagram(i, p, length, t, verify_every)
                continue
            self.c_gro_buffers += 1
            off = 0
            while off < length:                       # equal segments, the last one may be shorter (udp(7))
                self._datagram(i, p + off, seg if length - off > seg else length - off, t, verify_every)
                self.c_gro_datagrams += 1
                off += seg
        self._flush(self.nack_queued)                 # the NACKs this batch's gaps asked for
        return n

    cdef int64_t _arrival(self, int i, int64_t t) noexcept nogil:
        """When message ``i`` reached the socket (now_ns's clock): the kernel's receive time with kernel_ts (a
        GRO train's datagrams share it), else ``t``, the time of the recvmmsg that returned it; a time that a
        stepped wall clock put outside the last second before ``t`` is not trusted."""
        cdef msghdr* m
        cdef cmsghdr* c
        cdef timespec ts
        cdef int64_t at
        if not self.kernel_ts:
            return t
        m = &self.rmsgs[i].msg_hdr
        c = CMSG_FIRSTHDR(m)
        while c != NULL:
            if c.cmsg_level == SOL_SOCKET and c.cmsg_type == SCM_TIMESTAMPNS:
                memcpy(&ts, CMSG_DATA(c), sizeof(timespec))
                at = <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec - self.rt_offset_ns
                return at if t - 1000000000 < at <= t else t
            c = CMSG_NXTHDR(m, c)
        return t

    cdef int _gro_segment(self, int i) noexcept nogil:
        """The segment length of message ``i`` when the kernel delivered a train of datagrams as one buffer
        (a UDP_GRO cmsg), else 0."""
        cdef msghdr* m = &self.rmsgs[i].msg_hdr
        cdef cmsghdr* c = CMSG_FIRSTHDR(m)
        cdef int seg
        while c != NULL:
            if c.cmsg_level == IPPROTO_UDP and c.cmsg_type == UDP_GRO and c.cmsg_len >= CMSG_LEN(sizeof(int)):
                memcpy(&seg, CMSG_DATA(c), sizeof(int))
                return seg
            c = CMSG_NXTHDR(m, c)
        return 0

    cdef void _datagram(self, int i, uint8_t* p, int length, int64_t t, int verify_every) noexcept nogil:
        """One datagram of message ``i`` (received at ``t``): RTCP to :meth:`_rtcp`, SRTP counted against its
        receiver (sequence gaps, reordering, every ``verify_every``-th one authenticated, decrypted, timed)."""
        cdef int hlen, idx
        cdef uint32_t ssrc, h
        cdef Receiver* r
        cdef int64_t ext, lat
        cdef uint64_t b
        if length < 12:
            self.c_short += 1
            return
        if p[0] < 4:
            self.c_stun += 1
            return
        if 20 <= p[0] <= 63:
            self.c_dtls += 1
            return
        if (p[0] & 0xC0) != 0x80:
            self.c_unknown += 1
            return
        if 192 <= p[1] <= 223:
            self.c_rtcp += 1
            self._rtcp(i, p, length)
            return
        ssrc = rd32(p + 8)
        h = (ssrc * 2654435761u) & self.table_mask
        idx = -1
        while self.table[h] != 0:
            if self.receivers[self.table[h] - 1].ssrc == ssrc:
                idx = self.table[h] - 1
                break
            h = (h + 1) & self.table_mask
        if idx < 0:
            self.c_unknown += 1
            return
        r = &self.receivers[idx]
        self.recv_matched += 1
        self.last_progress_ns = t
        if self.drop_below and self._draw() < self.drop_below:
            r.dropped += 1                          # lost on the simulated downlink: never seen
            return
        if r.downlink >= 0 and not self._downlink(&self.downlinks[r.downlink], p, length, self._arrival(i, t)):
            r.dropped += 1                          # the cap's queue was full
            return
        if r.rtx:
            r.received += 1
            r.bytes += length
            return
        if r.downlink >= 0:
            self._media_arrived(&self.downlinks[r.downlink], t)
        if r.first_ext < 0:
            if r.max_ext == 0:
                r.max_ext = (<int64_t>1 << 32) + rd16(p + 2)
                ext = r.max_ext
            else:
                ext = self._unwrap(r, rd16(p + 2))
            r.first_ext = ext
        else:
            ext = self._unwrap(r, rd16(p + 2))
        if ext > r.max_ext:
            if (self.drop_below or r.downlink >= 0 and self.downlinks[r.downlink].ns_per_byte > 0) \
                    and ext > r.max_ext + 1 and r.first_ext < ext:
                self._nack(r, r.max_ext + 1, ext - 1)
            r.max_ext = ext
        elif ext < r.max_ext:
            r.reordered += 1
        r.received += 1
        r.bytes += length
        if r.received % verify_every != 0:
            return
        if self.fns.unprotect(r.ctx, p, &length) != SRTP_ERR_OK:
            r.auth_failed += 1
            return
        r.verified += 1
        hlen = 12 + 4 * (p[0] & 0x0F)
        if (p[0] & 0x10) and hlen + 4 <= length:
            hlen += 4 + 4 * rd16(p + hlen + 2)
        if hlen + PAYLOAD_OFFSET + BENCH_HEADER > length:
            r.bad_payload += 1
            return
        p += hlen + PAYLOAD_OFFSET
        if rd32(p) != MAGIC or (r.sender >= 0 and rd32(p + 4) != <uint32_t>r.sender):
            r.bad_payload += 1
            return
        lat = (t - <int64_t>rd64(p + 16)) // 1000          # microseconds
        if lat < 0:
            lat = 0
        if lat < LAT_FINE * 10:
            b = lat // 10
        else:
            b = LAT_FINE + (lat - LAT_FINE * 10) // 1000
            if b >= LAT_BUCKETS:
                b = LAT_BUCKETS - 1
        self.latency[b] += 1

    cdef void _rtcp(self, int i, uint8_t* p, int length) noexcept nogil:
        """SRTCP from the server to a publishing participant: a PLI or FIR makes that sender's next frame a key
        frame (RFC 4585 6.3.1, RFC 5104 4.3.1), as a browser's encoder does; with uplink loss configured, a
        generic NACK makes it send the named packets again from its history."""
        cdef msghdr* m = &self.rmsgs[i].msg_hdr
        cdef cmsghdr* c = CMSG_FIRSTHDR(m)
        cdef in_pktinfo* info = NULL
        cdef uint32_t dst, h, media
        cdef void* ctx = NULL
        cdef int pos = 0, plen, k, end, q, b
        cdef uint8_t fmt, pt
        cdef uint16_t pid, blp
        cdef Sender* s
        while c != NULL:                              # after a UDP_GRO cmsg when the datagram came in a train
            if c.cmsg_level == IPPROTO_IP and c.cmsg_type == IP_PKTINFO \
                    and c.cmsg_len >= CMSG_LEN(sizeof(in_pktinfo)):
                info = <in_pktinfo*>CMSG_DATA(c)
                break
            c = CMSG_NXTHDR(m, c)
        if info == NULL:
            return
        dst = info.ipi_addr.s_addr
        h = (dst * 2654435761u) & self.rtcp_mask
        while self.rtcp_addr[h] != 0:
            if self.rtcp_addr[h] == dst:
                ctx = self.rtcp_ctx[h]
                break
            h = (h + 1) & self.rtcp_mask
        if ctx == NULL:
            return
        plen = length
        if self.fns.unprotect_rtcp(ctx, p, &plen) != SRTP_ERR_OK:
            self.c_rtcp_auth_failed += 1
            return
        while pos + 12 <= plen:
            fmt = p[pos] & 0x1F
            pt = p[pos + 1]
            end = pos + 4 * (rd16(p + pos + 2) + 1)
            if end > plen:
                end = plen
            if pt == 206 and (fmt == 1 or (fmt == 4 and pos + 16 <= plen)):
                media = rd32(p + pos + 8) if fmt == 1 else rd32(p + pos + 12)
                self.c_pli += 1
                for k in range(self.nsenders):
                    if self.senders[k].ssrc == media and self.senders[k].src == dst:
                        self.senders[k].force_key = 1
            elif pt == 205 and fmt == 1:                     # generic NACK (RFC 4585 6.2.1): PID + BLP pairs
                self.c_nack_received += 1
                media = rd32(p + pos + 8)
                for k in range(self.nsenders):
                    s = &self.senders[k]
                    if s.ssrc != media or s.src != dst or s.hist == NULL:
                        continue
                    q = pos + 12
                    while q + 4 <= end:
                        pid = rd16(p + q)
                        blp = rd16(p + q + 2)
                        self._retransmit(s, pid)
                        for b in range(16):
                            if (blp >> b) & 1:
                                self._retransmit(s, <uint16_t>(pid + 1 + b))
                        q += 4
            pos = end

    cdef inline int64_t _unwrap(self, Receiver* r, uint16_t seq) noexcept nogil:
        cdef int64_t cand = (r.max_ext & ~(<int64_t>0xFFFF)) | seq
        if cand < r.max_ext - 32768:
            cand += 65536
        elif cand > r.max_ext + 32768:
            cand -= 65536
        return cand

    cdef int64_t _send_due(self, int64_t t, int saturating, int64_t* rr) noexcept nogil:
        """Build and send every packet that is due (paced senders) or one batch (flat-out senders);
        returns the earliest next due time."""
        cdef int i, n = 0, k
        cdef int64_t wake = t + MAX_WAIT_NS, late
        cdef Sender* s
        self.blocked = False
        if saturating and not self._window_open(t):
            self.blocked = True
            self.c_blocked += 1
        elif saturating:
            for k in range(self.batch):
                s = &self.senders[rr[0] % self.nsenders]
                rr[0] += 1
                if s.interval_ns != 0:
                    continue
                if self._build(s, n, t):
                    n += 1
            self._flush(n)
            n = 0
        for i in range(self.nsenders):
            s = &self.senders[i]
            if s.interval_ns == 0:
                continue
            while s.next_due <= t:
                late = t - s.next_due
                if late > LATE_NS:
                    s.late += 1
                if late > s.max_late_ns:
                    s.max_late_ns = late
                if self._build(s, n, t):
                    n += 1
                s.next_due += s.interval_ns
                if n == self.batch:
                    self._flush(n)
                    n = 0
            if s.next_due < wake:
                wake = s.next_due
        self._flush(n)
        return wake

    cdef bint _window_open(self, int64_t t) noexcept nogil:
        cdef int64_t inflight = <int64_t>(self.sent_weighted - self.recv_matched - self.forgiven)
        if inflight < self.window_out:
            return True
        if t - self.last_progress_ns > STALL_NS:
            # Nothing came back for a while: what is on the way is lost; open the window again.
            self.forgiven += inflight
            self.c_forgiven += inflight
            self.last_progress_ns = t
            return True
        return False

    cdef bint _build(self, Sender* s, int slot, int64_t t) noexcept nogil:
        cdef uint8_t* p = self.sbuf + slot * SLOT
        cdef uint8_t* q
        cdef int plen, k
        cdef bint start = s.in_frame == 0
        cdef bint last = s.in_frame + 1 >= s.packets_per_frame
        p[0] = 0x90 if s.ext_len else 0x80
        p[1] = s.pt | (0x80 if last else 0)
        wr16(p + 2, s.seq)
        wr32(p + 4, s.ts)
        wr32(p + 8, s.ssrc)
        if s.ext_len:
            memcpy(p + 12, s.ext, s.ext_len)
        q = p + 12 + s.ext_len
        if s.video:
            q[0] = 0x10 if start else 0x00           # VP8 descriptor: S bit, partition 0
            if start and (s.frame % s.keyframe_every == 0 or s.force_key):
                q[1] = 0x00                          # VP8 payload header P bit: 0 = key frame
                s.force_key = 0
            else:
                q[1] = 0x01
        else:
            q[0] = 0
            q[1] = 0
        q += PAYLOAD_OFFSET
        wr32(q, MAGIC)
        wr32(q + 4, s.stream_id)
        wr64(q + 8, s.counter)
        wr64(q + 16, <uint64_t>t)
        memset(q + BENCH_HEADER, 0x5A, s.payload_len - PAYLOAD_OFFSET - BENCH_HEADER)
        plen = 12 + s.ext_len + s.payload_len
        if s.hist != NULL:                           # kept in clear for a NACK (protected again when resent)
            k = s.seq & (HISTORY - 1)
            memcpy(s.hist + k * SLOT, p, plen)
            s.hist_len[k] = plen
            s.hist_seq[k] = s.seq
        s.seq += 1
        s.counter += 1
        s.in_frame += 1
        if last:
            s.in_frame = 0
            s.frame += 1
            s.ts += s.ts_step
        if self.fns.protect(s.ctx, p, &plen) != SRTP_ERR_OK:
            s.protect_failed += 1
            return False
        s.sent += 1
        if self.up_drop_below and self._draw() < self.up_drop_below:
            s.up_dropped += 1                        # lost on the simulated uplink
            return False
        if s.interval_ns == 0:
            self.sent_weighted += max(1, s.fanout)
        self._address(slot, plen, &s.dst, s.src)
        return True

    cdef inline void _address(self, int slot, size_t length, void* dst, uint32_t src) noexcept nogil:
        """Send slot ``slot``: ``length`` bytes to ``dst``, from the participant's own address ``src`` (IP_PKTINFO)."""
        cdef cmsghdr* c = <cmsghdr*>(self.scmsg + slot * CMSG_SLOT)
        cdef in_pktinfo* info
        self.siov[slot].iov_len = length
        self.smsgs[slot].msg_hdr.msg_name = dst
        c.cmsg_level = IPPROTO_IP
        c.cmsg_type = IP_PKTINFO
        c.cmsg_len = CMSG_LEN(sizeof(in_pktinfo))
        info = <in_pktinfo*>CMSG_DATA(c)
        info.ipi_ifindex = 0
        info.ipi_spec_dst.s_addr = src
        info.ipi_addr.s_addr = 0

    cdef void _send_reports(self, int64_t t) noexcept nogil:
        """One SRTCP receiver report per due receiver (RFC 3550 6.4.2: fraction lost, cumulative lost, extended
        highest sequence number; no jitter, LSR or DLSR)."""
        cdef int i, n = 0, plen
        cdef Receiver* r
        cdef uint8_t* p
        cdef int64_t expected, lost, interval_expected, interval_lost
        cdef uint32_t fraction
        for i in range(self.nreceivers):
            r = &self.receivers[i]
            if r.rtcp_ctx == NULL or r.next_rr_ns > t or r.rtx:
                continue
            r.next_rr_ns = t + 1000000000
            if r.first_ext < 0:
                continue
            expected = r.max_ext - r.first_ext + 1
            lost = expected - <int64_t>r.received
            interval_expected = expected - r.rr_expected
            interval_lost = interval_expected - <int64_t>(r.received - r.rr_received)
            fraction = <uint32_t>((interval_lost << 8) // interval_expected) if interval_expected > 0 and interval_lost > 0 else 0
            r.rr_expected = expected
            r.rr_received = r.received
            p = self.sbuf + n * SLOT
            p[0] = 0x81                                   # V=2, RC=1
            p[1] = 201                                    # RR
            wr16(p + 2, 7)                                # length in words - 1
            wr32(p + 4, r.reporter_ssrc)
            wr32(p + 8, r.ssrc)
            wr32(p + 12, (min(fraction, 255) << 24) | (<uint32_t>max(0, min(lost, 0x7FFFFF)) & 0xFFFFFF))
            wr32(p + 16, <uint32_t>r.max_ext)
            wr32(p + 20, 0)
            wr32(p + 24, 0)
            wr32(p + 28, 0)
            plen = 32
            if self.fns.protect_rtcp(r.rtcp_ctx, p, &plen) != SRTP_ERR_OK:
                continue
            self._address(n, plen, &r.rtcp_dst, r.rtcp_src)
            r.rr_sent += 1
            self.c_rr_sent += 1
            n += 1
            if n == self.batch:
                self._flush(n)
                n = 0
        self._flush(n)

    cdef void _send_consents(self, int64_t t, int64_t period) noexcept nogil:
        cdef int i, n = 0
        cdef Consent* c
        for i in range(self.nconsents):
            c = &self.consents[i]
            if c.next_ns > t:
                continue
            c.next_ns = t + period
            memcpy(self.sbuf + n * SLOT, c.data, c.length)
            self._address(n, c.length, &c.dst, c.src)
            n += 1
            self.c_consent_sent += 1
            if n == self.batch:
                self._flush(n)
                n = 0
        self._flush(n)

    cdef void _flush(self, int n) noexcept nogil:
        cdef int i = 0, r
        while i < n:
            r = sendmmsg(self.fd, self.smsgs + i, n - i, MSG_DONTWAIT)
            self.c_send_calls += 1
            if r > 0:
                i += r
            elif errno == EINTR:
                continue
            else:
                self.c_send_errors += 1
                i += 1                            # the datagram the kernel refused is lost

    # ---- results ---------------------------------------------------------------------------------------
    def senders_snapshot(self) -> list:
        """Per sender: dict(sent, late, behind, max_late_ms, protect_failed, counter)."""
        cdef int i
        out = []
        for i in range(self.nsenders):
            s = &self.senders[i]
            out.append({"sent": s.sent, "late": s.late, "behind": s.behind, "max_late_ms": s.max_late_ns / 1e6,
                        "protect_failed": s.protect_failed, "counter": s.counter, "uplink_dropped": s.up_dropped,
                        "retransmitted": s.retransmitted, "nack_missing": s.nack_missing})
        return out

    def receivers_snapshot(self) -> list:
        """Per receiver: dict(ssrc, received, bytes, gaps, reordered, verified, auth_failed, bad_payload)."""
        cdef int i
        cdef Receiver* r
        out = []
        for i in range(self.nreceivers):
            r = &self.receivers[i]
            span = (r.max_ext - r.first_ext + 1) if r.first_ext >= 0 else 0
            out.append({"ssrc": r.ssrc, "received": r.received, "bytes": r.bytes,
                        "gaps": max(0, span - <int64_t>r.received), "reordered": r.reordered,
                        "verified": r.verified, "auth_failed": r.auth_failed, "bad_payload": r.bad_payload,
                        "dropped": r.dropped, "nacks_sent": r.nacks_sent, "nacked": r.nacked, "rtx": bool(r.rtx)})
        return out

    def counters(self) -> dict:
        return {"rtcp": self.c_rtcp, "stun": self.c_stun, "dtls": self.c_dtls, "unknown": self.c_unknown,
                "foreign": self.c_foreign, "short": self.c_short, "recv_calls": self.c_recv_calls,
                "send_calls": self.c_send_calls, "send_errors": self.c_send_errors,
                "consent_sent": self.c_consent_sent, "receiver_reports_sent": self.c_rr_sent,
                "key_frame_requests": self.c_pli, "rtcp_auth_failed": self.c_rtcp_auth_failed,
                "nacks_received": self.c_nack_received,
                "polls": self.c_polls, "gro": bool(self.gro), "gro_buffers": self.c_gro_buffers,
                "gro_datagrams": self.c_gro_datagrams, "truncated": self.c_truncated,
                "flat_window_blocked": self.c_blocked, "flat_window_forgiven": self.c_forgiven,
                "cpu_s": self.cpu_ns / 1e9, "wall_s": self.wall_ns / 1e9}

    def latency_histogram(self) -> list:
        """(upper bound in ms, count) per non-empty bucket: 10 us buckets to 20 ms, then 1 ms to 2 s."""
        cdef int b
        out = []
        for b in range(LAT_BUCKETS):
            if self.latency[b]:
                upper_us = (b + 1) * 10 if b < LAT_FINE else LAT_FINE * 10 + (b - LAT_FINE + 1) * 1000
                out.append((upper_us / 1000.0, self.latency[b]))
        return out
