"""Fuzz target: the Engine's receive path (fastpath/engine.pyx ``pump``: RFC 7983 demux, SRTP/SRTCP unprotect, RTP
header and extension parsing, routing, RTCP feedback toward consumers), with unauthenticated and SRTP-authenticated
input.

A real Engine on a loopback socket serves a publisher (simulcast VP8 with RTX and RID, opus; transport-cc) and a
subscriber consuming both with NACK and RTX. The first input byte picks how the rest arrives: 0 as it is from the
publisher's bound tuple, 1 SRTP-protected as the publisher's RTP (version bits set; the SSRC one of the
publisher's when its first byte is below 0x80), 2 SRTCP-protected from the publisher, 3 SRTCP-protected from the
subscriber (its NACK, PLI, TWCC, REMB reach the consumer side), 4 as it is from an unknown address, 5 as 1 but
with a sequence number just after the SSRC's last one (so that SRTP's replay window lets it in). Every 16
inputs the Engine ticks (RTCP, NACK, TWCC feedback, expiry).
Invariant: ``pump``, ``tick`` and ``poll_events`` never raise (the Engine counts what it drops) and the process
does not crash; the Engine's transports, producers and consumers are unchanged.
"""

from __future__ import annotations

import os
import socket
import struct

import fastpath
from tests import packets

PROFILE = fastpath.PROFILE_AES128_CM_SHA1_80
VIDEO_SSRCS = (0x1111, 0x2222, 0x3333)
RTX_SSRCS = (0x1112, 0x2223, 0x3334)
AUDIO_SSRC = 0x4444
OUT_SSRCS = (0x5555, 0x6666)
ID_MID, ID_RID, ID_RRID, ID_LEVEL, ID_TWCC = 1, 2, 3, 4, 5


class _Rig:
    def __init__(self) -> None:
        self.sock = _udp()
        self.engine = fastpath.Engine(self.sock.fileno())
        self.pub, self.sub, self.stranger = _udp(), _udp(), _udp()
        self.dest = self.sock.getsockname()
        key_len = fastpath.KEY_LENGTHS[PROFILE]
        pub_key, sub_key, engine_key = os.urandom(key_len), os.urandom(key_len), os.urandom(key_len)
        for handle, peer, key in ((1, self.pub, pub_key), (2, self.sub, sub_key)):
            self.engine.add_transport(handle)
            self.engine.bind_tuple(handle, *peer.getsockname())
            self.engine.set_srtp(handle, PROFILE, engine_key, key)
        ids = bytearray(256)
        for i in (ID_MID, ID_RID, ID_RRID, ID_LEVEL, ID_TWCC):
            ids[i] = i
        self.engine.set_extension_map(1, ID_MID, ID_RID, ID_RRID, ID_LEVEL, bytes(ids), twcc_id=ID_TWCC)
        self.engine.set_transport_cc(2, ID_TWCC)
        encodings = [(rid, ssrc, rtx) for rid, ssrc, rtx in zip((b"q", b"h", b"f"), VIDEO_SSRCS, RTX_SSRCS,
                                                                strict=True)]
        self.engine.add_producer(1, 1, fastpath.KIND_VIDEO, b"1", encodings, [96, 97], {97: 96}, 90000,
                                 codecs={96: fastpath.CODEC_VP8})
        self.engine.add_producer(2, 1, fastpath.KIND_AUDIO, b"0", [(b"", AUDIO_SSRC, 0)], [111], {}, 48000,
                                 codecs={111: fastpath.CODEC_OPUS})
        self.engine.add_consumer(1, 2, 1, OUT_SSRCS[0], {96: 96}, True, rtx_ssrc=0x7777, rtx_pt_map={96: 97})
        self.engine.add_consumer(2, 2, 2, OUT_SSRCS[1], {111: 111}, False)
        self.pub_rtp = fastpath.SrtpContext(PROFILE, pub_key, True)
        self.pub_rtcp = fastpath.SrtpContext(PROFILE, pub_key, True)
        self.sub_rtcp = fastpath.SrtpContext(PROFILE, sub_key, True)
        self.inputs = 0
        self.seq: dict[bytes, int] = {}
        self.now_ms = 1_000_000

    def feed(self, data: bytes) -> None:
        mode, body = (data[0] % 6, data[1:]) if data else (0, b"")
        sender = self.pub
        if mode in (1, 5) and len(body) >= 12:
            head = bytearray(body[:12])
            head[0] = 0x80 | (head[0] & 0x3F)
            if head[8] < 0x80:
                head[8:12] = struct.pack("!I", (*VIDEO_SSRCS, *RTX_SSRCS, AUDIO_SSRC)[head[8] % 7])
            if mode == 5:  # a sequence number SRTP's replay window accepts: the last one plus 1 to 4
                ssrc = bytes(head[8:12])
                self.seq[ssrc] = (self.seq.get(ssrc, 1000) + 1 + head[3] % 4) & 0xFFFF
                head[2:4] = struct.pack("!H", self.seq[ssrc])
            body = _protect(self.pub_rtp.protect, bytes(head) + body[12:])
        elif mode in (2, 3) and len(body) >= 8:
            body = bytes([0x80 | (body[0] & 0x3F), 200 + body[1] % 7]) + body[2:]
            body = _protect((self.pub_rtcp if mode == 2 else self.sub_rtcp).protect_rtcp, body)
            sender = self.pub if mode == 2 else self.sub
        elif mode == 4:
            sender = self.stranger
        if body:
            sender.sendto(body, self.dest)
        self.engine.pump()
        self.inputs += 1
        if self.inputs % 16 == 0:
            self.now_ms += 37
            self.engine.tick(self.now_ms)
            self.engine.poll_events()
            for peer in (self.pub, self.sub, self.stranger):
                _drain(peer)
        snapshot = self.engine.snapshot_engine()
        assert (snapshot["transports"], snapshot["producers"], snapshot["consumers"]) == (2, 2, 2), snapshot


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def _protect(protect, data: bytes) -> bytes:  # noqa: ANN001 - an SrtpContext method
    try:
        return protect(data)
    except ValueError:
        return data  # libsrtp refused to protect it (too short, replay of the same seq): send it as it is


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return


