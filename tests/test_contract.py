"""The control <-> worker contract is complete: every Method and Event has a body type, both ends, and bodies that
survive msgpack.

For every :class:`Method`: a request and reply body in ``REQUESTS``, a handler registered by the worker (its own
``Worker.request_handlers`` plus what ``install_media`` registers, run against a fake worker) and a caller in
control/ (a ``Method.X`` reference). For every :class:`Event`: a body in ``EVENTS``, a sender in router/ and a handler
in control/ (``Event.X`` references). Every MediaClient method is driven against a recording sender, which checks
that what it sends parses as its method's request body. Every body type round-trips through ``encode``/``decode``.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import inspect
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from control.rtc.codecs import Codec
from control.rtc.media import DataChannelSpec, DataProducerSpec, MediaClient
from control.rtc.negotiation import TrackPlan
from router.media_host import install_media
from router.messages import (
    EVENTS,
    REQUESTS,
    ConnectRequest,
    ConsumeDataRequest,
    ConsumeRequest,
    CreateWebRtcTransportReply,
    CreateWebRtcTransportRequest,
    DataMessage,
    GetStatsReply,
    IceCandidate,
    IceParameters,
    LayersChanged,
    OpenDataChannelRequest,
    PipeProduceRequest,
    PipeRequest,
    PipeSrtp,
    ProduceDataRequest,
    ProduceRequest,
    RtpExtensions,
    SendDataReply,
    SendDataRequest,
    SetPreferredLayersRequest,
    StreamAdded,
    StreamState,
    TransportScores,
    TransportState,
    TupleChanged,
    UnpipeRequest,
)
from router.protocol import (
    Body,
    CheckedMap,
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
    decode,
    encode,
)
from router.worker import Worker
from tests.router.fakes import FakeWorker

ROOT = Path(__file__).resolve().parent.parent
FINGERPRINT = ("sha-256", ":".join(["AB"] * 32))
PIPE_SRTP = PipeSrtp(profile="SRTP_AEAD_AES_128_GCM", local_key=bytes(range(28)), remote_key=bytes(range(1, 29)))

# One valid value of every body type, with every optional field set.
SAMPLES: dict[type[Body], Body] = {
    Empty: Empty(),
    WorkerDump: WorkerDump(worker_id=1, pid=2, core=0, udp_port=7882, media={"transports": 3}),
    WorkerRunning: WorkerRunning(pid=2, core=0, udp_port=7882, protocol_version=1, rcvbuf=8, sndbuf=9),
    WorkerHeartbeat: WorkerHeartbeat(seq=4, loop_lag_ms=0.25, counters={"requests": 5}),
    CreateWebRtcTransportRequest: CreateWebRtcTransportRequest(transport_id="t", ice_ufrag="u", ice_pwd="p"),
    CreateWebRtcTransportReply: CreateWebRtcTransportReply(
        ice_ufrag="u", ice_pwd="p", fingerprints=[FINGERPRINT], candidate=IceCandidate(ip="10.0.0.1", port=7882)),
    ConnectRequest: ConnectRequest(role="server", fingerprints=[FINGERPRINT], sctp_port=5000, max_message_size=1024),
    IceParameters: IceParameters(ice_ufrag="u2", ice_pwd="p2"),
    GetStatsReply: GetStatsReply(transport={"id": "t", "tuple": ["10.0.0.2", 5000]}, media={"rx_packets": 1},
                                 producers={"p": {"rx_packets": 1}}, consumers={"c": {"tx_packets": 1}},
                                 slow_path={"stun_requests": 1}),
    ProduceRequest: ProduceRequest(
        producer_id="p", kind="video", mid="1", encodings=[("q", 0, 0), ("f", 1111, 2222)], payload_types=[96, 97],
        codecs=[(96, "VP8")], rtx_apt=[(97, 96)], clock_rate=90000,
        extensions=RtpExtensions(id_map=bytes(range(256)), mid_id=1, rid_id=2, rrid_id=3, audio_level_id=4,
                                 twcc_id=5), source="screen_share"),
    ConsumeRequest: ConsumeRequest(consumer_id="c", producer_id="p", out_ssrc=7, pt_map=[(96, 100)], nack=False,
                                   spatial=1, paused=True),
    ProduceDataRequest: ProduceDataRequest(data_producer_id="d", label="*", relay_to_control=True),
    PipeRequest: PipeRequest(pipe_id="p>w1", peer_port=7883, ssrcs=[(11, 12), (13, 14)], payload_types=[96, 97],
                             rtx_apt=[(97, 96)], peer_ip="198.51.100.2", local_ip="198.51.100.1", srtp=PIPE_SRTP),
    UnpipeRequest: UnpipeRequest(pipe_id="p>w1"),
    PipeProduceRequest: PipeProduceRequest(producer_id="p", peer_port=7882, kind="video",
                                           encodings=[("", 11, 12), ("", 13, 14)], payload_types=[96, 97],
                                           clock_rate=90000, codecs=[(96, "VP8")], rtx_apt=[(97, 96)],
                                           peer_ip="198.51.100.1", local_ip="198.51.100.2",
                                           srtp=PIPE_SRTP.reversed(), source="camera"),
    ConsumeDataRequest: ConsumeDataRequest(data_consumer_id="dc", data_producer_id="d", label="chat"),
    OpenDataChannelRequest: OpenDataChannelRequest(label="_lossy", ordered=False, max_retransmits=0),
    SendDataRequest: SendDataRequest(label="_reliable", data=b"\x00\x01"),
    SendDataReply: SendDataReply(sent=True),
    SetPreferredLayersRequest: SetPreferredLayersRequest(spatial=2),
    TransportState: TransportState(state="connected"),
    TupleChanged: TupleChanged(host="10.0.0.2", port=5000),
    TransportScores: TransportScores(producers=[("p", 100)], consumers=[("c", 30)]),
    StreamAdded: StreamAdded(layer=1, ssrc=1111),
    LayersChanged: LayersChanged(spatial=0),
    StreamState: StreamState(state="paused"),
    DataMessage: DataMessage(label="_reliable", data="text"),
}


def body_types() -> set[type[Body]]:
    return {t for pair in REQUESTS.values() for t in pair} | set(EVENTS.values())


def references(package: str, enum: str, *, skip: tuple[str, ...] = ()) -> set[str]:
    """Members ``enum.X`` named anywhere in ``package``'s modules (except ``skip``)."""
    names: set[str] = set()
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.name in skip:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == enum:
                names.add(node.attr)
    return names


