"""Reachability scenarios: a server behind 1:1 NAT, a client whose UDP is blocked, a client that must use TURN.

Three network namespaces, all made by the test: ``unshare --net`` gives the inner process a namespace of its own,
the router (R); it creates the server's (S) and the client's (C) with ``unshare --net sleep`` holders and joins them
to itself with two veth pairs. TEST-NET addresses only (RFC 5737):

    C  c0 192.0.2.10/24 ── rc 192.0.2.1 [R] rs 198.51.100.1 ── s0 198.51.100.10/24  S
                                    R forwards; nftables in R (and in C) make the case

* ``nat``: R maps 203.0.113.10 to 198.51.100.10 (DNAT, and SNAT back: 1:1 NAT) and forwards from C only what was
  sent to 203.0.113.10; the server runs with ``--node-ip 203.0.113.10``, an address on none of its interfaces.
* ``tcp``: as ``nat``, and C drops every UDP datagram it sends or receives: only ICE over TCP can work.
* ``ipv6``: every namespace also has an IPv6 address (2001:db8::/32, RFC 3849; C 2001:db8:2::10, S 2001:db8:1::10,
  R routing between them) and R forwards no IPv4 from C: the client reaches the server over IPv6 only. The server
  announces ``--node-ip 198.51.100.10,2001:db8:1::10``; the fast path forwards IPv4 only, so the IPv6 address is a
  TCP candidate, and the client connects over ICE-TCP on IPv6.
* ``tcp_js``: the network of ``tcp``, with ``livekit-client`` in headless Chromium as the subscriber (the browser
  tools of tests/e2e/lk_scenarios/js_client.py; :func:`check_available` says when they are missing).
* ``multihomed``: the server also has 198.51.100.20 (on ``lo``, another device) and announces only that one; R forwards
  from C only what is sent to it. The server's route back to C prefers 198.51.100.10 as source, so replies must
  leave from the address the checks came to (IP_PKTINFO) for the client to accept them.
* ``turn``: coturn runs in R (listening on 192.0.2.1, relaying from 198.51.100.1) with a generated shared secret;
  R forwards from C only the signalling connection (TCP 7880), so media can reach the server only through the relay.
  The server gets ``turn_servers`` with that secret and gives the clients TURN REST credentials.

In C, one process runs the unmodified ``livekit`` SDK: alice publishes audio and video, bob subscribes, alice sends bob
a reliable data packet, and bob's transports as the worker sees them are read from ``GET /e2e/stats``
(tests/e2e/netns.py); in ``tcp_js`` the browser subscribes instead of bob and reports the frames it decoded and the
audio it received. The result comes back as one JSON line. Outer use: ``run_reach("nat")`` -> dict, raising
:class:`netns.NetnsUnavailable` (with the reason) when this host cannot run it (not root, no nft, no turnserver).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402

SERVER_IP = "198.51.100.10"
ROUTER_S_IP = "198.51.100.1"
PUBLIC_IP = "203.0.113.10"
CLIENT_IP = "192.0.2.10"
ROUTER_C_IP = "192.0.2.1"
HTTP_PORT = 7880
RTC_PORT = 7882
TURN_PORT = 3478
SECOND_IP = "198.51.100.20"
MODES = ("nat", "tcp", "turn", "multihomed", "tcp_js", "ipv6")
SERVER_IP6 = "2001:db8:1::10"
ROUTER_S_IP6 = "2001:db8:1::1"
CLIENT_IP6 = "2001:db8:2::10"
ROUTER_C_IP6 = "2001:db8:2::1"
JS_PAGE_PORT = 8090
RESULT_MARK = "REACH-RESULT "
ROOT = Path(__file__).resolve().parents[2]
WIDTH, HEIGHT = 320, 240


def check_available(mode: str) -> None:
    netns.check_available()
    if shutil.which("nft") is None:
        raise netns.NetnsUnavailable("nft is not installed (make net-deps)")
    if mode == "turn" and shutil.which("turnserver") is None:
        raise netns.NetnsUnavailable("coturn's turnserver is not installed (make net-deps)")
    if mode == "tcp_js" and (why := browser_missing()) is not None:
        raise netns.NetnsUnavailable(why)


def browser_missing() -> str | None:
    """Why the browser mode cannot run here (no Chromium, node or npm modules: ``make browser-deps``), or None."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "lk_scenarios"))
    from types import SimpleNamespace

    from js_client import Browser

    return Browser(SimpleNamespace(url="ws://127.0.0.1:0"), JS_PAGE_PORT).missing()


