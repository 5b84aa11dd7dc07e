"""ICE-lite responder for one transport: answers authenticated Binding requests and tracks the peer's tuples.

Follows RFC 8445 §7.3 (responding to connectivity checks with the short-term credential mechanism, peer-reflexive
tuples only from authenticated requests), RFC 8445 §2.5/§6.1.1 and RFC 8838 (a lite agent is always controlled and
never sends checks), RFC 7675 (consent freshness: the owner times a transport out when no valid check arrived on the
selected tuple for 30 s) and RFC 8489 (STUN). Pure protocol object: bytes in, response bytes out, time given by the
caller; no sockets.

Error policy (docs/RELIABILITY.md, B1-B6 and B8). Anything that is not an authenticated Binding request gets **no answer
and creates no state**: malformed STUN, responses and indications, a request without USERNAME or without
MESSAGE-INTEGRITY, a USERNAME whose part before the colon is not our ufrag, a MESSAGE-INTEGRITY that does not verify
with our password, a wrong FINGERPRINT (a FINGERPRINT is optional, but must verify when present). We drop instead of
answering 400/401 (the choice pion/ice makes) so that spoofed sources cannot use us as a reflector and a prober
learns nothing. Once a request is authenticated, errors are answered with an integrity-protected error response and
still create no state: ICE-CONTROLLED from the peer (both sides would be controlled) → 487 Role Conflict, missing
PRIORITY → 400 Bad Request, unknown comprehension-required attributes → 420 Unknown Attribute. Each rejection is
counted in :attr:`IceLite.rejected` by reason.

Tuples: up to ``MAX_TUPLES`` (8, mediasoup's value) remote addresses per transport; a new one evicts the least
recently validated tuple that is not selected. ``select`` is true on USE-CANDIDATE, or on the first valid request
while nothing is selected yet (so a peer that never nominates still gets a path).

ICE restart: :meth:`IceLite.restart` installs new credentials next to the current ones; requests with either are
accepted until the first valid request with the new ones, after which the old ones are forgotten.

Cost: every connected peer sends a consent check every few seconds, so :meth:`IceLite.handle` is on a worker's
busy path. It uses :func:`stun.scan` (the checks of ``stun.parse`` without building a message), a per-password
:class:`stun.IntegrityKey` and :func:`stun.success_response`; the order of the checks above is unchanged.
"""

from __future__ import annotations

import struct
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

from router import stun

MAX_TUPLES = 8
CONSENT_TIMEOUT_MS = 30_000

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class IceResult:
    """What to do with one incoming STUN datagram: send ``response`` back to its source (if not None), and if
    ``select`` is true make that source the transport's selected tuple."""

    response: bytes | None
    select: bool = False


_DROP = IceResult(None, False)
_BINDING_REQUEST = 0x0001  # message type of a Binding request (RFC 8489 §5, §18.2)
_GOOG_NETWORK_INFO = 0xC057  # Chrome's network id and cost, comprehension-optional
# Attribute types a browser's check carries that need no 420 check: the understood comprehension-required ones
# plus common comprehension-optional ones (SOFTWARE, ICE-CONTROLLED/-CONTROLLING, Chrome's GOOG-NETWORK-INFO).
# A request with any other type gets the exact test (any type < 0x8000 not understood).
_USUAL_ATTRIBUTES = stun.KNOWN_REQUIRED_ATTRIBUTES | {
    stun.ATTR_SOFTWARE,
    stun.ATTR_ICE_CONTROLLED,
    stun.ATTR_ICE_CONTROLLING,
    _GOOG_NETWORK_INFO,
}


@dataclass(slots=True)
class _Credentials:
    ufrag: str
    pwd: str
    key: bytes
    integrity: stun.IntegrityKey


def _credentials(ufrag: str, pwd: str) -> _Credentials:
    # RFC 8445 §5.3: ufrag at least 4 ice-chars, password at least 22; ':' would break the USERNAME split.
    if len(ufrag) < 4 or ":" in ufrag or not ufrag.isascii():
        raise ValueError(f"invalid ICE ufrag {ufrag!r}: need at least 4 ASCII characters and no ':'")
    if len(pwd) < 22 or not pwd.isascii():
        raise ValueError("invalid ICE password: need at least 22 ASCII characters")
    key = pwd.encode("ascii")
    return _Credentials(ufrag, pwd, key, stun.IntegrityKey(key))