def missing(members: list[str], what: str) -> str:
    return "\n".join(f"{member} {what}" for member in members)


# ------------------------------------------------------------------------------------------- body types


def test_every_method_and_event_has_body_types() -> None:
    assert missing([f"Method.{m.name}" for m in Method if m not in REQUESTS], "has no body types in REQUESTS") == ""
    assert missing([f"Event.{e.name}" for e in Event if e not in EVENTS], "has no body type in EVENTS") == ""


def test_every_body_type_has_a_sample() -> None:
    assert missing(sorted(t.__name__ for t in body_types() if t not in SAMPLES), "has no sample here") == ""


@pytest.mark.parametrize("body", list(SAMPLES.values()), ids=lambda body: type(body).__name__)
def test_every_body_round_trips_through_msgpack(body: Body) -> None:
    for envelope in (Request(1, "a.b", "t", body.to_wire()), Response(1, True, body.to_wire()),
                     Notification("a.b", "t", body.to_wire())):
        decoded = decode(encode(envelope))
        assert type(body).from_wire(decoded.body) == body


def test_a_checked_map_gives_its_body_to_that_body_type_only() -> None:
    """A map its receiver checked (CheckedMap) is not checked again by the same body type; any other body type
    checks it as a plain map."""
    heartbeat = SAMPLES[WorkerHeartbeat]
    checked = CheckedMap(heartbeat.to_wire(), heartbeat)
    assert WorkerHeartbeat.from_wire(checked) is heartbeat and checked == heartbeat.to_wire()
    with pytest.raises(ProtocolError, match="WorkerRunning: missing field"):
        WorkerRunning.from_wire(checked)


def test_seams_doc_names_every_body_and_only_files_that_exist() -> None:
    text = (ROOT / "docs" / "SEAMS.md").read_text()
    undocumented = sorted(t.__name__ for t in body_types() if f"`{t.__name__}`" not in text)
    assert missing(undocumented, "is not in docs/SEAMS.md") == ""
    files = {p.name for package in ("control", "router", "fastpath", "bench", "tests")
             for p in (ROOT / package).rglob("*.py*")}
    named = set(re.findall(r"\b([a-z_]+\.pyx?)\b", text))
    assert missing(sorted(named - files), "is named in docs/SEAMS.md but does not exist") == ""


# -------------------------------------------------------------------------------------- worker handlers


