"""DTLS-SRTP endpoints back to back in memory: handshake, fingerprint check, key export, data, close (RFC 5764,
docs/RELIABILITY.md, C1-C3 and C5)."""

from __future__ import annotations

import time
from collections import deque

import pylibsrtp
import pytest

from router.dtls import DtlsCertificate, DtlsEndpoint, DtlsError

# Generating a key is the slow part; share two certificates across the module.
CLIENT_CERT = DtlsCertificate.generate()
SERVER_CERT = DtlsCertificate.generate()


class Link:
    """Two endpoints joined by in-memory queues; ``drop`` loses datagrams from one side on purpose."""

    def __init__(
        self, client_fps: list[tuple[str, str]] | None = None, server_fps: list[tuple[str, str]] | None = None
    ):
        self.to_server: deque[bytes] = deque()
        self.to_client: deque[bytes] = deque()
        self.drop_to_server = 0
        self.client = DtlsEndpoint(
            CLIENT_CERT, "client", client_fps or [("sha-256", SERVER_CERT.fingerprint())], self._client_send
        )
        self.server = DtlsEndpoint(
            SERVER_CERT, "server", server_fps or [("sha-256", CLIENT_CERT.fingerprint())], self.to_client.append
        )
        self.client_data: list[bytes] = []
        self.server_data: list[bytes] = []
        self.client.on_application_data = self.client_data.append
        self.server.on_application_data = self.server_data.append
        self.datagrams: list[bytes] = []

    def _client_send(self, data: bytes) -> None:
        self.datagrams.append(data)
        if self.drop_to_server > 0:
            self.drop_to_server -= 1
            return
        self.to_server.append(data)

    def run(self) -> None:
        for _ in range(100):
            if not self.to_server and not self.to_client:
                return
            while self.to_server:
                self.server.handle(self.to_server.popleft())
            while self.to_client:
                self.client.handle(self.to_client.popleft())
        raise AssertionError("link did not settle")

    def connect(self) -> None:
        self.client.start()
        self.run()


