"""SRTP through the C function pointers (fastpath.srtp) against pylibsrtp's own Session, both ways."""

from __future__ import annotations

import os

import pytest
from pylibsrtp import Policy, Session

import fastpath
from tests import packets

PROFILES = [fastpath.PROFILE_AES128_CM_SHA1_80, fastpath.PROFILE_AEAD_AES_128_GCM,
            fastpath.PROFILE_AEAD_AES_256_GCM]


def py_session(profile: int, key: bytes, outbound: bool) -> Session:
    return Session(Policy(key=key, srtp_profile=profile,
                          ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND))


@pytest.mark.parametrize("profile", PROFILES)
def test_protect_in_c_unprotect_in_pylibsrtp(profile: int) -> None:
    key = os.urandom(fastpath.KEY_LENGTHS[profile])
    c_tx = fastpath.SrtpContext(profile, key, True)
    py_rx = py_session(profile, key, False)
    for seq in range(5):
        pkt = packets.rtp(96, seq, 1000, 0x1234, os.urandom(200))
        assert py_rx.unprotect(c_tx.protect(pkt)) == pkt
    rtcp = packets.rtcp_pli(1, 2)
    assert py_rx.unprotect_rtcp(c_tx.protect_rtcp(rtcp)) == rtcp


@pytest.mark.parametrize("profile", PROFILES)
def test_protect_in_pylibsrtp_unprotect_in_c(profile: int) -> None:
    key = os.urandom(fastpath.KEY_LENGTHS[profile])
    py_tx = py_session(profile, key, True)
    c_rx = fastpath.SrtpContext(profile, key, False)
    pkt = packets.rtp(96, 7, 1000, 0x1234, os.urandom(1200))
    assert c_rx.unprotect(py_tx.protect(pkt)) == pkt
    rtcp = packets.rtcp_rr(5)
    assert c_rx.unprotect_rtcp(py_tx.protect_rtcp(rtcp)) == rtcp


def test_forged_tag_and_replay_are_rejected() -> None:
    key = os.urandom(30)
    tx = fastpath.SrtpContext(fastpath.PROFILE_AES128_CM_SHA1_80, key, True)
    rx = fastpath.SrtpContext(fastpath.PROFILE_AES128_CM_SHA1_80, key, False)
    wire = tx.protect(packets.rtp(96, 1, 1, 9))
    forged = bytearray(wire)
    forged[-1] ^= 1
    with pytest.raises(ValueError, match="^srtp: authentication failure$"):
        rx.unprotect(bytes(forged))
    rx.unprotect(wire)
    with pytest.raises(ValueError, match="^srtp: replay check failed"):
        rx.unprotect(wire)


def test_outbound_allows_repeat_for_retransmission() -> None:
    tx = fastpath.SrtpContext(fastpath.PROFILE_AEAD_AES_128_GCM, os.urandom(28), True)
    pkt = packets.rtp(96, 1, 1, 9)
    assert tx.protect(pkt) == tx.protect(pkt)


def test_remove_stream_resets_replay_state() -> None:
    key = os.urandom(30)
    tx = py_session(fastpath.PROFILE_AES128_CM_SHA1_80, key, True)
    rx = fastpath.SrtpContext(fastpath.PROFILE_AES128_CM_SHA1_80, key, False)
    rx.unprotect(tx.protect(packets.rtp(96, 10, 1, 9)))
    assert rx.remove_stream(9) is True
    assert rx.remove_stream(9) is False


@pytest.mark.parametrize(("profile", "key", "reason"), [
    (2, b"x" * 30, "srtp: unsupported profile 2"),
    (fastpath.PROFILE_AES128_CM_SHA1_80, b"x" * 28, "srtp: key must be 30 bytes for profile 1, got 28"),
])
def test_bad_parameters(profile: int, key: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{reason}$"):
        fastpath.SrtpContext(profile, key, True)
