# Key-frame peeks into the first bytes of a video RTP payload (docs/FORWARDING.md, Key frames):
# VP8 RFC 7741, VP9 RFC 9628, H.264 RFC 6184 (SPS as the marker, as mediasoup and LiveKit do), AV1 RTP spec
# (aggregation header N bit + sequence header OBU). Only reads inside [payload, payload + length).
from libc.stdint cimport int32_t, uint8_t

cdef enum Codec:
    CODEC_UNKNOWN = 0
    CODEC_OPUS = 1
    CODEC_VP8 = 2
    CODEC_VP9 = 3
    CODEC_H264 = 4
    CODEC_AV1 = 5


cdef inline bint keyframe_vp8(const uint8_t* p, int32_t n) noexcept nogil:
    cdef int32_t off = 1
    cdef uint8_t x
    if n < 1:
        return False
    # S (start of partition) set and partition index 0.
    if not (p[0] & 0x10) or (p[0] & 0x07) != 0:
        return False
    if p[0] & 0x80:
        if n < 2:
            return False
        x = p[1]
        off = 2
        if x & 0x80:                      # I: picture id, 7 or 15 bits (M)
            if off >= n:
                return False
            off += 2 if (p[off] & 0x80) else 1
        if x & 0x40:                      # L: TL0PICIDX
            off += 1
        if x & 0x30:                      # T or K: TID/Y/KEYIDX byte
            off += 1
    if off >= n:
        return False
    return (p[off] & 0x01) == 0           # VP8 payload header P bit: 0 = key frame


cdef inline bint keyframe_vp9(const uint8_t* p, int32_t n) noexcept nogil:
    cdef int32_t off = 1
    cdef uint8_t sid = 0
    if n < 1:
        return False
    if p[0] & 0x40:                       # P: inter-picture predicted
        return False
    if not (p[0] & 0x08):                 # B: start of a layer frame
        return False
    if p[0] & 0x80:                       # I: picture id
        if off >= n:
            return False
        off += 2 if (p[off] & 0x80) else 1
    if p[0] & 0x20:                       # L: layer indices
        if off >= n:
            return False
        sid = (p[off] >> 1) & 0x07
    return sid == 0


cdef inline bint keyframe_h264(const uint8_t* p, int32_t n) noexcept nogil:
    cdef uint8_t nal
    cdef int32_t off, size
    if n < 1:
        return False
    nal = p[0] & 0x1F
    if nal == 7:
        return True
    if nal == 24:                         # STAP-A: 16-bit size before each NAL unit
        off = 1
        while off + 2 < n:
            size = (<int32_t>p[off] << 8) | p[off + 1]
            off += 2
            if size == 0 or off + size > n:
                return False
            if (p[off] & 0x1F) == 7:
                return True
            off += size
        return False
    if nal == 28 or nal == 29:            # FU-A/FU-B: start bit and inner type
        return n >= 2 and (p[1] & 0x80) != 0 and (p[1] & 0x1F) == 7
    return False


cdef inline bint keyframe_av1(const uint8_t* p, int32_t n) noexcept nogil:
    cdef int32_t off = 1
    cdef int32_t shift = 0
    cdef uint8_t w
    if n < 2:
        return False
    # Z = 0 (first OBU is not a continuation) and N = 1 (first packet of a coded video sequence).
    if (p[0] & 0x80) or not (p[0] & 0x08):
        return False
    w = (p[0] >> 4) & 0x03
    if w != 1:                            # the first element carries a LEB128 length
        while off < n and (p[off] & 0x80):
            off += 1
            shift += 7
            if shift > 28:
                return False
        off += 1
    if off >= n:
        return False
    return ((p[off] >> 3) & 0x0F) == 1    # OBU_SEQUENCE_HEADER


cdef inline int keyframe_detect(uint8_t codec, const uint8_t* payload, int32_t n) noexcept nogil:
    """1 = key frame, 0 = not, -1 = codec without key-frame detection."""
    if codec == CODEC_VP8:
        return keyframe_vp8(payload, n)
    if codec == CODEC_VP9:
        return keyframe_vp9(payload, n)
    if codec == CODEC_H264:
        return keyframe_h264(payload, n)
    if codec == CODEC_AV1:
        return keyframe_av1(payload, n)
    return -1
