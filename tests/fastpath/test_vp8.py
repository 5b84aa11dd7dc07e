"""Golden-packet tests of the VP8 payload descriptor rewriting (fastpath/vp8.pxd) through its Python wrappers, and
through the Engine: PictureID and TL0PICIDX stay continuous across simulcast switches (RFC 7741 4.2), temporal
layers above a consumer's cap are dropped with no sequence or PictureID gap, other payloads pass untouched."""

from __future__ import annotations

import struct

import pytest

import fastpath
from fastpath import Vp8Forwarder, parse_vp8
from tests import packets
from tests.fastpath.conftest import Rig

VP8 = 96
OUT_SSRC = 0x5555


def vp8(pid: int | None = None, *, bits: int = 15, tl0: int | None = None, tid: int | None = None,
        y: bool = False, start: bool = True, key: bool = False, body: bytes = b"\x42\x42") -> bytes:
    """A VP8 payload: descriptor (RFC 7741 4.2) with the fields given, then a payload header (P bit) and body."""
    ext = (0x80 if pid is not None else 0) | (0x40 if tl0 is not None else 0) | (0x20 if tid is not None else 0)
    out = bytes([(0x80 if ext else 0) | (0x10 if start else 0)])
    if ext:
        out += bytes([ext])
    if pid is not None:
        out += struct.pack("!H", 0x8000 | pid) if bits == 15 else bytes([pid & 0x7F])
    if tl0 is not None:
        out += bytes([tl0])
    if tid is not None:
        out += bytes([(tid << 6) | (0x20 if y else 0)])
    return out + bytes([0x00 if key else 0x01]) + body


def fields(payload: bytes | None) -> tuple | None:
    """(PictureID, its width, TL0PICIDX, TID) of a payload, None for a dropped one."""
    if payload is None:
        return None
    d = parse_vp8(payload)
    assert d is not None
    return d["picture_id"], d["picture_id_bits"], d["tl0picidx"], d["tid"]


def test_parse_reads_every_field() -> None:
    assert parse_vp8(vp8(300, tl0=7, tid=2, y=True)) == {
        "start": True, "picture_id": 300, "picture_id_bits": 15, "tl0picidx": 7, "tid": 2, "layer_sync": True}
    assert parse_vp8(vp8(5, bits=7, start=False))["picture_id_bits"] == 7
    assert parse_vp8(vp8())["picture_id"] is None
    assert parse_vp8(bytes([0x90, 0x80])) is None                # I set but no PictureID byte
    assert parse_vp8(bytes([0x90, 0x80, 0x81])) is None          # 15-bit PictureID cut short


