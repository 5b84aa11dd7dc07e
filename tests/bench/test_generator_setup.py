"""The join generator's shared set-up state: one DTLS client context per run still checks each server's own
fingerprint, the signal client skips decoding only the room broadcasts it never acts on, the ICE check is the
request aioice would build, and a participant's inbox hands out datagrams in order or times out."""

from __future__ import annotations

import asyncio

import pytest
from aioice import stun
from livekit.protocol import models, rtc
from OpenSSL import SSL

from bench.lk_client import _IGNORED_TAGS
from bench.peer import Credentials, Inbox, ServerParams, _ServerCheck, binding_request, client_context, integrity_ok
from router.dtls import DtlsCertificate


def _step(conn: SSL.Connection) -> bool:
    try:
        conn.do_handshake()
        return True
    except SSL.WantReadError:
        return False


def _move(source: SSL.Connection, dest: SSL.Connection) -> bool:
    try:
        data = source.bio_read(65536)
    except SSL.WantReadError:
        return False
    if data:
        dest.bio_write(data)
    return bool(data)


def _handshake(client: SSL.Connection, server: SSL.Connection) -> None:
    """Memory-BIO handshake: each end runs when it has something to read; raises SSL.Error when one fails."""
    client_done = _step(client)
    server_done = False
    for _ in range(20):
        if _move(client, server):
            server_done = _step(server)
        if _move(server, client):
            client_done = _step(client)
        if client_done and server_done:
            return
    raise AssertionError("handshake did not finish")


def _server() -> tuple[SSL.Connection, str]:
    certificate = DtlsCertificate.generate()
    conn = SSL.Connection(certificate.ssl_context(), None)
    conn.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)  # as a worker asks
    conn.set_ciphertext_mtu(1200)  # the context does not query the MTU (router/dtls.py)
    conn.set_accept_state()
    return conn, certificate.fingerprint("sha-256").upper()


def test_one_client_context_is_shared_and_each_handshake_checks_its_own_server() -> None:
    credentials = Credentials.generate()
    ctx = client_context(credentials, "cm80")
    assert client_context(credentials, "cm80") is ctx
    assert client_context(credentials, "gcm") is not ctx
    assert client_context(Credentials.generate(), "cm80") is not ctx
    (first, first_fp), (second, second_fp) = _server(), _server()
    good = SSL.Connection(ctx, None)
    good.set_app_data(_ServerCheck(first_fp))
    good.set_connect_state()
    _handshake(good, first)
    assert good.get_selected_srtp_profile() == b"SRTP_AES128_CM_SHA1_80"
    wrong = SSL.Connection(ctx, None)
    check = _ServerCheck(first_fp)  # the second server presents another certificate
    wrong.set_app_data(check)
    wrong.set_connect_state()
    with pytest.raises(SSL.Error):
        _handshake(wrong, second)
    assert check.mismatch == second_fp


@pytest.mark.parametrize("response, skipped", [
    (rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[models.ParticipantInfo(sid="PA_x")])), True),
    (rtc.SignalResponse(room_update=rtc.RoomUpdate(room=models.Room(name="r"))), True),
    (rtc.SignalResponse(speakers_changed=rtc.SpeakersChanged(speakers=[models.SpeakerInfo(sid="PA_x")])), True),
    (rtc.SignalResponse(connection_quality=rtc.ConnectionQualityUpdate(updates=[rtc.ConnectionQualityInfo()])),
     True),
    (rtc.SignalResponse(offer=rtc.SessionDescription(type="offer", sdp="v=0")), False),
    (rtc.SignalResponse(answer=rtc.SessionDescription(type="answer", sdp="v=0")), False),
    (rtc.SignalResponse(leave=rtc.LeaveRequest()), False),
    (rtc.SignalResponse(track_published=rtc.TrackPublishedResponse(cid="c")), False),
    (rtc.SignalResponse(join=rtc.JoinResponse(room=models.Room(name="r"))), False),
])
def test_signal_client_skips_decoding_exactly_the_broadcasts(response: rtc.SignalResponse, skipped: bool) -> None:
    assert (response.SerializeToString()[:1] in _IGNORED_TAGS) is skipped


@pytest.mark.parametrize("nominate", [True, False])
def test_binding_request_is_the_bytes_aioice_builds(nominate: bool) -> None:
    """The one-pass STUN packing: same attributes, MESSAGE-INTEGRITY and FINGERPRINT as ``aioice.stun.Message``."""
    server = ServerParams("srvu", "server-password-0123456789", "AA:BB", "127.0.0.1", 5000)
    transaction = bytes(range(12))
    ours = binding_request(server, "cliu", 0x0123456789ABCDEF, nominate=nominate, transaction=transaction)
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=transaction)
    msg.attributes["USERNAME"] = "srvu:cliu"
    msg.attributes["PRIORITY"] = (110 << 24) | (65535 << 8) | 255
    msg.attributes["ICE-CONTROLLING"] = 0x0123456789ABCDEF
    if nominate:
        msg.attributes["USE-CANDIDATE"] = None
    msg.add_message_integrity(server.ice_pwd.encode())
    msg.add_fingerprint()
    assert ours == bytes(msg)
    assert integrity_ok(ours, server.ice_pwd.encode()) and not integrity_ok(ours, b"another password")
    parsed = stun.parse_message(ours)
    assert ("USE-CANDIDATE" in parsed.attributes) is nominate
    assert binding_request(server, "cliu", 1, nominate=True)[8:20] != binding_request(server, "cliu", 1,
                                                                                      nominate=True)[8:20]


def test_inbox_returns_in_order_wakes_a_waiter_and_times_out() -> None:
    async def main() -> None:
        inbox = Inbox()
        inbox.put_nowait(b"a")
        inbox.put_nowait(b"b")
        assert [await inbox.get(1.0), await inbox.get(1.0)] == [b"a", b"b"]
        asyncio.get_running_loop().call_later(0.01, inbox.put_nowait, b"c")
        assert await inbox.get(5.0) == b"c"
        with pytest.raises(TimeoutError):
            await inbox.get(0.01)
        inbox.put_nowait(b"d")  # a datagram after a timeout is still there for the next get
        assert await inbox.get(0.01) == b"d"

    asyncio.run(main())
