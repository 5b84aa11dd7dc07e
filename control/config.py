"""Settings of the control process: command line, environment and YAML file merged into one frozen object.

This module owns the precedence rules and the validation of every setting; it does not start anything.
Precedence is command line > environment > file > default, for every setting. Each setting's environment
variable is ``MEDIAROUTER_`` and its YAML key in capitals (for the fields of the ``room:`` section,
``MEDIAROUTER_ROOM_`` and the field); an empty variable counts as unset. With no key
anywhere the server runs in development mode with ``{devkey: secret}`` (as ``livekit-server --dev`` does) and
says so in a WARNING.

=============  =========================  =============================  =======================================
YAML key       environment variable       mediarouter serve              default
=============  =========================  =============================  =======================================
workers        MEDIAROUTER_WORKERS        --workers N                    CPU count
node_ip        MEDIAROUTER_NODE_IP        --node-ip IP[,IP2]             127.0.0.1
bind_ip        MEDIAROUTER_BIND_IP        --bind-ip IP                   all interfaces (0.0.0.0 or ::)
ice_tcp        MEDIAROUTER_ICE_TCP        --ice-tcp, --no-ice-tcp        on
turn_servers   MEDIAROUTER_TURN_SERVERS   --turn-servers JSON            none
rtc_port_base  MEDIAROUTER_RTC_PORT_BASE  --rtc-port-base P              7882
http_host      MEDIAROUTER_HTTP_HOST      --http-host H                  0.0.0.0
http_port      MEDIAROUTER_HTTP_PORT      --http-port P                  7880
log_level      MEDIAROUTER_LOG_LEVEL      --log-level L                  info
keys           MEDIAROUTER_KEYS           --keys K:S[,K2:S2]             development mode
gso            MEDIAROUTER_GSO            --gso, --no-gso                on (where the kernel has UDP_SEGMENT)
hmac_batch     MEDIAROUTER_HMAC_BATCH     --hmac-batch, --no-hmac-batch  on (where OpenSSL has sha1_multi_block)
srtp_crypto    MEDIAROUTER_SRTP_CRYPTO    --srtp-crypto C                mediarouter (or libsrtp)
congestion_control MEDIAROUTER_CONGESTION_CONTROL --[no-]congestion-control on
rx_hold_ms     MEDIAROUTER_RX_HOLD_MS     --rx-hold-ms MS                0 (off; 0-20)
drain_timeout  MEDIAROUTER_DRAIN_TIMEOUT  --drain-timeout S              300 (s, 0-86400)
webhook        MEDIAROUTER_WEBHOOK_URLS,  (file only otherwise)          none
               MEDIAROUTER_WEBHOOK_API_KEY
header_timeout_s MEDIAROUTER_HEADER_TIMEOUT_S --header-timeout-s S         10 (0.1-3600)
max_pending_connections MEDIAROUTER_MAX_PENDING_CONNECTIONS --max-pending-connections N  4096
max_pending_per_address MEDIAROUTER_MAX_PENDING_PER_ADDRESS --max-pending-per-address N  256
fd_reserve     MEDIAROUTER_FD_RESERVE     --fd-reserve N                 512
livekit_client_url MEDIAROUTER_LIVEKIT_CLIENT_URL --livekit-client-url U the CDN build of livekit-client 2.23.0
redis          MEDIAROUTER_REDIS_<FIELD>  --redis-address HOST:PORT      none (one node, no Redis)
cluster        MEDIAROUTER_CLUSTER_<FIELD> (file only otherwise)         node_selector rooms, ttl_s 5
=============  =========================  =============================  =======================================

``drain_timeout``: after SIGTERM (or a first SIGINT) the server admits no join and waits this long at most for its
participants to leave before it sends each a LeaveRequest and stops (control/service/drain.py). ``webhook``: LiveKit
webhooks (control/service/webhooks.py) POSTed to every URL, signed with the API key ``api_key`` (default: the only
key); ``MEDIAROUTER_WEBHOOK_URLS`` is a comma-separated list. ``livekit_client_url``: where the page at ``GET /``
(control/service/demo.py) loads the ``livekit-client`` UMD script from (an ``http(s)://`` URL or a path on this
server's origin starting with ``/``).
``node_ip``: the addresses the workers announce in their ICE candidates (the first is the primary one); they may be on
no interface of the host (a cloud VM's public address under 1:1 NAT). IPv4 first: IPv6 addresses after it are announced
over ICE-TCP only (the fast path forwards IPv4), on an IPv6 listener beside the IPv4 one. ``bind_ip``: where the
workers' UDP and TCP ports are bound. ``ice_tcp``: each worker also listens on TCP at the port number of its UDP port
and announces passive ICE-TCP candidates (RFC 6544), less preferred than UDP. ``turn_servers``: TURN servers given to
the clients in the JoinResponse's ``ice_servers`` (control/rtc/turn.py): a list of ``{host, port, protocol: udp|tcp|tls,
username, credential}`` or ``{host, port, protocol, secret, ttl_s}`` for coturn's ``use-auth-secret`` (credentials
minted per participant, valid ``ttl_s``, default 86400); in the environment and on the command line as JSON.

``gso``: the workers send with UDP generic segmentation offload (fastpath/gso.pxd). ``hmac_batch``: AES-CM-80
tags are computed in batches with OpenSSL's multi-buffer SHA-1. The last four guard the HTTP port
(control/service/connections.py): a connection must deliver its request headers within ``header_timeout_s``; at
most ``max_pending_connections`` connections (``max_pending_per_address`` from one address) may be open without
an admitted WebSocket; ``fd_reserve`` file descriptors are kept free; a connection over a cap gets a 503.
``redis``: the Redis the nodes of a cluster share (docs/CLUSTER.md): ``{address, username, password, db, use_tls,
sentinel_master_name, sentinel_addresses}`` as livekit.yaml has them; ``address`` is ``host:port`` or a unix socket
path; with ``sentinel_master_name`` the master is found through ``sentinel_addresses``. Without it the server is
one node and needs no Redis. ``cluster``: ``node_selector`` (``any``, ``cpuload`` or ``rooms``: where a new room
goes), ``ttl_s`` (1-60: a node's entry and its rooms' ownership expire this long after its last refresh) and
``spread_nodes`` (``never``, ``auto`` or ``always``: whether a room's new participants may go to another node's
worker, docs/CLUSTER.md, Rooms across nodes).
``rx_hold_ms``: after each wake-up for its UDP socket a worker leaves the socket unwatched for this long, so that
the packets of a busy small room arrive in batches and leave in UDP GSO messages (fewer wake-ups and sends, each
packet waiting up to that long more; docs/PERFORMANCE.md, Wake-ups); 0 answers every packet at once.
``srtp_crypto``: ``mediarouter`` gives libsrtp the fast path's AES-CM-80 primitives (fastpath/crypto_kernel.pyx),
``libsrtp`` keeps its own. The Supervisor
passes these three to every worker on its command line (router/__main__.py). In the environment the keys are
``key:secret[,key2:secret2]`` and a switch is ``1``/``0`` (or ``true``/``false``, ``yes``/``no``, ``on``/``off``).

YAML file (every field optional)::

    workers: 2
    node_ip: 127.0.0.1    # or a list: [203.0.113.10, 203.0.113.11]
    bind_ip: 0.0.0.0
    ice_tcp: true
    turn_servers:
      - {host: turn.example.org, port: 3478, protocol: udp, secret: coturn-static-auth-secret, ttl_s: 86400}
      - {host: turn.example.org, port: 5349, protocol: tls, username: alice, credential: s3cret}
    rtc_port_base: 7882
    http_host: 0.0.0.0
    http_port: 7880
    log_level: info
    keys: {devkey: secret}
    gso: true
    hmac_batch: true
    srtp_crypto: mediarouter
    congestion_control: true
    rx_hold_ms: 0
    drain_timeout: 300
    webhook: {urls: [https://backend.example/livekit], api_key: devkey}
    header_timeout_s: 10
    max_pending_connections: 4096
    max_pending_per_address: 256
    fd_reserve: 512
    livekit_client_url: https://cdn.jsdelivr.net/npm/livekit-client@2.23.0/dist/livekit-client.umd.js
    redis: {address: 127.0.0.1:6379, db: 0}   # joins a cluster (docs/CLUSTER.md); absent = one node
    cluster: {node_selector: rooms, ttl_s: 5, spread_nodes: never}
    room:                 # the LiveKit rooms (RoomSettings); MEDIAROUTER_ROOM_<FIELD> overrides each
      ping_interval: 5    # s between the clients' pings (JoinResponse), 1-3600
      ping_timeout: 15    # s without a pong before a client gives up, greater than ping_interval, up to 3600
      grace_period_s: 10  # s a session whose WebSocket dropped waits for a resume, 0-3600
      join_timeout_s: 60  # s a participant has to connect its primary peer connection, 1-3600
      worker_wait_s: 3    # s a join waits for a running worker (a respawn takes ~0.3 s), 0-600
      empty_timeout: 300  # s a room made by CreateRoom lives without anyone joining, 1-86400 (CreateRoom too)
      departure_timeout: 20  # s a room lives on after its last participant left, 0-86400 (CreateRoom too)
      refresh_interval_s: 300  # s between the refresh tokens sent to each participant, 1-86400
      enable_remote_unmute: false  # MutePublishedTrack may unmute (LiveKit refuses it unless set)
      enabled_codecs: [audio/opus, video/VP8]  # publish codecs announced to clients (JoinResponse, Room);
                          # an AddTrackRequest's other codecs are dropped. Any of audio/opus, video/VP8,
                          # video/H264, video/VP9, video/AV1
      update_batch_interval_s: 3          # s between batched ParticipantUpdates of a large room, 0.01-60
      room_update_interval_s: 5           # s between a large room's RoomUpdates with new counts, 0.01-60
      update_batch_min_participants: 20   # a room this large batches plain subscribers' joins and leaves
      max_tracks_per_participant: 32      # limits, 0 = none: published and pending tracks of one participant
      max_pending_tracks: 16              # AddTrackRequests waiting for their m-line
      max_subscriptions_per_participant: 5000
      max_participants_per_room: 0        # CreateRoom's max_participants wins where set
      max_participants_per_node: 20000
      max_rooms_per_node: 10000
      max_data_packet_bytes: 65535        # a bigger DataPacket from a client is dropped
      data_packets_per_s: 500             # per participant (bursts of twice that); excess dropped

Room settings come from the environment (``MEDIAROUTER_ROOM_PING_INTERVAL=10``,
``MEDIAROUTER_ROOM_ENABLED_CODECS=audio/opus,video/H264``), else from the file's ``room:`` section, else the
defaults above; an unknown ``MEDIAROUTER_ROOM_*`` variable is refused.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from control.rtc.codecs import SUPPORTED_CODECS
from control.rtc.turn import TurnServer

log = logging.getLogger("control.config")

ENV_PREFIX = "MEDIAROUTER_"
KEYS_ENV = "MEDIAROUTER_KEYS"
DEV_KEYS: Mapping[str, str] = MappingProxyType({"devkey": "secret"})
LOG_LEVELS = ("debug", "info", "warning", "error")
SRTP_CRYPTO = ("mediarouter", "libsrtp")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

DEFAULT_NODE_IP = "127.0.0.1"
DEFAULT_RTC_PORT_BASE = 7882
DEFAULT_HTTP_HOST = "0.0.0.0"
DEFAULT_HTTP_PORT = 7880
DEFAULT_LOG_LEVEL = "info"
DEFAULT_SRTP_CRYPTO = "mediarouter"
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_MAX_PENDING_CONNECTIONS = 4096
DEFAULT_MAX_PENDING_PER_ADDRESS = 256
DEFAULT_FD_RESERVE = 512
MAX_RX_HOLD_MS = 20

_FILE_FIELDS = ("workers", "node_ip", "bind_ip", "ice_tcp", "turn_servers", "rtc_port_base", "http_host",
                "http_port", "log_level", "keys", "gso", "hmac_batch", "srtp_crypto", "congestion_control",
                "rx_hold_ms", "header_timeout_s", "max_pending_connections", "max_pending_per_address", "fd_reserve",
                "room", "drain_timeout", "webhook", "livekit_client_url", "redis", "cluster")
DEFAULT_DRAIN_TIMEOUT_S = 300
# The version tests/e2e/js/package.json pins (tests/control/test_demo.py checks that they agree).
LIVEKIT_CLIENT_VERSION = "2.23.0"
DEFAULT_LIVEKIT_CLIENT_URL = (f"https://cdn.jsdelivr.net/npm/livekit-client@{LIVEKIT_CLIENT_VERSION}"
                              "/dist/livekit-client.umd.js")


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the control process needs to start (read-only)."""

    workers: int
    node_ip: str
    rtc_port_base: int
    http_host: str
    http_port: int
    keys: Mapping[str, str]
    dev_mode: bool
    log_level: str
    gso: bool = True
    hmac_batch: bool = True
    congestion_control: bool = True
    rx_hold_ms: int = 0
    srtp_crypto: str = DEFAULT_SRTP_CRYPTO
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_pending_connections: int = DEFAULT_MAX_PENDING_CONNECTIONS
    max_pending_per_address: int = DEFAULT_MAX_PENDING_PER_ADDRESS
    fd_reserve: int = DEFAULT_FD_RESERVE
    config_path: str | None = None
    drain_timeout: int = DEFAULT_DRAIN_TIMEOUT_S
    webhook: WebhookSettings = field(default_factory=lambda: WebhookSettings())
    more_node_ips: tuple[str, ...] = ()  # announced after node_ip
    bind_ip: str = ""  # "" = every interface (0.0.0.0, or :: when node_ip is IPv6)
    ice_tcp: bool = True
    turn_servers: tuple[TurnServer, ...] = ()
    livekit_client_url: str = DEFAULT_LIVEKIT_CLIENT_URL
    room: RoomSettings = field(default_factory=lambda: RoomSettings())  # without the keys (control.app adds them)
    redis: RedisSettings | None = None  # None: one node, no Redis (control/cluster/)
    cluster: ClusterSettings = field(default_factory=lambda: ClusterSettings())

    @property
    def node_ips(self) -> tuple[str, ...]:
        """Every announced address, the primary one first."""
        return (self.node_ip, *self.more_node_ips)


