"""Free port bases (bench/ports.py): below the kernel's ephemeral range, free over UDP and TCP, and a base whose
TCP port is taken is never handed out."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bench import ports


def test_a_base_is_below_the_ephemeral_range_and_free_over_both_protocols() -> None:
    start = ports.ephemeral_start()
    for _ in range(20):
        base = ports.free_port_base(3)
        assert ports.LOWEST <= base and base + 3 <= start
        for port in range(base, base + 3):
            assert ports.port_is_free(port, socket.SOCK_DGRAM) and ports.port_is_free(port, socket.SOCK_STREAM)


def test_the_ephemeral_start_comes_from_the_kernel_setting(tmp_path: Path) -> None:
    setting = tmp_path / "range"
    setting.write_text("40000\t60999\n")
    assert ports.ephemeral_start(str(setting)) == 40000
    setting.write_text("garbage")
    assert ports.ephemeral_start(str(setting)) == 32768
    assert ports.ephemeral_start(str(tmp_path / "missing")) == 32768


def test_a_port_held_over_tcp_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        monkeypatch.setattr(ports.random, "randrange", lambda lo, hi: taken)
        with pytest.raises(RuntimeError, match="no 1 consecutive free ports"):
            ports.free_port_base(1)
        assert ports.free_port_base(1, tcp=False) == taken  # free over UDP, held over TCP only
