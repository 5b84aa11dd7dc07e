"""STUN messages for ICE-lite: parse, build, MESSAGE-INTEGRITY and FINGERPRINT (RFC 8489, RFC 8445 attributes).

This module owns the STUN wire format only; what to answer is ``router.ice``'s business. It follows RFC 8489:
the 20-byte header (two zero bits, 14-bit type, length, magic cookie 0x2112A442, 96-bit transaction id), TLV
attributes padded to 4 bytes, MESSAGE-INTEGRITY (HMAC-SHA1 over the message up to the attribute, with the header
length field set as if the message ended right after it; short-term credential key = the password, RFC 8489
§9.1.1 and §14.5) and FINGERPRINT (CRC-32 of the message up to the attribute, XOR 0x5354554E, length adjusted the
same way; §14.7). ICE attributes come from RFC 8445 §16.1 (PRIORITY, USE-CANDIDATE, ICE-CONTROLLED,
ICE-CONTROLLING).

Why not aioice.stun underneath: its ``parse_message`` keys attributes by name (order and duplicates are lost,
unknown comprehension-required attributes silently vanish), it accepts attributes after MESSAGE-INTEGRITY, and it
raises bare ValueErrors with mixed reasons. A server that must create no state for a message it cannot
authenticate needs the exact byte offsets and one error type with an exact reason, so the codec is written here
(it is small). Parsing never trusts a length field beyond the buffer.

Strictness of :func:`parse` (all raise :class:`StunError`): wrong header bits or cookie, length not matching the
datagram or not a multiple of 4, an attribute running past the end, MESSAGE-INTEGRITY not 20 bytes, any attribute
after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (mediasoup rejects these too), any
attribute after FINGERPRINT, a FINGERPRINT that is not 4 bytes or does not match. MESSAGE-INTEGRITY is checked
later with :meth:`StunMessage.check_integrity`, because the key depends on the USERNAME. MESSAGE-INTEGRITY-SHA256
is carried but not verified (ICE peers use SHA-1 MESSAGE-INTEGRITY).

The consent-check path (RFC 7675: every connected peer sends one authenticated Binding request every few seconds)
has lean forms of the same rules, because a worker answers hundreds of them per second in Python: :func:`scan`
does every check of :func:`parse` without building a :class:`StunMessage`, :class:`IntegrityKey` hashes the HMAC
pads of a password once, and :func:`success_response` writes a Binding success response in one pass. They produce
the same bytes and the same errors as the general code (tests/router/test_stun.py compares them).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import os
import socket
import struct
import zlib
from dataclasses import dataclass, field

MAGIC_COOKIE = 0x2112A442
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E

METHOD_BINDING = 0x001

# Attribute types (RFC 8489 §18.3, RFC 8445 §16.1).
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_USERNAME = 0x0006
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_ERROR_CODE = 0x0009
ATTR_UNKNOWN_ATTRIBUTES = 0x000A
ATTR_REALM = 0x0014
ATTR_NONCE = 0x0015
ATTR_MESSAGE_INTEGRITY_SHA256 = 0x001C
ATTR_USERHASH = 0x001E
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_PRIORITY = 0x0024
ATTR_USE_CANDIDATE = 0x0025
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028
ATTR_ICE_CONTROLLED = 0x8029
ATTR_ICE_CONTROLLING = 0x802A

# Comprehension-required attributes (type < 0x8000) this implementation understands; any other one in a request
# makes it a 420 Unknown Attribute case (RFC 8489 §6.3.1).
KNOWN_REQUIRED_ATTRIBUTES = frozenset(
    {
        ATTR_MAPPED_ADDRESS,
        ATTR_USERNAME,
        ATTR_MESSAGE_INTEGRITY,
        ATTR_ERROR_CODE,
        ATTR_UNKNOWN_ATTRIBUTES,
        ATTR_REALM,
        ATTR_NONCE,
        ATTR_MESSAGE_INTEGRITY_SHA256,
        ATTR_USERHASH,
        ATTR_XOR_MAPPED_ADDRESS,
        ATTR_PRIORITY,
        ATTR_USE_CANDIDATE,
    }
)

_INTEGRITY_VALUE_LENGTH = 20
_INTEGRITY_ATTR_LENGTH = 4 + _INTEGRITY_VALUE_LENGTH
_FINGERPRINT_ATTR_LENGTH = 8
_FAMILY_IPV4 = 0x01
_FAMILY_IPV6 = 0x02
_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
_XOR_PORT = MAGIC_COOKIE >> 16
_BINDING_SUCCESS = 0x0101  # _pack_type(METHOD_BINDING, StunClass.SUCCESS)

_H = struct.Struct("!H")
_I = struct.Struct("!I")
_HH = struct.Struct("!HH")
_HHI = struct.Struct("!HHI")
_BBH = struct.Struct("!BBH")
_BBHI = struct.Struct("!BBHI")
_INTEGRITY_HEADER = _HH.pack(ATTR_MESSAGE_INTEGRITY, _INTEGRITY_VALUE_LENGTH)
_IPAD = bytes(b ^ 0x36 for b in range(256))  # translate tables for the HMAC pads (RFC 2104 §2)
_OPAD = bytes(b ^ 0x5C for b in range(256))

Address = tuple[str, int]


class StunError(ValueError):
    """A datagram that is not a well-formed STUN message (or a bad value given to a builder)."""


class StunClass(enum.IntEnum):
    """The two class bits of the message type (RFC 8489 §5)."""

    REQUEST = 0
    INDICATION = 1
    SUCCESS = 2
    ERROR = 3


def _pack_type(method: int, cls: StunClass) -> int:
    # Method bits M0-M11 are interleaved with class bits C0 (bit 4) and C1 (bit 8).
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | ((cls & 1) << 4) | ((cls & 2) << 7)


def _unpack_type(message_type: int) -> tuple[int, StunClass]:
    method = (message_type & 0x000F) | ((message_type & 0x00E0) >> 1) | ((message_type & 0x3E00) >> 2)
    cls = StunClass(((message_type >> 4) & 1) | ((message_type >> 7) & 2))
    return method, cls


def _with_length(data: bytes | bytearray, length: int) -> bytes | bytearray:
    return data[:2] + _H.pack(length) + data[4:]


class IntegrityKey:
    """A MESSAGE-INTEGRITY key (for ICE, the password) with its HMAC-SHA1 inner and outer pads hashed once.

    ``key.mac(message) == hmac.digest(key.key, message, "sha1")`` (RFC 2104): the two SHA-1 states after the padded
    key are kept and copied per message, which costs less than setting up an HMAC each time.
    """

    __slots__ = ("_inner", "_outer", "key")

    def __init__(self, key: bytes) -> None:
        self.key = bytes(key)
        block = (hashlib.sha1(self.key).digest() if len(self.key) > 64 else self.key).ljust(64, b"\0")
        self._inner = hashlib.sha1(block.translate(_IPAD))
        self._outer = hashlib.sha1(block.translate(_OPAD))

    def mac(self, message: bytes | bytearray) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def compute_integrity(message_prefix: bytes | bytearray, key: bytes | IntegrityKey) -> bytes:
    """HMAC-SHA1 for a MESSAGE-INTEGRITY attribute that follows ``message_prefix`` (RFC 8489 §14.5)."""
    adjusted = _with_length(message_prefix, len(message_prefix) - HEADER_LENGTH + _INTEGRITY_ATTR_LENGTH)
    if isinstance(key, IntegrityKey):
        return key.mac(adjusted)
    return hmac.digest(key, adjusted, "sha1")


def verify_integrity(data: bytes, offset: int, key: bytes | IntegrityKey) -> bool:
    """True if the MESSAGE-INTEGRITY attribute at ``offset`` of ``data`` verifies with ``key`` (constant time)."""
    adjusted = data[:2] + _H.pack(offset - HEADER_LENGTH + _INTEGRITY_ATTR_LENGTH) + data[4:offset]
    mac = key.mac(adjusted) if isinstance(key, IntegrityKey) else hmac.digest(key, adjusted, "sha1")
    return hmac.compare_digest(data[offset + 4 : offset + _INTEGRITY_ATTR_LENGTH], mac)


def compute_fingerprint(message_prefix: bytes | bytearray) -> int:
    """CRC-32 XOR 0x5354554E for a FINGERPRINT attribute that follows ``message_prefix`` (RFC 8489 §14.7)."""
    adjusted = _with_length(message_prefix, len(message_prefix) - HEADER_LENGTH + _FINGERPRINT_ATTR_LENGTH)
    return (zlib.crc32(adjusted) ^ FINGERPRINT_XOR) & 0xFFFFFFFF


def _xor_pad(transaction_id: bytes) -> bytes:
    return struct.pack("!I", MAGIC_COOKIE) + transaction_id


def encode_xor_address(addr: Address, transaction_id: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS value for ``addr`` (RFC 8489 §14.2): family, port ^ cookie>>16, address ^ pad."""
    host, port = addr[0], addr[1]  # asyncio gives IPv6 peers as 4-tuples
    if not 0 <= port <= 0xFFFF:
        raise StunError(f"port {port} out of range")
    # Fast form for the address strings the Engine and asyncio give. Whatever inet_pton refuses (a zone id, a
    # host that is not a str) goes to the ipaddress form below, which decides what is valid and how it packs.
    try:
        packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except (OSError, TypeError, ValueError):
        packed = None
    if packed is not None and len(transaction_id) == 12:
        xport = port ^ _XOR_PORT
        if len(packed) == 4:
            return _BBHI.pack(0, _FAMILY_IPV4, xport, int.from_bytes(packed, "big") ^ MAGIC_COOKIE)
        pad = int.from_bytes(_COOKIE_BYTES + transaction_id, "big")
        return _BBH.pack(0, _FAMILY_IPV6, xport) + (int.from_bytes(packed, "big") ^ pad).to_bytes(16, "big")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise StunError(f"not an IP address: {host!r}") from None
    family = _FAMILY_IPV4 if ip.version == 4 else _FAMILY_IPV6
    pad = _xor_pad(transaction_id)
    xored = bytes(b ^ p for b, p in zip(ip.packed, pad, strict=False))
    return struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + xored


