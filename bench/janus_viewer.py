"""Janus's side of one viewer, for the side-by-side bench (bench/janus.py runs Janus and measures it).

Why this exists: the bench drives Janus with the same generator as mediarouter, so it must speak to Janus as a
viewer does. Owns the configuration files of one Janus run (:func:`render_config`: the Debian package's defaults
except one SRTP RTP mountpoint, the plain HTTP API and ICE on the namespace's one address, and ``event_loops``),
Janus's offer and the viewer's answer (:func:`parse_offer`, :func:`render_answer`), the HTTP API flow
(:class:`JanusApi`: create a session, attach ``janus.plugin.streaming``, ``watch``, ``start``; events from the
long poll) and the viewer's side of ICE (:class:`JanusPeer`: Janus runs full ICE and is the controlling agent; the
viewer answers its checks, RFC 8445 section 7.3 and RFC 8489, checks back as the controlled agent and starts the
DTLS client handshake of ``bench.peer`` once Janus nominated the pair).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aioice import stun

from bench.peer import ServerParams, SetupError, SyntheticPeer, integrity_ok

JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")  # the Debian package's plugins and transports
NODE_IP = "198.51.100.1"  # TEST-NET-2 (RFC 5737): Janus's one interface address inside the namespace
HTTP_PORT = 8088
MOUNT_PORT = 5004
MOUNT_ID = 1
VIDEO_PT = 96
_STUN_REQUEST = 0x0001
_STUN_MAGIC = b"\x21\x12\xa4\x42"

# ---- configuration --------------------------------------------------------------------------------------------

def srtp_key() -> bytes:
    """A fresh AES-CM-128 master key and salt (30 bytes) for the mountpoint's SRTP input."""
    return secrets.token_bytes(30)


