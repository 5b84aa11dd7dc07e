"""A synthetic participant's LiveKit signaling: what ``python -m bench --url`` speaks to a running server.

Owns one participant's ``/rtc`` messages (binary protobuf ``SignalRequest``/``SignalResponse`` frames from
``livekit-protocol``, over the WebSocket of ``bench.ws_client``, each message handled as it arrives): the join,
``AddTrackRequest`` -> ``TrackPublishedResponse``, the publisher offer built here (one m-line per track: VP8 pt 96 or
Opus pt 111 with the SSRC the generator sends, ``a=msid`` naming the AddTrack cid, our ICE credentials and DTLS
fingerprint, ``a=setup:actpass``), the server's answer, the subscriber offers the server sends and our answers
(``a=setup:active``, every RTP m-line received, the data channel m-line accepted but never used), and the ping that
keeps the session alive. A simulcast video track is published as browsers do it: AddTrack with three ``VideoLayer``
sizes, and an m-line with ``a=rid:q/h/f send``, ``a=simulcast:send q;h;f`` and the MID and RID header extensions (ids
:data:`MID_EXT_ID`, :data:`RID_EXT_ID`) instead of SSRC lines, so the server learns each layer's SSRC from the
extensions in the packets. It builds and reads SDP text itself rather than through ``control.rtc.sdp`` because it
plays the *client* side, whose SDP the server must accept from any SDK; the ICE and DTLS work that follows is
``bench.peer``'s. Only what a load test needs: no trickle from our side (the server is ICE-lite and puts its one
candidate in its SDP), no resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from livekit.protocol import models, rtc

from bench import ws_client
from bench.peer import ServerParams, woken_or_timeout
from bench.session import AUDIO_PT, VIDEO_PT

PROTOCOL_VERSION = 15
SIGNAL_TIMEOUT_S = 15.0
MID_EXT_ID = 1  # urn:ietf:params:rtp-hdrext:sdes:mid in our offers
RID_EXT_ID = 2  # urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
# AddTrack layer sizes of a simulcast track, lowest first (LiveKit's default presets for a 640x360 camera).
SIMULCAST_SIZES = ((models.VideoQuality.LOW, 160, 90), (models.VideoQuality.MEDIUM, 320, 180),
                   (models.VideoQuality.HIGH, 640, 360))


class SignalingError(RuntimeError):
    """The server refused or did not answer a signaling step."""


@dataclass(frozen=True)
class Offered:
    """One RTP m-line of a server offer: what the subscriber will receive on it."""

    mid: str
    kind: str
    ssrc: int
    track_sid: str


@dataclass
class LocalTrack:
    cid: str
    kind: str  # "audio" | "video"
    ssrc: int
    sid: str = ""
    rids: tuple[str, ...] = ()  # simulcast layers, lowest first (then ``ssrc`` is not signaled)


@dataclass
class SubscriberOffer:
    offer_id: int
    sdp: str
    server: ServerParams
    tracks: list[Offered] = field(default_factory=list)


def server_params(sdp: str) -> ServerParams:
    """ICE credentials, sha-256 fingerprint and the host candidate from a server SDP (offer or answer)."""
    ufrag = re.search(r"^a=ice-ufrag:(\S+)", sdp, re.M)
    pwd = re.search(r"^a=ice-pwd:(\S+)", sdp, re.M)
    fingerprint = re.search(r"^a=fingerprint:sha-256 (\S+)", sdp, re.M)
    candidate = re.search(r"^a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", sdp, re.M | re.I)
    if not (ufrag and pwd and fingerprint and candidate):
        raise SignalingError("server SDP lacks ice-ufrag, ice-pwd, a sha-256 fingerprint or a host candidate")
    return ServerParams(ufrag.group(1), pwd.group(1), fingerprint.group(1).upper(), candidate.group(1),
                        int(candidate.group(2)))


def offered_tracks(sdp: str) -> list[Offered]:
    """The sending RTP m-lines of a subscriber offer with their SSRC and msid track id (the track sid)."""
    out: list[Offered] = []
    for section in re.split(r"^(?=m=)", sdp, flags=re.M)[1:]:
        kind = section.split(" ", 1)[0][2:]
        if kind not in ("audio", "video") or section.split(" ", 2)[1] == "0":
            continue
        mid = re.search(r"^a=mid:(\S+)", section, re.M)
        direction = re.search(r"^a=(sendonly|sendrecv|recvonly|inactive)\s*$", section, re.M)
        if mid is None or direction is None or direction.group(1) not in ("sendonly", "sendrecv"):
            continue
        ssrc = re.search(r"^a=ssrc:(\d+) ", section, re.M)
        msid = re.search(r"^a=msid:\S+ (\S+)", section, re.M)
        if ssrc is None or msid is None:
            raise SignalingError(f"subscriber offer m-line {mid.group(1)} has no a=ssrc or a=msid")
        out.append(Offered(mid.group(1), kind, int(ssrc.group(1)), msid.group(1)))
    return out


def _session_header(ice_ufrag: str, ice_pwd: str, fingerprint: str, setup: str, mids: list[str]) -> list[str]:
    return [
        "v=0",
        f"o=- {int(time.time() * 1000)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        f"a=group:BUNDLE {' '.join(mids)}",
        "a=msid-semantic: WMS bench",
        f"a=ice-ufrag:{ice_ufrag}",
        f"a=ice-pwd:{ice_pwd}",
        f"a=fingerprint:sha-256 {fingerprint}",
        f"a=setup:{setup}",
    ]


def _rtp_lines(kind: str, mid: str, direction: str) -> list[str]:
    if kind == "video":
        lines = [f"m=video 9 UDP/TLS/RTP/SAVPF {VIDEO_PT}", f"a=rtpmap:{VIDEO_PT} VP8/90000",
                 f"a=rtcp-fb:{VIDEO_PT} nack", f"a=rtcp-fb:{VIDEO_PT} nack pli", f"a=rtcp-fb:{VIDEO_PT} ccm fir"]
    else:
        lines = [f"m=audio 9 UDP/TLS/RTP/SAVPF {AUDIO_PT}", f"a=rtpmap:{AUDIO_PT} opus/48000/2",
                 f"a=fmtp:{AUDIO_PT} minptime=10;useinbandfec=1"]
    return [lines[0], "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0", f"a=mid:{mid}", f"a={direction}",
            "a=rtcp-mux", *lines[1:]]


def publisher_offer(ice_ufrag: str, ice_pwd: str, fingerprint: str, tracks: list[LocalTrack]) -> str:
    """m-line i (mid "i") sends ``tracks[i]``: with SSRC lines, or for simulcast with rids and the MID/RID
    extensions."""
    mids = [str(i) for i in range(len(tracks))]
    lines = _session_header(ice_ufrag, ice_pwd, fingerprint, "actpass", mids)
    for mid, track in zip(mids, tracks, strict=True):
        lines += _rtp_lines(track.kind, mid, "sendonly")
        lines.append(f"a=msid:bench {track.cid}")
        if track.rids:
            lines += [f"a=extmap:{MID_EXT_ID} urn:ietf:params:rtp-hdrext:sdes:mid",
                      f"a=extmap:{RID_EXT_ID} urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
                      *(f"a=rid:{rid} send" for rid in track.rids), f"a=simulcast:send {';'.join(track.rids)}"]
        else:
            lines += [f"a=ssrc:{track.ssrc} cname:bench", f"a=ssrc:{track.ssrc} msid:bench {track.cid}"]
    return "\r\n".join(lines) + "\r\n"


def simulcast_accepted(answer_sdp: str, mid: str) -> list[str]:
    """The rids the server's answer receives on m-line ``mid`` (``a=simulcast:recv``), lowest first as offered;
    empty if it did not accept simulcast there."""
    for section in re.split(r"^(?=m=)", answer_sdp, flags=re.M)[1:]:
        if re.search(rf"^a=mid:{re.escape(mid)}\s*$", section, re.M):
            found = re.search(r"^a=simulcast:recv (\S+)", section, re.M)
            return [alt.split(",")[0].lstrip("~") for alt in found.group(1).split(";")] if found else []
    return []


def subscriber_answer(offer_sdp: str, ice_ufrag: str, ice_pwd: str, fingerprint: str) -> str:
    """Receive every RTP m-line of the offer with its first codec; reject anything else (port 0)."""
    sections = re.split(r"^(?=m=)", offer_sdp, flags=re.M)[1:]
    mids: list[str] = []
    body: list[str] = []
    for section in sections:
        m_line = section.splitlines()[0]
        kind, port, proto, *formats = m_line[2:].split()
        mid_match = re.search(r"^a=mid:(\S+)", section, re.M)
        mid = mid_match.group(1) if mid_match else str(len(body))
        if kind == "application" and port != "0" and "webrtc-datachannel" in formats:
            # Accepted so that the transport has a live m-line even in the first offer (data channels only), but
            # the participant never starts SCTP on it: the server, as the DTLS server, waits for an INIT.
            mids.append(mid)
            body += [f"m=application 9 {proto} webrtc-datachannel", "c=IN IP4 0.0.0.0", f"a=mid:{mid}",
                     "a=sctp-port:5000", "a=max-message-size:262144"]
            continue
        wanted = {"video": VIDEO_PT, "audio": AUDIO_PT}.get(kind)
        if port == "0" or wanted is None or str(wanted) not in formats:
            body += [f"m={kind} 0 {proto} {formats[0] if formats else '0'}", "c=IN IP4 0.0.0.0", f"a=mid:{mid}"]
            continue
        mids.append(mid)
        body += _rtp_lines(kind, mid, "recvonly")
    lines = _session_header(ice_ufrag, ice_pwd, fingerprint, "active", mids) + body
    return "\r\n".join(lines) + "\r\n"


# The first byte of a SignalResponse that carries one of the room's broadcasts (its one field's protobuf key: field
# number << 3 | 2, length-delimited): update 5, speakers_changed 10, room_update 11,
# connection_quality 12. :meth:`SignalClient._read` acts on none of them, so it skips their decoding, which in a
# room of thousands is most of what a participant receives.
_IGNORED_TAGS = frozenset(bytes([number << 3 | 2]) for number in (5, 10, 11, 12))
_IGNORED_FIRST_BYTES = frozenset(tag[0] for tag in _IGNORED_TAGS)


# The /rtc query after the token: the same for every participant, encoded once.
_QUERY_REST = "&" + urlencode({"auto_subscribe": "1", "protocol": PROTOCOL_VERSION, "sdk": "python",
                               "version": "bench"})


class SignalClient:
    """One participant's signaling connection (its own WebSocket, ``bench.ws_client``); responses are sorted as they
    arrive, in the connection's ``data_received``, into the queues the caller awaits: no reader task."""

    def __init__(self, url: str, token: str, *, deflate: bool = False) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.deflate = deflate  # offer permessage-deflate, as browsers do (RFC 7692)
        self.join: rtc.JoinResponse | None = None
        self.join_seen = False  # the first message arrived (it must be the JoinResponse)
        self._ws: ws_client.WebSocket | None = None
        self._joined: asyncio.Future[rtc.JoinResponse] | None = None
        self._ping: asyncio.TimerHandle | None = None
        self._wake: asyncio.Future[None] | None = None  # what _next awaits: an answer, an offer or the end
        self._published: dict[str, asyncio.Future[models.TrackInfo]] = {}
        self.answers: asyncio.Queue[rtc.SessionDescription] = asyncio.Queue()
        self.offers: asyncio.Queue[rtc.SessionDescription] = asyncio.Queue()
        self.left: asyncio.Event = asyncio.Event()
        self.leave_reason = ""

    async def connect(self) -> rtc.JoinResponse:
        query = f"access_token={quote(self.token, safe='')}{_QUERY_REST}"
        loop = asyncio.get_running_loop()
        self._joined = loop.create_future()
        try:
            self._ws = await ws_client.connect(f"{self.url}/rtc?{query}", self._on_message, self._on_close,
                                               deflate=self.deflate, timeout=SIGNAL_TIMEOUT_S, skip=self._skip)
        except ws_client.HandshakeError as exc:
            raise SignalingError(f"join refused: HTTP {exc.status} {exc.reason}") from None
        except ws_client.ProtocolError as exc:
            raise SignalingError(f"signal connection: {exc}") from None
        try:
            async with asyncio.timeout(SIGNAL_TIMEOUT_S):
                self.join = await self._joined
        except TimeoutError:
            raise SignalingError(f"no JoinResponse within {SIGNAL_TIMEOUT_S} s") from None
        interval = max(1, self.join.ping_interval or 5)
        self._ping = loop.call_later(interval, self._send_ping, interval)
        return self.join

    def _skip(self, first: int) -> bool:
        """A broadcast this client does not use, known by its first byte (its field's tag) after the JoinResponse:
        where the server compresses each message on its own (it says server_no_context_takeover, as mediarouter
        does), such a message is not inflated past that byte. A browser inflates it on its own machine; here the
        participants share the server's cores."""
        return self.join_seen and first in _IGNORED_FIRST_BYTES

    def _on_message(self, data: bytes) -> None:
        if data and self._skip(data[0]):
            return  # a room broadcast this client does not use, inflated (context takeover) but not decoded
        if self.left.is_set():
            return
        joined = self._joined
        if not self.join_seen:
            response = rtc.SignalResponse.FromString(data)
            kind = response.WhichOneof("message")
            self.join_seen = True
            if joined is None or joined.done():
                return
            if kind == "join":
                joined.set_result(response.join)
            else:
                joined.set_exception(SignalingError(f"expected a JoinResponse, got {kind}"))
            return
        response = rtc.SignalResponse.FromString(data)
        kind = response.WhichOneof("message")
        if kind == "track_published":
            future = self._published.pop(response.track_published.cid, None)
            if future is not None and not future.done():
                future.set_result(response.track_published.track)
        elif kind == "answer":
            self.answers.put_nowait(response.answer)
            self._notify()
        elif kind == "offer":
            self.offers.put_nowait(response.offer)
            self._notify()
        elif kind == "leave":
            self.leave_reason = models.DisconnectReason.Name(response.leave.reason)
            self.left.set()
            self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _on_close(self) -> None:
        if not self.leave_reason:
            self.leave_reason = "signal connection closed"
        self.left.set()
        self._notify()
        if self._joined is not None and not self._joined.done():
            self._joined.set_exception(SignalingError("signal connection closed before the JoinResponse"))
        if self._ping is not None:
            self._ping.cancel()

    def _send_ping(self, interval: int) -> None:
        if self.left.is_set() or self._ws is None or self._ws.closed:
            return
        self._ws.send(rtc.SignalRequest(ping=int(time.time() * 1000)).SerializeToString())
        self._ping = asyncio.get_running_loop().call_later(interval, self._send_ping, interval)

    async def send(self, request: rtc.SignalRequest) -> None:
        assert self._ws is not None
        self._ws.send(request.SerializeToString())

    async def add_track(self, track: LocalTrack) -> models.TrackInfo:
        future: asyncio.Future[models.TrackInfo] = asyncio.get_running_loop().create_future()
        self._published[track.cid] = future
        kind = models.TrackType.VIDEO if track.kind == "video" else models.TrackType.AUDIO
        req = rtc.AddTrackRequest(cid=track.cid, name=track.cid, type=kind,
                                  source=models.TrackSource.CAMERA if track.kind == "video"
                                  else models.TrackSource.MICROPHONE)
        if track.kind == "video":
            req.width, req.height = 640, 360
            if track.rids:
                req.layers.extend(models.VideoLayer(quality=q, width=w, height=h)
                                  for q, w, h in SIMULCAST_SIZES[-len(track.rids):])
        await self.send(rtc.SignalRequest(add_track=req))
        return await self._wait(future, f"TrackPublished for {track.cid}")

    async def offer(self, sdp: str) -> str:
        await self.send(rtc.SignalRequest(offer=rtc.SessionDescription(type="offer", sdp=sdp, id=1)))
        answer = await self._next(self.answers, "the publisher answer", SIGNAL_TIMEOUT_S)
        return answer.sdp

    async def next_offer(self, timeout: float = SIGNAL_TIMEOUT_S) -> rtc.SessionDescription:
        return await self._next(self.offers, "a subscriber offer", timeout)

    async def answer(self, sdp: str, offer_id: int) -> None:
        await self.send(rtc.SignalRequest(answer=rtc.SessionDescription(type="answer", sdp=sdp, id=offer_id)))

    async def _next(self, queue: asyncio.Queue[rtc.SessionDescription], what: str,
                    timeout: float) -> rtc.SessionDescription:
        """The next description from ``queue`` (filled by :meth:`_on_message`); raises :class:`SignalingError` when the
        session ends first or after ``timeout`` seconds. One future and one timer per wait, no task."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while queue.empty():
            if self.left.is_set():
                raise SignalingError(f"server ended the session waiting for {what}: {self.leave_reason}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise SignalingError(f"no {what} within {timeout} s")
            self._wake = loop.create_future()
            try:
                await woken_or_timeout(self._wake, remaining)
            finally:
                self._wake = None
        return queue.get_nowait()

    async def _wait(self, awaitable: object, what: str, timeout: float = SIGNAL_TIMEOUT_S) -> object:
        leave = asyncio.ensure_future(self.left.wait())
        task = asyncio.ensure_future(awaitable)  # type: ignore[arg-type]
        try:
            done, _ = await asyncio.wait({task, leave}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leave.cancel()
        if task in done:
            return task.result()
        task.cancel()
        if leave in done:
            raise SignalingError(f"server ended the session waiting for {what}: {self.leave_reason}")
        raise SignalingError(f"no {what} within {timeout} s")

    async def close(self) -> None:
        if self._ping is not None:
            self._ping.cancel()
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.send(rtc.SignalRequest(leave=rtc.LeaveRequest(
                    reason=models.DisconnectReason.CLIENT_INITIATED)))
            await self._ws.close()
