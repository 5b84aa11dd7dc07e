"""LiveKit signaling endpoints: the ``/rtc`` WebSocket (v0, dual peer connection) and its HTTP companions.

Owns the connection life cycle and framing (one binary protobuf ``SignalRequest``/``SignalResponse`` per
WebSocket message, RFC 6455), token checks before the upgrade, dispatch of client requests to the room and
participant, and keepalive answers. ``/rtc/v1`` and ``/rtc/v1/validate`` answer 404 with
``Access-Control-Allow-Origin: *`` so that clients fall back to ``/rtc`` (docs/PROTOCOL.md, Connection).
A resume (``reconnect=1&sid=PA_...``) of a live session moves it to the new WebSocket (``Room.resume``); a resume
with nothing to resume, or one that fails, gets ``leave {STATE_MISMATCH, RECONNECT}``, which makes the client
rejoin from scratch (docs/PROTOCOL.md, Resume). In a cluster (docs/CLUSTER.md) a join for a room another node
owns is relayed to that node (control/cluster/relay.py), which runs :func:`run_session` over the relayed frames.
The handlers reach the RoomManager through
``control.service.keys.MANAGER_KEY``; ``control.app`` wires it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from livekit.protocol import models, rtc

from control.auth import AuthError, Claims, require_join, token_from_request, verify_token
from control.cluster.node import CLUSTER_KEY
from control.rtc import lk_messages as lk
from control.rtc import pacer
from control.rtc.participant import ClientParams, Participant, ParticipantError
from control.rtc.rooms import JoinRefused, Room, RoomManager
from control.service.flow import OncePerConnection, RequestLimiter, install_malformed_request_filter
from control.service.keys import MANAGER_KEY
from control.service.metrics import join_failed, signal_message
from control.service.outbox import WebSocketSink
from control.service.websocket import SignalWebSocket
from control.workers.placement import NoWorkerAvailable

log = logging.getLogger("control.service.signaling")

CORS = {"Access-Control-Allow-Origin": "*"}
PATH_HEADER = "X-Mediarouter-Path"  # /rtc/validate: where the token holder's transports ended (diagnostics)
MAX_METADATA_BYTES = 512 * 1024
MAX_ATTRIBUTES_BYTES = 64 * 1024
Reason = models.DisconnectReason
REFUSAL_REASONS = {400: "bad_request", 401: "unauthorized", 403: "forbidden"}  # join_failures_total reasons


def add_routes(app: web.Application) -> None:
    """Adds ``/rtc``, ``/rtc/validate`` and the ``/rtc/v1`` 404s; they serve the application's ``MANAGER_KEY``."""
    app.router.add_get("/rtc", rtc_handler)
    app.router.add_get("/rtc/validate", validate_handler)
    app.router.add_get("/rtc/v1", v1_handler)
    app.router.add_get("/rtc/v1/validate", v1_handler)
    install_malformed_request_filter()


# ------------------------------------------------------------------------------------------- HTTP


def _keys(app: web.Application) -> Mapping[str, str]:
    return app[MANAGER_KEY].settings.keys


def authorize(request: web.Request) -> Claims:
    """The verified claims of an admissible join request (token from ``Authorization: Bearer`` or
    ``access_token``); AuthError carries the HTTP status and plain reason otherwise."""
    token = token_from_request(request.headers, request.query)
    claims = verify_token(token, _keys(request.app))
    require_join(claims)
    try:
        request.app[MANAGER_KEY].admit(claims)
    except JoinRefused as exc:
        raise AuthError(exc.reason, status=exc.status) from None
    return claims


def client_params(query: Mapping[str, str]) -> ClientParams:
    """ClientParams from the ``/rtc`` query (``auto_subscribe`` absent means true)."""

    def flag(name: str, default: bool) -> bool:
        value = query.get(name)
        if value is None or value == "":
            return default
        return value.lower() in ("1", "true")

    def number(name: str) -> int:
        try:
            return int(query.get(name, "0") or 0)
        except ValueError:
            return 0

    return ClientParams(
        auto_subscribe=flag("auto_subscribe", True),
        adaptive_stream=flag("adaptive_stream", False),
        protocol=number("protocol"),
        client_protocol=number("client_protocol"),
        sdk=query.get("sdk", ""),
        version=query.get("version", ""),
        reconnect=flag("reconnect", False),
        sid=query.get("sid", ""),
    )


