"""Playout delay per video consumer: how long a subscriber's receiver should hold video before showing it.

On a link that loses packets a frame is complete only when its retransmissions have arrived, about one round trip
after the loss. A libwebrtc receiver that knows no round-trip time (a receive-only peer connection learns none from
RTCP unless RTCP XR is negotiated, which libwebrtc does not offer) keeps a jitter buffer of a few tens of
milliseconds, so a repaired frame comes too late and is skipped while the frames after it play: on 5 % loss and a
50 ms path the subscriber lost about a third of its frames although every packet was repaired. The playout-delay
header extension (http://www.webrtc.org/experiments/rtp-hdrext/playout-delay), which libwebrtc receivers honour
and answer in their SDP, sets a floor under that buffer. LiveKit's SFU writes the same element from jitter and NACK
rates; this module decides it from what the worker retransmitted and the subscriber's round-trip time, in our own
terms (docs/FORWARDING.md, Playout delay):

- a consumer whose retransmissions, or the NACK entries its subscriber sent (a packet lost before the worker got
  it is repaired from the publisher and forwarded late, never resent by the worker), over a scoring window are at
  least ``LOSSY_SHARE`` of what it sent gets a minimum delay of two round trips plus a margin (one repair, and a
  second one after the receiver's own NACK retry), bounded to ``MIN_DELAY_MS``..``MAX_DELAY_MS``; raising takes
  effect at once;
- after ``HOLD_S`` without such a window the floor comes down by ``STEP_DOWN_MS`` a window until it is gone, so
  that audio, which the receiver keeps in sync with the video, follows without a jump;
- the maximum stays libwebrtc's default (``CEILING_MS``).

The Engine writes the element into the consumer's packets for a second after each change
(``Engine.set_playout_delay``); the receiver keeps the last value it saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

LOSSY_SHARE = 0.01
MIN_DELAY_MS = 100
MAX_DELAY_MS = 400
MARGIN_MS = 60
DEFAULT_RTT_MS = 100  # until the subscriber's receiver reports give one
HOLD_S = 10.0
STEP_DOWN_MS = 50
CEILING_MS = 10_000
MIN_CHANGE_MS = 20


def repair_delay_ms(rtt_ms: int) -> int:
    """The minimum playout delay that lets a receiver wait for two repairs over a path with this round trip."""
    rtt = rtt_ms if rtt_ms > 0 else DEFAULT_RTT_MS
    return max(MIN_DELAY_MS, min(MAX_DELAY_MS, 2 * rtt + MARGIN_MS))


@dataclass(slots=True)
class PlayoutDelay:
    """One video consumer's floor. ``update`` reads its Engine snapshot once per scoring window and returns the
    (min_ms, max_ms) to send now, or None when nothing changes."""

    sent_ms: int = 0  # the minimum the receiver was last told (0 = none: libwebrtc's default)
    _packets: int = -1
    _retransmits: int = 0
    _nacks: int = 0
    _lossy_at: float | None = None

    def update(self, snapshot: Mapping[str, Any], now: float) -> tuple[int, int] | None:
        packets = int(snapshot.get("packets", 0))
        retransmits = int(snapshot.get("retransmits", 0))
        nacks = int(snapshot.get("nack_rx", 0))
        if self._packets < 0:
            self._packets, self._retransmits, self._nacks = packets, retransmits, nacks
            return None
        sent = packets - self._packets
        repairs = max(retransmits - self._retransmits, nacks - self._nacks)
        self._packets, self._retransmits, self._nacks = packets, retransmits, nacks
        target = self.sent_ms
        if sent > 0 and repairs >= LOSSY_SHARE * sent:
            self._lossy_at = now
            target = max(self.sent_ms, repair_delay_ms(int(snapshot.get("rtt_ms", -1))))
        elif self.sent_ms and (self._lossy_at is None or now - self._lossy_at >= HOLD_S):
            target = max(0, self.sent_ms - STEP_DOWN_MS)
            if target < MIN_DELAY_MS:
                target = 0
        if target == self.sent_ms or (target and abs(target - self.sent_ms) < MIN_CHANGE_MS):
            return None
        self.sent_ms = target
        return target, CEILING_MS


class PlayoutEngine(Protocol):
    """The Engine call the keeper makes (fastpath.Engine)."""

    def set_playout_delay(self, c: int, ext_id: int, min_ms: int, max_ms: int) -> None: ...


class PlayoutDelays:
    """The floors of a worker's video consumers whose subscribers were offered the element: ``watch`` when the
    consumer is created, ``observe`` with each of its scoring snapshots (router/scores.py), ``forget`` when it
    closes."""

    def __init__(self, engine: PlayoutEngine) -> None:
        self.engine = engine
        self._delays: dict[str, tuple[int, int, PlayoutDelay]] = {}  # consumer id -> (handle, ext id, floor)

    def watch(self, consumer_id: str, handle: int, ext_id: int) -> None:
        self._delays[consumer_id] = (handle, ext_id, PlayoutDelay())

    def forget(self, consumer_id: str) -> None:
        self._delays.pop(consumer_id, None)

    def observe(self, consumer_id: str, snapshot: Mapping[str, Any], now: float) -> None:
        entry = self._delays.get(consumer_id)
        if entry is None:
            return
        handle, ext_id, delay = entry
        change = delay.update(snapshot, now)
        if change is not None:
            self.engine.set_playout_delay(handle, ext_id, *change)

    def floor_ms(self, consumer_id: str) -> int:
        """What the consumer's receiver was last told (0 = nothing)."""
        entry = self._delays.get(consumer_id)
        return entry[2].sent_ms if entry is not None else 0
