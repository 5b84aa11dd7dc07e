"""ICE-lite responder: only authenticated Binding requests are answered; rejections create no state (RFC 8445 §7.3,
docs/RELIABILITY.md, B1-B9)."""

from __future__ import annotations

import pytest

from router import stun
from router.ice import MAX_TUPLES, IceLite, username_fragment

UFRAG = "srvA"
PWD = "s" * 22
PEER = ("192.0.2.7", 40000)


def request(
    *,
    username: str | None = f"{UFRAG}:cli1",
    key: bytes | None = PWD.encode(),
    priority: int | None = 0x6E0001FF,
    use_candidate: bool = False,
    controlled: bool = False,
    fingerprint: bool = True,
    extra: list[tuple[int, bytes]] | None = None,
) -> bytes:
    m = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
    if username is not None:
        m.add_username(username)
    if priority is not None:
        m.add_priority(priority)
    if use_candidate:
        m.add_use_candidate()
    if controlled:
        m.add_ice_controlled(1)
    else:
        m.add_ice_controlling(0x1234)
    for t, v in extra or []:
        m.add(t, v)
    return m.to_bytes(key, fingerprint=fingerprint)


def assert_no_state(ice: IceLite) -> None:
    assert ice.tuples == []
    assert ice.selected is None
    assert ice.last_valid_check_ms is None
    assert ice.remote_ufrag is None


def test_valid_request_is_answered_with_a_verifiable_success() -> None:
    ice = IceLite(UFRAG, PWD)
    data = request()
    result = ice.handle(data, PEER, now_ms=1000)
    assert result.response is not None and result.select
    resp = stun.parse(result.response)
    assert resp.cls == stun.StunClass.SUCCESS
    assert resp.transaction_id == stun.parse(data).transaction_id
    assert resp.xor_mapped_address == PEER
    assert resp.check_integrity(PWD.encode())
    assert resp.has_fingerprint
    assert ice.tuples == [PEER] and ice.selected == PEER
    assert ice.last_valid_check_ms == 1000 and ice.remote_ufrag == "cli1"


def test_valid_request_without_fingerprint_is_answered() -> None:
    ice = IceLite(UFRAG, PWD)
    assert ice.handle(request(fingerprint=False), PEER, now_ms=0).response is not None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (request(username=None), "no USERNAME"),
        (request(key=None), "no MESSAGE-INTEGRITY"),
        (request(username=f"cli1:{UFRAG}"), "unknown ufrag"),  # swapped
        (request(username="othr:cli1"), "unknown ufrag"),  # another transport's ufrag
        (request(username=":cli1"), "unknown ufrag"),  # empty
        (request(username=UFRAG), "bad USERNAME"),  # no colon
        (request(key=b"wrong password 22 chars"), "bad MESSAGE-INTEGRITY"),
        (b"garbage that is not stun at all", "malformed"),
    ],
)
def test_unauthenticated_requests_get_no_answer_and_create_no_state(data: bytes, reason: str) -> None:
    ice = IceLite(UFRAG, PWD)
    result = ice.handle(data, PEER, now_ms=0)
    assert result.response is None and not result.select
    assert ice.rejected == {reason: 1}
    assert_no_state(ice)


def test_forged_integrity_and_tampering() -> None:
    ice = IceLite(UFRAG, PWD)
    good = bytearray(request())
    mi = stun.parse(bytes(good)).integrity_offset
    assert mi is not None
    # One bit of the HMAC flipped, and FINGERPRINT recomputed so only the MAC is wrong.
    forged = bytearray(good[:-8])
    forged[mi + 4] ^= 0x01
    forged_msg = bytes(forged) + b"\x80\x28\x00\x04" + stun.compute_fingerprint(bytes(forged)).to_bytes(4, "big")
    assert ice.handle(forged_msg, PEER, now_ms=0).response is None
    # A wrong FINGERPRINT on an otherwise valid request.
    bad_fp = bytes(good[:-1]) + bytes([good[-1] ^ 0xFF])
    assert ice.handle(bad_fp, PEER, now_ms=0).response is None
    # Truncated MESSAGE-INTEGRITY.
    truncated = bytes(good[: mi + 4 + 10])
    truncated = truncated[:2] + (len(truncated) - 20).to_bytes(2, "big") + truncated[4:]
    assert ice.handle(truncated, PEER, now_ms=0).response is None
    assert ice.rejected == {"bad MESSAGE-INTEGRITY": 1, "malformed": 2}
    assert_no_state(ice)


