"""``python -m bench.stun_cost``: microseconds per authenticated STUN Binding request (RFC 7675 consent check).

Times one browser-like consent check (USERNAME, GOOG-NETWORK-INFO, ICE-CONTROLLING, PRIORITY, MESSAGE-INTEGRITY,
FINGERPRINT; RFC 8445 §7.2.2, RFC 8489) through ``router.ice.IceLite.handle`` and through
``router.transport.WebRtcTransport.handle_stun``; each figure is the best of ``--repeat`` runs of ``--number`` calls
(the usual ``timeit`` reading: the minimum is the cost without interference). Everything runs in this process
without sockets: the transport gets a stub Engine whose ``send`` and ``bind_tuple`` do nothing, so its figure is the
Python cost of the STUN branch of ``MediaService._slow_path`` without the datagram send.

It also times the worker's once-a-second consent pass over N connected transports: with no deadline due (best of
``--repeat``), and as the mean over a simulated minute in which every peer checks every 2.5 s as browsers do (only
the passes are timed, not the checks). No assertions on time anywhere.

Usage::

    python -m bench.stun_cost [--number N] [--repeat R] [--transports T] [--ipv6] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import struct
import time
from collections.abc import Callable
from typing import Any

from router import stun
from router import transport as transport_module
from router.ice import IceLite
from router.transport import WebRtcTransport

# The consent schedule (router.transport.ConsentSchedule); looked up so that this script also measures a tree from
# before it, where the worker called check_consent on every transport every second.
ConsentSchedule: Any = getattr(transport_module, "ConsentSchedule", None)

SERVER_UFRAG = "a1b2c3d4"  # secrets.token_hex(4), as MediaService makes them
SERVER_PWD = "0123456789abcdef0123456789abcdef"  # secrets.token_hex(16)
CLIENT_UFRAG = "Xy7q"
GOOG_NETWORK_INFO = 0xC057  # Chrome: network id and cost, comprehension-optional


def consent_request(ufrag: str = SERVER_UFRAG, pwd: str = SERVER_PWD, *, nominate: bool = False) -> bytes:
    """A Binding request as Chrome sends it for consent freshness (a fresh transaction id each call)."""
    m = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
    m.add_username(f"{ufrag}:{CLIENT_UFRAG}")
    m.add(GOOG_NETWORK_INFO, struct.pack("!HH", 1, 10))
    m.add_ice_controlling(int.from_bytes(os.urandom(8), "big"))
    m.add_priority(0x6E7F1EFF)
    if nominate:
        m.add_use_candidate()
    return m.to_bytes(pwd.encode())


class _StubEngine:
    """The Engine calls a transport makes on the STUN path, doing nothing."""

    def add_transport(self, handle: int) -> None:
        pass

    def send(self, host: str, port: int, data: bytes) -> None:
        pass

    def bind_tuple(self, handle: int, host: str, port: int) -> None:
        pass


def _notify(event: str, target_id: str, body: dict[str, Any]) -> None:
    pass


def _transport(index: int, engine: _StubEngine, consent: Any = None) -> WebRtcTransport:
    extra = {} if consent is None else {"consent": consent}
    return WebRtcTransport(
        transport_id=f"t{index}",
        router_id="r",
        handle=index,
        engine=engine,
        certificate=None,  # type: ignore[arg-type]  # DTLS is never started here
        ice_ufrag=f"{index:08x}",
        ice_pwd=SERVER_PWD,
        notify=_notify,
        on_data_message=lambda t, label, data: None,
        **extra,
    )


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best-of-``repeat`` microseconds per call over ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / number / 1000)
    return best


def consent_pass(transports: list[WebRtcTransport], schedule: Any) -> Callable[[int], None]:
    """The worker's once-a-second consent bookkeeping over ``transports``, as MediaService runs it."""
    if schedule is not None:
        run: Callable[[int], None] = schedule.run
        return run

    def check_every_transport(now_ms: int) -> None:
        for t in transports:
            t.check_consent(now_ms)

    return check_every_transport


def steady_state_us(transports: list[WebRtcTransport], tick: Callable[[int], None], start_ms: int) -> float:
    """Mean microseconds per once-a-second pass over the second minute after connecting, each peer's valid
    checks arriving every 2.5 s (staggered). A check is simulated by moving ``last_valid_check_ms`` as
    ``IceLite.handle`` does, outside the timed part."""
    total_ns = 0
    for second in range(1, 121):
        now_ms = start_ms + second * 1000
        for i, t in enumerate(transports):
            t.ice.last_valid_check_ms = now_ms - (i * 37) % 2500
        begin = time.perf_counter_ns()
        tick(now_ms)
        if second > 60:
            total_ns += time.perf_counter_ns() - begin
    assert all(t.ice_state == "connected" for t in transports)
    return total_ns / 60 / 1000


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.stun_cost", description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=20000, help="calls per run (default 20000)")
    ap.add_argument("--repeat", type=int, default=7, help="runs; the best is printed (default 7)")
    ap.add_argument("--transports", type=int, default=900, help="transports in the consent pass (default 900)")
    ap.add_argument("--ipv6", action="store_true", help="the peer has an IPv6 address")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of IceLite.handle")
    args = ap.parse_args(argv)

    peer = ("2001:db8::7", 40000) if args.ipv6 else ("192.0.2.7", 40000)
    # Requests with distinct transaction ids, reused round-robin (building them is not what we time).
    requests = [consent_request() for _ in range(64)]
    ice = IceLite(SERVER_UFRAG, SERVER_PWD)
    assert ice.handle(consent_request(nominate=True), peer).select
    it = iter(range(1 << 62))

    def one_ice() -> object:
        return ice.handle(requests[next(it) & 63], peer)

    assert one_ice().response is not None  # type: ignore[attr-defined]
    ice_us = best_us(one_ice, args.number, args.repeat)

    engine = _StubEngine()
    transport = _transport(0, engine)
    transport.handle_stun(consent_request(f"{0:08x}", nominate=True), peer)
    assert transport.ice_state == "connected"
    t_requests = [consent_request(f"{0:08x}") for _ in range(64)]

    def one_transport() -> None:
        transport.handle_stun(t_requests[next(it) & 63], peer)

    transport_us = best_us(one_transport, args.number, args.repeat)
    assert transport.stats.stun_rejected == 0

    schedule = ConsentSchedule() if ConsentSchedule is not None else None
    transports = [_transport(i, engine, schedule) for i in range(args.transports)]
    for i, t in enumerate(transports):
        t.handle_stun(consent_request(f"{i:08x}", nominate=True), ("10.0.0.1", 1024 + i))
    now_ms = int(time.monotonic() * 1000)
    tick = consent_pass(transports, schedule)
    pass_us = best_us(lambda: tick(now_ms), max(1, args.number // 100), args.repeat)
    assert all(t.ice_state == "connected" for t in transports)
    steady_us = steady_state_us(transports, tick, now_ms)

    family = "IPv6" if args.ipv6 else "IPv4"
    print(f"authenticated Binding request ({family} peer), best of {args.repeat} x {args.number}:")
    print(f"  IceLite.handle                  {ice_us:7.2f} us/request")
    print(f"  WebRtcTransport.handle_stun     {transport_us:7.2f} us/request (stub Engine)")
    how = "ConsentSchedule.run" if schedule is not None else "check_consent on each"
    print(f"once-a-second consent pass over {args.transports} connected transports ({how}):")
    print(f"  no deadline due                 {pass_us:7.2f} us/pass")
    print(f"  steady state, checks every 2.5s {steady_us:7.2f} us/pass (mean over a minute)")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [one_ice() for _ in range(args.number)])
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
