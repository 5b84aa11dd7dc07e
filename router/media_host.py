"""Installs the media side of a worker on its channel (initial version: ``worker.dump`` only).

The media engineer replaces this module: it is the one place where the worker's process shell
(router/worker.py) hands its loop, UDP socket and channel to the media code (MediaRouter, transports,
fastpath). This initial version registers ``worker.dump`` and nothing else.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from router.protocol import Method, WorkerDump

if TYPE_CHECKING:
    from router.worker import Worker


def install_media(worker: Worker) -> None:
    """Registers the media request handlers on ``worker.channel``; called once, before ``worker.running``."""

    async def dump(target_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return WorkerDump(worker_id=worker.worker_id, pid=os.getpid(), core=worker.core,
                          udp_port=worker.rtc_port).to_wire()

    worker.channel.register(Method.WORKER_DUMP, dump)
