"""MediaClient: control's typed face of one worker's media requests.

Everything control asks a worker to build goes through here: media routers, WebRTC transports, producers,
consumers and data channels. It turns negotiation results (``control.rtc.negotiation``) into the typed request bodies
of router/messages.py, sends each under its ``Method`` and parses the reply with the reply body's ``from_wire``,
so that rooms and signaling never write a request body by hand. It holds no state of its own; the caller keeps
ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, get_args

from control.rtc.codecs import SUBSCRIBER_PLAYOUT_DELAY_ID, SUBSCRIBER_TWCC_ID, URI_TRANSPORT_CC
from control.rtc.negotiation import TrackPlan, TransportParams
from router.messages import (
    ConnectRequest,
    ConsumeDataRequest,
    ConsumeRequest,
    CreateWebRtcTransportReply,
    CreateWebRtcTransportRequest,
    GetStatsReply,
    IceParameters,
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
    TrackSource,
    UnpipeRequest,
)
from router.protocol import Body, Empty, Method, WorkerDump

EMPTY = Empty()


def track_source(name: str) -> TrackSource:
    """A TrackPlan's source as the contract's TrackSource ("unknown" for a name it does not know)."""
    return cast(TrackSource, name) if name in get_args(TrackSource) else "unknown"


@dataclass(frozen=True, slots=True)
class DataProducerSpec:
    """A DataProducer created with its transport (:meth:`MediaClient.produce_data`'s arguments)."""

    data_producer_id: str
    label: str = "*"
    relay_to_control: bool = False


@dataclass(frozen=True, slots=True)
class DataChannelSpec:
    """A server-created channel opened with its transport (:meth:`MediaClient.open_data_channel`'s arguments)."""

    label: str
    ordered: bool = True
    max_retransmits: int | None = None


class RequestSender(Protocol):
    """What MediaClient needs from ``control.workers.worker_client.WorkerClient``."""

    async def request(
        self, method: str, target_id: str, body: dict[str, Any], timeout: float = ...
    ) -> dict[str, Any]: ...


class MediaClient:
    """Media requests to one worker."""

    def __init__(self, worker: RequestSender) -> None:
        self.worker = worker

    async def _request(self, method: Method, target_id: str, body: Body) -> dict[str, Any]:
        return await self.worker.request(method, target_id, body.to_wire())

    async def dump(self) -> WorkerDump:
        """The worker's identity and its media counts (``worker.dump``), for operators and tests."""
        return WorkerDump.from_wire(await self._request(Method.WORKER_DUMP, "", EMPTY))

    async def create_router(self, router_id: str) -> None:
        await self._request(Method.MEDIA_ROUTER_CREATE, router_id, EMPTY)

    async def close_router(self, router_id: str) -> None:
        await self._request(Method.MEDIA_ROUTER_CLOSE, router_id, EMPTY)

    async def create_transport(
        self,
        router_id: str,
        transport_id: str,
        *,
        ice_ufrag: str | None = None,
        ice_pwd: str | None = None,
        data_producer: DataProducerSpec | None = None,
        data_channels: Sequence[DataChannelSpec] = (),
    ) -> TransportParams:
        """A WebRTC transport; with ``data_producer`` and ``data_channels`` it is set up as :meth:`produce_data`
        and :meth:`open_data_channel` would, in the same request."""
        request = CreateWebRtcTransportRequest(
            transport_id=transport_id,
            ice_ufrag=ice_ufrag if ice_ufrag and ice_pwd else None,
            ice_pwd=ice_pwd if ice_ufrag and ice_pwd else None,
            data_producer=None if data_producer is None else ProduceDataRequest(
                data_producer_id=data_producer.data_producer_id, label=data_producer.label,
                relay_to_control=data_producer.relay_to_control),
            data_channels=[OpenDataChannelRequest(label=c.label, ordered=c.ordered, max_retransmits=c.max_retransmits)
                           for c in data_channels],
        )
        reply = CreateWebRtcTransportReply.from_wire(
            await self._request(Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT, router_id, request)
        )
        return TransportParams(
            ice_ufrag=reply.ice_ufrag,
            ice_pwd=reply.ice_pwd,
            fingerprints=list(reply.fingerprints),
            candidate_ip=reply.candidate.ip,
            candidate_port=reply.candidate.port,
            candidates=tuple((c.protocol, c.ip, c.port) for c in reply.candidates),
        )

    async def connect(
        self,
        transport_id: str,
        *,
        role: str,
        fingerprints: list[tuple[str, str]],
        sctp_port: int | None = None,
        max_message_size: int = 262144,
    ) -> None:
        """``role`` is the worker's DTLS role: "server" when the peer is the DTLS client."""
        request = ConnectRequest(
            role=role,  # type: ignore[arg-type]  # checked by the worker: "client" or "server"
            fingerprints=fingerprints,
            sctp_port=sctp_port,
            max_message_size=max_message_size,
        )
        await self._request(Method.TRANSPORT_CONNECT, transport_id, request)

    async def restart_ice(self, transport_id: str, ice_ufrag: str, ice_pwd: str) -> None:
        """New ICE credentials (ICE restart); the old ones stay valid until the first check with the new ones."""
        await self._request(Method.TRANSPORT_RESTART_ICE, transport_id, IceParameters(ice_ufrag=ice_ufrag,
                                                                                      ice_pwd=ice_pwd))

    async def close_transport(self, transport_id: str) -> None:
        await self._request(Method.TRANSPORT_CLOSE, transport_id, EMPTY)

    async def get_stats(self, transport_id: str) -> dict[str, Any]:
        reply = await self._request(Method.TRANSPORT_GET_STATS, transport_id, EMPTY)
        return GetStatsReply.from_wire(reply).to_wire()

    async def produce(self, transport_id: str, producer_id: str, track: TrackPlan) -> None:
        request = ProduceRequest(
            producer_id=producer_id,
            kind=track.kind,  # type: ignore[arg-type]  # "audio" or "video" for a media m-line
            mid=track.mid,
            encodings=[(rid or "", ssrc or 0, rtx or 0) for rid, ssrc, rtx in track.encodings],
            payload_types=[c.pt for c in track.codecs],
            codecs=[(c.pt, c.name) for c in track.codecs],
            rtx_apt=list(track.rtx_apt.items()),
            clock_rate=track.codecs[0].clock_rate,
            source=track_source(track.source),
            extensions=RtpExtensions(
                id_map=bytes(track.id_map),
                mid_id=track.mid_id,
                rid_id=track.rid_id,
                rrid_id=track.rrid_id,
                audio_level_id=track.audio_level_id,
                twcc_id=track.extensions.get(URI_TRANSPORT_CC, 0),
            ),
        )
        await self._request(Method.TRANSPORT_PRODUCE, transport_id, request)

    async def consume(
        self,
        transport_id: str,
        consumer_id: str,
        producer_id: str,
        *,
        out_ssrc: int,
        pt_map: dict[int, int],
        nack: bool = True,
        spatial: int = -1,
        paused: bool = False,
        rtx_ssrc: int = 0,
        rtx_pt_map: dict[int, int] | None = None,
    ) -> None:
        request = ConsumeRequest(
            consumer_id=consumer_id,
            producer_id=producer_id,
            out_ssrc=out_ssrc,
            pt_map=list(pt_map.items()),
            nack=nack,
            spatial=spatial,
            paused=paused,
            rtx_ssrc=rtx_ssrc,
            rtx_pt_map=list((rtx_pt_map or {}).items()),
            # Every subscriber offer negotiates transport-cc at this id (control/rtc/negotiation.py).
            twcc_id=SUBSCRIBER_TWCC_ID,
            playout_delay_id=SUBSCRIBER_PLAYOUT_DELAY_ID,
        )
        await self._request(Method.TRANSPORT_CONSUME, transport_id, request)

    async def pipe(self, producer_id: str, pipe_id: str, *, peer_port: int, ssrcs: list[tuple[int, int]],
                   track: TrackPlan, peer_ip: str = "", local_ip: str = "", srtp: PipeSrtp | None = None) -> None:
        """The source end of a pipe: this worker sends every encoding of ``producer_id`` to the worker on
        ``peer_port`` under ``ssrcs`` (docs/FORWARDING.md, Pipe transports); on another host ``peer_ip``, from
        ``local_ip``, with ``srtp`` (docs/FORWARDING.md, Pipes between hosts)."""
        request = PipeRequest(pipe_id=pipe_id, peer_port=peer_port, ssrcs=ssrcs,
                              payload_types=[c.pt for c in track.codecs], rtx_apt=list(track.rtx_apt.items()),
                              peer_ip=peer_ip, local_ip=local_ip, srtp=srtp)
        await self._request(Method.PRODUCER_PIPE, producer_id, request)

    async def unpipe(self, producer_id: str, pipe_id: str) -> None:
        await self._request(Method.PRODUCER_UNPIPE, producer_id, UnpipeRequest(pipe_id=pipe_id))

    async def produce_pipe(self, router_id: str, producer_id: str, *, peer_port: int,
                           ssrcs: list[tuple[int, int]], track: TrackPlan, peer_ip: str = "", local_ip: str = "",
                           srtp: PipeSrtp | None = None) -> None:
        """The destination end of a pipe: producer ``producer_id`` in this worker's router, fed by the worker on
        ``peer_port`` under ``ssrcs`` (one pair per encoding of ``track``); ``peer_ip``, ``local_ip`` and ``srtp``
        (the source's keys, reversed) for a pipe from another host."""
        request = PipeProduceRequest(
            producer_id=producer_id,
            peer_port=peer_port,
            kind=track.kind,  # type: ignore[arg-type]  # "audio" or "video" for a media m-line
            encodings=[("", ssrc, rtx) for ssrc, rtx in ssrcs],
            payload_types=[c.pt for c in track.codecs],
            codecs=[(c.pt, c.name) for c in track.codecs],
            rtx_apt=list(track.rtx_apt.items()),
            clock_rate=track.codecs[0].clock_rate,
            peer_ip=peer_ip,
            local_ip=local_ip,
            srtp=srtp,
            source=track_source(track.source),
        )
        await self._request(Method.MEDIA_ROUTER_PRODUCE_PIPE, router_id, request)

    async def close_producer(self, producer_id: str) -> None:
        await self._request(Method.PRODUCER_CLOSE, producer_id, EMPTY)

    async def pause_producer(self, producer_id: str) -> None:
        await self._request(Method.PRODUCER_PAUSE, producer_id, EMPTY)

    async def resume_producer(self, producer_id: str) -> None:
        await self._request(Method.PRODUCER_RESUME, producer_id, EMPTY)

    async def close_consumer(self, consumer_id: str) -> None:
        await self._request(Method.CONSUMER_CLOSE, consumer_id, EMPTY)

    async def pause_consumer(self, consumer_id: str) -> None:
        await self._request(Method.CONSUMER_PAUSE, consumer_id, EMPTY)

    async def resume_consumer(self, consumer_id: str) -> None:
        await self._request(Method.CONSUMER_RESUME, consumer_id, EMPTY)

    async def set_preferred_layers(self, consumer_id: str, spatial: int) -> None:
        await self._request(Method.CONSUMER_SET_PREFERRED_LAYERS, consumer_id,
                            SetPreferredLayersRequest(spatial=spatial))

    async def request_key_frame(self, consumer_id: str) -> None:
        await self._request(Method.CONSUMER_REQUEST_KEY_FRAME, consumer_id, EMPTY)

    async def produce_data(
        self, transport_id: str, data_producer_id: str, label: str, *, relay_to_control: bool = False
    ) -> None:
        """Messages on ``label`` ("*" = any) go to this DataProducer's consumers, and with ``relay_to_control``
        also to control as ``data_producer.message`` notifications."""
        request = ProduceDataRequest(data_producer_id=data_producer_id, label=label,
                                     relay_to_control=relay_to_control)
        await self._request(Method.TRANSPORT_PRODUCE_DATA, transport_id, request)

    async def open_data_channel(
        self, transport_id: str, label: str, *, ordered: bool = True, max_retransmits: int | None = None
    ) -> None:
        """A server-created channel (LiveKit's ``_reliable``/``_lossy``), opened as soon as SCTP is up."""
        request = OpenDataChannelRequest(label=label, ordered=ordered, max_retransmits=max_retransmits)
        await self._request(Method.TRANSPORT_OPEN_DATA_CHANNEL, transport_id, request)

    async def send_data(self, transport_id: str, label: str, data: bytes | str) -> bool:
        reply = await self._request(Method.TRANSPORT_SEND_DATA, transport_id, SendDataRequest(label=label, data=data))
        return SendDataReply.from_wire(reply).sent

    async def consume_data(
        self, transport_id: str, data_consumer_id: str, data_producer_id: str, label: str
    ) -> None:
        request = ConsumeDataRequest(data_consumer_id=data_consumer_id, data_producer_id=data_producer_id,
                                     label=label)
        await self._request(Method.TRANSPORT_CONSUME_DATA, transport_id, request)

    async def close_data_producer(self, data_producer_id: str) -> None:
        await self._request(Method.DATA_PRODUCER_CLOSE, data_producer_id, EMPTY)

    async def close_data_consumer(self, data_consumer_id: str) -> None:
        await self._request(Method.DATA_CONSUMER_CLOSE, data_consumer_id, EMPTY)
