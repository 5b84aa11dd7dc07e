"""The "limit loop" baseline of PERFORMANCE.md and the benchmark's SRTP load generator.

Owns two deliberately minimal loops built from the Engine's primitives (recvmmsg/sendmmsg arenas, the
libsrtp function pointers, in-place RTP header rewriting) without any SFU logic:
- ``run_limit``: receive a batch, unprotect each packet once, then for each destination rewrite SSRC and
  sequence number, protect with that destination's session and queue; one sendmmsg per full batch.
- ``blast``: a publisher that protects fresh 1200-byte RTP packets and sends them with sendmmsg.
Bench-only; not used by the worker. RFC 3550, RFC 3711.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from fastpath.includes.linux cimport (
    AF_INET,
    EAGAIN,
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
)
from fastpath.includes.srtp cimport SRTP_ERR_OK, SRTP_ERR_REPLAY_OLD, SRTP_MAX_TRAILER, SrtpFns
from fastpath.rtp cimport rd16, rd32, wr16, wr32
from fastpath.srtp cimport SrtpContext, srtp_fns

import select

cdef enum:
    SLOT = 2048
    MAX_DESTS = 64


cdef int _addr(str host, int port, sockaddr_in* sa) except -1:
    memset(sa, 0, sizeof(sockaddr_in))
    sa.sin_family = AF_INET
    sa.sin_port = htons(port)
    if inet_pton(AF_INET, host.encode(), &sa.sin_addr) != 1:
        raise ValueError(f"IPv4 address expected, got {host!r}")
    return 0


cdef int _flush(int fd, mmsghdr* msgs, int n) noexcept nogil:
    cdef int i = 0, r
    while i < n:
        r = sendmmsg(fd, msgs + i, n - i, MSG_DONTWAIT)
        if r > 0:
            i += r
        elif errno == EINTR:
            continue
        else:
            i += 1                            # drop the datagram the kernel refused
    return n


def run_limit(int fd, list dests, SrtpContext rx, list tx, double seconds, int batch=64) -> dict:
    """Forward everything arriving on fd to every (host, port) in dests for `seconds`."""
    cdef SrtpFns fns = srtp_fns()
    cdef int k, i, n, ndest = len(dests), nsend = 0, length, plen, fail_streak = 0
    cdef sockaddr_in addrs[MAX_DESTS]
    cdef void* txc[MAX_DESTS]
    cdef uint8_t* rbuf
    cdef uint8_t* sbuf
    cdef mmsghdr* rmsgs
    cdef iovec* riov
    cdef mmsghdr* smsgs
    cdef iovec* siov
    cdef uint8_t* pkt
    cdef uint8_t* out
    cdef uint64_t received = 0, forwarded = 0, failed = 0, resets = 0
    cdef long long deadline
    cdef uint32_t ssrc
    if not 1 <= ndest <= MAX_DESTS or len(tx) != ndest:
        raise ValueError(f"need 1..{MAX_DESTS} dests and one tx context each")
    for k in range(ndest):
        _addr(dests[k][0], dests[k][1], &addrs[k])
        txc[k] = (<SrtpContext>tx[k]).ctx
    rbuf = <uint8_t*>malloc(batch * SLOT)
    sbuf = <uint8_t*>malloc(batch * ndest * SLOT)
    rmsgs = <mmsghdr*>malloc(batch * sizeof(mmsghdr))
    riov = <iovec*>malloc(batch * sizeof(iovec))
    smsgs = <mmsghdr*>malloc(batch * ndest * sizeof(mmsghdr))
    siov = <iovec*>malloc(batch * ndest * sizeof(iovec))
    try:
        memset(rmsgs, 0, batch * sizeof(mmsghdr))
        memset(smsgs, 0, batch * ndest * sizeof(mmsghdr))
        for i in range(batch):
            riov[i].iov_base = rbuf + i * SLOT
            riov[i].iov_len = SLOT - 64
            rmsgs[i].msg_hdr.msg_iov = &riov[i]
            rmsgs[i].msg_hdr.msg_iovlen = 1
        for i in range(batch * ndest):
            siov[i].iov_base = sbuf + i * SLOT
            smsgs[i].msg_hdr.msg_iov = &siov[i]
            smsgs[i].msg_hdr.msg_iovlen = 1
            smsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
        deadline = monotonic_ms() + <long long>(seconds * 1000)
        while monotonic_ms() < deadline:
            n = recvmmsg(fd, rmsgs, batch, MSG_DONTWAIT, NULL)
            if n <= 0:
                select.select([fd], [], [], 0.01)
                continue
            nsend = 0
            for i in range(n):
                pkt = rbuf + i * SLOT
                length = rmsgs[i].msg_len
                received += 1
                ssrc = rd32(pkt + 8) if length >= 12 else 0
                rc = fns.unprotect(rx.ctx, pkt, &length)
                if rc != SRTP_ERR_OK:
                    failed += 1
                    # Same large-gap recovery as the Engine.
                    if rc == SRTP_ERR_REPLAY_OLD:
                        fail_streak += 1
                        if fail_streak >= 4:
                            fail_streak = 0
                            resets += 1
                            fns.remove_stream(rx.ctx, htonl(ssrc))
                    continue
                fail_streak = 0
                for k in range(ndest):
                    out = sbuf + nsend * SLOT
                    memcpy(out, pkt, length)
                    wr32(out + 8, 0x10000000 + k)
                    wr16(out + 2, <uint16_t>(rd16(pkt + 2) + 1000 * k))
                    plen = length
                    if fns.protect(txc[k], out, &plen) != SRTP_ERR_OK:
                        continue
                    siov[nsend].iov_len = plen
                    smsgs[nsend].msg_hdr.msg_name = &addrs[k]
                    nsend += 1
                    forwarded += 1
            _flush(fd, smsgs, nsend)
    finally:
        free(rbuf)
        free(sbuf)
        free(rmsgs)
        free(riov)
        free(smsgs)
        free(siov)
    return {"received": received, "forwarded": forwarded, "unprotect_failed": failed, "srtp_resets": resets}


def blast(int fd, str host, int port, SrtpContext tx, unsigned int ssrc, int pt, int payload_len,
          double seconds, int batch=32, long long max_packets=-1, int first_seq=1) -> int:
    """Send freshly protected RTP (payload_len bytes of payload) to host:port as fast as possible."""
    cdef SrtpFns fns = srtp_fns()
    cdef sockaddr_in sa
    cdef uint8_t* buf
    cdef mmsghdr* msgs
    cdef iovec* iov
    cdef int i, n, plen, hdr = 12
    cdef uint16_t seq = <uint16_t>first_seq
    cdef uint32_t ts = 90000
    cdef long long sent = 0, deadline
    cdef uint8_t* p
    if not 1 <= payload_len <= SLOT - 64 - hdr:
        raise ValueError("payload_len out of range")
    _addr(host, port, &sa)
    buf = <uint8_t*>malloc(batch * SLOT)
    msgs = <mmsghdr*>malloc(batch * sizeof(mmsghdr))
    iov = <iovec*>malloc(batch * sizeof(iovec))
    try:
        memset(msgs, 0, batch * sizeof(mmsghdr))
        for i in range(batch):
            iov[i].iov_base = buf + i * SLOT
            msgs[i].msg_hdr.msg_iov = &iov[i]
            msgs[i].msg_hdr.msg_iovlen = 1
            msgs[i].msg_hdr.msg_name = &sa
            msgs[i].msg_hdr.msg_namelen = sizeof(sa)
        deadline = monotonic_ms() + <long long>(seconds * 1000)
        while monotonic_ms() < deadline and (max_packets < 0 or sent < max_packets):
            n = 0
            for i in range(batch):
                p = buf + i * SLOT
                p[0] = 0x80
                p[1] = <uint8_t>(pt & 0x7F)
                wr16(p + 2, seq)
                wr32(p + 4, ts)
                wr32(p + 8, ssrc)
                memset(p + hdr, 0x5A, payload_len)
                plen = hdr + payload_len
                if fns.protect(tx.ctx, p, &plen) != SRTP_ERR_OK:
                    break
                iov[i].iov_len = plen
                seq += 1
                if (seq & 7) == 0:
                    ts += 3000
                n += 1
            sent += _flush(fd, msgs, n)
    finally:
        free(buf)
        free(msgs)
        free(iov)
    return sent