def run_reach(mode: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Runs ``mode`` in fresh namespaces; returns ``{"ok", "result", "server_log", ...}``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    check_available(mode)
    return netns.run_inner([str(Path(__file__).resolve()), "--inner", mode, "--timeout", str(timeout_s)],
                           f"reach {mode}", timeout_s + 40, mark=RESULT_MARK)


# ------------------------------------------------------------------------------------------- inner (router ns)


def _run(*args: str, ns: int | None = None, stdin: str | None = None) -> None:
    prefix = ["nsenter", f"--net=/proc/{ns}/ns/net", "--"] if ns else []
    done = subprocess.run([*prefix, *args], input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")


def _holder() -> subprocess.Popen[bytes]:
    """A process in a new network namespace of its own (``unshare`` execs ``sleep``: its pid is the holder's)."""
    return subprocess.Popen(["unshare", "--net", "--", "sleep", "600"])


def setup_network(mode: str, server_ns: int, client_ns: int) -> None:
    _run("ip", "link", "set", "lo", "up")
    _run("ip", "link", "add", "rs", "type", "veth", "peer", "name", "s0", "netns", str(server_ns))
    _run("ip", "link", "add", "rc", "type", "veth", "peer", "name", "c0", "netns", str(client_ns))
    for dev, addr in (("rs", ROUTER_S_IP), ("rc", ROUTER_C_IP)):
        _run("ip", "addr", "add", f"{addr}/24", "dev", dev)
        _run("ip", "link", "set", dev, "up")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")  # per namespace
    for ns, dev, addr, gateway in ((server_ns, "s0", SERVER_IP, ROUTER_S_IP),
                                   (client_ns, "c0", CLIENT_IP, ROUTER_C_IP)):
        _run("ip", "link", "set", "lo", "up", ns=ns)
        _run("ip", "addr", "add", f"{addr}/24", "dev", dev, ns=ns)
        _run("ip", "link", "set", dev, "up", ns=ns)
        _run("ip", "route", "add", "default", "via", gateway, ns=ns)
    if mode == "ipv6":
        for dev, addr in (("rs", ROUTER_S_IP6), ("rc", ROUTER_C_IP6)):
            _run("ip", "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad")
        Path("/proc/sys/net/ipv6/conf/all/forwarding").write_text("1\n")
        for ns, dev, addr, gateway in ((server_ns, "s0", SERVER_IP6, ROUTER_S_IP6),
                                       (client_ns, "c0", CLIENT_IP6, ROUTER_C_IP6)):
            _run("ip", "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad", ns=ns)
            _run("ip", "-6", "route", "add", "default", "via", gateway, ns=ns)
    if mode == "ipv6":  # C reaches S over IPv6 only
        rules = """
table inet reach_filter {
  chain reach_forward { type filter hook forward priority 0; policy accept;
    iifname "rc" meta nfproto ipv4 drop; }
}
"""
    elif mode == "multihomed":
        _run("ip", "addr", "add", f"{SECOND_IP}/32", "dev", "lo", ns=server_ns)  # no dummy driver everywhere
        rules = f"""
table ip reach_filter {{
  chain reach_forward {{ type filter hook forward priority 0; policy accept;
    iifname "rc" ip daddr {SECOND_IP} accept; iifname "rc" drop; }}
}}
"""
    elif mode in ("nat", "tcp", "tcp_js"):
        rules = f"""
table ip reach_nat {{
  chain reach_pre {{ type nat hook prerouting priority dstnat; ip daddr {PUBLIC_IP} dnat to {SERVER_IP}; }}
  chain reach_post {{ type nat hook postrouting priority srcnat; ip saddr {SERVER_IP} snat to {PUBLIC_IP}; }}
}}
table ip reach_filter {{
  chain reach_forward {{ type filter hook forward priority 0; policy accept;
    iifname "rc" ct status dnat accept; iifname "rc" drop; }}
}}
"""
    else:  # turn: the client reaches the server's signalling port only; media must go through coturn in R
        rules = f"""
table ip reach_filter {{
  chain reach_forward {{ type filter hook forward priority 0; policy accept;
    iifname "rc" ip daddr {SERVER_IP} tcp dport {HTTP_PORT} accept; iifname "rc" drop; }}
}}
"""
    _run("nft", "-f", "-", stdin=rules)
    if mode in ("tcp", "tcp_js"):
        _run("nft", "-f", "-", ns=client_ns, stdin="""
table inet reach_noudp {
  chain reach_out { type filter hook output priority 0; meta l4proto udp drop; }
  chain reach_in { type filter hook input priority 0; meta l4proto udp drop; }
}
""")


def start_coturn(secret: str, work: str) -> subprocess.Popen[bytes]:
    conf = Path(work) / "turnserver.conf"
    conf.write_text("\n".join([
        f"listening-ip={ROUTER_C_IP}", f"relay-ip={ROUTER_S_IP}", f"listening-port={TURN_PORT}",
        "use-auth-secret", f"static-auth-secret={secret}", "realm=mediarouter.test", "fingerprint",
        "no-tls", "no-dtls", "no-cli", "no-tcp-relay", "min-port=49152", "max-port=49407",
        f"allowed-peer-ip={SERVER_IP}", f"pidfile={work}/turnserver.pid", f"userdb={work}/turndb",
        "log-file=stdout", "simple-log", "",
    ]))
    log = open(Path(work) / "coturn.log", "wb")  # noqa: SIM115 - the child keeps its own descriptor
    return subprocess.Popen(["turnserver", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)


def start_server(mode: str, server_ns: int, log_path: str, secret: str) -> subprocess.Popen[bytes]:
    node_ip = {"turn": SERVER_IP, "multihomed": SECOND_IP, "ipv6": f"{SERVER_IP},{SERVER_IP6}"}.get(mode, PUBLIC_IP)
    http_host = "::" if mode == "ipv6" else "0.0.0.0"  # asyncio binds "::" IPv6 only
    args = ["serve", "--node-ip", node_ip, "--workers", "1", "--http-host", http_host, "--http-port",
            str(HTTP_PORT), "--rtc-port-base", str(RTC_PORT), "--keys", f"{netns.API_KEY}:{netns.API_SECRET}"]
    if mode == "turn":
        args += ["--turn-servers", json.dumps([{"host": ROUTER_C_IP, "port": TURN_PORT, "protocol": "udp",
                                                "secret": secret, "ttl_s": 600}])]
    cmd = ["nsenter", f"--net=/proc/{server_ns}/ns/net", "--", sys.executable, str(Path(netns.__file__)),
           "--serve", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)


def inner(mode: str, timeout_s: float) -> dict[str, Any]:
    holders = [_holder(), _holder()]
    work = tempfile.mkdtemp(prefix="mr-reach-")
    procs: list[subprocess.Popen[bytes]] = []
    server: subprocess.Popen[bytes] | None = None
    result: dict[str, Any] = {"ok": False}
    secret = secrets.token_hex(16)
    try:
        time.sleep(0.1)
        server_ns, client_ns = holders[0].pid, holders[1].pid
        setup_network(mode, server_ns, client_ns)
        if mode == "turn":
            procs.append(start_coturn(secret, work))
        server = start_server(mode, server_ns, os.path.join(work, "server.log"), secret)
        netns.wait_ready(server, f"http://[{SERVER_IP6}]:{HTTP_PORT}" if mode == "ipv6" else
                         f"http://{SERVER_IP}:{HTTP_PORT}", 1)
        host = {"turn": SERVER_IP, "multihomed": SECOND_IP, "ipv6": f"[{SERVER_IP6}]"}.get(mode, PUBLIC_IP)
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
                   REACH_TURN_SECRET=secret if mode == "turn" else "")
        clients = subprocess.run(
            ["nsenter", f"--net=/proc/{client_ns}/ns/net", "--", sys.executable, str(Path(__file__).resolve()),
             "--js-clients" if mode == "tcp_js" else "--clients", host, "--timeout", str(timeout_s)],
            capture_output=True, text=True, timeout=timeout_s + 20, cwd=ROOT, env=env)
        for line in reversed(clients.stdout.splitlines()):
            if line.startswith(RESULT_MARK):
                result = json.loads(line[len(RESULT_MARK):])
                break
        else:
            result = {"ok": False, "error": f"clients exited {clients.returncode}", "clients_stderr":
                      clients.stderr[-4000:]}
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the test as data
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    finally:
        if server is not None:
            netns.stop_server(server)
        for proc in [*procs, *holders]:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(5)
    for name in ("server.log", "coturn.log"):
        path = Path(work) / name
        if path.exists():
            result[name.replace(".", "_")] = path.read_text(errors="replace")[-8000:]
    shutil.rmtree(work, ignore_errors=True)
    return result


# ------------------------------------------------------------------------------------------- clients (client ns)


def turn_allocate(server: tuple[str, int], username: str, password: str) -> int:
    """A TURN Allocate (RFC 8656) with long-term credentials: 200 when coturn grants it, else its error code."""
    import hashlib
    import socket

    from router import stun

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # one 5-tuple: coturn's nonce belongs to it
    sock.settimeout(3)

    def ask(attributes: list[tuple[int, bytes]], key: bytes | None) -> stun.StunMessage:
        request = stun.StunMessage(0x003, stun.StunClass.REQUEST, secrets.token_bytes(12), attributes)
        sock.sendto(request.to_bytes(key), server)
        return stun.parse(sock.recv(2048))

    transport = [(0x0019, bytes([17, 0, 0, 0]))]  # REQUESTED-TRANSPORT: UDP
    with sock:
        challenge = ask(transport, None)
        realm, nonce = challenge.get(0x0014) or b"", challenge.get(0x0015) or b""
        key = hashlib.md5(username.encode() + b":" + realm + b":" + password.encode()).digest()  # RFC 8489 §9.2.2
        answer = ask([(0x0006, username.encode()), (0x0014, realm), (0x0015, nonce), *transport], key)
    if answer.cls == stun.StunClass.SUCCESS:
        return 200
    code = answer.get(0x0009) or b"\0\0\0\0"  # ERROR-CODE
    return code[2] * 100 + code[3]


def token(identity: str) -> str:
    """A token of the room ``reach`` for ``identity`` (the SDK's own AccessToken, as an application makes one)."""
    from livekit import api

    grants = api.VideoGrants(room_join=True, room="reach")
    return api.AccessToken(netns.API_KEY, netns.API_SECRET).with_identity(identity).with_grants(grants).to_jwt()


async def clients(host: str, timeout_s: float, turn_secret: str) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "lk_scenarios"))
    from common import Publisher, Receiver, connect, wait_for

    url, http = f"ws://{host}:{HTTP_PORT}", f"http://{host}:{HTTP_PORT}"
    result: dict[str, Any] = {}
    room_a = await connect(url, token("alice"))
    publisher = Publisher(room_a, WIDTH, HEIGHT)
    result["published"] = await publisher.publish()
    room_b = await connect(url, token("bob"))
    bob = Receiver(room_b).attach()
    await wait_for(lambda: bob.frames("alice", WIDTH, HEIGHT) >= 30 and bob.audio.get("alice", 0) >= 50,
                   timeout_s / 2)
    result["b_video"], result["b_audio"] = dict(bob.video), dict(bob.audio)
    await room_a.local_participant.publish_data(b"through", reliable=True, destination_identities=["bob"])
    await wait_for(lambda: bool(bob.data), 10)
    result["b_data"] = [d["data"] for d in bob.data]
    stats = {}
    for identity in ("alice", "bob"):
        query = f"{http}/e2e/stats?room=reach&identity={identity}"
        body = await asyncio.to_thread(lambda q=query: urllib.request.urlopen(q, timeout=5).read())
        stats[identity] = {k: v.get("transport") for k, v in json.loads(body).items() if isinstance(v, dict)}
    result["transports"] = stats
    health = await asyncio.to_thread(lambda: urllib.request.urlopen(f"{http}/healthz", timeout=5).read())
    result["participants"] = json.loads(health)["participants"]
    if turn_secret:  # coturn refuses TURN REST credentials past their expiry and takes fresh ones
        from control.rtc.turn import TurnServer, rest_credentials

        server = (ROUTER_C_IP, TURN_PORT)
        expired = rest_credentials(turn_secret, f"{int(time.time()) - 5}:probe")
        fresh = TurnServer(ROUTER_C_IP, TURN_PORT, secret=turn_secret, ttl_s=60).credentials("probe")
        result["turn_expired"] = await asyncio.to_thread(turn_allocate, server, *expired)
        result["turn_fresh"] = await asyncio.to_thread(turn_allocate, server, *fresh)
    await bob.stop()
    await publisher.stop()
    await room_b.disconnect()
    await room_a.disconnect()
    return result


