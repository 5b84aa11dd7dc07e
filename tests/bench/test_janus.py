"""bench/janus.py and bench/janus_viewer.py: Janus's configuration, its HTTP API flow (against a fake Janus), the
viewer's ICE answers, the ``x janus`` accounting and, when the janus package is installed and this is root, a short
run through Janus."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
from aioice import stun

from bench import janus, janus_viewer
from bench.peer import Credentials, ServerParams, SetupError, integrity_ok

OFFER = "\r\n".join([
    "v=0", "o=- 1796637483620840 1 IN IP4 127.0.0.1", "s=Mountpoint 1", "t=0 0", "a=group:BUNDLE v",
    "a=fingerprint:sha-256 7B:E3:31:A7:B2:A3:6F:5D:45:16:4A:BC:72:DE:6B:8A:9F:A5:DF:33:E8:1C:B2:44:D9:41:6F:A0:A3:F8"
    ":C9:2D", "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "c=IN IP4 127.0.0.1", "a=sendonly", "a=mid:v", "a=rtcp-mux",
    "a=ice-ufrag:e5Vi", "a=ice-pwd:0cp0NUe58lxBVdyGr66NpY", "a=setup:actpass", "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 nack", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96", "a=ssrc-group:FID 4187194234 2001450123",
    "a=ssrc:4187194234 cname:janus", "a=ssrc:2001450123 cname:janus",
    "a=candidate:1 1 udp 2015363327 198.51.100.1 34977 typ host", "a=end-of-candidates", ""])


# ---- configuration ----

def test_config_loads_only_streaming_and_http_and_sets_event_loops_only_when_asked(tmp_path: Path) -> None:
    key = bytes(range(30))
    default = janus_viewer.render_config(tmp_path / "d", event_loops=None, srtp_master=key)
    cheap = janus_viewer.render_config(tmp_path / "c", event_loops=1, srtp_master=key)
    assert "event_loops" not in default.read_text()
    assert "event_loops = 1" in cheap.read_text()
    assert f'ice_enforce_list = "{janus_viewer.NODE_IP}"' in default.read_text()
    assert [p.name for p in (tmp_path / "d" / "plugins").iterdir()] == ["libjanus_streaming.so"]
    assert [p.name for p in (tmp_path / "d" / "transports").iterdir()] == ["libjanus_http.so"]
    streaming = (tmp_path / "d" / "janus.plugin.streaming.jcfg").read_text()
    assert f'srtpcrypto = "{base64.b64encode(key).decode()}"' in streaming
    assert "srtpsuite = 80" in streaming and f"port = {janus_viewer.MOUNT_PORT}" in streaming
    assert f"port = {janus_viewer.HTTP_PORT}" in (tmp_path / "d" / "janus.transport.http.jcfg").read_text()


# ---- SDP ----

def test_offer_parsed_and_answered() -> None:
    offer = janus_viewer.parse_offer(OFFER)
    assert (offer.ice_ufrag, offer.ice_pwd, offer.mid, offer.ssrc, offer.pt) == (
        "e5Vi", "0cp0NUe58lxBVdyGr66NpY", "v", 4187194234, 96)
    assert offer.candidates == [("198.51.100.1", 34977)]
    assert offer.fingerprint.startswith("7B:E3")
    answer = janus_viewer.render_answer(offer, address="203.0.113.2", port=4000, ice_ufrag="uf", ice_pwd="pw" * 11,
                                 fingerprint="AA:BB")
    for line in ("a=setup:active", "a=recvonly", "a=mid:v", "a=ice-ufrag:uf", "a=rtpmap:96 VP8/90000",
                 "a=candidate:1 1 udp 2130706431 203.0.113.2 4000 typ host", "a=fingerprint:sha-256 AA:BB"):
        assert line in answer.split("\r\n")


def test_offer_without_candidates_is_refused() -> None:
    with pytest.raises(SetupError, match="candidate"):
        janus_viewer.parse_offer(OFFER.replace("a=candidate:1 1 udp 2015363327 198.51.100.1 34977 typ host\r\n", ""))


# ---- the HTTP API flow against a fake Janus ----

class FakeJanus:
    """Answers as Janus's HTTP transport does: plugin messages are acked, their events come on the long poll."""

    def __init__(self, refuse_watch: bool = False) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.refuse_watch = refuse_watch
        self.answers: list[str] = []

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append((path, body))
        t = body["transaction"]
        if body["janus"] == "create":
            return {"janus": "success", "transaction": t, "data": {"id": 11}}
        if body["janus"] == "attach":
            assert path == "/janus/11" and body["plugin"] == "janus.plugin.streaming"
            return {"janus": "success", "transaction": t, "data": {"id": 22}}
        assert body["janus"] == "message" and path == "/janus/11/22"
        request = body["body"]["request"]
        if request == "watch":
            data = {"error": "No such mountpoint"} if self.refuse_watch else {"streaming": "event"}
            event = {"janus": "event", "sender": 22, "transaction": t, "plugindata": {"data": data}}
            if not self.refuse_watch:
                event["jsep"] = {"type": "offer", "sdp": OFFER}
        else:
            assert request == "start" and body["jsep"]["type"] == "answer"
            self.answers.append(body["jsep"]["sdp"])
            event = {"janus": "event", "sender": 22, "transaction": t, "plugindata": {"data": {"result": "ok"}}}
        self.events.put_nowait({"janus": "webrtcup", "sender": 22})  # an unrelated event first
        self.events.put_nowait(event)
        return {"janus": "ack", "session_id": 11, "transaction": t}

    async def get(self, path: str) -> Any:
        assert path.startswith("/janus/11?")
        return [await self.events.get()]


