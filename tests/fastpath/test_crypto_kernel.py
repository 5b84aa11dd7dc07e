"""fastpath.crypto_kernel against libsrtp's own HMAC-SHA1 and AES-ICM-128, which a second interpreter keeps
(``install(srtp_crypto="libsrtp")``): the same keys and packets must give the same bytes on the wire, both ways, for
every profile (the GCM profiles keep libsrtp's cipher but derive their keys with AES-ICM)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

import fastpath
from fastpath import crypto_kernel
from tests import packets

CM80 = fastpath.PROFILE_AES128_CM_SHA1_80
PROFILES = [CM80, fastpath.PROFILE_AEAD_AES_128_GCM, fastpath.PROFILE_AEAD_AES_256_GCM]

# Run in a child that keeps libsrtp's primitives: protect the given packets, unprotect ours.
_STOCK = r"""
import json, sys
import fastpath
from fastpath import crypto_kernel
crypto_kernel.install(srtp_crypto="libsrtp")
job = json.loads(sys.stdin.read())
key = bytes.fromhex(job["key"])
tx = fastpath.SrtpContext(job["profile"], key, True)
rx = fastpath.SrtpContext(job["profile"], key, False)
print(json.dumps({
    "installed": crypto_kernel.installed(),
    "rtp": [tx.protect(bytes.fromhex(p)).hex() for p in job["rtp"]],
    "rtcp": [tx.protect_rtcp(bytes.fromhex(p)).hex() for p in job["rtcp"]],
    "unprotected": [rx.unprotect(bytes.fromhex(p)).hex() for p in job["ours"]],
}))
"""

# Payload sizes around AES's 16-byte blocks and SHA-1's 64-byte ones (with the 12-byte header and 4-byte ROC).
PAYLOAD_SIZES = [0, 1, 47, 48, 49, 51, 52, 111, 112, 500, 1188, 1288]


def stock_libsrtp(profile: int, key: bytes, rtp: list[bytes], rtcp: list[bytes], ours: list[bytes]) -> dict:
    job = {"profile": profile, "key": key.hex(), "rtp": [p.hex() for p in rtp], "rtcp": [p.hex() for p in rtcp],
           "ours": [p.hex() for p in ours]}
    done = subprocess.run([sys.executable, "-c", _STOCK], input=json.dumps(job), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_this_process_uses_the_fast_path_primitives() -> None:
    fastpath.SrtpContext(CM80, os.urandom(30), True)  # the first session installs the defaults, if nothing did
    status = crypto_kernel.installed()
    assert set(status) == {"hmac_sha1", "aes_icm_128"}
    # CI and these hosts have AES-NI; each replacement also passed libsrtp's own known-answer test to get here.
    assert all(provider.startswith("mediarouter") for provider in status.values()), status
    assert crypto_kernel.install() == status  # a second install changes nothing
    with pytest.raises(RuntimeError, match=r"^the SRTP crypto kernel is installed already \(srtp_crypto="
                                           r"'mediarouter', hmac_batch=True\); install\(\) must come before"):
        crypto_kernel.install(srtp_crypto="libsrtp")
    with pytest.raises(ValueError, match="^srtp_crypto must be one of mediarouter, libsrtp, not 'openssl'$"):
        crypto_kernel.install(srtp_crypto="openssl")
    assert crypto_kernel.installed() == status


def _installed_in_a_child(code: str) -> dict[str, str]:
    script = ("import fastpath, json, os\nfrom fastpath import crypto_kernel\n" + code
              + "\nprint(json.dumps(crypto_kernel.installed()))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_importing_installs_nothing_and_the_first_session_installs_the_defaults() -> None:
    assert set(_installed_in_a_child("").values()) == {"libsrtp (not installed)"}
    status = _installed_in_a_child("fastpath.SrtpContext(fastpath.PROFILE_AES128_CM_SHA1_80, os.urandom(30), True)")
    assert all(provider.startswith("mediarouter") for provider in status.values()), status
    assert "tags in batches of 4" in status["hmac_sha1"]


@pytest.mark.parametrize("profile", PROFILES)
def test_wire_bytes_equal_libsrtp_own_primitives_for_rtp_and_rtcp_both_ways(profile: int) -> None:
    key = os.urandom(fastpath.KEY_LENGTHS[profile])
    rtp = [packets.rtp(96, seq, 3000 * seq, 0x51A7E, os.urandom(size)) for seq, size in enumerate(PAYLOAD_SIZES)]
    rtcp = [packets.rtcp_pli(1, 2), packets.rtcp_rr(5), packets.rtcp_nack(1, 2, list(range(40)))]
    ours_tx = fastpath.SrtpContext(profile, key, True)
    ours_wire = [ours_tx.protect(p) for p in rtp]
    ours_rtcp = [ours_tx.protect_rtcp(p) for p in rtcp]

    stock = stock_libsrtp(profile, key, rtp, rtcp, ours_wire)

    assert set(stock["installed"].values()) == {"libsrtp (srtp_crypto=libsrtp)"}
    assert [p.hex() for p in ours_wire] == stock["rtp"]
    assert [p.hex() for p in ours_rtcp] == stock["rtcp"]
    assert stock["unprotected"] == [p.hex() for p in rtp]
    ours_rx = fastpath.SrtpContext(profile, key, False)
    assert [ours_rx.unprotect(bytes.fromhex(p)) for p in stock["rtp"]] == rtp
    assert [ours_rx.unprotect_rtcp(bytes.fromhex(p)) for p in stock["rtcp"]] == rtcp


@pytest.mark.parametrize("profile", [CM80, fastpath.PROFILE_AEAD_AES_128_GCM])
def test_a_tag_from_another_key_or_a_changed_byte_fails_authentication(profile: int) -> None:
    key = os.urandom(fastpath.KEY_LENGTHS[profile])
    wire = fastpath.SrtpContext(profile, key, True).protect(packets.rtp(96, 1, 1, 9, os.urandom(300)))
    tag = 10 if profile == CM80 else 16
    for position in (2, 12, len(wire) - tag - 1, len(wire) - 1):  # header, payload, ciphertext end, tag
        changed = bytearray(wire)
        changed[position] ^= 0x80
        with pytest.raises(ValueError, match="^srtp: authentication failure$"):
            fastpath.SrtpContext(profile, key, False).unprotect(bytes(changed))
    with pytest.raises(ValueError, match="^srtp: authentication failure$"):
        fastpath.SrtpContext(profile, key, False).unprotect(wire[:-tag])  # no tag at all
    other = bytes([key[0] ^ 1]) + key[1:]
    with pytest.raises(ValueError, match="^srtp: authentication failure$"):
        fastpath.SrtpContext(profile, other, False).unprotect(wire)
    assert fastpath.SrtpContext(profile, key, False).unprotect(wire)[:12] == wire[:12]


def test_the_prefetched_states_are_the_rtp_cipher_and_hmac() -> None:
    """The Engine prefetches the blocks a context captured while libsrtp made it: RTP's, not RTCP's or the KDF's."""
    ctx = fastpath.SrtpContext(CM80, os.urandom(30), True)
    cipher, auth = ctx.hot_states()
    assert cipher and auth and cipher != auth
    counter = (ctypes.c_uint8 * 16).from_address(cipher)  # IcmBox.counter: salt XOR the packet's IV
    work = (ctypes.c_uint8 * 96).from_address(auth + 96)  # HmacBox.work: the running inner digest
    before = bytes(counter), bytes(work)
    ctx.protect_rtcp(packets.rtcp_rr(5))
    assert (bytes(counter), bytes(work)) == before
    ctx.protect(packets.rtp(96, 1, 1, 0xABC, os.urandom(100)))
    assert bytes(counter) != before[0] and bytes(work) != before[1]
    for profile in (fastpath.PROFILE_AEAD_AES_128_GCM, fastpath.PROFILE_AEAD_AES_256_GCM):
        assert fastpath.SrtpContext(profile, os.urandom(fastpath.KEY_LENGTHS[profile]), True).hot_states() == (0, 0)


