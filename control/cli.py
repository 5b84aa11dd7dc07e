"""The ``mediarouter`` command line (``python -m control`` is the same): ``serve`` and ``token``.

This module owns argument parsing only. ``serve`` hands its arguments to control/config.py and runs
control/app.py; ``token`` prints a LiveKit-compatible access token made by control/auth.py (imported lazily so
that ``serve`` does not depend on it). Options left out are None here so that config.py can apply the
precedence command line > environment > file (config.py's docstring lists every setting).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from control.config import LOG_LEVELS, SRTP_CRYPTO, ConfigError, load_settings, read_config_file, resolve_keys

# Boolean grants with a --flag/--no-flag pair, mapped to the claim names of LiveKit's VideoGrant.
BOOL_GRANTS = {
    "room-join": "roomJoin",
    "room-create": "roomCreate",
    "room-list": "roomList",
    "room-record": "roomRecord",
    "room-admin": "roomAdmin",
    "can-publish": "canPublish",
    "can-subscribe": "canSubscribe",
    "can-publish-data": "canPublishData",
    "can-update-own-metadata": "canUpdateOwnMetadata",
    "ingress-admin": "ingressAdmin",
    "hidden": "hidden",
    "recorder": "recorder",
    "agent": "agent",
}

_DURATION_RE = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``"90"``, ``"90s"``, ``"30m"``, ``"6h"``, ``"1d"``, ``"1h30m"`` -> seconds (positive)."""
    text = text.strip()
    if text.isdigit():
        seconds = int(text)
    elif text and _DURATION_RE.sub("", text) == "":
        seconds = sum(int(n) * _UNIT_S[unit] for n, unit in _DURATION_RE.findall(text))
    else:
        raise ValueError(f"invalid duration {text!r} (use e.g. 90s, 30m, 6h, 1d, 1h30m)")
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return seconds


