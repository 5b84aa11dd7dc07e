"""Tests for control.auth: interop with livekit-api, the refusal matrix (docs/RELIABILITY.md, G1 and G3)
and grants."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings

import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning
from livekit import api
from livekit.protocol import models

from control.auth import (
    AuthError,
    Claims,
    Grants,
    create_token,
    refresh_token,
    require_join,
    token_from_request,
    verify_token,
)

KEY = "APIkey123"
SECRET = "a-long-enough-secret-for-hs256-signing-0123456789"
KEYS = {KEY: SECRET}
NOW = 1_800_000_000


def _sign(payload: dict, secret: str = SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(payload, secret, algorithm=algorithm)


def _payload(**overrides: object) -> dict:
    base: dict = {
        "iss": KEY,
        "sub": "alice",
        "nbf": NOW,
        "exp": NOW + 3600,
        "video": {"roomJoin": True, "room": "r1"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def _refusal(token: str, now: float = NOW) -> str:
    with pytest.raises(AuthError) as info:
        verify_token(token, KEYS, now=now)
    return info.value.reason


# --- interop with the real SDK -----------------------------------------------------------------


def test_livekit_api_token_verifies_with_ours() -> None:
    token = (
        api.AccessToken(KEY, SECRET)
        .with_identity("bob")
        .with_name("Bob")
        .with_metadata('{"x":1}')
        .with_attributes({"role": "host"})
        .with_kind("agent")
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room="lobby",
                can_publish=True,
                can_subscribe=False,
                can_publish_sources=["camera", "microphone"],
                can_update_own_metadata=True,
                hidden=True,
            )
        )
        .to_jwt()
    )
    claims = verify_token(token, KEYS)
    require_join(claims)
    assert claims.identity == "bob"
    assert claims.name == "Bob"
    assert claims.metadata == '{"x":1}'
    assert claims.attributes == {"role": "host"}
    assert claims.room == "lobby"
    assert claims.api_key == KEY
    assert claims.participant_kind() == models.ParticipantInfo.Kind.AGENT
    perm = claims.permission()
    assert perm.can_publish is True
    assert perm.can_subscribe is False
    assert list(perm.can_publish_sources) == [models.TrackSource.CAMERA, models.TrackSource.MICROPHONE]
    assert perm.can_update_metadata is True
    assert perm.hidden is True


def test_our_token_verifies_with_livekit_api() -> None:
    token = create_token(
        KEY,
        SECRET,
        identity="carol",
        room="r9",
        name="Carol",
        metadata="meta",
        attributes={"a": "b"},
        grants={"canSubscribe": False, "canPublishSources": ["screen_share"]},
    )
    lk = api.TokenVerifier(KEY, SECRET).verify(token)
    assert lk.identity == "carol"
    assert lk.name == "Carol"
    assert lk.metadata == "meta"
    assert lk.attributes == {"a": "b"}
    assert lk.video is not None
    assert lk.video.room_join is True
    assert lk.video.room == "r9"
    assert lk.video.can_publish is True
    assert lk.video.can_subscribe is False
    assert lk.video.can_publish_data is True
    assert lk.video.can_publish_sources == ["screen_share"]


def test_short_dev_secret_works_both_ways() -> None:
    keys = {"devkey": "secret"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        sdk_token = (
            api.AccessToken("devkey", "secret")
            .with_identity("d")
            .with_grants(api.VideoGrants(room_join=True, room="x"))
            .to_jwt()
        )
    assert verify_token(sdk_token, keys).identity == "d"
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureKeyLengthWarning)
        ours = create_token("devkey", "secret", identity="e", room="x")
        assert verify_token(ours, keys).identity == "e"


def test_claims_and_timing_of_created_token() -> None:
    token = create_token(KEY, SECRET, identity="u", room="r", ttl_s=120, kind="sip", now=NOW)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["iss"] == KEY
    assert payload["sub"] == "u"
    assert payload["nbf"] == NOW
    assert payload["exp"] == NOW + 120
    assert payload["kind"] == "sip"
    assert payload["video"] == {
        "roomJoin": True,
        "room": "r",
        "canPublish": True,
        "canSubscribe": True,
        "canPublishData": True,
    }
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = verify_token(token, KEYS, now=NOW + 10)
    assert (claims.expires_at, claims.not_before) == (NOW + 120, NOW)


# --- refusal matrix ------------------------------------------------------------------------------


def test_wrong_secret_is_refused() -> None:
    assert (
        _refusal(_sign(_payload(), secret="not-the-right-secret-0123456789abcdef"))
        == "invalid token signature"
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_empty_secret_is_refused() -> None:
    signing_input = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(json.dumps(_payload()).encode())
    signature = _b64(hmac.new(b"", signing_input.encode(), hashlib.sha256).digest())
    assert _refusal(f"{signing_input}.{signature}") == "invalid token signature"


def test_key_configured_with_empty_secret_verifies_nothing() -> None:
    with pytest.raises(AuthError, match="^unknown API key$"):
        verify_token(_sign(_payload()), {KEY: ""}, now=NOW)


def test_tampered_payload_is_refused() -> None:
    header, _, sig = _sign(_payload()).split(".")
    forged = base64.urlsafe_b64encode(json.dumps(_payload(sub="mallory")).encode()).rstrip(b"=").decode()
    assert _refusal(f"{header}.{forged}.{sig}") == "invalid token signature"


def test_expired_is_refused_outside_leeway_only() -> None:
    token = _sign(_payload(exp=NOW - 61))
    assert _refusal(token) == "token expired"
    inside = _sign(_payload(exp=NOW - 30))
    assert verify_token(inside, KEYS, now=NOW).identity == "alice"


def test_missing_exp_is_refused() -> None:
    assert _refusal(_sign(_payload(exp=None))) == "missing exp claim"


def test_non_numeric_exp_is_refused() -> None:
    assert _refusal(_sign(_payload(exp="tomorrow"))) == "invalid exp claim"


def test_nbf_in_future_is_refused_outside_leeway_only() -> None:
    assert _refusal(_sign(_payload(nbf=NOW + 120))) == "token not yet valid"
    assert verify_token(_sign(_payload(nbf=NOW + 30)), KEYS, now=NOW).identity == "alice"


def test_alg_none_is_refused() -> None:
    token = jwt.encode(_payload(), None, algorithm="none")
    assert _refusal(token) == "unsupported token algorithm 'none', only HS256 is accepted"


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_hmac_algs_are_refused(alg: str) -> None:
    assert (
        _refusal(_sign(_payload(), algorithm=alg))
        == f"unsupported token algorithm {alg!r}, only HS256 is accepted"
    )


def test_rs256_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_payload(), private, algorithm="RS256")
    assert _refusal(token) == "unsupported token algorithm 'RS256', only HS256 is accepted"


def test_unknown_key_is_refused() -> None:
    assert _refusal(_sign(_payload(iss="someone-else"))) == "unknown API key"


def test_missing_issuer_is_refused() -> None:
    assert _refusal(_sign(_payload(iss=None))) == "missing iss claim"


def test_non_string_sub_or_jti_is_malformed() -> None:
    # PyJWT's sub and jti checks: each must be a string when present.
    assert _refusal(_sign(_payload(sub=42))) == "malformed token"
    assert _refusal(_sign(_payload(jti=["x"]))) == "malformed token"
    assert verify_token(_sign(_payload(sub=None, jti="j-1")), KEYS, now=NOW).identity == "j-1"


def test_bad_signature_encoding_is_malformed() -> None:
    header, payload, sig = _sign(_payload()).split(".")
    assert _refusal(f"{header}.{payload}.{sig}!") == "malformed token"



def _segment(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _signed(header: dict, payload: dict) -> str:
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    mac = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_tokens_beyond_the_plain_form_follow_pyjwt() -> None:
    # the plain form (three unpadded segments, alg/typ/kid) is read without PyJWT; the rest is PyJWT's to judge
    assert verify_token(_signed({"alg": "HS256", "typ": "JWT", "kid": "k1"}, _payload()), KEYS, now=NOW).identity \
        == "alice"
    assert verify_token(_sign(_payload()) + "=", KEYS, now=NOW).identity == "alice"  # a padded signature
    assert _refusal(_signed({"alg": "HS256", "kid": 5}, _payload())) == "malformed token"
    assert _refusal(_signed({"alg": "HS256", "b64": False, "crit": ["b64"]}, _payload())) == "malformed token"
    assert _refusal(_signed({"alg": "HS256"}, [_payload()])) == "malformed token"  # a payload that is no object
    assert _refusal(_signed(["HS256"], _payload())) == "malformed token"

def test_created_token_is_what_pyjwt_encodes() -> None:
    token = create_token(KEY, SECRET, identity="u", room="r", name="N", metadata="m", attributes={"a": "b"},
                         kind="agent", now=NOW)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert token == _sign(payload)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.%%%.xyz"])
def test_malformed_token_is_refused(token: str) -> None:
    assert _refusal(token) == "malformed token"


def test_empty_token_is_refused() -> None:
    assert _refusal("") == "no token"


def test_bad_grant_types_are_refused() -> None:
    assert _refusal(_sign(_payload(video="all"))) == "invalid video grant: not an object"
    bad = _sign(_payload(video={"roomJoin": "yes", "room": "r"}))
    assert _refusal(bad) == "invalid video grant: roomJoin must be a boolean"
    bad_src = _sign(_payload(video={"roomJoin": True, "room": "r", "canPublishSources": ["webcam"]}))
    assert _refusal(bad_src) == "invalid video grant: canPublishSources has unknown source 'webcam'"
    assert _refusal(_sign(_payload(attributes={"a": 1}))) == "invalid attributes claim"


def test_error_status_is_401() -> None:
    with pytest.raises(AuthError) as info:
        verify_token(_sign(_payload(exp=NOW - 1000)), KEYS, now=NOW)
    assert info.value.status == 401
    assert str(info.value) == "token expired"


# --- join requirements -----------------------------------------------------------------------


def _claims(video: dict, sub: str | None = "alice", **extra: object) -> Claims:
    return verify_token(_sign(_payload(video=video, sub=sub, **extra)), KEYS, now=NOW)


def test_missing_video_grant_has_no_room_join() -> None:
    claims = verify_token(_sign(_payload(video=None)), KEYS, now=NOW)
    with pytest.raises(AuthError, match="^token has no roomJoin grant$") as info:
        require_join(claims)
    assert info.value.status == 401


def test_room_join_false_is_refused() -> None:
    with pytest.raises(AuthError, match="^token has no roomJoin grant$"):
        require_join(_claims({"roomJoin": False, "room": "r"}))


def test_join_needs_room_and_identity() -> None:
    with pytest.raises(AuthError, match="^token has no room$") as info:
        require_join(_claims({"roomJoin": True}))
    assert info.value.status == 400
    with pytest.raises(AuthError, match="^token has no identity$") as info:
        require_join(_claims({"roomJoin": True, "room": "r"}, sub=None))
    assert info.value.status == 400


def test_identity_falls_back_to_jti() -> None:
    claims = _claims({"roomJoin": True, "room": "r"}, sub=None, jti="from-jti")
    assert claims.identity == "from-jti"
    require_join(claims)


def test_overlong_identity_is_refused() -> None:
    with pytest.raises(AuthError, match="^identity is longer than 256 characters$"):
        require_join(_claims({"roomJoin": True, "room": "r"}, sub="x" * 257))


# --- permissions mapping ------------------------------------------------------------------------

S = models.TrackSource


@pytest.mark.parametrize(
    ("video", "expected"),
    [
        # (can_publish, can_subscribe, can_publish_data, sources, hidden, can_update_metadata)
        ({}, (True, True, True, [], False, False)),
        ({"canPublish": False}, (False, True, False, [], False, False)),
        ({"canPublish": False, "canPublishData": True}, (False, True, True, [], False, False)),
        ({"canSubscribe": False}, (True, False, True, [], False, False)),
        ({"canPublishData": False}, (True, True, False, [], False, False)),
        ({"canPublishSources": ["camera"]}, (True, True, True, [S.CAMERA], False, False)),
        (
            {"canPublishSources": ["microphone", "screen_share", "screen_share_audio"]},
            (True, True, True, [S.MICROPHONE, S.SCREEN_SHARE, S.SCREEN_SHARE_AUDIO], False, False),
        ),
        ({"hidden": True}, (True, True, True, [], True, False)),
        ({"canUpdateOwnMetadata": True}, (True, True, True, [], False, True)),
    ],
)
def test_permission_mapping(video: dict, expected: tuple) -> None:
    perm = _claims({"roomJoin": True, "room": "r", **video}).permission()
    got = (
        perm.can_publish,
        perm.can_subscribe,
        perm.can_publish_data,
        list(perm.can_publish_sources),
        perm.hidden,
        perm.can_update_metadata,
    )
    assert got == expected
    again = models.ParticipantPermission.FromString(perm.SerializeToString())
    assert again == perm


def test_can_publish_source() -> None:
    only_camera = Grants(can_publish_sources=("camera",))
    assert only_camera.can_publish_source(S.CAMERA)
    assert not only_camera.can_publish_source(S.MICROPHONE)
    assert Grants().can_publish_source(S.SCREEN_SHARE)
    assert not Grants(can_publish=False).can_publish_source(S.CAMERA)


# --- minting errors -------------------------------------------------------------------------


def test_create_token_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="^unknown video grant key 'canFly'$"):
        create_token(KEY, SECRET, identity="a", room="r", grants={"canFly": True})
    with pytest.raises(ValueError, match="^identity and room must be set when joining a room$"):
        create_token(KEY, SECRET, identity="", room="r")
    with pytest.raises(ValueError, match="^identity and room must be set when joining a room$"):
        create_token(KEY, SECRET, identity="a", room="")
    with pytest.raises(ValueError, match="^canPublish must be a boolean$"):
        create_token(KEY, SECRET, identity="a", room="r", grants={"canPublish": "no"})
    with pytest.raises(ValueError, match="^ttl_s must be positive$"):
        create_token(KEY, SECRET, identity="a", room="r", ttl_s=0)
    with pytest.raises(ValueError, match="^api_secret must not be empty$"):
        create_token(KEY, "", identity="a", room="r")
    with pytest.raises(ValueError, match="^unknown participant kind 'robot'$"):
        create_token(KEY, SECRET, identity="a", room="r", kind="robot")


def test_admin_token_without_join() -> None:
    token = create_token(KEY, SECRET, identity="", room="", grants={"roomJoin": False, "roomCreate": True})
    claims = verify_token(token, KEYS)
    assert claims.grants.room_create is True
    with pytest.raises(AuthError, match="^token has no roomJoin grant$"):
        require_join(claims)


# --- refresh -------------------------------------------------------------------------------------


def test_refresh_token_keeps_grants_and_never_shortens() -> None:
    original = _claims(
        {"roomJoin": True, "room": "r", "canPublish": False, "canPublishSources": ["camera"]},
        name="N",
        metadata="m",
        exp=NOW + 7200,
    )
    renewed = verify_token(refresh_token(original, SECRET, ttl_s=60, now=NOW), KEYS, now=NOW)
    assert renewed.identity == "alice"
    assert renewed.name == "N"
    assert renewed.metadata == "m"
    assert renewed.expires_at == NOW + 7200
    assert renewed.permission() == original.permission()
    require_join(renewed)
    short = _claims({"roomJoin": True, "room": "r"}, exp=NOW + 5)
    assert (
        verify_token(refresh_token(short, SECRET, ttl_s=60, now=NOW), KEYS, now=NOW).expires_at == NOW + 600
    )



@pytest.mark.parametrize("video", [
    {"roomJoin": True, "room": "r"},
    {"roomJoin": True, "room": "r", "canPublish": False, "canPublishSources": ["camera", "microphone"]},
    {"roomJoin": True, "room": "r", "canPublishData": False, "hidden": True, "canUpdateOwnMetadata": True},
    {"roomJoin": True, "room": "r", "canSubscribe": False, "agent": True, "roomAdmin": True},
])
def test_a_refreshed_token_is_the_one_create_token_mints_for_the_same_holder(video: dict[str, object]) -> None:
    original = _claims(video, name="N", metadata="m", exp=NOW + 7200)
    grants = original.grants
    resolved = grants.to_claim() | {"roomJoin": grants.room_join, "canPublish": grants.get_can_publish(),
                                    "canSubscribe": grants.get_can_subscribe(),
                                    "canPublishData": grants.get_can_publish_data()}
    del resolved["room"]
    expected = create_token(KEY, SECRET, identity="alice", room="r", name="N", metadata="m", grants=resolved,
                            ttl_s=7200, now=NOW)
    assert refresh_token(original, SECRET, ttl_s=60, now=NOW) == expected
    assert refresh_token(original, SECRET, ttl_s=60, now=NOW) == expected  # the grants' claim, cached, unchanged

# --- request parsing --------------------------------------------------------------------------


def test_token_from_bearer_header() -> None:
    assert token_from_request({"Authorization": "Bearer abc.def.ghi"}, {}) == "abc.def.ghi"
    assert token_from_request({"authorization": "Bearer tok"}, {"access_token": "other"}) == "tok"


def test_token_from_query() -> None:
    assert token_from_request({}, {"access_token": "q.t.k"}) == "q.t.k"


def test_token_missing() -> None:
    with pytest.raises(AuthError, match="^no token$"):
        token_from_request({}, {})
    with pytest.raises(AuthError, match="^no token$"):
        token_from_request({"Authorization": "Bearer "}, {})


def test_token_wrong_scheme() -> None:
    with pytest.raises(AuthError, match="^invalid authorization header, must start with 'Bearer '$"):
        token_from_request({"Authorization": "Basic dXNlcjpwdw=="}, {"access_token": "x"})
