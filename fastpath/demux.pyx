"""Python face of the RFC 7983 first-byte demultiplexer used by ``Engine.pump()`` (tests and tools)."""

from libc.stdint cimport uint8_t

from fastpath.demux cimport demux_classify

KIND_NAMES = ("unknown", "stun", "dtls", "rtp", "rtcp")


def classify(const uint8_t[:] data) -> str:
    """Return "stun", "dtls", "rtp", "rtcp" or "unknown" for one datagram, exactly as the Engine decides."""
    cdef Py_ssize_t n = data.shape[0]
    if n == 0:
        return "unknown"
    return KIND_NAMES[<int>demux_classify(&data[0], n)]
