"""``make fuzz``: runs every atheris target of tests/fuzz for a bounded time and reports executions per second.

Usage: ``python -m tests.fuzz.run [--seconds N] [--work DIR] [target ...]`` (``FUZZ_SECONDS``, default 60, sets the
time of each target). Each target runs in its own process (libFuzzer exits its process when it finds a crash): its
seed corpus (``seeds()``, from the golden packets and SDP files) is written into ``DIR/<target>/``, where libFuzzer
also keeps what it finds, and a crashing input is saved as ``DIR/<target>-crash-<sha1>`` (``-timeout-``: one input
ran over 10 s). The exit status is 1 if any target crashed or did not run; a crash becomes a file under
``tests/fuzz/regressions/<target>/`` that ``tests/fuzz/test_fuzz_targets.py`` replays in ``make test``. ``--one
NAME`` is the child's entry point.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

TARGETS = ("stun", "engine", "sdp", "signal", "jwt", "twirp", "dcep")
ROOT = Path(__file__).resolve().parents[2]


def load(name: str):  # noqa: ANN201 - a target module
    return importlib.import_module(f"tests.fuzz.fuzz_{name}")


def write_seeds(name: str, corpus: Path) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = load(name).seeds()
    for seed in seeds:
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    return len(seeds)


def write_dictionary(name: str, path: Path) -> bool:
    """The target's ``DICTIONARY`` (tokens libFuzzer splices into inputs) in libFuzzer's format, if it has one."""
    words: list[bytes] = getattr(load(name), "DICTIONARY", [])
    if not words:
        return False
    path.write_text("".join('"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}"
                                          for b in w) + '"\n' for w in words))
    return True


def run_one(name: str, seconds: int, corpus: Path, artifacts: Path) -> None:
    """The child: atheris over one target (never returns; libFuzzer exits)."""
    import atheris

    with atheris.instrument_imports(include=["router", "control", "fastpath", "aiortc", "jwt"]):
        target = load(name)
    target.setup()
    argv = [sys.argv[0], str(corpus), f"-max_total_time={seconds}", "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/{name}-", "-max_len=4096", "-timeout=10", "-rss_limit_mb=2048"]
    if write_dictionary(name, artifacts / f"{name}.dict"):
        argv.append(f"-dict={artifacts / f'{name}.dict'}")
    atheris.Setup(argv, target.check)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run")
    parser.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")))
    parser.add_argument("--work", type=Path, default=None, help="corpora and crashes (default: a temporary dir)")
    parser.add_argument("--one", choices=TARGETS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown} (choose from {', '.join(TARGETS)})")
    work = args.work or Path(tempfile.mkdtemp(prefix="mr-fuzz-"))
    if args.one:
        run_one(args.one, args.seconds, work / args.one, work)
        return 0
    failed: list[str] = []
    for name in args.targets or TARGETS:
        seeds = write_seeds(name, work / name)
        proc = subprocess.run([sys.executable, "-m", "tests.fuzz.run", "--one", name, "--seconds",
                               str(args.seconds), "--work", str(work)], cwd=ROOT, capture_output=True, text=True)
        stats = dict(re.findall(r"stat::(\w+):\s+(\d+)", proc.stderr))
        runs, rate = stats.get("number_of_executed_units", "?"), stats.get("average_exec_per_sec", "?")
        crashes = sorted(p.name for kind in ("crash", "timeout", "oom", "leak")
                         for p in work.glob(f"{name}-{kind}-*"))
        ok = proc.returncode == 0 and not crashes
        print(f"{name:8} {'ok' if ok else 'FAILED':6} {runs:>9} runs  {rate:>6} exec/s  seeds {seeds}"
              + (f"  crashes: {', '.join(crashes)}" if crashes else ""), flush=True)
        if not ok:
            failed.append(name)
            sys.stderr.write(proc.stderr[-4000:])
    print(f"work dir: {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