def test_api_flow_create_attach_watch_start() -> None:
    async def go() -> FakeJanus:
        fake = FakeJanus()
        api = janus_viewer.JanusApi(fake.post, fake.get)
        assert await api.create() == 11
        poller = asyncio.create_task(api.poll())
        handle = await api.attach()
        assert handle == 22
        assert janus_viewer.parse_offer(await api.watch(handle)).ssrc == 4187194234
        await api.start(handle, "v=0\r\n")
        poller.cancel()
        return fake

    fake = asyncio.run(go())
    assert [b["janus"] for _, b in fake.requests] == ["create", "attach", "message", "message"]
    assert [b["body"]["request"] for _, b in fake.requests[2:]] == ["watch", "start"]
    assert fake.answers == ["v=0\r\n"]


def test_api_raises_the_plugins_error() -> None:
    async def go() -> None:
        fake = FakeJanus(refuse_watch=True)
        api = janus_viewer.JanusApi(fake.post, fake.get)
        await api.create()
        poller = asyncio.create_task(api.poll())
        try:
            await api.watch(await api.attach())
        finally:
            poller.cancel()

    with pytest.raises(janus_viewer.JanusError, match="No such mountpoint"):
        asyncio.run(go())


# ---- the viewer's ICE ----

class FakeNet:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, tuple[str, int]]] = []

    def register(self, address: str, callback: Any) -> None:
        pass

    def unregister(self, address: str) -> None:
        pass

    def send_from(self, source: str, data: bytes, destination: tuple[str, int]) -> None:
        self.sent.append((source, data, destination))


def _janus_check(viewer: janus_viewer.JanusPeer, *, nominate: bool, key: bytes) -> bytes:
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    msg.attributes["USERNAME"] = f"{viewer.ice_ufrag}:e5Vi"
    msg.attributes["PRIORITY"] = 0x6E2000FF
    msg.attributes["ICE-CONTROLLING"] = 1
    if nominate:
        msg.attributes["USE-CANDIDATE"] = None
    msg.add_message_integrity(key)
    msg.add_fingerprint()
    return bytes(msg)


