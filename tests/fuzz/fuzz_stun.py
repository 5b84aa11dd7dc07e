"""Fuzz target: STUN parsing and the ICE-lite answer (router/stun.py, router/ice.py), what any UDP sender reaches.

An input whose first byte is odd is turned into an authenticated Binding request (the rest read as attributes:
type (2 bytes), length (1 byte), value; MESSAGE-INTEGRITY and FINGERPRINT added with the local password), so that
the checks after authentication are reached too; any other input goes in as it is.
Invariant: ``stun.parse`` raises only ``StunError``; ``IceLite.handle`` never raises, and it answers only a
request whose MESSAGE-INTEGRITY checks with the local password, with our transaction id.
"""

from __future__ import annotations

from router import stun
from router.ice import IceLite

LOCAL_UFRAG, LOCAL_PWD = "srvufrag", "0123456789abcdef0123456789abcdef"
_ice: IceLite | None = None


def setup() -> None:
    global _ice
    _ice = IceLite(LOCAL_UFRAG, LOCAL_PWD)


def _request() -> stun.StunMessage:
    message = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST, bytes(range(12)))
    return message.add_username(f"{LOCAL_UFRAG}:peer").add_priority(1 << 24).add_ice_controlling(7)


def seeds() -> list[bytes]:
    good = _request().add_use_candidate().to_bytes(LOCAL_PWD.encode())
    plain = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST, bytes(range(12))).to_bytes()
    response = stun.binding_success(stun.parse(good), ("192.0.2.1", 5000), LOCAL_PWD.encode())
    attrs = b"\x00\x06\x0dsrvufrag:peer\x00\x24\x04\x01\x00\x00\x00\x00\x25\x00\x80\x29\x08abcdefgh"
    return [good, plain, response, good[:20], b"\x01" + attrs, b"\x01" + attrs[:17]]


def _authenticated(data: bytes) -> bytes:
    message = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST, bytes(range(12)))
    pos = 1
    while pos + 3 <= len(data):
        kind, length = int.from_bytes(data[pos:pos + 2], "big"), data[pos + 2]
        if kind in (stun.ATTR_MESSAGE_INTEGRITY, stun.ATTR_FINGERPRINT):
            kind ^= 0x4000
        message.add(kind, data[pos + 3:pos + 3 + length])
        pos += 3 + length
    return message.to_bytes(LOCAL_PWD.encode())


def check(data: bytes) -> None:
    if _ice is None:
        setup()
    assert _ice is not None
    if data[:1] and data[0] & 1:
        data = _authenticated(data)
    try:
        message: stun.StunMessage | None = stun.parse(data)
    except stun.StunError:
        message = None
    if message is not None:
        for name in ("username", "priority", "ice_controlling", "ice_controlled", "xor_mapped_address",
                     "error_code", "use_candidate"):
            try:
                value = getattr(message, name)
                if callable(value):
                    value()
            except stun.StunError:
                pass
        message.unknown_required_attributes()
        message.check_integrity(LOCAL_PWD.encode())
    result = _ice.handle(data, ("192.0.2.1", 5000), now_ms=1000)
    if result.response is not None:
        answer = stun.parse(result.response)
        assert answer.transaction_id == data[8:20]
        assert message is not None and message.check_integrity(LOCAL_PWD.encode())