def decode_xor_address(value: bytes, transaction_id: bytes) -> Address:
    """Inverse of :func:`encode_xor_address`."""
    if len(value) < 4:
        raise StunError(f"XOR-MAPPED-ADDRESS too short: {len(value)} bytes")
    _, family, xport = struct.unpack_from("!BBH", value)
    expected = {_FAMILY_IPV4: 8, _FAMILY_IPV6: 20}.get(family)
    if expected is None:
        raise StunError(f"XOR-MAPPED-ADDRESS has unknown family 0x{family:02x}")
    if len(value) != expected:
        raise StunError(f"XOR-MAPPED-ADDRESS length {len(value)} for family 0x{family:02x}, expected {expected}")
    pad = _xor_pad(transaction_id)
    raw = bytes(b ^ p for b, p in zip(value[4:], pad, strict=False))
    host = str(ipaddress.IPv4Address(raw) if family == _FAMILY_IPV4 else ipaddress.IPv6Address(raw))
    return host, xport ^ (MAGIC_COOKIE >> 16)


@dataclass
class StunMessage:
    """One STUN message: method, class, transaction id and attributes in wire order (raw values).

    A parsed message remembers its bytes and where MESSAGE-INTEGRITY sits so that :meth:`check_integrity` can
    verify it with a key found later. Built messages get MESSAGE-INTEGRITY and FINGERPRINT in :meth:`to_bytes`;
    do not add those two attributes by hand.
    """

    method: int
    cls: StunClass
    transaction_id: bytes = field(default_factory=lambda: os.urandom(12))
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    raw: bytes = b""
    integrity_offset: int | None = None  # offset of the MESSAGE-INTEGRITY attribute header in ``raw``
    has_fingerprint: bool = False

    def __post_init__(self) -> None:
        if len(self.transaction_id) != 12:
            raise StunError(f"transaction id must be 12 bytes, got {len(self.transaction_id)}")
        if not 0 <= self.method <= 0xFFF:
            raise StunError(f"method 0x{self.method:x} does not fit in 12 bits")

    # ---- reading -------------------------------------------------------------------------------------------
    def get(self, attr_type: int) -> bytes | None:
        """The value of the first attribute of this type, or None."""
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None

    def has(self, attr_type: int) -> bool:
        return any(t == attr_type for t, _ in self.attributes)

    @property
    def has_integrity(self) -> bool:
        return self.integrity_offset is not None

    @property
    def username(self) -> str | None:
        value = self.get(ATTR_USERNAME)
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise StunError("USERNAME is not valid UTF-8") from None

    def _u32(self, attr_type: int, name: str) -> int | None:
        value = self.get(attr_type)
        if value is None:
            return None
        if len(value) != 4:
            raise StunError(f"{name} length {len(value)}, expected 4")
        return int(struct.unpack("!I", value)[0])

    def _u64(self, attr_type: int, name: str) -> int | None:
        value = self.get(attr_type)
        if value is None:
            return None
        if len(value) != 8:
            raise StunError(f"{name} length {len(value)}, expected 8")
        return int(struct.unpack("!Q", value)[0])

    @property
    def priority(self) -> int | None:
        return self._u32(ATTR_PRIORITY, "PRIORITY")

    @property
    def use_candidate(self) -> bool:
        return self.has(ATTR_USE_CANDIDATE)

    @property
    def ice_controlling(self) -> int | None:
        return self._u64(ATTR_ICE_CONTROLLING, "ICE-CONTROLLING")

    @property
    def ice_controlled(self) -> int | None:
        return self._u64(ATTR_ICE_CONTROLLED, "ICE-CONTROLLED")

    @property
    def xor_mapped_address(self) -> Address | None:
        value = self.get(ATTR_XOR_MAPPED_ADDRESS)
        return None if value is None else decode_xor_address(value, self.transaction_id)

    @property
    def error_code(self) -> tuple[int, str] | None:
        value = self.get(ATTR_ERROR_CODE)
        if value is None:
            return None
        if len(value) < 4:
            raise StunError(f"ERROR-CODE length {len(value)}, expected at least 4")
        code = (value[2] & 0x07) * 100 + value[3]
        try:
            reason = value[4:].decode("utf-8")
        except UnicodeDecodeError:
            raise StunError("ERROR-CODE reason is not valid UTF-8") from None
        return code, reason

    def unknown_required_attributes(self) -> list[int]:
        """Comprehension-required attribute types (< 0x8000) this implementation does not understand."""
        return [t for t, _ in self.attributes if t < 0x8000 and t not in KNOWN_REQUIRED_ATTRIBUTES]

    def check_integrity(self, key: bytes | IntegrityKey) -> bool:
        """True if the parsed MESSAGE-INTEGRITY verifies with ``key`` (constant-time compare)."""
        if self.integrity_offset is None:
            return False
        return verify_integrity(self.raw, self.integrity_offset, key)

    # ---- building ------------------------------------------------------------------------------------------
    def add(self, attr_type: int, value: bytes = b"") -> StunMessage:
        if attr_type in (ATTR_MESSAGE_INTEGRITY, ATTR_FINGERPRINT):
            raise StunError("MESSAGE-INTEGRITY and FINGERPRINT are added by to_bytes()")
        if not 0 <= attr_type <= 0xFFFF:
            raise StunError(f"attribute type 0x{attr_type:x} does not fit in 16 bits")
        if len(value) > 0xFFFF:
            raise StunError(f"attribute value of {len(value)} bytes is too long")
        self.attributes.append((attr_type, bytes(value)))
        return self

    def add_username(self, username: str) -> StunMessage:
        return self.add(ATTR_USERNAME, username.encode("utf-8"))

    def add_priority(self, priority: int) -> StunMessage:
        return self.add(ATTR_PRIORITY, struct.pack("!I", priority))

    def add_use_candidate(self) -> StunMessage:
        return self.add(ATTR_USE_CANDIDATE)

    def add_ice_controlling(self, tie_breaker: int) -> StunMessage:
        return self.add(ATTR_ICE_CONTROLLING, struct.pack("!Q", tie_breaker))

    def add_ice_controlled(self, tie_breaker: int) -> StunMessage:
        return self.add(ATTR_ICE_CONTROLLED, struct.pack("!Q", tie_breaker))

    def add_xor_mapped_address(self, addr: Address) -> StunMessage:
        return self.add(ATTR_XOR_MAPPED_ADDRESS, encode_xor_address(addr, self.transaction_id))

    def add_error_code(self, code: int, reason: str) -> StunMessage:
        if not 300 <= code <= 699:
            raise StunError(f"error code {code} outside 300..699")
        return self.add(ATTR_ERROR_CODE, struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode("utf-8"))

    def add_unknown_attributes(self, types: list[int]) -> StunMessage:
        return self.add(ATTR_UNKNOWN_ATTRIBUTES, b"".join(struct.pack("!H", t) for t in types))

    def to_bytes(self, integrity_key: bytes | None = None, *, fingerprint: bool = True) -> bytes:
        """Serialize; with ``integrity_key`` append MESSAGE-INTEGRITY, then FINGERPRINT unless disabled."""
        body = bytearray()
        for attr_type, value in self.attributes:
            body += struct.pack("!HH", attr_type, len(value)) + value + bytes(-len(value) % 4)
        out = bytearray(struct.pack("!HHI", _pack_type(self.method, self.cls), len(body), MAGIC_COOKIE))
        out += self.transaction_id + body
        if integrity_key is not None:
            mac = compute_integrity(out, integrity_key)
            out += struct.pack("!HH", ATTR_MESSAGE_INTEGRITY, _INTEGRITY_VALUE_LENGTH) + mac
        if fingerprint:
            crc = compute_fingerprint(out)
            out += struct.pack("!HHI", ATTR_FINGERPRINT, 4, crc)
        struct.pack_into("!H", out, 2, len(out) - HEADER_LENGTH)
        return bytes(out)