# Each row: steps of ("sync",) (a layer switch: the next payload is the new layer's key frame), ("cap", tid) or
# ("pkt", payload); expected: the (PictureID, bits, TL0PICIDX, TID) each payload goes out with, None = dropped.
CASES = {
    "switch up: the high layer continues the low one's numbering": (
        [("pkt", vp8(100, tl0=5, tid=0, key=True)), ("pkt", vp8(101, tl0=6, tid=0)), ("sync",),
         ("pkt", vp8(9000, tl0=200, tid=0, key=True)), ("pkt", vp8(9000, tl0=200, tid=0, start=False)),
         ("pkt", vp8(9001, tl0=201, tid=0))],
        [(100, 15, 5, 0), (101, 15, 6, 0), (102, 15, 7, 0), (102, 15, 7, 0), (103, 15, 8, 0)]),
    "switch down: lower input numbers still go forward": (
        [("pkt", vp8(20000, tl0=90, key=True)), ("pkt", vp8(20001, tl0=90)), ("sync",),
         ("pkt", vp8(7, tl0=3, key=True)), ("pkt", vp8(8, tl0=4))],
        [(20000, 15, 90, None), (20001, 15, 90, None), (20002, 15, 91, None), (20003, 15, 92, None)]),
    "the 15-bit PictureID wraps after a switch": (
        [("pkt", vp8(32766, tl0=255, key=True)), ("pkt", vp8(32767, tl0=0)), ("sync",),
         ("pkt", vp8(500, tl0=40, key=True)), ("pkt", vp8(501, tl0=41))],
        [(32766, 15, 255, None), (32767, 15, 0, None), (0, 15, 1, None), (1, 15, 2, None)]),
    "the input's own wrap passes through with the offset": (
        [("pkt", vp8(10, key=True)), ("sync",), ("pkt", vp8(32767, key=True)), ("pkt", vp8(0)), ("pkt", vp8(1))],
        [(10, 15, None, None), (11, 15, None, None), (12, 15, None, None), (13, 15, None, None)]),
    "a 7-bit PictureID keeps its width and continues modulo 128": (
        [("pkt", vp8(300, key=True)), ("sync",), ("pkt", vp8(5, bits=7, key=True)), ("pkt", vp8(6, bits=7)),
         ("pkt", vp8(127, bits=7, start=False))],
        [(300, 15, None, None), (301 & 0x7F, 7, None, None), (302 & 0x7F, 7, None, None),
         ((301 + 122) & 0x7F, 7, None, None)]),
    "packets without a PictureID go out as they came": (
        [("pkt", vp8(key=True)), ("sync",), ("pkt", vp8(key=True)), ("pkt", vp8(tl0=9))],
        [(None, 0, None, None), (None, 0, None, None), (None, 0, 9, None)]),
    "temporal cap 0: pictures above it are dropped and closed up": (
        [("cap", 0), ("pkt", vp8(1, tl0=1, tid=0, key=True)), ("pkt", vp8(2, tl0=1, tid=2)),
         ("pkt", vp8(2, tl0=1, tid=2, start=False)), ("pkt", vp8(3, tl0=1, tid=1)), ("pkt", vp8(4, tl0=1, tid=2)),
         ("pkt", vp8(5, tl0=2, tid=0)), ("pkt", vp8(6, tl0=2, tid=2))],
        [(1, 15, 1, 0), None, None, None, None, (2, 15, 2, 0), None]),
    "temporal cap raised: the next layer joins at its layer-sync picture": (
        [("cap", 0), ("pkt", vp8(1, tl0=1, tid=0, key=True)), ("pkt", vp8(2, tl0=1, tid=1)), ("cap", -1),
         ("pkt", vp8(3, tl0=2, tid=0)), ("pkt", vp8(4, tl0=2, tid=1)), ("pkt", vp8(5, tl0=2, tid=1, y=True)),
         ("pkt", vp8(6, tl0=3, tid=0)), ("pkt", vp8(7, tl0=3, tid=1)), ("pkt", vp8(8, tl0=3, tid=2, y=True)),
         ("pkt", vp8(9, tl0=3, tid=2))],
        [(1, 15, 1, 0), None, (2, 15, 2, 0), None, (3, 15, 2, 1), (4, 15, 3, 0), (5, 15, 3, 1), (6, 15, 3, 2),
         (7, 15, 3, 2)]),
    "a key frame takes any temporal cap at once": (
        [("pkt", vp8(1, tl0=1, tid=0, key=True)), ("pkt", vp8(2, tl0=1, tid=1)), ("cap", 0), ("sync",),
         ("pkt", vp8(50, tl0=9, tid=0, key=True)), ("pkt", vp8(51, tl0=9, tid=1)), ("pkt", vp8(52, tl0=10, tid=0))],
        [(1, 15, 1, 0), (2, 15, 1, 1), (3, 15, 2, 0), None, (4, 15, 3, 0)]),
}


@pytest.mark.parametrize("steps,expected", CASES.values(), ids=CASES.keys())
def test_descriptor_rewriting(steps: list[tuple], expected: list) -> None:
    f = Vp8Forwarder()
    got = []
    for step in steps:
        if step[0] == "sync":
            f.sync()
        elif step[0] == "cap":
            f.set_max_temporal(step[1])
        else:
            out = f.forward(step[1])
            got.append(fields(out))
            if out is not None:
                assert len(out) == len(step[1]) and out[-3:] == step[1][-3:]   # nothing moved, body as sent
    assert got == expected


# ------------------------------------------------------------------------------------ through the Engine


def add_simulcast(rig: Rig, codec: int) -> None:
    e = rig.engine
    e.add_producer(10, 1, fastpath.KIND_VIDEO, b"v", [(b"lo", 0, 0), (b"hi", 0, 0)], [VP8], {}, 90000,
                   codecs={VP8: codec})
    e.add_consumer(20, 2, 10, OUT_SSRC, {VP8: 100}, True)


