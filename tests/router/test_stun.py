"""STUN codec: RFC 5769 test vectors, round trips, and exact rejection reasons (RFC 8489)."""

from __future__ import annotations

import pytest

from router import stun

PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"

# RFC 5769 §2.1 Sample Request (padding bytes are 0x20 in the RFC, which receivers must ignore).
RFC5769_REQUEST = bytes.fromhex(
    "00010058" "2112a442" "b7e7a701" "bc34d686" "fa87dfae"
    "80220010" "5354554e" "20746573" "7420636c" "69656e74"
    "00240004" "6e0001ff"
    "80290008" "932ff9b1" "51263b36"
    "00060009" "6576746a" "3a683676" "59202020"
    "00080014" "9aeaa70c" "bfd8cb56" "781ef2b5" "b2d3f249" "c1b571a2"
    "80280004" "e57a3bcf"
)  # fmt: skip

# RFC 5769 §2.2 Sample IPv4 Response.
RFC5769_RESPONSE_V4 = bytes.fromhex(
    "0101003c" "2112a442" "b7e7a701" "bc34d686" "fa87dfae"
    "8022000b" "74657374" "20766563" "746f7220"
    "00200008" "0001a147" "e112a643"
    "00080014" "2b91f599" "fd9e90c3" "8c7489f9" "2af9ba53" "f06be7d7"
    "80280004" "c07d4c96"
)  # fmt: skip

# RFC 5769 §2.3 Sample IPv6 Response.
RFC5769_RESPONSE_V6 = bytes.fromhex(
    "01010048" "2112a442" "b7e7a701" "bc34d686" "fa87dfae"
    "8022000b" "74657374" "20766563" "746f7220"
    "00200014" "0002a147" "0113a9fa" "a5d3f179" "bc25f4b5" "bed2b9d9"
    "00080014" "a382954e" "4be67bf1" "1784c97c" "8292c275" "bfe3ed41"
    "80280004" "c8fb0b4c"
)  # fmt: skip

TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")


def test_rfc5769_request_parses_and_verifies() -> None:
    m = stun.parse(RFC5769_REQUEST)
    assert (m.method, m.cls, m.transaction_id) == (stun.METHOD_BINDING, stun.StunClass.REQUEST, TID)
    assert m.get(stun.ATTR_SOFTWARE) == b"STUN test client"
    assert m.priority == 0x6E0001FF
    assert m.ice_controlled == 0x932FF9B151263B36
    assert m.ice_controlling is None
    assert m.username == "evtj:h6vY"
    assert m.has_fingerprint and m.has_integrity
    assert m.check_integrity(PASSWORD)
    assert not m.check_integrity(b"VOkJxbRl1RmTxUk/WvJxBu")


def test_rfc5769_request_rebuilt_byte_for_byte() -> None:
    m = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST, TID)
    m.add(stun.ATTR_SOFTWARE, b"STUN test client").add_priority(0x6E0001FF).add_ice_controlled(0x932FF9B151263B36)
    m.add_username("evtj:h6vY")
    ours = bytearray(m.to_bytes(PASSWORD))
    assert len(ours) == len(RFC5769_REQUEST)
    # USERNAME "evtj:h6vY" is 9 bytes; the RFC pads it with three 0x20 bytes, we with zeros.
    assert ours[73:76] == b"\x00\x00\x00" and RFC5769_REQUEST[73:76] == b"   "
    ours[73:76] = b"   "
    assert bytes(ours[:80]) == RFC5769_REQUEST[:80]
    assert stun.compute_integrity(bytes(ours[:76]), PASSWORD) == RFC5769_REQUEST[80:100]
    assert stun.compute_fingerprint(RFC5769_REQUEST[:100]) == 0xE57A3BCF
    assert stun.parse(m.to_bytes(PASSWORD)).check_integrity(PASSWORD)