async def registered_methods() -> set[str]:
    """What a worker registers: its own request handlers and, through install_media, the media side's."""
    fake = FakeWorker(asyncio.get_running_loop())
    service = install_media(fake)  # type: ignore[arg-type]
    try:
        shell = Worker.__new__(Worker)  # the constructor's arguments do not matter for the handler table
        return set(fake.channel.handlers) | set(shell.request_handlers())
    finally:
        if service._tick_task is not None:
            service._tick_task.cancel()
        fake.loop.remove_reader(fake.sock.fileno())
        fake.sock.close()


async def test_every_method_has_a_worker_handler() -> None:
    handled = await registered_methods()
    assert missing([f"Method.{m.name}" for m in Method if m not in handled], "has no handler in the worker") == ""
    assert handled <= {m.value for m in Method}, "the worker registers a method that Method does not name"


# -------------------------------------------------------------------------------------- control callers


def test_every_method_has_a_caller_in_control() -> None:
    called = references("control", "Method")
    assert missing([f"Method.{m.name}" for m in Method if m.name not in called], "has no caller in control/") == ""


def test_every_event_has_a_sender_in_router_and_a_handler_in_control() -> None:
    sent = references("router", "Event", skip=("protocol.py", "messages.py"))
    handled = references("control", "Event")
    assert missing([f"Event.{e.name}" for e in Event if e.name not in sent], "has no sender in router/") == ""
    assert missing([f"Event.{e.name}" for e in Event if e.name not in handled], "has no handler in control/") == ""


class RecordingSender:
    """Plays a worker for MediaClient: checks each request body against REQUESTS and answers with a sample."""

    def __init__(self) -> None:
        self.sent: list[tuple[Method, str, Body]] = []

    async def request(self, method: str, target_id: str, body: dict[str, Any], timeout: float = 5.0
                      ) -> dict[str, Any]:
        request_type, reply_type = REQUESTS[Method(method)]
        self.sent.append((Method(method), target_id, request_type.from_wire(decode(encode(
            Request(1, method, target_id, body))).body)))
        return SAMPLES[reply_type].to_wire()


TRACK = TrackPlan(mid="1", kind="video", codecs=[Codec("VP8", 96, 90000)], rtx_apt={97: 96},
                  encodings=[("", 1111, 2222)], extensions={}, msid=None, cname=None, id_map=bytes(256), mid_id=1)

# Every public MediaClient method with arguments, and the request it must send.
CALLS: dict[str, tuple[Callable[[MediaClient], Awaitable[Any]], Method]] = {
    "dump": (lambda m: m.dump(), Method.WORKER_DUMP),
    "create_router": (lambda m: m.create_router("r"), Method.MEDIA_ROUTER_CREATE),
    "close_router": (lambda m: m.close_router("r"), Method.MEDIA_ROUTER_CLOSE),
    "create_transport": (lambda m: m.create_transport("r", "t", ice_ufrag="u", ice_pwd="p"),
                         Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT),
    "connect": (lambda m: m.connect("t", role="server", fingerprints=[FINGERPRINT], sctp_port=5000),
                Method.TRANSPORT_CONNECT),
    "restart_ice": (lambda m: m.restart_ice("t", "u2", "p2"), Method.TRANSPORT_RESTART_ICE),
    "close_transport": (lambda m: m.close_transport("t"), Method.TRANSPORT_CLOSE),
    "get_stats": (lambda m: m.get_stats("t"), Method.TRANSPORT_GET_STATS),
    "produce": (lambda m: m.produce("t", "p", TRACK), Method.TRANSPORT_PRODUCE),
    "consume": (lambda m: m.consume("t", "c", "p", out_ssrc=7, pt_map={96: 100}), Method.TRANSPORT_CONSUME),
    "close_producer": (lambda m: m.close_producer("p"), Method.PRODUCER_CLOSE),
    "pipe": (lambda m: m.pipe("p", "p>w1", peer_port=7883, ssrcs=[(11, 12)], track=TRACK), Method.PRODUCER_PIPE),
    "unpipe": (lambda m: m.unpipe("p", "p>w1"), Method.PRODUCER_UNPIPE),
    "produce_pipe": (lambda m: m.produce_pipe("r", "p", peer_port=7882, ssrcs=[(11, 12)], track=TRACK),
                     Method.MEDIA_ROUTER_PRODUCE_PIPE),
    "pause_producer": (lambda m: m.pause_producer("p"), Method.PRODUCER_PAUSE),
    "resume_producer": (lambda m: m.resume_producer("p"), Method.PRODUCER_RESUME),
    "close_consumer": (lambda m: m.close_consumer("c"), Method.CONSUMER_CLOSE),
    "pause_consumer": (lambda m: m.pause_consumer("c"), Method.CONSUMER_PAUSE),
    "resume_consumer": (lambda m: m.resume_consumer("c"), Method.CONSUMER_RESUME),
    "set_preferred_layers": (lambda m: m.set_preferred_layers("c", 1), Method.CONSUMER_SET_PREFERRED_LAYERS),
    "request_key_frame": (lambda m: m.request_key_frame("c"), Method.CONSUMER_REQUEST_KEY_FRAME),
    "produce_data": (lambda m: m.produce_data("t", "d", "*", relay_to_control=True), Method.TRANSPORT_PRODUCE_DATA),
    "open_data_channel": (lambda m: m.open_data_channel("t", "_lossy", ordered=False, max_retransmits=0),
                          Method.TRANSPORT_OPEN_DATA_CHANNEL),
    "send_data": (lambda m: m.send_data("t", "_reliable", b"x"), Method.TRANSPORT_SEND_DATA),
    "consume_data": (lambda m: m.consume_data("t", "dc", "d", "chat"), Method.TRANSPORT_CONSUME_DATA),
    "close_data_producer": (lambda m: m.close_data_producer("d"), Method.DATA_PRODUCER_CLOSE),
    "close_data_consumer": (lambda m: m.close_data_consumer("dc"), Method.DATA_CONSUMER_CLOSE),
}


