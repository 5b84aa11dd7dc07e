"""The Redis client of a node, from :class:`control.config.RedisSettings`: a plain connection or a Sentinel master.

``redis.asyncio`` is imported here only, when a cluster is configured.
"""

from __future__ import annotations

from typing import Any

from control.config import RedisSettings


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 6379)


def connect(settings: RedisSettings) -> Any:
    """A ``redis.asyncio.Redis`` (bytes in and out); connections are made when first used."""
    import redis.asyncio as aioredis

    common: dict[str, Any] = {"db": settings.db, "username": settings.username or None,
                              "password": settings.password or None}
    if settings.sentinel_master_name:
        from redis.asyncio.sentinel import Sentinel

        sentinel = Sentinel([_host_port(a) for a in settings.sentinel_addresses], ssl=settings.use_tls,
                            sentinel_kwargs={"username": common["username"], "password": common["password"]})
        return sentinel.master_for(settings.sentinel_master_name, ssl=settings.use_tls, **common)
    address = settings.address
    if address.startswith("unix://"):
        address = address[len("unix://"):]
    if address.startswith("/"):
        return aioredis.Redis(unix_socket_path=address, **common)
    host, port = _host_port(address)
    return aioredis.Redis(host=host, port=port, ssl=settings.use_tls, **common)