def render_config(folder: Path, *, event_loops: int | None, srtp_master: bytes, node_ip: str = NODE_IP,
                  http_port: int = HTTP_PORT, mount_port: int = MOUNT_PORT) -> Path:
    """Write one Janus run's configuration into ``folder``; returns the path of janus.jcfg.

    Only the streaming plugin and the HTTP transport are loaded (their folders hold links to the Debian package's
    libraries), no event handlers or loggers; everything else is Janus's default."""
    for sub, lib in (("plugins", "libjanus_streaming.so"), ("transports", "libjanus_http.so")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        link = folder / sub / lib
        if not link.exists():
            link.symlink_to(JANUS_LIB / sub / lib)
    (folder / "events").mkdir(exist_ok=True)
    (folder / "loggers").mkdir(exist_ok=True)
    loops = f"\tevent_loops = {event_loops}\n" if event_loops is not None else ""
    (folder / "janus.jcfg").write_text(
        "general: {\n"
        f"\tconfigs_folder = \"{folder}\"\n"
        f"\tplugins_folder = \"{folder / 'plugins'}\"\n"
        f"\ttransports_folder = \"{folder / 'transports'}\"\n"
        f"\tevents_folder = \"{folder / 'events'}\"\n"
        f"\tloggers_folder = \"{folder / 'loggers'}\"\n"
        "\tdebug_level = 4\n"
        f"{loops}"
        "}\n"
        "media: {\n}\n"
        "nat: {\n"
        f"\tice_enforce_list = \"{node_ip}\"\n"
        "}\n"
        "plugins: {\n}\ntransports: {\n}\nloggers: {\n}\nevents: {\n}\n")
    (folder / "janus.transport.http.jcfg").write_text(
        "general: {\n"
        "\tjson = \"compact\"\n"
        "\tbase_path = \"/janus\"\n"
        "\thttp = true\n"
        f"\tport = {http_port}\n"
        f"\tip = \"{node_ip}\"\n"
        "\thttps = false\n"
        "}\n"
        "admin: {\n\tadmin_http = false\n\tadmin_https = false\n}\n")
    (folder / "janus.plugin.streaming.jcfg").write_text(
        "general: {\n}\n"
        "bench: {\n"
        "\ttype = \"rtp\"\n"
        f"\tid = {MOUNT_ID}\n"
        "\tdescription = \"bench fan-out\"\n"
        "\tsrtpsuite = 80\n"
        f"\tsrtpcrypto = \"{base64.b64encode(srtp_master).decode()}\"\n"
        "\tmedia = (\n"
        "\t\t{\n"
        "\t\t\ttype = \"video\"\n"
        "\t\t\tmid = \"v\"\n"
        f"\t\t\tport = {mount_port}\n"
        f"\t\t\tpt = {VIDEO_PT}\n"
        "\t\t\tcodec = \"vp8\"\n"
        "\t\t}\n"
        "\t)\n"
        "}\n")
    return folder / "janus.jcfg"


# ---- SDP --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Offer:
    """What a viewer needs from Janus's offer."""

    ice_ufrag: str
    ice_pwd: str
    fingerprint: str
    candidates: list[tuple[str, int]]  # udp host candidates, IPv4
    mid: str
    ssrc: int
    pt: int


def parse_offer(sdp: str) -> Offer:
    """The ICE credentials, DTLS fingerprint, UDP IPv4 candidates and the video section's mid, SSRC and VP8 payload
    type of Janus's offer (one video m-section). Raises SetupError when any is missing."""
    values: dict[str, str] = {}
    candidates: list[tuple[str, int]] = []
    ssrc = None
    pt = None
    for raw in sdp.splitlines():
        line = raw.strip()
        if not line.startswith("a="):
            continue
        key, _, value = line[2:].partition(":")
        if key in ("ice-ufrag", "ice-pwd", "mid") and key not in values:
            values[key] = value
        elif key == "fingerprint" and value.lower().startswith("sha-256 "):
            values["fingerprint"] = value.split(" ", 1)[1]
        elif key == "candidate":
            parts = value.split()
            if len(parts) >= 8 and parts[2].lower() == "udp" and parts[7] == "host" and ":" not in parts[4]:
                candidates.append((parts[4], int(parts[5])))
        elif key == "ssrc" and ssrc is None:
            ssrc = int(value.split()[0])
        elif key == "rtpmap" and pt is None and "VP8/90000" in value.upper():
            pt = int(value.split()[0])
    missing = [k for k in ("ice-ufrag", "ice-pwd", "fingerprint", "mid") if k not in values]
    if missing or not candidates or ssrc is None or pt is None:
        what = missing + (["candidate"] if not candidates else []) + (["ssrc"] if ssrc is None else []) \
            + (["VP8 rtpmap"] if pt is None else [])
        raise SetupError(f"Janus's offer lacks {', '.join(what)}")
    return Offer(values["ice-ufrag"], values["ice-pwd"], values["fingerprint"], candidates, values["mid"], ssrc, pt)


def render_answer(offer: Offer, *, address: str, port: int, ice_ufrag: str, ice_pwd: str, fingerprint: str) -> str:
    """A recvonly answer: one host candidate, DTLS client (``setup:active``), VP8 with NACK and PLI, no header
    extensions (as the bench's viewers of mediarouter)."""
    lines = [
        "v=0", f"o=- {secrets.randbits(48)} 1 IN IP4 {address}", "s=-", "t=0 0", f"a=group:BUNDLE {offer.mid}",
        f"m=video 9 UDP/TLS/RTP/SAVPF {offer.pt}", f"c=IN IP4 {address}", f"a=mid:{offer.mid}", "a=recvonly",
        "a=rtcp-mux", f"a=ice-ufrag:{ice_ufrag}", f"a=ice-pwd:{ice_pwd}", f"a=fingerprint:sha-256 {fingerprint}",
        "a=setup:active", f"a=rtpmap:{offer.pt} VP8/90000", f"a=rtcp-fb:{offer.pt} nack",
        f"a=rtcp-fb:{offer.pt} nack pli", f"a=candidate:1 1 udp 2130706431 {address} {port} typ host",
        "a=end-of-candidates",
    ]
    return "\r\n".join(lines) + "\r\n"


# ---- the HTTP API -------------------------------------------------------------------------------------------

Post = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
Get = Callable[[str], Awaitable[Any]]


class JanusError(SetupError):
    """Janus refused a request or sent no answer in time."""


class JanusApi:
    """One Janus session over the HTTP API (``post(path, body)`` and ``get(path)`` return the decoded JSON); its
    handles' asynchronous events (the ``watch`` offer) arrive through :meth:`poll`, which the caller runs as a task
    for as long as the session lives (it also keeps the session alive)."""

    def __init__(self, post: Post, get: Get) -> None:
        self._post = post
        self._get = get
        self.session: int | None = None
        self._events: dict[int, asyncio.Queue[dict[str, Any]]] = {}

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": secrets.token_hex(6)}
        reply = await self._post(path, body)
        if reply.get("janus") == "error" or reply.get("transaction") != body["transaction"]:
            raise JanusError(f"Janus refused {body.get('janus')}: {reply.get('error', reply)}")
        return reply

    async def create(self) -> int:
        reply = await self._call("/janus", {"janus": "create"})
        self.session = int(reply["data"]["id"])
        return self.session

    async def attach(self, plugin: str = "janus.plugin.streaming") -> int:
        reply = await self._call(f"/janus/{self.session}", {"janus": "attach", "plugin": plugin})
        handle = int(reply["data"]["id"])
        self._events[handle] = asyncio.Queue()
        return handle

    async def message(self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None,
                      timeout: float = 10.0) -> dict[str, Any]:
        """Send a plugin message; returns the plugin's event for it (``plugindata`` and, for ``watch``, ``jsep``)."""
        request: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        reply = await self._call(f"/janus/{self.session}/{handle}", request)
        if reply.get("janus") == "event":  # answered synchronously
            return reply
        if reply.get("janus") != "ack":
            raise JanusError(f"unexpected answer to {body}: {reply}")
        deadline = time.monotonic() + timeout
        queue = self._events[handle]
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise JanusError(f"no event from Janus for {body} in {timeout} s") from None
            if event.get("janus") == "event" and event.get("transaction") == reply["transaction"]:
                data = event.get("plugindata", {}).get("data", {})
                if "error" in data:
                    raise JanusError(f"the streaming plugin refused {body}: {data['error']}")
                return event

    async def watch(self, handle: int, mountpoint: int = MOUNT_ID) -> str:
        """Ask to watch ``mountpoint``; returns Janus's SDP offer."""
        event = await self.message(handle, {"request": "watch", "id": mountpoint})
        jsep = event.get("jsep") or {}
        if jsep.get("type") != "offer":
            raise JanusError(f"watch answered without an offer: {event}")
        return str(jsep["sdp"])

    async def start(self, handle: int, answer_sdp: str) -> None:
        await self.message(handle, {"request": "start"}, {"type": "answer", "sdp": answer_sdp})

    def dispatch(self, event: dict[str, Any]) -> None:
        """Hand an event from the long poll to its handle's queue (others, e.g. ``webrtcup``, are dropped)."""
        sender = event.get("sender")
        if sender is not None and int(sender) in self._events:
            self._events[int(sender)].put_nowait(event)

    async def poll(self) -> None:
        """The session's long poll: events to their handles, until cancelled."""
        while True:
            events = await self._get(f"/janus/{self.session}?maxev=20")
            for event in events if isinstance(events, list) else [events]:
                self.dispatch(event)


class HttpTransport:
    """``post``/``get`` for :class:`JanusApi` over aiohttp."""

    def __init__(self, base: str) -> None:
        import aiohttp

        self.base = base
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._session.post(self.base + path, json=body) as r:
            reply: dict[str, Any] = await r.json(content_type=None)
            return reply

    async def get(self, path: str) -> Any:
        async with self._session.get(self.base + path) as r:
            return await r.json(content_type=None)

    async def close(self) -> None:
        await self._session.close()


# ---- ICE: the viewer's side ------------------------------------------------------------------------------------

def binding_success(request: bytes, mapped: tuple[str, int], key: bytes) -> bytes:
    """The Binding success response to ``request`` (its transaction id), mapping the requester to ``mapped``."""
    msg = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request[8:20])
    msg.attributes["XOR-MAPPED-ADDRESS"] = mapped
    msg.add_message_integrity(key)
    msg.add_fingerprint()
    return bytes(msg)


