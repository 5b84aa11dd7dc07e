"""A pipe between two hosts: two workers' media sides in two network namespaces, joined by SRTP over UDP.

Two namespaces, both made by the test: ``unshare --net`` gives the inner process a namespace of its own (host 1),
and it makes host 2's with an ``unshare --net sleep`` holder, joined to host 1 by one veth pair. TEST-NET-2
addresses only (RFC 5737):

    host 1  h1 198.51.100.1/24 ──────── h2 198.51.100.2/24  host 2
            source worker, UDP 7882              destination worker, UDP 7882 (the same port: another host)

Each host runs one worker's media side (``router.media_service.MediaService`` on an Engine whose socket is bound to
every address, as a worker's is by default), driven by the requests control would send (docs/FORWARDING.md, Pipes
between hosts): host 2 (a process in its namespace) gets ``media_router.produce_pipe`` with ``peer_ip``
198.51.100.1 and the keys reversed, and a subscriber; host 1 (this process) gets a publisher and ``producer.pipe``
toward 198.51.100.2 with the keys. The publisher and the subscriber are sockets on each host's loopback, keyed
directly (tests/router/test_pipe_service.py's ``Peer``). Host 1 also reads every frame leaving ``h1`` (an AF_PACKET
socket) to check that the media crossed encrypted. The result comes back as one JSON line.

Outer use: ``run_xpipe()`` -> dict, raising :class:`netns.NetnsUnavailable` (with the reason) when this host cannot.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import select
import socket
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402

HOST1_IP = "198.51.100.1"
HOST2_IP = "198.51.100.2"
PORT = 7882
PACKETS = 30
MARK = b"XPIPE-CLEARTEXT-MARK"  # in every payload: it must never be seen on the wire between the hosts
RESULT_MARK = "XPIPE-RESULT "
NODE_MARK = "XPIPE-NODE "


def run_xpipe(timeout_s: float = 30.0) -> dict[str, Any]:
    """Runs the scenario in fresh namespaces; returns ``{"ok", "source", "dest", "wire", ...}``."""
    netns.check_available()
    return netns.run_inner([str(Path(__file__).resolve()), "--inner", "--timeout", str(timeout_s)], "xpipe",
                           timeout_s + 20, mark=RESULT_MARK)


# ------------------------------------------------------------------------------------------- one worker's media


async def start_node(ip: str) -> Any:
    """A worker's media side on ``ip`` (announced) and UDP ``PORT`` bound on every address."""
    from router.media_service import MediaService
    from router.ports import bind_udp
    from tests.router.fakes import FakeWorker
    from tests.router.test_pipe_service import Side

    worker = FakeWorker(asyncio.get_running_loop(), node_ips=(ip,))
    worker.sock.close()
    worker.sock = bind_udp("0.0.0.0", PORT).sock
    worker.bind_ip, worker.rtc_port = "0.0.0.0", PORT
    media = MediaService(worker)  # type: ignore[arg-type]
    media.start()
    return Side(media, worker.channel, worker)


def payloads() -> list[bytes]:
    from tests import packets
    from tests.router.test_pipe_service import PUB_SSRC, VP8

    return [packets.rtp(VP8, s, 3000 * s, PUB_SSRC, packets.vp8_payload(key=s == 1) + MARK)
            for s in range(1, PACKETS + 1)]


async def dest(srtp: Any) -> dict[str, Any]:
    """Host 2: the pipe's destination end and a subscriber; waits for the media, returns what it saw."""
    from router.messages import ConsumeRequest, CreateWebRtcTransportRequest, PipeProduceRequest
    from router.protocol import Empty, Method
    from tests.router.test_pipe_service import PIPE_SSRCS, VIDEO, VP8, Peer

    side = await start_node(HOST2_IP)
    await side.call(Method.MEDIA_ROUTER_CREATE, "r", Empty())
    await side.call(Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT, "r", CreateWebRtcTransportRequest(transport_id="sub"))
    subscriber = Peer(side, "sub")
    await side.call(Method.MEDIA_ROUTER_PRODUCE_PIPE, "r", PipeProduceRequest(
        producer_id="TR_video", peer_ip=HOST1_IP, peer_port=PORT, local_ip=HOST2_IP, kind="video",
        encodings=[("", s, r) for s, r in PIPE_SSRCS], payload_types=VIDEO.payload_types, clock_rate=90000,
        codecs=VIDEO.codecs, rtx_apt=VIDEO.rtx_apt, srtp=srtp.reversed()))
    await side.call(Method.TRANSPORT_CONSUME, "sub", ConsumeRequest(consumer_id="c", producer_id="TR_video",
                                                                    out_ssrc=0x5555, pt_map=[(VP8, 100)]))
    print(NODE_MARK + "ready", flush=True)
    received: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(received) < PACKETS and loop.time() < deadline:
        received += await subscriber.receive(0.2)
    return {"received": [{"seq": int.from_bytes(p[2:4], "big"), "ssrc": int.from_bytes(p[8:12], "big"),
                          "pt": p[1] & 0x7F, "payload": p[12:].hex()} for p in received],
            "counters": side.media.heartbeat()}