@pytest.mark.parametrize(
    ("data", "addr"),
    [
        (RFC5769_RESPONSE_V4, ("192.0.2.1", 32853)),
        (RFC5769_RESPONSE_V6, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
)
def test_rfc5769_responses(data: bytes, addr: tuple[str, int]) -> None:
    m = stun.parse(data)
    assert m.cls == stun.StunClass.SUCCESS
    assert m.get(stun.ATTR_SOFTWARE) == b"test vector"
    assert m.xor_mapped_address == addr
    assert m.check_integrity(PASSWORD)
    rebuilt = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.SUCCESS, TID)
    rebuilt.add(stun.ATTR_SOFTWARE, b"test vector").add_xor_mapped_address(addr)
    # The RFC pads SOFTWARE with 0x20 where we pad with zero; with that byte patched, everything up to the
    # MESSAGE-INTEGRITY value is identical (the MAC and CRC then differ only because they cover the padding).
    ours = bytearray(rebuilt.to_bytes(PASSWORD))
    assert ours[35] == 0 and data[35] == 0x20
    ours[35] = 0x20
    end = stun.parse(data).integrity_offset
    assert end is not None
    assert bytes(ours[: end + 4]) == data[: end + 4]
    # And the MAC we compute over that patched prefix is the RFC's.
    assert stun.compute_integrity(bytes(ours[:end]), PASSWORD) == data[end + 4 : end + 24]


def test_binding_success_round_trip_ipv6_and_ipv4() -> None:
    req = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
    for addr in [("127.0.0.1", 5000), ("::1", 65535), ("2001:db8::1", 1)]:
        resp = stun.parse(stun.binding_success(req, addr, b"key"))
        assert resp.transaction_id == req.transaction_id
        assert resp.cls == stun.StunClass.SUCCESS
        assert resp.xor_mapped_address == addr
        assert resp.check_integrity(b"key")


def test_error_response_round_trip() -> None:
    req = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
    resp = stun.parse(stun.binding_error(req, 420, "Unknown Attribute", unknown_attributes=[0x0042]))
    assert resp.cls == stun.StunClass.ERROR
    assert resp.error_code == (420, "Unknown Attribute")
    assert resp.get(stun.ATTR_UNKNOWN_ATTRIBUTES) == b"\x00\x42"
    assert not resp.has_integrity and resp.has_fingerprint


def test_message_type_bits_for_every_class() -> None:
    for cls, first_bytes in [
        (stun.StunClass.REQUEST, b"\x00\x01"),
        (stun.StunClass.INDICATION, b"\x00\x11"),
        (stun.StunClass.SUCCESS, b"\x01\x01"),
        (stun.StunClass.ERROR, b"\x01\x11"),
    ]:
        data = stun.StunMessage(stun.METHOD_BINDING, cls).to_bytes()
        assert data[:2] == first_bytes
        assert stun.parse(data).cls == cls
    # A method using high bits (0xABC) survives the interleaving.
    assert stun.parse(stun.StunMessage(0xABC, stun.StunClass.ERROR).to_bytes()).method == 0xABC


def _signed() -> bytes:
    m = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST, TID)
    m.add_username("abcd:efgh").add_priority(1)
    return m.to_bytes(b"k" * 22)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\x01\x00\x00\x21\x12\xa4", "message too short: 7 bytes"),
        (b"\x40\x01\x00\x00\x21\x12\xa4\x42" + TID, "first two bits of the message type are not zero"),
        (b"\x00\x01\x00\x00\x21\x12\xa4\x43" + TID, "bad magic cookie 0x2112a443"),
        (b"\x00\x01\x00\x02\x21\x12\xa4\x42" + TID + b"\x00\x00", "message length 2 is not a multiple of 4"),
        (
            b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TID + b"\x00\x06\x00\x00",
            "message length 8 does not match datagram body of 4 bytes",
        ),
        (
            b"\x00\x01\x00\x04\x21\x12\xa4\x42" + TID + b"\x00\x06\x00\x08",
            "attribute 0x0006 at offset 20 runs past the end of the message",
        ),
        (
            b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TID + b"\x00\x06\x00\x03abc\x00",
            None,  # well-formed: USERNAME of 3 bytes + 1 padding byte
        ),
        (
            b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TID + b"\x00\x08\x00\x04abcd",
            "MESSAGE-INTEGRITY length 4, expected 20",
        ),
    ],
)
def test_parse_rejects_with_exact_reason(data: bytes, reason: str | None) -> None:
    if reason is None:
        assert stun.parse(data).username == "abc"
        return
    with pytest.raises(stun.StunError) as exc:
        stun.parse(data)
    assert str(exc.value) == reason


