"""MediaService request handling in-process: a real Engine on a loopback socket, a recording channel.

The end-to-end tests drive the same handlers through a worker process; these check the request-level rules that are
hard to see from outside: idempotent creates, exact errors for bad bodies, transport-wide state kept across m-lines,
that closing releases every entry, and that consent expiry goes through the worker's consent schedule.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router import stun
from router.ice import CONSENT_TIMEOUT_MS
from router.media_service import MediaService
from router.messages import (
    ConnectRequest,
    ConsumeDataRequest,
    ConsumeRequest,
    CreateWebRtcTransportReply,
    CreateWebRtcTransportRequest,
    IceParameters,
    OpenDataChannelRequest,
    ProduceDataRequest,
    ProduceRequest,
    RtpExtensions,
    TransportState,
)
from router.protocol import Body, Empty, Method, RequestError
from tests.router.fakes import FakeChannel, FakeWorker

VIDEO = ProduceRequest(
    producer_id="p-video",
    kind="video",
    mid="1",
    encodings=[("", 1111, 0)],
    payload_types=[96],
    codecs=[(96, "VP8")],
    rtx_apt=[],
    clock_rate=90000,
    extensions=RtpExtensions(id_map=bytes(256), mid_id=1, twcc_id=5),
)
AUDIO = dataclasses.replace(
    VIDEO,
    producer_id="p-audio",
    kind="audio",
    mid="0",
    encodings=[("", 2222, 0)],
    payload_types=[111],
    codecs=[(111, "opus")],
    clock_rate=48000,
    extensions=dataclasses.replace(VIDEO.extensions, twcc_id=0),
)


@pytest.fixture
async def service() -> AsyncIterator[tuple[MediaService, FakeChannel]]:
    worker = FakeWorker(asyncio.get_running_loop())
    media = MediaService(worker)  # type: ignore[arg-type]
    media.start()
    try:
        yield media, worker.channel
    finally:
        if media._tick_task is not None:
            media._tick_task.cancel()
        worker.loop.remove_reader(worker.sock.fileno())
        worker.sock.close()


async def call(channel: FakeChannel, method: Method, target: str, body: Body | dict[str, Any]) -> dict[str, Any]:
    """One request as the worker's channel serves it: the body goes through its wire form (a map)."""
    wire = body.to_wire() if isinstance(body, Body) else body
    result = await channel.handlers[method](target, wire)
    assert result is not None
    return result


async def create_transport(channel: FakeChannel, router_id: str, transport_id: str) -> CreateWebRtcTransportReply:
    request = CreateWebRtcTransportRequest(transport_id=transport_id)
    reply = await call(channel, Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT, router_id, request)
    return CreateWebRtcTransportReply.from_wire(reply)


async def test_a_transport_created_with_its_data_setup_has_it(service: tuple[MediaService, FakeChannel]) -> None:
    media, ch = service
    await call(ch, Method.MEDIA_ROUTER_CREATE, "r", Empty())
    pub = CreateWebRtcTransportRequest(transport_id="pub", data_producer=ProduceDataRequest(
        data_producer_id="d", label="*", relay_to_control=True))
    sub = CreateWebRtcTransportRequest(transport_id="sub", data_channels=[
        OpenDataChannelRequest(label="_reliable"), OpenDataChannelRequest(label="_lossy", ordered=False,
                                                                          max_retransmits=0)])
    for request in (pub, sub, sub):  # a repeated create changes nothing
        await call(ch, Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT, "r", request)
    producer = media.data_producers["d"]
    assert (producer.label, producer.relay_to_control) == ("*", True)
    assert producer.transport is media.transports.get("pub")
    assert media.transports.get("sub")._wanted_channels == {"_reliable": (True, None), "_lossy": (False, 0)}


