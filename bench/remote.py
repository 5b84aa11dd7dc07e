"""``python -m bench <scenario> --url ws://HOST:PORT``: the same load against a server that is already running.

Owns the two pieces that replace the in-process server of ``bench.server``/``bench.session`` when ``--url`` is given:
:class:`RemoteServer` (the running server's workers from its ``GET /healthz``, the probe that reads their CPU time,
RSS and socket drops from the same document, and where to pin the generator) and :class:`SignalingSession` (every
participant joins with its own access token over LiveKit signaling, ``bench.lk_client``, exactly as an SDK does:
AddTrack, publisher offer/answer, subscriber offers answered, auto-subscribe; then the ICE check, DTLS handshake and
SRTP of ``bench.peer``, and the generator of ``bench.session``).

The server may run on this host or another one. On loopback the participants send from 127.77.0.0/16; for a server
elsewhere ``--source-net`` names a network that is local here and routed back here from the server (see
``bench.net``), since every synthetic participant sends from its own address. The generator is pinned away from the
workers' cores only when the server is on this host; ``--profile-worker`` needs it here too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any
from urllib.parse import urlparse
from urllib.request import urlopen

from bench import lk_client
from bench.lk_client import LocalTrack, SignalClient, SignalingError
from bench.net import DEFAULT_SOURCE_NET
from bench.peer import SyntheticPeer
from bench.probe import HealthzProbe, ProbeError
from bench.server import CorePlan
from bench.session import (
    SETUP_CONCURRENCY,
    ParticipantSpec,
    Room,
    RoomSpec,
    Session,
    _Participant,
    _Track,
    header_extension,
)
from control.auth import create_token

SOURCE_NET_NEEDED = (
    "--url {host} is not on loopback: give --source-net, a network the participants send from (one address each) "
    "that is local on this host and routed back to it from the server, e.g. here `ip route add local 10.77.0.0/16 "
    "dev lo` and on the server `ip route add 10.77.0.0/16 via <this host's address>`, then --source-net "
    "10.77.0.0/16")


class RemoteError(RuntimeError):
    """The running server cannot be benchmarked (unreachable, no workers, no way back to the participants)."""


@dataclass(frozen=True)
class Target:
    """Where ``--url`` points: the host as given, its IPv4 address, the port, and whether it is this host."""

    host: str
    address: str
    port: int
    local: bool


def check_url(url: str, source_net: str | None = None) -> Target:
    """The target of a ws:// or http:// URL; RemoteError when it does not resolve, or when it is off loopback and
    no ``source_net`` says where the participants send from."""
    parsed = urlparse(url)
    if parsed.scheme not in ("ws", "http") or not parsed.hostname:
        raise RemoteError(f"--url must look like ws://127.0.0.1:7880, got {url!r}")
    try:
        address = ipaddress.IPv4Address(socket.gethostbyname(parsed.hostname))
    except (OSError, ValueError) as exc:
        raise RemoteError(f"--url host {parsed.hostname!r} does not resolve: {exc}") from None
    if not address.is_loopback and source_net is None:
        raise RemoteError(SOURCE_NET_NEEDED.format(host=parsed.hostname))
    return Target(parsed.hostname, str(address), parsed.port or 80, address.is_loopback or _is_local(str(address)))


def _is_local(address: str) -> bool:
    """Whether ``address`` belongs to this host (a socket can be bound to it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


class RemoteServer:
    """The running server as the measurement sees it: its workers, their usage counters and restarts, all from
    ``/healthz``."""

    def __init__(self, url: str, source_net: str | None = None, *, profile_worker: bool = False) -> None:
        self.target = check_url(url, source_net)
        self.host, self.port = self.target.host, self.target.port
        self.ws_url = f"ws://{self.host}:{self.port}"
        self.workers: list[dict[str, Any]] = []
        self.plan = CorePlan(-1, [], False)
        self.profile_worker = profile_worker
        self._restarts0 = 0
        self._affinity = os.sched_getaffinity(0)

    def healthz(self) -> dict[str, Any]:
        try:
            with urlopen(f"http://{self.host}:{self.port}/healthz", timeout=5) as reply:
                return json.loads(reply.read())
        except OSError as exc:
            raise RemoteError(f"no mediarouter at {self.host}:{self.port} (GET /healthz: {exc})") from None

    async def start(self) -> None:
        state = await asyncio.to_thread(self.healthz)
        self.workers = [w for w in state.get("workers", []) if w.get("alive")]
        if not self.workers:
            raise RemoteError(f"the server at {self.host}:{self.port} reports no live worker")
        if "host" not in state or any(not w.get("usage") for w in self.workers):
            raise RemoteError(f"the server at {self.host}:{self.port} reports no usage counters in /healthz "
                              "(a mediarouter older than this benchmark?)")
        self._restarts0 = sum(int(w.get("restarts", 0)) for w in self.workers)
        worker_cores = [int(w["core"]) for w in self.workers if w.get("core") is not None]
        if not self.target.local:
            if self.profile_worker:
                pids = ", ".join(str(w["pid"]) for w in self.workers)
                raise RemoteError(f"--profile-worker records a worker process, and the server's (pids {pids}) run "
                                  f"on {self.host}: run py-spy or perf there")
            return  # the workers' cores are another machine's: the generator may use all of this one
        free = sorted(set(self._affinity) - set(worker_cores))
        generator = free[0] if free else min(self._affinity)
        self.plan = CorePlan(generator, worker_cores, not free)
        if free:
            os.sched_setaffinity(0, {generator})

    def worker_pids(self) -> list[int]:
        return [int(w["pid"]) for w in self.workers]

    def probe(self) -> HealthzProbe:
        """The workers as a measurement reads them: the counters in the server's ``/healthz``."""
        return HealthzProbe(self._probe_healthz, {int(w["id"]): int(w["pid"]) for w in self.workers})

    def _probe_healthz(self) -> dict[str, Any]:
        try:
            return self.healthz()
        except RemoteError as exc:
            raise ProbeError(str(exc)) from None

    def worker_restarts(self) -> int:
        return sum(int(w.get("restarts", 0)) for w in self.healthz().get("workers", [])) - self._restarts0

    async def stop(self) -> None:
        os.sched_setaffinity(0, self._affinity)


@dataclass
class _Member:
    """One LiveKit participant: its signaling and up to two generator endpoints (publisher and subscriber PC)."""

    identity: str
    spec: ParticipantSpec
    client: SignalClient
    pub: _Participant | None = None
    sub: _Participant | None = None
    sub_peer: SyntheticPeer | None = None
    tracks: list[_Track] = field(default_factory=list)
    consumed: set[str] = field(default_factory=set)  # track sids received on the subscriber PC


class SignalingSession(Session):
    """Rooms on a running server, set up through LiveKit signaling; measured like :class:`Session`."""

    def __init__(self, server: RemoteServer, profile: str, *, api_key: str, api_secret: str,
                 max_participants: int, max_streams: int, max_receivers: int,
                 source_net: IPv4Network = DEFAULT_SOURCE_NET, gro: bool = True) -> None:
        # Every LiveKit participant may need two endpoints (publisher and subscriber peer connections).
        super().__init__(server, profile, max_participants=2 * max_participants, max_streams=max_streams,
                         max_receivers=max_receivers, source_net=source_net, gro=gro)
        self.remote = server
        self.api_key = api_key
        self.api_secret = api_secret
        self.run_id = uuid.uuid4().hex[:6]
        self.members: dict[str, list[_Member]] = {}
        self._stream_of: dict[str, int] = {}  # track sid -> generator sender stream

    async def add_room(self, room: RoomSpec) -> Room:
        handle = Room(f"bench-{self.run_id}-{len(self.rooms)}", room.worker, [])
        self.rooms.append(handle)
        self.members[handle.router_id] = []
        await self.extend(handle, room.participants)
        return handle

    async def extend(self, room: Room, specs: Sequence[ParticipantSpec]) -> None:
        start = time.monotonic()
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)
        members = self.members[room.router_id]
        fresh = [self._member(room, spec, len(members) + i) for i, spec in enumerate(specs)]
        members.extend(fresh)
        self.net.start_dispatch()
        try:
            await asyncio.gather(*(self._bounded(gate, m.client.connect()) for m in fresh))
            await asyncio.gather(*(self._bounded(gate, self._publish(m)) for m in fresh if m.spec.tracks))
            everything = {t.producer_id for m in members for t in m.tracks}
            await asyncio.gather(*(self._bounded(gate, self._subscribe(m, everything - {t.producer_id
                                                                                          for t in m.tracks}))
                                   for m in members if m.spec.receives))
        finally:
            self.net.stop_dispatch()
        room.members.extend(p for m in fresh for p in (m.pub, m.sub) if p is not None)
        self.setup_s += time.monotonic() - start

    @staticmethod
    async def _bounded(gate: asyncio.Semaphore, work: Any) -> Any:
        async with gate:
            return await work

    def _member(self, room: Room, spec: ParticipantSpec, index: int) -> _Member:
        identity = f"{room.router_id}-p{index}"
        token = create_token(self.api_key, self.api_secret, identity=identity, room=room.router_id,
                             grants={"canPublish": bool(spec.tracks), "canSubscribe": spec.receives})
        return _Member(identity, spec, SignalClient(self.remote.ws_url, token))

    async def _publish(self, m: _Member) -> None:
        local = [LocalTrack(f"{m.identity}-t{i}", spec.kind, self._ssrc(),
                            rids=tuple(rid for rid, _ in spec.layers) if spec.simulcast else ())
                 for i, spec in enumerate(m.spec.tracks)]
        for track in local:
            track.sid = (await m.client.add_track(track)).sid
        p = self._new_participant(ParticipantSpec(m.spec.tracks, receives=False))
        peer = SyntheticPeer(self.net, p.address, self.credentials, self.profile)
        answer = await m.client.offer(lk_client.publisher_offer(peer.ice_ufrag, peer.ice_pwd,
                                                                self.credentials.fingerprint, local))
        await self._establish(p, peer, lk_client.server_params(answer))
        m.pub = p
        for mid, (spec, track) in enumerate(zip(m.spec.tracks, local, strict=True)):
            header_ext: list[bytes] = []
            if track.rids:
                accepted = lk_client.simulcast_accepted(answer, str(mid))
                if accepted != list(track.rids):
                    raise SignalingError(f"the server accepted simulcast layers {accepted} of {list(track.rids)}")
                # As a browser: every packet names its m-line and layer, the server learns the SSRCs from them.
                header_ext = [header_extension([(lk_client.MID_EXT_ID, str(mid).encode()),
                                                (lk_client.RID_EXT_ID, rid.encode())]) for rid in track.rids]
            ssrcs = [track.ssrc] + [self._ssrc() for _ in track.rids[1:]]
            t = _Track(track.sid, spec, ssrcs)
            t.stream = self._add_senders(p, t, header_ext)
            self._stream_of[track.sid] = t.stream
            m.tracks.append(t)
            p.tracks.append(t)

    async def _subscribe(self, m: _Member, wanted: set[str]) -> None:
        """Answer the server's subscriber offers until every track in ``wanted`` is received."""
        while not wanted <= m.consumed:
            offer = await m.client.next_offer()
            if m.sub is None:
                m.sub = self._new_participant(ParticipantSpec())
                m.sub_peer = SyntheticPeer(self.net, m.sub.address, self.credentials, self.profile)
            assert m.sub_peer is not None
            await m.client.answer(lk_client.subscriber_answer(offer.sdp, m.sub_peer.ice_ufrag, m.sub_peer.ice_pwd,
                                                              self.credentials.fingerprint), offer.id)
            if m.sub.server is None:
                await self._establish(m.sub, m.sub_peer, lk_client.server_params(offer.sdp))
            for offered in lk_client.offered_tracks(offer.sdp):
                stream = self._stream_of.get(offered.track_sid)
                if stream is not None and offered.track_sid not in m.consumed:
                    self._add_receiver(m.sub, stream, offered.ssrc)
                    m.consumed.add(offered.track_sid)

    async def leave_all(self) -> None:
        clients = [m.client for members in self.members.values() for m in members]
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
