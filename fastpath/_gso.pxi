# UDP segmentation offload for the send arena (included by engine.pyx; udp(7) UDP_SEGMENT, Linux 4.18+).
#
# A flush groups the queued datagrams by transport: consecutive datagrams of one transport with the same length
# (the last one may be shorter) become one sendmmsg message whose iovecs point at their send slots, with a
# UDP_SEGMENT cmsg giving the segment length. The kernel then walks its UDP/IP output path, routing and netfilter
# once per message instead of once per datagram, and splits the payload back into the same datagrams (in the
# NIC, or in software just before the device). A fan-out of one publisher's burst to many subscribers queues
# runs of equal-sized copies per subscriber, which is where this pays; lone datagrams go out unchanged.
# Each transport keeps its datagram order. A device that cannot segment (no checksum offload) answers EIO: the
# Engine then sends plainly from that message on and reports gso_errno.


cdef int32_t gso_group(EngineState* e) noexcept nogil:
    """Link the queued slots into messages; returns the number of messages."""
    cdef uint32_t gen = e.gso_gen + 1
    cdef uint32_t h
    cdef int32_t k, t_slot, length, n_msgs = 0
    cdef GsoMsg* m
    if gen == 0:
        memset(e.gso_tab_gen, 0, sizeof(e.gso_tab_gen))
        gen = 1
    e.gso_gen = gen
    for k in range(e.n_send):
        t_slot = e.send_t[k]
        length = <int32_t>e.send_iov[k].iov_len
        h = (<uint32_t>t_slot * <uint32_t>2654435761U) >> (32 - GSO_TABLE_BITS)
        while e.gso_tab_gen[h] == gen and e.gso_tab_key[h] != t_slot:
            h = (h + 1) & (GSO_TABLE - 1)
        e.gso_next[k] = -1
        if e.gso_tab_gen[h] == gen:
            m = &e.gso_msg[e.gso_tab_msg[h]]
            if (not m.closed and length <= m.seglen and m.nseg < GSO_MAX_SEGMENTS
                    and m.bytes + length <= GSO_MAX_BYTES):
                e.gso_next[m.last] = k
                m.last = k
                m.nseg += 1
                m.bytes += length
                if length < m.seglen:
                    m.closed = 1
                continue
        else:
            e.gso_tab_gen[h] = gen
            e.gso_tab_key[h] = t_slot
        e.gso_tab_msg[h] = n_msgs
        m = &e.gso_msg[n_msgs]
        m.first = k
        m.last = k
        m.nseg = 1
        m.seglen = length
        m.bytes = length
        m.closed = 0
        n_msgs += 1
    return n_msgs


cdef void gso_layout(EngineState* e, int32_t n_msgs) noexcept nogil:
    """Write each message's header, its iovecs (contiguous in gso_iov) and its UDP_SEGMENT cmsg."""
    cdef int32_t i, k, j = 0
    cdef GsoMsg* m
    cdef msghdr* hdr
    cdef cmsghdr* c
    for i in range(n_msgs):
        m = &e.gso_msg[i]
        m.base = j
        hdr = &e.gso_msgs[i].msg_hdr
        hdr.msg_name = e.send_msgs[m.first].msg_hdr.msg_name
        hdr.msg_namelen = sizeof(sockaddr_in)
        hdr.msg_iov = &e.gso_iov[j]
        hdr.msg_iovlen = m.nseg
        k = m.first
        while k >= 0:
            e.gso_iov[j] = e.send_iov[k]
            e.gso_slot[j] = k
            j += 1
            k = e.gso_next[k]
        if m.nseg > 1:
            c = <cmsghdr*>&e.gso_cmsg[i * GSO_CMSG_WORDS]
            c.cmsg_len = CMSG_LEN(sizeof(uint16_t))
            c.cmsg_level = IPPROTO_UDP
            c.cmsg_type = UDP_SEGMENT
            (<uint16_t*>CMSG_DATA(c))[0] = <uint16_t>m.seglen
            hdr.msg_control = c
            hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
        else:
            hdr.msg_control = NULL
            hdr.msg_controllen = 0


cdef void gso_account(EngineState* e, int32_t i) noexcept nogil:
    cdef GsoMsg* m = &e.gso_msg[i]
    cdef int32_t j
    for j in range(m.base, m.base + m.nseg):
        send_account(e, e.gso_slot[j])
    e.tx_datagrams += m.nseg
    e.tx_messages += 1


cdef void gso_drop(EngineState* e, int32_t i) noexcept nogil:
    cdef GsoMsg* m = &e.gso_msg[i]
    cdef int32_t j
    for j in range(m.base, m.base + m.nseg):
        e.transports[e.send_t[e.gso_slot[j]]].drops[DROP_SEND_FAILED] += 1


cdef void gso_unsegmented(EngineState* e, int32_t i) noexcept nogil:
    """Send message i's datagrams one by one (after the kernel refused to segment)."""
    cdef GsoMsg* m = &e.gso_msg[i]
    cdef int32_t j, k, r
    for j in range(m.base, m.base + m.nseg):
        k = e.gso_slot[j]
        r = sendmmsg(e.fd, &e.send_msgs[k], 1, MSG_DONTWAIT)
        if r == 1:
            send_account(e, k)
            e.tx_datagrams += 1
            e.tx_messages += 1
        else:
            e.transports[e.send_t[k]].drops[DROP_SEND_FAILED] += 1


cdef void gso_flush(EngineState* e) noexcept nogil:
    cdef int32_t n_msgs = gso_group(e)
    cdef int32_t i = 0, k, r
    if n_msgs == e.n_send:
        send_plain(e, 0)                      # nothing coalesced: no second set of headers needed
        return
    gso_layout(e, n_msgs)
    while i < n_msgs:
        r = sendmmsg(e.fd, &e.gso_msgs[i], n_msgs - i, MSG_DONTWAIT)
        if r > 0:
            for k in range(i, i + r):
                gso_account(e, k)
            i += r
            continue
        if errno == EINTR:
            continue
        if errno == EAGAIN or errno == EWOULDBLOCK:
            while i < n_msgs:
                gso_drop(e, i)
                i += 1
            break
        if e.gso_msg[i].nseg > 1 and (errno == EIO or errno == EINVAL or errno == ENOPROTOOPT
                                      or errno == EOPNOTSUPP):
            # The route's device cannot segment, or the kernel refuses this segment size: send plainly from now on.
            e.gso = 0
            e.gso_errno = errno
            while i < n_msgs:
                gso_unsegmented(e, i)
                i += 1
            break
        gso_drop(e, i)                        # a per-destination error: that message only
        i += 1
