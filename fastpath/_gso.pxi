# UDP GSO for the send arena (included by engine.pyx): the grouping is fastpath/gso.pxd's; this file sends the
# messages, counts each datagram on its transport and falls back to plain sends when the kernel refuses to segment.
# A refused message is resent datagram by datagram at once (nothing is lost). The cause may be that one message
# (a segment longer than its route's device MTU) or every message (a device without checksum offload, a socket with
# SO_NO_CHECK), so segmentation stays on until GSO_REFUSALS_OFF messages in a row have been refused.


cdef void gso_account(EngineState* e, int32_t i) noexcept nogil:
    cdef GsoMsg* m = &e.gso_arena.msg[i]
    cdef int32_t j
    for j in range(m.base, m.base + m.nseg):
        send_account(e, e.gso_arena.slot[j])
    e.tx_datagrams += m.nseg
    e.tx_messages += 1


cdef void gso_drop(EngineState* e, int32_t i) noexcept nogil:
    cdef GsoMsg* m = &e.gso_arena.msg[i]
    cdef int32_t j
    for j in range(m.base, m.base + m.nseg):
        e.transports[e.send_t[e.gso_arena.slot[j]]].drops[DROP_SEND_FAILED] += 1


cdef void gso_unsegmented(EngineState* e, int32_t i) noexcept nogil:
    """Send message i's datagrams one by one (after the kernel refused to segment)."""
    cdef GsoMsg* m = &e.gso_arena.msg[i]
    cdef int32_t j, k
    for j in range(m.base, m.base + m.nseg):
        k = e.gso_arena.slot[j]
        if sendmmsg(e.fd, &e.send_msgs[k], 1, MSG_DONTWAIT) == 1:
            send_account(e, k)
            e.tx_datagrams += 1
            e.tx_messages += 1
        else:
            e.transports[e.send_t[k]].drops[DROP_SEND_FAILED] += 1


cdef void gso_flush(EngineState* e) noexcept nogil:
    cdef GsoArena* g = &e.gso_arena
    cdef int32_t n_msgs = gso_group(g, e.send_t, e.send_iov, e.n_send)
    cdef int32_t i = 0, k, r
    if n_msgs == e.n_send:
        send_plain(e, 0)                      # nothing coalesced: no second set of headers needed
        return
    gso_layout(g, n_msgs, e.send_msgs, e.send_iov)
    while i < n_msgs:
        r = sendmmsg(e.fd, &g.msgs[i], n_msgs - i, MSG_DONTWAIT)
        if r > 0:
            for k in range(i, i + r):
                gso_account(e, k)
            i += r
            e.gso_refusals = 0
            continue
        if errno == EINTR:
            continue
        if errno == EAGAIN or errno == EWOULDBLOCK:
            while i < n_msgs:
                gso_drop(e, i)
                i += 1
            break
        if g.msg[i].nseg > 1 and gso_refused(errno):
            e.gso_errno = errno
            e.gso_refused += 1
            gso_unsegmented(e, i)
            i += 1
            e.gso_refusals += 1
            if e.gso_refusals >= GSO_REFUSALS_OFF:
                e.gso = 0
                while i < n_msgs:
                    gso_unsegmented(e, i)
                    i += 1
                break
            continue
        gso_drop(e, i)                        # a per-destination error: that message only
        i += 1