def test_every_media_client_method_is_driven_here() -> None:
    public = {name for name, member in inspect.getmembers(MediaClient, inspect.iscoroutinefunction)
              if not name.startswith("_")}
    assert public == set(CALLS)


@pytest.mark.parametrize("name", list(CALLS))
async def test_media_client_sends_its_method_with_a_valid_body(name: str) -> None:
    sender = RecordingSender()
    call, method = CALLS[name]
    await call(MediaClient(sender))
    assert [m for m, _, _ in sender.sent] == [method]


async def test_media_client_bodies_carry_the_arguments() -> None:
    sender = RecordingSender()
    media = MediaClient(sender)
    params = await media.create_transport("r", "t", ice_ufrag="u", ice_pwd="p")
    await media.produce("t", "p", TRACK)
    await media.consume("t", "c", "p", out_ssrc=7, pt_map={96: 100})
    assert await media.send_data("t", "_reliable", b"x") is True
    assert (params.candidate_ip, params.candidate_port, params.fingerprints) == ("10.0.0.1", 7882, [FINGERPRINT])
    create, produce, consume, send = (body for _, _, body in sender.sent)
    assert create == CreateWebRtcTransportRequest(transport_id="t", ice_ufrag="u", ice_pwd="p")
    assert isinstance(produce, ProduceRequest)
    assert (produce.encodings, produce.codecs, produce.rtx_apt) == ([("", 1111, 2222)], [(96, "VP8")], [(97, 96)])
    assert produce.extensions == RtpExtensions(id_map=bytes(256), mid_id=1)
    # twcc_id and playout_delay_id: the transport-cc and playout-delay ids every subscriber offer negotiates
    # (send-side bandwidth estimation; the playout delay of a lossy subscriber's video).
    assert consume == ConsumeRequest(consumer_id="c", producer_id="p", out_ssrc=7, pt_map=[(96, 100)], twcc_id=5,
                                     playout_delay_id=7)
    assert send == SendDataRequest(label="_reliable", data=b"x")


async def test_produce_bodies_carry_the_track_source() -> None:
    """The publication's source (router/temporal.py: a screen share keeps its resolution) reaches the worker with
    the producer and with its pipes; one the contract does not know goes as "unknown"."""
    sender = RecordingSender()
    media = MediaClient(sender)
    assert ProduceRequest.from_wire({k: v for k, v in SAMPLES[ProduceRequest].to_wire().items()
                                     if k != "source"}).source == "unknown"  # an older control's request
    for source, sent in (("screen_share", "screen_share"), ("camera", "camera"), ("hologram", "unknown")):
        track = dataclasses.replace(TRACK, source=source)
        await media.produce("t", "p", track)
        await media.produce_pipe("r", "p", peer_port=7882, ssrcs=[(11, 12)], track=track)
        (_, _, produce), (_, _, pipe) = sender.sent[-2:]
        assert isinstance(produce, ProduceRequest) and isinstance(pipe, PipeProduceRequest)
        assert (produce.source, pipe.source) == (sent, sent)
    with pytest.raises(ProtocolError):
        ProduceRequest.from_wire(dict(SAMPLES[ProduceRequest].to_wire(), source="hologram"))