@dataclass(slots=True)
class _Tuple:
    first_ms: int
    last_ms: int


class IceLite:
    """The ICE-lite side of one transport. Lifecycle: created with the local credentials from the answer SDP; lives
    as long as its transport; ``restart`` on an ICE restart."""

    def __init__(self, local_ufrag: str, local_pwd: str) -> None:
        self._current = _credentials(local_ufrag, local_pwd)
        self._pending: _Credentials | None = None
        self._tuples: OrderedDict[Address, _Tuple] = OrderedDict()
        self.selected: Address | None = None
        self.remote_ufrag: str | None = None
        self.last_valid_check_ms: int | None = None  # last authenticated check on the selected tuple
        self.rejected: Counter[str] = Counter()
        self.answered = 0

    # ---- credentials -------------------------------------------------------------------------------------
    @property
    def local_ufrag(self) -> str:
        """The ufrag the transport advertises now (the new one once a restart was requested)."""
        return (self._pending or self._current).ufrag

    @property
    def local_pwd(self) -> str:
        return (self._pending or self._current).pwd

    def accepts_ufrag(self, ufrag: str) -> bool:
        """True if ``ufrag`` is one this transport answers to (current, or pending after a restart)."""
        return ufrag == self._current.ufrag or (self._pending is not None and ufrag == self._pending.ufrag)

    def restart(self, ufrag: str, pwd: str) -> None:
        """ICE restart: accept the new credentials, keep the old ones until the first valid check with the new."""
        new = _credentials(ufrag, pwd)
        if new.ufrag == self._current.ufrag:
            raise ValueError(f"ICE restart must change the ufrag (still {ufrag!r})")
        self._pending = new

    # ---- tuples ------------------------------------------------------------------------------------------
    @property
    def tuples(self) -> list[Address]:
        """Validated remote addresses, least recently validated first."""
        return list(self._tuples)

    def remove_tuple(self, addr: Address) -> None:
        """Forget a tuple (for instance after the owner saw it fail); unselects it if it was selected."""
        self._tuples.pop(addr, None)
        if self.selected == addr:
            self.selected = None

    def consent_expired(self, now_ms: int, timeout_ms: int = CONSENT_TIMEOUT_MS) -> bool:
        """RFC 7675: True when a tuple is selected and no valid check arrived on it for ``timeout_ms``."""
        if self.selected is None or self.last_valid_check_ms is None:
            return False
        return now_ms - self.last_valid_check_ms > timeout_ms

    def consent_deadline_ms(self, timeout_ms: int = CONSENT_TIMEOUT_MS) -> int | None:
        """The first time at which :meth:`consent_expired` turns true if no valid check arrives before it; None
        while nothing is selected (then consent cannot expire until a check selects a tuple)."""
        if self.selected is None or self.last_valid_check_ms is None:
            return None
        return self.last_valid_check_ms + timeout_ms + 1

    def _remember(self, addr: Address, now_ms: int) -> None:
        entry = self._tuples.get(addr)
        if entry is not None:
            entry.last_ms = now_ms
            self._tuples.move_to_end(addr)
            return
        if len(self._tuples) >= MAX_TUPLES:
            victim = next((a for a in self._tuples if a != self.selected), None)
            if victim is not None:
                del self._tuples[victim]
        self._tuples[addr] = _Tuple(now_ms, now_ms)

    # ---- the check -----------------------------------------------------------------------------------------
    def _reject(self, reason: str) -> IceResult:
        self.rejected[reason] += 1
        return _DROP

    def handle(self, data: bytes, addr: Address, now_ms: int | None = None, mapped: Address | None = None) -> IceResult:
        """Process one STUN datagram from ``addr``; ``now_ms`` defaults to the monotonic clock. ``mapped`` is the
        address to report in XOR-MAPPED-ADDRESS when it is not ``addr`` (an ICE-TCP connection's client address,
        while ``addr`` is its relay tuple)."""
        data = bytes(data)  # no copy for bytes; what the Engine gives
        try:
            message_type, attributes, integrity_offset, _ = stun.scan(data)
        except stun.StunError:
            return self._reject("malformed")
        if message_type != _BINDING_REQUEST:
            return self._reject("not a binding request")
        first = dict(reversed(attributes))  # the first value of each attribute type, as StunMessage.get gives
        raw_username = first.get(stun.ATTR_USERNAME)
        if raw_username is None:
            return self._reject("no USERNAME")
        try:
            username = raw_username.decode("utf-8")
        except UnicodeDecodeError:
            return self._reject("bad USERNAME")
        if integrity_offset is None:
            return self._reject("no MESSAGE-INTEGRITY")
        local_ufrag, sep, remote_ufrag = username.partition(":")
        if not sep:
            return self._reject("bad USERNAME")
        if local_ufrag == self._current.ufrag:
            credentials = self._current
        elif self._pending is not None and local_ufrag == self._pending.ufrag:
            credentials = self._pending
        else:
            return self._reject("unknown ufrag")
        if not stun.verify_integrity(data, integrity_offset, credentials.integrity):
            return self._reject("bad MESSAGE-INTEGRITY")
        # Authenticated from here on: errors are answered (integrity-protected) but still change no state.
        transaction_id = data[8:20]
        if not first.keys() <= _USUAL_ATTRIBUTES:
            unknown = [t for t, _ in attributes if t < 0x8000 and t not in stun.KNOWN_REQUIRED_ATTRIBUTES]
            if unknown:
                self.rejected["unknown attribute"] += 1
                return IceResult(_error(transaction_id, 420, "Unknown Attribute", credentials.key, unknown))
        controlled = first.get(stun.ATTR_ICE_CONTROLLED)
        priority = first.get(stun.ATTR_PRIORITY)
        if (controlled is not None and len(controlled) != 8) or (priority is not None and len(priority) != 4):
            self.rejected["bad attribute"] += 1
            return IceResult(_error(transaction_id, 400, "Bad Request", credentials.key))
        if controlled is not None:
            self.rejected["role conflict"] += 1
            return IceResult(_error(transaction_id, 487, "Role Conflict", credentials.key))
        if priority is None:
            self.rejected["no PRIORITY"] += 1
            return IceResult(_error(transaction_id, 400, "Bad Request", credentials.key))
        try:
            response = stun.success_response(transaction_id, mapped or addr, credentials.integrity)
        except stun.StunError:
            return self._reject("bad source address")

        now = int(time.monotonic() * 1000) if now_ms is None else now_ms
        if credentials is self._pending:
            self._current, self._pending = self._pending, None
        self.remote_ufrag = remote_ufrag
        self._remember(addr, now)
        select = stun.ATTR_USE_CANDIDATE in first or self.selected is None
        if select:
            self.selected = addr
        if addr == self.selected:
            self.last_valid_check_ms = now
        self.answered += 1
        return IceResult(response, select)


