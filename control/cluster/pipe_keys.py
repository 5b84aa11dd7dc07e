"""The SRTP keys of the pipes between two workers on different hosts: one key pair per pair of workers, in Redis.

Every pipe between two workers shares one pipe transport, so one key pair (docs/FORWARDING.md, Pipes between
hosts): whichever node first pipes between the two workers makes the keys and stores them with ``SET NX``; every
other pipe between them, whichever node opens it, reads the same keys. A worker is named by its address
(``ip:port``), which is what the pipe transport is keyed by. The stored keys are those of the lower address (its
``local_key`` is what it sends with); the higher end uses them reversed. They live ``KEY_TTL_S`` after their last use.
"""

from __future__ import annotations

import json
from typing import Any

from control.cluster.keys import PREFIX
from router.messages import PipeSrtp

PROFILE = "SRTP_AES128_CM_HMAC_SHA1_80"
KEY_TTL_S = 24 * 3600


def pipe_key(a: str, b: str) -> str:
    low, high = sorted((a, b))
    return f"{PREFIX}pipekey:{low}|{high}"


async def pair_srtp(redis: Any, this: str, other: str) -> PipeSrtp:
    """The keys of the pipes between worker ``this`` and worker ``other`` (addresses ``ip:port``), as ``this``
    holds them."""
    key = pipe_key(this, other)
    fresh = PipeSrtp.generate(PROFILE)
    wire = json.dumps({"profile": fresh.profile, "local_key": fresh.local_key.hex(),
                       "remote_key": fresh.remote_key.hex()})
    await redis.set(key, wire, nx=True, ex=KEY_TTL_S)
    stored = await redis.getex(key, ex=KEY_TTL_S)
    if stored is None:  # expired between the two calls: ours stands
        await redis.set(key, wire, ex=KEY_TTL_S)
        stored = wire
    fields = json.loads(stored)
    srtp = PipeSrtp(profile=fields["profile"], local_key=bytes.fromhex(fields["local_key"]),
                    remote_key=bytes.fromhex(fields["remote_key"]))
    return srtp if this == min(this, other) else srtp.reversed()