async def validate_handler(request: web.Request) -> web.Response:
    """``GET /rtc/validate``: 200 ``success`` when a join would be accepted, else the plain reason (as LiveKit's
    ``RTCService.validate``). When the token's holder is in the room (an SDK validates after a failed resume), the
    ``X-Mediarouter-Path`` header says where each of its transports ended (:func:`transport_paths`)."""
    try:
        claims = authorize(request)
    except AuthError as exc:
        return web.Response(status=exc.status, text=exc.reason, headers=CORS)
    headers = dict(CORS)
    paths = transport_paths(request.app[MANAGER_KEY], claims)
    if paths:
        headers[PATH_HEADER] = paths
        headers["Access-Control-Expose-Headers"] = PATH_HEADER
    return web.Response(text="success", headers=headers)


def transport_paths(manager: RoomManager, claims: Claims) -> str:
    """The token holder's transports as the worker selected them, e.g. ``pub=udp 198.51.100.7:50312,
    sub=tcp 192.0.2.10:41022`` (``udp``, ``tcp`` for ICE-TCP, ``relay`` through TURN, or ``connecting`` with no
    address before a check selected one; ``pub=none`` before a subscribe-only participant's first publisher offer);
    "" when the holder is not in the room."""
    room = manager.rooms.get(claims.room)
    p = room.participants.get(claims.identity) if room is not None else None
    if p is None:
        return ""
    out = []
    for name, transport_id in (("pub", p.pub_transport_id), ("sub", p.sub_transport_id)):
        if transport_id == p.pub_transport_id and not p.has_publisher_transport:
            out.append(f"{name}=none")  # a subscribe-only participant that never offered (docs/PROTOCOL.md, Join)
            continue
        selected = p.tuples.get(transport_id)
        where = ""
        if selected is not None:
            host, port = selected[0], selected[1]
            where = f" [{host}]:{port}" if ":" in host else f" {host}:{port}"
        out.append(f"{name}={p.path(transport_id)}{where}")
    return ", ".join(out)


async def v1_handler(request: web.Request) -> web.Response:
    """``/rtc/v1`` (single peer connection) is not served: 404 makes every SDK fall back to ``/rtc``."""
    return web.Response(status=404, text="not found", headers=CORS)


# -------------------------------------------------------------------------------------- WebSocket


@dataclass
class Connection:
    """What one signal connection keeps about its client's requests: their rate limits and its bad frames."""

    limiter: RequestLimiter = field(default_factory=RequestLimiter)
    bad_frames: OncePerConnection = field(default_factory=lambda: OncePerConnection(log, "bad signal frames"))
    over_rate: OncePerConnection = field(
        default_factory=lambda: OncePerConnection(log, "requests over their rate limit (refused)"))


async def rtc_handler(request: web.Request) -> web.StreamResponse:
    """``GET /rtc``: verify, upgrade, join or resume (here, or relayed to the room's node in a cluster), then one
    request at a time until leave or close. The heavy steps of a session (its start up to the worker requests of
    its join, the JoinResponse after them, a leave and the end after it) take a turn of the loop pacer
    (control/rtc/pacer.py) first: a burst of joins or leaves is spread over short loop iterations."""
    await pacer.turn()
    try:
        claims = authorize(request)
    except AuthError as exc:
        join_failed(REFUSAL_REASONS.get(exc.status, "refused"))
        return web.Response(status=exc.status, text=exc.reason, headers=CORS)
    ws = SignalWebSocket(heartbeat=10.0, max_msg_size=lk.MAX_SIGNAL_REQUEST_BYTES)
    if not ws.can_prepare(request).ok:
        return web.Response(status=404, text="expected a WebSocket upgrade", headers=CORS)
    cluster = request.app.get(CLUSTER_KEY)
    owner = await cluster.place(claims.room) if cluster is not None else None
    await ws.prepare(request)
    if cluster is not None and owner != cluster.id:
        await cluster.relay(owner or "", token_from_request(request.headers, request.query), request.query, ws)
        return ws
    sink = WebSocketSink(ws, transport=request.transport, protocol=request.protocol)
    await run_session(request.app[MANAGER_KEY], claims, request.query, sink, _frames(ws))
    await pacer.turn()  # what the server does after a session (the WebSocket's close) is paced too
    return ws


async def run_session(manager: RoomManager, claims: Claims, query: Mapping[str, str], sink: WebSocketSink,
                      frames: AsyncIterator[bytes | str]) -> None:
    """One signal connection's session: join or resume, then the client's ``frames`` until leave or close (a
    WebSocket here, or a connection relayed by another node of the cluster)."""
    params = client_params(query)
    session = await _open_session(manager, claims, params, sink)
    if session is None:
        await sink.drain()
        return
    room, participant = session
    left = False
    connection = Connection(limiter=RequestLimiter(counter=manager.refusals))
    try:
        left = await _read_requests(frames, room, participant, connection)
    finally:
        connection.bad_frames.summary(participant.sid)
        connection.over_rate.summary(participant.sid)
        await _end(room, participant, sink, left)


