"""router/channel.py against a raw ZeroMQ ROUTER on a private ipc endpoint (no worker process)."""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio

from router.channel import Channel, routing_id
from router.messages import TransportState, TupleChanged
from router.protocol import Event, Notification, Request, RequestError, Response, decode, encode


class Control:
    """The control side, reduced to a ROUTER that sends frames and reads replies."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.pending: collections.deque[tuple[bytes, bytes]] = collections.deque()

    async def send(self, rid: bytes, *frames: bytes) -> None:
        await self.sock.send_multipart([rid, *frames])

    async def recv(self, timeout: float = 5.0) -> tuple[bytes, Request | Response | Notification]:
        """The next frame; a message carries one or more (the worker's frames of one loop iteration)."""
        if not self.pending:
            rid, *frames = await asyncio.wait_for(self.sock.recv_multipart(), timeout)
            assert frames, "a message without a frame"
            self.pending.extend((rid, frame) for frame in frames)
        rid, frame = self.pending.popleft()
        return rid, decode(frame)

    async def request(self, rid: bytes, request: Request) -> Response:
        await self.send(rid, encode(request))
        while True:
            _, envelope = await self.recv()
            if isinstance(envelope, Response):
                return envelope

    def close(self) -> None:
        self.sock.close(linger=0)


@pytest.fixture
def endpoint(runtime_root: str) -> str:
    return f"ipc://{os.path.join(runtime_root, 'control.sock')}"


@pytest.fixture
async def control(endpoint: str) -> AsyncIterator[Control]:
    c = Control(endpoint)
    yield c
    c.close()


async def started(channel: Channel) -> Channel:
    await channel.start()
    for _ in range(200):
        if channel.connected:
            return channel
        await asyncio.sleep(0.01)
    raise AssertionError("channel never connected")


@pytest.fixture
async def channel(endpoint: str, control: Control) -> AsyncIterator[Channel]:
    ch = Channel(endpoint, 3)

    async def echo(target_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"target_id": target_id, "body": body}

    async def refuse(target_id: str, body: dict[str, Any]) -> dict[str, Any]:
        raise RequestError("InvalidState", f"transport {target_id} is closed")

    async def crash(target_id: str, body: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("spatial layer 7 out of range 0-2")

    async def bad_reply(target_id: str, body: dict[str, Any]) -> Any:
        return [1, 2]

    async def unencodable(target_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"set": {1, 2}}

    ch.register("transport.get_stats", echo)
    ch.register("transport.connect", refuse)
    ch.register("consumer.set_preferred_layers", crash)
    ch.register("producer.pause", bad_reply)
    ch.register("producer.resume", unencodable)
    await started(ch)
    yield ch
    await ch.close(linger_ms=0)


def test_routing_id_is_w_and_the_worker_id() -> None:
    assert routing_id(0) == b"w0"
    assert routing_id(12) == b"w12"
    with pytest.raises(ValueError, match="worker id -1 must be non-negative"):
        routing_id(-1)


async def test_request_is_answered_with_the_handler_reply(channel: Channel, control: Control) -> None:
    response = await control.request(b"w3", Request(11, "transport.get_stats", "t9", {"x": [1, b"\x00"]}))
    assert response == Response(11, True, {"target_id": "t9", "body": {"x": [1, b"\x00"]}})
    assert channel.counters.requests == 1


async def test_request_error_becomes_a_false_response(channel: Channel, control: Control) -> None:
    response = await control.request(b"w3", Request(1, "transport.connect", "t1", {}))
    assert response == Response.failure(1, "InvalidState", "transport t1 is closed")
    assert channel.counters.failed_requests == 1


async def test_handler_exception_is_named_in_the_response(channel: Channel, control: Control) -> None:
    response = await control.request(b"w3", Request(2, "consumer.set_preferred_layers", "c1", {}))
    assert response == Response.failure(2, "ValueError", "spatial layer 7 out of range 0-2")


async def test_unknown_method_gets_unknown_method(channel: Channel, control: Control) -> None:
    response = await control.request(b"w3", Request(3, "transport.produce", "t1", {}))
    assert response.error == "UnknownMethod"
    assert response.reason == "no handler for 'transport.produce'"
    assert channel.counters.unknown_methods == 1


async def test_non_map_and_unencodable_replies_fail_cleanly(channel: Channel, control: Control) -> None:
    response = await control.request(b"w3", Request(4, "producer.pause", "p", {}))
    reason = "handler of producer.pause returned list, not a map"
    assert response == Response.failure(4, "InvalidReply", reason)
    response = await control.request(b"w3", Request(5, "producer.resume", "p", {}))
    assert response.error == "InvalidReply"
    assert (response.reason or "").startswith("reply not encodable: ")


async def test_malformed_frames_are_counted_and_the_channel_keeps_serving(channel: Channel,
                                                                        control: Control) -> None:
    await control.send(b"w3", b"\xc1garbage")
    await control.send(b"w3", msgpack.packb([0, 1, "worker.dump"]))
    await control.send(b"w3", encode(Response(1, True, {})))
    await control.send(b"w3", encode(Notification("worker.heartbeat", "", {})))
    await control.send(b"w3", b"part one", b"part two")  # a request per part: two bad ones
    response = await control.request(b"w3", Request(6, "transport.get_stats", "t", {}))
    assert response.ok
    assert channel.counters.malformed == 6
    assert channel.counters.requests == 1


async def test_one_message_carries_several_requests_each_answered(channel: Channel, control: Control) -> None:
    """Control sends the requests of one loop iteration as one message, a request per part; a bad part is
    counted and the others are served."""
    await control.send(b"w3", encode(Request(7, "transport.get_stats", "t", {})), b"\xc1garbage",
                       encode(Request(8, "producer.resume", "p", {})))
    answered = {}
    while len(answered) < 2:
        _, envelope = await control.recv()
        if isinstance(envelope, Response):
            answered[envelope.id] = envelope
    assert sorted(answered) == [7, 8] and answered[7].ok
    assert channel.counters.requests == 2 and channel.counters.malformed == 1


async def test_requests_are_served_concurrently_not_in_lock_step(endpoint: str, control: Control) -> None:
    ch = Channel(endpoint, 4)
    gate = asyncio.Event()

    async def wait_for_gate(target_id: str, body: dict[str, Any]) -> dict[str, Any]:
        await gate.wait()
        return {"waited": True}

    async def open_gate(target_id: str, body: dict[str, Any]) -> dict[str, Any]:
        gate.set()
        return {}

    ch.register("producer.pause", wait_for_gate)
    ch.register("producer.resume", open_gate)
    await started(ch)
    try:
        await control.send(b"w4", encode(Request(1, "producer.pause", "p", {})))
        await control.send(b"w4", encode(Request(2, "producer.resume", "p", {})))
        first = await control.recv()
        second = await control.recv()
        # The second request overtook the first one, which was still waiting for it.
        assert [first[1], second[1]] == [Response(2, True, {}), Response(1, True, {"waited": True})]
    finally:
        await ch.close(linger_ms=0)


async def test_notify_sends_a_notification_from_the_worker_routing_id(channel: Channel,
                                                                     control: Control) -> None:
    assert channel.notify("transport.ice_state", "t1", {"state": "completed"})
    rid, envelope = await control.recv()
    assert rid == b"w3"
    assert envelope == Notification("transport.ice_state", "t1", {"state": "completed"})



async def test_quiet_events_are_counted_not_sent(channel: Channel, control: Control) -> None:
    channel.quiet = frozenset({"transport.ice_state", "transport.sctp_state"})
    assert channel.emit(Event.TRANSPORT_ICE_STATE, "t1", TransportState(state="connected"))
    assert channel.emit(Event.TRANSPORT_SCTP_STATE, "t1", TransportState(state="connecting"))
    assert channel.emit(Event.TRANSPORT_DTLS_STATE, "t1", TransportState(state="connected"))
    rid, envelope = await control.recv()
    assert envelope == Notification("transport.dtls_state", "t1", {"state": "connected"})  # the only one sent
    assert channel.counters.notifications_quiet == 2 and channel.counters.notifications == 1
    with pytest.raises(TypeError):  # a quiet event's body is still checked
        channel.emit(Event.TRANSPORT_ICE_STATE, "t1", TupleChanged(host="127.0.0.1", port=1))

async def test_without_a_peer_heartbeats_drop_and_other_frames_wait_in_order(endpoint: str) -> None:
    ch = Channel(endpoint, 5, sndhwm=2)
    await ch.start()
    try:
        sent = []
        for i in range(6):  # one loop iteration each: six messages against a high-water mark of two
            sent.append(ch.notify("producer.score", "p", {"n": i}))
            await asyncio.sleep(0)
        assert sent == [True] * 6
        assert not ch.notify("worker.heartbeat", "", {"seq": 1}, droppable=True)
        assert ch.counters.notifications_dropped == 1
        assert ch.counters.backlog_max >= 1
        control = Control(endpoint)
        try:
            received = [await control.recv() for _ in range(6)]
            assert [env.body["n"] for _, env in received] == list(range(6))  # type: ignore[union-attr]
        finally:
            control.close()
    finally:
        await ch.close(linger_ms=0)


async def test_disconnect_of_control_is_noticed(endpoint: str) -> None:
    control = Control(endpoint)
    ch = await started(Channel(endpoint, 6))
    try:
        assert ch.disconnected_for() == 0.0
        control.close()
        for _ in range(300):
            if not ch.connected:
                break
            await asyncio.sleep(0.01)
        assert not ch.connected
        assert ch.disconnected_for() >= 0.0
    finally:
        await ch.close(linger_ms=0)


async def test_registering_a_method_twice_is_refused(endpoint: str) -> None:
    ch = Channel(endpoint, 7)

    async def handler(target_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {}

    ch.register("worker.dump", handler)
    with pytest.raises(ValueError, match="a handler for 'worker.dump' is already registered"):
        ch.register("worker.dump", handler)
    assert ch.methods == frozenset({"worker.dump"})


async def test_notifications_queued_before_start_are_sent_after_it(endpoint: str, control: Control) -> None:
    ch = Channel(endpoint, 8)
    assert ch.notify("producer.stream_added", "p1", {"layer": 0})
    await ch.start()
    try:
        rid, envelope = await control.recv()
        assert (rid, envelope) == (b"w8", Notification("producer.stream_added", "p1", {"layer": 0}))
    finally:
        await ch.close(linger_ms=0)


async def test_frames_of_one_loop_iteration_go_as_one_message_in_order(control: Control, endpoint: str) -> None:
    ch = await started(Channel(endpoint, 7))
    try:
        for i in range(3):
            ch.notify("producer.score", "p", {"n": i})
        rid, *frames = await asyncio.wait_for(control.sock.recv_multipart(), 5.0)
        assert rid == routing_id(7)
        assert [decode(f).body["n"] for f in frames] == [0, 1, 2]  # type: ignore[union-attr]
        ch.notify("producer.score", "p", {"n": 3})
        await asyncio.sleep(0)
        ch.notify("producer.score", "p", {"n": 4})
        first = await asyncio.wait_for(control.sock.recv_multipart(), 5.0)
        second = await asyncio.wait_for(control.sock.recv_multipart(), 5.0)
        assert [len(first), len(second)] == [2, 2]  # one loop iteration each: a message each
    finally:
        await ch.close(linger_ms=0)