def send(rig: Rig, rid: bytes, ssrc: int, seq: int, payload: bytes) -> bytes:
    pkt = packets.rtp(VP8, seq, 1000 + seq * 3000, ssrc, payload, extensions=[(1, b"v"), (2, rid)])
    rig.pub.send_rtp(pkt)
    return pkt


def test_engine_keeps_picture_ids_continuous_across_a_switch_and_resends_them_as_sent(rig: Rig) -> None:
    add_simulcast(rig, fastpath.CODEC_VP8)
    e = rig.engine
    send(rig, b"lo", 0xA, 100, vp8(40, tl0=4, tid=0, key=True))
    send(rig, b"hi", 0xB, 5000, vp8(30000, tl0=100, tid=0, key=True))
    send(rig, b"hi", 0xB, 5001, vp8(30001, tl0=101, tid=0))
    rig.pump()
    e.set_consumer_layer(20, 0)
    send(rig, b"lo", 0xA, 101, vp8(41, tl0=5, tid=0))                 # not a key frame: filtered
    send(rig, b"lo", 0xA, 102, vp8(42, tl0=6, tid=0, key=True))       # the switch
    send(rig, b"lo", 0xA, 103, vp8(43, tl0=7, tid=0))
    rig.pump()
    got, _ = rig.sub.drain()
    assert [fields(p[-len(vp8(1, tl0=1, tid=0)):]) for p in got] == [
        (30000, 15, 100, 0), (30001, 15, 101, 0), (30002, 15, 102, 0), (30003, 15, 103, 0)]
    seqs = [struct.unpack("!H", p[2:4])[0] for p in got]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(4)]
    # A NACK for the switch's key frame gets it again with the PictureID it went out with.
    rig.sub.forget_received()
    rig.sub.send_rtcp(packets.rtcp_nack(0x9999, OUT_SSRC, [seqs[2]]))
    rig.pump()
    again, _ = rig.sub.drain()
    assert [fields(p[-len(vp8(1, tl0=1, tid=0)):]) for p in again] == [(30002, 15, 102, 0)]