async def _frames(ws: web.WebSocketResponse) -> AsyncIterator[bytes | str]:
    async for msg in ws:
        if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
            yield msg.data
        elif msg.type == WSMsgType.ERROR:
            break


async def _open_session(
    manager: RoomManager, claims: Claims, params: ClientParams, sink: WebSocketSink
) -> tuple[Room, Participant] | None:
    """Joins, or resumes the session ``params.sid``; None when this connection ends here (the client was told
    why, and only needs what is queued to be written)."""
    try:
        if params.reconnect:
            return await _resume(manager, claims, params, sink)
        room, participant = await manager.join(claims, params, sink)
    except (NoWorkerAvailable, JoinRefused) as exc:
        join_failed("no_worker" if isinstance(exc, NoWorkerAvailable) else "refused")
        log.warning("join %s/%s refused: %s", claims.room, claims.identity, exc)
        sink.send(lk.leave(Reason.JOIN_FAILURE))
        return None
    except Exception:
        join_failed("resume_error" if params.reconnect else "error")
        log.exception("%s %s/%s failed", "resume" if params.reconnect else "join", claims.room, claims.identity)
        if params.reconnect:  # a failed resume becomes a full reconnect; the old session ends after the grace
            sink.send(lk.leave(Reason.STATE_MISMATCH, rtc.LeaveRequest.Action.RECONNECT))
            found = manager.find_session(claims, params.sid)
            if found is not None:
                found[0].signal_closed(found[1], found[1].sink)
        else:
            sink.send(lk.leave(Reason.JOIN_FAILURE))
        return None
    log.info("%s joined %s as %s (%s %s)", claims.identity, claims.room, participant.sid, params.sdk, params.version)
    return room, participant


async def _resume(
    manager: RoomManager, claims: Claims, params: ClientParams, sink: WebSocketSink
) -> tuple[Room, Participant] | None:
    """Moves the live session to this connection; without one, the client is told to rejoin from scratch."""
    found = manager.find_session(claims, params.sid)
    if found is None:
        sink.send(lk.leave(Reason.STATE_MISMATCH, rtc.LeaveRequest.Action.RECONNECT))
        return None
    room, participant = found
    drop = participant.take_resume_drop()
    if drop:  # SimulateScenario: this resume loses its signal connection again
        participant.attach(sink)
        if drop == "after_reconnect":
            settings = manager.settings
            sink.send(lk.reconnect(server_version=settings.server_version, node_id=settings.node_id,
                                   region=settings.region))
        await sink.drain()
        room.signal_closed(participant, sink)
        return None
    await room.resume(participant, sink)
    log.info("%s resumed %s in %s", claims.identity, participant.sid, claims.room)
    return room, participant


async def _read_requests(frames: AsyncIterator[bytes | str], room: Room, participant: Participant,
                         connection: Connection) -> bool:
    """Dispatches the client's frames in order; True when the client left, False when the connection closed.
    Yields to the event loop after each frame, so that a burst already buffered cannot hold up everyone else."""
    async for frame in frames:
        if await dispatch(room, participant, frame, connection):
            return True
        await asyncio.sleep(0)
    return False


async def _end(room: Room, participant: Participant, sink: WebSocketSink, left: bool) -> None:
    """After a leave the queued answers are written; a lost connection starts the grace period instead."""
    if left:
        await pacer.turn()  # the end of a left session (its last writes, the WebSocket's close) is paced too
        await sink.drain()
    else:
        sink.close()
        room.signal_closed(participant, sink)


async def dispatch(room: Room, p: Participant, frame: bytes | str, connection: Connection | None = None) -> bool:
    """Handles one client frame; returns True when the client left. A request over its rate limit is refused
    (``RequestResponse`` LIMIT_EXCEEDED) without being carried out."""
    if p.closed:
        return True
    connection = connection if connection is not None else Connection()
    try:
        kind, msg = lk.parse_signal_request(frame)
    except lk.SignalMessageError as exc:
        connection.bad_frames.note(p.sid, exc.reason)
        return False
    if not connection.limiter.allow(kind):
        connection.over_rate.note(p.sid, kind)
        if connection.limiter.may_answer_refusal():
            _refuse_over_rate(p, kind, msg)
        return False
    signal_message(kind)
    if kind not in ("ping", "ping_req", "trickle") and log.isEnabledFor(logging.DEBUG):  # str(msg) costs
        log.debug("%s: %s %s", p.sid, kind, str(msg).replace("\n", " ")[:300] if kind != "offer" else "")
    try:
        return await _handle(room, p, kind, msg)
    except (ParticipantError, lk.SignalMessageError) as exc:  # e.g. a trickle candidate that does not parse
        log.warning("%s: %s refused: %s", p.sid, kind, exc.reason)
    except Exception:
        log.exception("%s: %s failed", p.sid, kind)
    return False


