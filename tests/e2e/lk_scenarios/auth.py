"""Issue 3 acceptance, permissions: bad-signature, expired and no-roomJoin tokens are refused before the WebSocket
upgrade and /rtc/validate says why; a canPublish=false participant cannot publish but can subscribe, and with
canPublishData its data reaches the room through a publisher transport created by its first publisher offer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import jwt
from common import Publisher, Receiver, connect, wait_for
from livekit import api, rtc

ROOM = "e2e-auth"


def expired_token(ctx: Any, identity: str) -> str:
    now = int(time.time())
    claims = {"iss": ctx.api_key, "sub": identity, "nbf": now - 7200, "exp": now - 3600,
              "video": {"roomJoin": True, "room": ROOM}}
    return jwt.encode(claims, ctx.api_secret, algorithm="HS256")


async def refusal(ctx: Any, token: str) -> dict[str, Any]:
    """What the SDK, a raw upgrade and /rtc/validate say about ``token``."""
    out: dict[str, Any] = {}
    try:
        room = await connect(ctx.url, token)
    except rtc.ConnectError as exc:
        out["sdk_error"] = str(exc)
    else:
        out["sdk_error"] = None
        await room.disconnect()
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(f"{ctx.http}/rtc", headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            out["upgrade_status"] = exc.status
        else:
            out["upgrade_status"] = 101
            await ws.close()
        async with session.get(f"{ctx.http}/rtc/validate", headers=headers) as resp:
            out["validate"] = [resp.status, await resp.text()]
    return out


async def path_header(ctx: Any, token: str) -> str:
    """/rtc/validate's X-Mediarouter-Path for the holder of ``token`` (where its transports are)."""
    async with aiohttp.ClientSession() as session, session.get(
        f"{ctx.http}/rtc/validate", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        return resp.headers.get("X-Mediarouter-Path", "")


async def run(ctx: Any, result: dict[str, Any]) -> None:
    wrong_secret = (api.AccessToken(ctx.api_key, "not-the-secret-0123456789-abcdefghijklmnop")
                    .with_identity("mallory").with_grants(api.VideoGrants(room_join=True, room=ROOM)).to_jwt())
    result["bad_signature"] = await refusal(ctx, wrong_secret)
    result["expired"] = await refusal(ctx, expired_token(ctx, "late"))
    result["no_room_join"] = await refusal(ctx, ctx.token("nojoin", ROOM, room_join=False))

    room_p = await connect(ctx.url, ctx.token("presenter", ROOM))
    presenter = Publisher(room_p, 320, 240)
    await presenter.publish(audio=False)
    heard = Receiver(room_p).attach()
    viewer_token = ctx.token("viewer", ROOM, can_publish=False, can_publish_data=True)
    room_v = await connect(ctx.url, viewer_token)
    viewer = Receiver(room_v).attach()
    result["viewer_path_at_join"] = await path_header(ctx, viewer_token)
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    try:
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await asyncio.wait_for(room_v.local_participant.publish_track(track, options), 25)
        result["viewer_publish_error"] = None
    except Exception as exc:  # noqa: BLE001 - the refusal is the expected outcome
        result["viewer_publish_error"] = f"{type(exc).__name__}: {exc}"
    await wait_for(lambda: viewer.frames("presenter", 320, 240) >= 10, 20)
    result["viewer_video"] = dict(viewer.video)
    result["presenter_sees_viewer_tracks"] = [
        len(p.track_publications) for p in room_p.remote_participants.values() if p.identity == "viewer"
    ]
    await room_v.local_participant.publish_data(b"from a viewer", reliable=True, topic="viewer")
    await wait_for(lambda: bool(heard.data), 20)
    result["presenter_heard"] = [(d["data"], d["from"]) for d in heard.data]
    result["viewer_path_after_data"] = await path_header(ctx, viewer_token)
    await viewer.stop()
    await presenter.stop()
    await room_v.disconnect()
    await room_p.disconnect()