def controlled_request(server: ServerParams, client_ufrag: str, tie_breaker: int) -> bytes:
    """A Binding request from the controlled agent (no USE-CANDIDATE; RFC 8445 section 7.2.2)."""
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    msg.attributes["USERNAME"] = f"{server.ice_ufrag}:{client_ufrag}"
    msg.attributes["PRIORITY"] = (126 << 24) | (65535 << 8) | 255  # host, component 1
    msg.attributes["ICE-CONTROLLED"] = tie_breaker
    msg.add_message_integrity(server.ice_pwd.encode())
    msg.add_fingerprint()
    return bytes(msg)


def is_binding_request(data: bytes) -> bool:
    return len(data) >= 20 and data[0] < 4 and int.from_bytes(data[:2], "big") == _STUN_REQUEST \
        and data[4:8] == _STUN_MAGIC


class JanusPeer(SyntheticPeer):
    """A viewer's transport toward Janus: the controlled ICE agent that answers Janus's checks, then the DTLS
    client of ``bench.peer``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered = 0
        self.nominated = asyncio.Event()
        self.bad_integrity = 0

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.server is None or addr != (self.server.host, self.server.port):
            return
        if is_binding_request(data):
            key = self.ice_pwd.encode()
            if not integrity_ok(data, key):
                self.bad_integrity += 1
                return
            self.net.send_from(self.address, binding_success(data, addr, key), addr)
            self.answered += 1
            if "USE-CANDIDATE" in stun.parse_message(data).attributes:
                self.nominated.set()
            return
        self._inbox.put_nowait(data)

    def consent_request(self) -> bytes:
        assert self.server is not None
        return controlled_request(self.server, self.ice_ufrag, self.tie_breaker)

    async def _ice(self, server: ServerParams) -> None:
        request = controlled_request(server, self.ice_ufrag, self.tie_breaker)
        transaction = request[8:20]
        key = server.ice_pwd.encode()
        ours = False
        while not (ours and self.nominated.is_set()):
            if not ours:
                self.net.send_from(self.address, request, (server.host, server.port))
            answer = await self._check_answer(transaction, 0.1)
            if answer is None:
                continue
            data, message = answer
            if message.message_class == stun.Class.RESPONSE and integrity_ok(data, key):
                ours = True