_COPIED = frozenset({"add_track", "mute", "update_metadata", "trickle"})  # RequestResponse carries these requests


def _refuse_over_rate(p: Participant, kind: str, msg: Any) -> None:
    """LIMIT_EXCEEDED for a request over its rate (pings are only dropped: an answer would be a pong)."""
    if kind in ("ping", "ping_req"):
        return
    copy = {kind: msg} if kind in _COPIED else {}
    request_id = msg.request_id if kind == "update_metadata" else 0
    p.send(lk.request_response(rtc.RequestResponse.Reason.LIMIT_EXCEEDED, request_id=request_id,
                               message=f"too many {kind} requests", **copy))


async def _handle(room: Room, p: Participant, kind: str, msg: Any) -> bool:
    if kind == "ping":
        p.send(lk.pong())
    elif kind == "ping_req":
        p.send(lk.pong_resp(msg.timestamp))
    elif kind == "offer":
        await room.handle_offer(p, msg)
    elif kind == "answer":
        await p.handle_answer(msg)
    elif kind == "trickle":
        # ICE-lite: the server never checks toward the client; its candidates are validated and its relayed ones
        # kept, to tell which path a transport ended on (Participant.path).
        p.note_remote_candidate(lk.parse_candidate_init(msg.candidateInit).candidate)
    elif kind == "add_track":
        await room.handle_add_track(p, msg)
    elif kind == "mute":
        await room.handle_mute(p, msg)
    elif kind == "subscription":
        room.handle_subscription(p, msg)
    elif kind == "track_setting":
        await p.set_track_settings(msg)
    elif kind == "update_metadata":
        await _update_metadata(room, p, msg)
    elif kind == "leave":
        # A thousand LeaveRequests read at once are handled over several short loop iterations (control/rtc/pacer.py).
        # The requests on the way to first media (answer, trickle) are light and not paced.
        await pacer.turn()
        log.info("%s left (%s)", p.sid, models.DisconnectReason.Name(msg.reason) if msg.reason in
                 models.DisconnectReason.values() else msg.reason)
        await room.remove(p, Reason.CLIENT_INITIATED)
        return True
    elif kind == "simulate":
        return await _simulate(room, p, msg)
    elif kind == "subscription_permission":
        room.handle_subscription_permission(p, msg)
    else:
        # sync_state (resumes re-offer everything), update_layers, data tracks: not handled.
        log.debug("%s: %s ignored", p.sid, kind)
    return False


async def _simulate(room: Room, p: Participant, msg: rtc.SimulateScenario) -> bool:
    """The SDKs' test hooks (SimulateScenario): server-side leaves and a dropped signal on the next resume."""
    scenario = msg.WhichOneof("scenario")
    log.info("%s: simulate %s", p.sid, scenario)
    if scenario in ("leave_request_full_reconnect", "node_failure", "migration"):
        reason = Reason.MIGRATION if scenario == "migration" else Reason.STATE_MISMATCH
        p.send(lk.leave(reason, rtc.LeaveRequest.Action.RECONNECT))
        await room.remove(p, reason)
        return True
    if scenario == "server_leave":
        p.send(lk.leave(Reason.SERVER_SHUTDOWN))
        await room.remove(p, Reason.SERVER_SHUTDOWN)
        return True
    if scenario in ("disconnect_signal_on_resume", "disconnect_signal_on_resume_no_messages"):
        p.drop_next_resume("silent" if scenario.endswith("no_messages") else "after_reconnect")
    return False


async def _update_metadata(room: Room, p: Participant, msg: rtc.UpdateParticipantMetadata) -> None:
    """Own name/metadata/attributes (canUpdateOwnMetadata; LiveKit's limits: 512 KiB metadata, 64 KiB attributes)."""
    if not p.permission.can_update_metadata:
        p.send(lk.request_response(rtc.RequestResponse.Reason.NOT_ALLOWED, request_id=msg.request_id,
                                   update_metadata=msg))
        return
    attributes_size = sum(len(k.encode()) + len(v.encode()) for k, v in msg.attributes.items())
    if len(msg.metadata.encode()) > MAX_METADATA_BYTES or attributes_size > MAX_ATTRIBUTES_BYTES:
        p.send(lk.request_response(rtc.RequestResponse.Reason.LIMIT_EXCEEDED, request_id=msg.request_id,
                                   update_metadata=msg, message="metadata or attributes too large"))
        return
    await room.update_participant(p, name=msg.name, metadata=msg.metadata, attributes=msg.attributes)
