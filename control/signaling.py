"""LiveKit signaling endpoints: the ``/rtc`` WebSocket (v0, dual peer connection) and its HTTP companions.

Owns the connection life cycle and framing (one binary protobuf ``SignalRequest``/``SignalResponse`` per
WebSocket message, RFC 6455), token checks before the upgrade, dispatch of client requests to the room and
participant, and keepalive answers. ``/rtc/v1`` and ``/rtc/v1/validate`` answer 404 with
``Access-Control-Allow-Origin: *`` so that clients fall back to ``/rtc`` (docs/PROTOCOL.md, Connection). Resumes are
declined with ``leave {STATE_MISMATCH, RECONNECT}``, which makes clients rejoin (§3.11).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import warnings
from collections.abc import Mapping
from typing import Any

from aiohttp import WSMsgType, web
from livekit.protocol import models, rtc

from control import lk_messages as lk
from control.auth import AuthError, Claims, require_join, token_from_request, verify_token
from control.media import MediaClient
from control.participant import ClientParams, Participant, ParticipantError
from control.placement import NoWorkerAvailable, WorkerLoad, loads_from_slots
from control.rooms import JoinRefused, Room, RoomManager, RoomSettings
from control.twirp import setup_twirp

log = logging.getLogger("control.signaling")

MANAGER_KEY = web.AppKey("room_manager", RoomManager)
CORS = {"Access-Control-Allow-Origin": "*"}
MAX_METADATA_BYTES = 512 * 1024
MAX_ATTRIBUTES_BYTES = 64 * 1024
MAX_QUEUED_FRAMES = 2000  # a client this far behind is cut off (it resumes or rejoins)
Reason = models.DisconnectReason


class SupervisorPool:
    """Rooms' view of the Supervisor: worker loads for placement and a MediaClient per worker."""

    def __init__(self, supervisor: Any) -> None:
        self.supervisor = supervisor

    def loads(self, rooms_per_worker: Mapping[int, int]) -> list[WorkerLoad]:
        return loads_from_slots(self.supervisor.slots, rooms_per_worker)

    def media(self, worker_id: int) -> MediaClient:
        return MediaClient(self.supervisor.client(worker_id))


def setup_signaling(
    app: web.Application, *, manager: RoomManager | None = None, settings: RoomSettings | None = None
) -> None:
    """Adds the LiveKit routes (``/rtc``, validate, the v1 404s and the Twirp RoomService).

    Without ``manager``, one is built over ``app["supervisor"]`` with the keys of ``app["settings"]`` and the
    SDP layer of ``control.negotiation``."""
    if manager is None:
        supervisor = app["supervisor"]
        keys = dict(app["settings"].keys)
        settings = settings or RoomSettings(keys=keys)
        if not settings.keys:
            settings = dataclasses.replace(settings, keys=keys)
        from control.participant import LiveKitNegotiator

        manager = RoomManager(SupervisorPool(supervisor), LiveKitNegotiator(), settings)
        attach_supervisor(manager, supervisor)
    app[MANAGER_KEY] = manager
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["room_manager"] = manager
    app.router.add_get("/rtc", rtc_handler)
    app.router.add_get("/rtc/validate", validate_handler)
    app.router.add_get("/rtc/v1", v1_handler)
    app.router.add_get("/rtc/v1/validate", v1_handler)
    setup_twirp(app, manager)
    app.on_shutdown.append(_shutdown)


def attach_supervisor(manager: RoomManager, supervisor: Any) -> None:
    """Routes every worker's notifications and deaths to the room manager."""
    for client in supervisor.clients:
        worker_id = client.worker_id
        client.on_notification(
            lambda event, target, body, wid=worker_id: manager.on_notification(wid, event, target, body)
        )
    supervisor.on_worker_died(manager.on_worker_died)


async def _shutdown(app: web.Application) -> None:
    await app[MANAGER_KEY].close()


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
    """``GET /rtc/validate``: 200 ``success`` when a join would be accepted, else the plain reason."""
    try:
        authorize(request)
    except AuthError as exc:
        return web.Response(status=exc.status, text=exc.reason, headers=CORS)
    return web.Response(text="success", headers=CORS)


async def v1_handler(request: web.Request) -> web.Response:
    """``/rtc/v1`` (single peer connection) is not served: 404 makes every SDK fall back to ``/rtc``."""
    return web.Response(status=404, text="not found", headers=CORS)


# -------------------------------------------------------------------------------------- WebSocket


