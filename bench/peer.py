"""A synthetic participant's set-up: ICE connectivity check, DTLS client handshake, SRTP key export.

Owns the client half of what a browser does before media flows, written independently of ``router/``'s ICE and
DTLS code so that the server is exercised as by a foreign peer (only the certificate is the worker's kind, made by
``router.dtls.DtlsCertificate``): the participant is the controlling ICE agent and sends an authenticated
Binding request (RFC 8445 §7.2.4, RFC 8489: USERNAME "server_ufrag:client_ufrag", PRIORITY, ICE-CONTROLLING,
USE-CANDIDATE, MESSAGE-INTEGRITY keyed with the server's ice-pwd, FINGERPRINT) and checks the answer's integrity;
then it runs a DTLS 1.2 client handshake with pyOpenSSL over memory BIOs offering exactly one DTLS-SRTP profile
(RFC 5764), checks the server's certificate against the fingerprint the server reported, and exports the SRTP keys
(RFC 5764 §4.2 layout). Retransmission: STUN every 100 ms, DTLS on OpenSSL's timer.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import os
import secrets
import struct
import zlib
from collections import deque
from dataclasses import dataclass

from aioice import stun
from OpenSSL import SSL, crypto

from bench.net import GeneratorSocket
from router.dtls import DtlsCertificate

# name on the command line -> (OpenSSL profile name, libsrtp srtp_profile_t, key length, salt length)
SRTP_PROFILES: dict[str, tuple[bytes, int, int, int]] = {
    "cm80": (b"SRTP_AES128_CM_SHA1_80", 1, 16, 14),
    "gcm": (b"SRTP_AEAD_AES_128_GCM", 7, 16, 12),
}
_EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"
_STUN_INTEGRITY = 0x0008
_STUN_RETRY_S = 0.1
DTLS1_2 = 0xFEFD


class SetupError(Exception):
    """A participant could not connect; the message says which step failed and why."""


@dataclass(frozen=True)
class Credentials:
    """A participant's DTLS identity (shared by all participants of one run: key generation is not measured)."""

    cert: crypto.X509
    key: crypto.PKey
    fingerprint: str

    @classmethod
    def generate(cls) -> Credentials:
        """The worker's kind of certificate (``router.dtls.DtlsCertificate``: ECDSA P-256, self-signed)."""
        certificate = DtlsCertificate.generate()
        return cls(crypto.X509.from_cryptography(certificate.cert), crypto.PKey.from_cryptography_key(certificate.key),
                   certificate.fingerprint("sha-256"))


@dataclass(frozen=True)
class ServerParams:
    """What the server reported for a transport (``media_router.create_webrtc_transport``)."""

    ice_ufrag: str
    ice_pwd: str
    fingerprint: str  # sha-256, colon-separated hex
    host: str
    port: int


@dataclass(frozen=True)
class SrtpKeys:
    profile: int  # libsrtp srtp_profile_t
    local: bytes  # our key||salt (we protect with it)
    remote: bytes  # the server's key||salt (we unprotect with it)


_MAGIC = 0x2112A442
_FINGERPRINT_XOR = 0x5354554E
_ATTR_USERNAME, _ATTR_PRIORITY, _ATTR_CONTROLLING, _ATTR_USE_CANDIDATE = 0x0006, 0x0024, 0x802A, 0x0025
_ATTR_FINGERPRINT = 0x8028
_PEER_REFLEXIVE_PRIORITY = (110 << 24) | (65535 << 8) | 255  # peer-reflexive, component 1 (RFC 8445 §7.1.1)