def test_engine_drops_temporal_layers_above_the_cap_without_gaps(rig: Rig) -> None:
    add_simulcast(rig, fastpath.CODEC_VP8)
    e = rig.engine
    e.set_consumer_temporal(20, 0)
    tids = [0, 2, 1, 2, 0, 2, 1, 2, 0]
    for i, tid in enumerate(tids):
        send(rig, b"hi", 0xB, 7000 + i, vp8(200 + i, tl0=10 + i // 4, tid=tid, key=i == 0))
    rig.pump()
    got, _ = rig.sub.drain()
    assert [fields(p[-len(vp8(1, tl0=1, tid=0)):]) for p in got] == [(200, 15, 10, 0), (201, 15, 11, 0),
                                                                      (202, 15, 12, 0)]
    seqs = [struct.unpack("!H", p[2:4])[0] for p in got]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(3)]
    snap = e.snapshot_consumer(20)
    assert snap["drop_temporal_filtered"] == 6 and snap["temporal_layer"] == 0
    with pytest.raises(ValueError):
        e.set_consumer_temporal(20, 4)


def test_engine_counts_bytes_and_pictures_per_temporal_layer_of_each_encoding(rig: Rig) -> None:
    add_simulcast(rig, fastpath.CODEC_VP8)
    tids = [0, 2, 1, 2, 0, 2, 1, 2]
    sent = [send(rig, b"hi", 0xB, 7000 + i, vp8(200 + i, tl0=10 + i // 4, tid=tid, key=i == 0))
            for i, tid in enumerate(tids)]
    more = send(rig, b"hi", 0xB, 7008, vp8(207, tl0=11, tid=2, start=False))  # the same picture's second packet
    rig.pump()
    layers = rig.engine.snapshot_producer(10)["layers"]
    assert layers[0]["temporal_pictures"] == [0, 0, 0, 0]
    assert layers[1]["temporal_pictures"] == [2, 2, 4, 0]
    by_tid = [sum(len(p) for p, t in zip(sent, tids, strict=True) if t == k) for k in range(4)]
    by_tid[2] += len(more)  # both packets of the last picture
    assert layers[1]["temporal_bytes"] == by_tid


def test_engine_leaves_other_codecs_payloads_untouched(rig: Rig) -> None:
    """A producer whose PT is not declared VP8 (no key-frame peek either, so the switch happens on the first packet)
    gets no descriptor rewriting and no temporal filtering, even of VP8-looking bytes."""
    add_simulcast(rig, fastpath.CODEC_UNKNOWN)
    e = rig.engine
    e.set_consumer_temporal(20, 0)
    send(rig, b"lo", 0xA, 99, vp8(39, tl0=3, tid=0, key=True))       # the low layer is live (not forwarded yet)
    sent = [send(rig, b"hi", 0xB, 5000, vp8(30000, tl0=100, tid=2, key=True))]
    rig.pump()
    e.set_consumer_layer(20, 0)
    sent.append(send(rig, b"lo", 0xA, 100, vp8(40, tl0=4, tid=1, key=True)))
    rig.pump()
    got, _ = rig.sub.drain()
    assert [g[-len(vp8(1, tl0=1, tid=0)):] for g in got] == [s[-len(vp8(1, tl0=1, tid=0)):] for s in sent]


def test_engine_congestion_downswitch_stops_the_current_layer_at_once(rig: Rig) -> None:
    """lower_consumer_layer (the allocator's lowering): the layer that does not fit stops before the target's key
    frame arrives and its NACKed packets are not resent; the key frame then switches with no sequence gap. A plain
    set_consumer_layer keeps the current layer until the switch (test_engine's simulcast test)."""
    add_simulcast(rig, fastpath.CODEC_VP8)
    e = rig.engine
    send(rig, b"lo", 0xA, 100, vp8(40, tl0=4, tid=0, key=True))
    send(rig, b"hi", 0xB, 5000, vp8(30000, tl0=100, tid=0, key=True))
    rig.pump()
    e.lower_consumer_layer(20, 0)
    assert e.snapshot_consumer(20)["draining"] == 1
    send(rig, b"hi", 0xB, 5001, vp8(30001, tl0=101, tid=0))        # held back: the link cannot carry it
    rig.pump()
    got, _ = rig.sub.drain()
    assert [fields(p[-len(vp8(1, tl0=1, tid=0)):]) for p in got] == [(30000, 15, 100, 0)]
    rig.sub.forget_received()
    rig.sub.send_rtcp(packets.rtcp_nack(0x9999, OUT_SSRC, [struct.unpack("!H", got[0][2:4])[0]]))
    send(rig, b"lo", 0xA, 101, vp8(41, tl0=5, tid=0, key=True))     # the switch
    rig.pump()
    after, _ = rig.sub.drain()
    assert [fields(p[-len(vp8(1, tl0=1, tid=0)):]) for p in after] == [(30001, 15, 101, 0)]
    assert struct.unpack("!H", after[0][2:4])[0] == (struct.unpack("!H", got[0][2:4])[0] + 1) & 0xFFFF
    snap = e.snapshot_consumer(20)
    assert snap["draining"] == 0 and snap["current_layer"] == 0 and snap["retransmits"] == 0
    assert snap["drop_layer_filtered"] >= 2 and snap["drop_nack_other_layer"] == 1  # lo before, hi 5001; the NACK


def test_engine_plain_layer_change_never_drains(rig: Rig) -> None:
    add_simulcast(rig, fastpath.CODEC_VP8)
    e = rig.engine
    send(rig, b"lo", 0xA, 100, vp8(40, tl0=4, tid=0, key=True))
    send(rig, b"hi", 0xB, 5000, vp8(30000, tl0=100, tid=0, key=True))
    rig.pump()
    e.set_consumer_layer(20, 0)
    e.lower_consumer_layer(20, 1)                                   # not below the current layer: nothing held
    send(rig, b"hi", 0xB, 5001, vp8(30001, tl0=101, tid=0))
    rig.pump()
    got, _ = rig.sub.drain()
    assert len(got) == 2 and e.snapshot_consumer(20)["draining"] == 0
