"""Pipes between workers: the ends of a producer that crosses from one worker to another, on this host or another.

A pipe carries one producer's packets, decrypted once on the worker that receives them from the publisher (the
*source*), to another worker (the *destination*) as plain RTP/RTCP over loopback UDP, as mediasoup's PipeTransport
does (docs/FORWARDING.md, Pipe transports); toward a worker of another host the same pipe is SRTP with the keys
control passes (docs/FORWARDING.md, Pipes between hosts). This module owns both ends on a worker:

- one pipe transport per peer worker (its address and UDP port), an Engine transport bound to the peer with the
  plain SRTP profile (``fastpath.PROFILE_PLAIN``) on one host or the request's SRTP keys between hosts, shared by
  every pipe between the two workers in either direction and removed with the last of them;
- at the source (``producer.pipe``), one *pinned* Engine consumer per encoding of the producer, under the SSRCs
  control chose; the Engine serves the destination's NACKs and key-frame requests on them like any subscriber's;
- at the destination (``media_router.produce_pipe``), a producer registered like a publisher's, so that
  ``transport.consume`` works on it unchanged.

Pinned consumers take Engine handles from a range of their own (``PIPE_HANDLE_BASE`` and up) and stay out of the
consumer registry, so the stream allocator and the scores never see them. Counters: :meth:`PipeService.counters`
(in the heartbeat) and :meth:`PipeService.snapshot`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fastpath
from router.media_router import Producer
from router.messages import PipeProduceRequest, PipeRequest, PipeSrtp, UnpipeRequest
from router.protocol import Empty, RequestError

if TYPE_CHECKING:
    from router.media_service import MediaService

log = logging.getLogger("router.pipe")

PIPE_HANDLE_BASE = 1 << 28  # Engine handles of pipe transports and pinned consumers; registries stay far below
PLAIN_KEY = bytes(30)  # the plain profile derives no key that is used; libsrtp still wants one
# Test hook (the pipe loss tests): the percentage of first sends every new pinned video consumer loses.
TEST_LOSS_ENV = "MEDIAROUTER_TEST_PIPE_LOSS_PERCENT"
KINDS = {"audio": 0, "video": 1}
SRTP_PROFILES = {"SRTP_AES128_CM_HMAC_SHA1_80": fastpath.PROFILE_AES128_CM_SHA1_80,
                 "SRTP_AEAD_AES_128_GCM": fastpath.PROFILE_AEAD_AES_128_GCM}
Peer = tuple[str, int]  # the other worker's (address, UDP port)


def pipe_transport_id(peer: Peer) -> str:
    """The id a pipe producer's ``transport_id`` names: the pipe transport toward the worker at ``peer``."""
    return f"pipe:{peer[0]}:{peer[1]}"


def _peer_of(transport_id: str) -> Peer:
    host, _, port = transport_id[len("pipe:"):].rpartition(":")
    return host, int(port)


@dataclass
class PipeTransport:
    """The Engine transport toward one peer worker, and what uses it."""

    peer: Peer
    handle: int
    local_ip: str = ""
    srtp: PipeSrtp | None = None  # None: the plain profile (a pipe on this host)
    producers: set[str] = field(default_factory=set)  # destination ends on this worker
    pipes: set[tuple[str, str]] = field(default_factory=set)  # (producer id, pipe id): source ends on this worker


@dataclass
class PipeOut:
    """The source end of one pipe: a producer's pinned consumers toward one peer."""

    pipe_id: str
    producer_id: str
    peer: Peer
    handles: list[int]


