"""The set-up dispatch's receive loop: reads the generator's shared socket in batches and keeps only what is routed.

Owns the reads of ``bench.net.GeneratorSocket`` while participants set up (signaling is elsewhere; here ICE and
DTLS datagrams, and the first media a participant waits for). During a ``bench join`` fill the same socket also
receives the publisher's stream forwarded to every participant already joined: hundreds of thousands of datagrams
that no one reads any more. Read one ``recvmsg`` at a time in Python with their ancillary data parsed, those cost the
generator about a millisecond of CPU per join (py-spy of the generator, docs/PERFORMANCE.md, "Large rooms: joins"),
on the cores the server under test shares. Here each ``recvmmsg`` (up to 32 datagrams) is matched against the set of
routed destination addresses (``IP_PKTINFO``) in C, and only a routed datagram becomes a Python object; the others
are counted and dropped. Written by hand because the standard library has no ``recvmmsg``; the socket stays the
caller's (this object never closes it).
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from fastpath.includes.linux cimport (
    AF_INET,
    CMSG_DATA,
    CMSG_FIRSTHDR,
    CMSG_NXTHDR,
    EINTR,
    IP_PKTINFO,
    IPPROTO_IP,
    IPPROTO_UDP,
    MSG_DONTWAIT,
    UDP_GRO,
    cmsghdr,
    errno,
    htonl,
    in_addr,
    in_pktinfo,
    inet_ntop,
    inet_pton,
    iovec,
    mmsghdr,
    ntohl,
    ntohs,
    recvmmsg,
    sockaddr_in,
)


cdef enum:
    BATCH = 32
    SLOT = 2048
    GRO_SLOT = 65536
    CMSG_SLOT = 64                       # IP_PKTINFO (28 bytes) and, with UDP_GRO, the segment length (20)
    ADDR_TEXT = 16


cdef uint32_t _ip(str host) except? 0:
    cdef in_addr a
    if inet_pton(AF_INET, host.encode(), &a) != 1:
        raise ValueError(f"not an IPv4 address: {host!r}")
    return ntohl(a.s_addr)


cdef str _text(uint32_t ip_host_order):
    cdef char buf[ADDR_TEXT]
    cdef in_addr a
    a.s_addr = htonl(ip_host_order)
    inet_ntop(AF_INET, &a, buf, ADDR_TEXT)
    return buf.decode()


cdef class SetupReader:
    """``SetupReader(fd, gro)``: ``route(host)``/``unroute(host)`` keep the destination addresses whose datagrams
    are wanted; ``read(limit)`` returns ``[(destination, data, (source host, source port), segment), ...]`` for
    the routed ones among at most ``limit`` datagrams read now (``segment`` > 0: a UDP_GRO buffer of that segment
    length). ``dropped`` counts the datagrams read for no routed address."""

    cdef int fd
    cdef bint gro
    cdef int slot
    cdef uint8_t* buf
    cdef uint8_t* cmsg
    cdef mmsghdr msgs[BATCH]
    cdef iovec iov[BATCH]
    cdef sockaddr_in names[BATCH]
    # open addressing over routed addresses (host byte order, 0 = empty; 0.0.0.0 is never a participant)
    cdef uint32_t* table
    cdef uint32_t mask
    cdef int used                        # live keys
    cdef int filled                      # live keys and tombstones
    cdef readonly uint64_t dropped
    cdef readonly uint64_t datagrams
    cdef readonly uint64_t calls

    def __cinit__(self, int fd, bint gro):
        self.fd = fd
        self.gro = gro
        self.slot = GRO_SLOT if gro else SLOT
        self.buf = <uint8_t*>calloc(BATCH, self.slot)
        self.cmsg = <uint8_t*>calloc(BATCH, CMSG_SLOT)
        self.mask = 255
        self.table = <uint32_t*>calloc(self.mask + 1, sizeof(uint32_t))
        if self.buf == NULL or self.cmsg == NULL or self.table == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.buf)
        free(self.cmsg)
        free(self.table)

    # ---- the routed set ----------------------------------------------------------------------------------
    cdef inline uint32_t _slot_of(self, uint32_t key) noexcept nogil:
        return (key * 2654435761u) & self.mask

    cdef bint _contains(self, uint32_t key) noexcept nogil:
        cdef uint32_t i = self._slot_of(key)
        while self.table[i] != 0:
            if self.table[i] == key:
                return True
            i = (i + 1) & self.mask
        return False

    cdef int _rebuild(self, uint32_t mask) except -1:
        cdef uint32_t* old = self.table
        cdef uint32_t old_mask = self.mask
        cdef uint32_t* fresh = <uint32_t*>calloc(mask + 1, sizeof(uint32_t))
        cdef uint32_t i, j, key
        if fresh == NULL:
            raise MemoryError()
        self.table, self.mask, self.used, self.filled = fresh, mask, 0, 0
        for i in range(old_mask + 1):
            key = old[i]
            if key != 0 and key != 0xFFFFFFFF:
                j = self._slot_of(key)
                while fresh[j] != 0:
                    j = (j + 1) & mask
                fresh[j] = key
                self.used += 1
                self.filled += 1
        free(old)
        return 0

    def route(self, str host):
        cdef uint32_t key = _ip(host)
        cdef uint32_t i
        if key == 0 or key == 0xFFFFFFFF:
            raise ValueError(f"cannot route {host!r}")
        if self._contains(key):
            return
        if (self.filled + 1) * 2 > <int>(self.mask + 1):
            self._rebuild(self.mask * 2 + 1 if self.used * 4 > <int>(self.mask + 1) else self.mask)
        i = self._slot_of(key)
        while self.table[i] != 0 and self.table[i] != 0xFFFFFFFF:
            i = (i + 1) & self.mask
        if self.table[i] == 0:
            self.filled += 1
        self.table[i] = key
        self.used += 1

    def unroute(self, str host):
        cdef uint32_t key = _ip(host)
        cdef uint32_t i = self._slot_of(key)
        while self.table[i] != 0:
            if self.table[i] == key:
                self.table[i] = 0xFFFFFFFF  # a tombstone keeps later keys of the chain reachable
                self.used -= 1
                return
            i = (i + 1) & self.mask

    def __contains__(self, str host):
        return self._contains(_ip(host))

    def __len__(self):
        return self.used

    # ---- reading -----------------------------------------------------------------------------------------
    def read(self, int limit=256):
        """Reads until the socket is empty or ``limit`` datagrams were read; returns the routed ones."""
        cdef list out = []
        cdef int n, k, total = 0, want
        cdef uint32_t dest
        cdef int segment
        cdef cmsghdr* c
        cdef in_pktinfo info
        while total < limit:
            want = BATCH if limit - total >= BATCH else limit - total
            for k in range(want):
                self.iov[k].iov_base = self.buf + <size_t>k * self.slot
                self.iov[k].iov_len = self.slot
                self.msgs[k].msg_hdr.msg_name = &self.names[k]
                self.msgs[k].msg_hdr.msg_namelen = sizeof(sockaddr_in)
                self.msgs[k].msg_hdr.msg_iov = &self.iov[k]
                self.msgs[k].msg_hdr.msg_iovlen = 1
                self.msgs[k].msg_hdr.msg_control = self.cmsg + k * CMSG_SLOT
                self.msgs[k].msg_hdr.msg_controllen = CMSG_SLOT
                self.msgs[k].msg_hdr.msg_flags = 0
            with nogil:
                n = recvmmsg(self.fd, self.msgs, want, MSG_DONTWAIT, NULL)
            self.calls += 1
            if n <= 0:
                if n < 0 and errno == EINTR:
                    continue
                break  # EAGAIN: empty; any other error ends this read as an empty socket would
            total += n
            self.datagrams += n
            for k in range(n):
                dest = 0
                segment = 0
                c = CMSG_FIRSTHDR(&self.msgs[k].msg_hdr)
                while c != NULL:
                    if c.cmsg_level == IPPROTO_IP and c.cmsg_type == IP_PKTINFO:
                        memcpy(&info, CMSG_DATA(c), sizeof(in_pktinfo))
                        dest = ntohl(info.ipi_addr.s_addr)
                    elif c.cmsg_level == IPPROTO_UDP and c.cmsg_type == UDP_GRO:
                        memcpy(&segment, CMSG_DATA(c), sizeof(int))
                    c = CMSG_NXTHDR(&self.msgs[k].msg_hdr, c)
                if dest == 0 or not self._contains(dest):
                    self.dropped += 1
                    continue
                out.append((
                    _text(dest),
                    (<char*>self.iov[k].iov_base)[:self.msgs[k].msg_len],
                    (_text(ntohl(self.names[k].sin_addr.s_addr)), ntohs(self.names[k].sin_port)),
                    segment,
                ))
            if n < want:
                break
        return out
