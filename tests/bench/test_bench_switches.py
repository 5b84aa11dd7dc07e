"""The benchmark's fast-path switches: ``--[no-]gso``, ``--[no-]hmac-batch``, ``--srtp-crypto`` and ``--[no-]gro``,
with the environment variables the server reads (and ``MEDIAROUTER_GRO``) as their defaults, reach the server it
starts, the limit loop and the generator, and the JSON says what ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import _parser, main, switch_defaults
from bench.scenarios import Options
from control.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SWITCHES_OFF = {"MEDIAROUTER_GSO": "0", "MEDIAROUTER_HMAC_BATCH": "0", "MEDIAROUTER_SRTP_CRYPTO": "libsrtp",
                "MEDIAROUTER_GRO": "0"}


def _switches(argv: list[str], environ: dict[str, str]) -> tuple[object, ...]:
    args = _parser(environ).parse_args(["fanout", *argv])
    return args.gso, args.hmac_batch, args.srtp_crypto, args.gro


def test_the_environment_gives_the_defaults_and_the_flags_win() -> None:
    assert switch_defaults({}) == {"gso": True, "hmac_batch": True, "srtp_crypto": "mediarouter", "gro": True,
                                   "rx_hold_ms": 0}
    assert switch_defaults({"MEDIAROUTER_RX_HOLD_MS": "2"})["rx_hold_ms"] == 2
    assert _parser({}).parse_args(["conference", "--rx-hold-ms", "1"]).rx_hold_ms == 1
    assert _switches([], {}) == (True, True, "mediarouter", True)
    assert _switches([], SWITCHES_OFF) == (False, False, "libsrtp", False)
    assert _switches(["--no-gso", "--no-hmac-batch", "--srtp-crypto", "libsrtp", "--no-gro"], {}) == (
        False, False, "libsrtp", False)
    assert _switches(["--gso", "--hmac-batch", "--srtp-crypto", "mediarouter", "--gro"], SWITCHES_OFF) == (
        True, True, "mediarouter", True)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("MEDIAROUTER_GSO", "no way", "MEDIAROUTER_GSO must be 1 or 0 (or true/false, yes/no, on/off), not 'no way'"),
    ("MEDIAROUTER_GRO", "2", "MEDIAROUTER_GRO must be 1 or 0 (or true/false, yes/no, on/off), not '2'"),
    ("MEDIAROUTER_SRTP_CRYPTO", "openssl",
     "MEDIAROUTER_SRTP_CRYPTO must be one of mediarouter, libsrtp, not 'openssl'"),
])
def test_a_bad_environment_value_is_refused(name: str, value: str, message: str,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as info:
        switch_defaults({name: value})
    assert str(info.value) == message
    monkeypatch.setenv(name, value)
    assert main(["fanout"]) == 2
    assert capsys.readouterr().err == f"bench: {message}\n"


def test_options_refuse_an_unknown_srtp_crypto() -> None:
    with pytest.raises(ValueError, match="^srtp_crypto must be one of mediarouter, libsrtp, not 'openssl'$"):
        Options("fanout", srtp_crypto="openssl")


@pytest.mark.timeout(150)
def test_switched_off_run_records_what_ran(tmp_path: Path) -> None:
    """GSO and GRO off through the environment (the defaults), the rest through flags: the workers and the limit
    loop send datagram by datagram, the generator splits nothing, and the JSON says so."""
    out = tmp_path / "off.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MEDIAROUTER_GSO="0", MEDIAROUTER_GRO="0")
    proc = subprocess.Popen([sys.executable, "-m", "bench", "fanout", "--subscribers", "2", "--seconds", "1",
                             "--rate", "200", "--no-hmac-batch", "--srtp-crypto", "libsrtp", "--json", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out.read_text())
    assert result["points"][0]["verified"] == result["points"][0]["received"] > 0
    assert result["udp_gso"] is False and result["limit"]["limit_counters"]["gso"] is False
    assert result["generator_gro"] is False
    assert (result["hmac_batch"], result["srtp_crypto"]) == (False, "libsrtp")