class PipeService:
    """Both ends of every pipe on one worker (created by MediaService, which routes the requests here)."""

    def __init__(self, media: MediaService) -> None:
        self.media = media
        self.engine = media.engine
        self.transports: dict[Peer, PipeTransport] = {}  # peer worker -> transport
        self.outs: dict[tuple[str, str], PipeOut] = {}  # (producer id, pipe id) -> source end
        self.by_router: dict[str, set[str]] = {}  # router id -> its pipe producers (destination ends)
        self._next_handle = PIPE_HANDLE_BASE
        self._free: list[int] = []
        self.test_loss = _test_loss()
        self.opened = 0
        self.closed = 0
        self.rekeys = 0  # an open pipe transport given other keys or another local address (docs/FORWARDING.md)

    # ---- handles and transports ------------------------------------------------------------------------
    def _handle(self) -> int:
        if self._free:
            return self._free.pop()
        self._next_handle += 1
        return self._next_handle

    def _on_this_host(self, ip: str) -> bool:
        worker = self.media.worker
        return ipaddress.ip_address(ip).is_loopback or ip in worker.node_ips or ip == worker.bind_ip

    def _peer(self, peer_ip: str, peer_port: int, srtp: PipeSrtp | None) -> Peer:
        """The peer a request names ("" = this host's announced address), checked."""
        ip = peer_ip or self.media.worker.node_ip
        local = self._on_this_host(ip)
        if local and peer_port == self.media.worker.rtc_port:
            raise RequestError("ValueError", "a pipe needs another worker's port")
        if not local and srtp is None:
            raise RequestError("ValueError", f"a pipe to {ip} leaves the host: it needs srtp keys")
        return ip, peer_port

    def _key(self, handle: int, srtp: PipeSrtp | None) -> None:
        if srtp is None:
            self.engine.set_srtp(handle, fastpath.PROFILE_PLAIN, PLAIN_KEY, PLAIN_KEY)
        else:
            self.engine.set_srtp(handle, SRTP_PROFILES[srtp.profile], srtp.local_key, srtp.remote_key)

    def _transport(self, peer: Peer, local_ip: str, srtp: PipeSrtp | None) -> PipeTransport:
        transport = self.transports.get(peer)
        if transport is None:
            handle = self._handle()
            self.engine.add_transport(handle)
            self.media.kick_tick()
            try:
                self.engine.bind_tuple(handle, peer[0], peer[1], local_ip)
                self._key(handle, srtp)
            except Exception:
                self.engine.remove_transport(handle)
                self._free.append(handle)
                raise
            transport = self.transports[peer] = PipeTransport(peer, handle, local_ip, srtp)
            log.info("pipe transport toward %s:%d opened (%s)", *peer, srtp.profile if srtp else "plain")
        elif transport.srtp != srtp or transport.local_ip != local_ip:
            # The last request wins: both ends of a pipe transport hold the keys of the latest pipe opened over it
            # (control keeps one key pair per pair of workers; docs/FORWARDING.md, Pipes between hosts).
            if transport.local_ip != local_ip:
                self.engine.bind_tuple(transport.handle, peer[0], peer[1], local_ip)
            if transport.srtp != srtp:
                self._key(transport.handle, srtp)
            transport.local_ip, transport.srtp = local_ip, srtp
            self.rekeys += 1
            log.warning("pipe transport toward %s:%d re-keyed (%s)", *peer, srtp.profile if srtp else "plain")
        return transport

    def _release(self, transport: PipeTransport) -> None:
        if transport.producers or transport.pipes:
            return
        self.engine.remove_transport(transport.handle)
        self._free.append(transport.handle)
        del self.transports[transport.peer]
        log.info("pipe transport toward %s:%d closed", *transport.peer)

    # ---- source ends (producer.pipe / producer.unpipe) ---------------------------------------------------
    async def producer_pipe(self, producer_id: str, body: PipeRequest) -> Empty:
        key = (producer_id, body.pipe_id)
        if key in self.outs:
            return Empty()
        producer = self.media.producers.get(producer_id)
        p_handle = self.media.producers.handle(producer_id)
        transport = self._transport(self._peer(body.peer_ip, body.peer_port, body.srtp), body.local_ip, body.srtp)
        pt_map = {pt: pt for pt in body.payload_types}
        rtx_pt_map = {apt: rtx for rtx, apt in body.rtx_apt}
        handles: list[int] = []
        try:
            for layer, (ssrc, rtx_ssrc) in enumerate(body.ssrcs):
                handle = self._handle()
                self.engine.add_consumer(handle, transport.handle, p_handle, ssrc, pt_map, True, layer,
                                         rtx_ssrc=rtx_ssrc if rtx_pt_map else 0,
                                         rtx_pt_map=rtx_pt_map if rtx_ssrc else None, pinned=True)
                handles.append(handle)
                if self.test_loss and producer.kind == "video":  # audio has no NACK to recover it with
                    self.engine.set_consumer_test_loss(handle, self.test_loss)
                if producer.paused:
                    self.engine.pause_consumer(handle)
        except Exception:
            for handle in handles:
                self.engine.remove_consumer(handle)
                self._free.append(handle)
            self._release(transport)
            raise
        self.outs[key] = PipeOut(body.pipe_id, producer_id, transport.peer, handles)
        transport.pipes.add(key)
        self.opened += 1
        return Empty()

    async def producer_unpipe(self, producer_id: str, body: UnpipeRequest) -> Empty:
        self._close_out((producer_id, body.pipe_id))
        return Empty()

    def _close_out(self, key: tuple[str, str]) -> None:
        out = self.outs.pop(key, None)
        if out is None:
            return
        for handle in out.handles:
            self.engine.remove_consumer(handle)
            self._free.append(handle)
        self.closed += 1
        transport = self.transports.get(out.peer)
        if transport is not None:
            transport.pipes.discard(key)
            self._release(transport)

    def producer_closed(self, producer_id: str) -> None:
        """The producer is going (before the Engine removes it): its pipes close with it."""
        for key in [k for k in self.outs if k[0] == producer_id]:
            self._close_out(key)

    def producer_paused(self, producer_id: str, paused: bool) -> None:
        for key, out in self.outs.items():
            if key[0] == producer_id:
                for handle in out.handles:
                    if paused:
                        self.engine.pause_consumer(handle)
                    else:
                        self.engine.resume_consumer(handle)

    # ---- destination ends (media_router.produce_pipe) ----------------------------------------------------
    async def produce_pipe(self, router_id: str, body: PipeProduceRequest) -> Empty:
        self.media._router(router_id)
        if body.producer_id in self.media.producers:
            return Empty()
        transport = self._transport(self._peer(body.peer_ip, body.peer_port, body.srtp), body.local_ip, body.srtp)
        producer = Producer(body.producer_id, pipe_transport_id(transport.peer), body.kind, "", source=body.source)
        handle = self.media.producers.add(body.producer_id, producer)
        try:
            self.engine.add_producer(
                handle, transport.handle, KINDS[body.kind], b"",
                [(b"", ssrc, rtx) for _, ssrc, rtx in body.encodings],
                body.payload_types, dict(body.rtx_apt), body.clock_rate,
                codecs={pt: fastpath.CODECS.get(name.lower(), fastpath.CODEC_UNKNOWN) for pt, name in body.codecs},
            )
        except Exception:
            self.media.producers.remove(body.producer_id)
            self._release(transport)
            raise
        transport.producers.add(body.producer_id)
        self.by_router.setdefault(router_id, set()).add(body.producer_id)
        return Empty()

    def pipe_producer_removed(self, producer: Producer) -> None:
        """A destination end was closed (MediaService removed it from the Engine): free its pipe transport."""
        if not producer.transport_id.startswith("pipe:"):
            return
        for producers in self.by_router.values():
            producers.discard(producer.id)
        transport = self.transports.get(_peer_of(producer.transport_id))
        if transport is not None:
            transport.producers.discard(producer.id)
            self._release(transport)

    def router_producers(self, router_id: str) -> list[str]:
        """The destination ends in a router (closed with it)."""
        return sorted(self.by_router.pop(router_id, set()))

    # ---- counters ----------------------------------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        """For the heartbeat: pipe transports (those with SRTP, their re-keyings and SRTP drops), open source ends,
        packets and drops over every pipe transport."""
        totals = {"pipe_transports": len(self.transports), "pipes_out": len(self.outs),
                  "pipe_srtp_transports": sum(t.srtp is not None for t in self.transports.values()),
                  "pipe_rekeys": self.rekeys, "pipe_srtp_drops": 0,
                  "pipe_tx_packets": 0, "pipe_rx_packets": 0, "pipe_drops": 0, "pipe_test_lost": 0,
                  "pipe_retransmits": 0, "pipe_nack_refused": 0, "pipe_nack_recovered": 0, "pipe_nack_expired": 0,
                  "pipe_source_nack_expired": 0}
        for transport in self.transports.values():
            snap = self.engine.snapshot_transport(transport.handle)
            totals["pipe_tx_packets"] += snap["tx_packets"]
            totals["pipe_rx_packets"] += snap["rx_packets"]
            totals["pipe_drops"] += sum(v for k, v in snap.items() if k.startswith("drop_") and isinstance(v, int))
            totals["pipe_srtp_drops"] += snap.get("drop_srtp_unprotect", 0)
        for out in self.outs.values():
            for handle in out.handles:
                snap = self.engine.snapshot_consumer(handle)
                totals["pipe_test_lost"] += snap["test_lost"]
                totals["pipe_retransmits"] += snap["retransmits"]
                totals["pipe_nack_refused"] += sum(v for k, v in snap.items() if k.startswith("drop_nack"))
        for producer_id in {out.producer_id for out in self.outs.values()}:  # source ends: publisher losses
            handle = self.media.producers.handle(producer_id)
            for layer in self.engine.snapshot_producer(handle)["layers"]:
                totals["pipe_source_nack_expired"] += layer.get("nack_expired", 0)
        for transport in self.transports.values():  # destination ends: what their NACKs got back
            for producer_id in transport.producers:
                for layer in self.engine.snapshot_producer(self.media.producers.handle(producer_id))["layers"]:
                    totals["pipe_nack_recovered"] += layer.get("nack_recovered", 0)
                    totals["pipe_nack_expired"] += layer.get("nack_expired", 0)
        return totals

    def snapshot(self) -> dict[str, Any]:
        """Per pipe: the Engine counters of each pinned consumer (source ends) and of each pipe transport."""
        return {
            "transports": {f"{ip}:{port}": self.engine.snapshot_transport(t.handle)
                           for (ip, port), t in self.transports.items()},
            "outs": {f"{pid}/{pipe}": [self.engine.snapshot_consumer(h) for h in out.handles]
                     for (pid, pipe), out in self.outs.items()},
        }


def _test_loss() -> int:
    value = os.environ.get(TEST_LOSS_ENV, "")
    try:
        percent = int(value) if value else 0
    except ValueError:
        log.warning("%s=%r is not a number; ignored", TEST_LOSS_ENV, value)
        return 0
    return max(0, min(100, percent))