def test_viewer_answers_janus_checks_and_sees_the_nomination() -> None:
    async def go() -> None:
        net = FakeNet()
        viewer = janus_viewer.JanusPeer(net, "203.0.113.2", Credentials.generate(), "cm80")  # type: ignore[arg-type]
        viewer.server = ServerParams("e5Vi", "0cp0NUe58lxBVdyGr66NpY", "AA", "198.51.100.1", 34977)
        janus_addr = ("198.51.100.1", 34977)
        viewer._on_datagram(_janus_check(viewer, nominate=False, key=b"wrong"), janus_addr)
        assert net.sent == [] and viewer.bad_integrity == 1
        check = _janus_check(viewer, nominate=False, key=viewer.ice_pwd.encode())
        viewer._on_datagram(check, janus_addr)
        assert not viewer.nominated.is_set()
        source, response, dest = net.sent[0]
        assert (source, dest) == ("203.0.113.2", janus_addr)
        assert response[8:20] == check[8:20] and integrity_ok(response, viewer.ice_pwd.encode())
        parsed = stun.parse_message(response)
        assert parsed.message_class == stun.Class.RESPONSE
        assert parsed.attributes["XOR-MAPPED-ADDRESS"] == janus_addr
        viewer._on_datagram(_janus_check(viewer, nominate=True, key=viewer.ice_pwd.encode()), janus_addr)
        assert viewer.nominated.is_set() and viewer.answered == 2
        ours = stun.parse_message(viewer.consent_request())
        assert "ICE-CONTROLLED" in ours.attributes and "USE-CANDIDATE" not in ours.attributes
        assert ours.attributes["USERNAME"] == f"e5Vi:{viewer.ice_ufrag}"

    asyncio.run(go())


# ---- accounting ----

def _point(load: int, us: float, pps: float = 1000.0) -> dict[str, Any]:
    return {"load": load, "cpu_us_per_packet": us, "forwarded_pps": pps, "loss_pct": 0.0, "worker_cpu_pct": [5.0],
            "latency_ms_p99": 1.0, "generator_bound": False}


def test_x_janus_is_janus_cpu_per_packet_over_ours_at_the_same_load() -> None:
    ours = [_point(25, 10.0), _point(50, 8.0)]
    table = janus.compare(ours, {"default": [_point(25, 40.0), _point(50, 20.0), _point(75, 1.0)],
                                 "event_loops=1": [_point(25, 25.0)]})
    assert [(r["load"], r["x_janus"]) for r in table["default"]] == [(25, 4.0), (50, 2.5)]
    assert [(r["load"], r["x_janus"]) for r in table["event_loops=1"]] == [(25, 2.5)]
    assert any("x janus 4.0 at 25 subscribers (Janus default)" in line for line in janus.format_compare(table))
    runs = [janus.compare(ours, {"default": [_point(25, us)]}) for us in (30.0, 50.0, 40.0)]
    median = janus.combine_tables(runs)["default"][0]
    assert median["x_janus"] == 4.0 and median["x_janus_runs"] == [3.0, 5.0, 4.0]


# ---- through Janus, when it is here ----

def test_packets_reach_five_viewers_through_janus() -> None:
    reason = janus.janus_missing_reason()
    if reason:
        pytest.skip(reason)
    from bench.server import plan_cores

    plan = plan_cores(1)
    table = janus.run_janus([5], generator_core=plan.generator, janus_core=plan.workers[0], seconds=2.0,
                            rate=50.0, configs=("event_loops=1",), timeout_s=90)
    (p,) = table["event_loops=1"]
    assert p["streams"] == 5
    assert p["stream_received_min"] > 0 and p["verified"] > 0 and p["auth_failed"] == 0
    assert p["received"] >= 0.9 * p["expected"]
    assert p["worker_cpu_pct"][0] > 0  # Janus's CPU was read over the window


# ---- the command line ----

def test_janus_is_refused_outside_a_paced_fanout() -> None:
    from bench.scenarios import Options

    Options("fanout", subscribers=25, janus=True)  # accepted
    for bad in (dict(scenario="conference"), dict(scenario="fanout", rate=0), dict(scenario="fanout", srtp="gcm"),
                dict(scenario="fanout", url="ws://127.0.0.1:9")):
        with pytest.raises(ValueError, match="--janus"):
            Options(janus=True, **bad)  # type: ignore[arg-type]


def test_a_run_without_janus_says_why_and_keeps_its_own_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.__main__ import _janus
    from bench.scenarios import Options

    monkeypatch.setattr(janus, "JANUS_BIN", "no-such-janus-binary")
    out = asyncio.run(_janus(Options("fanout", janus=True), [_point(25, 10.0)],
                             {"cores": {"generator": 0, "workers": [0]}}))
    assert out == {"janus_skipped": "the janus package is not installed (make bench-deps)"}