def is_stun(data: bytes) -> bool:
    """Cheap test: first two bits zero, magic cookie present, length plausible (RFC 7983 demux + RFC 8489 §5)."""
    return (
        len(data) >= HEADER_LENGTH
        and data[0] < 4
        and data[4:8] == b"\x21\x12\xa4\x42"
        and (data[2] << 8 | data[3]) == len(data) - HEADER_LENGTH
    )


def scan(data: bytes) -> tuple[int, list[tuple[int, bytes]], int | None, bool]:
    """Every check of :func:`parse`, in the same order and with the same :class:`StunError` reasons, without
    building a message: returns (message type, attributes in wire order as in :attr:`StunMessage.attributes`,
    offset of MESSAGE-INTEGRITY or None, FINGERPRINT present and verified)."""
    raw = bytes(data)
    end = len(raw)
    if end < HEADER_LENGTH:
        raise StunError(f"message too short: {end} bytes")
    message_type, length, cookie = _HHI.unpack_from(raw)
    if message_type & 0xC000:
        raise StunError("first two bits of the message type are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunError(f"bad magic cookie 0x{cookie:08x}")
    if length % 4:
        raise StunError(f"message length {length} is not a multiple of 4")
    if length != end - HEADER_LENGTH:
        raise StunError(f"message length {length} does not match datagram body of {end - HEADER_LENGTH} bytes")
    attributes: list[tuple[int, bytes]] = []
    integrity_offset: int | None = None
    has_fingerprint = False
    unpack = _HH.unpack_from
    pos = HEADER_LENGTH
    # NOTE: pos and end are both 20 plus a multiple of 4, so a whole attribute header is left whenever pos < end,
    # and value_end (<= end) rounded up to 4 never passes end: no truncated-header or padding check is needed.
    while pos < end:
        attr_type, attr_len = unpack(raw, pos)
        value_end = pos + 4 + attr_len
        if value_end > end:
            raise StunError(f"attribute 0x{attr_type:04x} at offset {pos} runs past the end of the message")
        if has_fingerprint:
            raise StunError(f"attribute 0x{attr_type:04x} after FINGERPRINT")
        if attr_type == ATTR_FINGERPRINT:
            if attr_len != 4:
                raise StunError(f"FINGERPRINT length {attr_len}, expected 4")
            if value_end == end:  # the usual last attribute: the header length already ends right after it
                expected = (zlib.crc32(raw[:pos]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            else:
                expected = compute_fingerprint(raw[:pos])
            if _I.unpack_from(raw, pos + 4)[0] != expected:
                raise StunError("FINGERPRINT mismatch")
            has_fingerprint = True
        elif attr_type == ATTR_MESSAGE_INTEGRITY:
            if integrity_offset is not None:
                raise StunError("second MESSAGE-INTEGRITY")
            if attr_len != _INTEGRITY_VALUE_LENGTH:
                raise StunError(f"MESSAGE-INTEGRITY length {attr_len}, expected {_INTEGRITY_VALUE_LENGTH}")
            integrity_offset = pos
        elif integrity_offset is not None and attr_type != ATTR_MESSAGE_INTEGRITY_SHA256:
            raise StunError(f"attribute 0x{attr_type:04x} after MESSAGE-INTEGRITY")
        else:
            attributes.append((attr_type, raw[pos + 4 : value_end]))
        pos = (value_end + 3) & ~3
    return message_type, attributes, integrity_offset, has_fingerprint


def parse(data: bytes) -> StunMessage:
    """Parse one STUN message; raise :class:`StunError` with the exact reason if it is malformed."""
    message_type, attributes, integrity_offset, has_fingerprint = scan(data)
    method, cls = _unpack_type(message_type)
    raw = bytes(data)
    return StunMessage(method, cls, raw[8:20], attributes, raw, integrity_offset, has_fingerprint)


def success_response(transaction_id: bytes, addr: Address, key: IntegrityKey) -> bytes:
    """The bytes of :func:`binding_success` for a request with ``transaction_id``, written in one pass."""
    value = encode_xor_address(addr, transaction_id)
    attribute = _HH.pack(ATTR_XOR_MAPPED_ADDRESS, len(value)) + value
    length = len(attribute) + _INTEGRITY_ATTR_LENGTH  # as MESSAGE-INTEGRITY sees it: FINGERPRINT not counted
    mac = key.mac(_HHI.pack(_BINDING_SUCCESS, length, MAGIC_COOKIE) + transaction_id + attribute)
    body = (
        _HHI.pack(_BINDING_SUCCESS, length + _FINGERPRINT_ATTR_LENGTH, MAGIC_COOKIE)
        + transaction_id
        + attribute
        + _INTEGRITY_HEADER
        + mac
    )
    return body + _HHI.pack(ATTR_FINGERPRINT, 4, zlib.crc32(body) ^ FINGERPRINT_XOR)


def binding_success(request: StunMessage, addr: Address, integrity_key: bytes) -> bytes:
    """Binding success response to ``request``: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT."""
    return success_response(request.transaction_id, addr, IntegrityKey(integrity_key))


def binding_error(
    request: StunMessage,
    code: int,
    reason: str,
    integrity_key: bytes | None = None,
    *,
    unknown_attributes: list[int] | None = None,
) -> bytes:
    """Binding error response (ERROR-CODE, optional UNKNOWN-ATTRIBUTES); integrity only when the key is known."""
    response = StunMessage(METHOD_BINDING, StunClass.ERROR, request.transaction_id)
    response.add_error_code(code, reason)
    if unknown_attributes:
        response.add_unknown_attributes(unknown_attributes)
    return response.to_bytes(integrity_key)
