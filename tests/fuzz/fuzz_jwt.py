"""Fuzz target: access tokens (control/auth.py ``token_from_request`` and ``verify_token``), which every /rtc,
/rtc/validate and Twirp request reaches before anything else.

An input whose first byte is odd is a validly signed HS256 token whose payload is the rest of the input (the JSON
text as it is), so that the claim checks are reached; any other input is the token text itself, also tried as an
``Authorization`` header. Invariant: only ``AuthError`` comes out (a 401 with its reason).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from control.auth import AuthError, create_token, token_from_request, verify_token

KEY, SECRET = "devkey", "secret-secret-secret-secret-secret"
KEYS = {KEY: SECRET}
# Tokens the mutator splices in: JSON's edge values and the claims that carry them.
DICTIONARY = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"null", b"true", b"[]", b"{}", b'"exp":',
              b'"nbf":', b'"iat":', b'"sub":', b'"iss":"devkey"', b'"video":', b'"attributes":', b'"roomJoin":',
              b'"canPublishSources":', b"\\u0000", b"4000000000", b"0.5"]
_HEADER = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).rstrip(b"=")


def setup() -> None:
    pass


def signed(payload: bytes) -> str:
    """``payload`` (any bytes) as the body of a token signed with the test key."""
    body = _HEADER + b"." + base64.urlsafe_b64encode(payload).rstrip(b"=")
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    return (body + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def seeds() -> list[bytes]:
    token = create_token(KEY, SECRET, identity="alice", room="r1", now=1_700_000_000)
    payload = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    grants = json.dumps({"iss": KEY, "sub": "a", "exp": 4_000_000_000, "nbf": 0, "name": "n", "metadata": "m",
                         "attributes": {"k": "v"}, "video": {"roomJoin": True, "room": "r", "canPublish": True,
                                                             "canPublishSources": ["camera"], "hidden": False}})
    return [b"\x00" + token.encode(), b"\x01" + payload, b"\x01" + grants.encode(), b"\x00Bearer x.y.z"]


def check(data: bytes) -> None:
    if data[:1] and data[0] & 1:
        token = signed(data[1:])
    else:
        token = data[1:].decode("utf-8", errors="replace")
        try:
            token_from_request({"Authorization": token}, {})
        except AuthError:
            pass
    try:
        verify_token(token, KEYS, now=1_700_000_100)
    except AuthError:
        pass