_rig: _Rig | None = None


def setup() -> None:
    global _rig
    if _rig is None:
        _rig = _Rig()


def seeds() -> list[bytes]:
    def ext(mid: bytes, rid: bytes) -> list[tuple[int, bytes]]:
        return [(ID_MID, mid), (ID_RID, rid), (ID_TWCC, b"\x00\x07")]

    vp8 = packets.rtp(96, 100, 3000, VIDEO_SSRCS[2], packets.vp8_payload(True), extensions=ext(b"1", b"f"))
    rtx = packets.rtp(97, 7, 3000, RTX_SSRCS[0], packets.rtx_payload(100, packets.vp8_payload(False)),
                      extensions=[(ID_MID, b"1"), (ID_RRID, b"q")])
    opus = packets.rtp(111, 5, 960, AUDIO_SSRC, b"\xf8" * 40, extensions=[(ID_LEVEL, b"\x10")])
    sr = packets.rtcp_sr(VIDEO_SSRCS[2], 1, 2, 3000, 10, 1000) + packets.rtcp_sdes(VIDEO_SSRCS[2], b"cname")
    feedback = (packets.rtcp_rr(0x9999, [(OUT_SSRCS[0], 0, 0, 100, 0, 0, 0)])
                + packets.rtcp_nack(0x9999, OUT_SSRCS[0], [1, 2, 5]) + packets.rtcp_pli(0x9999, OUT_SSRCS[0])
                + packets.rtcp_fir(0x9999, OUT_SSRCS[0], 3))
    stun = bytes.fromhex("000100002112a442") + bytes(12)
    dtls = bytes.fromhex("16fefd") + bytes(10)
    return [b"\x00" + vp8, b"\x01" + vp8, b"\x05" + vp8, b"\x05" + rtx, b"\x05" + opus, b"\x01" + rtx,
            b"\x01" + opus, b"\x02" + sr, b"\x03" + feedback,
            b"\x04" + stun, b"\x00" + dtls, b"\x00" + bytes([0x80, 0xC8]) + bytes(30)]


def check(data: bytes) -> None:
    setup()
    assert _rig is not None
    _rig.feed(data)


def close() -> None:
    global _rig
    if _rig is not None:
        for sock in (_rig.sock, _rig.pub, _rig.sub, _rig.stranger):
            sock.close()
        _rig = None