# The browser subscribes to alice and samples its inbound RTP until it decoded 30 frames and received audio.
JS_SUBSCRIBER = """
async ({url, token, seconds}) => {
  const { Room, RoomEvent } = LivekitClient;
  const out = {connected: false, subscribed: [], video: null, audio: null};
  const room = new Room();
  const tracks = [];
  room.on(RoomEvent.TrackSubscribed, (track, pub, participant) => {
    out.subscribed.push(participant.identity + "/" + track.kind);
    const el = track.attach();
    el.muted = true;
    document.body.appendChild(el);
    tracks.push(track);
  });
  await room.connect(url, token);
  out.connected = true;
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    for (const track of tracks) {
      const report = await track.getRTCStatsReport();
      if (!report) continue;
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") {
          out.video = {framesDecoded: s.framesDecoded || 0, width: s.frameWidth || 0, height: s.frameHeight || 0};
        } else if (s.type === "inbound-rtp" && s.kind === "audio") {
          out.audio = {packetsReceived: s.packetsReceived || 0, totalSamplesReceived: s.totalSamplesReceived || 0};
        }
      });
    }
    if (out.video && out.video.framesDecoded >= 30 && out.audio && out.audio.packetsReceived >= 50) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  await room.disconnect();
  return out;
}
"""