def test_responses_and_indications_are_ignored() -> None:
    ice = IceLite(UFRAG, PWD)
    req = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
    success = stun.binding_success(req, PEER, PWD.encode())
    indication = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.INDICATION).to_bytes()
    for data in (success, indication):
        assert ice.handle(data, PEER, now_ms=0).response is None
    assert ice.rejected == {"not a binding request": 2}
    assert_no_state(ice)


def test_role_conflict_gets_487_and_no_state() -> None:
    ice = IceLite(UFRAG, PWD)
    result = ice.handle(request(controlled=True, use_candidate=True), PEER, now_ms=0)
    assert result.response is not None and not result.select
    resp = stun.parse(result.response)
    assert resp.cls == stun.StunClass.ERROR and resp.error_code == (487, "Role Conflict")
    assert resp.check_integrity(PWD.encode())
    assert_no_state(ice)


def test_missing_priority_gets_400_and_unknown_attribute_gets_420() -> None:
    ice = IceLite(UFRAG, PWD)
    resp = stun.parse(ice.handle(request(priority=None), PEER, now_ms=0).response or b"")
    assert resp.error_code == (400, "Bad Request")
    result = ice.handle(request(extra=[(0x0042, b"\x00\x00\x00\x00")]), PEER, now_ms=0)
    resp = stun.parse(result.response or b"")
    assert resp.error_code == (420, "Unknown Attribute")
    assert resp.get(stun.ATTR_UNKNOWN_ATTRIBUTES) == b"\x00\x42"
    # Comprehension-optional unknown attributes (Chrome's GOOG-NETWORK-INFO 0xC057) are fine.
    assert ice.handle(request(extra=[(0xC057, b"\x00\x01\x00\x0a")]), PEER, now_ms=0).select
    assert ice.tuples == [PEER]


def test_use_candidate_selects_and_first_valid_request_selects_when_none_is() -> None:
    ice = IceLite(UFRAG, PWD)
    a, b = ("10.0.0.1", 1000), ("10.0.0.2", 2000)
    assert ice.handle(request(), a, now_ms=0).select  # nothing selected yet
    assert not ice.handle(request(), b, now_ms=1).select  # a is selected, b is only a candidate tuple
    assert ice.selected == a
    assert ice.handle(request(use_candidate=True), b, now_ms=2).select
    assert ice.selected == b
    assert ice.tuples == [a, b]


def test_tuple_cap_evicts_oldest_non_selected() -> None:
    ice = IceLite(UFRAG, PWD)
    selected = ("10.0.0.1", 999)
    ice.handle(request(use_candidate=True), selected, now_ms=0)
    ports = list(range(1000, 1000 + 3 * MAX_TUPLES))
    for i, port in enumerate(ports):
        ice.handle(request(), ("10.0.0.2", port), now_ms=i + 1)
        assert len(ice.tuples) <= MAX_TUPLES
        assert selected in ice.tuples
    # The newest seven survive beside the selected one.
    assert ice.tuples == [selected] + [("10.0.0.2", p) for p in ports[-(MAX_TUPLES - 1) :]]
    assert ice.selected == selected


def test_consent_freshness_tracks_the_selected_tuple_only() -> None:
    ice = IceLite(UFRAG, PWD)
    other = ("10.0.0.9", 9)
    assert not ice.consent_expired(10**9)  # nothing selected yet
    ice.handle(request(), PEER, now_ms=1_000)
    ice.handle(request(), other, now_ms=20_000)  # not the selected tuple: no consent refresh
    assert ice.last_valid_check_ms == 1_000
    assert not ice.consent_expired(31_000)
    assert ice.consent_expired(31_001)
    ice.handle(request(), PEER, now_ms=31_001)
    assert not ice.consent_expired(31_001)


def test_ice_restart_keeps_old_credentials_until_first_valid_new_check() -> None:
    ice = IceLite(UFRAG, PWD)
    new_ufrag, new_pwd = "srvB", "n" * 22
    ice.handle(request(), PEER, now_ms=0)
    ice.restart(new_ufrag, new_pwd)
    assert ice.local_ufrag == new_ufrag and ice.local_pwd == new_pwd
    assert ice.accepts_ufrag(UFRAG) and ice.accepts_ufrag(new_ufrag)
    # Old credentials still work until the switch.
    assert ice.handle(request(), PEER, now_ms=1).response is not None
    # New credentials: answered with the new password.
    resp = ice.handle(request(username=f"{new_ufrag}:cli2", key=new_pwd.encode()), PEER, now_ms=2).response
    assert resp is not None and stun.parse(resp).check_integrity(new_pwd.encode())
    assert ice.remote_ufrag == "cli2"
    # After the switch the old ones are refused.
    assert ice.handle(request(), PEER, now_ms=3).response is None
    assert ice.rejected["unknown ufrag"] == 1
    assert not ice.accepts_ufrag(UFRAG)