async def test_creates_are_idempotent_and_bad_bodies_get_exact_errors(
    service: tuple[MediaService, FakeChannel],
) -> None:
    media, ch = service
    await call(ch, Method.MEDIA_ROUTER_CREATE, "r", Empty())
    first = await create_transport(ch, "r", "t")
    again = await create_transport(ch, "r", "t")
    assert first == again and first.candidate.port == media.worker.rtc_port
    assert first.fingerprints[0][0] == "sha-256"

    with pytest.raises(RequestError) as info:
        await call(ch, Method.TRANSPORT_PRODUCE, "t", dataclasses.replace(VIDEO, kind="data"))  # type: ignore[arg-type]
    assert (info.value.error, info.value.reason) == (
        "TypeError", "ProduceRequest: field 'kind' must be one of 'audio', 'video', not 'data'")
    with pytest.raises(RequestError) as info:
        bad_map = dataclasses.replace(VIDEO.extensions, id_map=b"x")
        await call(ch, Method.TRANSPORT_PRODUCE, "t", dataclasses.replace(VIDEO, extensions=bad_map))
    assert info.value.reason == "ProduceRequest: field 'extensions.id_map' must be 256 bytes, not 1"
    with pytest.raises(RequestError) as info:
        await call(ch, Method.TRANSPORT_CONNECT, "t", ConnectRequest(role="both", fingerprints=[]))  # type: ignore[arg-type]
    assert info.value.reason == "ConnectRequest: field 'role' must be one of 'client', 'server', not 'both'"
    with pytest.raises(RequestError) as info:
        await call(ch, Method.TRANSPORT_CONSUME, "t", {"consumer_id": "c", "producer_id": "p-video", "pt_map": []})
    assert (info.value.error, info.value.reason) == ("TypeError", "ConsumeRequest: missing field 'out_ssrc'")
    with pytest.raises(RequestError) as info:
        await call(ch, Method.TRANSPORT_PRODUCE, "nope", VIDEO)
    assert info.value.error == "NotFound"
    assert len(media.producers) == 0  # nothing half-built after a refused request


async def test_an_m_line_without_transport_cc_keeps_the_transport_wide_id(
    service: tuple[MediaService, FakeChannel],
) -> None:
    media, ch = service
    await call(ch, Method.MEDIA_ROUTER_CREATE, "r", Empty())
    await create_transport(ch, "r", "t")
    await call(ch, Method.TRANSPORT_PRODUCE, "t", VIDEO)
    await call(ch, Method.TRANSPORT_PRODUCE, "t", AUDIO)
    assert media.transports.get("t").twcc_id == 5


async def test_a_producer_keeps_its_track_source(service: tuple[MediaService, FakeChannel]) -> None:
    """ProduceRequest.source reaches the Producer record the stream allocator reads (router/temporal.py)."""
    media, ch = service
    await call(ch, Method.MEDIA_ROUTER_CREATE, "r", Empty())
    await create_transport(ch, "r", "t")
    await call(ch, Method.TRANSPORT_PRODUCE, "t", dataclasses.replace(VIDEO, source="screen_share"))
    await call(ch, Method.TRANSPORT_PRODUCE, "t", AUDIO)
    assert (media.producers.get("p-video").source, media.producers.get("p-audio").source) == (
        "screen_share", "unknown")


async def test_closing_the_router_releases_every_entry(service: tuple[MediaService, FakeChannel]) -> None:
    media, ch = service
    await call(ch, Method.MEDIA_ROUTER_CREATE, "r", Empty())
    for tid in ("pub", "sub"):
        await create_transport(ch, "r", tid)
    await call(ch, Method.TRANSPORT_PRODUCE, "pub", VIDEO)
    await call(ch, Method.TRANSPORT_CONSUME, "sub",
               ConsumeRequest(consumer_id="c", producer_id="p-video", out_ssrc=7, pt_map=[(96, 96)]))
    await call(ch, Method.TRANSPORT_PRODUCE_DATA, "pub", ProduceDataRequest(data_producer_id="d", label="chat"))
    await call(ch, Method.TRANSPORT_CONSUME_DATA, "sub",
               ConsumeDataRequest(data_consumer_id="dc", data_producer_id="d"))
    counts = media.heartbeat()
    assert (counts["transports"], counts["producers"], counts["consumers"], counts["data_consumers"]) == (2, 1, 1, 1)
    assert counts["engine_consumers"] == 1

    await call(ch, Method.MEDIA_ROUTER_CLOSE, "r", Empty())
    counts = media.heartbeat()
    # the rest (and the "totals" and "drops" of router/totals.py) are lifetime traffic counters
    live = [k for k in counts if not k.startswith(("rx_", "tx_")) and k not in ("totals", "drops")]
    assert {k: counts[k] for k in live} == dict.fromkeys(live, 0)


