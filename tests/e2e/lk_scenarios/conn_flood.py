"""Issue 15 acceptance, unauthenticated exhaustion: 2,000 TCP connections from 127.0.0.2 that never send a byte
(the server runs with the header deadline, the per-address cap and the fd reserve the test sets in its
environment); while they are held, ``/healthz`` answers and the unmodified SDK joins a room from the node address;
the connections over the per-address cap get a 503 at once, the others are closed by the header deadline."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any
from urllib.parse import urlparse

import aiohttp
from common import connect

ROOM = "e2e-flood"
FLOOD = 2000
FLOOD_SOURCE = "127.0.0.2"


async def health(ctx: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{ctx.http}/healthz") as reply:
        body = await reply.json() if reply.status == 200 else {}
        return {"status": reply.status, "connections": body.get("control", {}).get("connections")}


async def outcome(loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout_s: float) -> str:
    """"503" (refused at once), "closed" (closed without a byte), "open" (still open after ``timeout_s``)."""
    try:
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout_s)
    except TimeoutError:
        return "open"
    except ConnectionResetError:
        return "closed"
    if data.startswith(b"HTTP/1.1 503 "):
        return "503"
    return "closed" if not data else f"answered {data[:40]!r}"


async def run(ctx: Any, result: dict[str, Any]) -> None:
    url = urlparse(ctx.http)
    server = (url.hostname, url.port)
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.bind((FLOOD_SOURCE, 0))
            socks.append(s)
        for i in range(0, FLOOD, 200):
            await asyncio.gather(*(loop.sock_connect(s, server) for s in socks[i:i + 200]))
        start = loop.time()
        result["health_during"] = [await health(ctx)]
        room = await connect(ctx.url, ctx.token("joiner", ROOM))
        result["join_s"] = round(loop.time() - start, 2)
        result["joined_sid"] = room.local_participant.sid
        result["connection_state"] = room.connection_state
        result["health_during"].append(await health(ctx))
        outcomes = await asyncio.gather(*(outcome(loop, s, 30.0) for s in socks))
        result["outcomes"] = {kind: outcomes.count(kind) for kind in sorted(set(outcomes))}
        result["health_after"] = await health(ctx)
        await room.disconnect()
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
