"""LiveKit-compatible access tokens: minting, verification and grant handling.

Owns the JWT boundary of the control process: tokens stop here and the rest of control only sees
`Claims`. Follows RFC 7519 (JWT) and RFC 7515 (JWS) restricted to HS256 (RFC 7518 §3.2), with the
semantics of LiveKit's `auth/verifier.go` and `auth/grants.go`:

- the API key is the `iss` claim and selects the secret; only HS256 is accepted;
- `exp` is required, `nbf` is honoured, both with 60 s of leeway;
- the identity is `sub` (falling back to `jti`);
- the `video` claim is LiveKit's VideoGrant in camelCase; unset `canPublish` / `canSubscribe` mean true,
  unset `canPublishData` follows `canPublish`, a non-empty `canPublishSources` restricts sources.

`token_from_request` implements the two ways clients pass tokens (docs/PROTOCOL.md, Tokens): an
`Authorization: Bearer <jwt>` header, or the `access_token` query parameter.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.utils import base64url_encode
from livekit.protocol import models

LEEWAY_S = 60
DEFAULT_TTL_S = 6 * 3600
MIN_REFRESH_TTL_S = 600
MAX_NAME_LENGTH = 256
MAX_TOKEN_TIME = 2**53  # seconds; JSON numbers beyond this are not exact integers any more
ALGORITHM = "HS256"

# One HS256 signer, and the header segment every token we mint starts with (what ``jwt.encode`` writes for HS256:
# its keys sorted, no spaces). Signing and verifying with them costs one JSON parse or dump and one HMAC per token,
# where ``jwt.encode`` and three ``jwt.decode`` passes cost a header dump, a key check and a warning per token and
# three base64 and JSON parses of the same token (docs/PERFORMANCE.md, "Large rooms: joins").
_HS256 = HMACAlgorithm(HMACAlgorithm.SHA256)
_HEADER_SEGMENT = base64url_encode(
    json.dumps({"alg": ALGORITHM, "typ": "JWT"}, separators=(",", ":"), sort_keys=True).encode()
)

#: LiveKit's canPublishSources names -> TrackSource enum values.
SOURCE_NAMES: dict[str, int] = {
    "camera": models.TrackSource.CAMERA,
    "microphone": models.TrackSource.MICROPHONE,
    "screen_share": models.TrackSource.SCREEN_SHARE,
    "screen_share_audio": models.TrackSource.SCREEN_SHARE_AUDIO,
}

#: Participant kinds as they appear in the `kind` claim (lower-case enum names).
KIND_NAMES: dict[str, int] = {
    "standard": models.ParticipantInfo.Kind.STANDARD,
    "ingress": models.ParticipantInfo.Kind.INGRESS,
    "egress": models.ParticipantInfo.Kind.EGRESS,
    "sip": models.ParticipantInfo.Kind.SIP,
    "agent": models.ParticipantInfo.Kind.AGENT,
    "connector": models.ParticipantInfo.Kind.CONNECTOR,
    "bridge": models.ParticipantInfo.Kind.BRIDGE,
}

# camelCase VideoGrant key -> (Grants field, expected type)
_BOOL_KEYS: dict[str, str] = {
    "roomCreate": "room_create",
    "roomList": "room_list",
    "roomRecord": "room_record",
    "roomAdmin": "room_admin",
    "roomJoin": "room_join",
    "ingressAdmin": "ingress_admin",
    "canPublish": "can_publish",
    "canSubscribe": "can_subscribe",
    "canPublishData": "can_publish_data",
    "canUpdateOwnMetadata": "can_update_own_metadata",
    "hidden": "hidden",
    "recorder": "recorder",
    "agent": "agent",
    "canSubscribeMetrics": "can_subscribe_metrics",
    "canManageAgentSession": "can_manage_agent_session",
}
_STR_KEYS: dict[str, str] = {"room": "room", "destinationRoom": "destination_room"}
_LIST_KEYS: dict[str, str] = {"canPublishSources": "can_publish_sources"}
GRANT_KEYS: frozenset[str] = frozenset(_BOOL_KEYS) | frozenset(_STR_KEYS) | frozenset(_LIST_KEYS)


class AuthError(Exception):
    """A token or request was refused. `reason` is the plain-text body for the HTTP error."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Grants:
    """LiveKit's VideoGrant. Tri-state permissions keep `None` for "not set in the token"."""

    room_create: bool = False
    room_list: bool = False
    room_record: bool = False
    room_admin: bool = False
    room_join: bool = False
    room: str = ""
    destination_room: str = ""
    ingress_admin: bool = False
    can_publish: bool | None = None
    can_subscribe: bool | None = None
    can_publish_data: bool | None = None
    can_publish_sources: tuple[str, ...] = ()
    can_update_own_metadata: bool = False
    hidden: bool = False
    recorder: bool = False
    agent: bool = False
    can_subscribe_metrics: bool = False
    can_manage_agent_session: bool = False

    @classmethod
    def from_claim(cls, video: Mapping[str, Any]) -> Grants:
        """Parse a camelCase `video` claim (unknown keys are ignored); ValueError names a bad key."""
        values: dict[str, Any] = {}
        for key, value in video.items():
            if key in _BOOL_KEYS:
                if value is None:
                    continue
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be a boolean")
                values[_BOOL_KEYS[key]] = value
            elif key in _STR_KEYS:
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise ValueError(f"{key} must be a string")
                values[_STR_KEYS[key]] = value
            elif key in _LIST_KEYS:
                if value is None:
                    continue
                values[_LIST_KEYS[key]] = _parse_sources(key, value)
        return cls(**values)

    def to_claim(self) -> dict[str, Any]:
        """The camelCase `video` claim; unset tri-states and empty values are left out (like livekit-api)."""
        claim: dict[str, Any] = {}
        for key, name in _BOOL_KEYS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if name in ("can_publish", "can_subscribe", "can_publish_data") or value:
                claim[key] = value
        for key, name in _STR_KEYS.items():
            if getattr(self, name):
                claim[key] = getattr(self, name)
        if self.can_publish_sources:
            claim["canPublishSources"] = list(self.can_publish_sources)
        return claim

    def get_can_publish(self) -> bool:
        return True if self.can_publish is None else self.can_publish

    def get_can_subscribe(self) -> bool:
        return True if self.can_subscribe is None else self.can_subscribe

    def get_can_publish_data(self) -> bool:
        return self.get_can_publish() if self.can_publish_data is None else self.can_publish_data

    def publish_sources(self) -> list[int]:
        """TrackSource values of `canPublishSources` (empty means every source)."""
        return [SOURCE_NAMES[name] for name in self.can_publish_sources]

    def can_publish_source(self, source: int) -> bool:
        """Whether a track of this TrackSource may be published."""
        if not self.get_can_publish():
            return False
        sources = self.publish_sources()
        return not sources or source in sources