def parse_keys(text: str, source: str) -> dict[str, str]:
    """Parses ``"key:secret[,key2:secret2]"``; ``source`` names where it came from in error messages."""
    keys: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, secret = item.partition(":")
        key, secret = key.strip(), secret.strip()
        if not sep or not key or not secret:
            raise ConfigError(f"{source}: key {item!r} is not 'key:secret'")
        if key in keys:
            raise ConfigError(f"{source}: key {key!r} given twice")
        keys[key] = secret
    if not keys:
        raise ConfigError(f"{source}: no key in {text!r}")
    return keys


def read_config_file(path: str) -> dict[str, Any]:
    """Reads and checks the YAML file's shape (values are checked by :func:`load_settings`)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in _FILE_FIELDS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r}")
    keys = data.get("keys")
    if keys is not None:
        if not isinstance(keys, dict) or not keys:
            raise ConfigError(f"config file {path}: keys must be a non-empty mapping of key: secret")
        for key, secret in keys.items():
            if not isinstance(key, str) or not key or not isinstance(secret, str) or not secret:
                raise ConfigError(f"config file {path}: key {key!r} needs a non-empty string secret")
    return data


def resolve_keys(cli_keys: str | None, environ: Mapping[str, str],
                 file_keys: Mapping[str, str] | None) -> tuple[dict[str, str], bool]:
    """Returns (keys, dev_mode) by precedence command line > environment > file > development keys."""
    if cli_keys:
        return parse_keys(cli_keys, "--keys"), False
    env_keys = environ.get(KEYS_ENV, "").strip()
    if env_keys:
        return parse_keys(env_keys, KEYS_ENV), False
    if file_keys:
        return dict(file_keys), False
    return dict(DEV_KEYS), True


def env_name(name: str) -> str:
    """The environment variable of setting ``name``: ``MEDIAROUTER_`` and the name in capitals."""
    return ENV_PREFIX + name.upper()


def parse_flag(source: str, text: str) -> bool:
    """A switch written in the environment: 1/0, true/false, yes/no, on/off (any case)."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"{source} must be 1 or 0 (or true/false, yes/no, on/off), not {text!r}")