async def source(proc: subprocess.Popen[str], srtp: Any, sniffer: socket.socket) -> dict[str, Any]:
    """Host 1: a publisher and the pipe's source end toward host 2; sends once host 2 is ready."""
    from router.messages import CreateWebRtcTransportRequest, PipeRequest
    from router.protocol import Empty, Method
    from tests.router.test_pipe_service import PIPE_SSRCS, VIDEO, Peer

    side = await start_node(HOST1_IP)
    await side.call(Method.MEDIA_ROUTER_CREATE, "r", Empty())
    await side.call(Method.MEDIA_ROUTER_CREATE_WEBRTC_TRANSPORT, "r", CreateWebRtcTransportRequest(transport_id="pub"))
    publisher = Peer(side, "pub")
    await side.call(Method.TRANSPORT_PRODUCE, "pub", VIDEO)
    await side.call(Method.PRODUCER_PIPE, "TR_video", PipeRequest(
        pipe_id="TR_video>node2", peer_ip=HOST2_IP, peer_port=PORT, local_ip=HOST1_IP, ssrcs=PIPE_SSRCS,
        payload_types=VIDEO.payload_types, rtx_apt=VIDEO.rtx_apt, srtp=srtp))
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 15)
    if not line.startswith(NODE_MARK + "ready"):
        raise RuntimeError(f"host 2 did not get ready: {line!r}")
    for packet in payloads():
        publisher.send(packet)
        await asyncio.sleep(0.01)
    out = await asyncio.wait_for(asyncio.to_thread(proc.stdout.read), 15)
    await asyncio.sleep(0.1)
    wire = []
    while select.select([sniffer], [], [], 0)[0]:
        frame = sniffer.recv(65536)
        ip = frame[14:]
        if frame[12:14] != b"\x08\x00" or ip[9] != 17 or socket.inet_ntoa(ip[12:16]) != HOST1_IP:
            continue
        udp = ip[(ip[0] & 0x0F) * 4:]
        data = udp[8:]
        if int.from_bytes(udp[2:4], "big") == PORT and len(data) > 1 and not 192 <= data[1] <= 223:  # RTP
            wire.append({"length": len(data), "cleartext": MARK in data})
    node = next((json.loads(x[len(NODE_MARK):]) for x in out.splitlines() if x.startswith(NODE_MARK + "{")), None)
    return {"source": side.media.heartbeat(), "dest": node, "wire": wire,
            "sent": [{"length": len(p), "payload": p[12:].hex()} for p in payloads()]}


# ------------------------------------------------------------------------------------------- inner (host 1)


def _run(*args: str, ns: int | None = None) -> None:
    prefix = ["nsenter", f"--net=/proc/{ns}/ns/net", "--"] if ns else []
    done = subprocess.run([*prefix, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")


def inner(timeout_s: float) -> dict[str, Any]:
    from router.messages import PipeSrtp

    holder = subprocess.Popen(["unshare", "--net", "--", "sleep", str(int(timeout_s) + 10)])
    proc: subprocess.Popen[str] | None = None
    sniffer: socket.socket | None = None
    try:
        _run("ip", "link", "set", "lo", "up")
        _run("ip", "link", "add", "h1", "type", "veth", "peer", "name", "h2", "netns", str(holder.pid))
        _run("ip", "addr", "add", f"{HOST1_IP}/24", "dev", "h1")
        _run("ip", "link", "set", "h1", "up")
        _run("ip", "link", "set", "lo", "up", ns=holder.pid)
        _run("ip", "addr", "add", f"{HOST2_IP}/24", "dev", "h2", ns=holder.pid)
        _run("ip", "link", "set", "h2", "up", ns=holder.pid)
        sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
        sniffer.bind(("h1", 0))
        sniffer.setblocking(False)
        srtp = PipeSrtp.generate()
        keys = f"{srtp.profile}:{srtp.local_key.hex()}:{srtp.remote_key.hex()}"  # as control would relay them
        proc = subprocess.Popen(
            ["nsenter", f"--net=/proc/{holder.pid}/ns/net", "--", sys.executable, str(Path(__file__).resolve()),
             "--node", keys],
            stdout=subprocess.PIPE, text=True, cwd=ROOT)
        result = asyncio.run(asyncio.wait_for(source(proc, srtp, sniffer), timeout_s))
        result["ok"] = True
        return result
    finally:
        if sniffer is not None:
            sniffer.close()
        for p in (proc, holder):
            if p is not None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait()


def node(keys: str) -> int:
    """Host 2's process: prints ready, then one JSON line with what its subscriber received."""
    from router.messages import PipeSrtp

    profile, local_key, remote_key = keys.split(":")
    srtp = PipeSrtp.from_wire({"profile": profile, "local_key": bytes.fromhex(local_key),
                               "remote_key": bytes.fromhex(remote_key)})
    result = asyncio.run(dest(srtp))
    print(NODE_MARK + json.dumps(result), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inner", action="store_true")
    ap.add_argument("--node", default="")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    if args.node:
        return node(args.node)
    try:
        result = inner(args.timeout)
    except Exception:
        result = {"ok": False, "error": traceback.format_exc()}
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