def srtp_pair(profile: int, protect_key: bytes, unprotect_key: bytes) -> tuple[pylibsrtp.Session, pylibsrtp.Session]:
    tx = pylibsrtp.Session(
        pylibsrtp.Policy(key=protect_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    )
    rx = pylibsrtp.Session(
        pylibsrtp.Policy(key=unprotect_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
    )
    return tx, rx


RTP = bytes.fromhex("80 60 00 01 00 00 00 64 12 34 56 78") + b"payload-bytes" * 4


def test_correct_fingerprint_connects_and_wrong_one_fails() -> None:
    # C2: the positive and the negative case in one test, so the check cannot be silently disabled.
    states: list[str] = []
    good = Link()
    good.server.on_state_change = states.append
    connected: list[str] = []
    good.client.on_connected = lambda: connected.append("client")
    good.server.on_connected = lambda: connected.append("server")
    good.connect()
    assert good.client.state == good.server.state == "connected"
    assert sorted(connected) == ["client", "server"]
    assert states == ["connecting", "connected"]
    c_local, c_remote = good.client.srtp_keys()
    s_local, s_remote = good.server.srtp_keys()
    assert c_local == s_remote and c_remote == s_local and c_local != c_remote
    assert good.client.srtp_profile == good.server.srtp_profile == 7  # AEAD_AES_128_GCM preferred
    assert len(c_local) == 16 + 12

    # One hex digit of the server's fingerprint changed on the client side.
    fp = SERVER_CERT.fingerprint()
    wrong = fp[:-1] + ("0" if fp[-1] != "0" else "1")
    bad = Link(client_fps=[("sha-256", wrong)])
    bad.client.on_connected = lambda: connected.append("bad client")
    bad.connect()
    assert bad.client.state == "failed"
    assert bad.client.failure_reason == "remote certificate does not match the signaled fingerprint"
    assert bad.server.state == "failed"  # the client's bad_certificate alert reaches the server
    with pytest.raises(DtlsError, match="^SRTP keys are not available in state 'failed'$"):
        bad.client.srtp_keys()
    with pytest.raises(DtlsError):
        bad.server.srtp_keys()
    with pytest.raises(DtlsError, match="^cannot send application data in state 'failed'$"):
        bad.client.send_application_data(b"x")
    assert "bad client" not in connected
    assert bad.client_data == [] and bad.server_data == []


def test_wrong_fingerprint_on_the_server_side_fails_too() -> None:
    fp = CLIENT_CERT.fingerprint("sha-256")
    wrong = fp.replace(fp[0], "F" if fp[0] != "F" else "E", 1)
    link = Link(server_fps=[("sha-256", wrong)])
    link.connect()
    assert link.server.state == "failed"
    assert link.client.state == "failed"
    assert link.server.failure_reason == "remote certificate does not match the signaled fingerprint"
    with pytest.raises(DtlsError):
        link.server.srtp_keys()


def test_fingerprint_formats_are_case_insensitive_and_any_algorithm_may_match() -> None:
    lower = [("SHA-512", SERVER_CERT.fingerprint("sha-512").lower())]
    link = Link(client_fps=lower)
    link.connect()
    assert link.client.state == "connected"
    # Several fingerprints: an unrelated certificate's plus the right sha-1 one.
    other = DtlsCertificate.generate()
    link = Link(client_fps=[("sha-256", other.fingerprint()), ("sha-1", SERVER_CERT.fingerprint("sha-1"))])
    link.connect()
    assert link.client.state == "connected"


@pytest.mark.parametrize(
    ("fps", "message"),
    [
        ([], "^remote_fingerprints is empty$"),
        ([("md5", "AB:CD")], "^unknown fingerprint algorithm 'md5'$"),
        ([("sha-256", "AB:CD")], "^sha-256 fingerprint must be 32 colon-separated hex bytes, got 'AB:CD'$"),
        ([("sha-1", ":".join(["ZZ"] * 20))], "^sha-1 fingerprint must be 20 colon-separated hex bytes"),
    ],
)
def test_bad_fingerprint_lists_are_rejected_at_construction(fps: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DtlsEndpoint(SERVER_CERT, "server", fps, lambda _: None)


def test_bad_role_is_rejected() -> None:
    with pytest.raises(ValueError, match="^DTLS role must be 'client' or 'server', got 'auto'$"):
        DtlsEndpoint(SERVER_CERT, "auto", [("sha-256", CLIENT_CERT.fingerprint())], lambda _: None)


@pytest.mark.parametrize("role_of_sender", ["client", "server"])
def test_exported_keys_work_with_libsrtp(role_of_sender: str) -> None:
    link = Link()
    link.connect()
    sender, receiver = (link.client, link.server) if role_of_sender == "client" else (link.server, link.client)
    assert sender.srtp_profile is not None
    tx, _ = srtp_pair(sender.srtp_profile, sender.srtp_keys()[0], sender.srtp_keys()[1])
    _, rx = srtp_pair(receiver.srtp_profile or 0, receiver.srtp_keys()[0], receiver.srtp_keys()[1])
    protected = tx.protect(RTP)
    assert protected != RTP
    assert rx.unprotect(protected) == RTP
    # The sender's own remote key must not decrypt what it sent (keys are directional).
    _, own_rx = srtp_pair(sender.srtp_profile, sender.srtp_keys()[0], sender.srtp_keys()[1])
    with pytest.raises(pylibsrtp.Error):
        own_rx.unprotect(tx.protect(RTP[:3] + b"\x02" + RTP[4:]))


def test_application_data_both_ways_and_close_notify() -> None:
    link = Link()
    link.connect()
    link.client.send_application_data(b"hello server")
    link.server.send_application_data(b"hello client")
    link.run()
    assert link.server_data == [b"hello server"]
    assert link.client_data == [b"hello client"]
    closed: list[str] = []
    link.server.on_state_change = closed.append
    link.client.close()
    link.run()
    assert link.client.state == "closed" and link.server.state == "closed"
    assert closed == ["closed"]
    with pytest.raises(DtlsError, match="^SRTP keys are not available in state 'closed'$"):
        link.server.srtp_keys()
    link.client.close()  # idempotent


def test_retransmission_recovers_a_lost_flight() -> None:
    link = Link()
    link.drop_to_server = 1  # the ClientHello is lost
    link.client.start()
    link.run()
    assert link.client.state == "connecting"
    timeout = link.client.next_timeout_s()
    assert timeout is not None and 0 < timeout <= 1.0
    assert link.server.next_timeout_s() is None  # the server has seen nothing yet, so no timer
    # Before the timer expires, handle_timeout resends nothing.
    sent = len(link.datagrams)
    link.client.handle_timeout()
    assert len(link.datagrams) == sent
    # OpenSSL's DTLS timer runs on its own clock (1 s initial), so wait it out once, then the owner's call resends.
    time.sleep(timeout + 0.05)
    link.client.handle_timeout()
    assert len(link.datagrams) == sent + 1
    link.run()
    assert link.client.state == link.server.state == "connected"
    assert link.client.next_timeout_s() is None


def test_datagrams_respect_the_mtu_and_hold_whole_records() -> None:
    link = Link()
    link.connect()
    assert link.client.state == "connected"
    for datagram in link.datagrams:
        assert len(datagram) <= link.client.mtu
        pos = 0
        while pos < len(datagram):  # every datagram is a whole number of DTLS 1.2 records
            # DTLS 1.2 records; the first ClientHello may carry the DTLS 1.0 record version (RFC 6347 §4.1).
            assert 20 <= datagram[pos] <= 63 and datagram[pos + 1 : pos + 3] in (b"\xfe\xfd", b"\xfe\xff")
            pos += 13 + int.from_bytes(datagram[pos + 11 : pos + 13], "big")
        assert pos == len(datagram)


def test_non_dtls_input_and_early_records_are_ignored() -> None:
    link = Link()
    link.client.handle(b"\x16\xfe\xfd" + bytes(20))  # client not started: nothing to answer
    link.server.handle(b"\x80" + bytes(20))  # RTP first byte
    link.server.handle(b"")
    assert link.client.records_ignored == 1 and link.server.records_ignored == 2
    assert link.client.state == link.server.state == "new"
    with pytest.raises(DtlsError, match="^cannot send application data in state 'new'$"):
        link.client.send_application_data(b"x")


def test_garbage_during_handshake_fails_cleanly() -> None:
    link = Link()
    # A record whose length field overruns the datagram is discarded by OpenSSL (RFC 6347 §4.1.2.7).
    link.server.handle(b"\x16\xfe\xfd" + b"\xff" * 60)
    assert link.server.state == "connecting" and link.to_client == deque()
    # A well-formed record carrying a junk handshake message is fatal: an alert goes out, the endpoint fails.
    link.server.handle(b"\x16\xfe\xfd" + bytes(8) + b"\x00\x05" + b"\x01" * 5)
    assert link.server.state == "failed"
    assert (link.server.failure_reason or "").startswith("handshake error:")
    assert link.to_client and link.to_client[0][0] == 21  # alert record
    with pytest.raises(DtlsError):
        link.server.srtp_keys()


def test_certificate_fingerprints() -> None:
    fps = dict(SERVER_CERT.fingerprints())
    assert set(fps) == {"sha-1", "sha-256", "sha-384", "sha-512"}
    assert len(fps["sha-256"].split(":")) == 32 and fps["sha-256"] == fps["sha-256"].upper()
    with pytest.raises(ValueError, match="^unknown fingerprint algorithm 'md5'$"):
        SERVER_CERT.fingerprint("md5")


def test_handshake_without_use_srtp_fails() -> None:
    # A bare pyOpenSSL client that does not offer use_srtp (C5): the server must not report "connected".
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(CLIENT_CERT.cert)
    ctx.use_privatekey(CLIENT_CERT.key)
    ctx.set_verify(SSL.VERIFY_PEER, lambda *args: True)
    raw = SSL.Connection(ctx, None)
    raw.set_connect_state()
    to_client: deque[bytes] = deque()
    server = DtlsEndpoint(SERVER_CERT, "server", [("sha-256", CLIENT_CERT.fingerprint())], to_client.append)
    for _ in range(10):
        try:
            raw.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            out = raw.bio_read(65536)
        except SSL.WantReadError:
            out = b""
        if out:
            server.handle(out)
        while to_client:
            raw.bio_write(to_client.popleft())
        if server.state != "connecting":
            break
    assert server.state == "failed"
    assert server.failure_reason == "no SRTP profile negotiated (use_srtp missing)"
    with pytest.raises(DtlsError):
        server.srtp_keys()


@pytest.mark.parametrize("algorithm", ["sha-1", "sha-256", "sha-384", "sha-512"])
def test_fingerprint_text_is_the_sdp_form(algorithm: str) -> None:
    # The a=fingerprint form (RFC 8122 section 5): every digest byte as two uppercase hex digits, colon-separated.
    from router.dtls import HASHES, certificate_fingerprint

    digest = SERVER_CERT.cert.fingerprint(HASHES[algorithm]())
    assert certificate_fingerprint(SERVER_CERT.cert, algorithm) == ":".join(f"{b:02X}" for b in digest)
    assert certificate_fingerprint(SERVER_CERT.cert, algorithm.upper()) == SERVER_CERT.fingerprint(algorithm)


_SHA1 = ":".join(f"{b:02X}" for b in range(0xA0, 0xB4))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_SHA1, _SHA1),
        (_SHA1.lower(), _SHA1),
        (f"  {_SHA1}\n", _SHA1),
        (_SHA1[:-3], None),  # 19 bytes
        (_SHA1 + ":00", None),  # 21 bytes
        (_SHA1 + ":", None),
        (":" + _SHA1, None),
        (_SHA1.replace(":", "", 1), None),  # one byte of four digits
        (_SHA1.replace("A0:", "A:0", 1), None),
        (_SHA1.replace("A0", "G0", 1), None),
        (_SHA1.replace("A0", "\u0660\u0661", 1), None),  # Arabic-Indic digits are no hex digits
        (_SHA1.replace(":", "-"), None),
        (_SHA1.replace("A0:", "A0::", 1), None),
    ],
)
def test_fingerprint_values_are_normalized_or_rejected(value: str, expected: str | None) -> None:
    from router.dtls import _normalize_fingerprints

    if expected is None:
        with pytest.raises(ValueError, match="^sha-1 fingerprint must be 20 colon-separated hex bytes"):
            _normalize_fingerprints([("SHA-1", value)])
    else:
        assert _normalize_fingerprints([("SHA-1", value)]) == [("sha-1", expected)]