def test_fingerprint_mismatch_and_attributes_after_integrity() -> None:
    good = _signed()
    assert stun.parse(good).has_fingerprint
    broken = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(stun.StunError, match="^FINGERPRINT mismatch$"):
        stun.parse(broken)
    # An extra attribute after MESSAGE-INTEGRITY (here: PRIORITY appended before a fresh FINGERPRINT).
    no_fp = good[:-8]
    tail = b"\x00\x24\x00\x04\x00\x00\x00\x02"
    body = no_fp + tail
    body = body[:2] + (len(body) - 20).to_bytes(2, "big") + body[4:]
    with pytest.raises(stun.StunError, match="^attribute 0x0024 after MESSAGE-INTEGRITY$"):
        stun.parse(body)
    # Anything after FINGERPRINT.
    after_fp = good + b"\x80\x22\x00\x00"
    after_fp = after_fp[:2] + (len(after_fp) - 20).to_bytes(2, "big") + after_fp[4:]
    with pytest.raises(stun.StunError):
        stun.parse(after_fp)


def test_builder_rejects_bad_values() -> None:
    with pytest.raises(stun.StunError, match="^transaction id must be 12 bytes, got 3$"):
        stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST, b"abc")
    m = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
    with pytest.raises(stun.StunError, match="^MESSAGE-INTEGRITY and FINGERPRINT are added by to_bytes\\(\\)$"):
        m.add(stun.ATTR_MESSAGE_INTEGRITY, b"x" * 20)
    with pytest.raises(stun.StunError, match="^not an IP address: 'localhost'$"):
        m.add_xor_mapped_address(("localhost", 1))
    with pytest.raises(stun.StunError, match="^error code 200 outside 300..699$"):
        m.add_error_code(200, "OK")


def test_attribute_value_errors_are_exact() -> None:
    m = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
    m.add(stun.ATTR_PRIORITY, b"\x01\x02")
    m.add(stun.ATTR_USERNAME, b"\xff\xfe")
    parsed = stun.parse(m.to_bytes())
    with pytest.raises(stun.StunError, match="^PRIORITY length 2, expected 4$"):
        _ = parsed.priority
    with pytest.raises(stun.StunError, match="^USERNAME is not valid UTF-8$"):
        _ = parsed.username


def test_is_stun() -> None:
    assert stun.is_stun(RFC5769_REQUEST)
    assert not stun.is_stun(b"\x80" + RFC5769_REQUEST[1:])
    assert not stun.is_stun(RFC5769_REQUEST[:-4])


def test_ipv6_four_tuple_address_is_accepted() -> None:
    req = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
    four = ("2001:db8::7", 4444, 0, 0)
    resp = stun.parse(stun.binding_success(req, four, b"key"))  # type: ignore[arg-type]
    assert resp.xor_mapped_address == ("2001:db8::7", 4444)


# ---- the lean consent-check forms give what the general code gives ------------------------------------------


def _xor_address_by_ipaddress(addr: tuple[str, int], transaction_id: bytes) -> bytes:
    """RFC 8489 §14.2 written out with ipaddress, as a reference for encode_xor_address's inet_pton form."""
    import ipaddress

    ip = ipaddress.ip_address(addr[0])
    pad = (stun.MAGIC_COOKIE.to_bytes(4, "big") + transaction_id)[: len(ip.packed)]
    family = 1 if ip.version == 4 else 2
    xored = bytes(a ^ b for a, b in zip(ip.packed, pad, strict=True))
    return bytes([0, family]) + (addr[1] ^ 0x2112).to_bytes(2, "big") + xored


