"""The bench's "limit loop": the minimal SRTP forwarder of docs/PERFORMANCE.md, for any number of destinations.

Owns one deliberately minimal loop built from the fast path's primitives (recvmmsg/sendmmsg arenas, the libsrtp
function pointers of ``fastpath.srtp``, in-place RTP header writes) without any SFU logic: receive a batch,
unprotect each packet once, then for each destination copy, rewrite SSRC (``ssrc_base + k``) and sequence number,
protect with that destination's context and queue it; ``sendmmsg`` whenever the send arena is full and at the end of
each receive batch, with each destination's datagrams grouped into UDP GSO messages (``fastpath.gso``, as the
Engine's send arena does) unless ``gso`` is off, and AES-CM-80 tags written in batches just before each send
(``fastpath.crypto_kernel``'s HMAC batches, as the Engine does). The send arena has a fixed size (not one slot per
destination and received packet), so capacity runs with thousands of subscribers have a limit to compare against; it
waits in ``ppoll`` when idle. RFC 3550, RFC 3711.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from fastpath.crypto_kernel cimport HmacBatch, hmac_batch_new, hmac_flush, protect_queued
from fastpath.gso cimport GSO_ARENA, GsoArena, gso_group, gso_layout, gso_refused, gso_supported
from fastpath.includes.linux cimport (
    AF_INET,
    EINTR,
    MSG_DONTWAIT,
    errno,
    htonl,
    htons,
    inet_pton,
    iovec,
    mmsghdr,
    monotonic_ms,
    recvmmsg,
    sendmmsg,
    sockaddr_in,
    timespec,
)
from fastpath.includes.srtp cimport SRTP_ERR_OK, SRTP_ERR_REPLAY_OLD, SrtpFns
from fastpath.rtp cimport rd16, rd32, wr16, wr32
from fastpath.srtp cimport SrtpContext, srtp_fns


cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    short POLLIN
    int ppoll(pollfd* fds, unsigned long nfds, const timespec* timeout, const void* sigmask)


cdef enum:
    SLOT = 2048
    SEND_ARENA = GSO_ARENA


cdef void _flush(int fd, mmsghdr* msgs, int n) noexcept nogil:
    cdef int i = 0, r
    while i < n:
        r = sendmmsg(fd, msgs + i, n - i, MSG_DONTWAIT)
        if r > 0:
            i += r
        elif errno == EINTR:
            continue
        else:
            i += 1                            # the datagram the kernel refused is dropped


cdef void _flush_gso(int fd, GsoArena* g, mmsghdr* msgs, iovec* iov, int32_t* dest, int n,
                     bint* gso) noexcept nogil:
    cdef int32_t n_msgs, i = 0, j, r
    if not gso[0] or n < 2:
        _flush(fd, msgs, n)
        return
    n_msgs = gso_group(g, dest, iov, n)
    if n_msgs == n:
        _flush(fd, msgs, n)
        return
    gso_layout(g, n_msgs, msgs, iov)
    while i < n_msgs:
        r = sendmmsg(fd, g.msgs + i, n_msgs - i, MSG_DONTWAIT)
        if r > 0:
            i += r
        elif errno == EINTR:
            continue
        elif g.msg[i].nseg > 1 and gso_refused(errno):
            gso[0] = 0                        # plain sends from here on, as the Engine does
            for j in range(g.msg[i].base, n):
                _flush(fd, msgs + g.slot[j], 1)
            return
        else:
            i += 1                            # the message the kernel refused is dropped


def run_limit(int fd, list dests, SrtpContext rx, list tx, double seconds, unsigned int ssrc_base=0x10000000,
              int batch=64, bint gso=True) -> dict:
    """Forward everything arriving on ``fd`` to every (host, port) in ``dests`` for ``seconds``."""
    cdef SrtpFns fns = srtp_fns()
    cdef int k, i, n, ndest = len(dests), nsend = 0, length, plen, fail_streak = 0, rc
    cdef sockaddr_in* addrs = NULL
    cdef void** txc = NULL
    cdef uint8_t* rbuf = NULL
    cdef uint8_t* sbuf = NULL
    cdef mmsghdr* rmsgs = NULL
    cdef iovec* riov = NULL
    cdef mmsghdr* smsgs = NULL
    cdef iovec* siov = NULL
    cdef int32_t* sdest = NULL
    cdef GsoArena* arena = NULL
    cdef HmacBatch* hmac = NULL
    cdef uint8_t* pkt
    cdef uint8_t* out
    cdef uint64_t received = 0, forwarded = 0, failed = 0, resets = 0, protect_failed = 0
    cdef long long deadline
    cdef uint32_t ssrc
    cdef uint16_t seq
    cdef pollfd pfd
    cdef void* rxc = rx.ctx
    cdef timespec wait
    if ndest < 1 or len(tx) != ndest:
        raise ValueError("need at least one destination and one outbound context per destination")
    if not 1 <= batch <= 1024:
        raise ValueError("batch must be in 1..1024")
    for k in range(ndest):
        if not (<SrtpContext?>tx[k]).outbound:
            raise ValueError("destination contexts must be outbound")
    if rx.outbound:
        raise ValueError("the receive context must be inbound")
    try:
        addrs = <sockaddr_in*>calloc(ndest, sizeof(sockaddr_in))
        txc = <void**>calloc(ndest, sizeof(void*))
        rbuf = <uint8_t*>calloc(batch, SLOT)
        sbuf = <uint8_t*>calloc(SEND_ARENA, SLOT)
        rmsgs = <mmsghdr*>calloc(batch, sizeof(mmsghdr))
        riov = <iovec*>calloc(batch, sizeof(iovec))
        smsgs = <mmsghdr*>calloc(SEND_ARENA, sizeof(mmsghdr))
        siov = <iovec*>calloc(SEND_ARENA, sizeof(iovec))
        sdest = <int32_t*>calloc(SEND_ARENA, sizeof(int32_t))
        arena = <GsoArena*>calloc(1, sizeof(GsoArena))
        hmac = hmac_batch_new()
        if (addrs == NULL or txc == NULL or rbuf == NULL or sbuf == NULL or rmsgs == NULL or riov == NULL
                or smsgs == NULL or siov == NULL or sdest == NULL or arena == NULL or hmac == NULL):
            raise MemoryError()
        gso = gso and gso_supported(fd)
        for k in range(ndest):
            host, port = dests[k]
            addrs[k].sin_family = AF_INET
            addrs[k].sin_port = htons(port)
            if inet_pton(AF_INET, (<str>host).encode(), &addrs[k].sin_addr) != 1:
                raise ValueError(f"IPv4 address expected, got {host!r}")
            txc[k] = (<SrtpContext>tx[k]).ctx
        for i in range(batch):
            riov[i].iov_base = rbuf + i * SLOT
            riov[i].iov_len = SLOT - 64
            rmsgs[i].msg_hdr.msg_iov = &riov[i]
            rmsgs[i].msg_hdr.msg_iovlen = 1
        for i in range(SEND_ARENA):
            siov[i].iov_base = sbuf + i * SLOT
            smsgs[i].msg_hdr.msg_iov = &siov[i]
            smsgs[i].msg_hdr.msg_iovlen = 1
            smsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
        pfd.fd = fd
        pfd.events = POLLIN
        wait.tv_sec = 0
        wait.tv_nsec = 50000000                 # idle: wake for data, or every 50 ms to check the deadline
        with nogil:
            deadline = monotonic_ms() + <long long>(seconds * 1000)
            while monotonic_ms() < deadline:
                n = recvmmsg(fd, rmsgs, batch, MSG_DONTWAIT, NULL)
                if n <= 0:
                    ppoll(&pfd, 1, &wait, NULL)
                    continue
                for i in range(n):
                    pkt = rbuf + i * SLOT
                    length = rmsgs[i].msg_len
                    received += 1
                    if length < 12:
                        failed += 1
                        continue
                    ssrc = rd32(pkt + 8)
                    seq = rd16(pkt + 2)
                    rc = fns.unprotect(rxc, pkt, &length)
                    if rc != SRTP_ERR_OK:
                        failed += 1
                        if rc == SRTP_ERR_REPLAY_OLD:       # large-gap recovery, as the Engine does
                            fail_streak += 1
                            if fail_streak >= 4:
                                fail_streak = 0
                                resets += 1
                                fns.remove_stream(rxc, htonl(ssrc))
                        continue
                    fail_streak = 0
                    for k in range(ndest):
                        out = sbuf + nsend * SLOT
                        memcpy(out, pkt, length)
                        wr32(out + 8, ssrc_base + k)
                        wr16(out + 2, <uint16_t>(seq + 1000 * k))
                        plen = length
                        if protect_queued(fns.protect, txc[k], out, &plen, hmac) != SRTP_ERR_OK:
                            protect_failed += 1
                            continue
                        siov[nsend].iov_len = plen
                        smsgs[nsend].msg_hdr.msg_name = &addrs[k]
                        sdest[nsend] = k
                        nsend += 1
                        forwarded += 1
                        if nsend == SEND_ARENA:
                            hmac_flush(hmac)
                            _flush_gso(fd, arena, smsgs, siov, sdest, nsend, &gso)
                            nsend = 0
                hmac_flush(hmac)
                _flush_gso(fd, arena, smsgs, siov, sdest, nsend, &gso)
                nsend = 0
    finally:
        free(addrs)
        free(txc)
        free(rbuf)
        free(sbuf)
        free(rmsgs)
        free(riov)
        free(smsgs)
        free(siov)
        free(sdest)
        free(arena)
        free(hmac)
    return {"received": received, "forwarded": forwarded, "unprotect_failed": failed, "srtp_resets": resets,
            "protect_failed": protect_failed, "gso": bool(gso)}
