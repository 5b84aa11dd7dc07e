"""``python -m bench --url`` against a server on another host: two network stacks joined by a veth link.

The server runs in the harness's namespace on 198.51.100.1. The benchmark runs in a second namespace of its own (the
"generator host", 192.0.2.2) joined to the first by a veth pair (192.0.2.1 on the server's side), configured the way
``--source-net`` asks for: the participants' network 10.77.0.0/16 is local on the generator host (``ip route add
local 10.77.0.0/16 dev lo``) and routed to it from the server (``ip route add 10.77.0.0/16 via 192.0.2.2``). From
there the server's address is not local, so the benchmark can only read the worker's CPU time, RSS and drops from the
server's ``/healthz``. Records the benchmark's exit code, stderr tail and JSON result.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SOURCE_NET = "10.77.0.0/16"
SERVER_LINK, GENERATOR_LINK = "192.0.2.1", "192.0.2.2"  # TEST-NET-1 (RFC 5737), inside the namespaces only
ROOT = Path(__file__).resolve().parents[3]

# Runs in the generator's namespace: waits for its end of the link, sets up its addresses and routes, then benches.
_GENERATOR = """
read _ || exit 3
set -e
ip link set lo up
ip addr add {link}/24 dev mrgen1
ip link set mrgen1 up
ip route add local {net} dev lo
ip route add 198.51.100.0/24 via {server_link}
exec "$@"
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


async def run(ctx: Any, result: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="mr-bench-") as tmp:
        out = os.path.join(tmp, "result.json")
        bench = [sys.executable, "-m", "bench", "fanout", "--url", ctx.url, "--source-net", SOURCE_NET,
                 "--api-key", ctx.api_key, "--api-secret", ctx.api_secret, "--subscribers", "3", "--rate", "200",
                 "--seconds", "1", "--no-limit", "--json", out]
        script = _GENERATOR.format(link=GENERATOR_LINK, net=SOURCE_NET, server_link=SERVER_LINK)
        proc = await asyncio.create_subprocess_exec(
            "unshare", "--net", "--", "sh", "-c", script, "generator", *bench, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            # Once unshare has made the child's namespace, give the child its end of the link, then let it go.
            ours = os.readlink("/proc/self/ns/net")
            for _ in range(100):
                if os.readlink(f"/proc/{proc.pid}/ns/net") != ours:
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the generator's namespace did not appear")
            _ip("link", "add", "mrgen0", "type", "veth", "peer", "name", "mrgen1", "netns", str(proc.pid))
            _ip("addr", "add", f"{SERVER_LINK}/24", "dev", "mrgen0")
            _ip("link", "set", "mrgen0", "up")
            _ip("route", "add", SOURCE_NET, "via", GENERATOR_LINK)
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            proc.stdin.close()
            _, err = await asyncio.wait_for(proc.communicate(), 90)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        result["returncode"] = proc.returncode
        result["stderr_tail"] = err.decode(errors="replace")[-3000:]
        if os.path.exists(out):
            with open(out) as f:
                result["bench"] = json.load(f)
