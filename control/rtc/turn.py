"""TURN servers for the clients: the ``turn_servers`` setting and the ``ice_servers`` a participant is sent.

A server is either given with a fixed ``username``/``credential`` (coturn's ``lt-cred-mech`` with a static user) or
with the ``secret`` of coturn's ``use-auth-secret``/``static-auth-secret`` (the "TURN REST API" of
draft-uberti-behave-turn-rest-00, which coturn implements): each participant then gets its own time-limited
credentials, ``username = "<expiry unix time>:<identity>"`` and ``credential = base64(HMAC-SHA1(secret,
username))``. coturn checks both the HMAC and that the expiry is still in the future, so a credential stops working
``ttl_s`` after it was minted; clients get fresh ones on every join and resume. The matching coturn configuration
is in docs/deploy.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PROTOCOLS = ("udp", "tcp", "tls")
DEFAULT_PORTS = {"udp": 3478, "tcp": 3478, "tls": 5349}
DEFAULT_TTL_S = 86400
_FIELDS = {"host", "port", "protocol", "username", "credential", "secret", "ttl_s"}


@dataclass(frozen=True, slots=True)
class TurnServer:
    """One entry of ``turn_servers``; exactly one of ``secret`` and ``username``+``credential`` is set."""

    host: str
    port: int
    protocol: str = "udp"
    username: str = ""
    credential: str = ""
    secret: str = ""
    ttl_s: int = DEFAULT_TTL_S

    def __post_init__(self) -> None:
        if not self.host or any(c in self.host for c in " /?@"):
            raise ValueError(f"host {self.host!r} must be a host name or address")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} must be one of {', '.join(PROTOCOLS)}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range 1-65535")
        if self.secret:
            if self.username or self.credential:
                raise ValueError("give either secret or username and credential, not both")
            if not 60 <= self.ttl_s <= 7 * 86400:
                raise ValueError(f"ttl_s {self.ttl_s} out of range 60-604800")
        elif not (self.username and self.credential):
            raise ValueError("needs a secret (coturn use-auth-secret) or a username and a credential")

    @classmethod
    def from_mapping(cls, item: Mapping[str, Any]) -> TurnServer:
        unknown = sorted(str(k) for k in item if k not in _FIELDS)
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        protocol = str(item.get("protocol", "udp")).lower()
        port = item.get("port", DEFAULT_PORTS.get(protocol, 3478))
        ttl = item.get("ttl_s", DEFAULT_TTL_S)
        for name, number in (("port", port), ("ttl_s", ttl)):
            if isinstance(number, bool) or not isinstance(number, int):
                raise ValueError(f"{name} must be an integer, not {number!r}")
        texts = {name: item.get(name, "") for name in ("host", "username", "credential", "secret")}
        for name, text in texts.items():
            if not isinstance(text, str):
                raise ValueError(f"{name} must be a string, not {text!r}")
        return cls(host=texts["host"], port=port, protocol=protocol, username=texts["username"],
                   credential=texts["credential"], secret=texts["secret"], ttl_s=ttl)

    @property
    def url(self) -> str:
        """The RFC 7065 URI: ``turn:host:port?transport=udp|tcp``, or ``turns:`` over TLS."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "turns" if self.protocol == "tls" else "turn"
        transport = "udp" if self.protocol == "udp" else "tcp"
        return f"{scheme}:{host}:{self.port}?transport={transport}"

    def credentials(self, identity: str, now: float | None = None) -> tuple[str, str]:
        """(username, credential) for participant ``identity``: the fixed pair, or a TURN REST pair minted now."""
        if not self.secret:
            return self.username, self.credential
        expiry = int(time.time() if now is None else now) + self.ttl_s
        return rest_credentials(self.secret, f"{expiry}:{identity}")


def rest_credentials(secret: str, username: str) -> tuple[str, str]:
    """coturn's use-auth-secret pair: ``username`` and base64(HMAC-SHA1(secret, username))."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers(servers: Sequence[TurnServer], identity: str,
                now: float | None = None) -> list[tuple[list[str], str, str]]:
    """(urls, username, credential) per server for one participant, in the order configured."""
    out = []
    for server in servers:
        username, credential = server.credentials(identity, now)
        out.append(([server.url], username, credential))
    return out