def test_handshake_flights_are_sent_whole() -> None:
    # Every record OpenSSL wrote leaves in a datagram: the client's datagrams hold whole records (13-byte header
    # and the length it announces) and the handshake completes with nothing left behind.
    link = Link()
    link.connect()
    assert link.client.state == link.server.state == "connected"
    for datagram in link.datagrams:
        pos = 0
        while pos < len(datagram):
            pos += 13 + int.from_bytes(datagram[pos + 11 : pos + 13], "big")
        assert pos == len(datagram)
    assert not link.to_client and not link.to_server


def test_endpoints_sharing_a_context_each_check_their_own_fingerprints() -> None:
    # The verify callback is the context's (one per certificate); it must ask the endpoint of the connection being
    # verified. Two handshakes under way at once on the same server certificate: only the one expecting the
    # client's certificate connects.
    other = DtlsCertificate.generate()
    good = Link()
    bad = Link(server_fps=[("sha-256", other.fingerprint())])
    good.client.start()
    bad.client.start()
    for _ in range(20):
        for link in (bad, good):
            while link.to_server:
                link.server.handle(link.to_server.popleft())
            while link.to_client:
                link.client.handle(link.to_client.popleft())
    assert good.server.state == good.client.state == "connected"
    assert bad.server.state == "failed"
    assert bad.server.failure_reason == "remote certificate does not match the signaled fingerprint"


