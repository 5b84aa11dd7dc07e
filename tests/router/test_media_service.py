"""MediaService request handling in-process: a real Engine on a loopback socket, a recording channel.

The end-to-end tests drive the same handlers through a worker process; these check the request-level rules that are
hard to see from outside: idempotent creates, exact errors for bad bodies, transport-wide state kept across m-lines,
that closing releases every entry, and that consent expiry goes through the worker's consent schedule.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router import stun
from router.ice import CONSENT_TIMEOUT_MS
from router.media_service import MediaService
from router.protocol import RequestError

VIDEO = {
    "producer_id": "p-video",
    "kind": "video",
    "mid": "1",
    "encodings": [["", 1111, 0]],
    "payload_types": [96],
    "codecs": [[96, "VP8"]],
    "rtx_apt": [],
    "clock_rate": 90000,
    "extensions": {"mid_id": 1, "rid_id": 0, "rrid_id": 0, "audio_level_id": 0, "twcc_id": 5, "id_map": bytes(256)},
}
AUDIO = {
    **VIDEO,
    "producer_id": "p-audio",
    "kind": "audio",
    "mid": "0",
    "encodings": [["", 2222, 0]],
    "payload_types": [111],
    "codecs": [[111, "opus"]],
    "clock_rate": 48000,
    "extensions": {**VIDEO["extensions"], "twcc_id": 0},
}


class FakeChannel:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}
        self.notifications: list[tuple[str, str, dict[str, Any]]] = []

    def register(self, method: str, handler: Any) -> None:
        self.handlers[method] = handler

    def notify(self, event: str, target_id: str, body: dict[str, Any]) -> None:
        self.notifications.append((event, target_id, body))


class FakeWorker:
    """The parts of router.worker.Worker that the media service uses."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.node_ip = "127.0.0.1"
        self.rtc_port = self.sock.getsockname()[1]
        self.gso = True
        self.channel = FakeChannel()
        self.heartbeat_sources: list[Any] = []

    def add_heartbeat_source(self, source: Any) -> None:
        self.heartbeat_sources.append(source)


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


async def call(channel: FakeChannel, method: str, target: str, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await channel.handlers[method](target, body)
    return result


async def test_creates_are_idempotent_and_bad_bodies_get_exact_errors(
    service: tuple[MediaService, FakeChannel],
) -> None:
    media, ch = service
    await call(ch, "media_router.create", "r", {})
    first = await call(ch, "media_router.create_webrtc_transport", "r", {"transport_id": "t"})
    again = await call(ch, "media_router.create_webrtc_transport", "r", {"transport_id": "t"})
    assert first == again and first["candidate"]["port"] == media.worker.rtc_port
    assert first["fingerprints"][0][0] == "sha-256"

    with pytest.raises(RequestError) as info:
        await call(ch, "transport.produce", "t", {**VIDEO, "kind": "data"})
    assert (info.value.error, info.value.reason) == ("TypeError", "invalid kind 'data'")
    with pytest.raises(RequestError) as info:
        await call(ch, "transport.produce", "t", {**VIDEO, "extensions": {**VIDEO["extensions"], "id_map": b"x"}})
    assert info.value.reason == "extensions.id_map must be 256 bytes"
    with pytest.raises(RequestError) as info:
        await call(ch, "transport.connect", "t", {"role": "both", "fingerprints": []})
    assert info.value.reason == "invalid DTLS role 'both'"
    with pytest.raises(RequestError) as info:
        await call(ch, "transport.produce", "nope", VIDEO)
    assert info.value.error == "NotFound"
    assert len(media.producers) == 0  # nothing half-built after a refused request


async def test_an_m_line_without_transport_cc_keeps_the_transport_wide_id(
    service: tuple[MediaService, FakeChannel],
) -> None:
    media, ch = service
    await call(ch, "media_router.create", "r", {})
    await call(ch, "media_router.create_webrtc_transport", "r", {"transport_id": "t"})
    await call(ch, "transport.produce", "t", VIDEO)
    await call(ch, "transport.produce", "t", AUDIO)
    assert media.transports.get("t").twcc_id == 5


async def test_closing_the_router_releases_every_entry(service: tuple[MediaService, FakeChannel]) -> None:
    media, ch = service
    await call(ch, "media_router.create", "r", {})
    for tid in ("pub", "sub"):
        await call(ch, "media_router.create_webrtc_transport", "r", {"transport_id": tid})
    await call(ch, "transport.produce", "pub", VIDEO)
    await call(ch, "transport.consume", "sub", {"consumer_id": "c", "producer_id": "p-video", "out_ssrc": 7,
                                                 "pt_map": [[96, 96]]})
    await call(ch, "transport.produce_data", "pub", {"data_producer_id": "d", "label": "chat"})
    await call(ch, "transport.consume_data", "sub", {"data_consumer_id": "dc", "data_producer_id": "d"})
    counts = media.heartbeat()
    assert (counts["transports"], counts["producers"], counts["consumers"], counts["data_consumers"]) == (2, 1, 1, 1)
    assert counts["engine_consumers"] == 1

    await call(ch, "media_router.close", "r", {})
    counts = media.heartbeat()
    live = [k for k in counts if not k.startswith(("rx_", "tx_"))]  # the rest are lifetime traffic counters
    assert {k: counts[k] for k in live} == dict.fromkeys(live, 0)


async def test_consent_expiry_reaches_control_through_the_schedule(service: tuple[MediaService, FakeChannel]) -> None:
    """A transport's first valid check files it in the worker's consent schedule; when the peer goes quiet for the
    consent timeout the once-a-second pass turns it "disconnected" and tells control (docs/RELIABILITY.md, B9)."""
    media, ch = service
    await call(ch, "media_router.create", "r", {})
    params = await call(ch, "media_router.create_webrtc_transport", "r", {"transport_id": "t"})
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    try:
        check = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
        check.add_username(f"{params['ice_ufrag']}:peer").add_priority(1).add_ice_controlling(1).add_use_candidate()
        transport = media.transports.get("t")
        transport.handle_stun(check.to_bytes(params["ice_pwd"].encode()), peer.getsockname())
        assert transport.ice_state == "connected" and len(media.consent) == 1
        last = transport.ice.last_valid_check_ms
        assert last is not None
        media.consent.run(last + CONSENT_TIMEOUT_MS)
        assert transport.ice_state == "connected"
        media.consent.run(last + CONSENT_TIMEOUT_MS + 1)
        assert ch.notifications[-1] == ("transport.ice_state", "t", {"state": "disconnected"})
        await call(ch, "transport.close", "t", {})
        assert len(media.consent) == 0
    finally:
        peer.close()
