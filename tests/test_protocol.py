"""router/protocol.py: envelopes round-trip msgpack; bad frames raise ProtocolError with a reason."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

import msgpack
import pytest

from router.messages import (
    ConnectRequest,
    CreateWebRtcTransportReply,
    OpenDataChannelRequest,
    ProduceRequest,
    RtpExtensions,
    SendDataRequest,
)
from router.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Body,
    Empty,
    Event,
    Method,
    Notification,
    ProtocolError,
    Request,
    Response,
    WorkerDump,
    WorkerHeartbeat,
    WorkerRunning,
    _parse_fast,
    decode,
    encode,
)


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_request_round_trips_as_the_seam_array() -> None:
    request = Request(7, "transport.connect", "t1", {"dtls": {"role": "client"}, "raw": b"\x00\x01"})
    frame = encode(request)
    assert msgpack.unpackb(frame, raw=False) == [0, 7, "transport.connect", "t1",
                                                 {"dtls": {"role": "client"}, "raw": b"\x00\x01"}]
    assert decode(frame) == request


def test_ok_response_round_trips() -> None:
    response = Response(7, True, {"ice": {"ufrag": "u"}})
    assert msgpack.unpackb(encode(response), raw=False) == [1, 7, True, {"ice": {"ufrag": "u"}}]
    assert decode(encode(response)) == response
    assert response.error is None and response.reason is None


def test_false_response_round_trips_with_error_and_reason() -> None:
    response = Response.failure(9, "InvalidState", "transport t1 is closed")
    assert msgpack.unpackb(encode(response), raw=False) == [
        1, 9, False, {"error": "InvalidState", "reason": "transport t1 is closed"}]
    decoded = decode(encode(response))
    assert decoded == response
    assert isinstance(decoded, Response)
    assert (decoded.error, decoded.reason) == ("InvalidState", "transport t1 is closed")


def test_notification_round_trips() -> None:
    note = Notification("transport.dtls_state", "t1", {"state": "connected"})
    wire = msgpack.unpackb(encode(note), raw=False)
    assert wire == [2, "transport.dtls_state", "t1", {"state": "connected"}]
    assert decode(encode(note)) == note


@pytest.mark.parametrize(("frame", "reason"), [
    (b"", "empty frame"),
    (b"\xc1", None),
    (pack({"a": 1}), "envelope must be an array, not dict"),
    (pack([]), "envelope is empty"),
    (pack([3, 1, "a.b", "", {}]), "unknown envelope kind 3"),
    (pack([True, 1, "a.b", "", {}]), "unknown envelope kind True"),
    (pack([0, 1, "worker.dump", ""]), "request must have 5 elements, not 4"),
    (pack([0, -1, "worker.dump", "", {}]), "id -1 out of range"),
    (pack([0, "1", "worker.dump", "", {}]), "id must be an integer, not str"),
    (pack([0, True, "worker.dump", "", {}]), "id must be an integer, not bool"),
    (pack([0, 1, "WorkerDump", "", {}]), "method must be an 'entity.verb' string, not 'WorkerDump'"),
    (pack([0, 1, 5, "", {}]), "method must be an 'entity.verb' string, not 5"),
    (pack([0, 1, ["worker.dump"], "", {}]), "method must be an 'entity.verb' string, not ['worker.dump']"),
    (pack([0, 1, "worker.dump", 3, {}]), "target id must be a string, not int"),
    (pack([0, 1, "worker.dump", "", [1]]), "body must be a map, not list"),
    (pack([0, 1, "worker.dump", "", {b"k": 1}]), "body keys must be strings, not bytes"),
    (pack([1, 1, 1, {}]), "response ok flag must be a boolean, not int"),
    (pack([1, 1, False, {}]), "false response without an error name"),
    (pack([1, 1, False, {"error": "E", "reason": 3}]), "false response reason must be a string"),
    (pack([1, 1, True]), "response must have 4 elements, not 3"),
    (pack([2, "worker.heartbeat", "", {}, 1]), "notification must have 4 elements, not 5"),
    (pack([2, "heartbeat", "", {}]), "event must be an 'entity.event' string, not 'heartbeat'"),
    (pack([2, "worker.heartbeat", "", {}]) + b"\x00", "trailing bytes after the envelope"),
])
def test_malformed_frames_raise_protocol_error_with_reason(frame: bytes, reason: str | None) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(frame)
    if reason is not None:
        assert info.value.reason == reason
    else:
        assert info.value.reason.startswith("not msgpack: ")


def test_oversized_frame_is_rejected_before_unpacking() -> None:
    frame = b"\x00" * (MAX_FRAME_BYTES + 1)
    with pytest.raises(ProtocolError) as info:
        decode(frame)
    assert info.value.reason == f"frame of {MAX_FRAME_BYTES + 1} bytes exceeds {MAX_FRAME_BYTES}"


def test_truncated_frame_is_rejected() -> None:
    frame = encode(Request(1, "worker.dump", "", {"a": "long string value"}))
    with pytest.raises(ProtocolError, match="^not msgpack: "):
        decode(frame[:-4])


def test_encode_refuses_an_invalid_envelope() -> None:
    with pytest.raises(ProtocolError, match="method must be an 'entity.verb' string, not 'dump'"):
        encode(Request(1, "dump", "", {}))
    with pytest.raises(ProtocolError, match="false response without an error name"):
        encode(Response(1, False, {}))


def test_methods_and_events_are_the_seam_lists() -> None:
    assert {m.value for m in Method} == {
        "worker.dump", "worker.close",
        "media_router.create", "media_router.close", "media_router.create_webrtc_transport",
        "media_router.produce_pipe",
        "transport.connect", "transport.restart_ice", "transport.close", "transport.get_stats",
        "transport.produce", "transport.consume", "transport.produce_data", "transport.consume_data",
        "transport.open_data_channel", "transport.send_data",
        "producer.pause", "producer.resume", "producer.close", "producer.pipe", "producer.unpipe",
        "consumer.pause", "consumer.resume", "consumer.close", "consumer.set_preferred_layers",
        "consumer.request_key_frame", "data_producer.close", "data_consumer.close",
    }
    assert {e.value for e in Event} == {
        "worker.running", "worker.heartbeat",
        "transport.ice_state", "transport.dtls_state", "transport.sctp_state", "transport.tuple_changed",
        "transport.scores", "producer.stream_added", "consumer.layers_changed", "consumer.producer_closed",
        "consumer.stream_state",
        "data_producer.message",
    }
    # Every name is valid on the wire.
    for name in [*Method, *Event]:
        assert decode(encode(Notification(str(name), "", {}))).event == name


def test_worker_running_body_round_trips_through_msgpack() -> None:
    body = WorkerRunning(pid=42, core=1, udp_port=7883, protocol_version=PROTOCOL_VERSION, rcvbuf=8388608,
                         sndbuf=425984)
    wire = decode(encode(Notification(Event.WORKER_RUNNING, "", body.to_wire())))
    assert isinstance(wire, Notification)
    assert WorkerRunning.from_wire(wire.body) == body


def test_heartbeat_body_accepts_an_integer_lag_and_keeps_counters() -> None:
    beat = WorkerHeartbeat.from_wire({"seq": 3, "loop_lag_ms": 2, "counters": {"pps": 10}, "future": 1})
    assert beat == WorkerHeartbeat(seq=3, loop_lag_ms=2.0, counters={"pps": 10})
    assert WorkerHeartbeat.from_wire({"seq": 1, "loop_lag_ms": 0.5}).counters == {}


def test_dump_and_empty_bodies_round_trip() -> None:
    dump = WorkerDump(worker_id=1, pid=2, core=0, udp_port=7882)
    assert WorkerDump.from_wire(dump.to_wire()) == dump
    assert Empty.from_wire({}).to_wire() == {}


@pytest.mark.parametrize(("body", "reason"), [
    ({"pid": 1, "core": 0, "udp_port": 1, "protocol_version": 1, "rcvbuf": 1},
     "WorkerRunning: missing field 'sndbuf'"),
    ({"pid": "1", "core": 0, "udp_port": 1, "protocol_version": 1, "rcvbuf": 1, "sndbuf": 1},
     "WorkerRunning: field 'pid' must be int, not str"),
    ({"pid": True, "core": 0, "udp_port": 1, "protocol_version": 1, "rcvbuf": 1, "sndbuf": 1},
     "WorkerRunning: field 'pid' must be int, not bool"),
    ([1, 2], "WorkerRunning body must be a map, not list"),
])
def test_bad_worker_running_bodies_raise(body: object, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        WorkerRunning.from_wire(body)
    assert info.value.reason == reason


def test_bad_heartbeat_counters_raise() -> None:
    with pytest.raises(ProtocolError, match="WorkerHeartbeat: field 'counters' must be dict, not list"):
        WorkerHeartbeat.from_wire({"seq": 1, "loop_lag_ms": 1.0, "counters": []})


def test_random_and_mutated_frames_only_ever_raise_protocol_error() -> None:
    rng = random.Random(1234)
    seeds = [encode(Request(5, "transport.connect", "t", {"a": [1, 2.5, "x", b"y", None, {"b": True}]})),
             encode(Response.failure(5, "E", "r")),
             encode(Notification("worker.heartbeat", "", {"seq": 1}))]
    for i in range(3000):
        if i % 2:
            frame = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        else:
            frame = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
            frame = bytes(frame[: rng.randrange(1, len(frame) + 1)])
        try:
            envelope = decode(frame)
        except ProtocolError:
            continue
        assert isinstance(envelope, Request | Response | Notification)


# ------------------------------------------------------------------------------- body type checking


@dataclass(frozen=True, slots=True)
class Inner(Body):
    n: int

    def problem(self) -> tuple[str, str] | None:
        return ("n", f"must be even, not {self.n}") if self.n % 2 else None


@dataclass(frozen=True, slots=True)
class Sample(Body):
    pairs: list[tuple[int, str]]
    maybe: int | None = None
    blob: bytes | str = b""
    inner: Inner | None = None
    mode: Literal["a", "b"] = "a"
    ratio: float = 0.0
    flag: bool = False
    counts: dict[str, int] = field(default_factory=dict)


GOOD_SAMPLES = [
    ({"pairs": []}, Sample(pairs=[])),
    ({"pairs": [[1, "x"], [2, "y"]], "maybe": 3, "blob": "s", "inner": {"n": 2}, "mode": "b", "ratio": 1,
      "flag": True, "counts": {"a": 1}, "newer_field": [1]},
     Sample(pairs=[(1, "x"), (2, "y")], maybe=3, blob="s", inner=Inner(2), mode="b", ratio=1.0, flag=True,
            counts={"a": 1})),
    ({"pairs": [], "maybe": None, "inner": None, "blob": b"\x00"}, Sample(pairs=[], blob=b"\x00")),
]


@pytest.mark.parametrize(("wire", "body"), GOOD_SAMPLES)
def test_good_bodies_parse_into_typed_values(wire: dict[str, object], body: Sample) -> None:
    parsed = Sample.from_wire(wire)
    assert parsed == body
    assert all(isinstance(pair, tuple) for pair in parsed.pairs)
    assert Sample.from_wire(decode(encode(Notification("a.b", "", parsed.to_wire()))).body) == parsed  # type: ignore[union-attr]


BAD_SAMPLES = [
    ({}, "Sample: missing field 'pairs'"),
    ({"pairs": {}}, "Sample: field 'pairs' must be list, not dict"),
    ({"pairs": [7]}, "Sample: field 'pairs[0]' must be an array of 2, not int"),
    ({"pairs": [[1]]}, "Sample: field 'pairs[0]' must be an array of 2, not an array of 1"),
    ({"pairs": [[1, "x"], [1, 2]]}, "Sample: field 'pairs[1][1]' must be str, not int"),
    ({"pairs": [["1", "x"]]}, "Sample: field 'pairs[0][0]' must be int, not str"),
    ({"pairs": [], "maybe": "3"}, "Sample: field 'maybe' must be int or None, not str"),
    ({"pairs": [], "maybe": True}, "Sample: field 'maybe' must be int or None, not bool"),
    ({"pairs": [], "blob": 5}, "Sample: field 'blob' must be bytes or str, not int"),
    ({"pairs": [], "inner": []}, "Sample: field 'inner' must be a map, not list"),
    ({"pairs": [], "inner": {}}, "Sample: missing field 'inner.n'"),
    ({"pairs": [], "inner": {"n": "2"}}, "Sample: field 'inner.n' must be int, not str"),
    ({"pairs": [], "inner": {"n": 3}}, "Sample: field 'inner.n' must be even, not 3"),
    ({"pairs": [], "mode": "c"}, "Sample: field 'mode' must be one of 'a', 'b', not 'c'"),
    ({"pairs": [], "mode": ["a"]}, "Sample: field 'mode' must be one of 'a', 'b', not ['a']"),
    ({"pairs": [], "mode": b"a"}, "Sample: field 'mode' must be one of 'a', 'b', not b'a'"),
    ({"pairs": [], "ratio": "1"}, "Sample: field 'ratio' must be float, not str"),
    ({"pairs": [], "flag": 1}, "Sample: field 'flag' must be bool, not int"),
    ({"pairs": [], "counts": {"a": "x"}}, "Sample: field 'counts.a' must be int, not str"),
    ({"pairs": [], "counts": {1: 2}}, "Sample: field 'counts' keys must be str, not int"),
    ("pairs", "Sample body must be a map, not str"),
]


@pytest.mark.parametrize(("wire", "reason"), BAD_SAMPLES)
def test_bad_bodies_raise_one_reason_naming_the_field(wire: object, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        Sample.from_wire(wire)
    assert info.value.reason == reason



@pytest.mark.parametrize(("wire", "body"), GOOD_SAMPLES)
def test_the_fast_path_decides_good_bodies_alone(wire: dict[str, object], body: Sample) -> None:
    # from_wire's shortcut (a checker per field, built once) gives what the field-by-field walk gives
    assert _parse_fast(Sample, wire) == body
    assert all(isinstance(pair, tuple) for pair in _parse_fast(Sample, wire).pairs)


@pytest.mark.parametrize(("wire", "reason"), BAD_SAMPLES)
def test_the_fast_path_never_accepts_a_bad_body(wire: object, reason: str) -> None:
    # it refuses (leaving the reason to the walk) whatever the walk refuses
    with pytest.raises(ProtocolError):
        _parse_fast(Sample, wire)

GOOD_EXTENSIONS = {"id_map": bytes(256), "mid_id": 1}
GOOD_PRODUCE = {"producer_id": "p", "kind": "video", "encodings": [["", 1111, 0]], "payload_types": [96],
                "clock_rate": 90000, "extensions": GOOD_EXTENSIONS}


@pytest.mark.parametrize(("body_type", "wire", "reason"), [
    (ProduceRequest, {**GOOD_PRODUCE, "extensions": {**GOOD_EXTENSIONS, "id_map": b"abc"}},
     "ProduceRequest: field 'extensions.id_map' must be 256 bytes, not 3"),
    (ProduceRequest, {**GOOD_PRODUCE, "encodings": []},
     "ProduceRequest: field 'encodings' must hold at least one encoding"),
    (ProduceRequest, {**GOOD_PRODUCE, "kind": "data"},
     "ProduceRequest: field 'kind' must be one of 'audio', 'video', not 'data'"),
    (ProduceRequest, {**GOOD_PRODUCE, "encodings": [["", "1111", 0]]},
     "ProduceRequest: field 'encodings[0][1]' must be int, not str"),
    (ProduceRequest, {**GOOD_PRODUCE, "codecs": [[96]]},
     "ProduceRequest: field 'codecs[0]' must be an array of 2, not an array of 1"),
    (ConnectRequest, {"role": "both", "fingerprints": []},
     "ConnectRequest: field 'role' must be one of 'client', 'server', not 'both'"),
    (ConnectRequest, {"role": "server", "fingerprints": [["sha-256", "AB"]], "sctp_port": "5000"},
     "ConnectRequest: field 'sctp_port' must be int or None, not str"),
    (CreateWebRtcTransportReply, {"ice_ufrag": "u", "ice_pwd": "p", "fingerprints": [], "candidate": {"ip": "x"}},
     "CreateWebRtcTransportReply: missing field 'candidate.port'"),
    (SendDataRequest, {"label": "_reliable", "data": None},
     "SendDataRequest: field 'data' must be bytes or str, not NoneType"),
    (OpenDataChannelRequest, {"label": "_lossy", "max_retransmits": 0.5},
     "OpenDataChannelRequest: field 'max_retransmits' must be int or None, not float"),
])
def test_bad_media_bodies_raise_one_reason(body_type: type[Body], wire: object, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        body_type.from_wire(wire)
    assert info.value.reason == reason


def test_a_good_produce_body_parses_nested_extensions_and_tuples() -> None:
    body = ProduceRequest.from_wire(GOOD_PRODUCE)
    assert body.extensions == RtpExtensions(id_map=bytes(256), mid_id=1)
    assert body.encodings == [("", 1111, 0)] and body.mid == "" and body.rtx_apt == []


def test_a_frame_that_cannot_be_packed_leaves_the_next_one_whole() -> None:
    # encode keeps one msgpack Packer per thread: a failed pack must not leave bytes behind for the next frame
    with pytest.raises(TypeError):
        encode(Notification("transport.scores", "t1", {"bad": object()}))
    good = Notification("transport.dtls_state", "t1", {"state": "connected"})
    assert encode(good) == pack([2, "transport.dtls_state", "t1", {"state": "connected"}])
    assert decode(encode(good)) == good
