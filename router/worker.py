"""One worker process: pinned to one core, one UDP port (and its ICE-TCP port), one control channel, one event loop.

The Worker owns the process-level set-up (CPU affinity, signal dispositions, parent-death signal, uvloop), the
UDP socket (router/ports.py), the DEALER channel (router/channel.py), ``worker.running``/``worker.heartbeat``
and ``worker.close``. Everything media-related is installed by ``router.media_host.install_media(worker)``
before the worker announces itself, through the attributes documented on :class:`Worker`.

Like mediasoup's worker it ignores SIGPIPE, SIGHUP, SIGALRM, SIGUSR1 and SIGUSR2 and closes on SIGINT/SIGTERM.
It never outlives the control process: PR_SET_PDEATHSIG(SIGKILL) (prctl(2)), a check of getppid() every 0.5 s,
and the ZeroMQ socket monitor (control peer disconnected for 3 s) each end it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastpath import crypto_kernel
from router import media_host
from router.channel import BodyHandler, Channel
from router.collector import paced_collector
from router.ports import DEFAULT_BUFFER_BYTES, PortBindError, bind_tcp, bind_udp, ipv6_over_tcp, wildcard
from router.protocol import PROTOCOL_VERSION, Empty, Event, Method, WorkerHeartbeat, WorkerRunning

log = logging.getLogger("router.worker")

EXIT_OK = 0
EXIT_BIND_FAILED = 3
EXIT_CONTROL_LOST = 4
EXIT_SETUP_FAILED = 5

HEARTBEAT_INTERVAL_S = 1.0
WATCH_INTERVAL_S = 0.5
CONTROL_GRACE_S = 3.0

IGNORED_SIGNALS = (signal.SIGPIPE, signal.SIGHUP, signal.SIGALRM, signal.SIGUSR1, signal.SIGUSR2)

_PR_SET_PDEATHSIG = 1

HeartbeatSource = Callable[[], dict[str, Any]]
CloseCallback = Callable[[], Awaitable[None] | None]


class Worker:
    """A worker process.

    Lifecycle: ``Worker(...)`` → ``run()`` (process set-up, then ``serve()`` on uvloop) → bound, media
    installed, ``worker.running`` sent → heartbeats until ``stop()`` (SIGINT/SIGTERM, ``worker.close``, parent
    or control lost) → close callbacks run → channel and socket closed → exit code returned.

    Attributes for the media side (valid once ``install_media`` is called): ``loop``, ``sock`` (the bound
    non-blocking UDP socket), ``tcp_sock`` (the listening ICE-TCP socket on the same port number, None when
    ``ice_tcp`` is off), ``tcp6_sock`` (an IPv6 ICE-TCP listener on ``::`` at that number when ``node_ips`` has
    IPv6 addresses after an IPv4 one: the fast path forwards IPv4 tuples only, so IPv6 clients come in over ICE-TCP,
    whose relay reaches the Engine over IPv4; else None), ``channel`` (register request handlers, ``notify``
    events), ``worker_id``,
    ``core``, ``node_ip`` (the primary announced address), ``node_ips`` (every announced address), ``bind_ip``
    (where the sockets are bound: every interface unless given), ``rtc_port``, ``rcvbuf``/``sndbuf`` (as read back
    from the kernel), ``gso`` (send with UDP GSO where the kernel has it).

    Fast-path settings (``mediarouter serve``'s, control/config.py): ``gso``; ``hmac_batch`` and
    ``srtp_crypto`` go to ``fastpath.crypto_kernel.install`` before the media side makes its first SRTP session.
    Heartbeats report ``gso`` (1 while the Engine segments its sends). ``congestion_control`` off leaves every
    consumer on control's preferred layer (router/media_service.py gives the stream allocator no estimates).
    ``rx_hold_ms`` > 0: after each wake-up for the UDP socket the media side leaves it unwatched that long
    (docs/PERFORMANCE.md, Wake-ups).
    """

    def __init__(self, worker_id: int, core: int, control_endpoint: str, node_ip: str, rtc_port: int, *,
                 bind_ip: str = "", ice_tcp: bool = False, buffer_bytes: int = DEFAULT_BUFFER_BYTES, gso: bool = True,
                 hmac_batch: bool = True, srtp_crypto: str = "mediarouter", congestion_control: bool = True,
                 rx_hold_ms: int = 0, quiet_events: Iterable[str] = ()) -> None:
        if worker_id < 0:
            raise ValueError(f"worker id {worker_id} must be non-negative")
        if core < 0:
            raise ValueError(f"core {core} must be non-negative")
        if not 1 <= rtc_port <= 65535:
            raise ValueError(f"rtc port {rtc_port} out of range 1-65535")
        if not 0 <= rx_hold_ms <= 1000:
            raise ValueError(f"rx hold {rx_hold_ms} ms out of range 0-1000")
        if srtp_crypto not in crypto_kernel.SRTP_CRYPTO:
            raise ValueError(f"srtp crypto {srtp_crypto!r} is not one of {', '.join(crypto_kernel.SRTP_CRYPTO)}")
        self.worker_id = worker_id
        self.core = core
        self.control_endpoint = control_endpoint
        self.node_ips = [address.strip() for address in node_ip.split(",") if address.strip()]
        if not self.node_ips:
            raise ValueError(f"node ip {node_ip!r} names no address")
        self.node_ip = self.node_ips[0]
        try:
            self.bind_ip = bind_ip or wildcard(self.node_ip)
        except ValueError as exc:
            raise ValueError(f"invalid IP address {self.node_ip!r}") from exc
        self.ice_tcp = ice_tcp
        self.quiet_events = frozenset(quiet_events)
        self.tcp_sock: socket.socket | None = None
        self.tcp6_sock: socket.socket | None = None
        self.rtc_port = rtc_port
        self.buffer_bytes = buffer_bytes
        self.gso = gso
        self.hmac_batch = hmac_batch
        self.srtp_crypto = srtp_crypto
        self.congestion_control = congestion_control
        self.rx_hold_ms = rx_hold_ms
        self.loop: asyncio.AbstractEventLoop
        self.sock: socket.socket
        self.channel: Channel
        self.rcvbuf = 0
        self.sndbuf = 0
        self._parent_pid = os.getppid()
        self._started_at = time.monotonic()
        self._heartbeat_sources: list[HeartbeatSource] = []
        self._close_callbacks: list[CloseCallback] = []
        self._stopped: asyncio.Event | None = None
        self._exit_code = EXIT_OK

    # ------------------------------------------------------------------------------------ extension points

    def add_heartbeat_source(self, source: HeartbeatSource) -> None:
        """``source()`` is called for every heartbeat; its keys are merged into its ``counters``."""
        self._heartbeat_sources.append(source)

    def add_close_callback(self, callback: CloseCallback) -> None:
        """Called (and awaited when it returns an awaitable) on close, in reverse order of registration."""
        self._close_callbacks.append(callback)

    def stop(self, exit_code: int = EXIT_OK, reason: str = "requested") -> None:
        """Ends ``serve()``; the first reason wins."""
        if self._stopped is None or self._stopped.is_set():
            return
        log.info("worker %d stopping: %s", self.worker_id, reason)
        self._exit_code = exit_code
        self._stopped.set()

    # --------------------------------------------------------------------------------------------- process

    def run(self) -> int:
        """Process entry point: pin, set signals and the parent-death signal, then serve on uvloop."""
        try:
            self._pin()
            self._set_signals()
            self._set_parent_death_signal()
        except (OSError, ValueError) as exc:
            log.error("worker %d set-up failed: %s", self.worker_id, exc)
            return EXIT_SETUP_FAILED
        import uvloop

        return uvloop.run(self.serve())

    def _pin(self) -> None:
        allowed = os.sched_getaffinity(0)
        if self.core not in allowed:
            raise ValueError(f"core {self.core} is not in this process's CPU set {sorted(allowed)}")
        os.sched_setaffinity(0, {self.core})

    def _set_signals(self) -> None:
        for sig in IGNORED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def _set_parent_death_signal(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
        # NOTE: the parent may have died between fork and prctl; then the signal will never come.
        if os.getppid() != self._parent_pid:
            raise OSError(0, "parent exited during start-up")

    # --------------------------------------------------------------------------------------------- serving

    async def serve(self) -> int:
        """Binds, connects, installs media, announces ``worker.running`` and runs until stopped."""
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        try:
            bound = bind_udp(self.bind_ip, self.rtc_port, self.buffer_bytes)
        except PortBindError as exc:
            log.error("worker %d: %s", self.worker_id, exc.strerror)
            return EXIT_BIND_FAILED
        except ValueError as exc:
            log.error("worker %d: %s", self.worker_id, exc)
            return EXIT_SETUP_FAILED
        if self.ice_tcp:
            try:
                self.tcp_sock = bind_tcp(self.bind_ip, self.rtc_port)
                if ipv6_over_tcp(self.bind_ip, self.node_ips):
                    self.tcp6_sock = bind_tcp("::", self.rtc_port, v6only=True)
            except PortBindError as exc:
                if self.tcp_sock is not None:
                    self.tcp_sock.close()
                    self.tcp_sock = None
                bound.sock.close()
                log.error("worker %d: %s", self.worker_id, exc.strerror)
                return EXIT_BIND_FAILED
        self.sock, self.rcvbuf, self.sndbuf = bound.sock, bound.rcvbuf, bound.sndbuf
        self.channel = Channel(self.control_endpoint, self.worker_id)
        self.channel.quiet = self.quiet_events
        try:
            for method, handler in self.request_handlers().items():
                self.channel.handle(method, handler)
            # Control sends no request before worker.running, so handlers may be added after the connect.
            await self.channel.start()
            crypto_kernel.install(srtp_crypto=self.srtp_crypto, hmac_batch=self.hmac_batch)
            media = media_host.install_media(self)
        except Exception:
            log.exception("worker %d set-up failed", self.worker_id)
            await self.channel.close()
            self._close_sockets()
            return EXIT_SETUP_FAILED
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self.stop, EXIT_OK, signal.Signals(sig).name)
        running = WorkerRunning(pid=os.getpid(), core=self.core, udp_port=self.rtc_port,
                                protocol_version=PROTOCOL_VERSION, rcvbuf=self.rcvbuf, sndbuf=self.sndbuf)
        self.channel.emit(Event.WORKER_RUNNING, "", running)
        tcp = ("+tcp" if self.tcp_sock is not None else "") + ("+tcp6" if self.tcp6_sock is not None else "")
        log.info("worker %d running: pid %d, core %d, udp%s %s:%d, announced as %s", self.worker_id, os.getpid(),
                 self.core, tcp, self.bind_ip, self.rtc_port, ",".join(self.node_ips))
        for primitive, provider in crypto_kernel.installed().items():
            # libsrtp's own function is slower, not wrong: a warning unless the operator asked for it.
            quiet = provider.startswith("mediarouter") or self.srtp_crypto == "libsrtp"
            log.log(logging.INFO if quiet else logging.WARNING, "worker %d SRTP %s: %s", self.worker_id, primitive,
                    provider)
        log.info("worker %d UDP GSO: %s", self.worker_id, "on" if media.engine.gso else
                 "off (the kernel has no UDP_SEGMENT)" if self.gso else "off (gso setting)")
        self.add_heartbeat_source(lambda: {"gso": int(media.engine.gso)})
        # The data-channel stack (aiortc's SCTP, ~0.5 s of imports) now, while no transport waits, instead of inside
        # the first DTLS handshake that completes (router/transport.py imports it there).
        import router.sctp  # noqa: F401
        # Objects created during start-up live for the whole process: frozen, out of the collector's scans, and full
        # collections paced while the worker serves (router/collector.py).
        with paced_collector():
            tasks = [self.loop.create_task(self._heartbeat_loop()), self.loop.create_task(self._watch_loop())]
            await self._stopped.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close()
        return self._exit_code

    async def _close(self) -> None:
        for callback in reversed(self._close_callbacks):
            try:
                result = callback()
                if result is not None:
                    await result
            except Exception:
                log.exception("close callback failed")
        await self.channel.close()
        self._close_sockets()

    def _close_sockets(self) -> None:
        self.sock.close()
        if self.tcp_sock is not None:
            self.tcp_sock.close()
        if self.tcp6_sock is not None:
            self.tcp6_sock.close()

    def request_handlers(self) -> dict[Method, BodyHandler]:
        """The worker's own requests; ``install_media`` registers the media ones (and ``worker.dump``)."""
        return {Method.WORKER_CLOSE: self._on_close}

    async def _on_close(self, target_id: str, body: Empty) -> Empty:
        # Answer first: the reply is queued before the loop gets to stop.
        self.loop.call_soon(self.stop, EXIT_OK, "worker.close")
        return Empty()

    def heartbeat_counters(self) -> dict[str, Any]:
        """The worker's own counters plus every heartbeat source's."""
        counters: dict[str, Any] = {"uptime_s": round(time.monotonic() - self._started_at, 3)}
        counters.update(self.channel.counters.as_dict())
        for source in self._heartbeat_sources:
            try:
                counters.update(source())
            except Exception:
                log.exception("heartbeat source failed")
        return counters

    async def _heartbeat_loop(self) -> None:
        seq = 0
        deadline = self.loop.time()
        while True:
            deadline += HEARTBEAT_INTERVAL_S
            await asyncio.sleep(max(0.0, deadline - self.loop.time()))
            lag_s = max(0.0, self.loop.time() - deadline)
            if lag_s > HEARTBEAT_INTERVAL_S:
                # The loop was blocked for more than a period: start again from now instead of bursting.
                deadline = self.loop.time()
            seq += 1
            beat = WorkerHeartbeat(seq=seq, loop_lag_ms=round(lag_s * 1000.0, 3),
                                   counters=self.heartbeat_counters())
            self.channel.emit(Event.WORKER_HEARTBEAT, "", beat, droppable=True)

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            if os.getppid() != self._parent_pid:
                self.stop(EXIT_CONTROL_LOST, f"parent {self._parent_pid} exited")
                return
            if self.channel.disconnected_for() > CONTROL_GRACE_S:
                self.stop(EXIT_CONTROL_LOST, f"control channel down for more than {CONTROL_GRACE_S:.0f} s")
                return
