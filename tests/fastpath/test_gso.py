"""UDP GSO in the Engine's send arena: one publisher burst fanned out to several subscribers.

Each subscriber's queued copies of one length leave as one segmented sendmmsg message (a shorter copy ends a
message; 64 segments or 65,000 bytes at most); the subscribers must still read every datagram, in order and
decryptable, exactly as with GSO off. A refused segmented message is resent datagram by datagram; three refusals in
a row turn GSO off. No packet is lost either way.
"""

from __future__ import annotations

import errno
import socket

import pytest

import fastpath
from tests.fastpath.conftest import SO_NO_CHECK, Fanout, payloads


def check_delivery(f: Fanout, sent: list[bytes]) -> None:
    for sub in f.subs:
        got = payloads(sub)
        assert [p for _, p in got] == [s[12:] for s in sent]
        seqs = [s for s, _ in got]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(sent))]


# sizes of one burst, subscribers -> sendmmsg messages (when GSO is on)
GROUPING = [
    pytest.param([400] * 12, 3, 3, id="equal-sizes-one-message-per-subscriber"),
    pytest.param([400] * 6 + [200] + [400] * 5, 2, 4, id="a-shorter-packet-ends-its-message"),
    pytest.param([400, 800, 400], 1, 2, id="a-longer-packet-starts-a-new-message-a-shorter-one-ends-it"),
    pytest.param([1200] * 60, 1, 2, id="at-most-65000-bytes-per-message"),
    pytest.param([100] * 100, 1, 2, id="at-most-64-segments-per-message"),
    pytest.param([300], 4, 4, id="lone-datagrams-unchanged"),
]


@pytest.mark.parametrize(("sizes", "subscribers", "messages"), GROUPING)
def test_a_burst_leaves_as_one_message_per_subscriber_and_size(fanouts, sizes: list[int], subscribers: int,
                                                              messages: int) -> None:
    f = fanouts(subscribers, gso=True, batch_size=128)
    assert f.engine.gso
    before = f.engine.snapshot_engine()
    sent = f.burst(sizes)
    after = f.engine.snapshot_engine()
    assert after["tx_datagrams"] - before["tx_datagrams"] == len(sizes) * subscribers
    assert after["tx_messages"] - before["tx_messages"] == messages
    check_delivery(f, sent)
    for i in range(subscribers):
        t = f.engine.snapshot_transport(2 + i)
        assert t["tx_packets"] == len(sizes)
        assert t.get("drop_send_failed", 0) == 0


def test_gso_off_sends_one_message_per_datagram_with_the_same_bytes(fanouts) -> None:
    f = fanouts(3, gso=False)
    assert not f.engine.gso
    before = f.engine.snapshot_engine()
    sent = f.burst([400] * 10)
    e = f.engine.snapshot_engine()
    assert e["tx_messages"] - before["tx_messages"] == e["tx_datagrams"] - before["tx_datagrams"] == 30
    assert e["gso"] == 0
    check_delivery(f, sent)


def test_gso_can_be_switched_at_run_time(fanouts) -> None:
    f = fanouts(2, gso=False)
    f.engine.gso = True
    assert f.engine.gso
    before = f.engine.snapshot_engine()["tx_messages"]
    sent = f.burst([500] * 8)
    assert f.engine.snapshot_engine()["tx_messages"] - before == 2
    check_delivery(f, sent)


def test_a_socket_that_refuses_segmentation_turns_gso_off_and_loses_nothing(fanouts) -> None:
    f = fanouts(3, gso=True)
    f.sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    before = f.engine.snapshot_engine()
    sent = f.burst([400] * 10)
    e = f.engine.snapshot_engine()
    assert not f.engine.gso                    # three refused messages in a row
    assert e["gso_errno"] == errno.EINVAL and e["gso_refused"] == 3
    assert e["tx_datagrams"] - before["tx_datagrams"] == 30
    check_delivery(f, sent)
    more = f.burst([400] * 4, first_seq=200)  # later bursts go out plainly
    assert f.engine.snapshot_engine()["tx_messages"] == e["tx_messages"] + 12
    for sub in f.subs:
        assert [p for _, p in payloads(sub)] == [s[12:] for s in more]


def test_a_refusal_or_two_resend_plainly_and_keep_gso_on(fanouts) -> None:
    f = fanouts(2, gso=True)
    f.sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    sent = f.burst([400] * 6)
    assert f.engine.gso and f.engine.snapshot_engine()["gso_refused"] == 2
    check_delivery(f, sent)
    f.sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 0)  # the cause went away: segmented sends work again
    before = f.engine.snapshot_engine()["tx_messages"]
    more = f.burst([400] * 6, first_seq=300)
    assert f.engine.snapshot_engine()["tx_messages"] - before == 2
    for sub in f.subs:
        assert [p for _, p in payloads(sub)] == [s[12:] for s in more]


def test_engine_rejects_nothing_on_a_socket_without_udp_segment() -> None:
    # A stream socket has no UDP options: GSO stays off instead of failing at the first send.
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        assert not fastpath.Engine(a.fileno(), gso=True).gso
    finally:
        a.close()
        b.close()
