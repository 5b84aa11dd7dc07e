"""Python face of the RTCP compound walker in ``rtcp.pxd`` (RFC 3550, RFC 4585, RFC 5104).

``parse_rtcp`` returns every packet of a compound as a dict and raises ``ValueError("rtcp: ...")`` with the
same reason the Engine counts when it drops a malformed compound.
"""

from libc.stdint cimport int32_t, uint8_t

from fastpath.rtcp cimport RTCP_OK, RtcpItem, rtcp_next
from fastpath.rtp cimport rd16, rd32

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
