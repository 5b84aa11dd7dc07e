"""DTLS-SRTP endpoint over a memory BIO: handshake, fingerprint check, SRTP key export, application data.

Follows RFC 5764 (DTLS-SRTP: the ``use_srtp`` extension and the key layout of §4.2), RFC 8122 / RFC 8842 (the peer's
certificate is self-signed and authenticated only by the ``a=fingerprint`` lines from signaling) and RFC 6347 (DTLS
1.2, retransmission timers). The protocol engine is OpenSSL through pyOpenSSL with memory BIOs
(``SSL.Connection(ctx, None)``): records come in through :meth:`DtlsEndpoint.handle`, outgoing records leave through
the ``send`` callback, and the owner drives retransmission with :meth:`DtlsEndpoint.next_timeout_s` and
:meth:`DtlsEndpoint.handle_timeout` (OpenSSL's own DTLS timer via ``DTLSv1_get_timeout``/``DTLSv1_handle_timeout``:
1 s initial, doubling, fatal after OpenSSL's retransmission limit). No sockets, no event loop.

Security rules (docs/RELIABILITY.md, C1-C3 and C5): the fingerprint is checked twice, in the verify callback (a mismatch
aborts the handshake with a bad_certificate alert) and again on the finished handshake before anything is exported; a
mismatch, a handshake without ``use_srtp`` or any handshake error puts the endpoint in "failed" for good, where no
keys can be read and no application data is delivered. Fingerprint lists are validated at construction: an empty
list, an unknown algorithm or a malformed value raise ValueError. A certificate matches if any listed fingerprint
of a supported algorithm matches it (case-insensitive hex), as pion does.

Version: DTLS 1.2 only (min = max = 1.2). Every WebRTC stack speaks it, and it keeps the record framing simple: the
outgoing BIO is a byte stream, so :meth:`DtlsEndpoint._flush` splits it at record boundaries (13-byte DTLS 1.2
headers) and packs whole records into datagrams of at most ``mtu`` bytes.
"""

from __future__ import annotations

import binascii
import datetime
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto

log = logging.getLogger("router.dtls")

DTLS1_2_VERSION = 0xFEFD
DEFAULT_MTU = 1200
_RECORD_HEADER = 13
_BIO_READ = 65536
_EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"

HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha-1": hashes.SHA1,
    "sha-256": hashes.SHA256,
    "sha-384": hashes.SHA384,
    "sha-512": hashes.SHA512,
}
# The same algorithms by their hashlib names: a peer certificate is checked by hashing its DER bytes.
_HASHLIB_NAMES = {"sha-1": "sha1", "sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512"}

_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:"
    b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA"
)

STATES = ("new", "connecting", "connected", "failed", "closed")


@dataclass(frozen=True, slots=True)
class SrtpProfile:
    """One DTLS-SRTP protection profile: OpenSSL name, libsrtp ``srtp_profile_t`` value, key and salt sizes."""

    openssl_name: bytes
    libsrtp: int
    key_length: int
    salt_length: int


# Preference order: AEAD first (RFC 7714), AES-CM/HMAC-SHA1-80 for peers without GCM.
SRTP_PROFILES = (
    SrtpProfile(b"SRTP_AEAD_AES_128_GCM", 7, 16, 12),
    SrtpProfile(b"SRTP_AES128_CM_SHA1_80", 1, 16, 14),
)
_PROFILES_BY_NAME = {p.openssl_name: p for p in SRTP_PROFILES}


class DtlsError(Exception):
    """A call that does not fit the endpoint's state (keys before connected, data on a closed endpoint)."""


def certificate_fingerprint(cert: x509.Certificate, algorithm: str = "sha-256") -> str:
    """``"AB:CD:..."`` digest of a certificate's DER encoding, as in an SDP ``a=fingerprint`` line."""
    hash_factory = HASHES.get(algorithm.lower())
    if hash_factory is None:
        raise ValueError(f"unknown fingerprint algorithm {algorithm!r}")
    return cert.fingerprint(hash_factory()).hex(":").upper()