async def test_create_transport_carries_the_data_setup_of_a_join() -> None:
    sender = RecordingSender()
    media = MediaClient(sender)
    await media.create_transport("r", "pub", data_producer=DataProducerSpec("d", "*", relay_to_control=True))
    await media.create_transport("r", "sub", data_channels=[DataChannelSpec("_reliable"),
                                                          DataChannelSpec("_lossy", ordered=False, max_retransmits=0)])
    pub, sub = (body for _, _, body in sender.sent)
    assert pub == CreateWebRtcTransportRequest(
        transport_id="pub", data_producer=ProduceDataRequest(data_producer_id="d", label="*", relay_to_control=True))
    assert sub == CreateWebRtcTransportRequest(transport_id="sub", data_channels=[
        OpenDataChannelRequest(label="_reliable", ordered=True),
        OpenDataChannelRequest(label="_lossy", ordered=False, max_retransmits=0)])


async def test_pipe_bodies_carry_the_track_and_the_pipe_ssrcs() -> None:
    sender = RecordingSender()
    media = MediaClient(sender)
    await media.produce_pipe("r", "p", peer_port=7882, ssrcs=[(11, 12)], track=TRACK)
    await media.pipe("p", "p>w1", peer_port=7883, ssrcs=[(11, 12)], track=TRACK)
    (_, router, produce), (_, producer, pipe) = sender.sent
    assert (router, producer) == ("r", "p")
    assert produce == PipeProduceRequest(producer_id="p", peer_port=7882, kind="video", encodings=[("", 11, 12)],
                                         payload_types=[96], clock_rate=90000, codecs=[(96, "VP8")],
                                         rtx_apt=[(97, 96)])
    assert pipe == PipeRequest(pipe_id="p>w1", peer_port=7883, ssrcs=[(11, 12)], payload_types=[96],
                               rtx_apt=[(97, 96)])


async def test_pipe_bodies_between_hosts_carry_the_address_and_the_keys() -> None:
    sender = RecordingSender()
    media = MediaClient(sender)
    srtp = PipeSrtp.generate()
    await media.produce_pipe("r", "p", peer_port=7882, ssrcs=[(11, 12)], track=TRACK, peer_ip="198.51.100.1",
                             local_ip="198.51.100.2", srtp=srtp.reversed())
    await media.pipe("p", "p>w1", peer_port=7883, ssrcs=[(11, 12)], track=TRACK, peer_ip="198.51.100.2",
                     local_ip="198.51.100.1", srtp=srtp)
    (_, _, produce), (_, _, pipe) = sender.sent
    assert isinstance(produce, PipeProduceRequest) and isinstance(pipe, PipeRequest)
    assert (produce.peer_ip, produce.local_ip, pipe.peer_ip, pipe.local_ip) == (
        "198.51.100.1", "198.51.100.2", "198.51.100.2", "198.51.100.1")
    assert pipe.srtp == srtp and produce.srtp == srtp.reversed()
    assert produce.srtp is not None and (produce.srtp.local_key, produce.srtp.remote_key) == (
        srtp.remote_key, srtp.local_key)


@pytest.mark.parametrize(("change", "reason"), [
    ({"srtp": {"profile": "SRTP_AES128_CM_HMAC_SHA1_80", "local_key": bytes(28), "remote_key": bytes(30)}},
     "field 'srtp.local_key' must be 30 bytes"),
    ({"srtp": {"profile": "SRTP_NULL", "local_key": bytes(30), "remote_key": bytes(30)}}, "field 'srtp.profile'"),
    ({"srtp": {"profile": "SRTP_AEAD_AES_128_GCM", "local_key": bytes(28), "remote_key": bytes(28)}},
     "field 'srtp.remote_key' must differ"),
    ({"peer_ip": "example.com"}, "field 'peer_ip' must be an IPv4 address"),
    ({"local_ip": "::1"}, "field 'local_ip' must be an IPv4 address"),
])
def test_bad_pipe_keys_and_addresses_are_refused_by_name(change: dict[str, Any], reason: str) -> None:
    wire = dict(SAMPLES[PipeRequest].to_wire(), **change)
    with pytest.raises(ProtocolError, match=re.escape(reason)):
        PipeRequest.from_wire(wire)
