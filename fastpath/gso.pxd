# UDP segmentation offload (udp(7) UDP_SEGMENT, Linux 4.18+) for a sendmmsg arena, shared by the Engine's send
# arena (_gso.pxi) and the bench's limit loop.
#
# gso_group links the queued datagrams by destination: consecutive datagrams to one destination with the same
# length (the last one may be shorter) become one message, at most GSO_MAX_SEGMENTS datagrams and GSO_MAX_BYTES.
# gso_layout writes those messages: iovecs pointing at the datagrams' own slots (contiguous per message in
# arena.iov) and a UDP_SEGMENT cmsg with the segment length. The kernel then walks its UDP/IP output path (route,
# netfilter, device queue) once per message instead of once per datagram and splits the payload back into the
# same datagrams, in the NIC or in software just before the device. Each destination keeps its datagram order.
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from fastpath.includes.linux cimport (
    CMSG_DATA,
    CMSG_LEN,
    CMSG_SPACE,
    EINVAL,
    EIO,
    ENOPROTOOPT,
    EOPNOTSUPP,
    IPPROTO_UDP,
    UDP_SEGMENT,
    cmsghdr,
    getsockopt,
    iovec,
    mmsghdr,
    msghdr,
    socklen_t,
)

cdef enum:
    GSO_ARENA = 256                           # datagrams per flush, at most
    GSO_MAX_SEGMENTS = 64                     # the kernel's UDP_MAX_SEGMENTS
    GSO_MAX_BYTES = 65000                     # under 65,507, the largest UDP payload over IPv4
    GSO_TABLE_BITS = 9
    GSO_TABLE = 1 << GSO_TABLE_BITS           # > GSO_ARENA: the open-addressing probe always ends
    GSO_CMSG_WORDS = 7                        # CMSG_SPACE(sizeof(uint16_t)) = 24 bytes + an IP_PKTINFO one, 32


ctypedef struct GsoMsg:
    int32_t first                             # datagram slots, linked through GsoArena.next
    int32_t last
    int32_t base                              # its first entry in GsoArena.iov
    int32_t nseg
    int32_t seglen                            # every segment's length but the last one's
    int32_t bytes
    uint8_t closed                            # a shorter segment ended it


ctypedef struct GsoArena:
    uint32_t gen                              # stamp of the current flush in tab_gen
    uint32_t tab_gen[GSO_TABLE]
    int32_t tab_key[GSO_TABLE]                # destination
    int32_t tab_msg[GSO_TABLE]                # its open message
    int32_t next[GSO_ARENA]
    GsoMsg msg[GSO_ARENA]
    mmsghdr msgs[GSO_ARENA]
    iovec iov[GSO_ARENA]
    int32_t slot[GSO_ARENA]                   # the datagram slot behind iov[j]
    uint64_t cmsg[GSO_ARENA * GSO_CMSG_WORDS]


cdef inline int32_t gso_group(GsoArena* g, const int32_t* dest, const iovec* iov, int32_t n) noexcept nogil:
    """Link datagrams 0..n-1 (n <= GSO_ARENA; dest[k] >= 0 names k's destination) into messages; returns how
    many messages there are."""
    cdef uint32_t gen = g.gen + 1
    cdef uint32_t h
    cdef int32_t k, d, length, n_msgs = 0
    cdef GsoMsg* m
    if gen == 0:
        memset(g.tab_gen, 0, sizeof(g.tab_gen))
        gen = 1
    g.gen = gen
    for k in range(n):
        d = dest[k]
        length = <int32_t>iov[k].iov_len
        h = (<uint32_t>d * <uint32_t>2654435761U) >> (32 - GSO_TABLE_BITS)
        while g.tab_gen[h] == gen and g.tab_key[h] != d:
            h = (h + 1) & (GSO_TABLE - 1)
        g.next[k] = -1
        if g.tab_gen[h] == gen:
            m = &g.msg[g.tab_msg[h]]
            if (not m.closed and length <= m.seglen and m.nseg < GSO_MAX_SEGMENTS
                    and m.bytes + length <= GSO_MAX_BYTES):
                g.next[m.last] = k
                m.last = k
                m.nseg += 1
                m.bytes += length
                if length < m.seglen:
                    m.closed = 1
                continue
        else:
            g.tab_gen[h] = gen
            g.tab_key[h] = d
        g.tab_msg[h] = n_msgs
        m = &g.msg[n_msgs]
        m.first = k
        m.last = k
        m.nseg = 1
        m.seglen = length
        m.bytes = length
        m.closed = 0
        n_msgs += 1
    return n_msgs


cdef inline void gso_layout(GsoArena* g, int32_t n_msgs, const mmsghdr* plain, const iovec* iov) noexcept nogil:
    """Write the headers of messages 0..n_msgs-1 into g.msgs; plain[k] is datagram k's own one-datagram message
    (its destination address is reused)."""
    cdef int32_t i, k, j = 0
    cdef GsoMsg* m
    cdef msghdr* hdr
    cdef cmsghdr* c
    for i in range(n_msgs):
        m = &g.msg[i]
        m.base = j
        hdr = &g.msgs[i].msg_hdr
        hdr.msg_name = plain[m.first].msg_hdr.msg_name
        hdr.msg_namelen = plain[m.first].msg_hdr.msg_namelen
        hdr.msg_iov = &g.iov[j]
        hdr.msg_iovlen = m.nseg
        k = m.first
        while k >= 0:
            g.iov[j] = iov[k]
            g.slot[j] = k
            j += 1
            k = g.next[k]
        if m.nseg > 1:
            c = <cmsghdr*>&g.cmsg[i * GSO_CMSG_WORDS]
            c.cmsg_len = CMSG_LEN(sizeof(uint16_t))
            c.cmsg_level = IPPROTO_UDP
            c.cmsg_type = UDP_SEGMENT
            (<uint16_t*>CMSG_DATA(c))[0] = <uint16_t>m.seglen
            hdr.msg_control = c
            hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
            if plain[m.first].msg_hdr.msg_controllen:  # the datagrams' own source address cmsg (IP_PKTINFO)
                memcpy(<uint8_t*>c + hdr.msg_controllen, plain[m.first].msg_hdr.msg_control,
                       plain[m.first].msg_hdr.msg_controllen)
                hdr.msg_controllen += plain[m.first].msg_hdr.msg_controllen
        else:
            hdr.msg_control = plain[m.first].msg_hdr.msg_control
            hdr.msg_controllen = plain[m.first].msg_hdr.msg_controllen


cdef inline bint gso_refused(int err) noexcept nogil:
    """A segmented send failed because of segmentation itself (a device without checksum offload, a segment
    longer than the path MTU, a socket with SO_NO_CHECK): send plainly from then on."""
    return err == EIO or err == EINVAL or err == ENOPROTOOPT or err == EOPNOTSUPP


cdef inline bint gso_supported(int fd) noexcept nogil:
    """Whether the kernel knows UDP_SEGMENT on this socket (asked without setting a default segment size)."""
    cdef int value = 0
    cdef socklen_t n = sizeof(int)
    return getsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &value, &n) == 0