class DtlsCertificate:
    """A self-signed ECDSA P-256 certificate and its key; one per worker, shared by its transports."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert
        self._context: SSL.Context | None = None

    @classmethod
    def generate(cls, days: int = 30) -> DtlsCertificate:
        """A fresh key and certificate with a random CN, valid from one day ago for ``days`` days."""
        if days <= 0:
            raise ValueError(f"certificate lifetime must be positive, got {days} days")
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, binascii.hexlify(os.urandom(16)).decode())])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        return certificate_fingerprint(self.cert, algorithm)

    def fingerprints(self) -> list[tuple[str, str]]:
        """(algorithm, value) for every supported algorithm."""
        return [(algorithm, self.fingerprint(algorithm)) for algorithm in HASHES]

    def ssl_context(self) -> SSL.Context:
        """The DTLS context for this certificate (built once). Peer verification is set per connection."""
        if self._context is None:
            ctx = SSL.Context(SSL.DTLS_METHOD)
            ctx.set_min_proto_version(DTLS1_2_VERSION)
            ctx.set_max_proto_version(DTLS1_2_VERSION)
            ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU)
            ctx.use_certificate(self.cert)
            ctx.use_privatekey(self.key)
            ctx.check_privatekey()
            ctx.set_cipher_list(_CIPHERS)
            ctx.set_tlsext_use_srtp(b":".join(p.openssl_name for p in SRTP_PROFILES))
            # One verify callback for every connection of the context: it asks the connection's endpoint (its app
            # data), so a connection needs no callback of its own (pyOpenSSL makes one cffi callback per call).
            ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_peer)
            self._context = ctx
        return self._context


# One byte of a fingerprint as uppercase hex; a value of n bytes is n of these joined by colons.
_HEX_PAIR = "[0-9A-F]{2}"
_FINGERPRINT_RES: dict[int, re.Pattern[str]] = {}


def _fingerprint_re(size: int) -> re.Pattern[str]:
    pattern = _FINGERPRINT_RES.get(size)
    if pattern is None:
        pattern = _FINGERPRINT_RES[size] = re.compile(_HEX_PAIR + f"(?::{_HEX_PAIR}){{{size - 1}}}")
    return pattern


def _normalize_fingerprints(remote_fingerprints: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The list with each algorithm lowercased and each value uppercased and stripped; ValueError for an empty list,
    an unknown algorithm, or a value that is not the algorithm's digest size of colon-separated two-digit hex bytes."""
    if not remote_fingerprints:
        raise ValueError("remote_fingerprints is empty")
    out: list[tuple[str, str]] = []
    for algorithm, value in remote_fingerprints:
        algo = algorithm.lower()
        hash_factory = HASHES.get(algo)
        if hash_factory is None:
            raise ValueError(f"unknown fingerprint algorithm {algorithm!r}")
        text = value.strip().upper()
        size = hash_factory().digest_size
        if _fingerprint_re(size).fullmatch(text) is None:
            raise ValueError(f"{algo} fingerprint must be {size} colon-separated hex bytes, got {value!r}")
        out.append((algo, text))
    return out


