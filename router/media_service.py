"""The media side of a worker: the Engine, the MediaRouters and the handlers of control's media requests.

MediaService owns the worker's one ``fastpath.Engine`` (driven by ``loop.add_reader`` on the shared UDP socket and a
tick that sleeps until its next timer is due), the registries that turn control's string ids into Engine handles,
and the request handlers for ``media_router.*``, ``transport.*``, ``producer.*``, ``consumer.*`` and ``data_*``.
Every create is idempotent (the same id and body again answers the same result) so that control can replay after a
restart. Handlers are registered by :class:`router.protocol.Method` and receive their request body already parsed
(router/messages.py); notifications go out as the typed bodies of ``EVENTS``. It never sees SDP, tokens or room
names; control sends numbers.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any

import fastpath
from router.allocator import EngineEstimates, EstimateSource, NoEstimates, StreamAllocator
from router.channel import BodyHandler
from router.data import DataConsumer, DataProducer
from router.dtls import DtlsCertificate
from router.heap import HeapTrimmer
from router.ice import username_fragment
from router.ice_tcp import IceTcpServer
from router.media_router import Consumer, MediaRouter, Producer
from router.messages import (
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
    ProduceDataRequest,
    ProduceRequest,
    SendDataReply,
    SendDataRequest,
    SetPreferredLayersRequest,
    StreamAdded,
    StreamState,
    TransportScores,
)
from router.pipe import PipeService
from router.playout import PlayoutDelays
from router.ports import loopback_for
from router.protocol import Body, Empty, Event, Method, RequestError
from router.registry import Registry
from router.scores import ScoreKeeper
from router.totals import MediaTotals
from router.transport import ConsentSchedule, InvalidState, WebRtcTransport

if TYPE_CHECKING:
    from router.worker import Worker

log = logging.getLogger("router.media")

# The tick sleeps MAX_TICK_S, or until the allocator's pass, or TICK_S while one of the Engine's timers needs
# every tick (Engine.next_due_ms: a probe, NACK retries, a key-frame request, ...) and no packet arrived since the
# last run (while packets arrive, pump() runs the Engine's timers itself every TICK_S: Engine.auto_tick_ms). What
# tolerates being up to MAX_TICK_S late rides on these runs, whatever its own phase: the Engine's reports and
# send-rate windows, scores, consent checks, the heap trim (docs/FORWARDING.md, Timers). kick_tick ends the sleep
# early: a new transport, a request, a fallen estimate.
TICK_S = 0.02
MAX_TICK_S = 0.1
# While the Engine holds no transport nothing of the tick can be due sooner (the heap trim runs every few seconds;
# consent, scores and the allocator have nobody to look at): an idle worker wakes twice a second
# (docs/PERFORMANCE.md, Wake-ups).
IDLE_TICK_S = 0.5
CONSENT_CHECK_S = 1.0
KINDS = {"audio": 0, "video": 1}


class MediaService:
    """All media entities of one worker and the Engine that forwards their packets."""

    def __init__(self, worker: Worker, *, estimates: EstimateSource | None = None) -> None:
        self.worker = worker
        # UDP GSO (fastpath/gso.pxd) where the kernel has it, unless the gso setting is off.
        self.engine = fastpath.Engine(worker.sock.fileno(), gso=worker.gso)
        self.engine.auto_tick_ms = round(TICK_S * 1000)  # the Engine's timers ride on packet wake-ups
        self.certificate = DtlsCertificate.generate()
        self.fingerprints = [("sha-256", self.certificate.fingerprint("sha-256"))]
        self.routers: dict[str, MediaRouter] = {}
        self.transports: Registry[WebRtcTransport] = Registry("transport")
        self.producers: Registry[Producer] = Registry("producer")
        self.consumers: Registry[Consumer] = Registry("consumer")
        self.data_producers: dict[str, DataProducer] = {}
        self.data_consumers: dict[str, DataConsumer] = {}
        self._by_ufrag: dict[str, WebRtcTransport] = {}
        self._tick_task: asyncio.Task[None] | None = None
        self._tick_sleep: asyncio.Future[None] | None = None  # the tick loop's sleep, which kick_tick ends
        self._tick_timer: asyncio.TimerHandle | None = None  # ends _tick_sleep
        self._last_tick_at = float("-inf")  # the loop's time when the last tick ran
        self._wakeups_at_tick = -1  # the Engine's wake-ups when the last tick ended (did pump() run meanwhile?)
        # rx_hold_ms (control/config.py): after a wake-up the socket stays unwatched this long (docs/PERFORMANCE.md,
        # Wake-ups); _held is the timer that watches it again.
        self._hold_s = worker.rx_hold_ms / 1000.0
        self._held: asyncio.TimerHandle | None = None
        self.consent = ConsentSchedule()  # connected transports by consent deadline (RFC 7675)
        self._last_consent_check = 0.0
        # Every announced address over UDP, then over ICE-TCP when the worker listens on TCP (router/ice_tcp.py).
        # The Engine forwards IPv4 tuples only: IPv6 addresses beside an IPv4 UDP port are announced over ICE-TCP
        # alone, whose IPv6 listener (tcp6_sock) relays into the UDP port over IPv4 like any TCP connection.
        self.ice_tcp: IceTcpServer | None = None
        if worker.tcp_sock is not None:
            more = (worker.tcp6_sock,) if worker.tcp6_sock is not None else ()
            self.ice_tcp = IceTcpServer(worker.loop, worker.tcp_sock, (loopback_for(worker.bind_ip), worker.rtc_port),
                                        more)
        udp_version = ip_address(worker.bind_ip).version
        self.candidates = [IceCandidate(ip=ip, port=worker.rtc_port, protocol="udp") for ip in worker.node_ips
                           if ip_address(ip).version == udp_version]
        if self.ice_tcp is not None:
            self.candidates += [IceCandidate(ip=ip, port=worker.rtc_port, protocol="tcp") for ip in worker.node_ips
                                if ip_address(ip).version == udp_version or worker.tcp6_sock is not None]
        # Shares each subscriber transport's bandwidth estimate among its consumers (router/allocator.py).
        if estimates is None:
            estimates = EngineEstimates(self.engine) if worker.congestion_control else NoEstimates()
        self.allocator = StreamAllocator(self.engine, estimates, self.transports,
                                         self.producers, self.consumers, self._on_stream_state)
        # Playout delay floors of video consumers on links that need repairs (router/playout.py), decided from the
        # same 2 s windows as the scores; off with congestion control, as every other adaptation to the link.
        self.playout = PlayoutDelays(self.engine)
        self._playout_on = worker.congestion_control
        # Connection-quality scores of every producer and consumer, each transport every 2 s (router/scores.py).
        self.scores = ScoreKeeper(self.engine, self.transports, self.producers, self.consumers, self._emit_scores,
                                  observe_consumer=self.playout.observe)
        # Monotonic media totals for the heartbeat, summed by the Engine (router/totals.py).
        self.totals = MediaTotals(self.engine)
        # Freed heap pages back to the kernel after a crowd left (router/heap.py).
        self.heap = HeapTrimmer()
        # Both ends of the pipes between this worker and the others of the host (router/pipe.py).
        self.pipes = PipeService(self)

    # ---- wiring ------------------------------------------------------------------------------------------
    def start(self) -> None:
        loop = self.worker.loop
        self.engine.set_reader(self._slow_path, True)
        loop.add_reader(self.worker.sock.fileno(), self._reader())
        self._tick_task = loop.create_task(self._tick_loop())
        if self.ice_tcp is not None:
            ice_tcp = self.ice_tcp
            loop.create_task(ice_tcp.start())
            self.worker.add_close_callback(ice_tcp.close)
            self.worker.add_heartbeat_source(ice_tcp.stats)
        for method, handler in self.request_handlers().items():
            self.worker.channel.handle(method, self._guard(handler))
        self.worker.add_heartbeat_source(self.heartbeat)
        self.worker.add_heartbeat_source(self.memory)
        if self._hold_s:
            self.worker.add_close_callback(self._end_hold)

    def request_handlers(self) -> dict[Method, BodyHandler]:
        """Every media request this service answers, by method."""
        return {
            Method.MEDIA_ROUTER_CREATE: self.media_router_create,
            Method.MEDIA_ROUTER_CLOSE: self.media_router_close,
            Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT: self.create_webrtc_transport,
            Method.MEDIA_ROUTER_PRODUCE_PIPE: self.pipes.produce_pipe,
            Method.PRODUCER_PIPE: self.pipes.producer_pipe,
            Method.PRODUCER_UNPIPE: self.pipes.producer_unpipe,
            Method.TRANSPORT_CONNECT: self.transport_connect,
            Method.TRANSPORT_RESTART_ICE: self.transport_restart_ice,
            Method.TRANSPORT_CLOSE: self.transport_close,
            Method.TRANSPORT_GET_STATS: self.transport_get_stats,
            Method.TRANSPORT_PRODUCE: self.transport_produce,
            Method.TRANSPORT_CONSUME: self.transport_consume,
            Method.TRANSPORT_PRODUCE_DATA: self.transport_produce_data,
            Method.TRANSPORT_CONSUME_DATA: self.transport_consume_data,
            Method.TRANSPORT_OPEN_DATA_CHANNEL: self.transport_open_data_channel,
            Method.TRANSPORT_SEND_DATA: self.transport_send_data,
            Method.PRODUCER_CLOSE: self.producer_close,
            Method.PRODUCER_PAUSE: self.producer_pause,
            Method.PRODUCER_RESUME: self.producer_resume,
            Method.CONSUMER_CLOSE: self.consumer_close,
            Method.CONSUMER_PAUSE: self.consumer_pause,
            Method.CONSUMER_RESUME: self.consumer_resume,
            Method.CONSUMER_SET_PREFERRED_LAYERS: self.consumer_set_preferred_layers,
            Method.CONSUMER_REQUEST_KEY_FRAME: self.consumer_request_key_frame,
            Method.DATA_PRODUCER_CLOSE: self.data_producer_close,
            Method.DATA_CONSUMER_CLOSE: self.data_consumer_close,
        }

    def _guard(self, handler: BodyHandler) -> BodyHandler:
        async def run(target_id: str, body: Body) -> Body:
            try:
                return await handler(target_id, body)
            except RequestError:
                raise
            except KeyError as exc:
                raise RequestError("NotFound", str(exc.args[0]) if exc.args else "not found") from None
            except (ValueError, InvalidState) as exc:
                raise RequestError(type(exc).__name__, str(exc)) from None
            finally:
                self.kick_tick()  # what the request changed may have a timer due sooner than the tick's sleep

        return run

    def notify(self, event: Event, target_id: str, body: Body) -> None:
        self.worker.channel.emit(event, target_id, body)

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
            "srtp_sessions": engine["srtp_sessions"],
            "rx_datagrams": engine["rx_datagrams"],
            "tx_datagrams": engine["tx_datagrams"],
            "tx_messages": engine["tx_messages"],  # fewer than tx_datagrams while UDP GSO groups sends
            "rx_wakeups": engine["wakeups"],  # pump() calls (the socket was readable): rx_datagrams per wake-up
            **self.totals.collect(),  # "totals" and "drops" (router/totals.py)
            **self.pipes.counters(),
        }

    def memory(self) -> dict[str, int]:
        """Heartbeat counters of memory: the Engine's own C allocations (fastpath/mem.pxd) and the heap's
        (router/heap.py)."""
        return {"engine_c_bytes": self.engine.snapshot_engine()["c_bytes"], **self.heap.counters()}

    # ---- I/O ---------------------------------------------------------------------------------------------
    def _reader(self) -> Callable[[], None]:
        """The socket's reader: the Engine's own (C; Python only for a wake-up with STUN, DTLS or events), or with
        a receive hold this service's, which takes the socket off the loop after each wake-up."""
        return self._on_readable if self._hold_s else self.engine.on_readable

    def _on_readable(self) -> None:
        self._slow_path(self.engine.pump(True))
        if self._held is None:
            # What arrives during the hold waits in the socket and is read, forwarded and sent (one GSO message per
            # transport and size) by the next wake-up: fewer wake-ups and sends for each packet's wait of <= the hold.
            loop = self.worker.loop
            loop.remove_reader(self.worker.sock.fileno())
            self._held = loop.call_later(self._hold_s, self._watch_again)

    def _slow_path(self, datagrams: list[tuple[int, bytes, tuple[str, int], str]] | None) -> None:
        """A wake-up's work for Python: its STUN and DTLS datagrams, then the Engine's events."""
        ice_tcp = self.ice_tcp
        # (handle, data, addr, local): local is the address the datagram came to ("" unless IP_PKTINFO is on)
        for handle, data, addr, local in datagrams or ():
            if handle < 0:
                ufrag = username_fragment(data)
                transport = self._by_ufrag.get(ufrag) if ufrag else None
                if transport is not None:
                    transport.handle_stun(data, addr, ice_tcp.peer_of(addr) if ice_tcp is not None else None, local)
                continue
            transport = self.transports.by_handle(handle)
            if transport is None:
                continue
            if data[0] < 4:
                transport.handle_stun(data, addr, ice_tcp.peer_of(addr) if ice_tcp is not None else None, local)
            else:
                transport.handle_dtls(data)
        self._drain_events()

    def _end_hold(self) -> None:
        if self._held is not None:
            self._held.cancel()
            self._held = None

    def _watch_again(self) -> None:
        self._held = None
        self.worker.loop.add_reader(self.worker.sock.fileno(), self._reader())

    def kick_tick(self) -> None:
        """Something may have a timer due sooner (a transport was added, a request changed state, an estimate
        fell): the tick runs TICK_S after the last one at the latest (at once if that has passed), and works out
        its next sleep again. A burst of requests so costs no more ticks than TICK_S allows."""
        sleep = self._tick_sleep
        if sleep is None or sleep.done():
            return
        wake_at = self._last_tick_at + TICK_S
        timer = self._tick_timer
        loop = self.worker.loop
        # uvloop's call_later with a delay <= 0 returns a plain Handle (due now, no ``when``)
        if timer is not None and getattr(timer, "when", loop.time)() <= wake_at:
            return
        if timer is not None:
            timer.cancel()
        if wake_at <= loop.time():
            self._tick_timer = None
            sleep.set_result(None)
        else:
            self._tick_timer = loop.call_at(wake_at, self._end_sleep)

    def _end_sleep(self) -> None:
        self._tick_timer = None
        sleep = self._tick_sleep
        if sleep is not None and not sleep.done():
            sleep.set_result(None)

    async def _sleep(self, delay: float) -> None:
        loop = self.worker.loop
        sleep = self._tick_sleep = loop.create_future()
        self._tick_timer = loop.call_later(delay, self._end_sleep)
        try:
            await sleep
        finally:
            if self._tick_timer is not None:
                self._tick_timer.cancel()
                self._tick_timer = None
            self._tick_sleep = None
            self._last_tick_at = loop.time()

    def _tick_delay(self) -> float:
        """How long the tick may sleep, within [TICK_S, MAX_TICK_S]: until the allocator's pass, or TICK_S while an
        Engine timer needs every tick and pump() does not run it; the other timers ride on these runs."""
        engine = self.engine
        if not engine.transport_count:
            return IDLE_TICK_S
        now = time.monotonic()
        delay = min(MAX_TICK_S, self.allocator.next_run - now)
        wakeups = engine.wakeups
        if wakeups == self._wakeups_at_tick and engine.next_due_ms(int(now * 1000)) <= (now + TICK_S) * 1000:
            delay = 0.0  # no packet since the last tick, so pump() ran none of the Engine's timers: the tick does
        self._wakeups_at_tick = wakeups
        return max(TICK_S, delay)

    async def _tick_loop(self) -> None:
        while True:
            await self._sleep(self._tick_delay())
            now = time.monotonic()
            self.engine.tick(int(now * 1000))
            self._drain_events()
            if now - self._last_consent_check >= CONSENT_CHECK_S:
                self._last_consent_check = now
                self.consent.run(int(now * 1000))  # only the transports whose deadline has passed
            self.allocator.tick(now)
            self.scores.tick(now)
            self.heap.tick(now)

    def _emit_scores(self, transport_id: str, scores: TransportScores) -> None:
        self.notify(Event.TRANSPORT_SCORES, transport_id, scores)

    def _drain_events(self) -> None:
        for event in self.engine.poll_events():
            kind = event[0]
            if kind == fastpath.EV_NEW_STREAM:
                _, p, layer, ssrc = event[:4]
                producer = self.producers.by_handle(p)
                if producer is not None:
                    self.notify(Event.PRODUCER_STREAM_ADDED, producer.id, StreamAdded(layer=layer, ssrc=ssrc))
            elif kind == fastpath.EV_BWE_CHANGED:
                _, t, bps, state = event[:4]
                bwe_transport = self.transports.by_handle(t)
                if bwe_transport is not None:
                    if bps < bwe_transport.bwe_bps:
                        self.allocator.wake()  # a lowering must not wait for the next pass
                        self.kick_tick()
                    bwe_transport.bwe_bps = bps  # what the stream allocator reads
                    log.debug("transport %s: estimate %d bit/s (%s)", bwe_transport.id, bps,
                              fastpath.BWE_STATES[state])
            elif kind == fastpath.EV_LAYER_SWITCHED:
                _, c, layer = event[:3]
                consumer = self.consumers.by_handle(c)
                if consumer is not None:
                    consumer.current_layer = layer
                    self.notify(Event.CONSUMER_LAYERS_CHANGED, consumer.id, LayersChanged(spatial=layer))

    def _on_stream_state(self, consumer: Consumer, paused: bool) -> None:
        self.notify(Event.CONSUMER_STREAM_STATE, consumer.id, StreamState(state="paused" if paused else "active"))

    # ---- media_router.* ----------------------------------------------------------------------------------
    async def media_router_create(self, router_id: str, body: Empty) -> Empty:
        self.routers.setdefault(router_id, MediaRouter(router_id))
        return Empty()

    async def media_router_close(self, router_id: str, body: Empty) -> Empty:
        router = self.routers.pop(router_id, None)
        if router is not None:
            for tid in list(router.transports):
                self._close_transport(tid)
            for pid in self.pipes.router_producers(router_id):
                if pid in self.producers:
                    self._close_producer(pid)
        return Empty()

    def _router(self, router_id: str) -> MediaRouter:
        router = self.routers.get(router_id)
        if router is None:
            raise RequestError("NotFound", f"media router {router_id!r} not found")
        return router

    async def create_webrtc_transport(
        self, router_id: str, body: CreateWebRtcTransportRequest
    ) -> CreateWebRtcTransportReply:
        router = self._router(router_id)
        transport_id = body.transport_id
        existing = self.transports.find(transport_id)
        if existing is None:
            ufrag = body.ice_ufrag or secrets.token_hex(4)
            pwd = body.ice_pwd or secrets.token_hex(16)
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
            transport.ufrags.append(ufrag)
            router.transports.add(transport_id)
            existing = transport
            self.kick_tick()
        if body.data_producer is not None:
            await self.transport_produce_data(transport_id, body.data_producer)
        for channel in body.data_channels:
            await self.transport_open_data_channel(transport_id, channel)
        return CreateWebRtcTransportReply(
            ice_ufrag=existing.ice.local_ufrag,
            ice_pwd=existing.ice.local_pwd,
            fingerprints=self.fingerprints,
            candidate=self.candidates[0],
            candidates=self.candidates,
        )

    # ---- transport.* -------------------------------------------------------------------------------------
    async def transport_connect(self, transport_id: str, body: ConnectRequest) -> Empty:
        transport = self.transports.get(transport_id)
        transport.connect(
            role=body.role,
            fingerprints=body.fingerprints,
            sctp_port=body.sctp_port,
            max_message_size=body.max_message_size,
        )
        return Empty()

    async def transport_restart_ice(self, transport_id: str, body: IceParameters) -> IceParameters:
        transport = self.transports.get(transport_id)
        transport.restart_ice(body.ice_ufrag, body.ice_pwd)
        self._by_ufrag[body.ice_ufrag] = transport
        transport.ufrags.append(body.ice_ufrag)
        return body

    async def transport_close(self, transport_id: str, body: Empty) -> Empty:
        if transport_id in self.transports:
            self._close_transport(transport_id)
        return Empty()

    def _close_transport(self, transport_id: str) -> None:
        transport = self.transports.get(transport_id)
        for pid in list(transport.producer_ids):
            self._close_producer(pid)
        for cid in list(transport.consumer_ids):
            self._close_consumer(cid)
        for dpid in list(transport.data_producer_ids):
            self._close_data_producer(dpid)
        for dcid in list(transport.data_consumer_ids):
            self._pop_data_consumer(dcid).close()
        transport.close()
        self.transports.remove(transport_id)
        for ufrag in transport.ufrags:
            if self._by_ufrag.get(ufrag) is transport:  # a later restart of another transport may have taken it
                del self._by_ufrag[ufrag]
        router = self.routers.get(transport.router_id)
        if router is not None:
            router.transports.discard(transport_id)

    async def transport_get_stats(self, transport_id: str, body: Empty) -> GetStatsReply:
        transport = self.transports.get(transport_id)
        s = transport.stats
        return GetStatsReply(
            transport=transport.dump(),
            media=self.engine.snapshot_transport(transport.handle),
            producers={
                pid: self.engine.snapshot_producer(self.producers.handle(pid)) for pid in transport.producer_ids
            },
            consumers={
                cid: self.engine.snapshot_consumer(self.consumers.handle(cid)) for cid in transport.consumer_ids
            },
            slow_path={
                "stun_requests": s.stun_requests,
                "stun_rejected": s.stun_rejected,
                "dtls_records_in": s.dtls_records_in,
                "sctp_messages_in": s.sctp_messages_in,
                "sctp_messages_out": s.sctp_messages_out,
            },
        )

    async def transport_produce(self, transport_id: str, body: ProduceRequest) -> Empty:
        transport = self.transports.get(transport_id)
        producer_id = body.producer_id
        if producer_id in self.producers:
            return Empty()
        ext = body.extensions
        # NOTE: transport-cc is transport-wide and BUNDLE gives a URI one id on every m-line, but a peer may put it
        # on some m-lines only (aiortc: video only); an m-line without it must not switch TWCC off for the others.
        transport.twcc_id = ext.twcc_id or transport.twcc_id
        self.engine.set_extension_map(
            transport.handle,
            ext.mid_id,
            ext.rid_id,
            ext.rrid_id,
            ext.audio_level_id,
            ext.id_map,
            twcc_id=transport.twcc_id,
        )
        encodings = [(rid.encode(), ssrc, rtx) for rid, ssrc, rtx in body.encodings]
        producer = Producer(producer_id, transport_id, body.kind, body.mid, source=body.source)
        handle = self.producers.add(producer_id, producer)
        try:
            self.engine.add_producer(
                handle,
                transport.handle,
                KINDS[body.kind],
                producer.mid.encode(),
                encodings,
                body.payload_types,
                dict(body.rtx_apt),
                body.clock_rate,
                codecs={pt: fastpath.CODECS.get(name.lower(), fastpath.CODEC_UNKNOWN) for pt, name in body.codecs},
            )
        except Exception:
            self.producers.remove(producer_id)
            raise
        transport.producer_ids.add(producer_id)
        return Empty()

    async def transport_consume(self, transport_id: str, body: ConsumeRequest) -> Empty:
        transport = self.transports.get(transport_id)
        consumer_id = body.consumer_id
        if consumer_id in self.consumers:
            return Empty()
        p_handle = self.producers.handle(body.producer_id)
        producer = self.producers.get(body.producer_id)
        consumer = Consumer(consumer_id, transport_id, body.producer_id, producer.kind, preferred_layer=body.spatial)
        handle = self.consumers.add(consumer_id, consumer)
        try:
            self.engine.add_consumer(
                handle,
                transport.handle,
                p_handle,
                body.out_ssrc,
                dict(body.pt_map),
                body.nack,
                body.spatial,
                rtx_ssrc=body.rtx_ssrc,
                rtx_pt_map=dict(body.rtx_pt_map),
            )
        except Exception:
            self.consumers.remove(consumer_id)
            raise
        if body.twcc_id and not transport.send_twcc_id:
            # Send-side bandwidth estimation toward this transport (docs/FORWARDING.md, Transport-wide congestion
            # control): the Engine stamps the transport-wide seq and reads the peer's feedback.
            self.engine.set_transport_cc(transport.handle, body.twcc_id)
            transport.send_twcc_id = body.twcc_id
        if body.playout_delay_id and producer.kind == "video" and self._playout_on:
            self.playout.watch(consumer_id, handle, body.playout_delay_id)
        producer.consumers.add(consumer_id)
        transport.consumer_ids.add(consumer_id)
        consumer.paused = body.paused
        if consumer.paused or producer.paused:
            self.engine.pause_consumer(handle)
        return Empty()

    async def transport_produce_data(self, transport_id: str, body: ProduceDataRequest) -> Empty:
        transport = self.transports.get(transport_id)
        if body.data_producer_id not in self.data_producers:
            self.data_producers[body.data_producer_id] = DataProducer(
                body.data_producer_id, transport, body.label, relay_to_control=body.relay_to_control
            )
            transport.data_producer_ids[body.data_producer_id] = None
        return Empty()

    async def transport_consume_data(self, transport_id: str, body: ConsumeDataRequest) -> Empty:
        transport = self.transports.get(transport_id)
        dc_id = body.data_consumer_id
        if dc_id in self.data_consumers:
            return Empty()
        producer = self.data_producers.get(body.data_producer_id)
        if producer is None:
            raise RequestError("NotFound", f"data producer {body.data_producer_id!r} not found")
        label = body.label if body.label is not None else producer.label
        consumer = DataConsumer(dc_id, transport, producer, label)
        self.data_consumers[dc_id] = consumer
        transport.data_consumer_ids[dc_id] = None
        producer.consumers[dc_id] = consumer
        consumer.open()
        return Empty()

    async def transport_open_data_channel(self, transport_id: str, body: OpenDataChannelRequest) -> Empty:
        transport = self.transports.get(transport_id)
        transport.want_data_channel(body.label, ordered=body.ordered, max_retransmits=body.max_retransmits)
        return Empty()

    async def transport_send_data(self, transport_id: str, body: SendDataRequest) -> SendDataReply:
        transport = self.transports.get(transport_id)
        return SendDataReply(sent=transport.send_data(body.label, body.data))

    def _on_data_message(self, transport: WebRtcTransport, label: str, data: bytes | str) -> None:
        for dp_id in transport.data_producer_ids:
            producer = self.data_producers[dp_id]
            if not producer.accepts(label):
                continue
            if producer.relay_to_control:
                # LiveKit's DataPacket semantics (sender identity, destinations, permissions) live in control.
                self.notify(Event.DATA_PRODUCER_MESSAGE, producer.id, DataMessage(label=label, data=data))
            producer.forward(data)

    # ---- producer.* / consumer.* / data_*.close ---------------------------------------------------------
    async def producer_close(self, producer_id: str, body: Empty) -> Empty:
        if producer_id in self.producers:
            self._close_producer(producer_id)
        return Empty()

    def _close_producer(self, producer_id: str) -> None:
        producer = self.producers.get(producer_id)
        if log.isEnabledFor(logging.DEBUG):  # its whole life in one line: what a post-mortem needs first
            log.debug("producer %s closed: %s", producer_id,
                      self.engine.snapshot_producer(self.producers.handle(producer_id)))
        for cid in list(producer.consumers):
            if cid in self.consumers:
                self._close_consumer(cid)
                self.notify(Event.CONSUMER_PRODUCER_CLOSED, cid, Empty())
        self.pipes.producer_closed(producer_id)
        self.engine.remove_producer(self.producers.handle(producer_id))
        self.producers.remove(producer_id)
        self.pipes.pipe_producer_removed(producer)
        transport = self.transports.find(producer.transport_id)
        if transport is not None:
            transport.producer_ids.discard(producer_id)

    async def producer_pause(self, producer_id: str, body: Empty) -> Empty:
        producer = self.producers.get(producer_id)
        producer.paused = True
        for cid in producer.consumers:
            self.engine.pause_consumer(self.consumers.handle(cid))
        self.pipes.producer_paused(producer_id, True)
        return Empty()

    async def producer_resume(self, producer_id: str, body: Empty) -> Empty:
        producer = self.producers.get(producer_id)
        producer.paused = False
        for cid in producer.consumers:
            consumer = self.consumers.get(cid)
            if not consumer.paused and not consumer.bw_paused:
                self.engine.resume_consumer(self.consumers.handle(cid))
        self.pipes.producer_paused(producer_id, False)
        return Empty()

    async def consumer_close(self, consumer_id: str, body: Empty) -> Empty:
        if consumer_id in self.consumers:
            self._close_consumer(consumer_id)
        return Empty()

    def _close_consumer(self, consumer_id: str) -> None:
        consumer = self.consumers.get(consumer_id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("consumer %s closed: %s", consumer_id,
                      self.engine.snapshot_consumer(self.consumers.handle(consumer_id)))
        self.engine.remove_consumer(self.consumers.handle(consumer_id))
        self.consumers.remove(consumer_id)
        self.playout.forget(consumer_id)
        transport = self.transports.find(consumer.transport_id)
        if transport is not None:
            transport.consumer_ids.discard(consumer_id)
        producer = self.producers.find(consumer.producer_id)
        if producer is not None:
            producer.consumers.discard(consumer_id)

    async def consumer_pause(self, consumer_id: str, body: Empty) -> Empty:
        self.consumers.get(consumer_id).paused = True
        self.engine.pause_consumer(self.consumers.handle(consumer_id))
        return Empty()

    async def consumer_resume(self, consumer_id: str, body: Empty) -> Empty:
        consumer = self.consumers.get(consumer_id)
        consumer.paused = False
        producer = self.producers.find(consumer.producer_id)
        if not consumer.bw_paused and (producer is None or not producer.paused):
            self.engine.resume_consumer(self.consumers.handle(consumer_id))
        return Empty()

    async def consumer_set_preferred_layers(self, consumer_id: str, body: SetPreferredLayersRequest) -> Empty:
        consumer = self.consumers.get(consumer_id)
        old, consumer.preferred_layer = consumer.preferred_layer, body.spatial
        self.allocator.preference_changed(consumer, old)
        # The Engine gets the lower of this and the stream allocator's limit (router/allocator.py).
        self.engine.set_consumer_layer(self.consumers.handle(consumer_id), consumer.layer_cap)
        return Empty()

    async def consumer_request_key_frame(self, consumer_id: str, body: Empty) -> Empty:
        consumer = self.consumers.get(consumer_id)
        self.engine.request_key_frame(self.producers.handle(consumer.producer_id))
        return Empty()

    async def data_producer_close(self, dp_id: str, body: Empty) -> Empty:
        if dp_id in self.data_producers:
            self._close_data_producer(dp_id)
        return Empty()

    def _close_data_producer(self, dp_id: str) -> None:
        producer = self.data_producers.pop(dp_id)
        producer.transport.data_producer_ids.pop(dp_id, None)
        for dc_id in list(producer.consumers):
            consumer = self._pop_data_consumer(dc_id)
            if consumer is not None:
                consumer.close()

    def _pop_data_consumer(self, dc_id: str) -> DataConsumer | None:
        """Removes a data consumer from the worker's table and from its transport's."""
        consumer = self.data_consumers.pop(dc_id, None)
        if consumer is not None:
            consumer.transport.data_consumer_ids.pop(dc_id, None)
        return consumer

    async def data_consumer_close(self, dc_id: str, body: Empty) -> Empty:
        consumer = self._pop_data_consumer(dc_id)
        if consumer is not None:
            consumer.producer.consumers.pop(dc_id, None)
            consumer.close()
        return Empty()