@pytest.mark.parametrize(
    "host",
    ["192.0.2.1", "0.0.0.0", "255.255.255.255", "::", "::1", "2001:db8:1234:5678:11:2233:4455:6677",
     "::ffff:192.0.2.1", "fe80::1%lo", "2001:DB8::A"],
)  # fmt: skip
def test_xor_address_matches_ipaddress(host: str) -> None:
    for port in (0, 32853, 65535):
        assert stun.encode_xor_address((host, port), TID) == _xor_address_by_ipaddress((host, port), TID)


@pytest.mark.parametrize("host", ["01.2.3.4", "1.2.3", "1.2.3.4 ", "", "localhost", "1:2", "::1%", "1.2.3.4\x00"])
def test_xor_address_refuses_what_ipaddress_refuses(host: str) -> None:
    with pytest.raises(stun.StunError, match="^not an IP address: "):
        stun.encode_xor_address((host, 1), TID)


def test_integrity_key_is_hmac_sha1() -> None:
    import hmac

    message = bytes(range(256)) * 2
    for length in (0, 1, 22, 32, 63, 64, 65, 128, 200):
        key = bytes((i * 7 + length) & 0xFF for i in range(length))
        ours = stun.IntegrityKey(key)
        for size in (0, 20, 55, 56, 64, 100, 512):
            assert ours.mac(message[:size]) == hmac.digest(key, message[:size], "sha1")
    assert stun.compute_integrity(RFC5769_REQUEST[:76], stun.IntegrityKey(PASSWORD)) == RFC5769_REQUEST[80:100]


@pytest.mark.parametrize(
    "addr", [("192.0.2.1", 32853), ("2001:db8:1234:5678:11:2233:4455:6677", 32853), ("::1", 1, 0, 0)]
)
def test_success_response_equals_the_general_builder(addr: tuple[str, int]) -> None:
    general = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.SUCCESS, TID)
    general.add(stun.ATTR_XOR_MAPPED_ADDRESS, _xor_address_by_ipaddress(addr, TID))
    lean = stun.success_response(TID, addr, stun.IntegrityKey(PASSWORD))
    assert lean == general.to_bytes(PASSWORD)
    request = stun.parse(RFC5769_REQUEST)
    assert stun.binding_success(request, addr, PASSWORD) == lean


def test_scan_returns_what_parse_holds() -> None:
    for data in (RFC5769_REQUEST, RFC5769_RESPONSE_V4, RFC5769_RESPONSE_V6, _signed()):
        m = stun.parse(data)
        message_type, attributes, integrity_offset, has_fingerprint = stun.scan(data)
        assert (message_type >> 4 & 1 | message_type >> 7 & 2) == m.cls
        assert (attributes, integrity_offset, has_fingerprint) == (m.attributes, m.integrity_offset, m.has_fingerprint)
        assert integrity_offset is not None
        assert stun.verify_integrity(data, integrity_offset, PASSWORD) == m.check_integrity(PASSWORD)


def test_fingerprint_before_another_attribute_is_checked_with_its_own_length() -> None:
    # FINGERPRINT not last: its CRC covers the message with the length ending right after it (RFC 8489 §14.7),
    # so a valid one verifies and the attribute after it is what is refused.
    good = _signed()
    after_fp = good + b"\x80\x22\x00\x00"
    after_fp = after_fp[:2] + (len(after_fp) - 20).to_bytes(2, "big") + after_fp[4:]
    with pytest.raises(stun.StunError, match="^attribute 0x8022 after FINGERPRINT$"):
        stun.parse(after_fp)
    flipped = bytearray(after_fp)
    flipped[len(good) - 1] ^= 1
    with pytest.raises(stun.StunError, match="^FINGERPRINT mismatch$"):
        stun.parse(bytes(flipped))
