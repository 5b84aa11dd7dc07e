"""A private ``redis-server`` for the cluster tests: a unix socket (or a loopback port) in a temporary directory,
no persistence, killed by the caller (or the test's process reaper)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

REDIS_SERVER = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                                else None)
SKIP_REASON = "redis-server is not installed (make cluster-deps)"


class RedisServer:
    """One redis-server; ``address`` is what ``redis.address`` takes."""

    def __init__(self, port: int | None = None) -> None:
        assert REDIS_SERVER is not None
        self.dir = tempfile.mkdtemp(prefix="mr-redis-")
        self.socket = os.path.join(self.dir, "redis.sock")
        self.port = port
        args = [REDIS_SERVER, "--port", str(port or 0), "--unixsocket", self.socket, "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--bind", "127.0.0.1"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + 10
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}" if self.port else self.socket

    def _ready(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(self.socket)
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