def test_a_connection_of_the_context_without_an_endpoint_is_refused() -> None:
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(CLIENT_CERT.cert)
    ctx.use_privatekey(CLIENT_CERT.key)
    ctx.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    ctx.set_verify(SSL.VERIFY_PEER, lambda *args: True)
    client = SSL.Connection(ctx, None)
    client.set_connect_state()
    client.set_ciphertext_mtu(1200)
    server = SSL.Connection(SERVER_CERT.ssl_context(), None)  # no DtlsEndpoint, no callback of its own
    server.set_accept_state()
    server.set_ciphertext_mtu(1200)  # the context does not query the MTU
    failed: SSL.Connection | None = None
    reason = ""
    for _ in range(10):
        for conn, peer in ((client, server), (server, client)):
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error as exc:
                failed, reason = conn, str(exc)
                break
            while True:
                try:
                    peer.bio_write(conn.bio_read(65536))
                except SSL.WantReadError:
                    break
        if failed is not None:
            break
    assert failed is server and "certificate verify failed" in reason  # refused the client's certificate


def test_the_peer_certificate_is_hashed_once_per_handshake(monkeypatch: pytest.MonkeyPatch) -> None:
    # The verify callback (twice at depth 0 for a self-signed certificate) and the finished handshake check the same
    # certificate: its digest is computed once per endpoint.
    import router.dtls

    calls: list[str] = []
    real_new = router.dtls.hashlib.new

    def counting_new(name: str, data: bytes = b"") -> object:
        calls.append(name)
        return real_new(name, data)

    monkeypatch.setattr(router.dtls.hashlib, "new", counting_new)
    link = Link()
    link.connect()
    assert link.client.state == link.server.state == "connected"
    assert calls == ["sha256", "sha256"]  # one per endpoint


def test_a_finished_handshake_with_another_certificate_than_the_verified_one_fails() -> None:
    # The second check hashes what the finished handshake reports, not the verify callback's answer: a peer
    # certificate with other bytes than the one verified is refused before any key is exported.
    from OpenSSL import crypto

    other = crypto.X509.from_cryptography(DtlsCertificate.generate().cert)
    link = Link()
    link.client._ssl.get_peer_certificate = lambda: other  # type: ignore[method-assign]
    link.connect()
    assert link.client.state == "failed"
    assert link.client.failure_reason == "remote certificate does not match the signaled fingerprint"
    with pytest.raises(DtlsError):
        link.client.srtp_keys()