def _parse_integer(source: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{source} must be an integer, not {text!r}") from None


def _parse_text(source: str, text: str) -> str:
    return text


def _parse_number(source: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{source} must be a number, not {text!r}") from None


def parse_turn_servers_json(source: str, text: str) -> Any:
    """``turn_servers`` as JSON (environment and command line); checked by :func:`parse_turn_servers`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source} is not valid JSON: {exc.msg}") from None


_ENV_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "workers": _parse_integer, "rtc_port_base": _parse_integer, "http_port": _parse_integer,
    "gso": parse_flag, "hmac_batch": parse_flag, "congestion_control": parse_flag, "drain_timeout": _parse_integer,
    "rx_hold_ms": _parse_integer,
    "header_timeout_s": _parse_number, "max_pending_connections": _parse_integer,
    "max_pending_per_address": _parse_integer, "fd_reserve": _parse_integer, "ice_tcp": parse_flag,
    "turn_servers": parse_turn_servers_json,
}


def from_environment(name: str, environ: Mapping[str, str]) -> Any:
    """Setting ``name`` as its environment variable gives it (an int, a bool or a string), or None if unset."""
    text = environ.get(env_name(name), "").strip()
    if not text:
        return None
    return _ENV_PARSERS.get(name, _parse_text)(env_name(name), text)


def load_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Builds :class:`Settings` from ``serve`` arguments (None = not given), the environment, the file."""
    env = os.environ if environ is None else environ
    path = getattr(args, "config", None)
    file = read_config_file(path) if path else {}

    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        if value is not None:
            return value
        value = from_environment(name, env)
        if value is not None:
            return value
        return file.get(name, default)

    workers = _integer("workers", pick("workers", os.cpu_count() or 1), 1, 1024)
    rtc_port_base = _integer("rtc_port_base", pick("rtc_port_base", DEFAULT_RTC_PORT_BASE), 1, 65535)
    if rtc_port_base + workers - 1 > 65535:
        raise ConfigError(f"rtc_port_base {rtc_port_base} leaves no room for {workers} UDP ports")
    http_port = _integer("http_port", pick("http_port", DEFAULT_HTTP_PORT), 1, 65535)
    node_ips = _node_ips(pick("node_ip", DEFAULT_NODE_IP))
    bind_ip = _bind_ip(pick("bind_ip", ""), node_ips)
    ice_tcp = _boolean("ice_tcp", pick("ice_tcp", True))
    if not ice_tcp and any(ipaddress.ip_address(a).version == 6 for a in node_ips):
        raise ConfigError(f"node_ip {','.join(node_ips)}: IPv6 addresses are offered over ICE-TCP only; ice_tcp "
                          "must be on")
    turn_servers = parse_turn_servers(pick("turn_servers", []), "turn_servers")
    http_host = pick("http_host", DEFAULT_HTTP_HOST)
    if not isinstance(http_host, str) or not http_host:
        raise ConfigError(f"http_host must be a host name or address, not {http_host!r}")
    log_level = pick("log_level", DEFAULT_LOG_LEVEL)
    if not isinstance(log_level, str) or log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    gso = _boolean("gso", pick("gso", True))
    hmac_batch = _boolean("hmac_batch", pick("hmac_batch", True))
    congestion_control = _boolean("congestion_control", pick("congestion_control", True))
    rx_hold_ms = _integer("rx_hold_ms", pick("rx_hold_ms", 0), 0, MAX_RX_HOLD_MS)
    srtp_crypto = pick("srtp_crypto", DEFAULT_SRTP_CRYPTO)
    if not isinstance(srtp_crypto, str) or srtp_crypto.lower() not in SRTP_CRYPTO:
        raise ConfigError(f"srtp_crypto must be one of {', '.join(SRTP_CRYPTO)}, not {srtp_crypto!r}")
    header_timeout_s = pick("header_timeout_s", DEFAULT_HEADER_TIMEOUT_S)
    if isinstance(header_timeout_s, bool) or not isinstance(header_timeout_s, int | float) \
            or not 0.1 <= header_timeout_s <= 3600:
        raise ConfigError(f"header_timeout_s must be a number of seconds in 0.1-3600, not {header_timeout_s!r}")
    max_pending = _integer("max_pending_connections",
                           pick("max_pending_connections", DEFAULT_MAX_PENDING_CONNECTIONS), 1, 1 << 20)
    max_per_address = _integer("max_pending_per_address",
                               pick("max_pending_per_address", DEFAULT_MAX_PENDING_PER_ADDRESS), 1, 1 << 20)
    fd_reserve = _integer("fd_reserve", pick("fd_reserve", DEFAULT_FD_RESERVE), 16, 1 << 20)
    keys, dev_mode = resolve_keys(getattr(args, "keys", None), env, file.get("keys"))
    if dev_mode:
        log.warning("development mode: API key devkey, secret 'secret'")
    drain_timeout = _integer("drain_timeout", pick("drain_timeout", DEFAULT_DRAIN_TIMEOUT_S), 0, 86400)
    webhook = load_webhook_settings(file.get("webhook"), env, keys)
    livekit_client_url = pick("livekit_client_url", DEFAULT_LIVEKIT_CLIENT_URL)
    if not isinstance(livekit_client_url, str) or not livekit_client_url.startswith(("http://", "https://", "/")):
        raise ConfigError(f"livekit_client_url must be an http:// or https:// URL or a path starting with /, "
                          f"not {livekit_client_url!r}")
    return Settings(workers=workers, node_ip=node_ips[0], more_node_ips=node_ips[1:], bind_ip=bind_ip,
                    ice_tcp=ice_tcp, turn_servers=turn_servers, rtc_port_base=rtc_port_base, http_host=http_host,
                    http_port=http_port, keys=MappingProxyType(keys), dev_mode=dev_mode,
                    log_level=log_level.lower(), gso=gso, hmac_batch=hmac_batch, srtp_crypto=srtp_crypto.lower(),
                    congestion_control=congestion_control, rx_hold_ms=rx_hold_ms,
                    header_timeout_s=float(header_timeout_s),
                    max_pending_connections=max_pending, max_pending_per_address=max_per_address,
                    fd_reserve=fd_reserve, config_path=path, drain_timeout=drain_timeout, webhook=webhook,
                    livekit_client_url=livekit_client_url,
                    room=load_room_settings(file.get("room"), env, path),
                    redis=load_redis_settings(file.get("redis"), env, getattr(args, "redis_address", None)),
                    cluster=load_cluster_settings(file.get("cluster"), env))


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} {value} out of range {low}-{high}")
    return value


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, not {value!r}")
    return value


def _node_ip(value: Any) -> str:
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError as exc:
        raise ConfigError(f"node_ip {value!r} is not an IP address") from exc
    if address.is_unspecified:
        raise ConfigError(f"node_ip {value} is unspecified; give the address clients can reach")
    return str(address)


def _node_ips(value: Any) -> tuple[str, ...]:
    """One address, a comma-separated list or a YAML list, no repeats; one family, or IPv4 first and IPv6 after it
    (the workers' UDP port is IPv4 then, and the IPv6 addresses are announced over ICE-TCP only: the fast path
    forwards IPv4 tuples)."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
    addresses = tuple(_node_ip(item) for item in items if str(item).strip())
    if not addresses:
        raise ConfigError(f"node_ip {value!r} names no address")
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"node_ip {value!r} names an address twice")
    if ipaddress.ip_address(addresses[0]).version == 6:
        raise ConfigError(f"node_ip {value!r}: the fast path forwards IPv4 only; give an IPv4 address first (IPv6 "
                          "addresses after it are offered over ICE-TCP)")
    return addresses


def _bind_ip(value: Any, node_ips: tuple[str, ...]) -> str:
    if value in ("", None):
        return ""
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError as exc:
        raise ConfigError(f"bind_ip {value!r} is not an IP address") from exc
    if address.version != ipaddress.ip_address(node_ips[0]).version:
        raise ConfigError(f"bind_ip {value} and node_ip {node_ips[0]} are of different IP versions")
    return str(address)


def parse_turn_servers(value: Any, source: str) -> tuple[TurnServer, ...]:
    """The ``turn_servers`` list: each ``{host, port, protocol, username, credential}`` or ``{..., secret, ttl_s}``."""
    if isinstance(value, str):
        value = parse_turn_servers_json(source, value)
    if not isinstance(value, list):
        raise ConfigError(f"{source} must be a list of TURN servers")
    servers = []
    for index, item in enumerate(value):
        where = f"{source}[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a mapping")
        try:
            servers.append(TurnServer.from_mapping(item))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tuple(servers)


# ------------------------------------------------------------------------------------ room settings
# The ``room:`` section of the file and the MEDIAROUTER_ROOM_* variables: environment > file > default.

ROOM_ENV_PREFIX = "MEDIAROUTER_ROOM_"
_PUBLISH_CODECS = tuple(dict.fromkeys(f"{s.kind}/{s.codec.name}" for s in SUPPORTED_CODECS))


@dataclass(frozen=True)
class RoomSettings:
    """Server-wide knobs of the LiveKit surface (control.rtc.rooms)."""

    server_version: str = "1.9.0"
    node_id: str = "ND_mediarouter"
    region: str = ""
    ping_interval: int = 5
    ping_timeout: int = 15
    grace_period_s: float = 10.0  # a session whose WebSocket dropped is removed after this
    join_timeout_s: float = 60.0  # a participant must be ACTIVE (primary PC connected) within this
    worker_wait_s: float = 3.0  # a join waits this long for a worker to be running (respawn after a crash)
    refresh_interval_s: float = 300.0  # a new token to each participant this often (LiveKit: every 5 min)
    enable_remote_unmute: bool = False  # MutePublishedTrack(muted=false) is refused unless set (as LiveKit)
    enabled_codecs: tuple[str, ...] = ("audio/opus", "video/VP8")
    empty_timeout: int = 300
    departure_timeout: int = 20
    dynacast_pause_delay_s: float = 5.0  # a simulcast layer nobody wants is turned off after this (LiveKit: 5 s)
    # ParticipantUpdate batching (control/rtc/rooms.py): in a room of at least update_batch_min_participants,
    # plain subscribers' joins and leaves go out together every update_batch_interval_s (LiveKit: 3 s), and the
    # participant counts (RoomUpdate) at most every room_update_interval_s (LiveKit: 5 s).
    update_batch_interval_s: float = 3.0
    room_update_interval_s: float = 5.0
    update_batch_min_participants: int = 20
    # Limits (0 = none); each refusal is counted in RoomManager.refusals.
    max_tracks_per_participant: int = 32  # published and pending tracks of one participant
    max_pending_tracks: int = 16  # AddTrackRequests not yet bound to an offered m-line
    max_subscriptions_per_participant: int = 5000
    max_participants_per_room: int = 0  # CreateRoom's max_participants wins where it is set
    max_participants_per_node: int = 20000
    max_rooms_per_node: int = 10000
    max_data_packet_bytes: int = 65535  # one DataPacket from a client
    data_packets_per_s: int = 500  # DataPackets one participant may send per second (bursts of twice that)
    spread: str = "auto"  # a room over several workers: "auto", "always" or "never" (control/rtc/spread.py)
    spread_share: float = 0.5  # auto: spill once the room's home worker carries more than this share of the load
    keys: Mapping[str, str] = field(default_factory=dict)
    turn_servers: tuple[TurnServer, ...] = ()  # from Settings.turn_servers (control.app adds them)


# The configurable fields: name -> (type, lowest, highest); enabled_codecs is a list of mime types.
_ROOM_NUMBERS: dict[str, tuple[type, float, float]] = {
    "ping_interval": (int, 1, 3600),
    "ping_timeout": (int, 1, 3600),
    "grace_period_s": (float, 0, 3600),
    "join_timeout_s": (float, 1, 3600),
    "worker_wait_s": (float, 0, 600),
    "empty_timeout": (int, 1, 86400),
    "departure_timeout": (int, 0, 86400),
    "dynacast_pause_delay_s": (float, 0, 3600),
    "refresh_interval_s": (float, 1, 86400),
    "update_batch_interval_s": (float, 0.01, 60),
    "room_update_interval_s": (float, 0.01, 60),
    "update_batch_min_participants": (int, 0, 1_000_000),
    "max_tracks_per_participant": (int, 0, 100_000),
    "max_pending_tracks": (int, 0, 100_000),
    "max_subscriptions_per_participant": (int, 0, 1_000_000),
    "max_participants_per_room": (int, 0, 1_000_000),
    "max_participants_per_node": (int, 0, 10_000_000),
    "max_rooms_per_node": (int, 0, 10_000_000),
    "max_data_packet_bytes": (int, 0, 16 * 1024 * 1024),
    "data_packets_per_s": (int, 0, 1_000_000),
    "spread_share": (float, 0, 1),
}
_SPREAD_MODES = ("auto", "always", "never")
_ROOM_FIELDS = (*_ROOM_NUMBERS, "enabled_codecs", "enable_remote_unmute", "spread")


def load_room_settings(section: Any, environ: Mapping[str, str], path: str | None = None) -> RoomSettings:
    """:class:`RoomSettings` from the file's ``room:`` section (None = absent) and the environment."""
    where = f"config file {path}: room" if path else "room"
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping, not {type(section).__name__}")
    unknown = sorted(str(k) for k in section if k not in _ROOM_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r}")
    names = {ROOM_ENV_PREFIX + name.upper(): name for name in _ROOM_FIELDS}
    stray = sorted(k for k in environ if k.startswith(ROOM_ENV_PREFIX) and k not in names)
    if stray:
        raise ConfigError(f"unknown environment variable {stray[0]} (known: {', '.join(names)})")
    values: dict[str, Any] = {}
    for variable, name in names.items():
        if variable in environ:
            values[name] = _room_value(name, environ[variable], variable, from_env=True)
        elif name in section:
            values[name] = _room_value(name, section[name], f"room.{name}", from_env=False)
    room = RoomSettings(**values)
    if room.ping_timeout <= room.ping_interval:
        raise ConfigError(f"room.ping_timeout {room.ping_timeout} must be greater than room.ping_interval "
                          f"{room.ping_interval}")
    return room


def _room_value(name: str, value: Any, source: str, *, from_env: bool) -> Any:
    """One checked room setting; ``source`` (the variable or ``room.<name>``) is named in errors."""
    if name == "enabled_codecs":
        items = value.split(",") if from_env and isinstance(value, str) else value
        return _codecs(items, source)
    if name == "enable_remote_unmute":
        return parse_flag(source, value) if from_env else _boolean(source, value)
    if name == "spread":
        mode = value.strip().lower() if isinstance(value, str) else value
        if mode not in _SPREAD_MODES:
            raise ConfigError(f"{source} must be one of {', '.join(_SPREAD_MODES)}, not {value!r}")
        return mode
    kind, low, high = _ROOM_NUMBERS[name]
    if from_env:
        try:
            value = kind(value.strip())
        except ValueError:
            raise ConfigError(f"{source} must be {'an integer' if kind is int else 'a number'}, "
                              f"not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"{source} must be {'an integer' if kind is int else 'a number'}, not {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{source} {value} out of range {low:g}-{high:g}")
    return kind(value)


def _codecs(items: Any, source: str) -> tuple[str, ...]:
    """Mime types of supported codecs, in their canonical spelling, each once, at least one."""
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{source} must be a non-empty list of codec mime types")
    canonical = {mime.lower(): mime for mime in _PUBLISH_CODECS}
    chosen: list[str] = []
    for item in items:
        mime = canonical.get(item.strip().lower()) if isinstance(item, str) else None
        if mime is None:
            raise ConfigError(f"{source}: codec {item!r} is not one of {', '.join(_PUBLISH_CODECS)}")
        if mime in chosen:
            raise ConfigError(f"{source}: codec {mime} given twice")
        chosen.append(mime)
    return tuple(chosen)


# ------------------------------------------------------------------------------------ webhook settings


@dataclass(frozen=True)
class WebhookSettings:
    """Where LiveKit webhooks go (control/service/webhooks.py); no URL = none are sent."""

    urls: tuple[str, ...] = ()
    api_key: str = ""
    api_secret: str = ""


def load_webhook_settings(section: Any, environ: Mapping[str, str], keys: Mapping[str, str]) -> WebhookSettings:
    """The ``webhook:`` section (``urls``, ``api_key``), overridden by ``MEDIAROUTER_WEBHOOK_URLS`` (comma-separated)
    and ``MEDIAROUTER_WEBHOOK_API_KEY``; the key must be one of ``keys`` (default: the only one)."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"webhook must be a mapping, not {type(section).__name__}")
    unknown = sorted(str(k) for k in section if k not in ("urls", "api_key"))
    if unknown:
        raise ConfigError(f"webhook: unknown setting {unknown[0]!r}")
    env_urls = environ.get(ENV_PREFIX + "WEBHOOK_URLS", "").strip()
    urls: Any = [u.strip() for u in env_urls.split(",") if u.strip()] if env_urls else section.get("urls", [])
    if not isinstance(urls, list) or not all(isinstance(u, str) and u.startswith(("http://", "https://"))
                                             for u in urls):
        raise ConfigError(f"webhook.urls must be a list of http:// or https:// URLs, not {urls!r}")
    if not urls:
        return WebhookSettings()
    api_key = environ.get(ENV_PREFIX + "WEBHOOK_API_KEY", "").strip() or section.get("api_key")
    if api_key is None:
        if len(keys) != 1:
            raise ConfigError("webhook.api_key must name one of the API keys")
        api_key = next(iter(keys))
    if api_key not in keys:
        raise ConfigError(f"webhook.api_key {api_key!r} is not one of the API keys")
    return WebhookSettings(urls=tuple(urls), api_key=api_key, api_secret=keys[api_key])


# ------------------------------------------------------------------------------------ cluster settings
# ``redis:`` (livekit.yaml's fields) and ``cluster:``; MEDIAROUTER_REDIS_<FIELD> / MEDIAROUTER_CLUSTER_<FIELD>
# override the file's fields, ``--redis-address`` overrides both.

NODE_SELECTORS = ("any", "cpuload", "rooms")
SPREAD_NODES = ("never", "auto", "always")


@dataclass(frozen=True)
class RedisSettings:
    """How to reach the Redis the nodes share (control/cluster/client.py)."""

    address: str = ""  # host:port or a unix socket path; unused with sentinel_master_name
    username: str = ""
    password: str = ""
    db: int = 0
    use_tls: bool = False
    sentinel_master_name: str = ""
    sentinel_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterSettings:
    """How the nodes of a cluster share rooms (control/cluster/)."""

    node_selector: str = "rooms"  # any | cpuload | rooms (control/cluster/selector.py)
    ttl_s: float = 5.0  # a node's entry and its rooms' ownership live this long without a refresh
    spread_nodes: str = "never"  # never | auto | always: a room's new participants on other nodes
    # (control/cluster/remote_pool.py; only where room.spread is not "never")


_REDIS_FIELDS = ("address", "username", "password", "db", "use_tls", "sentinel_master_name", "sentinel_addresses")


def _section(name: str, section: Any, environ: Mapping[str, str], fields: tuple[str, ...]) -> dict[str, Any]:
    """The file's section overlaid with its MEDIAROUTER_<SECTION>_<FIELD> variables (kept as text)."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"{name} must be a mapping, not {type(section).__name__}")
    unknown = sorted(str(k) for k in section if k not in fields)
    if unknown:
        raise ConfigError(f"{name}: unknown setting {unknown[0]!r}")
    values = dict(section)
    prefix = f"{ENV_PREFIX}{name.upper()}_"
    for key, text in environ.items():
        if key.startswith(prefix) and text.strip():
            field_name = key[len(prefix):].lower()
            if field_name not in fields:
                raise ConfigError(f"unknown environment variable {key}")
            values[field_name] = text.strip()
    return values


def load_redis_settings(section: Any, environ: Mapping[str, str], cli_address: str | None = None
                        ) -> RedisSettings | None:
    """:class:`RedisSettings`, or None when no address nor sentinel is given anywhere (one node)."""
    values = _section("redis", section, environ, _REDIS_FIELDS)
    if cli_address:
        values["address"] = cli_address
    if not values.get("address") and not values.get("sentinel_master_name"):
        return None
    sentinels = values.get("sentinel_addresses", ())
    if isinstance(sentinels, str):
        sentinels = [s.strip() for s in sentinels.split(",") if s.strip()]
    if not isinstance(sentinels, list | tuple) or not all(isinstance(s, str) and ":" in s for s in sentinels):
        raise ConfigError(f"redis.sentinel_addresses must be a list of host:port, not {sentinels!r}")
    if values.get("sentinel_master_name") and not sentinels:
        raise ConfigError("redis.sentinel_master_name needs redis.sentinel_addresses")
    db = values.get("db", 0)
    db = _parse_integer("redis.db", db) if isinstance(db, str) else db
    use_tls = values.get("use_tls", False)
    use_tls = parse_flag("redis.use_tls", use_tls) if isinstance(use_tls, str) else _boolean("redis.use_tls", use_tls)
    texts = {name: values.get(name, "") for name in ("address", "username", "password", "sentinel_master_name")}
    for name, text in texts.items():
        if not isinstance(text, str):
            raise ConfigError(f"redis.{name} must be a string, not {text!r}")
    return RedisSettings(db=_integer("redis.db", db, 0, 1 << 16), use_tls=use_tls,
                         sentinel_addresses=tuple(sentinels), **texts)


def load_cluster_settings(section: Any, environ: Mapping[str, str]) -> ClusterSettings:
    values = _section("cluster", section, environ, ("node_selector", "ttl_s", "spread_nodes"))
    selector = values.get("node_selector", ClusterSettings.node_selector)
    if not isinstance(selector, str) or selector.lower() not in NODE_SELECTORS:
        raise ConfigError(f"cluster.node_selector must be one of {', '.join(NODE_SELECTORS)}, not {selector!r}")
    ttl_s = values.get("ttl_s", ClusterSettings.ttl_s)
    ttl_s = _parse_number("cluster.ttl_s", ttl_s) if isinstance(ttl_s, str) else ttl_s
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not 1 <= ttl_s <= 60:
        raise ConfigError(f"cluster.ttl_s must be a number of seconds in 1-60, not {ttl_s!r}")
    spread_nodes = values.get("spread_nodes", ClusterSettings.spread_nodes)
    if not isinstance(spread_nodes, str) or spread_nodes.lower() not in SPREAD_NODES:
        raise ConfigError(f"cluster.spread_nodes must be one of {', '.join(SPREAD_NODES)}, not {spread_nodes!r}")
    return ClusterSettings(node_selector=selector.lower(), ttl_s=float(ttl_s), spread_nodes=spread_nodes.lower())