@dataclass(frozen=True)
class Claims:
    """What a verified token says about its holder."""

    identity: str
    api_key: str
    expires_at: int
    not_before: int | None = None
    name: str = ""
    metadata: str = ""
    kind: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    grants: Grants = field(default_factory=Grants)

    @property
    def room(self) -> str:
        return self.grants.room

    def participant_kind(self) -> int:
        """`ParticipantInfo.Kind` for the `kind` claim (STANDARD when absent or unknown)."""
        return KIND_NAMES.get(self.kind, models.ParticipantInfo.Kind.STANDARD)

    def permission(self) -> models.ParticipantPermission:
        """The in-room permission LiveKit derives from the grant (`VideoGrant.ToPermission`)."""
        g = self.grants
        return models.ParticipantPermission(
            can_subscribe=g.get_can_subscribe(),
            can_publish=g.get_can_publish(),
            can_publish_data=g.get_can_publish_data(),
            can_publish_sources=g.publish_sources(),
            hidden=g.hidden,
            recorder=g.recorder,
            can_update_metadata=g.can_update_own_metadata,
            agent=g.agent,
            can_subscribe_metrics=g.can_subscribe_metrics,
            can_manage_agent_session=g.can_manage_agent_session,
        )


def _parse_sources(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{key} must be a list of source names")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str) or item.lower() not in SOURCE_NAMES:
            raise ValueError(f"{key} has unknown source {item!r}")
        names.append(item.lower())
    return tuple(names)


def _now(now: float | None) -> int:
    return int(time.time() if now is None else now)


def create_token(
    api_key: str,
    api_secret: str,
    *,
    identity: str,
    room: str,
    name: str | None = None,
    grants: Mapping[str, Any] | None = None,
    ttl_s: int = DEFAULT_TTL_S,
    metadata: str | None = None,
    attributes: Mapping[str, str] | None = None,
    kind: str | None = None,
    now: float | None = None,
) -> str:
    """Mint an HS256 token like LiveKit's AccessToken.

    The `video` grant defaults to {roomJoin: true, room, canPublish: true, canSubscribe: true,
    canPublishData: true}; `grants` (LiveKit's camelCase VideoGrant keys) overrides it.
    """
    if not api_key:
        raise ValueError("api_key must not be empty")
    if not api_secret:
        raise ValueError("api_secret must not be empty")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    video: dict[str, Any] = {
        "roomJoin": True,
        "room": room,
        "canPublish": True,
        "canSubscribe": True,
        "canPublishData": True,
    }
    for key, value in (grants or {}).items():
        if key not in GRANT_KEYS:
            raise ValueError(f"unknown video grant key {key!r}")
        video[key] = value
    parsed = Grants.from_claim(video)
    if parsed.room_join and (not identity or not parsed.room):
        raise ValueError("identity and room must be set when joining a room")
    if kind is not None and kind not in KIND_NAMES:
        raise ValueError(f"unknown participant kind {kind!r}")
    issued = _now(now)
    return _mint(api_key, api_secret, identity, parsed.to_claim(), issued, issued + int(ttl_s),
                 name, metadata, attributes, kind)


def _mint(api_key: str, api_secret: str, identity: str, video: dict[str, Any], issued: int, expires: int,
          name: str | None, metadata: str | None, attributes: Mapping[str, str] | None, kind: str | None) -> str:
    payload: dict[str, Any] = {
        "iss": api_key,
        "sub": identity,
        "nbf": issued,
        "exp": expires,
        "video": video,
    }
    if name:
        payload["name"] = name
    if metadata:
        payload["metadata"] = metadata
    if attributes:
        payload["attributes"] = dict(attributes)
    if kind:
        payload["kind"] = kind
    return _sign(payload, api_secret)


@functools.lru_cache(maxsize=64)
def _hmac_key(secret: str) -> bytes:
    """The secret as PyJWT's HMAC key (``prepare_key`` refuses PEM and SSH public keys: InvalidKeyError)."""
    return _HS256.prepare_key(secret)


# json.dumps(..., separators=...) builds an encoder per call: one, the same text (tokens, trickle candidates)
COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def _sign(payload: dict[str, Any], secret: str) -> str:
    """The compact JWS of ``payload`` under HS256, byte for byte what ``jwt.encode(payload, secret, "HS256")``
    returns, without its warning about secrets shorter than 32 bytes (LiveKit's dev secret is 6)."""
    if not isinstance(payload.get("iss", ""), str):
        raise TypeError("Issuer (iss) must be a string.")
    signing_input = _HEADER_SEGMENT + b"." + base64url_encode(COMPACT_JSON.encode(payload).encode())
    return (signing_input + b"." + base64url_encode(_HS256.sign(signing_input, _hmac_key(secret)))).decode()


def verify_token(token: str, keys: Mapping[str, str], *, now: float | None = None) -> Claims:
    """Verify a token against the known API keys ({api_key: secret}); raises AuthError with the reason."""
    if not token:
        raise AuthError("no token")
    # One parse of the token (header and payload), then the HMAC over its first two segments: PyJWT's checks of
    # the same token (segments, base64url, JSON objects, header parameters, alg, signature, sub and jti types).
    plain = _plain_parts(token)
    if plain is not None:
        header, unverified, signing_input, signature = plain
    else:
        try:
            decoded = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError("malformed token") from exc
        header, unverified, signature = decoded["header"], decoded["payload"], decoded["signature"]
        signing_input = token.encode().rsplit(b".", 1)[0]
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise AuthError(f"unsupported token algorithm {alg!r}, only HS256 is accepted")
    issuer = unverified.get("iss")
    if not issuer or not isinstance(issuer, str):
        raise AuthError("missing iss claim")
    secret = keys.get(issuer)
    if not secret:
        raise AuthError("unknown API key")
    try:
        key = _hmac_key(secret)
    except jwt.PyJWTError as exc:
        raise AuthError("malformed token") from exc
    if not _HS256.verify(signing_input, key, signature):
        raise AuthError("invalid token signature")
    payload = unverified
    for claim in ("sub", "jti"):  # PyJWT's verify_sub and verify_jti
        if claim in payload and not isinstance(payload[claim], str):
            raise AuthError("malformed token")
    return _claims_from_payload(payload, issuer, _now(now))


# A compact JWS as every LiveKit SDK writes it: three unpadded base64url segments.
_PLAIN_TOKEN = re.compile(rb"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_PLAIN_HEADER_KEYS = frozenset({"alg", "typ", "kid"})


def _plain_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes] | None:
    """(header, payload, signing input, signature) of a token in the plain form, or None for PyJWT to decide.

    Written here because PyJWT 2.15 checks the base64url alphabet one character at a time in Python (about 100 us
    of control's CPU per join); one compiled pattern checks the same. Anything beyond the plain form (padding, a
    header parameter other than alg, typ and a string kid, such as ``b64`` or ``crit``, JSON that is not an
    object) goes to PyJWT, so its rules and errors still apply there."""
    match = _PLAIN_TOKEN.fullmatch(token.encode())
    if match is None:
        return None
    header_b64, payload_b64, signature_b64 = match.groups()
    try:
        header = json.loads(_b64decode(header_b64))
        payload = json.loads(_b64decode(payload_b64))
        signature = _b64decode(signature_b64)
    except (ValueError, RecursionError):
        return None
    if type(header) is not dict or type(payload) is not dict or not header.keys() <= _PLAIN_HEADER_KEYS:
        return None
    if not isinstance(header.get("kid", ""), str):
        return None
    return header, payload, header_b64 + b"." + payload_b64, signature


def _b64decode(segment: bytes) -> bytes:
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


def _claims_from_payload(payload: Mapping[str, Any], issuer: str, now: int) -> Claims:
    exp = token_time(payload, "exp")
    if exp is None:
        raise AuthError("missing exp claim")
    if now > exp + LEEWAY_S:
        raise AuthError("token expired")
    nbf = token_time(payload, "nbf")
    if nbf is not None and now < nbf - LEEWAY_S:
        raise AuthError("token not yet valid")
    token_time(payload, "iat")  # not checked against the clock, but it must be a time too
    identity = payload.get("sub") or payload.get("jti") or ""
    if not isinstance(identity, str):
        raise AuthError("invalid sub claim")
    video = payload.get("video", {})
    if not isinstance(video, Mapping):
        raise AuthError("invalid video grant: not an object")
    try:
        grants = Grants.from_claim(video)
    except ValueError as exc:
        raise AuthError(f"invalid video grant: {exc}") from exc
    attributes = payload.get("attributes") or {}
    if not isinstance(attributes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise AuthError("invalid attributes claim")
    strings: dict[str, str] = {}
    for key in ("name", "metadata", "kind"):
        value = payload.get(key) or ""
        if not isinstance(value, str):
            raise AuthError(f"invalid {key} claim")
        strings[key] = value
    return Claims(
        identity=identity,
        api_key=issuer,
        expires_at=int(exp),
        not_before=None if nbf is None else int(nbf),
        name=strings["name"],
        metadata=strings["metadata"],
        kind=strings["kind"],
        attributes=dict(attributes),
        grants=grants,
    )


def token_time(payload: Mapping[str, Any], name: str) -> int | None:
    """The NumericDate claim ``name`` (RFC 7519 §2) as an int, None when absent. Only finite integral numbers
    within 0..MAX_TOKEN_TIME are times: NaN, Infinity, 1e400 (which JSON decoders read as Infinity), fractions,
    booleans and strings raise AuthError naming the claim (a 401, never a 500)."""
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"invalid {name} claim")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise AuthError(f"invalid {name} claim: {value!r} is not a finite integer")
    if not 0 <= value <= MAX_TOKEN_TIME:
        raise AuthError(f"invalid {name} claim: {value!r} is out of range")
    return int(value)


def require_join(claims: Claims) -> None:
    """LiveKit's ValidateConnectRequest checks: 401 without roomJoin, 400 without identity or room."""
    if not claims.grants.room_join:
        raise AuthError("token has no roomJoin grant")
    if not claims.identity:
        raise AuthError("token has no identity", status=400)
    if not claims.grants.room:
        raise AuthError("token has no room", status=400)
    if len(claims.identity) > MAX_NAME_LENGTH:
        raise AuthError(f"identity is longer than {MAX_NAME_LENGTH} characters", status=400)
    if len(claims.grants.room) > MAX_NAME_LENGTH:
        raise AuthError(f"room name is longer than {MAX_NAME_LENGTH} characters", status=400)


def refresh_token(
    claims: Claims, api_secret: str, *, ttl_s: int = DEFAULT_TTL_S, now: float | None = None
) -> str:
    """A new token for the same holder and grants that expires no earlier than the original, and at
    least MIN_REFRESH_TTL_S from now (docs/PROTOCOL.md, Token refresh): what ``create_token`` mints for the
    holder's identity, name, metadata, attributes and kind with :func:`_refreshed_video` as its grants."""
    if not claims.api_key:
        raise ValueError("api_key must not be empty")
    if not api_secret:
        raise ValueError("api_secret must not be empty")
    video = _refreshed_video(claims.grants)
    if video.get("roomJoin") and (not claims.identity or not claims.grants.room):
        raise ValueError("identity and room must be set when joining a room")
    if claims.kind and claims.kind not in KIND_NAMES:
        raise ValueError(f"unknown participant kind {claims.kind!r}")
    issued = _now(now)
    expires = max(claims.expires_at, issued + max(int(ttl_s), MIN_REFRESH_TTL_S))
    return _mint(claims.api_key, api_secret, claims.identity, dict(video), issued, expires,
                 claims.name or None, claims.metadata or None, claims.attributes or None, claims.kind or None)


@functools.lru_cache(maxsize=256)
def _refreshed_video(grants: Grants) -> dict[str, Any]:
    """The `video` claim of a refreshed token: the grants with their tri-states resolved (as LiveKit writes
    them), worked out once per set of grants (a room's participants mostly share one). Not to be modified."""
    video = grants.to_claim() | {
        "roomJoin": grants.room_join,
        "canPublish": grants.get_can_publish(),
        "canSubscribe": grants.get_can_subscribe(),
        "canPublishData": grants.get_can_publish_data(),
    }
    return Grants.from_claim(video).to_claim()


def token_from_request(headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """The token of an HTTP/WebSocket request: `Authorization: Bearer` wins over `access_token`."""
    auth: str | None = None
    for key, value in headers.items():
        if key.lower() == "authorization":
            auth = value
            break
    if auth is not None and auth.strip():
        if not auth.startswith("Bearer "):
            raise AuthError("invalid authorization header, must start with 'Bearer '")
        token = auth[len("Bearer ") :].strip()
        if not token:
            raise AuthError("no token")
        return token
    token = query.get("access_token", "")
    if not token:
        raise AuthError("no token")
    return token
