"""TURN servers for the clients (control/rtc/turn.py) and the reachability settings of control/config.py.

coturn's use-auth-secret credentials are checked against a value computed by hand from the TURN REST draft's
definition; the JoinResponse and the ReconnectResponse carry the configured servers with per-participant credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from control.config import ConfigError, Settings, load_settings
from control.rtc.negotiation import TransportParams
from control.rtc.turn import TurnServer, ice_servers, rest_credentials
from router.messages import TupleChanged
from tests.control.test_config import serve_args, write
from tests.control.test_rooms import Client, joined, make_manager

SECRET = "coturn-static-auth-secret"


def test_rest_credentials_are_expiry_and_identity_signed_with_the_secret() -> None:
    server = TurnServer("turn.example.org", 3478, secret=SECRET, ttl_s=600)
    username, credential = server.credentials("alice", now=1_700_000_000)
    assert username == "1700000600:alice"
    expected = base64.b64encode(hmac.new(SECRET.encode(), b"1700000600:alice", hashlib.sha1).digest()).decode()
    assert credential == expected == rest_credentials(SECRET, username)[1]
    fixed = TurnServer("192.0.2.1", 5349, protocol="tls", username="u", credential="c")
    assert fixed.credentials("alice") == ("u", "c")
    assert (server.url, fixed.url) == ("turn:turn.example.org:3478?transport=udp", "turns:192.0.2.1:5349?transport=tcp")
    assert TurnServer("2001:db8::1", 3478, protocol="tcp", secret=SECRET).url == "turn:[2001:db8::1]:3478?transport=tcp"
    assert ice_servers([server, fixed], "bob", now=0) == [
        (["turn:turn.example.org:3478?transport=udp"], "600:bob", rest_credentials(SECRET, "600:bob")[1]),
        (["turns:192.0.2.1:5349?transport=tcp"], "u", "c")]


@pytest.mark.parametrize(("item", "message"), [
    ({"host": "t", "port": 3478}, "needs a secret (coturn use-auth-secret) or a username and a credential"),
    ({"host": "t", "secret": "s", "username": "u", "credential": "c"},
     "give either secret or username and credential, not both"),
    ({"host": "t", "secret": "s", "protocol": "dtls"}, "protocol 'dtls' must be one of udp, tcp, tls"),
    ({"host": "t", "secret": "s", "ttl_s": 10}, "ttl_s 10 out of range 60-604800"),
    ({"host": "t", "secret": "s", "port": "3478"}, "port must be an integer, not '3478'"),
    ({"host": "t", "secret": "s", "realm": "x"}, "unknown field 'realm'"),
])
def test_bad_turn_servers_are_refused_with_the_entry_named(item: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(serve_args("--turn-servers", json.dumps([item])), environ={"MEDIAROUTER_KEYS": "k:s"})
    assert str(info.value) == f"turn_servers[0]: {message}"


def test_reach_settings_from_cli_environment_and_file(tmp_path: Path) -> None:
    env = {"MEDIAROUTER_KEYS": "k:s"}
    default = load_settings(serve_args(), environ=env)
    assert (default.node_ips, default.bind_ip, default.ice_tcp, default.turn_servers) == (("127.0.0.1",), "", True, ())
    config = write(tmp_path, "node_ip: [203.0.113.10, 203.0.113.11]\nbind_ip: 198.51.100.10\nice_tcp: false\n"
                             "turn_servers:\n  - {host: turn.example.org, secret: s3}\n")
    from_file = load_settings(serve_args("--config", config), environ=env)
    assert from_file.node_ips == ("203.0.113.10", "203.0.113.11") and from_file.node_ip == "203.0.113.10"
    assert (from_file.bind_ip, from_file.ice_tcp) == ("198.51.100.10", False)
    assert from_file.turn_servers == (TurnServer("turn.example.org", 3478, secret="s3"),)
    from_env = load_settings(serve_args("--config", config), environ={
        **env, "MEDIAROUTER_NODE_IP": "203.0.113.20", "MEDIAROUTER_ICE_TCP": "1",
        "MEDIAROUTER_TURN_SERVERS": '[{"host": "t2", "port": 443, "protocol": "tls", "username": "u", '
                                    '"credential": "c"}]'})
    assert (from_env.node_ips, from_env.ice_tcp) == (("203.0.113.20",), True)
    assert from_env.turn_servers == (TurnServer("t2", 443, "tls", username="u", credential="c"),)
    from_cli = load_settings(serve_args("--config", config, "--node-ip", "192.0.2.5,192.0.2.6", "--bind-ip",
                                        "0.0.0.0", "--turn-servers", "[]"), environ=env)
    assert (from_cli.node_ips, from_cli.bind_ip, from_cli.turn_servers) == (("192.0.2.5", "192.0.2.6"), "0.0.0.0", ())
    assert Settings(workers=1, node_ip="192.0.2.5", rtc_port_base=1, http_host="h", http_port=1, keys={},
                    dev_mode=False, log_level="info").node_ips == ("192.0.2.5",)


def test_ipv6_after_ipv4_is_accepted_for_ice_tcp() -> None:
    settings = load_settings(serve_args("--node-ip", "203.0.113.10,2001:db8::1"), environ={"MEDIAROUTER_KEYS": "k:s"})
    assert settings.node_ips == ("203.0.113.10", "2001:db8::1") and settings.ice_tcp


@pytest.mark.parametrize(("argv", "message"), [
    (["--node-ip", "2001:db8::1,203.0.113.10"], "the fast path forwards IPv4 only; give an IPv4 address first"),
    (["--node-ip", "2001:db8::1"], "the fast path forwards IPv4 only"),
    (["--node-ip", "203.0.113.10,2001:db8::1", "--no-ice-tcp"], "IPv6 addresses are offered over ICE-TCP only"),
    (["--node-ip", "203.0.113.10,203.0.113.10"], "names an address twice"),
    (["--bind-ip", "::"], "bind_ip :: and node_ip 127.0.0.1 are of different IP versions"),
    (["--turn-servers", "{"], "turn_servers is not valid JSON"),
])
def test_bad_reach_settings_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(serve_args(*argv), environ={"MEDIAROUTER_KEYS": "k:s"})
    assert message in str(info.value)


async def test_join_and_resume_carry_the_turn_servers_with_fresh_credentials() -> None:
    servers = (TurnServer("turn.example.org", 3478, secret=SECRET, ttl_s=600),
               TurnServer("turn.example.org", 5349, "tls", username="u", credential="c"))
    manager, _ = make_manager(turn_servers=servers)
    room, p, client = await joined(manager, "alice")
    join = client.messages[0].join
    assert [list(s.urls) for s in join.ice_servers] == [[servers[0].url], [servers[1].url]]
    rest = join.ice_servers[0]
    expiry, _, identity = rest.username.partition(":")
    assert identity == "alice" and rest.credential == rest_credentials(SECRET, rest.username)[1]
    assert (join.ice_servers[1].username, join.ice_servers[1].credential) == ("u", "c")
    again = Client()
    await room.resume(p, again)
    reconnect = again.messages[0].reconnect
    assert [list(s.urls) for s in reconnect.ice_servers] == [[servers[0].url], [servers[1].url]]
    assert int(reconnect.ice_servers[0].username.partition(":")[0]) >= int(expiry)
    bare, _ = make_manager()
    _, _, plain = await joined(bare, "bob")
    assert list(plain.messages[0].join.ice_servers) == []


def test_sdp_candidates_prefer_udp_then_each_address_in_order() -> None:
    params = TransportParams("ufrag", "p" * 22, [("sha-256", "AB")], "203.0.113.10", 7882, candidates=(
        ("udp", "203.0.113.10", 7882), ("udp", "203.0.113.11", 7882), ("tcp", "203.0.113.10", 7882)))
    lines = params.sdp_candidates()
    assert [(c.transport, c.ip, c.extensions) for c in lines] == [
        ("udp", "203.0.113.10", []), ("udp", "203.0.113.11", []), ("tcp", "203.0.113.10", [("tcptype", "passive")])]
    assert lines[0].priority > lines[1].priority > lines[2].priority
    assert lines[0].priority == (126 << 24) | (65535 << 8) | 255
    assert len({c.foundation for c in lines}) == 3


async def test_the_path_each_participant_ended_on_is_counted() -> None:
    manager, _ = make_manager()
    room, alice, _ = await joined(manager, "alice")
    _, bob, _ = await joined(manager, "bob")
    _, carol, _ = await joined(manager, "carol")
    assert manager.paths() == {"udp": 0, "tcp": 0, "relay": 0, "connecting": 3}

    def selected(p: Any, host: str, port: int, protocol: str) -> None:
        body = TupleChanged(host=host, port=port, protocol=protocol).to_wire()  # type: ignore[arg-type]
        manager.on_notification(room.worker_id, "transport.tuple_changed", p.sub_transport_id, body)

    selected(alice, "192.0.2.10", 5000, "udp")
    selected(bob, "192.0.2.11", 6000, "tcp")
    selected(carol, "198.51.100.1", 49152, "udp")
    assert manager.paths() == {"udp": 2, "tcp": 1, "relay": 0, "connecting": 0}
    # the relayed candidate may be trickled after the check that selected it
    carol.note_remote_candidate("candidate:9 1 udp 41885439 198.51.100.1 49152 typ relay raddr 0.0.0.0 rport 0")
    carol.note_remote_candidate("candidate:8 1 udp 2122260223 192.0.2.12 49152 typ host generation 0")
    assert (alice.path(), bob.path(), carol.path()) == ("udp", "tcp", "relay")
    assert manager.paths() == {"udp": 1, "tcp": 1, "relay": 1, "connecting": 0}
