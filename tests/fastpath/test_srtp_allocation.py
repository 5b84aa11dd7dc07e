"""The SRTP allocation thread (fastpath.srtp.context_pair): one pthread that creates a transport's two libsrtp
sessions, so that their state blocks sit together in that thread's glibc malloc arena (docs/FORWARDING.md, SRTP)."""

from __future__ import annotations

import ctypes
import os
import threading
import time

import pytest

import fastpath
from fastpath import srtp
from tests import packets

# glibc's malloc chunk header: the size word just below the pointer; bit 2 (NON_MAIN_ARENA) is set for a chunk served
# by a thread's arena, clear for the main arena's (malloc/malloc.c, "A: NON_MAIN_ARENA").
NON_MAIN_ARENA = 0x4


def _in_thread_arena(address: int) -> bool:
    return bool(ctypes.c_size_t.from_address(address - ctypes.sizeof(ctypes.c_size_t)).value & NON_MAIN_ARENA)


@pytest.mark.parametrize("profile", [fastpath.PROFILE_AES128_CM_SHA1_80, fastpath.PROFILE_AEAD_AES_128_GCM,
                                     fastpath.PROFILE_AEAD_AES_256_GCM, fastpath.PROFILE_PLAIN])
def test_a_pair_protects_for_the_mirror_pair(profile: int) -> None:
    local, remote = os.urandom(fastpath.KEY_LENGTHS[profile]), os.urandom(fastpath.KEY_LENGTHS[profile])
    rx, tx = srtp.context_pair(profile, local, remote)
    peer_rx, peer_tx = srtp.context_pair(profile, remote, local)
    assert (rx.outbound, tx.outbound, rx.profile, tx.profile) == (False, True, profile, profile)
    for seq in range(3):
        pkt = packets.rtp(96, seq, 1000, 0x1234, os.urandom(100))
        assert peer_rx.unprotect(tx.protect(pkt)) == pkt
        assert rx.unprotect(peer_tx.protect(pkt)) == pkt
    rtcp = packets.rtcp_pli(1, 2)
    assert peer_rx.unprotect_rtcp(tx.protect_rtcp(rtcp)) == rtcp
    if profile != fastpath.PROFILE_PLAIN:
        with pytest.raises(ValueError, match="^srtp: "):
            rx.unprotect(tx.protect(packets.rtp(96, 9, 1000, 0x1234)))  # our own key is not the peer's


def test_the_sessions_are_made_in_a_thread_arena_by_a_thread_python_does_not_see() -> None:
    key = os.urandom(30)
    before = srtp.allocation_jobs()
    pairs = [srtp.context_pair(fastpath.PROFILE_AES128_CM_SHA1_80, key, key) for _ in range(20)]
    assert srtp.allocation_jobs() == before + 20
    states = [a for pair in pairs for ctx in pair for a in ctx.hot_states()]
    assert all(states) and all(_in_thread_arena(a) for a in states)
    # The contrast: a context made on this (main) thread is served by the main arena.
    assert threading.current_thread() is threading.main_thread()
    here = srtp.SrtpContext(fastpath.PROFILE_AES128_CM_SHA1_80, key, True)
    assert not any(_in_thread_arena(a) for a in here.hot_states())
    assert not any(t.name.startswith("srtp-alloc") for t in threading.enumerate())


def test_concurrent_callers_each_get_their_own_pair() -> None:
    results: dict[int, tuple[bytes, bytes]] = {}

    def run(i: int) -> None:
        local, remote = bytes([i]) * 30, bytes([i + 100]) * 30
        for _ in range(50):
            rx, tx = srtp.context_pair(fastpath.PROFILE_AES128_CM_SHA1_80, local, remote)
            peer_rx, _ = srtp.context_pair(fastpath.PROFILE_AES128_CM_SHA1_80, remote, local)
            pkt = packets.rtp(96, 1, 1, 7, bytes([i]) * 40)
            results[i] = (peer_rx.unprotect(tx.protect(pkt)), pkt)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 4 and all(got == want for got, want in results.values())


def test_bad_keys_raise_before_the_thread_is_asked() -> None:
    before = srtp.allocation_jobs()
    with pytest.raises(ValueError, match="^srtp: key must be 30 bytes for profile 1, got 28$"):
        srtp.context_pair(fastpath.PROFILE_AES128_CM_SHA1_80, bytes(28), bytes(30))
    assert srtp.allocation_jobs() == before


def test_a_forked_child_starts_its_own_thread() -> None:
    key = os.urandom(30)
    srtp.context_pair(fastpath.PROFILE_AES128_CM_SHA1_80, key, key)  # the parent's thread runs
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread does not exist here
        try:
            rx, tx = srtp.context_pair(fastpath.PROFILE_AES128_CM_SHA1_80, key, key)
            ok = rx.unprotect(tx.protect(packets.rtp(96, 1, 1, 5))) == packets.rtp(96, 1, 1, 5)
            os._exit(0 if ok and all(_in_thread_arena(a) for a in tx.hot_states()) else 1)
        finally:
            os._exit(2)
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child hung in context_pair")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