class WebSocketSink:
    """Serialises SignalResponses onto one WebSocket in order, from synchronous callers."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._write())
        self.closed = False

    def send(self, message: rtc.SignalResponse) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= MAX_QUEUED_FRAMES:
            log.warning("signal connection does not keep up (%d frames queued); closing it", self.queue.qsize())
            self.close()
            return
        self.queue.put_nowait(message.SerializeToString())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    async def _write(self) -> None:
        try:
            while (frame := await self.queue.get()) is not None:
                await self.ws.send_bytes(frame)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("signal write failed: %r", exc)
        finally:
            self.closed = True
            if not self.ws.closed:
                await self.ws.close(code=1000)

    async def drain(self) -> None:
        """Closes after everything queued is written."""
        self.close()
        await asyncio.shield(self.task)


async def rtc_handler(request: web.Request) -> web.StreamResponse:
    """``GET /rtc``: verify, upgrade, JoinResponse, then one request at a time until leave or close."""
    try:
        claims = authorize(request)
    except AuthError as exc:
        return web.Response(status=exc.status, text=exc.reason, headers=CORS)
    ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=lk.MAX_SIGNAL_REQUEST_BYTES)
    if not ws.can_prepare(request).ok:
        return web.Response(status=404, text="expected a WebSocket upgrade", headers=CORS)
    manager = request.app[MANAGER_KEY]
    params = client_params(request.query)
    await ws.prepare(request)
    sink = WebSocketSink(ws)
    try:
        if params.reconnect:
            found = manager.find_session(claims, params.sid)
            if found is None:
                # Nothing to resume: the client is told to rejoin from scratch (full reconnect).
                sink.send(lk.leave(Reason.STATE_MISMATCH, rtc.LeaveRequest.Action.RECONNECT))
                await sink.drain()
                return ws
            room, participant = found
            drop, participant.drop_next_resume = participant.drop_next_resume, ""
            if drop:  # SimulateScenario: this resume loses its signal connection again
                participant.attach(sink)
                if drop == "after_reconnect":
                    sink.send(lk.reconnect(server_version=manager.settings.server_version,
                                           node_id=manager.settings.node_id, region=manager.settings.region))
                await sink.drain()
                room.signal_closed(participant, sink)
                return ws
            await room.resume(participant, sink)
            log.info("%s resumed %s in %s", claims.identity, participant.sid, claims.room)
        else:
            room, participant = await manager.join(claims, params, sink)
    except (NoWorkerAvailable, JoinRefused) as exc:
        log.warning("join %s/%s refused: %s", claims.room, claims.identity, exc)
        sink.send(lk.leave(Reason.JOIN_FAILURE))
        await sink.drain()
        return ws
    except Exception:
        log.exception("%s %s/%s failed", "resume" if params.reconnect else "join", claims.room, claims.identity)
        if params.reconnect:  # a failed resume becomes a full reconnect; the old session ends after the grace
            sink.send(lk.leave(Reason.STATE_MISMATCH, rtc.LeaveRequest.Action.RECONNECT))
            found = manager.find_session(claims, params.sid)
            if found is not None:
                found[0].signal_closed(found[1], found[1].sink)
        else:
            sink.send(lk.leave(Reason.JOIN_FAILURE))
        await sink.drain()
        return ws
    if not params.reconnect:
        log.info("%s joined %s as %s (%s %s)", claims.identity, claims.room, participant.sid, params.sdk,
                 params.version)
    left = False
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                left = await dispatch(room, participant, msg.data)
                if left:
                    break
            elif msg.type == WSMsgType.TEXT:
                left = await dispatch(room, participant, msg.data)
                if left:
                    break
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        if left:
            await sink.drain()
        else:
            sink.close()
            room.signal_closed(participant, sink)
    return ws


async def dispatch(room: Room, p: Participant, frame: bytes | str) -> bool:
    """Handles one client frame; returns True when the client left."""
    if p.closed:
        return True
    try:
        kind, msg = lk.parse_signal_request(frame)
    except lk.SignalMessageError as exc:
        log.warning("%s: bad signal frame: %s", p.sid, exc.reason)
        return False
    if kind not in ("ping", "ping_req", "trickle"):
        log.debug("%s: %s %s", p.sid, kind, str(msg).replace("\n", " ")[:300] if kind != "offer" else "")
    try:
        return await _handle(room, p, kind, msg)
    except ParticipantError as exc:
        log.warning("%s: %s refused: %s", p.sid, kind, exc.reason)
    except Exception:
        log.exception("%s: %s failed", p.sid, kind)
    return False


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
        # ICE-lite: the server never checks toward the client, so its candidates are only validated.
        lk.parse_candidate_init(msg.candidateInit)
    elif kind == "add_track":
        await room.handle_add_track(p, msg)
    elif kind == "mute":
        await room.handle_mute(p, msg)
    elif kind == "subscription":
        room.handle_subscription(p, msg)
    elif kind == "track_setting":
        await p.set_track_settings(msg)
    elif kind == "update_metadata":
        _update_metadata(room, p, msg)
    elif kind == "leave":
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
        p.drop_next_resume = "silent" if scenario.endswith("no_messages") else "after_reconnect"
    return False


def _update_metadata(room: Room, p: Participant, msg: rtc.UpdateParticipantMetadata) -> None:
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
    if msg.name:
        p.name = msg.name
    if msg.metadata:
        p.metadata = msg.metadata
    for key, value in msg.attributes.items():
        if value:
            p.attributes[key] = value
        else:
            p.attributes.pop(key, None)
    p.bump()
    room.broadcast(p)
