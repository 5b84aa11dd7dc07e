"""The media side of a worker: the Engine, the MediaRouters and the handlers of control's media requests.

MediaService owns the worker's one ``fastpath.Engine`` (driven by ``loop.add_reader`` on the shared UDP socket and a
20 ms tick), the registries that turn control's string ids into Engine handles, and the request handlers for
``media_router.*``, ``transport.*``, ``producer.*``, ``consumer.*`` and ``data_*``. Every create is idempotent
(the same id and body again answers the same result) so that control can replay after a restart. It never sees SDP,
tokens or room names; control sends numbers.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import fastpath
from router.data import DataConsumer, DataProducer
from router.dtls import DtlsCertificate
from router.ice import username_fragment
from router.media_router import Consumer, MediaRouter, Producer
from router.protocol import RequestError
from router.registry import Registry
from router.transport import ConsentSchedule, InvalidState, WebRtcTransport

if TYPE_CHECKING:
    from router.worker import Worker

log = logging.getLogger("router.media")

TICK_S = 0.02
KINDS = {"audio": 0, "video": 1}


def _require(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(key)
    if not isinstance(value, kind):
        raise RequestError("TypeError", f"missing or invalid field {key!r}")
    return value


class MediaService:
    """All media entities of one worker and the Engine that forwards their packets."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        # UDP GSO (fastpath/gso.pxd) where the kernel has it, unless the gso setting is off.
        self.engine = fastpath.Engine(worker.sock.fileno(), gso=worker.gso)
        self.certificate = DtlsCertificate.generate()
        self.fingerprints = [["sha-256", self.certificate.fingerprint("sha-256")]]
        self.routers: dict[str, MediaRouter] = {}
        self.transports: Registry[WebRtcTransport] = Registry("transport")
        self.producers: Registry[Producer] = Registry("producer")
        self.consumers: Registry[Consumer] = Registry("consumer")
        self.data_producers: dict[str, DataProducer] = {}
        self.data_consumers: dict[str, DataConsumer] = {}
        self._by_ufrag: dict[str, WebRtcTransport] = {}
        self._tick_task: asyncio.Task[None] | None = None
        self.consent = ConsentSchedule()  # connected transports by consent deadline (RFC 7675)
        self._last_consent_check = 0.0

    # ---- wiring ------------------------------------------------------------------------------------------
    def start(self) -> None:
        loop = self.worker.loop
        loop.add_reader(self.worker.sock.fileno(), self._on_readable)
        self._tick_task = loop.create_task(self._tick_loop())
        ch = self.worker.channel
        for method, handler in {
            "media_router.create": self.media_router_create,
            "media_router.close": self.media_router_close,
            "media_router.create_webrtc_transport": self.create_webrtc_transport,
            "transport.connect": self.transport_connect,
            "transport.restart_ice": self.transport_restart_ice,
            "transport.close": self.transport_close,
            "transport.get_stats": self.transport_get_stats,
            "transport.produce": self.transport_produce,
            "transport.consume": self.transport_consume,
            "transport.produce_data": self.transport_produce_data,
            "transport.consume_data": self.transport_consume_data,
            "transport.open_data_channel": self.transport_open_data_channel,
            "transport.send_data": self.transport_send_data,
            "producer.close": self.producer_close,
            "producer.pause": self.producer_pause,
            "producer.resume": self.producer_resume,
            "consumer.close": self.consumer_close,
            "consumer.pause": self.consumer_pause,
            "consumer.resume": self.consumer_resume,
            "consumer.set_preferred_layers": self.consumer_set_preferred_layers,
            "consumer.request_key_frame": self.consumer_request_key_frame,
            "data_producer.close": self.data_producer_close,
            "data_consumer.close": self.data_consumer_close,
        }.items():
            ch.register(method, self._guard(handler))
        self.worker.add_heartbeat_source(self.heartbeat)

    def _guard(self, handler: Any) -> Any:
        async def run(target_id: str, body: dict[str, Any]) -> dict[str, Any]:
            try:
                return await handler(target_id, body)
            except RequestError:
                raise
            except KeyError as exc:
                raise RequestError("NotFound", str(exc.args[0]) if exc.args else "not found") from None
            except (ValueError, InvalidState) as exc:
                raise RequestError(type(exc).__name__, str(exc)) from None

        return run

    def notify(self, event: str, target_id: str, body: dict[str, Any]) -> None:
        self.worker.channel.notify(event, target_id, body)

    def heartbeat(self) -> dict[str, Any]:
        engine = self.engine.snapshot_engine()
        return {
            "routers": len(self.routers),
            "transports": len(self.transports),
            "producers": len(self.producers),
            "consumers": len(self.consumers),
            "data_producers": len(self.data_producers),
            "data_consumers": len(self.data_consumers),
            "engine_transports": engine["transports"],
            "engine_producers": engine["producers"],
            "engine_consumers": engine["consumers"],
            "rx_datagrams": engine["rx_datagrams"],
            "tx_datagrams": engine["tx_datagrams"],
            "tx_messages": engine["tx_messages"],  # fewer than tx_datagrams while UDP GSO groups sends
        }

    # ---- I/O ---------------------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        for handle, data, addr in self.engine.pump():
            if handle < 0:
                ufrag = username_fragment(data)
                transport = self._by_ufrag.get(ufrag) if ufrag else None
                if transport is not None:
                    transport.handle_stun(data, addr)
                continue
            transport = self.transports.by_handle(handle)
            if transport is None:
                continue
            if data[0] < 4:
                transport.handle_stun(data, addr)
            else:
                transport.handle_dtls(data)
        self._drain_events()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            self.engine.tick(int(now * 1000))
            self._drain_events()
            if now - self._last_consent_check >= 1.0:
                self._last_consent_check = now
                self.consent.run(int(now * 1000))  # only the transports whose deadline has passed

    def _drain_events(self) -> None:
        for event in self.engine.poll_events():
            kind = event[0]
            if kind == fastpath.EV_NEW_STREAM:
                _, p, layer, ssrc = event[:4]
                producer = self.producers.by_handle(p)
                if producer is not None:
                    self.notify("producer.stream_added", producer.id, {"layer": layer, "ssrc": ssrc})
            elif kind == fastpath.EV_LAYER_SWITCHED:
                _, c, layer = event[:3]
                consumer = self.consumers.by_handle(c)
                if consumer is not None:
                    consumer.current_layer = layer
                    self.notify("consumer.layers_changed", consumer.id, {"spatial": layer})

    # ---- media_router.* ----------------------------------------------------------------------------------
    async def media_router_create(self, router_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.routers.setdefault(router_id, MediaRouter(router_id))
        return {}

    async def media_router_close(self, router_id: str, body: dict[str, Any]) -> dict[str, Any]:
        router = self.routers.pop(router_id, None)
        if router is not None:
            for tid in list(router.transports):
                self._close_transport(tid)
        return {}

    def _router(self, router_id: str) -> MediaRouter:
        router = self.routers.get(router_id)
        if router is None:
            raise RequestError("NotFound", f"media router {router_id!r} not found")
        return router

    async def create_webrtc_transport(self, router_id: str, body: dict[str, Any]) -> dict[str, Any]:
        router = self._router(router_id)
        transport_id = _require(body, "transport_id", str)
        existing = self.transports.find(transport_id)
        if existing is None:
            ufrag = body.get("ice_ufrag") or secrets.token_hex(4)
            pwd = body.get("ice_pwd") or secrets.token_hex(16)
            if ufrag in self._by_ufrag:
                raise RequestError("DuplicateId", f"ICE ufrag {ufrag!r} already in use")
            transport = self.transports.create(
                transport_id,
                lambda handle: WebRtcTransport(
                    transport_id=transport_id,
                    router_id=router_id,
                    handle=handle,
                    engine=self.engine,
                    certificate=self.certificate,
                    ice_ufrag=ufrag,
                    ice_pwd=pwd,
                    notify=self.notify,
                    on_data_message=self._on_data_message,
                    consent=self.consent,
                ),
            )
            self._by_ufrag[ufrag] = transport
            router.transports.add(transport_id)
            existing = transport
        return {
            "ice_ufrag": existing.ice.local_ufrag,
            "ice_pwd": existing.ice.local_pwd,
            "fingerprints": self.fingerprints,
            "candidate": {"ip": self.worker.node_ip, "port": self.worker.rtc_port, "protocol": "udp"},
        }

    # ---- transport.* -------------------------------------------------------------------------------------
    async def transport_connect(self, transport_id: str, body: dict[str, Any]) -> dict[str, Any]:
        transport = self.transports.get(transport_id)
        role = _require(body, "role", str)
        if role not in ("client", "server"):
            raise RequestError("TypeError", f"invalid DTLS role {role!r}")
        fingerprints = [(str(a), str(v)) for a, v in _require(body, "fingerprints", list)]
        sctp_port = body.get("sctp_port")
        transport.connect(
            role=role,
            fingerprints=fingerprints,
            sctp_port=int(sctp_port) if sctp_port is not None else None,
            max_message_size=int(body.get("max_message_size", 262144)),
        )
        return {}

    async def transport_restart_ice(self, transport_id: str, body: dict[str, Any]) -> dict[str, Any]:
        transport = self.transports.get(transport_id)
        ufrag = _require(body, "ice_ufrag", str)
        pwd = _require(body, "ice_pwd", str)
        transport.restart_ice(ufrag, pwd)
        self._by_ufrag[ufrag] = transport
        return {"ice_ufrag": ufrag, "ice_pwd": pwd}

    async def transport_close(self, transport_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if transport_id in self.transports:
            self._close_transport(transport_id)
        return {}

    def _close_transport(self, transport_id: str) -> None:
        transport = self.transports.get(transport_id)
        for pid in list(transport.producer_ids):
            self._close_producer(pid)
        for cid in list(transport.consumer_ids):
            self._close_consumer(cid)
        for dpid in [d.id for d in self.data_producers.values() if d.transport is transport]:
            self._close_data_producer(dpid)
        for dcid in [d.id for d in self.data_consumers.values() if d.transport is transport]:
            self.data_consumers.pop(dcid).close()
        transport.close()
        self.transports.remove(transport_id)
        for ufrag in [u for u, t in self._by_ufrag.items() if t is transport]:
            del self._by_ufrag[ufrag]
        router = self.routers.get(transport.router_id)
        if router is not None:
            router.transports.discard(transport_id)

    async def transport_get_stats(self, transport_id: str, body: dict[str, Any]) -> dict[str, Any]:
        transport = self.transports.get(transport_id)
        stats: dict[str, Any] = {
            "transport": transport.dump(),
            "media": self.engine.snapshot_transport(transport.handle),
        }
        stats["producers"] = {
            pid: self.engine.snapshot_producer(self.producers.handle(pid)) for pid in transport.producer_ids
        }
        stats["consumers"] = {
            cid: self.engine.snapshot_consumer(self.consumers.handle(cid)) for cid in transport.consumer_ids
        }
        s = transport.stats
        stats["slow_path"] = {
            "stun_requests": s.stun_requests,
            "stun_rejected": s.stun_rejected,
            "dtls_records_in": s.dtls_records_in,
            "sctp_messages_in": s.sctp_messages_in,
            "sctp_messages_out": s.sctp_messages_out,
        }
        return stats

    async def transport_produce(self, transport_id: str, body: dict[str, Any]) -> dict[str, Any]:
        transport = self.transports.get(transport_id)
        producer_id = _require(body, "producer_id", str)
        if producer_id in self.producers:
            return {}
        kind = _require(body, "kind", str)
        if kind not in KINDS:
            raise RequestError("TypeError", f"invalid kind {kind!r}")
        ext = _require(body, "extensions", dict)
        id_map = _require(ext, "id_map", bytes)
        if len(id_map) != 256:
            raise RequestError("TypeError", "extensions.id_map must be 256 bytes")
        # NOTE: transport-cc is transport-wide and BUNDLE gives a URI one id on every m-line, but a peer may put it
        # on some m-lines only (aiortc: video only); an m-line without it must not switch TWCC off for the others.
        transport.twcc_id = int(ext.get("twcc_id", 0)) or transport.twcc_id
        self.engine.set_extension_map(
            transport.handle,
            int(ext.get("mid_id", 0)),
            int(ext.get("rid_id", 0)),
            int(ext.get("rrid_id", 0)),
            int(ext.get("audio_level_id", 0)),
            id_map,
            twcc_id=transport.twcc_id,
        )
        encodings = [
            (str(rid).encode(), int(ssrc), int(rtx)) for rid, ssrc, rtx in _require(body, "encodings", list)
        ]
        if not encodings:
            raise RequestError("TypeError", "a producer needs at least one encoding")
        producer = Producer(producer_id, transport_id, kind, str(body.get("mid", "")))
        handle = self.producers.add(producer_id, producer)
        try:
            self.engine.add_producer(
                handle,
                transport.handle,
                KINDS[kind],
                producer.mid.encode(),
                encodings,
                [int(pt) for pt in _require(body, "payload_types", list)],
                {int(rtx): int(apt) for rtx, apt in body.get("rtx_apt", [])},
                int(_require(body, "clock_rate", int)),
                codecs={
                    int(pt): fastpath.CODECS.get(str(name).lower(), fastpath.CODEC_UNKNOWN)
                    for pt, name in body.get("codecs", [])
                },
            )
        except Exception:
            self.producers.remove(producer_id)
            raise
        transport.producer_ids.add(producer_id)
        return {}

    async def transport_consume(self, transport_id: str, body: dict[str, Any]) -> dict[str, Any]:
        transport = self.transports.get(transport_id)
        consumer_id = _require(body, "consumer_id", str)
        if consumer_id in self.consumers:
            return {}
        producer_id = _require(body, "producer_id", str)
        p_handle = self.producers.handle(producer_id)
        producer = self.producers.get(producer_id)
        consumer = Consumer(consumer_id, transport_id, producer_id, producer.kind)
        handle = self.consumers.add(consumer_id, consumer)
        try:
            self.engine.add_consumer(
                handle,
                transport.handle,
                p_handle,
                int(_require(body, "out_ssrc", int)),
                {int(a): int(b) for a, b in _require(body, "pt_map", list)},
                bool(body.get("nack", True)),
                int(body.get("spatial", -1)),
            )
        except Exception:
            self.consumers.remove(consumer_id)
            raise
        producer.consumers.add(consumer_id)
        transport.consumer_ids.add(consumer_id)
        consumer.paused = bool(body.get("paused"))
        if consumer.paused or producer.paused:
            self.engine.pause_consumer(handle)
        return {}

    async def transport_produce_data(self, transport_id: str, body: dict[str, Any]) -> dict[str, Any]:
        transport = self.transports.get(transport_id)
        dp_id = _require(body, "data_producer_id", str)
        if dp_id not in self.data_producers:
            self.data_producers[dp_id] = DataProducer(
                dp_id,
                transport,
                _require(body, "label", str),
                relay_to_control=bool(body.get("relay_to_control")),
            )
        return {}

    async def transport_consume_data(self, transport_id: str, body: dict[str, Any]) -> dict[str, Any]:
        transport = self.transports.get(transport_id)
        dc_id = _require(body, "data_consumer_id", str)
        if dc_id in self.data_consumers:
            return {}
        dp_id = _require(body, "data_producer_id", str)
        producer = self.data_producers.get(dp_id)
        if producer is None:
            raise RequestError("NotFound", f"data producer {dp_id!r} not found")
        consumer = DataConsumer(dc_id, transport, producer, str(body.get("label", producer.label)))
        self.data_consumers[dc_id] = consumer
        producer.consumers[dc_id] = consumer
        consumer.open()
        return {}

    async def transport_open_data_channel(self, transport_id: str, body: dict[str, Any]) -> dict[str, Any]:
        transport = self.transports.get(transport_id)
        transport.want_data_channel(
            _require(body, "label", str),
            ordered=bool(body.get("ordered", True)),
            max_retransmits=body.get("max_retransmits"),
        )
        return {}

    async def transport_send_data(self, transport_id: str, body: dict[str, Any]) -> dict[str, Any]:
        transport = self.transports.get(transport_id)
        data = body.get("data")
        if not isinstance(data, bytes | str):
            raise RequestError("TypeError", "missing or invalid field 'data'")
        return {"sent": transport.send_data(_require(body, "label", str), data)}

    def _on_data_message(self, transport: WebRtcTransport, label: str, data: bytes | str) -> None:
        for producer in self.data_producers.values():
            if producer.transport is not transport or not producer.accepts(label):
                continue
            if producer.relay_to_control:
                # LiveKit's DataPacket semantics (sender identity, destinations, permissions) live in control.
                self.notify("data_producer.message", producer.id, {"label": label, "data": data})
            producer.forward(data)

    # ---- producer.* / consumer.* / data_*.close ---------------------------------------------------------
    async def producer_close(self, producer_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if producer_id in self.producers:
            self._close_producer(producer_id)
        return {}

    def _close_producer(self, producer_id: str) -> None:
        producer = self.producers.get(producer_id)
        if log.isEnabledFor(logging.DEBUG):  # its whole life in one line: what a post-mortem needs first
            log.debug("producer %s closed: %s", producer_id,
                      self.engine.snapshot_producer(self.producers.handle(producer_id)))
        for cid in list(producer.consumers):
            if cid in self.consumers:
                self._close_consumer(cid)
                self.notify("consumer.producer_closed", cid, {})
        self.engine.remove_producer(self.producers.handle(producer_id))
        self.producers.remove(producer_id)
        transport = self.transports.find(producer.transport_id)
        if transport is not None:
            transport.producer_ids.discard(producer_id)

    async def producer_pause(self, producer_id: str, body: dict[str, Any]) -> dict[str, Any]:
        producer = self.producers.get(producer_id)
        producer.paused = True
        for cid in producer.consumers:
            self.engine.pause_consumer(self.consumers.handle(cid))
        return {}

    async def producer_resume(self, producer_id: str, body: dict[str, Any]) -> dict[str, Any]:
        producer = self.producers.get(producer_id)
        producer.paused = False
        for cid in producer.consumers:
            if not self.consumers.get(cid).paused:
                self.engine.resume_consumer(self.consumers.handle(cid))
        return {}

    async def consumer_close(self, consumer_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if consumer_id in self.consumers:
            self._close_consumer(consumer_id)
        return {}

    def _close_consumer(self, consumer_id: str) -> None:
        consumer = self.consumers.get(consumer_id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("consumer %s closed: %s", consumer_id,
                      self.engine.snapshot_consumer(self.consumers.handle(consumer_id)))
        self.engine.remove_consumer(self.consumers.handle(consumer_id))
        self.consumers.remove(consumer_id)
        transport = self.transports.find(consumer.transport_id)
        if transport is not None:
            transport.consumer_ids.discard(consumer_id)
        producer = self.producers.find(consumer.producer_id)
        if producer is not None:
            producer.consumers.discard(consumer_id)

    async def consumer_pause(self, consumer_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.consumers.get(consumer_id).paused = True
        self.engine.pause_consumer(self.consumers.handle(consumer_id))
        return {}

    async def consumer_resume(self, consumer_id: str, body: dict[str, Any]) -> dict[str, Any]:
        consumer = self.consumers.get(consumer_id)
        consumer.paused = False
        producer = self.producers.find(consumer.producer_id)
        if producer is None or not producer.paused:
            self.engine.resume_consumer(self.consumers.handle(consumer_id))
        return {}

    async def consumer_set_preferred_layers(self, consumer_id: str, body: dict[str, Any]) -> dict[str, Any]:
        spatial = int(_require(body, "spatial", int))
        self.consumers.get(consumer_id).preferred_layer = spatial
        self.engine.set_consumer_layer(self.consumers.handle(consumer_id), spatial)
        return {}

    async def consumer_request_key_frame(self, consumer_id: str, body: dict[str, Any]) -> dict[str, Any]:
        consumer = self.consumers.get(consumer_id)
        self.engine.request_key_frame(self.producers.handle(consumer.producer_id))
        return {}

    async def data_producer_close(self, dp_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if dp_id in self.data_producers:
            self._close_data_producer(dp_id)
        return {}

    def _close_data_producer(self, dp_id: str) -> None:
        producer = self.data_producers.pop(dp_id)
        for dc_id in list(producer.consumers):
            consumer = self.data_consumers.pop(dc_id, None)
            if consumer is not None:
                consumer.close()

    async def data_consumer_close(self, dc_id: str, body: dict[str, Any]) -> dict[str, Any]:
        consumer = self.data_consumers.pop(dc_id, None)
        if consumer is not None:
            consumer.producer.consumers.pop(dc_id, None)
            consumer.close()
        return {}