class DtlsEndpoint:
    """One DTLS association of a transport. Lifecycle: new -> connecting -> connected -> closed, or -> failed from
    any state before closed; never reused. The client role sends the ClientHello on :meth:`start`; the server role
    waits for it in :meth:`handle`."""

    def __init__(
        self,
        cert: DtlsCertificate,
        role: str,
        remote_fingerprints: list[tuple[str, str]],
        send: Callable[[bytes], None],
        *,
        mtu: int = DEFAULT_MTU,
    ) -> None:
        if role not in ("client", "server"):
            raise ValueError(f"DTLS role must be 'client' or 'server', got {role!r}")
        if not 256 <= mtu <= 65507:
            raise ValueError(f"mtu {mtu} outside 256..65507")
        self.role = role
        self.remote_fingerprints = _normalize_fingerprints(remote_fingerprints)
        # The same list as (hashlib name, digest bytes): a certificate is checked by comparing the digests of its DER
        # encoding, not their text.
        self._expected = [(_HASHLIB_NAMES[algo], bytes.fromhex(value.replace(":", "")))
                          for algo, value in self.remote_fingerprints]
        self._checked: tuple[bytes, bool] | None = None  # (DER, matched) of the last certificate checked
        self.mtu = mtu
        self._send = send
        self.state = "new"
        self.failure_reason: str | None = None
        self.srtp_profile: int | None = None
        self._keys: tuple[bytes, bytes] | None = None
        self._handshake_done = False
        self._fingerprint_mismatch: str | None = None
        self.records_in = 0
        self.records_ignored = 0
        self.on_connected: Callable[[], None] | None = None
        self.on_application_data: Callable[[bytes], None] | None = None
        self.on_state_change: Callable[[str], None] | None = None

        self._ssl = SSL.Connection(cert.ssl_context(), None)
        self._ssl.set_app_data(self)  # the context's verify callback (_verify_peer) calls our _verify
        self._ssl.set_ciphertext_mtu(mtu)
        if role == "client":
            self._ssl.set_connect_state()
        else:
            self._ssl.set_accept_state()

    # ---- fingerprint -------------------------------------------------------------------------------------
    def _matches(self, der: bytes) -> bool:
        """Whether the certificate with this DER encoding has one of the signaled fingerprints. The verify callback
        and the finished handshake check the same certificate (the callback more than once for a self-signed one):
        its digests are computed once, and a certificate with other bytes is hashed afresh."""
        checked = self._checked
        if checked is not None and checked[0] == der:
            return checked[1]
        matched = False
        for name, digest in self._expected:
            if hashlib.new(name, der).digest() == digest:
                matched = True
                break
        self._checked = (der, matched)
        return matched

    def _verify(self, conn: SSL.Connection, cert: Any, errnum: int, depth: int, ok: int) -> bool:
        # Self-signed certificates are expected (errnum 18/19); the SDP fingerprint is what authenticates the peer.
        if depth != 0:
            return True
        try:
            matched = self._matches(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert))
        except Exception as exc:  # never let an exception escape into OpenSSL
            self._fingerprint_mismatch = f"cannot read peer certificate: {exc}"
            return False
        if not matched:
            self._fingerprint_mismatch = "remote certificate does not match the signaled fingerprint"
        return matched

    # ---- state -------------------------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if self.on_state_change is not None:
            self.on_state_change(state)

    def _fail(self, reason: str) -> None:
        log.info("DTLS %s failed: %s", self.role, reason)
        self.failure_reason = reason
        self._keys = None
        self.srtp_profile = None
        self._flush()  # the fatal alert OpenSSL queued, if any
        self._set_state("failed")

    # ---- input -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Begin the handshake: the client sends its ClientHello; the server just starts waiting. Only acts in
        state "new"."""
        if self.state != "new":
            return
        self._set_state("connecting")
        if self.role == "client":
            self._handshake()

    def handle(self, record: bytes) -> None:
        """Feed one datagram of DTLS records (first byte 20..63, RFC 7983). Output leaves through ``send``;
        decrypted application data goes to ``on_application_data`` (only once connected)."""
        if self.state in ("failed", "closed"):
            return
        if not record or not 20 <= record[0] <= 63:
            self.records_ignored += 1
            return
        if self.state == "new":
            if self.role == "client":
                self.records_ignored += 1  # nothing to answer before our ClientHello
                return
            self._set_state("connecting")
        self.records_in += 1
        self._ssl.bio_write(bytes(record))
        if not self._handshake_done:
            self._handshake()  # flushes what it produced, on every path
        if self.state == "connected":
            self._read_application_data()
            self._flush()

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return
        except SSL.Error as exc:
            self._fail(self._fingerprint_mismatch or f"handshake error: {exc}")
            return
        self._handshake_done = True
        self._flush()
        self._complete()

    def _complete(self) -> None:
        cert = self._ssl.get_peer_certificate()
        if cert is None:
            self._fail("peer sent no certificate")
            return
        if not self._matches(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)):
            self._fail("remote certificate does not match the signaled fingerprint")
            return
        profile = _PROFILES_BY_NAME.get(self._ssl.get_selected_srtp_profile())
        if profile is None:
            self._fail("no SRTP profile negotiated (use_srtp missing)")
            return
        material = self._ssl.export_keying_material(_EXPORTER_LABEL, 2 * (profile.key_length + profile.salt_length))
        # RFC 5764 §4.2: client_key | server_key | client_salt | server_salt.
        k, s = profile.key_length, profile.salt_length
        client = material[:k] + material[2 * k : 2 * k + s]
        server = material[k : 2 * k] + material[2 * k + s : 2 * k + 2 * s]
        self._keys = (client, server) if self.role == "client" else (server, client)
        self.srtp_profile = profile.libsrtp
        self._set_state("connected")
        if self.on_connected is not None:
            self.on_connected()

    def _read_application_data(self) -> None:
        while self.state == "connected":
            try:
                data = self._ssl.recv(65536)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                # close_notify from the peer: answer it and close.
                self._shutdown()
                self._set_state("closed")
                return
            except SSL.Error as exc:
                self._fail(f"record error: {exc}")
                return
            if data and self.on_application_data is not None:
                self.on_application_data(data)

    def handle_timeout(self) -> None:
        """Call when :meth:`next_timeout_s` has elapsed: retransmits the last flight if OpenSSL's timer expired."""
        if self.state != "connecting":
            return
        try:
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(f"handshake timeout: {exc}")
            return
        self._flush()

    def next_timeout_s(self) -> float | None:
        """Seconds until :meth:`handle_timeout` is due, or None when no timer runs."""
        if self.state != "connecting":
            return None
        timeout: float | None = self._ssl.DTLSv1_get_timeout()
        return timeout

    # ---- output ------------------------------------------------------------------------------------------
    def srtp_keys(self) -> tuple[bytes, bytes]:
        """(local_key, remote_key), each master key || master salt; only in state "connected"."""
        if self.state != "connected" or self._keys is None:
            raise DtlsError(f"SRTP keys are not available in state {self.state!r}")
        return self._keys

    def send_application_data(self, data: bytes) -> None:
        if self.state != "connected":
            raise DtlsError(f"cannot send application data in state {self.state!r}")
        self._ssl.send(data)
        self._flush()

    def close(self) -> None:
        """Send close_notify if a handshake was under way or done, then stay closed. Idempotent."""
        if self.state in ("closed", "failed"):
            return
        if self.state in ("connecting", "connected"):
            self._shutdown()
        self._keys = None
        self._set_state("closed")

    def _shutdown(self) -> None:
        try:
            self._ssl.shutdown()
        except SSL.Error:
            pass
        self._flush()

    def _flush(self) -> None:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._ssl.bio_read(_BIO_READ)
            except SSL.Error:  # nothing pending
                break
            if not chunk:
                break
            chunks.append(chunk)
            if len(chunk) < _BIO_READ:
                break  # a memory BIO returns all it holds up to the size asked: it is empty now
        if not chunks:
            return
        buf = b"".join(chunks)
        datagram = bytearray()
        pos = 0
        while pos < len(buf):
            if len(buf) - pos >= _RECORD_HEADER:
                end = pos + _RECORD_HEADER + int.from_bytes(buf[pos + 11 : pos + 13], "big")
            else:
                end = len(buf)
            record = buf[pos:end]
            if datagram and len(datagram) + len(record) > self.mtu:
                self._send(bytes(datagram))
                datagram = bytearray()
            datagram += record
            pos = end
        if datagram:
            self._send(bytes(datagram))


def _verify_peer(conn: SSL.Connection, cert: Any, errnum: int, depth: int, ok: int) -> bool:
    """The verify callback of :meth:`DtlsCertificate.ssl_context`: the connection's :class:`DtlsEndpoint` decides; a
    connection without one (made from the context by other code that set no callback of its own) is refused."""
    endpoint = conn.get_app_data()
    if not isinstance(endpoint, DtlsEndpoint):
        return False
    return endpoint._verify(conn, cert, errnum, depth, ok)
