"""The fast-path settings reach the worker: the Supervisor puts them on the worker's command line
(router/__main__.py) and the worker reports what its Engine does (the heartbeat's ``gso``).

Every process started here is killed and reaped by the `reaper` fixture, even when a test fails.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from control.workers.supervisor import Supervisor
from control.workers.worker_client import quiet_events
from router.__main__ import parse_args
from router.worker import Worker
from tests.conftest import ProcessReaper, free_udp_ports


def _command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


async def _heartbeat_counters(supervisor: Supervisor, timeout: float = 5.0) -> dict[str, object]:
    slot = supervisor.slots[0]
    deadline = asyncio.get_running_loop().time() + timeout
    while not slot.heartbeat.get("counters"):
        assert asyncio.get_running_loop().time() < deadline, "no heartbeat"
        await asyncio.sleep(0.05)
    return slot.heartbeat["counters"]


@pytest.mark.parametrize("gso", [True, False])
async def test_a_worker_reports_gso_as_it_was_started(runtime_root: str, reaper: ProcessReaper, gso: bool) -> None:
    sup = Supervisor(workers=1, node_ip="127.0.0.1", rtc_port_base=free_udp_ports(1), runtime_root=runtime_root,
                     gso=gso, hmac_batch=False, srtp_crypto="libsrtp", quiet_events=quiet_events("debug"))
    try:
        await sup.start()
        slot = sup.slots[0]
        assert slot.running and slot.pid, "worker did not start"
        reaper.track(slot.pid)
        argv = _command_line(slot.pid)
        assert ("--gso" if gso else "--no-gso") in argv and "--no-hmac-batch" in argv
        assert argv[argv.index("--srtp-crypto") + 1] == "libsrtp"
        assert argv[argv.index("--rx-hold-ms") + 1] == "0"
        assert argv[argv.index("--quiet-events") + 1] == "transport.ice_state,transport.sctp_state"
        # Loopback has UDP_SEGMENT here, so the Engine segments exactly when it was asked to.
        assert (await _heartbeat_counters(sup))["gso"] == int(gso)
    finally:
        for slot in sup.slots:
            if slot.pid:
                reaper.track(slot.pid)
        await sup.stop()


def test_the_worker_command_line_defaults_and_switches() -> None:
    base = ["--worker-id", "0", "--core", "0", "--control", "ipc:///x", "--rtc-port", "7882", "--node-ip", "127.0.0.1"]
    args = parse_args(base)
    assert (args.gso, args.hmac_batch, args.srtp_crypto) == (True, True, "mediarouter")
    assert args.congestion_control and args.rx_hold_ms == 0
    args = parse_args([*base, "--no-gso", "--no-hmac-batch", "--srtp-crypto", "libsrtp", "--no-congestion-control",
                       "--rx-hold-ms", "2"])
    assert (args.gso, args.hmac_batch, args.srtp_crypto) == (False, False, "libsrtp")
    assert not args.congestion_control and args.rx_hold_ms == 2
    assert args.quiet_events == []
    args = parse_args([*base, "--quiet-events", "transport.ice_state, consumer.layers_changed"])
    assert args.quiet_events == ["transport.ice_state", "consumer.layers_changed"]


def test_an_unknown_quiet_event_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--worker-id", "0", "--core", "0", "--control", "ipc:///x", "--rtc-port", "7882", "--node-ip", "127.0.0.1"]
    with pytest.raises(SystemExit):
        parse_args([*base, "--quiet-events", "transport.ice_state,transport.nope"])
    assert "--quiet-events: unknown event(s) transport.nope" in capsys.readouterr().err


def test_workers_are_told_to_keep_quiet_what_control_ignores() -> None:
    info = quiet_events("info")
    assert info == {"transport.ice_state", "transport.sctp_state", "producer.stream_added",
                    "consumer.layers_changed", "consumer.producer_closed"}
    assert quiet_events("debug") == {"transport.ice_state", "transport.sctp_state"}  # what it logs, it hears
    assert not info & {"transport.dtls_state", "transport.tuple_changed", "transport.scores",
                       "consumer.stream_state", "data_producer.message", "worker.heartbeat", "worker.running"}


def test_a_worker_refuses_an_unknown_srtp_crypto() -> None:
    with pytest.raises(ValueError, match="^srtp crypto 'openssl' is not one of mediarouter, libsrtp$"):
        Worker(0, 0, "ipc:///x", "127.0.0.1", 7882, srtp_crypto="openssl")