def binding_request(server: ServerParams, client_ufrag: str, tie_breaker: int, *, nominate: bool,
                    transaction: bytes | None = None) -> bytes:
    """An authenticated ICE Binding request from the controlling agent: USERNAME, PRIORITY, ICE-CONTROLLING,
    USE-CANDIDATE when ``nominate``, MESSAGE-INTEGRITY (HMAC-SHA1 keyed with the server's ice-pwd) and FINGERPRINT
    (RFC 8489 §14.5, §14.7), packed here in one pass (``aioice.stun.Message`` builds the same bytes through an
    attribute table; this runs twice per participant)."""
    username = f"{server.ice_ufrag}:{client_ufrag}".encode()
    body = (struct.pack("!HH", _ATTR_USERNAME, len(username)) + username + bytes(-len(username) % 4)
            + struct.pack("!HHI", _ATTR_PRIORITY, 4, _PEER_REFLEXIVE_PRIORITY)
            + struct.pack("!HHQ", _ATTR_CONTROLLING, 8, tie_breaker))
    if nominate:
        body += struct.pack("!HH", _ATTR_USE_CANDIDATE, 0)
    tid = secrets.token_bytes(12) if transaction is None else transaction
    # The length field covers what each trailer protects up to its own end (RFC 8489 §14.5, §14.7).
    signed = struct.pack("!HHI", 0x0001, len(body) + 24, _MAGIC) + tid + body
    signed += struct.pack("!HH", _STUN_INTEGRITY, 20) + hmac.digest(server.ice_pwd.encode(), signed, "sha1")
    message = bytearray(signed)
    struct.pack_into("!H", message, 2, len(signed) - 20 + 8)
    crc = (zlib.crc32(message) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
    return bytes(message) + struct.pack("!HHI", _ATTR_FINGERPRINT, 4, crc)


def integrity_ok(data: bytes, key: bytes) -> bool:
    """True when ``data`` carries a MESSAGE-INTEGRITY that verifies with ``key`` (RFC 8489 §14.5)."""
    pos = 20
    while pos + 4 <= len(data):
        kind, length = struct.unpack_from("!HH", data, pos)
        if kind == _STUN_INTEGRITY:
            if length != 20 or pos + 24 > len(data):
                return False
            head = bytearray(data[:pos])
            struct.pack_into("!H", head, 2, pos + 24 - 20)
            expected = hmac.digest(key, bytes(head), "sha1")
            return hmac.compare_digest(expected, data[pos + 4 : pos + 24])
        pos += 4 + length + (-length % 4)
    return False


class Inbox:
    """A participant's received set-up datagrams: ``put_nowait`` from the socket's dispatch, ``get(timeout)`` for
    the handshake. The same as ``asyncio.wait_for(queue.get(), timeout)`` without its task and timeout context per
    wait (each participant waits half a dozen times)."""

    def __init__(self) -> None:
        self._items: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, data: bytes) -> None:
        self._items.append(data)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self, timeout: float) -> bytes:
        """The oldest datagram; raises ``TimeoutError`` when none arrived within ``timeout`` seconds."""
        if not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await woken_or_timeout(waiter, timeout)
            finally:
                self._waiter = None
            if not self._items:
                raise TimeoutError
        return self._items.popleft()


