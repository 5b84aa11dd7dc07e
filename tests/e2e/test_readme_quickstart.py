"""The README's quick start, run as written: the server on its defaults, tokens from ``mediarouter token``, and the
README's script with the unmodified ``livekit`` SDK.

libwebrtc offers no loopback candidates, so everything runs in a private network namespace that the test creates
(lo plus a veth pair with a TEST-NET-2 address for the client's candidates). Inside it the server keeps its
embedded defaults (``127.0.0.1``, HTTP 7880, UDP 7882), exactly what ``make run`` starts.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netns import NetnsUnavailable, check_available  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

try:
    check_available()
except NetnsUnavailable as exc:
    pytest.skip(f"network namespace unavailable: {exc}", allow_module_level=True)

pytestmark = pytest.mark.timeout(120)


def _quick_start() -> tuple[list[str], str]:
    """The shell lines and the Python script of the README's quick-start section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start with a LiveKit SDK", 1)[1].split("\n## ", 1)[0]
    shell = re.search(r"```sh\n(.*?)```", section, re.S)
    script = re.search(r"```python\n(.*?)```", section, re.S)
    assert shell and script, "README quick start needs a sh block and a python block"
    return shell.group(1).strip().splitlines(), script.group(1)


def test_readme_quick_start_works_as_written(tmp_path: Path) -> None:
    lines, script = _quick_start()
    (tmp_path / "quickstart.py").write_text(script)
    bindir = Path(sys.executable).parent
    # The README runs the venv's tools from the checkout; here they are this interpreter's.
    commands = [
        line.replace(".venv/bin/mediarouter", f"{sys.executable} -m control").replace(
            ".venv/bin/python quickstart.py", f"{sys.executable} {tmp_path / 'quickstart.py'}"
        )
        for line in lines
    ]
    inner = f"""
set -eu
ip link set lo up
ip link add qs0 type veth peer name qs1
ip addr add 198.51.100.2/24 dev qs0
ip link set qs0 up
ip link set qs1 up
cd {ROOT}
export PYTHONPATH={ROOT} PATH={bindir}:$PATH
{sys.executable} -m control serve --workers 1 > {tmp_path / "server.log"} 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  if {sys.executable} -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7880/healthz')" \\
      2>/dev/null; then break; fi
  sleep 0.1
done
{chr(10).join(commands)}
"""
    done = subprocess.run(
        ["unshare", "--net", "--", "bash", "-c", inner], capture_output=True, text=True, timeout=100, cwd=tmp_path
    )
    server_log = (tmp_path / "server.log").read_text() if (tmp_path / "server.log").exists() else ""
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}\nserver:\n{server_log[-3000:]}"
    assert done.returncode == 0, report
    assert "bob hears alice through mediarouter" in done.stdout, report
    assert "development mode" in server_log
