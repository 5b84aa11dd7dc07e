"""TLS in front of the server as deployments do it: a self-signed certificate and nginx with the site configuration
of docs/deploy.md, run as a child of the scenario with its configuration, pid file, logs and temp files in a
directory of its own.

:func:`site_config` takes the ``nginx`` block of docs/deploy.md's "nginx" section and puts in this test's addresses
and certificate paths (each replacement must hit exactly once, so the document and the test cannot drift apart);
:class:`Nginx` runs it in the foreground (``daemon off``) and kills it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import re
import shutil
import socket
from pathlib import Path

DEPLOY_MD = Path(__file__).resolve().parents[3] / "docs" / "deploy.md"
# The deployment's placeholders in docs/deploy.md and what the test puts in their place.
DOC_LISTEN = "listen 443 ssl;"
DOC_CERT = "/etc/ssl/mediarouter/fullchain.pem"
DOC_KEY = "/etc/ssl/mediarouter/privkey.pem"
DOC_UPSTREAM = "http://127.0.0.1:7880"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def self_signed(ip: str, folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``ip`` (subjectAltName IP), valid for a day; returns (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def site_config(listen: str, upstream: str, cert: Path, key: Path) -> str:
    """docs/deploy.md's nginx site configuration with this test's listen address, upstream and certificate."""
    section = DEPLOY_MD.read_text(encoding="utf-8").split("\n## nginx", 1)[1]
    match = re.search(r"```nginx\n(.*?)```", section, re.S)
    if match is None:
        raise ValueError("docs/deploy.md has no nginx block in its nginx section")
    text = match.group(1)
    for old, new in ((DOC_LISTEN, f"listen {listen} ssl;"), (DOC_CERT, str(cert)), (DOC_KEY, str(key)),
                     (DOC_UPSTREAM, upstream)):
        if text.count(old) != 1:
            raise ValueError(f"docs/deploy.md's nginx block has {old!r} {text.count(old)} times, not once")
        text = text.replace(old, new)
    return text


def main_config(folder: Path, site: str) -> str:
    """A complete nginx.conf around ``site`` that writes nothing outside ``folder`` and stays in the foreground."""
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                            "uwsgi", "scgi"))
    return (f"daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} info;\n"
            f"events {{ worker_connections 256; }}\nhttp {{\n    access_log {folder / 'access.log'};\n{temp}\n"
            f"{site}\n}}\n")


class Nginx:
    """nginx in the foreground as a child of this process; :meth:`stop` kills it (and its workers)."""

    def __init__(self, proc: asyncio.subprocess.Process, folder: Path) -> None:
        self.proc = proc
        self.folder = folder

    @classmethod
    async def start(cls, binary: str, folder: Path, site: str, host: str, port: int) -> Nginx:
        os.chmod(folder, 0o755)  # the worker processes (user nobody) use the temp folders
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (folder / kind).mkdir(mode=0o777, exist_ok=True)
            os.chmod(folder / kind, 0o777)
        conf = folder / "nginx.conf"
        conf.write_text(main_config(folder, site))
        proc = await asyncio.create_subprocess_exec(
            binary, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        nginx = cls(proc, folder)
        for _ in range(100):
            if proc.returncode is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
                return nginx
            await asyncio.sleep(0.1)
        await nginx.stop()
        raise RuntimeError(f"nginx did not listen on {host}:{port}: {nginx.log('error.log')[-2000:]}")

    def log(self, name: str) -> str:
        path = self.folder / name
        return path.read_text(errors="replace") if path.exists() else ""

    async def stop(self) -> None:
        """SIGTERM (fast shutdown: the master stops its workers), SIGKILL after 5 s."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