async def woken_or_timeout(waiter: asyncio.Future[None], timeout: float) -> None:
    """Returns when ``waiter`` is set (by whoever holds it) or after ``timeout`` seconds, whichever comes first: one
    future and one timer, without the task and timeout context of ``asyncio.wait_for``."""
    timer = waiter.get_loop().call_later(timeout, _wake, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class SyntheticPeer:
    """One participant's transport set-up toward one server transport, over the shared generator socket."""

    def __init__(self, net: GeneratorSocket, address: str, credentials: Credentials, profile: str) -> None:
        if profile not in SRTP_PROFILES:
            raise ValueError(f"unknown SRTP profile {profile!r} (choose from {', '.join(SRTP_PROFILES)})")
        self.net = net
        self.address = address
        self.credentials = credentials
        self.profile = profile
        self.ice_ufrag = secrets.token_hex(4)
        self.ice_pwd = secrets.token_hex(16)
        self.tie_breaker = int.from_bytes(os.urandom(8), "big")
        self.server: ServerParams | None = None
        self._inbox = Inbox()
        net.register(address, self._on_datagram)

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.server is not None and addr == (self.server.host, self.server.port):
            self._inbox.put_nowait(data)

    def consent_request(self) -> bytes:
        """A Binding request to resend for consent freshness (RFC 7675) once connected."""
        assert self.server is not None
        return binding_request(self.server, self.ice_ufrag, self.tie_breaker, nominate=False)

    async def connect(self, server: ServerParams, timeout: float = 10.0) -> SrtpKeys:
        """ICE check, then DTLS handshake; returns the exported SRTP keys."""
        self.server = server
        try:
            async with asyncio.timeout(timeout):  # no task of its own, unlike asyncio.wait_for
                return await self._connect(server)
        except TimeoutError:
            raise SetupError(f"{self.address}: no connection to {server.host}:{server.port} in {timeout} s") from None
        finally:
            self.net.unregister(self.address)

    async def _connect(self, server: ServerParams) -> SrtpKeys:
        await self._ice(server)
        return await self._dtls(server)

    async def _ice(self, server: ServerParams) -> None:
        request = binding_request(server, self.ice_ufrag, self.tie_breaker, nominate=True)
        transaction = request[8:20]
        key = server.ice_pwd.encode()
        while True:
            self.net.send_from(self.address, request, (server.host, server.port))
            answer = await self._check_answer(transaction, _STUN_RETRY_S)
            if answer is None:
                continue
            data, message = answer
            if message.message_class != stun.Class.RESPONSE or not integrity_ok(data, key):
                raise SetupError(f"{self.address}: ICE answer without valid MESSAGE-INTEGRITY")
            mapped = message.attributes.get("XOR-MAPPED-ADDRESS")
            if mapped is None or mapped[0] != self.address:
                raise SetupError(f"{self.address}: ICE answer maps us to {mapped}")
            return

    async def _check_answer(self, transaction: bytes, timeout: float) -> tuple[bytes, stun.Message] | None:
        """The next datagram within ``timeout`` if it answers our check ``transaction`` (raw and parsed), else None;
        an error answer raises :class:`SetupError`."""
        try:
            data = await self._inbox.get(timeout)
        except TimeoutError:
            return None
        if len(data) < 20 or data[0] >= 4 or data[8:20] != transaction:
            return None
        message = stun.parse_message(data)
        if message.message_class == stun.Class.ERROR:
            raise SetupError(f"{self.address}: ICE check refused: {message.attributes.get('ERROR-CODE')}")
        return data, message

    async def _dtls(self, server: ServerParams) -> SrtpKeys:
        openssl_name, libsrtp, key_len, salt_len = SRTP_PROFILES[self.profile]
        check = _ServerCheck(server.fingerprint.upper())
        conn = SSL.Connection(client_context(self.credentials, self.profile), None)
        conn.set_app_data(check)
        conn.set_connect_state()
        dest = (server.host, server.port)
        while True:
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                pass
            except SSL.Error as exc:
                why = "server certificate does not match its fingerprint" if check.mismatch else str(exc)
                raise SetupError(f"{self.address}: DTLS handshake failed: {why}") from None
            self._flush(conn, dest)
            conn.bio_write(await self._next_record(conn, dest))
        self._flush(conn, dest)
        if conn.get_selected_srtp_profile() != openssl_name:
            raise SetupError(f"{self.address}: server selected SRTP profile {conn.get_selected_srtp_profile()!r}")
        material = conn.export_keying_material(_EXPORTER_LABEL, 2 * (key_len + salt_len))
        k, s = key_len, salt_len
        client = material[:k] + material[2 * k : 2 * k + s]
        server_key = material[k : 2 * k] + material[2 * k + s : 2 * k + 2 * s]
        return SrtpKeys(libsrtp, client, server_key)

    async def _next_record(self, conn: SSL.Connection, dest: tuple[str, int]) -> bytes:
        """The next DTLS datagram from the server, retransmitting our flight on OpenSSL's timer meanwhile; anything
        else (the answers to ICE check retransmissions that arrive late) is skipped without running the handshake."""
        while True:
            timeout = conn.DTLSv1_get_timeout()
            try:
                record = await self._inbox.get(timeout if timeout is not None else 1.0)
            except TimeoutError:
                conn.DTLSv1_handle_timeout()
                self._flush(conn, dest)
                continue
            if 20 <= record[0] <= 63:
                return record

    def _flush(self, conn: SSL.Connection, dest: tuple[str, int]) -> None:
        while True:
            try:
                data = conn.bio_read(65536)
            except SSL.WantReadError:
                return
            if not data:
                return
            for record in _split_records(data):
                self.net.send_from(self.address, record, dest)


@dataclass
class _ServerCheck:
    """What one handshake's certificate check expects (the connection's app data) and what it found."""

    expected: str  # the server's reported sha-256 fingerprint, upper-case
    mismatch: str = ""
    verified: bool = False  # the leaf matched (OpenSSL may ask again about the same certificate)

    def __post_init__(self) -> None:
        self.expected_raw = bytes.fromhex(self.expected.replace(":", ""))


def _verify(conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
    """The peer certificate check: the leaf's sha-256 fingerprint must be the one the server reported (RFC 8122).
    Compared as raw digests of the certificate's DER (formatted only for the error message)."""
    if depth != 0:
        return True
    check: _ServerCheck = conn.get_app_data()
    if check.verified:
        return True
    got = hashlib.sha256(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)).digest()
    if got != check.expected_raw:
        check.mismatch = ":".join(f"{b:02X}" for b in got)
        return False
    check.verified = True
    return True


_CONTEXTS: dict[tuple[int, str], tuple[Credentials, SSL.Context]] = {}


def client_context(credentials: Credentials, profile: str) -> SSL.Context:
    """One DTLS 1.2 client context per (credentials, SRTP profile), shared by every participant of a run, as one
    browser shares its certificate among its peer connections; each handshake's expected fingerprint is its
    connection's app data (:class:`_ServerCheck`), so sharing changes no check."""
    key = (id(credentials), profile)
    cached = _CONTEXTS.get(key)
    if cached is not None and cached[0] is credentials:
        return cached[1]
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.set_min_proto_version(DTLS1_2)
    ctx.set_max_proto_version(DTLS1_2)
    ctx.use_certificate(credentials.cert.to_cryptography())  # pyOpenSSL deprecates its own X509 and PKey here
    ctx.use_privatekey(credentials.key.to_cryptography_key())
    ctx.set_tlsext_use_srtp(SRTP_PROFILES[profile][0])
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify)
    _CONTEXTS[key] = (credentials, ctx)
    return ctx


def _split_records(data: bytes, mtu: int = 1200) -> list[bytes]:
    """Pack the DTLS 1.2 records of a BIO read (13-byte headers) into datagrams of at most ``mtu`` bytes."""
    out: list[bytes] = []
    current = b""
    pos = 0
    while pos + 13 <= len(data):
        end = pos + 13 + int.from_bytes(data[pos + 11 : pos + 13], "big")
        record = data[pos:end]
        if current and len(current) + len(record) > mtu:
            out.append(current)
            current = b""
        current += record
        pos = end
    if current:
        out.append(current)
    return out


def fingerprint_of(value: str) -> str:
    """Normalise a colon-separated hex fingerprint (checks it is sha-256 sized)."""
    raw = binascii.unhexlify(value.replace(":", ""))
    if len(raw) != 32:
        raise ValueError(f"sha-256 fingerprint expected, got {value!r}")
    return ":".join(f"{b:02X}" for b in raw)
