"""Signal flow control: how many requests of each kind one participant may send, and logs an attacker cannot fill.

:class:`RequestLimiter` keeps one token bucket per kind of SignalRequest for one signal connection (rates below,
per second, with a burst). A request beyond its bucket is not carried out: the client gets LiveKit's
``RequestResponse`` with reason ``LIMIT_EXCEEDED`` (and the request's id and copy where the message has them);
refusals themselves are bounded by their own bucket, beyond which an excess request is dropped silently (counted).
:class:`OncePerConnection` logs the first of a kind of bad input on a connection and counts the rest, to say them
once at the end (docs/PROTOCOL.md, Flow control).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from control.rtc.limits import TokenBucket

# kind of SignalRequest -> (requests per second, burst). A kind not listed gets DEFAULT_RATE; leave is never limited.
REQUEST_RATES: dict[str, tuple[float, float]] = {
    "offer": (10, 30),
    "answer": (10, 30),
    "trickle": (50, 200),
    "add_track": (10, 40),
    "mute": (20, 50),
    "subscription": (20, 100),
    "track_setting": (50, 200),
    "update_layers": (20, 50),
    "subscription_permission": (10, 20),
    "sync_state": (5, 10),
    "simulate": (5, 10),
    "ping": (20, 50),
    "ping_req": (20, 50),
    "update_metadata": (10, 20),
}
DEFAULT_RATE = (20.0, 50.0)
UNLIMITED = frozenset({"leave"})
REFUSAL_RATE = (20.0, 100.0)  # LIMIT_EXCEEDED answers per second; beyond, excess requests are dropped silently


class RequestLimiter:
    """The request buckets of one signal connection. ``refused`` counts refusals per kind (exportable)."""

    def __init__(self, rates: dict[str, tuple[float, float]] | None = None, *,
                 clock: Callable[[], float] = time.monotonic, counter: Counter[str] | None = None) -> None:
        self.rates = REQUEST_RATES if rates is None else rates
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._refusals = TokenBucket.full(*REFUSAL_RATE, clock())
        self.refused: Counter[str] = counter if counter is not None else Counter()

    def allow(self, kind: str) -> bool:
        """True when a request of ``kind`` may be carried out now (and spends its token)."""
        if kind in UNLIMITED:
            return True
        now = self.clock()
        bucket = self._buckets.get(kind)
        if bucket is None:
            bucket = self._buckets[kind] = TokenBucket.full(*self.rates.get(kind, DEFAULT_RATE), now)
        if bucket.take(now):
            return True
        self.refused[f"signal_rate.{kind}"] += 1
        return False

    def may_answer_refusal(self) -> bool:
        """Whether a refused request still gets its RequestResponse (False: dropped without an answer)."""
        return self._refusals.take(self.clock())


class OncePerConnection:
    """Logs the first occurrence of one kind of bad input on a connection; counts the rest for :meth:`summary`."""

    def __init__(self, logger: logging.Logger, what: str, level: int = logging.WARNING) -> None:
        self.logger = logger
        self.what = what
        self.level = level
        self.count = 0

    def note(self, who: str, detail: str) -> None:
        self.count += 1
        if self.count == 1:
            self.logger.log(self.level, "%s: %s: %s (further ones on this connection are counted)",
                            who, self.what, detail)

    def summary(self, who: str) -> None:
        if self.count > 1:
            self.logger.log(self.level, "%s: %d %s on this connection in all", who, self.count, self.what)


class MalformedRequestLogFilter(logging.Filter):
    """On ``aiohttp.server``: a request the HTTP parser refused (an oversized token in the URL or a header, a bad
    line) is one WARNING line without traceback, at most one per ``window_s`` with the count of the others; other
    records pass unchanged."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self.suppressed = 0
        self._last = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        now = self.clock()
        if now - self._last < self.window_s:
            self.suppressed += 1
            return False
        self._last = now
        first_line = str(exc.message).splitlines()[0][:120] if exc.message else ""
        more = f" ({self.suppressed} more in the last {self.window_s:.0f} s)" if self.suppressed else ""
        self.suppressed = 0
        record.msg, record.args = "malformed HTTP request refused (%d %s: %s)%s", (
            exc.code, type(exc).__name__, first_line, more)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install_malformed_request_filter(logger_name: str = "aiohttp.server") -> MalformedRequestLogFilter:
    """Installs the filter once on ``logger_name`` (repeated calls return the installed one)."""
    logger = logging.getLogger(logger_name)
    for existing in logger.filters:
        if isinstance(existing, MalformedRequestLogFilter):
            return existing
    installed = MalformedRequestLogFilter()
    logger.addFilter(installed)
    return installed
