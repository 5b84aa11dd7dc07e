"""The aiortc baseline: a minimal Python SFU built on aiortc, driven by the same load generator.

What the relay is (the child process, ``python -m bench.aiortc_relay``, pinned to a worker core): one
``RTCPeerConnection`` per participant. The publisher's connection has a recvonly video transceiver; each
subscriber's connection has a sendonly video transceiver whose track never yields a frame (so aiortc's encoder never
runs). aiortc's public track API only hands out *decoded* frames (``MediaRelay`` relays frames and every subscriber
re-encodes), which would make this baseline orders of magnitude slower and measure VP8 codecs, not forwarding. So the
relay forwards *encoded RTP*: the publisher receiver's ``_handle_rtp_packet`` (called by aiortc's DTLS transport
after SRTP unprotect, RTP parse and SSRC routing) is replaced by a function that rewrites SSRC, sequence number and
payload type for each subscriber and hands the packet to that subscriber's ``RTCDtlsTransport._send_rtp`` (SRTP
protect, ICE send). This skips aiortc's jitter buffer and decoder: it is the cheapest relay one can build on aiortc
(an upper bound for it), the kind of packet relay a Python user would write.

The generator's participants speak to aiortc as an ICE-lite peer: aiortc offers (ICE full, controlling; DTLS
actpass), the participant answers ``a=ice-lite`` and ``a=setup:active``, answers aiortc's authenticated checks
(MESSAGE-INTEGRITY with its own password) and then runs its DTLS client (``bench.peer``). Measured: forwarded packets
per CPU-second of the relay process (the scheduler's run time of its threads), loss and latency at the generator.
The relay's libsrtp keeps its own crypto primitives (``crypto_kernel.install(srtp_crypto="libsrtp")``), as aiortc
has them.

Parent/child protocol: JSON lines. Parent -> child: {"op": "publisher"|"subscriber", "profile": "cm80"|"gcm"},
{"op": "answer", "id": i, "sdp": ...}, {"op": "wire"}; child -> parent: {"id": i, "sdp": offer} / {"ok": true}.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fastpath
from bench._loadgen import LoadGen
from bench.net import GeneratorSocket, participant_address
from bench.peer import Credentials, ServerParams, SetupError, SyntheticPeer, integrity_ok
from bench.probe import ProcProbe
from bench.server import plan_cores
from bench.session import measure
from control.workers import procstat

# ---- the generator side ------------------------------------------------------------------------------------------

class LitePeer(SyntheticPeer):
    """A participant that answers the full ICE agent's checks (ICE-lite, RFC 8445 §2.5) before its DTLS client."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nominated = asyncio.Event()
        self.nominated_by: tuple[str, int] | None = None

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if data and data[0] < 4 and len(data) >= 20:
            self._answer_check(data, addr)
            return
        super()._on_datagram(data, addr)

    def _answer_check(self, data: bytes, addr: tuple[str, int]) -> None:
        from aioice import stun

        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_class != stun.Class.REQUEST or not integrity_ok(data, self.ice_pwd.encode()):
            return
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        response.add_message_integrity(self.ice_pwd.encode())
        response.add_fingerprint()
        self.net.send_from(self.address, bytes(response), addr)
        if "USE-CANDIDATE" in request.attributes:
            # May arrive before connect_lite() knows the server's address: remember where it came from.
            self.nominated_by = addr
            self.nominated.set()

    async def connect_lite(self, server: ServerParams, timeout: float = 15.0) -> Any:
        self.server = server
        try:
            await asyncio.wait_for(self.nominated.wait(), timeout)
            if self.nominated_by != (server.host, server.port):
                raise SetupError(f"{self.address}: nominated from {self.nominated_by}, not from aiortc's candidate")
            return await asyncio.wait_for(self._dtls(server), timeout)
        except TimeoutError:
            raise SetupError(f"{self.address}: aiortc did not connect in {timeout} s") from None
        finally:
            self.net.unregister(self.address)


def parse_offer(sdp: str) -> dict[str, Any]:
    def find(pattern: str) -> str:
        m = re.search(pattern, sdp, re.MULTILINE)
        if m is None:
            raise ValueError(f"aiortc offer lacks {pattern!r}")
        return m.group(1)

    cand = re.search(r"^a=candidate:\S+ 1 udp \d+ (127\.0\.0\.1) (\d+) typ host", sdp, re.MULTILINE)
    if cand is None:
        raise ValueError("aiortc offer has no 127.0.0.1 host candidate")
    ssrc = re.search(r"^a=ssrc:(\d+) ", sdp, re.MULTILINE)
    return {"ufrag": find(r"^a=ice-ufrag:(\S+)"), "pwd": find(r"^a=ice-pwd:(\S+)"),
            "fingerprint": find(r"^a=fingerprint:sha-256 (\S+)"), "host": cand.group(1), "port": int(cand.group(2)),
            "vp8_pt": int(find(r"^a=rtpmap:(\d+) VP8/90000")), "mid": find(r"^a=mid:(\S+)"),
            "ssrc": int(ssrc.group(1)) if ssrc else None}