def test_bad_credentials_are_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="^invalid ICE ufrag 'ab': need at least 4 ASCII characters and no ':'$"):
        IceLite("ab", PWD)
    with pytest.raises(ValueError, match="^invalid ICE password: need at least 22 ASCII characters$"):
        IceLite(UFRAG, "short")
    ice = IceLite(UFRAG, PWD)
    with pytest.raises(ValueError, match="^ICE restart must change the ufrag \\(still 'srvA'\\)$"):
        ice.restart(UFRAG, "x" * 22)


def test_username_fragment() -> None:
    assert username_fragment(request()) == UFRAG
    assert username_fragment(request(key=None)) == UFRAG  # no authentication needed for demux
    assert username_fragment(request(username=None)) is None
    assert username_fragment(request(username="nocolon")) is None
    assert username_fragment(b"\x16\xfe\xfd" + bytes(40)) is None  # DTLS
    # A USERNAME length running past the end.
    data = bytearray(request(username="abcd:efgh"))
    data[22:24] = (0xFFFF).to_bytes(2, "big")
    assert username_fragment(bytes(data)) is None
    # A success response is not a request.
    req = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
    assert username_fragment(stun.binding_success(req, PEER, b"k")) is None


def test_ipv6_peer_gets_its_xor_address() -> None:
    ice = IceLite(UFRAG, PWD)
    peer6 = ("2001:db8::7", 40000)
    result = ice.handle(request(), peer6, now_ms=0)
    assert result.response is not None
    resp = stun.parse(result.response)
    assert resp.xor_mapped_address == peer6 and resp.check_integrity(PWD.encode())
    assert ice.selected == peer6


@pytest.mark.parametrize(
    "extra",
    [
        [(stun.ATTR_PRIORITY, b"\x00\x01")],  # a second PRIORITY is ignored: the first one counts
        [(0x8055, b"abc")],  # comprehension-optional, not one a browser sends
    ],
)
def test_optional_and_repeated_attributes_are_accepted(extra: list[tuple[int, bytes]]) -> None:
    ice = IceLite(UFRAG, PWD)
    assert ice.handle(request(extra=extra), PEER, now_ms=0).select


def test_bad_attribute_values_get_400_and_no_state() -> None:
    ice = IceLite(UFRAG, PWD)
    short_priority = request(priority=None, extra=[(stun.ATTR_PRIORITY, b"\x00\x01")])
    long_controlled = request(extra=[(stun.ATTR_ICE_CONTROLLED, b"\x00" * 9)])
    for data in (short_priority, long_controlled):
        resp = stun.parse(ice.handle(data, PEER, now_ms=0).response or b"")
        assert resp.error_code == (400, "Bad Request") and resp.check_integrity(PWD.encode())
    assert ice.rejected == {"bad attribute": 2}
    assert_no_state(ice)


def test_unknown_attributes_are_listed_in_wire_order_with_repeats() -> None:
    ice = IceLite(UFRAG, PWD)
    extra = [(0x0043, b""), (0xC057, b"\x00\x01\x00\x0a"), (0x0042, b"\x00\x00\x00\x00"), (0x0043, b"")]
    resp = stun.parse(ice.handle(request(extra=extra), PEER, now_ms=0).response or b"")
    assert resp.error_code == (420, "Unknown Attribute")
    assert resp.get(stun.ATTR_UNKNOWN_ATTRIBUTES) == b"\x00\x43\x00\x42\x00\x43"
    assert_no_state(ice)


def test_username_that_is_not_utf8_is_dropped() -> None:
    ice = IceLite(UFRAG, PWD)
    m = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
    m.add(stun.ATTR_USERNAME, b"srvA:\xff\xfe").add_priority(1)
    assert ice.handle(m.to_bytes(PWD.encode()), PEER, now_ms=0).response is None
    assert ice.rejected == {"bad USERNAME": 1}
    assert_no_state(ice)


def test_consent_deadline_is_the_first_expired_millisecond() -> None:
    ice = IceLite(UFRAG, PWD)
    assert ice.consent_deadline_ms() is None
    ice.handle(request(), PEER, now_ms=1_000)
    deadline = ice.consent_deadline_ms()
    assert deadline == 31_001
    assert not ice.consent_expired(deadline - 1) and ice.consent_expired(deadline)
    ice.remove_tuple(PEER)
    assert ice.consent_deadline_ms() is None and not ice.consent_expired(10**9)