async def test_closing_one_transport_releases_only_its_entries(service: tuple[MediaService, FakeChannel]) -> None:
    """A transport's close finds its data producers, the data consumers sending on it and every ufrag it answered to
    (after an ICE restart too), and leaves the other transports' entries alone."""
    media, ch = service
    await call(ch, Method.MEDIA_ROUTER_CREATE, "r", Empty())
    for tid in ("a", "b", "c"):
        await create_transport(ch, "r", tid)
    for tid in ("a", "b"):
        await call(ch, Method.TRANSPORT_PRODUCE_DATA, tid, ProduceDataRequest(data_producer_id=f"d-{tid}", label="*"))
    # c consumes a's and b's data; a consumes b's; b consumes a's
    for sub, pub in (("c", "a"), ("c", "b"), ("a", "b"), ("b", "a")):
        await call(ch, Method.TRANSPORT_CONSUME_DATA, sub,
                   ConsumeDataRequest(data_consumer_id=f"{sub}<{pub}", data_producer_id=f"d-{pub}"))
    a = media.transports.get("a")
    first_ufrag = a.ice.local_ufrag
    await call(ch, Method.TRANSPORT_RESTART_ICE, "a", IceParameters(ice_ufrag="restarted", ice_pwd="p" * 22))
    kept = {u for u, t in media._by_ufrag.items() if t is not a}
    assert {first_ufrag, "restarted"} <= set(media._by_ufrag) and len(kept) == 2

    await call(ch, Method.TRANSPORT_CLOSE, "a", Empty())
    assert set(media._by_ufrag) == kept
    assert set(media.data_producers) == {"d-b"}
    assert set(media.data_consumers) == {"c<b"}  # a's producer took c<a and b<a along; a<b was a's own
    assert list(media.transports.get("b").data_producer_ids) == ["d-b"]
    assert list(media.transports.get("c").data_consumer_ids) == ["c<b"]
    assert not media.transports.get("b").data_consumer_ids
    # a data producer made again on another transport under a closed one's id is that transport's
    await call(ch, Method.TRANSPORT_PRODUCE_DATA, "c", ProduceDataRequest(data_producer_id="d-a", label="*"))
    await call(ch, Method.TRANSPORT_CLOSE, "c", Empty())
    assert set(media.data_producers) == {"d-b"} and not media.data_consumers
    await call(ch, Method.TRANSPORT_CLOSE, "b", Empty())
    assert not media.data_producers and not media._by_ufrag


async def test_consent_expiry_reaches_control_through_the_schedule(service: tuple[MediaService, FakeChannel]) -> None:
    """A transport's first valid check files it in the worker's consent schedule; when the peer goes quiet for the
    consent timeout the once-a-second pass turns it "disconnected" and tells control (RFC 7675)."""
    media, ch = service
    await call(ch, Method.MEDIA_ROUTER_CREATE, "r", Empty())
    params = await create_transport(ch, "r", "t")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    try:
        check = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
        check.add_username(f"{params.ice_ufrag}:peer").add_priority(1).add_ice_controlling(1).add_use_candidate()
        transport = media.transports.get("t")
        transport.handle_stun(check.to_bytes(params.ice_pwd.encode()), peer.getsockname())
        assert transport.ice_state == "connected" and len(media.consent) == 1
        last = transport.ice.last_valid_check_ms
        assert last is not None
        media.consent.run(last + CONSENT_TIMEOUT_MS)
        assert transport.ice_state == "connected"
        media.consent.run(last + CONSENT_TIMEOUT_MS + 1)
        assert ch.notifications[-1] == ("transport.ice_state", "t", TransportState(state="disconnected").to_wire())
        await call(ch, Method.TRANSPORT_CLOSE, "t", Empty())
        assert len(media.consent) == 0
    finally:
        peer.close()