def _error(transaction_id: bytes, code: int, reason: str, key: bytes, unknown: list[int] | None = None) -> bytes:
    request = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST, transaction_id)
    return stun.binding_error(request, code, reason, key, unknown_attributes=unknown)


def username_fragment(data: bytes) -> str | None:
    """Our ufrag (USERNAME before the colon) from an unauthenticated Binding request, cheaply; None if there is none.

    Used to find the transport for the first request on a shared port; the transport's :class:`IceLite` still
    authenticates the request. Returns None for anything that is not a plausible Binding request.
    """
    if len(data) < stun.HEADER_LENGTH or data[0] != 0x00 or data[1] != 0x01 or data[4:8] != b"\x21\x12\xa4\x42":
        return None
    end = len(data)
    pos = stun.HEADER_LENGTH
    while pos + 4 <= end:
        attr_type, attr_len = struct.unpack_from("!HH", data, pos)
        if attr_type == stun.ATTR_USERNAME:
            if pos + 4 + attr_len > end:
                return None
            local, sep, _ = bytes(data[pos + 4 : pos + 4 + attr_len]).partition(b":")
            if not sep or not local:
                return None
            try:
                return local.decode("ascii")
            except UnicodeDecodeError:
                return None
        pos += 4 + attr_len + (-attr_len % 4)
    return None
