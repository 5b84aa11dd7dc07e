"""bench._dispatch.SetupReader: the set of routed addresses, and batched reads that keep only routed datagrams."""

from __future__ import annotations

import socket

import pytest

from bench._dispatch import SetupReader
from bench.net import GeneratorSocket, participant_address


def test_routes_survive_growth_and_removal() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        reader = SetupReader(sock.fileno(), False)
        hosts = [participant_address(i) for i in range(1000)]
        for host in hosts:
            reader.route(host)
        reader.route(hosts[0])  # twice: still one entry
        assert len(reader) == 1000 and all(h in reader for h in hosts)
        for host in hosts[::2]:
            reader.unroute(host)
        reader.unroute("127.1.2.3")  # never routed: nothing happens
        assert len(reader) == 500
        assert [h in reader for h in hosts[:6]] == [False, True, False, True, False, True]
        # Adding and removing again and again reuses the removed slots (no endless growth of the chains).
        for _ in range(20):
            for host in hosts[::2]:
                reader.route(host)
            for host in hosts[::2]:
                reader.unroute(host)
        assert len(reader) == 500 and hosts[1] in reader and hosts[0] not in reader
    finally:
        sock.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "255.255.255.255", "not an address", "::1"])
def test_a_host_that_cannot_be_routed_is_refused(host: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ValueError):
            SetupReader(sock.fileno(), False).route(host)
    finally:
        sock.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("gro", [True, False], ids=["gro", "no-gro"])
def test_read_keeps_only_routed_datagrams_and_counts_the_others(gro: bool) -> None:
    net = GeneratorSocket(buffer_bytes=1 << 20, gro=gro)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    try:
        reader = SetupReader(net.fileno(), net.gro)
        wanted, other = participant_address(3), participant_address(4)
        reader.route(wanted)
        for i in range(100):  # more than one batch, mostly for the address no one waits for
            sender.sendto(bytes([i]) * 50, (other if i % 10 else wanted, net.port))
        got = reader.read(256)
        assert [(dest, data[0], len(data), segment) for dest, data, _, segment in got] == [
            (wanted, i, 50, 0) for i in range(0, 100, 10)
        ]
        assert {addr for _, _, addr, _ in got} == {sender.getsockname()}
        assert reader.dropped == 90 and reader.datagrams == 100
        assert reader.read(256) == []  # the socket is empty
        for _ in range(40):
            sender.sendto(b"x", (wanted, net.port))
        assert len(reader.read(16)) == 16  # at most the limit per read; the rest waits for the next one
        assert len(reader.read(256)) == 24
    finally:
        sender.close()
        net.close()
