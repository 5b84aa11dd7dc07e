"""``python -m router``: the worker process entry point, spawned by control/workers/supervisor.py.

It only parses the command line, sets up logging and runs :class:`router.worker.Worker`; the exit code tells
the supervisor why the worker ended (router/worker.py EXIT_*). Every setting comes on the command line (the
supervisor passes what control/config.py resolved); the worker reads none from the environment.
"""

from __future__ import annotations

import argparse
import logging
import sys

from router.protocol import Event

LOG_LEVELS = ("debug", "info", "warning", "error")
EVENT_NAMES = frozenset(str(event) for event in Event)
SRTP_CRYPTO = ("mediarouter", "libsrtp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m router", description="mediarouter worker process")
    parser.add_argument("--worker-id", type=int, required=True)
    parser.add_argument("--core", type=int, required=True)
    parser.add_argument("--control", required=True, help="ZeroMQ endpoint of control's ROUTER (ipc://...)")
    parser.add_argument("--rtc-port", type=int, required=True, help="UDP port for every transport")
    parser.add_argument("--node-ip", required=True,
                        help="address(es) announced in ICE candidates, comma-separated (the first is the primary)")
    parser.add_argument("--bind-ip", default="", help="address the UDP and TCP ports are bound to (default: all)")
    parser.add_argument("--ice-tcp", action=argparse.BooleanOptionalAction, default=False,
                        help="listen for ICE-TCP (RFC 6544) on the UDP port's number too")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    parser.add_argument("--gso", action=argparse.BooleanOptionalAction, default=True,
                        help="send with UDP GSO where the kernel has it (default on)")
    parser.add_argument("--hmac-batch", action=argparse.BooleanOptionalAction, default=True,
                        help="compute AES-CM-80 tags in batches (default on)")
    parser.add_argument("--srtp-crypto", default="mediarouter", choices=SRTP_CRYPTO,
                        help="AES-CM-80 primitives under libsrtp: the fast path's or libsrtp's own")
    parser.add_argument("--congestion-control", action=argparse.BooleanOptionalAction, default=True,
                        help="share each subscriber transport's bandwidth estimate among its consumers (default on)")
    parser.add_argument("--rx-hold-ms", type=int, default=0,
                        help="leave the UDP socket unwatched this long after each wake-up (default 0: off)")
    parser.add_argument("--quiet-events", default="",
                        help="events not to send to control, comma-separated (control names those it ignores)")
    args = parser.parse_args(argv)
    args.quiet_events = [event.strip() for event in args.quiet_events.split(",") if event.strip()]
    unknown = [event for event in args.quiet_events if event not in EVENT_NAMES]
    if unknown:
        parser.error(f"--quiet-events: unknown event(s) {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s w{args.worker_id} %(name)s: %(message)s")
    from router.worker import Worker

    try:
        worker = Worker(args.worker_id, args.core, args.control, args.node_ip, args.rtc_port, bind_ip=args.bind_ip,
                        ice_tcp=args.ice_tcp, gso=args.gso,
                        hmac_batch=args.hmac_batch, srtp_crypto=args.srtp_crypto,
                        congestion_control=args.congestion_control, rx_hold_ms=args.rx_hold_ms,
                        quiet_events=args.quiet_events)
    except ValueError as exc:
        logging.getLogger("router.worker").error("%s", exc)
        return 2
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