def answer_sdp(offer: dict[str, Any], peer: SyntheticPeer, *, direction: str, ssrc: int | None) -> str:
    lines = [
        "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", f"a=group:BUNDLE {offer['mid']}", "a=ice-lite",
        "a=msid-semantic: WMS", f"m=video 9 UDP/TLS/RTP/SAVPF {offer['vp8_pt']}", f"c=IN IP4 {peer.address}",
        f"a=mid:{offer['mid']}", f"a={direction}", "a=rtcp-mux", f"a=ice-ufrag:{peer.ice_ufrag}",
        f"a=ice-pwd:{peer.ice_pwd}", f"a=fingerprint:sha-256 {peer.credentials.fingerprint}", "a=setup:active",
        f"a=rtpmap:{offer['vp8_pt']} VP8/90000",
        f"a=candidate:1 1 udp 2130706431 {peer.address} {peer.net.port} typ host", "a=end-of-candidates",
    ]
    if ssrc is not None:
        lines.append(f"a=ssrc:{ssrc} cname:bench")
    return "\r\n".join(lines) + "\r\n"


class RelayProcess:
    def __init__(self, core: int) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
                   BENCH_RELAY_CORE=str(core))
        self.process = subprocess.Popen([sys.executable, "-m", "bench.aiortc_relay"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env, cwd=root)

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        line = await asyncio.to_thread(self.process.stdout.readline)
        if not line:
            raise RuntimeError("aiortc relay process exited")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"aiortc relay: {reply['error']}")
        return reply

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def run_aiortc_relay(opts: Any) -> dict[str, Any]:
    """1 publisher -> ``opts.subscribers`` through the aiortc relay at ``opts.rate`` (0 = flat out)."""
    plan = plan_cores(1)
    relay = RelayProcess(plan.workers[0])
    net = GeneratorSocket(gro=opts.gro)
    subscribers = opts.subscribers
    gen = LoadGen(net.fileno(), 1, subscribers, 0)
    credentials = Credentials.generate()
    original = os.sched_getaffinity(0)
    net.start_dispatch()
    started = time.monotonic()
    try:
        if not plan.shared:
            os.sched_setaffinity(0, {plan.generator})

        async def connect(index: int, role: str) -> tuple[Any, dict[str, Any], LitePeer]:
            reply = await relay.call({"op": role, "profile": opts.srtp})
            offer = parse_offer(reply["sdp"])
            peer = LitePeer(net, participant_address(index), credentials, opts.srtp)
            ssrc = 0x2000 + index if role == "publisher" else None
            direction = "sendonly" if role == "publisher" else "recvonly"
            await relay.call({"op": "answer", "id": reply["id"], "sdp": answer_sdp(offer, peer, direction=direction,
                                                                                  ssrc=ssrc)})
            server = ServerParams(offer["ufrag"], offer["pwd"], offer["fingerprint"].upper(), offer["host"],
                                  offer["port"])
            keys = await peer.connect_lite(server)
            return keys, offer, peer

        pub_keys, pub_offer, pub_peer = await connect(0, "publisher")
        subs = [await connect(1 + i, "subscriber") for i in range(subscribers)]
        await relay.call({"op": "wire"})
        net.stop_dispatch()
        pub_tx = fastpath.SrtpContext(pub_keys.profile, pub_keys.local, True)
        assert pub_peer.server is not None
        stream = gen.add_sender(pub_peer.address, pub_peer.server.host, pub_peer.server.port, pub_tx, 0x2000,
                                pub_offer["vp8_pt"], opts.size - 12, opts.rate, video=True, clock_rate=90000)
        for i, (keys, offer, peer) in enumerate(subs):
            assert peer.server is not None
            gen.add_receiver(offer["ssrc"], fastpath.SrtpContext(keys.profile, keys.remote, False), stream,
                             report_ctx=fastpath.SrtpContext(keys.profile, keys.local, True), report_from=peer.address,
                             report_to=peer.server.host, report_port=peer.server.port, reporter_ssrc=0x7000_0000 + i)
        setup_s = time.monotonic() - started
        m = await measure(gen, ProcProbe([relay.process.pid], []), net.port, [subscribers], opts.seconds,
                          verify_every=opts.verify_every)
        rss = procstat.rss_bytes(relay.process.pid)
    finally:
        net.close()
        relay.stop()
        os.sched_setaffinity(0, original)
    cpu = sum(m.worker_cpu_s)
    return {
        "subscribers": subscribers,
        "rate_pps": opts.rate or "max",
        "forwarded_pps": round(m.forwarded_pps, 1),
        "cpu_us_per_packet": round(m.cpu_us_per_packet, 2),
        "packets_per_cpu_second": round(m.received / cpu, 1) if cpu > 0 else None,
        "relay_cpu_pct": round(100 * cpu / m.seconds, 1),
        "loss_pct": round(m.loss_pct, 4),
        "latency_ms_p50": m.latency_ms_p50,
        "latency_ms_p99": m.latency_ms_p99,
        "rss_mb": round(rss / 2**20, 1),
        "setup_s": round(setup_s, 2),
        "what": "aiortc 1 RTCPeerConnection per participant; encoded RTP relayed from the publisher's receiver "
                "to each subscriber's RTCDtlsTransport._send_rtp (no jitter buffer, no decode/encode)",
        # The baseline's speed moves with these releases (pyproject pins only aiortc's lower bound).
        "versions": {name: _version(name) for name in ("aiortc", "aioice", "pylibsrtp")},
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---- the relay process -------------------------------------------------------------------------------------------

async def _relay_main() -> None:
    import aioice.ice
    from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
    from aiortc.rtp import RtpPacket

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # loopback only

    class SilentTrack(MediaStreamTrack):
        kind = "video"

        async def recv(self) -> Any:
            await asyncio.Event().wait()  # never yields a frame: the encoder never runs

    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    loop.run_in_executor(None, read_stdin)
    pcs: list[Any] = []
    publisher: Any = None
    subscribers: list[Any] = []

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while (line := await lines.get()) is not None:
        msg = json.loads(line)
        try:
            if msg["op"] in ("publisher", "subscriber"):
                pc = RTCPeerConnection()
                if msg["op"] == "publisher":
                    pc.addTransceiver("video", direction="recvonly")
                    publisher = pc
                else:
                    pc.addTransceiver(SilentTrack(), direction="sendonly")
                    subscribers.append(pc)
                pcs.append(pc)
                await pc.setLocalDescription(await pc.createOffer())
                reply({"id": len(pcs) - 1, "sdp": pc.localDescription.sdp})
            elif msg["op"] == "answer":
                await pcs[msg["id"]].setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
                reply({"ok": True})
            elif msg["op"] == "wire":
                deadline = time.monotonic() + 15
                while any(pc.connectionState != "connected" for pc in pcs):
                    if time.monotonic() > deadline:
                        raise RuntimeError("not every peer connection is connected")
                    await asyncio.sleep(0.05)
                outs = []
                for pc in subscribers:
                    sender = pc.getTransceivers()[0].sender
                    codec = pc.getTransceivers()[0]._codecs[0]
                    outs.append([sender.transport, sender._ssrc, codec.payloadType, 0])
                receiver = publisher.getTransceivers()[0].receiver

                async def forward(packet: RtpPacket, arrival_time_ms: int, _outs: list[Any] = outs) -> None:
                    for out in _outs:
                        out[3] = (out[3] + 1) & 0xFFFF
                        copy = RtpPacket(payload_type=out[2], marker=packet.marker, sequence_number=out[3],
                                         timestamp=packet.timestamp, ssrc=out[1], payload=packet.payload)
                        await out[0]._send_rtp(copy.serialize())

                receiver._handle_rtp_packet = forward
                reply({"ok": True})
            else:
                reply({"error": f"unknown op {msg['op']!r}"})
        except Exception as exc:  # report to the parent instead of dying silently
            reply({"error": f"{type(exc).__name__}: {exc}"})
    for pc in pcs:
        await pc.close()


def _child() -> None:
    from fastpath import crypto_kernel

    # The child imports fastpath (through this module); libsrtp keeps its own primitives here, as aiortc has them
    # anywhere else (fastpath.crypto_kernel is mediarouter's, not the baseline's).
    replaced = {name: how for name, how in crypto_kernel.install(srtp_crypto="libsrtp").items()
                if not how.startswith("libsrtp")}
    if replaced:
        sys.exit(f"aiortc relay: libsrtp must keep its own primitives here, but {replaced}")
    core = os.environ.get("BENCH_RELAY_CORE")
    if core is not None:
        os.sched_setaffinity(0, {int(core)})
    asyncio.run(_relay_main())


if __name__ == "__main__":
    _child()
