"""MediaClient: control's typed face of one worker's media requests.

Everything control asks a worker to build goes through here: media routers, WebRTC transports, producers,
consumers and data channels. It turns negotiation results (``control.negotiation``) into the numeric request bodies
of ``router/protocol.py`` and returns what the worker reports, so that rooms and signaling never write a request
body by hand. It holds no state of its own; the caller keeps ids.
"""

from __future__ import annotations

from typing import Any, Protocol

from control.codecs import URI_TRANSPORT_CC
from control.negotiation import TrackPlan, TransportParams


class RequestSender(Protocol):
    """What MediaClient needs from ``control.worker_client.WorkerClient``."""

    async def request(
        self, method: str, target_id: str, body: dict[str, Any], timeout: float = ...
    ) -> dict[str, Any]: ...


class MediaClient:
    """Media requests to one worker."""

    def __init__(self, worker: RequestSender) -> None:
        self.worker = worker

    async def create_router(self, router_id: str) -> None:
        await self.worker.request("media_router.create", router_id, {})

    async def close_router(self, router_id: str) -> None:
        await self.worker.request("media_router.close", router_id, {})

    async def create_transport(
        self, router_id: str, transport_id: str, *, ice_ufrag: str | None = None, ice_pwd: str | None = None
    ) -> TransportParams:
        body: dict[str, Any] = {"transport_id": transport_id}
        if ice_ufrag and ice_pwd:
            body.update(ice_ufrag=ice_ufrag, ice_pwd=ice_pwd)
        reply = await self.worker.request("media_router.create_webrtc_transport", router_id, body)
        return TransportParams(
            ice_ufrag=reply["ice_ufrag"],
            ice_pwd=reply["ice_pwd"],
            fingerprints=[(str(a), str(v)) for a, v in reply["fingerprints"]],
            candidate_ip=reply["candidate"]["ip"],
            candidate_port=int(reply["candidate"]["port"]),
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
        await self.worker.request(
            "transport.connect",
            transport_id,
            {
                "role": role,
                "fingerprints": [list(f) for f in fingerprints],
                "sctp_port": sctp_port,
                "max_message_size": max_message_size,
            },
        )

    async def restart_ice(self, transport_id: str, ice_ufrag: str, ice_pwd: str) -> None:
        """New ICE credentials (ICE restart); the old ones stay valid until the first check with the new ones."""
        await self.worker.request("transport.restart_ice", transport_id, {"ice_ufrag": ice_ufrag, "ice_pwd": ice_pwd})

    async def close_transport(self, transport_id: str) -> None:
        await self.worker.request("transport.close", transport_id, {})

    async def get_stats(self, transport_id: str) -> dict[str, Any]:
        return await self.worker.request("transport.get_stats", transport_id, {})

    async def produce(self, transport_id: str, producer_id: str, track: TrackPlan) -> None:
        codec = track.codecs[0]
        await self.worker.request(
            "transport.produce",
            transport_id,
            {
                "producer_id": producer_id,
                "kind": track.kind,
                "mid": track.mid,
                "encodings": [[rid or "", ssrc or 0, rtx or 0] for rid, ssrc, rtx in track.encodings],
                "payload_types": [c.pt for c in track.codecs],
                "codecs": [[c.pt, c.name] for c in track.codecs],
                "rtx_apt": [[rtx, apt] for rtx, apt in track.rtx_apt.items()],
                "clock_rate": codec.clock_rate,
                "extensions": {
                    "mid_id": track.mid_id,
                    "rid_id": track.rid_id,
                    "rrid_id": track.rrid_id,
                    "audio_level_id": track.audio_level_id,
                    "twcc_id": track.extensions.get(URI_TRANSPORT_CC, 0),
                    "id_map": bytes(track.id_map),
                },
            },
        )

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
    ) -> None:
        await self.worker.request(
            "transport.consume",
            transport_id,
            {
                "consumer_id": consumer_id,
                "producer_id": producer_id,
                "out_ssrc": out_ssrc,
                "pt_map": [[a, b] for a, b in pt_map.items()],
                "nack": nack,
                "spatial": spatial,
                "paused": paused,
            },
        )

    async def close_producer(self, producer_id: str) -> None:
        await self.worker.request("producer.close", producer_id, {})

    async def pause_producer(self, producer_id: str) -> None:
        await self.worker.request("producer.pause", producer_id, {})

    async def resume_producer(self, producer_id: str) -> None:
        await self.worker.request("producer.resume", producer_id, {})

    async def close_consumer(self, consumer_id: str) -> None:
        await self.worker.request("consumer.close", consumer_id, {})

    async def pause_consumer(self, consumer_id: str) -> None:
        await self.worker.request("consumer.pause", consumer_id, {})

    async def resume_consumer(self, consumer_id: str) -> None:
        await self.worker.request("consumer.resume", consumer_id, {})

    async def set_preferred_layers(self, consumer_id: str, spatial: int) -> None:
        await self.worker.request("consumer.set_preferred_layers", consumer_id, {"spatial": spatial})

    async def request_key_frame(self, consumer_id: str) -> None:
        await self.worker.request("consumer.request_key_frame", consumer_id, {})

    async def produce_data(
        self, transport_id: str, data_producer_id: str, label: str, *, relay_to_control: bool = False
    ) -> None:
        """Messages on ``label`` ("*" = any) go to this DataProducer's consumers, and with ``relay_to_control``
        also to control as ``data_producer.message`` notifications."""
        await self.worker.request(
            "transport.produce_data",
            transport_id,
            {"data_producer_id": data_producer_id, "label": label, "relay_to_control": relay_to_control},
        )

    async def open_data_channel(
        self, transport_id: str, label: str, *, ordered: bool = True, max_retransmits: int | None = None
    ) -> None:
        """A server-created channel (LiveKit's ``_reliable``/``_lossy``), opened as soon as SCTP is up."""
        await self.worker.request(
            "transport.open_data_channel",
            transport_id,
            {"label": label, "ordered": ordered, "max_retransmits": max_retransmits},
        )

    async def send_data(self, transport_id: str, label: str, data: bytes | str) -> bool:
        reply = await self.worker.request("transport.send_data", transport_id, {"label": label, "data": data})
        return bool(reply.get("sent"))

    async def consume_data(
        self, transport_id: str, data_consumer_id: str, data_producer_id: str, label: str
    ) -> None:
        await self.worker.request(
            "transport.consume_data",
            transport_id,
            {"data_consumer_id": data_consumer_id, "data_producer_id": data_producer_id, "label": label},
        )

    async def close_data_producer(self, data_producer_id: str) -> None:
        await self.worker.request("data_producer.close", data_producer_id, {})

    async def close_data_consumer(self, data_consumer_id: str) -> None:
        await self.worker.request("data_consumer.close", data_consumer_id, {})
