"""Fixtures of the cluster tests: a private redis-server per test module, and clients of it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from redis_server import REDIS_SERVER, SKIP_REASON, RedisServer  # noqa: E402

from control.cluster.client import connect  # noqa: E402
from control.config import RedisSettings  # noqa: E402


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Any]:
    """A client of a flushed database; a test wanting two nodes makes a second with :func:`client`."""
    client = connect(RedisSettings(address=redis_server.address))
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


def client(server: RedisServer) -> Any:
    return connect(RedisSettings(address=server.address))
