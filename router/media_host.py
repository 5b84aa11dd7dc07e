"""Installs the media side of a worker on its channel.

This is the one place where the worker's process shell (router/worker.py) hands its loop, UDP socket and channel
to the media code: ``worker.dump`` is answered here, and ``router.media_service.MediaService`` registers every
media request (media routers, transports, producers, consumers, data channels) and drives the fast path.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from router.media_service import MediaService
from router.protocol import Empty, Method, WorkerDump

if TYPE_CHECKING:
    from router.worker import Worker


def install_media(worker: Worker) -> MediaService:
    """Registers the request handlers on ``worker.channel`` and starts the Engine; called once, before
    ``worker.running``."""

    async def dump(target_id: str, body: Empty) -> WorkerDump:
        return WorkerDump(worker_id=worker.worker_id, pid=os.getpid(), core=worker.core, udp_port=worker.rtc_port,
                          media=service.heartbeat())

    service = MediaService(worker)
    worker.channel.handle(Method.WORKER_DUMP, dump)
    service.start()
    return service