async def js_clients(host: str, timeout_s: float) -> dict[str, Any]:
    """alice publishes with the ``livekit`` SDK, ``livekit-client`` in Chromium subscribes as ``js``; the worker's
    view of js's transports is read while the browser is still connected."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "lk_scenarios"))
    from types import SimpleNamespace

    from common import Publisher, connect
    from js_client import Browser

    url, http = f"ws://{host}:{HTTP_PORT}", f"http://{host}:{HTTP_PORT}"
    result: dict[str, Any] = {}
    browser = Browser(SimpleNamespace(url=f"ws://127.0.0.1:{JS_PAGE_PORT}"), JS_PAGE_PORT)  # the page on lo
    try:
        await browser.serve()
        room_a = await connect(url, token("alice"))
        publisher = Publisher(room_a, WIDTH, HEIGHT)
        result["published"] = await publisher.publish()
        proc = await browser.start(url, token("js"), JS_SUBSCRIBER, timeout_s / 2)
        stats: dict[str, Any] = {}

        async def js_transports() -> None:  # sampled while the browser is connected and receiving
            query = f"{http}/e2e/stats?room=reach&identity=js"
            deadline = time.monotonic() + timeout_s / 2
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    body = await asyncio.to_thread(lambda: urllib.request.urlopen(query, timeout=5).read())
                    found = {k: v.get("transport") for k, v in json.loads(body).items() if isinstance(v, dict)}
                    connected = {k: t for k, t in found.items() if t and t.get("remote")}  # a transport in use
                    if "sub" in connected:
                        stats.update(connected)
                        return
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(js_transports())
        result["js"] = await browser.result(proc, timeout_s / 2 + 15)
        await asyncio.gather(watcher, return_exceptions=True)
        result["transports"] = {"js": stats}
        await publisher.stop()
        await room_a.disconnect()
    finally:
        await browser.close()
    return result


def run_clients(host: str, timeout_s: float, turn_secret: str, js: bool = False) -> dict[str, Any]:
    try:
        work = js_clients(host, timeout_s) if js else clients(host, timeout_s, turn_secret)
        return {"ok": True, "result": asyncio.run(asyncio.wait_for(work, timeout_s))}
    except BaseException as exc:  # noqa: BLE001
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inner", choices=MODES)
    parser.add_argument("--clients", metavar="HOST")
    parser.add_argument("--js-clients", metavar="HOST")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("mode", nargs="?", choices=MODES)
    args = parser.parse_args()
    if args.clients or args.js_clients:
        result = run_clients(args.clients or args.js_clients, args.timeout, os.environ.get("REACH_TURN_SECRET", ""),
                             js=bool(args.js_clients))
    elif args.inner:
        result = inner(args.inner, args.timeout)
    else:
        print(json.dumps(run_reach(args.mode or "nat", args.timeout), indent=2))
        return 0
    sys.stdout.write(RESULT_MARK + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