def parse_grant(text: str) -> tuple[str, Any]:
    """``"key=value"``; the value is read as JSON when it is JSON (true, 3, ["a"]), else kept as a string."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"invalid grant {text!r} (use key=value)")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediarouter", description="mediarouter: a multiprocess WebRTC SFU")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{serve,token}")

    serve = commands.add_parser("serve", help="run the control process and its workers")
    serve.add_argument("--config", metavar="FILE.yaml", help="YAML settings file")
    serve.add_argument("--workers", type=int, help="worker processes (default: CPU count)")
    serve.add_argument("--node-ip", metavar="IP[,IP2]",
                       help="address(es) advertised in ICE candidates, maybe on no interface (default 127.0.0.1)")
    serve.add_argument("--bind-ip", help="address the workers' UDP and TCP ports are bound to (default: all)")
    serve.add_argument("--ice-tcp", action=argparse.BooleanOptionalAction, default=None,
                       help="workers also accept ICE over TCP on their UDP port's number (default on)")
    serve.add_argument("--turn-servers", metavar="JSON",
                       help='TURN servers for the clients, e.g. \'[{"host": "turn.example.org", "secret": "..."}]\'')
    serve.add_argument("--rtc-port-base", type=int, help="UDP port of worker 0; worker i uses base+i (7882)")
    serve.add_argument("--http-host", help="HTTP/WebSocket listen address (default 0.0.0.0)")
    serve.add_argument("--http-port", type=int, help="HTTP/WebSocket port (default 7880)")
    serve.add_argument("--keys", metavar="KEY:SECRET[,...]", help="API keys (else $MEDIAROUTER_KEYS or file)")
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="log level (default info)")
    serve.add_argument("--gso", action=argparse.BooleanOptionalAction, default=None,
                       help="workers send with UDP GSO where the kernel has it (default on)")
    serve.add_argument("--hmac-batch", action=argparse.BooleanOptionalAction, default=None,
                       help="AES-CM-80 tags computed in batches (default on)")
    serve.add_argument("--congestion-control", action=argparse.BooleanOptionalAction, default=None,
                       help="share each subscriber's bandwidth estimate among its tracks (default on)")
    serve.add_argument("--rx-hold-ms", type=int, metavar="MS",
                       help="ms a worker leaves its UDP socket unwatched after each wake-up (default 0: off)")
    serve.add_argument("--drain-timeout", type=int, metavar="S",
                       help="s to wait for participants to leave after SIGTERM before they are told to (300)")
    serve.add_argument("--livekit-client-url", metavar="URL",
                       help="livekit-client UMD script the page at / loads (default: the CDN build)")
    serve.add_argument("--srtp-crypto", choices=SRTP_CRYPTO,
                       help="AES-CM-80 primitives under libsrtp: the fast path's (mediarouter, the default) or "
                            "libsrtp's own")

    serve.add_argument("--redis-address", metavar="HOST:PORT",
                       help="join the cluster of nodes sharing this Redis (default: none, one node)")

    serve.add_argument("--header-timeout-s", type=float,
                       help="s a connection has to send its request headers (default 10)")
    serve.add_argument("--max-pending-connections", type=int,
                       help="connections open without an admitted WebSocket, in all (default 4096)")
    serve.add_argument("--max-pending-per-address", type=int,
                       help="connections open without an admitted WebSocket, per source address (default 256)")
    serve.add_argument("--fd-reserve", type=int, help="file descriptors kept free of connections (default 512)")

    token = commands.add_parser("token", help="print an access token")
    token.add_argument("--room", required=True)
    token.add_argument("--identity", required=True)
    token.add_argument("--name")
    token.add_argument("--api-key")
    token.add_argument("--api-secret")
    token.add_argument("--config", metavar="FILE.yaml", help="take the keys from this settings file")
    token.add_argument("--valid-for", default="6h", help="lifetime, e.g. 90s, 30m, 6h, 1d (default 6h)")
    token.add_argument("--grant", action="append", default=[], metavar="KEY=VALUE",
                       help="extra video grant; the value is parsed as JSON when possible (repeatable)")
    for flag, claim in BOOL_GRANTS.items():
        token.add_argument(f"--{flag}", dest=f"grant_{claim}", action=argparse.BooleanOptionalAction,
                           default=None, help=f"set the {claim} grant")
    return parser


def token_credentials(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, str]:
    """(api_key, api_secret): explicit ones, else looked up in the keys ``serve`` would use."""
    if args.api_key and args.api_secret:
        return args.api_key, args.api_secret
    if args.api_secret and not args.api_key:
        raise ConfigError("--api-secret needs --api-key")
    file_keys = read_config_file(args.config).get("keys") if args.config else None
    keys, _ = resolve_keys(None, environ, file_keys)
    if args.api_key:
        if args.api_key not in keys:
            raise ConfigError(f"no secret known for API key {args.api_key!r}; give --api-secret")
        return args.api_key, keys[args.api_key]
    key = next(iter(keys))
    return key, keys[key]


def token_grants(args: argparse.Namespace) -> dict[str, Any]:
    grants: dict[str, Any] = {}
    for text in args.grant:
        key, value = parse_grant(text)
        grants[key] = value
    for claim in BOOL_GRANTS.values():
        value = getattr(args, f"grant_{claim}")
        if value is not None:
            grants[claim] = value
    return grants


def run_token(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    from control.auth import create_token

    api_key, api_secret = token_credentials(args, environ)
    ttl_s = parse_duration(args.valid_for)
    return create_token(api_key, api_secret, identity=args.identity, room=args.room, name=args.name,
                        grants=token_grants(args) or None, ttl_s=ttl_s)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "token":
            print(run_token(args, os.environ))
            return 0
        logging.basicConfig(level=(args.log_level or "info").upper(),
                            format="%(asctime)s %(levelname)s control %(name)s: %(message)s")
        settings = load_settings(args)
        logging.getLogger().setLevel(settings.log_level.upper())
    except (ConfigError, ValueError) as exc:
        print(f"mediarouter: error: {exc}", file=sys.stderr)
        return 2
    from control.app import run

    return run(settings)
