"""The benchmark's address plan and source filter (``bench.net``, ``LoadGen.accept_from``), where ``--url`` points
(``bench.remote.check_url``) and how a measurement reads a server's counters (``bench.probe``)."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

import pytest

import fastpath
from bench._loadgen import LoadGen
from bench.net import GeneratorSocket, participant_address, source_network
from bench.probe import HealthzProbe, ProbeError, ProcProbe
from bench.remote import RemoteError, check_url


@pytest.mark.parametrize("net, index, address", [
    ("127.77.0.0/16", 0, "127.77.0.1"),
    ("127.77.0.0/16", 255, "127.77.1.0"),
    ("127.77.0.0/16", 65533, "127.77.255.254"),
    ("10.77.0.0/16", 9, "10.77.0.10"),
    ("10.77.5.0/24", 253, "10.77.5.254"),
])
def test_participant_addresses_are_the_networks_hosts_in_order(net: str, index: int, address: str) -> None:
    assert participant_address(index, ipaddress.IPv4Network(net)) == address


@pytest.mark.parametrize("net, index", [("127.77.0.0/16", 65534), ("10.77.5.0/24", 254), ("10.77.5.0/24", -1)])
def test_a_participant_beyond_the_network_is_refused(net: str, index: int) -> None:
    with pytest.raises(ValueError, match="participant index must be in"):
        participant_address(index, ipaddress.IPv4Network(net))


@pytest.mark.parametrize("text, error", [("10.77.0.0/25", "too small"), ("10.77.0.999/16", "not an IPv4 network"),
                                         ("fd00::/64", "not an IPv4 network")])
def test_source_network_refuses_what_cannot_hold_the_participants(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        source_network(text)
    assert source_network("10.77.1.2/16") == ipaddress.IPv4Network("10.77.0.0/16")  # host bits are forgiven


def test_generator_socket_accepts_loopback_or_only_the_servers_it_was_given() -> None:
    loop = GeneratorSocket(buffer_bytes=1 << 20)
    other = GeneratorSocket(buffer_bytes=1 << 20, source_net=ipaddress.IPv4Network("10.77.0.0/16"))
    try:
        assert loop.is_accepted("127.0.0.1") and loop.is_accepted("127.9.9.9")
        assert not loop.is_accepted("198.51.100.1")
        assert loop.address(0) == "127.77.0.1" and other.address(0) == "10.77.0.1"
        assert other.accepted == [] and not other.is_accepted("127.0.0.1")
        other.accept_from("198.51.100.1")
        other.accept_from("198.51.100.1")
        assert other.accepted == ["198.51.100.1/32"]
        assert other.is_accepted("198.51.100.1") and not other.is_accepted("198.51.100.2")
    finally:
        loop.close()
        other.close()


def test_loadgen_reads_only_from_the_accepted_sources() -> None:
    """The same authenticated RTP from 127.0.0.1 counts while loopback is accepted, and is dropped unread as
    foreign once only another server address is."""
    net = GeneratorSocket(buffer_bytes=1 << 20)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        p = fastpath.PROFILE_AES128_CM_SHA1_80
        key = os.urandom(30)
        gen = LoadGen(net.fileno(), 0, 1, 0)
        gen.add_receiver(0x77, fastpath.SrtpContext(p, key, False))
        tx = fastpath.SrtpContext(p, key, True)
        rtp = bytearray(200)
        rtp[0], rtp[1] = 0x80, 96
        rtp[8:12] = (0x77).to_bytes(4, "big")

        def send(seq: int) -> None:
            rtp[2:4] = seq.to_bytes(2, "big")
            sender.sendto(tx.protect(bytes(rtp)), ("127.0.0.1", net.port))

        send(1)
        gen.run(0.05, send=False)
        assert gen.receivers_snapshot()[0]["received"] == 1 and gen.counters()["foreign"] == 0
        gen.accept_from(["198.51.100.1", "203.0.113.0/24"])
        send(2)
        gen.run(0.05, send=False)
        assert gen.receivers_snapshot()[0]["received"] == 1 and gen.counters()["foreign"] == 1
        gen.accept_from(["127.0.0.0/8"])
        send(3)
        gen.run(0.05, send=False)
        assert gen.receivers_snapshot()[0]["received"] == 2
        with pytest.raises(ValueError, match="give 1..16 networks"):
            gen.accept_from([])
        with pytest.raises(ValueError, match="bad prefix length"):
            gen.accept_from(["10.0.0.0/33"])
        with pytest.raises(ValueError, match="IPv4 address expected"):
            gen.accept_from(["example"])
    finally:
        sender.close()
        net.close()


def test_check_url_needs_a_source_network_off_loopback_and_says_where_the_server_is() -> None:
    target = check_url("ws://127.0.0.1:7880")
    assert (target.address, target.port, target.local) == ("127.0.0.1", 7880, True)
    with pytest.raises(RemoteError, match="give --source-net"):
        check_url("ws://192.0.2.1:7880")
    remote = check_url("ws://192.0.2.1:7880", "10.77.0.0/16")
    assert (remote.address, remote.local) == ("192.0.2.1", False)  # TEST-NET-1: never this host's
    with pytest.raises(RemoteError, match="must look like"):
        check_url("https://127.0.0.1:7880")


def _healthz(pid: int, cpu_s: float, alive: bool = True) -> dict[str, Any]:
    usage = {"cpu_s": cpu_s, "run_s": cpu_s + 0.001, "rss_bytes": 50 << 20, "udp_drops": 3,
             "udp_rx_queue_bytes": 0}
    return {"status": "ok", "host": {"cpu_ticks": 1000, "steal_ticks": 7},
            "workers": [{"id": 0, "pid": pid, "alive": alive, "usage": usage if alive else None},
                        {"id": 1, "pid": 99, "alive": True, "usage": usage}]}


def test_healthz_probe_reads_the_workers_it_started_with_and_refuses_a_restarted_one() -> None:
    documents = [_healthz(41, 1.5), _healthz(42, 0.1), _healthz(41, 1.6, alive=False), {"workers": []}]
    probe = HealthzProbe(lambda: documents.pop(0), {0: 41})
    sample = probe.sample()
    assert (sample.cpu_s, sample.run_s, sample.rss, sample.drops, sample.ticks) == ([1.5], [1.501], [50 << 20], 3,
                                                                                     (1000, 7))
    with pytest.raises(ProbeError, match="worker 0 .pid 41. is not running any more"):
        probe.sample()  # the same id, another pid: counters restarted from zero
    with pytest.raises(ProbeError, match="is not running any more"):
        probe.sample()
    with pytest.raises(ProbeError, match="no usage counters"):
        probe.sample()


def test_proc_probe_reads_this_process_and_fails_clearly_for_a_gone_one() -> None:
    sample = ProcProbe([os.getpid()], []).sample()
    assert sample.cpu_s[0] > 0 and sample.rss[0] > 0 and sample.drops == 0 and sample.ticks[0] > 0
    with pytest.raises(ProbeError, match="cannot read the server's processes"):
        ProcProbe([2**22 + 12345], []).sample()
