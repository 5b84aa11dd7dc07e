"""``python -m bench.signal_storm``: the signaling plane alone under a join/leave storm and a metadata flood.

Control's ``/rtc`` (aiohttp, RoomManager, Room, Participant) runs in a child process over null workers (every
media request succeeds at once), so the figures are control's own signaling cost: N participants join one room
through real WebSockets (each reads everything it is sent), then all leave; with ``--flood K`` one participant
first sends K metadata updates in a burst while the others measure their ping RTT. Prints the time to admit
all N (every JoinResponse received), the time until the room is empty after the leaves, control's CPU seconds
for each phase, and with ``--flood`` the others' sockets still open and their worst ping RTT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from typing import Any

import aiohttp
from livekit.protocol import rtc

KEY, SECRET = "devkey", "bench-secret-bench-secret-bench-secret"


# ------------------------------------------------------------------------------------------ server side


class NullMedia:
    """A worker that does everything at once and has nothing to say."""

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if name == "create_transport":
                from control.rtc.negotiation import TransportParams
                return TransportParams(ice_ufrag="uf" + args[1][-6:], ice_pwd="p" * 22,
                                       fingerprints=[("sha-256", "AB:CD")], candidate_ip="127.0.0.1",
                                       candidate_port=7882)
            if name == "get_stats":
                return {}
            return None
        return call


class NullNegotiator:
    def answer(self, offer_sdp: str, local: Any) -> Any:
        from control.rtc.participant import PublisherAnswer, RemoteSide
        return PublisherAnswer(sdp="v=0\r\na=mid:0\r\n", remote=RemoteSide([("sha-256", "EF")], "server", 5000),
                               media=[])

    def offer(self, local: Any, tracks: list[Any], *, session_version: int, previous: str | None) -> str:
        return f"v=0\r\no=- 1 {session_version}\r\na=mid:dc\r\n"

    def parse_answer(self, answer_sdp: str) -> Any:
        from control.rtc.participant import RemoteSide
        return RemoteSide([("sha-256", "01")], "server", 5000)

    def pt_map(self, spec: Any) -> dict[int, int]:
        return {}

    def rtx_pt_map(self, spec: Any) -> dict[int, int]:
        return {}


class NullPool:
    def loads(self, rooms_per_worker: Any) -> list[Any]:
        from control.workers.placement import WorkerLoad
        return [WorkerLoad(0, True, rooms_per_worker.get(0, 0))]

    def media(self, worker_id: int) -> NullMedia:
        return NullMedia()


def serve(port: int, batch_interval: float | None) -> None:
    from aiohttp import web

    from control.app import add_livekit
    from control.rtc.rooms import RoomManager, RoomSettings
    extra: dict[str, Any] = {}
    if batch_interval is not None and "update_batch_interval_s" in RoomSettings.__dataclass_fields__:
        extra["update_batch_interval_s"] = batch_interval
    settings = RoomSettings(keys={KEY: SECRET}, join_timeout_s=3600, **extra)
    manager = RoomManager(NullPool(), NullNegotiator(), settings)  # type: ignore[arg-type]
    app = web.Application()
    add_livekit(app, manager)

    async def count(request: web.Request) -> web.Response:
        return web.json_response({name: len(r.participants) for name, r in manager.rooms.items()})

    app.router.add_get("/count", count)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ------------------------------------------------------------------------------------------ client side


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Peer:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames = 0
        self.bytes = 0
        self.joined = asyncio.Event()
        self.pongs: dict[int, float] = {}
        self.rtts: list[float] = []
        self.task = asyncio.get_running_loop().create_task(self.read())

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            self.frames += 1
            self.bytes += len(msg.data)
            if not self.joined.is_set():
                self.joined.set()
            elif self.pongs:
                resp = rtc.SignalResponse.FromString(msg.data)
                if resp.WhichOneof("message") == "pong_resp":
                    sent = self.pongs.pop(resp.pong_resp.last_ping_timestamp, None)
                    if sent is not None:
                        self.rtts.append(time.perf_counter() - sent)


async def run(args: argparse.Namespace) -> None:
    from control.auth import create_token
    port = args.port
    cmd = [sys.executable, "-m", "bench.signal_storm", "--serve", "--port", str(port)]
    if args.batch_interval is not None:
        cmd += ["--batch-interval", str(args.batch_interval)]
    if os.environ.get("SIGNAL_STORM_PROFILE"):  # py-spy record of control (bench extras), to this file
        cmd = ["py-spy", "record", "-o", os.environ["SIGNAL_STORM_PROFILE"], "-f", "raw", "--", *cmd]
    server = await asyncio.create_subprocess_exec(*cmd)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            for _ in range(100):
                try:
                    async with session.get(base + "/count"):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            grants = {"canUpdateOwnMetadata": True}
            tokens = [create_token(KEY, SECRET, identity=f"p{i}", room="storm", grants=grants)
                      for i in range(args.participants)]
            gate = asyncio.Semaphore(args.concurrency)

            async def join(token: str) -> Peer:
                async with gate:
                    ws = await session.ws_connect(f"ws://127.0.0.1:{port}/rtc", params={"access_token": token},
                                                  max_msg_size=0)
                    peer = Peer(ws)
                    await peer.joined.wait()
                    return peer

            cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
            peers = await asyncio.gather(*(join(t) for t in tokens))
            admit_s, admit_cpu = time.perf_counter() - t0, cpu_seconds(server.pid) - cpu0
            await asyncio.sleep(1.0)
            print(f"join   N={args.participants}: all admitted in {admit_s:.2f} s, control CPU {admit_cpu:.2f} s "
                  f"({1000 * admit_cpu / args.participants:.2f} ms/join); frames received "
                  f"{sum(p.frames for p in peers)}, {sum(p.bytes for p in peers) / 1e6:.1f} MB")
            if args.flood:
                await flood(peers, args.flood, server.pid)
            cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
            leave = rtc.SignalRequest(leave=rtc.LeaveRequest()).SerializeToString()
            await asyncio.gather(*(p.ws.send_bytes(leave) for p in peers if not p.ws.closed))
            while True:
                async with session.get(base + "/count") as resp:
                    if not any((await resp.json()).values()):
                        break
                await asyncio.sleep(0.02)
            leave_s, leave_cpu = time.perf_counter() - t0, cpu_seconds(server.pid) - cpu0
            print(f"leave  N={args.participants}: room empty after {leave_s:.2f} s, control CPU {leave_cpu:.2f} s")
            for p in peers:
                await p.ws.close()
    finally:
        if os.environ.get("SIGNAL_STORM_PROFILE"):
            server.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT (and stops control)
        else:
            server.terminate()
        await server.wait()


async def flood(peers: list[Peer], count: int, pid: int) -> None:
    sender, others = peers[0], peers[1:]
    stop = asyncio.Event()

    async def pinger(p: Peer) -> None:
        n = 0
        while not stop.is_set() and not p.ws.closed:
            n += 1
            p.pongs[n] = time.perf_counter()
            await p.ws.send_bytes(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=n)).SerializeToString())
            await asyncio.sleep(0.1)

    watched = others[:20]
    tasks = [asyncio.get_running_loop().create_task(pinger(p)) for p in watched]
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    for i in range(count):
        req = rtc.UpdateParticipantMetadata(metadata=f"m{i}", request_id=i + 1)
        await sender.ws.send_bytes(rtc.SignalRequest(update_metadata=req).SerializeToString())
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    open_others = sum(1 for p in others if not p.ws.closed)
    worst = max((r for p in watched for r in p.rtts), default=float("nan"))
    print(f"flood  {count} metadata updates: {open_others}/{len(others)} other sockets open, sender open "
          f"{not sender.ws.closed}, worst ping RTT of {len(watched)} others {1000 * worst:.0f} ms, control CPU "
          f"{cpu_seconds(pid) - cpu0:.2f} s over {time.perf_counter() - t0:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.signal_storm")
    parser.add_argument("--participants", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--flood", type=int, default=0, help="metadata updates one participant sends in a burst")
    parser.add_argument("--batch-interval", type=float, default=None, help="room.update_batch_interval_s")
    parser.add_argument("--port", type=int, default=17980)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.batch_interval)
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
