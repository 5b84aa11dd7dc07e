"""Python wrappers over the VP8 payload-descriptor code in ``vp8.pxd`` so table tests run the C the Engine runs.

``parse_vp8(payload)`` returns the descriptor's fields; ``Vp8Forwarder`` is one consumer's munger: feed it the
payloads of one layer after another (``sync()`` at a switch, as the Engine does at the new layer's key frame) and
it returns each payload as the consumer's copy carries it, or ``None`` when the temporal cap drops it.
"""

from libc.stdint cimport uint8_t, uint16_t

from fastpath.keyframe cimport keyframe_vp8
from fastpath.vp8 cimport (
    VP8_TID_ALL,
    Vp8Desc,
    Vp8Munger,
    vp8_filter,
    vp8_munge,
    vp8_munger_init,
    vp8_munger_sync,
    vp8_parse,
    vp8_set_max_temporal,
    vp8_write,
)

TID_ALL = VP8_TID_ALL


def parse_vp8(const uint8_t[:] payload):
    """The descriptor of a VP8 RTP payload as a dict, or None when it is too short."""
    cdef Vp8Desc d
    if payload.shape[0] == 0 or not vp8_parse(&payload[0], 0, payload.shape[0], &d):
        return None
    return {"start": bool(d.start), "picture_id": d.pid if d.has_pid else None,
            "picture_id_bits": (15 if d.pid_long else 7) if d.has_pid else 0,
            "tl0picidx": d.tl0 if d.has_tl0 else None, "tid": d.tid if d.tid >= 0 else None,
            "layer_sync": bool(d.y)}


cdef class Vp8Forwarder:
    """One consumer's VP8 descriptor state: PictureID/TL0PICIDX continuity and the temporal cap."""

    cdef Vp8Munger _m

    def __cinit__(self):
        vp8_munger_init(&self._m)

    def sync(self) -> None:
        """The next payload starts another layer (the Engine calls this at a switch's key frame)."""
        vp8_munger_sync(&self._m)

    def set_max_temporal(self, int tid) -> None:
        """Forward temporal layers <= tid (-1: all)."""
        vp8_set_max_temporal(&self._m, tid)

    @property
    def max_temporal(self) -> int:
        return self._m.tid_max

    def forward(self, bytes payload):
        """The payload as the consumer's copy carries it, or None (above the temporal cap)."""
        cdef Vp8Desc d
        cdef uint16_t pid = 0
        cdef uint8_t tl0 = 0
        cdef bytearray out
        cdef const uint8_t* p = payload
        if not vp8_parse(p, 0, len(payload), &d):
            return payload
        if vp8_filter(&self._m, &d, 1 if keyframe_vp8(p, len(payload)) else 0):
            return None
        vp8_munge(&self._m, &d, &pid, &tl0)
        out = bytearray(payload)
        vp8_write(<uint8_t*>out, &d, pid, tl0)
        return bytes(out)