def test_tags_are_batched_where_openssl_has_multi_buffer_sha1() -> None:
    # CI and these hosts are x86-64, whose OpenSSL has sha1_multi_block; the batched path passed its self-test.
    assert "tags in batches of 4" in crypto_kernel.install()["hmac_sha1"]


@pytest.mark.parametrize("count", [1, 3, 4, 5, 8, 13, 40, 600])
def test_batched_tags_equal_one_at_a_time_tags(count: int) -> None:
    """What the Engine sends (tags written together at the flush) against SrtpContext.protect (tags at once, the
    same bytes as libsrtp's own primitives above): three sessions interleaved, every size, batch sizes across the
    four-lane groups."""
    keys = [os.urandom(30) for _ in range(3)]
    batched_tx = [fastpath.SrtpContext(CM80, k, True) for k in keys]
    single_tx = [fastpath.SrtpContext(CM80, k, True) for k in keys]
    sizes = [PAYLOAD_SIZES[i % len(PAYLOAD_SIZES)] for i in range(count)]
    rtp = [packets.rtp(96, 100 + i, 3000 * i, 0x51A7E + i % 3, os.urandom(size)) for i, size in enumerate(sizes)]
    owners = [i % 3 for i in range(count)]
    batched = fastpath.protect_batched([batched_tx[k] for k in owners], rtp)
    single = [single_tx[k].protect(p) for k, p in zip(owners, rtp, strict=True)]
    assert batched == single
    rx = [fastpath.SrtpContext(CM80, k, False) for k in keys]
    assert [rx[k].unprotect(p) for k, p in zip(owners, batched, strict=True)] == rtp


def test_a_batch_refuses_what_protect_refuses() -> None:
    tx = fastpath.SrtpContext(CM80, os.urandom(30), True)
    with pytest.raises(ValueError, match="one context per packet"):
        fastpath.protect_batched([tx], [])
    with pytest.raises(ValueError, match="outbound"):
        fastpath.protect_batched([fastpath.SrtpContext(CM80, os.urandom(30), False)], [b"\x80" * 20])
    with pytest.raises(ValueError, match="empty"):
        fastpath.protect_batched([tx], [b""])


def test_batching_can_be_turned_off() -> None:
    status = _installed_in_a_child("crypto_kernel.install(hmac_batch=False)")["hmac_sha1"]
    assert status.startswith("mediarouter") and "tags one at a time: hmac_batch off" in status
