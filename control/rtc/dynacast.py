"""Dynacast: which simulcast layers of each published video track anybody wants, told to its publisher.

For every published video track a :class:`TrackDynacast` keeps what each subscriber wants, as a :class:`Wish`: the
quality it asked for (``requested``, from its subscription and UpdateTrackSettings) capped by the quality the stream
allocator gives it (``allocated``; ``None`` = what it asked for, until an allocator says otherwise). The track's
wanted quality is the highest of those; OFF (a disabled subscription, a paused track, no subscriber) counts as
nothing. When the wanted quality changes, the publisher gets ``SubscribedQualityUpdate`` with every layer up to it
enabled, as LiveKit's ``pkg/rtc/dynacast`` does:

- turning a layer on is immediate; turning one off waits ``pause_delay_s`` (LiveKit's ``dynacast_pause_delay``,
  5 s), counted from the first lowering since the last update; a raise before then cancels it;
- the first update goes out with the first subscriber, or after ``INITIAL_WAIT_S`` (LiveKit's
  ``initialQualityUpdateWait``) with everything off when nobody subscribed by then;
- an update equal to the last one sent is never repeated; while the track is muted nothing is sent and unmuting
  sends the current state again (LiveKit's ``ForceUpdate`` on unmute).

:class:`Dynacast` holds the tracks of one room. It decides, the Room (``control.rtc.rooms``) sends: each track's
``on_change`` receives the quality to announce. Timers come from an injectable ``Scheduler`` (tests use a manual
clock).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from livekit.protocol import models

Quality = models.VideoQuality
LOW: int = Quality.LOW
MEDIUM: int = Quality.MEDIUM
HIGH: int = Quality.HIGH
OFF: int = Quality.OFF
QUALITIES = (LOW, MEDIUM, HIGH)  # the layers SubscribedQualityUpdate names, low to high
INITIAL_WAIT_S = 10.0  # LiveKit's initialQualityUpdateWait
DEFAULT_PAUSE_DELAY_S = 5.0  # LiveKit's video.dynacast_pause_delay


class Timer(Protocol):
    def cancel(self) -> None: ...


Scheduler = Callable[[float, Callable[[], None]], Timer]


def loop_scheduler(delay_s: float, callback: Callable[[], None]) -> Timer:
    """The running asyncio loop's ``call_later``."""
    return asyncio.get_running_loop().call_later(delay_s, callback)


def _rank(quality: int) -> int:
    """Order of qualities with OFF lowest (in the enum OFF is 3, above HIGH)."""
    return -1 if quality == OFF else quality


def quality_of_layer(layers: Sequence[models.VideoLayer], spatial: int) -> int:
    """The quality of spatial layer ``spatial`` (-1 or past the end = the highest) of a track's layers (low to high);
    HIGH for a track that lists no layers (one encoding)."""
    if not layers:
        return HIGH
    if spatial < 0 or spatial >= len(layers):
        return int(layers[-1].quality)
    return int(layers[spatial].quality)


@dataclass(frozen=True)
class Wish:
    """One subscriber's part: the quality it asked for, capped by the one it is allocated (None = as asked)."""

    requested: int
    allocated: int | None = None

    @property
    def effective(self) -> int:
        if self.allocated is None:
            return self.requested
        return min(self.requested, self.allocated, key=_rank)


def max_quality(wishes: Iterable[Wish]) -> int:
    """The highest effective quality of ``wishes``; OFF when there is none."""
    return max((w.effective for w in wishes), key=_rank, default=OFF)


def enabled_layers(quality: int) -> list[tuple[int, bool]]:
    """(quality, enabled) for LOW, MEDIUM and HIGH when ``quality`` is the highest one wanted (OFF: none)."""
    return [(q, quality != OFF and q <= quality) for q in QUALITIES]


