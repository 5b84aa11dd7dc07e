"""``python -m router``: the worker process entry point, spawned by control/supervisor.py.

It only parses the command line, sets up logging and runs :class:`router.worker.Worker`; the exit code tells
the supervisor why the worker ended (router/worker.py EXIT_*).
"""

from __future__ import annotations

import argparse
import logging
import sys

LOG_LEVELS = ("debug", "info", "warning", "error")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m router", description="mediarouter worker process")
    parser.add_argument("--worker-id", type=int, required=True)
    parser.add_argument("--core", type=int, required=True)
    parser.add_argument("--control", required=True, help="ZeroMQ endpoint of control's ROUTER (ipc://...)")
    parser.add_argument("--rtc-port", type=int, required=True, help="UDP port for every transport")
    parser.add_argument("--node-ip", required=True, help="IP address the UDP port is bound to")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s w{args.worker_id} %(name)s: %(message)s")
    from router.worker import Worker

    try:
        worker = Worker(args.worker_id, args.core, args.control, args.node_ip, args.rtc_port)
    except ValueError as exc:
        logging.getLogger("router.worker").error("%s", exc)
        return 2
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
