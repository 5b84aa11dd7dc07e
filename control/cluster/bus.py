"""Requests between nodes over Redis pub/sub: each node listens on its own channel; a call waits on a reply channel.

A request is JSON ``{kind, reply, body}`` (binary fields base64 in ``body``); ``reply`` is empty for a one-way
request and otherwise names the channel the answer goes to, which the caller subscribed to before publishing. A
publish that reaches no subscriber means the node is gone (:class:`NodeUnavailable`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from control.cluster.keys import node_channel, reply_channel

log = logging.getLogger("control.cluster.bus")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
CALL_TIMEOUT_S = 5.0


class NodeUnavailable(Exception):
    """The node did not hear the request, or did not answer in time."""


class Bus:
    """This node's end of the request channels: serves ``handlers`` by kind, calls other nodes."""

    def __init__(self, redis: Any, node_id: str, handlers: dict[str, Handler]) -> None:
        self.redis = redis
        self.node_id = node_id
        self.handlers = handlers
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(node_channel(self.node_id))
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()

    async def _listen(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bus: %r; listening again", exc)
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            task = asyncio.get_running_loop().create_task(self._serve(message["data"]))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _serve(self, data: bytes) -> None:
        try:
            request: dict[str, Any] = json.loads(data)
            handler = self.handlers[request["kind"]]
        except (ValueError, KeyError, TypeError):
            log.warning("bus: malformed request dropped")
            return
        try:
            answer = await handler(request.get("body") or {})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("bus: %s failed", request["kind"])
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        if request.get("reply"):
            await self.redis.publish(reply_channel(request["reply"]), json.dumps(answer or {}))

    async def send(self, node_id: str, kind: str, body: dict[str, Any]) -> None:
        """A one-way request; NodeUnavailable when nobody listens on the node's channel."""
        heard = await self.redis.publish(node_channel(node_id), json.dumps({"kind": kind, "reply": "", "body": body}))
        if not heard:
            raise NodeUnavailable(f"node {node_id} is not listening")

    async def call(self, node_id: str, kind: str, body: dict[str, Any],
                   timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """A request and its answer."""
        call_id = uuid.uuid4().hex
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(reply_channel(call_id))
            heard = await self.redis.publish(node_channel(node_id),
                                             json.dumps({"kind": kind, "reply": call_id, "body": body}))
            if not heard:
                raise NodeUnavailable(f"node {node_id} is not listening")
            deadline = asyncio.get_running_loop().time() + timeout_s
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
                if message is not None and message.get("type") == "message":
                    answer: dict[str, Any] = json.loads(message["data"])
                    return answer
            raise NodeUnavailable(f"node {node_id} did not answer {kind} within {timeout_s:g} s")
        finally:
            await pubsub.aclose()