class TrackDynacast:
    """The wanted layers of one published video track and what its publisher was last told."""

    def __init__(
        self,
        on_change: Callable[[int], None],
        *,
        pause_delay_s: float = DEFAULT_PAUSE_DELAY_S,
        initial_wait_s: float = INITIAL_WAIT_S,
        muted: bool = False,
        schedule: Scheduler = loop_scheduler,
    ) -> None:
        self._on_change = on_change
        self.pause_delay_s = pause_delay_s
        self._schedule = schedule
        self.wishes: dict[str, Wish] = {}  # subscriber sid -> wish
        self.committed: int | None = None  # the quality last decided (None: nothing decided yet)
        self.sent: int | None = None  # the quality last sent to the publisher
        self.muted = muted
        self._pause: Timer | None = None
        self._initial: Timer | None = schedule(initial_wait_s, self._initial_due)
        self.closed = False

    @property
    def wanted(self) -> int:
        return max_quality(self.wishes.values())

    # ---- inputs ----------------------------------------------------------------------------------

    def set_requested(self, subscriber_sid: str, quality: int) -> None:
        """What ``subscriber_sid`` asks for (OFF: nothing); its allocation is kept."""
        old = self.wishes.get(subscriber_sid)
        self._set(subscriber_sid, Wish(quality, old.allocated if old else None))

    def set_allocated(self, subscriber_sid: str, quality: int | None) -> None:
        """What the stream allocator gives ``subscriber_sid`` (None: what it asks for). Ignored for a subscriber
        that asked for nothing yet."""
        old = self.wishes.get(subscriber_sid)
        if old is not None:
            self._set(subscriber_sid, Wish(old.requested, quality))

    def remove(self, subscriber_sid: str) -> None:
        if self.wishes.pop(subscriber_sid, None) is not None:
            self._update()

    def set_muted(self, muted: bool) -> None:
        """While muted nothing is sent; unmuting sends the current state at once."""
        if muted == self.muted:
            return
        self.muted = muted
        if not muted:
            self._commit(self.wanted, resend=self.committed is not None)

    def close(self) -> None:
        self.closed = True
        self._cancel_pause()
        if self._initial is not None:
            self._initial.cancel()
            self._initial = None

    # ---- decisions -------------------------------------------------------------------------------

    def _set(self, subscriber_sid: str, wish: Wish) -> None:
        if self.wishes.get(subscriber_sid) != wish:
            self.wishes[subscriber_sid] = wish
            self._update()

    def _update(self) -> None:
        if self.closed:
            return
        wanted = self.wanted
        if self.committed is None:  # the first decision goes out at once, whatever it is
            if self.wishes:
                self._commit(wanted)
            return
        if wanted == self.committed:
            self._cancel_pause()
        elif _rank(wanted) > _rank(self.committed) or self.pause_delay_s <= 0:
            self._commit(wanted)
        elif self._pause is None:
            self._pause = self._schedule(self.pause_delay_s, self._pause_due)

    def _pause_due(self) -> None:
        self._pause = None
        if not self.closed:
            self._commit(self.wanted)

    def _initial_due(self) -> None:
        self._initial = None
        if not self.closed and self.committed is None:
            self._commit(self.wanted)

    def _commit(self, quality: int, *, resend: bool = False) -> None:
        self._cancel_pause()
        if self._initial is not None:
            self._initial.cancel()
            self._initial = None
        self.committed = quality
        if self.muted or (quality == self.sent and not resend):
            return
        self.sent = quality
        self._on_change(quality)

    def _cancel_pause(self) -> None:
        if self._pause is not None:
            self._pause.cancel()
            self._pause = None


class Dynacast:
    """The :class:`TrackDynacast` of every published video track of one room, by track sid."""

    def __init__(self, *, pause_delay_s: float = DEFAULT_PAUSE_DELAY_S, initial_wait_s: float = INITIAL_WAIT_S,
                 schedule: Scheduler = loop_scheduler) -> None:
        self.pause_delay_s = pause_delay_s
        self.initial_wait_s = initial_wait_s
        self._schedule = schedule
        self.tracks: dict[str, TrackDynacast] = {}

    def add_track(self, track_sid: str, on_change: Callable[[int], None], *, muted: bool = False) -> TrackDynacast:
        track = self.tracks.get(track_sid)
        if track is None:
            track = TrackDynacast(on_change, pause_delay_s=self.pause_delay_s, initial_wait_s=self.initial_wait_s,
                                  muted=muted, schedule=self._schedule)
            self.tracks[track_sid] = track
        return track

    def remove_track(self, track_sid: str) -> None:
        track = self.tracks.pop(track_sid, None)
        if track is not None:
            track.close()

    def set_requested(self, track_sid: str, subscriber_sid: str, quality: int) -> None:
        track = self.tracks.get(track_sid)
        if track is not None:
            track.set_requested(subscriber_sid, quality)

    def set_allocated(self, track_sid: str, subscriber_sid: str, quality: int | None) -> None:
        """The stream allocator's input: what ``subscriber_sid`` is given of ``track_sid`` (None: as asked)."""
        track = self.tracks.get(track_sid)
        if track is not None:
            track.set_allocated(subscriber_sid, quality)

    def remove_subscription(self, track_sid: str, subscriber_sid: str) -> None:
        track = self.tracks.get(track_sid)
        if track is not None:
            track.remove(subscriber_sid)

    def remove_subscriber(self, subscriber_sid: str) -> None:
        for track in list(self.tracks.values()):
            track.remove(subscriber_sid)

    def set_muted(self, track_sid: str, muted: bool) -> None:
        track = self.tracks.get(track_sid)
        if track is not None:
            track.set_muted(muted)

    def close(self) -> None:
        for track in self.tracks.values():
            track.close()
        self.tracks.clear()
