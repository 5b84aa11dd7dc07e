"""The stream allocator: shares each subscriber transport's bandwidth estimate among the consumers on it.

Every :data:`ALLOCATE_INTERVAL_S` the worker's tick runs :meth:`StreamAllocator.tick`. For each transport with
consumers and a send-side bandwidth estimate (:class:`EstimateSource`; none: nothing is managed and every consumer
follows control's preferred layer, as before the allocator existed) it gives the estimate to the consumers in
LiveKit's order (pkg/sfu/streamallocator): audio first (always, its measured rate comes off the top), then video
by priority, every video track its lowest live layer before any track gets more, then one layer up at a time while
it fits in :data:`VIDEO_SHARE` of the estimate less the rate of retransmissions toward the transport (at most
:data:`RTX_MAX_SHARE` of it), never above the preferred layer. When the current layers no longer
fit and the link shows it (overuse, loss, or an estimate below what is sent) the tracks drop at once to what
fits; a raise needs headroom of :data:`RAISE_MARGIN` over the next layer's need for :data:`RAISE_TICKS`
passes in a row and waits :data:`RAISE_HOLD_S` after a lowering. A video track not even the lowest layer of
which fits is paused, and ``on_stream_state`` tells control (the subscriber gets ``StreamStateUpdate``).
An estimate cannot rise far above what is sent, so when a raise is wanted and does not fit
(and on the first allocation, before lowering from the unconfirmed start estimate) the allocator asks the Engine
for a probe (``Engine.probe``: padding up to a probe rate for :data:`PROBE_DURATION_S`), as LiveKit's
probe controller does; a probe that did not lift the estimate to its goal delays the next one
(:data:`PROBE_BACKOFF_S`, x :data:`PROBE_BACKOFF_FACTOR` up to :data:`PROBE_BACKOFF_MAX_S`). A transport whose
video is all paused probes to resume :data:`PAUSE_HOLD_S` after the pause, for :data:`PROBE_RESUME_DURATION_S`,
and, after a failure (or a pause again within :data:`PROBE_STABLE_S` of the resume), again within
:data:`PROBE_RESUME_BACKOFF_S` growing to :data:`PROBE_RESUME_BACKOFF_MAX_S`; retransmissions never pause a track
(its lowest layer is fitted to the budget before them). The layer asked of
the Engine is ``Consumer.layer_cap``, the lower of control's preference and the allocation. A lowering is always
the bandwidth's, so it goes to the Engine as ``lower_consumer_layer`` where the Engine has it: the layer that no
longer fits stops at once, and the lower layer's key frame (asked for at the same moment) is not queued behind it.
A "layer" above is a spatial layer for a simulcast camera (it keeps its full frame rate). A track with a single
spatial layer, and a screen share, move instead on a ladder of (spatial layer, VP8 TID cap) steps built by
router/temporal.py (frame rate is the single-layer track's only lever before a pause; a screen share keeps its
resolution and drops frame rate first, as libwebrtc's degradation preferences): the same rules apply to the steps,
and a step's TID cap goes to the Engine as ``set_consumer_temporal`` (lower: at the next picture; higher: at the
next layer-sync picture) and is kept on the Consumer record (``allocated_temporal``). docs/FORWARDING.md
"Simulcast switching" (its "Temporal layers" and "Probing") explains the rules and constants.

This module owns the allocator's state (per transport, per track, the producers' measured layer rates); the
Consumer records carry only what the media service needs too (``allocated_layer``, ``bw_paused``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from router.layer_rates import LayerRates
from router.temporal import TID_ALL, Steps, TemporalRates, allocates_temporal

if TYPE_CHECKING:
    from router.media_router import Consumer, Producer
    from router.registry import Registry
    from router.transport import WebRtcTransport

log = logging.getLogger("router.allocator")

ALLOCATE_INTERVAL_S = 0.5  # one pass per transport this often: congestion is acted on within ~0.5-1 s
VIDEO_SHARE = 0.9  # video gets at most this share of the estimate (after audio): headroom for RTCP, RTX, jitter
RAISE_MARGIN = 1.1  # a raise needs the estimate to cover the new total by 10 % more (no flapping at a threshold)
RAISE_TICKS = 3  # ... in this many passes in a row (1.5 s of steady headroom)
RAISE_HOLD_S = 4.0  # no raise for this long after a bandwidth-driven lowering (LiveKit waits ~5 s to unpause)
RAISE_MAX_LOSS = 0.1  # no raise while the estimator reports more loss than this
PROBE_DURATION_S = 0.25  # one probe cluster (LiveKit starts at 200 ms): short, so that a queue can absorb it
PROBE_SETTLE_S = 1.5  # the longest wait for a probe's result after the cluster (feedback and its RTT)
PROBE_OVERSHOOT = 1.2  # probe at this much of the estimate the raise needs ...
PROBE_MIN_EXTRA_BPS = 200_000  # ... and at least this much above it (LiveKit: max(120 %, 200 kbit/s))
PROBE_MAX_LOSS = 0.1  # no probe on a link that loses more than this (or is overusing). As GCC's hold band and
# libwebrtc's loss-based BWE v2 (which learns a link's inherent loss), loss below 10 % is not taken as congestion:
# random loss that NACK/RTX repairs stays the same at a higher rate and must not keep a subscriber below a layer
# (a 5 % lossy link read 2-8 % in nearly every estimator window and was never probed)
PROBE_BACKOFF_S = 3.0  # after a failed probe the next waits this long ...
PROBE_BACKOFF_FACTOR = 1.5  # ... times this after each further failure ...
PROBE_BACKOFF_MAX_S = 10.0  # ... up to this (LiveKit's is longer; a link whose cap is lifted must be found again
# within seconds, and a 0.25 s probe every 10 s costs a capped link a ~100 ms queue); a successful probe resets it
# once its raise held this long:
PROBE_STABLE_S = 10.0  # (a lowering sooner counts as a failure, so a lossy link does not flap between layers)
PAUSE_HOLD_S = 2.0  # a transport whose video is all paused may probe to resume this long after the lowering: it
# sends nothing, so the bottleneck's queue has drained (RAISE_HOLD_S is for a link that still carries media)
PROBE_RESUME_DURATION_S = 0.5  # a probe to resume a paused transport is longer: its link is idle, so a token
# bucket's burst lets a short cluster through at any rate (a 100 kbit/s cap measured 158 kbit/s with 250 ms), and
# only what arrives after the burst, queued, tells the link's rate (the estimator's cluster tail)
PROBE_RESUME_BACKOFF_S = 1.0  # after a failed probe to resume such a transport the next waits this long ...
PROBE_RESUME_BACKOFF_MAX_S = 4.0  # ... times PROBE_BACKOFF_FACTOR after each further failure, up to this: the
# subscriber sees no video meanwhile and the probe's padding is all that goes to it (LiveKit's probe regulator
# starts at 3 s, libwebrtc's ProbeController probes again within seconds of a large drop)
PROBE_CLEAN_PASSES = 3  # a probe needs this many passes in a row without loss or overuse (a loss window is small)
RAISE_SETTLE_S = 2.5  # after a raise its own transient is not a reason to lower: the switch's key frame on the new
# layer sits in that layer's measured rate for a window (router/layer_rates.py, ~1.5 s, after a request round trip)
# and the switch's lost packets are retransmitted; for this long an estimate that has not fallen since the raise
# is not lowered for what is sent above it (congestion, or an estimate that fell, still lowers at once)
RTX_MAX_SHARE = 0.25  # retransmissions come off the video budget, at most this share of it (a burst of NACKs
# after a loss must not pause a track by itself; a link that keeps losing is lowered by its loss and delay)

NONE = -1  # not managed: the Engine follows control's preferred layer alone
PAUSED = -2  # paused by the allocator


# ------------------------------------------------------------------------------------------- estimates


@dataclass(frozen=True, slots=True)
class Estimate:
    """A subscriber transport's send-side bandwidth estimate."""

    bps: int
    state: str = "normal"  # "normal", "overusing" or "underusing" (the delay-based detector's verdict)
    loss: float = 0.0  # fraction of packets the subscriber reported lost
    probing: bool = False  # a probe cluster's result is still awaited (its feedback has not come)
    rtx_bytes: int = 0  # retransmitted bytes sent toward the transport so far (a counter; its rate is budgeted)


class EstimateSource(Protocol):
    """Where the allocator reads estimates from; ``None`` = unknown (the transport is left unmanaged)."""

    def estimate(self, transport_handle: int) -> Estimate | None: ...


class TransportEstimates(Protocol):
    """The Engine's ``transport_estimate(h)``: ``(bwe_bps, bwe_state, bwe_loss, bwe_probe_pending, rtx_bytes,
    twcc_feedback_packets, remb_packets)`` (the same values as those keys of its ``snapshot_transport``), or None
    when the transport has no estimator."""

    def transport_estimate(self, t: int) -> tuple[int, str, float, int, int, int, int] | None: ...


class EngineEstimates:
    """Production source: the Engine's ``transport_estimate(h)`` (0 bps = unknown). A transport without an
    estimator gives ``None``, and so does a transport whose peer has sent no TWCC feedback and no REMB yet: its
    estimate is only the Engine's starting guess, and a peer that never sends feedback (one that did not take
    transport-cc) must not be starved by it. (The whole ``snapshot_transport`` dict, about 40 entries, cost several
    microseconds per transport and pass; these seven values are one tuple.)"""

    def __init__(self, engine: TransportEstimates) -> None:
        self.engine = engine

    def estimate(self, transport_handle: int) -> Estimate | None:
        fields = self.engine.transport_estimate(transport_handle)
        if fields is None:
            return None
        bps, state, loss, probe_pending, rtx_bytes, feedback_packets, remb_packets = fields
        if not bps or not (feedback_packets or remb_packets):
            return None
        return Estimate(int(bps), str(state), float(loss), bool(probe_pending), int(rtx_bytes))


class NoEstimates:
    """The source when congestion control is off (``--no-congestion-control``): no transport has an estimate, so
    every consumer follows control's preferred layer and nothing probes."""

    def estimate(self, transport_handle: int) -> Estimate | None:
        return None


class FixedEstimates:
    """A settable source (tests, the cost benchmark): transport handle -> estimate."""

    def __init__(self, estimates: dict[int, Estimate] | None = None) -> None:
        self.estimates: dict[int, Estimate] = estimates if estimates is not None else {}

    def estimate(self, transport_handle: int) -> Estimate | None:
        return self.estimates.get(transport_handle)


# ---------------------------------------------------------------------------------------------- tracks


class Track:
    """One consumer as the allocator sees it: kind, priority, layer cap, its producer's rates, its allocation."""

    __slots__ = ("consumer", "handle", "video", "priority", "cap", "rates", "fit", "producer", "steps")

    def __init__(self, consumer: Consumer, handle: int, rates: LayerRates) -> None:
        self.consumer = consumer
        self.handle = handle
        self.video = consumer.kind == "video"
        self.priority = consumer.priority
        self.rates: LayerRates | Steps = rates  # a layer index below is a step of ``steps`` when it has one
        self.steps: Steps | None = None  # the (spatial, temporal) ladder of router/temporal.py, None: layers only
        self.cap = 0
        self.set_cap(consumer.preferred_layer)
        self.fit = NONE  # scratch of fit()
        self.producer: Producer | None = None

    @property
    def layer(self) -> int:
        """What the allocator gave it: NONE, PAUSED or a layer (kept on the Consumer record)."""
        consumer = self.consumer
        if consumer.bw_paused:
            return PAUSED
        if self.steps is None or consumer.allocated_layer < 0:
            return consumer.allocated_layer
        return self.steps.index(consumer.allocated_layer, consumer.allocated_temporal)

    def target(self, layer: int) -> tuple[int, int]:
        """(spatial layer, TID cap) of an allocation (NONE: (NONE, TID_ALL))."""
        if layer < 0:
            return NONE, TID_ALL
        return self.steps.step(layer) if self.steps is not None else (layer, TID_ALL)

    def set_steps(self, steps: Steps | None) -> None:
        """Moves the track onto ``steps`` (its producer's temporal ladder) or, with None, onto its layers."""
        self.steps = steps
        if steps is not None:
            self.rates = steps

    def set_cap(self, preferred: int) -> None:
        if self.steps is not None:
            self.cap = self.steps.cap_for(preferred)
            return
        n = self.rates.layers
        self.cap = preferred if 0 <= preferred < n else n - 1

    def lowest(self) -> int:
        """Lowest live layer <= cap, or -1."""
        live = self.rates.live
        for i in range(self.cap + 1):
            if live[i]:
                return i
        return -1

    def at_most(self, limit: int) -> int:
        """Highest live layer <= limit (and <= cap), or -1."""
        live = self.rates.live
        for i in range(min(limit, self.cap), -1, -1):
            if live[i]:
                return i
        return -1

    def next_above(self, layer: int) -> int:
        """Next live layer above ``layer`` (<= cap), or -1."""
        live = self.rates.live
        for i in range(layer + 1, self.cap + 1):
            if live[i]:
                return i
        return -1

    def current(self) -> int:
        """The layer it forwards now (as the Engine picks it: highest live <= its limit), or PAUSED."""
        if self.layer == PAUSED:
            return PAUSED
        layer = self.at_most(self.cap if self.layer == NONE else self.layer)
        return layer if layer >= 0 else self.lowest()

    def rate(self, layer: int) -> float:
        return self.rates.rates[layer] if layer >= 0 else 0.0


def priority_order(track: Track) -> tuple[int, int]:
    return -track.priority, track.handle


def fit(video: Sequence[Track], budget: float, floor: float | None = None) -> float:
    """Sets ``track.fit`` for ``video`` (in priority order) within ``budget`` bit/s; returns what is left.

    Every track gets its lowest live layer in turn (PAUSED when it does not fit in ``floor``, the budget before
    retransmissions: they never pause a track by themselves); then, round after round, each track goes up one live
    layer while the difference fits in what ``budget`` leaves, so that no track gets more before all got the least.
    """
    lowest = budget if floor is None else max(floor, budget)
    for t in video:
        low = t.lowest()
        need = t.rate(low)
        if low >= 0 and need <= lowest:
            t.fit = low
            lowest -= need
            budget -= need
        else:
            t.fit = PAUSED
    remaining = budget
    raised = True
    while raised:
        raised = False
        for t in video:
            if t.fit == PAUSED:
                continue
            nxt = t.next_above(t.fit)
            if nxt < 0:
                continue
            delta = t.rate(nxt) - t.rate(t.fit)
            if delta <= remaining:
                t.fit = nxt
                remaining -= delta
                raised = True
    return remaining


Prober = Callable[[float, float], bool]  # start a probe toward the transport at this many bit/s for this many
# seconds; False = cannot


def probe_duration(*, resume: bool) -> float:
    """How long a probe's padding is sent: longer to resume an all-paused transport (PROBE_RESUME_DURATION_S)."""
    return PROBE_RESUME_DURATION_S if resume else PROBE_DURATION_S


def probe_rate(goal_bps: float, *, resume: bool = False) -> float:
    """What a probe for an estimate of ``goal_bps`` sends at. A probe to resume a transport whose video is all
    paused sends at PROBE_OVERSHOOT of the goal only: the lowest layer's need plus PROBE_MIN_EXTRA_BPS would be more
    than a link on which that layer fits can carry (150 kbit/s: a 383 kbit/s probe), so every such probe would end in
    overuse and the track would stay paused on a link that holds it."""
    return goal_bps * PROBE_OVERSHOOT if resume else max(goal_bps * PROBE_OVERSHOOT, goal_bps + PROBE_MIN_EXTRA_BPS)


class TransportAllocation:
    """The allocator's state for one subscriber transport and the lowering, raising and probing rules."""

    __slots__ = ("transport_id", "tracks", "video", "lowered_at", "streak", "managed", "stamp", "probe_started",
                 "probe_goal", "probe_wait", "next_probe_at", "probed", "boost", "raised_at", "clean",
                 "rtx_bytes", "rtx_at", "rtx_bps", "probe_resume", "resume_wait", "next_resume_at",
                 "resumed_at", "settle_until", "settle_bps")

    def __init__(self, transport_id: str) -> None:
        self.transport_id = transport_id
        self.tracks: dict[str, Track] = {}  # consumer id -> track
        self.video: list[Track] = []  # reused by every pass
        self.lowered_at = -1e9
        self.streak = 0  # passes in a row in which a raise fitted
        self.managed = False  # some track has an allocation (to undo when the estimate goes away)
        self.stamp = 0
        self.probe_started = -1.0  # a probe in flight since then, -1 = none
        self.probe_goal = 0.0  # the estimate it should reach
        self.probe_wait = 0.0  # the backoff after the last failure, 0 = none
        self.next_probe_at = -1e9
        self.probed = False  # some probe was started (the first allocation's probe is done)
        self.boost = False  # the last probe succeeded: the next raise needs one pass, not RAISE_TICKS
        self.raised_at = -1.0  # when the last successful probe was, -1 = its raise held PROBE_STABLE_S (or none)
        self.clean = 0  # passes in a row with loss below PROBE_MAX_LOSS and no overuse
        self.rtx_bytes = 0  # the estimate's retransmission counter at the last pass ...
        self.rtx_at = -1.0  # ... and when (-1: none yet)
        self.rtx_bps = 0.0  # the retransmission rate between the last two passes
        self.probe_resume = False  # the probe in flight is to resume an all-paused transport
        self.resume_wait = 0.0  # the backoff after the last failed probe to resume, 0 = none
        self.next_resume_at = -1e9
        self.resumed_at = -1.0  # when the allocator resumed an all-paused transport, -1 = it held PROBE_STABLE_S
        self.settle_until = -1.0  # the last raise's transient lasts until then (RAISE_SETTLE_S) ...
        self.settle_bps = 0  # ... unless the estimate falls below this, the one the raise was made at

    def _rtx_rate(self, now: float, counter: int) -> float:
        if self.rtx_at >= 0 and counter >= self.rtx_bytes and now > self.rtx_at:
            self.rtx_bps = (counter - self.rtx_bytes) * 8 / (now - self.rtx_at)
        else:
            self.rtx_bps = 0.0
        self.rtx_bytes, self.rtx_at = counter, now
        return self.rtx_bps

    def _start_probe(self, now: float, goal: float, probe: Prober | None, *, resume: bool = False) -> bool:
        if probe is None or not probe(probe_rate(goal, resume=resume), probe_duration(resume=resume)):
            # No stream to pad on (nothing sent yet) or no transport-cc: ask again later.
            if resume:
                self.next_resume_at = now + PROBE_BACKOFF_S
            else:
                self.next_probe_at = now + PROBE_BACKOFF_S
            return False
        self.probed = True
        self.probe_started, self.probe_goal, self.probe_resume = now, goal, resume
        return True

    def _back_off(self, now: float) -> None:
        self.probe_wait = min(self.probe_wait * PROBE_BACKOFF_FACTOR, PROBE_BACKOFF_MAX_S) \
            if self.probe_wait else PROBE_BACKOFF_S
        self.next_probe_at = now + self.probe_wait
        self.raised_at = -1.0

    def _resume_failed(self, now: float) -> None:
        self.resume_wait = min(self.resume_wait * PROBE_BACKOFF_FACTOR, PROBE_RESUME_BACKOFF_MAX_S) \
            if self.resume_wait else PROBE_RESUME_BACKOFF_S
        self.next_resume_at = now + self.resume_wait

    def _probe_done(self, now: float, success: bool) -> None:
        self.probe_started = -1.0
        if self.probe_resume:  # its own backoff: short, and the raises' is left as it was
            if success:
                self.next_resume_at = now
            else:
                self._resume_failed(now)
            self.boost = success  # a success resumes at the next pass
            return
        if success:  # the next layer may be probed for at once; the backoff goes once the raise held
            self.next_probe_at = now
            self.raised_at = now
            self.boost = True
        else:
            self._back_off(now)
            self.boost = False

    def decide(self, now: float, estimate: Estimate, audio_bps: float, video: Sequence[Track],
               probe: Prober | None = None) -> list[tuple[Track, int]]:
        """The changes of one pass: ``video`` are the allocatable video tracks in priority order; ``probe``
        starts a bandwidth probe toward the transport (None: no probing)."""
        floor = budget = estimate.bps * VIDEO_SHARE - audio_bps
        # Retransmissions use the same link: their rate comes off the video budget (but a track's lowest layer is
        # paused only when it does not fit the budget without them).
        rtx_bps = self._rtx_rate(now, estimate.rtx_bytes)
        budget -= min(rtx_bps, RTX_MAX_SHARE * max(budget, 0.0))
        congested = estimate.state == "overusing" or estimate.loss > RAISE_MAX_LOSS
        # Underuse (the queue draining, e.g. after a cap was lifted) is not congestion: it must not hold probes back
        # (a screen share stayed on its 3 fps layer for 12 s after a lift while the verdict wavered between normal
        # and underusing and each underusing pass restarted this count).
        self.clean = self.clean + 1 if estimate.state != "overusing" and estimate.loss < PROBE_MAX_LOSS else 0
        if self.raised_at >= 0 and now - self.raised_at >= PROBE_STABLE_S:
            self.probe_wait, self.raised_at = 0.0, -1.0  # the probed raise held: a success
        if self.resumed_at >= 0 and now - self.resumed_at >= PROBE_STABLE_S:
            self.resume_wait, self.resumed_at = 0.0, -1.0  # the resume held: its probe succeeded
        if self.probe_started >= 0:
            age = now - self.probe_started
            # A probe to resume is judged by the delay-based verdict its feedback renews: the loss is that of the
            # media before the pause (padding does not count for it), and would end every such probe as failed.
            hot = estimate.state == "overusing" if self.probe_resume else congested
            duration = probe_duration(resume=self.probe_resume)
            if age < duration or (estimate.probing and not hot and age < duration + PROBE_SETTLE_S):
                return []  # its result is not in yet: change nothing
            # Done: it succeeded if the estimate reached the goal; a congested link lowers below as usual.
            self._probe_done(now, not hot and estimate.bps >= self.probe_goal)
        used = 0.0
        idle = bool(video)  # every video track is paused by us: nothing is sent, the loss and state are stale
        for t in video:
            cur = t.current()
            used += t.rate(cur)
            idle = idle and cur == PAUSED
        fit(video, budget, floor)
        # Lower only for a reason: the estimator's congestion verdict, or an estimate below what is being sent
        # (media, audio and retransmissions). A link whose estimate carries all that without overuse or loss, only
        # not with the headroom of VIDEO_SHARE, keeps its layers (that headroom is asked of a raise): the estimate
        # of a stream no probe has confirmed with the margin yet (a probe's padding cannot lift it far above a
        # high single-layer rate) must not pause the stream the link carries.
        # Right after a raise what is sent includes the raise's own transient (the new layer's key frame, the
        # switch's retransmissions): above an estimate that has not fallen since, it is no reason to lower.
        above = used + audio_bps + rtx_bps > estimate.bps \
            and (now >= self.settle_until or estimate.bps < self.settle_bps)
        if used > budget and (congested or above):
            # congested: every track drops to what fits now, none goes up
            if not self.probed and not congested and self.lowered_at < 0 and estimate.loss < PROBE_MAX_LOSS \
                    and self._start_probe(now, used * RAISE_MARGIN / VIDEO_SHARE + audio_bps, probe):
                return []  # the first allocation: the start estimate is a guess, probe what is being sent
            changes = []
            for t in video:
                cur = t.current()
                if t.fit == PAUSED and cur != PAUSED or cur != PAUSED and 0 <= t.fit < cur:
                    changes.append((t, t.fit))
            if changes:
                if self.raised_at >= 0:
                    self._back_off(now)  # soon after a probed raise: that probe did not really succeed
                if self.resumed_at >= 0 and all(t.fit == PAUSED for t in video):
                    self._resume_failed(now)  # paused again soon after a resume: its probe did not really succeed
                    self.resumed_at = -1.0
                self.lowered_at = now
                self.streak = 0
                self.boost = False
            return changes
        if now - self.lowered_at < (PAUSE_HOLD_S if idle else RAISE_HOLD_S) \
                or (estimate.state == "overusing" or estimate.loss > RAISE_MAX_LOSS) and not idle:
            self.streak = 0
            return []
        if idle and estimate.state == "overusing":
            # Nothing was sent since the pause: the verdict is stale and only feedback on a probe renews it.
            self.streak = 0
            if now >= self.next_resume_at:
                need = min(t.rate(t.lowest()) for t in video) * RAISE_MARGIN
                self._start_probe(now, need / VIDEO_SHARE + audio_bps, probe, resume=True)
            return []
        best: Track | None = None
        best_layer = best_rank = 0
        wanted = 0.0  # the least total a raise of some track needs (0 = no raise possible)
        for t in video:  # the lowest track (paused first) that can go one layer up with the margin
            cur = t.current()
            nxt = t.lowest() if cur == PAUSED else t.next_above(cur)
            if nxt < 0:
                continue
            need = (used - t.rate(cur) + t.rate(nxt)) * RAISE_MARGIN
            if need > budget:
                wanted = need if not wanted else min(wanted, need)
                continue
            rank = -1 if cur == PAUSED else cur
            if best is None or rank < best_rank:
                best, best_layer, best_rank = t, nxt, rank
        if best is None:
            self.streak = 0
            if wanted and (now >= self.next_resume_at if idle
                           else self.clean >= PROBE_CLEAN_PASSES and now >= self.next_probe_at):
                self._start_probe(now, wanted / VIDEO_SHARE + audio_bps, probe, resume=idle)
            return []
        self.streak += 1
        if self.streak < (1 if self.boost else RAISE_TICKS):
            return []
        self.streak = 0
        self.boost = False
        if idle:
            self.resumed_at = now
        self.settle_until, self.settle_bps = now + RAISE_SETTLE_S, estimate.bps
        return [(best, best_layer)]


# ------------------------------------------------------------------------------------------- allocator


class AllocatorEngine(Protocol):
    """What the allocator asks of ``fastpath.Engine``."""

    def snapshot_producer(self, p: int) -> dict[str, Any]: ...
    def set_consumer_layer(self, c: int, spatial: int) -> None: ...
    def pause_consumer(self, c: int) -> None: ...
    def resume_consumer(self, c: int) -> None: ...
    # and, optionally, set_consumer_temporal(c, tid) (fastpath.Engine.set_consumer_temporal): without it no TID
    # cap is applied; probe(t, bps, duration_ms) -> bool (fastpath.Engine.probe): without it nothing probes;
    # lower_consumer_layer(c, spatial) (fastpath.Engine.lower_consumer_layer): without it a lowering is a
    # set_consumer_layer like any other change


StreamStateCallback = Callable[["Consumer", bool], None]  # (consumer, paused)


class _Measured:
    __slots__ = ("producer", "handle", "rates", "temporal", "steps")

    def __init__(self, producer: Producer, handle: int, rates: LayerRates) -> None:
        self.producer = producer
        self.handle = handle
        self.rates = rates
        # Only for a producer whose consumers are allocated temporal steps (router/temporal.py):
        self.temporal: TemporalRates | None = None
        self.steps: Steps | None = None


class StreamAllocator:
    """Runs the allocation of every subscriber transport of a worker; driven by the worker's tick."""

    def __init__(
        self,
        engine: AllocatorEngine,
        estimates: EstimateSource,
        transports: Registry[WebRtcTransport],
        producers: Registry[Producer],
        consumers: Registry[Consumer],
        on_stream_state: StreamStateCallback,
    ) -> None:
        self.engine = engine
        self.estimates = estimates
        self.transports = transports
        self.producers = producers
        self.consumers = consumers
        self.on_stream_state = on_stream_state
        self._states: dict[str, TransportAllocation] = {}
        self._measured: dict[str, _Measured] = {}
        self._next_run = 0.0
        self._cycle = 0
        self._probe: Callable[[int, int, int], bool] | None = getattr(engine, "probe", None)

    def preference_changed(self, consumer: Consumer, old_preferred: int) -> None:
        """Control moved the consumer's preferred layer. An allocation that only followed the old preference
        (it was at or above it) is dropped, so that a raise of the preference takes effect at once as it did
        before the allocator; the next pass lowers it again within ALLOCATE_INTERVAL_S if it does not fit. A
        limit below the old preference was the bandwidth's and stays."""
        if consumer.allocated_layer >= 0 and 0 <= old_preferred <= consumer.allocated_layer \
                and consumer.allocated_temporal == TID_ALL:  # a TID cap is always the bandwidth's: it stays
            consumer.allocated_layer = NONE

    def wake(self) -> None:
        """An estimate fell (the worker saw EV_BWE_CHANGED lower): run the next pass at the next tick instead of up
        to ALLOCATE_INTERVAL_S later, so that a lowering (and the key frame request it makes) is not held back by
        the pass interval; the pass after it follows ALLOCATE_INTERVAL_S later as usual."""
        self._next_run = 0.0

    @property
    def next_run(self) -> float:
        """When the next pass is due (monotonic seconds; 0 after wake()): the worker's tick sleeps no longer."""
        return self._next_run

    def layer_bytes(self, producer_handle: int) -> Sequence[int]:
        """The Engine's cumulative byte counter of each of a producer's layers."""
        return [layer["bytes"] for layer in self.engine.snapshot_producer(producer_handle)["layers"]]

    def temporal_counters(self, producer_handle: int) -> tuple[list[Sequence[int]], list[Sequence[int]]]:
        """The Engine's cumulative byte and picture counters per VP8 TID of each of a producer's layers (none
        where the Engine has no such counters)."""
        layers = self.engine.snapshot_producer(producer_handle)["layers"]
        return ([layer.get("temporal_bytes", ()) for layer in layers],
                [layer.get("temporal_pictures", ()) for layer in layers])

    def tick(self, now: float) -> None:
        """Called on every worker tick (``now``: monotonic seconds); a pass runs every ALLOCATE_INTERVAL_S."""
        if now < self._next_run:
            return
        self._next_run = now + ALLOCATE_INTERVAL_S
        self._cycle += 1
        for transport_id in self.transports.ids():
            transport = self.transports.find(transport_id)
            if transport is not None and transport.consumer_ids:
                try:
                    self._run(transport, now)
                except Exception:  # never let one transport stop the worker's tick
                    log.exception("allocation of transport %s failed", transport_id)
        cycle = self._cycle
        if len(self._states) > sum(1 for s in self._states.values() if s.stamp == cycle):
            self._states = {k: s for k, s in self._states.items() if s.stamp == cycle}
        if len(self._measured) > sum(1 for m in self._measured.values() if m.rates.stamp == cycle):
            self._measured = {k: m for k, m in self._measured.items() if m.rates.stamp == cycle}

    def _rates(self, producer: Producer, now: float) -> LayerRates | None:
        m = self._measured.get(producer.id)
        if m is None or m.producer is not producer:
            handle = self.producers.handle(producer.id)
            counters = self.layer_bytes(handle)
            m = self._measured[producer.id] = _Measured(producer, handle, LayerRates(len(counters)))
            m.rates.update(now, counters)
            if allocates_temporal(producer.kind, producer.source, len(counters)):
                m.temporal, m.steps = TemporalRates(len(counters)), Steps()
                self._sample_temporal(m)
        elif m.rates.stamp != self._cycle and m.rates.due(now):
            m.rates.update(now, self.layer_bytes(m.handle))
            self._sample_temporal(m)
        m.rates.stamp = self._cycle
        return m.rates if m.rates.ready and m.rates.layers else None

    def _sample_temporal(self, m: _Measured) -> None:
        if m.temporal is not None and m.steps is not None:
            m.temporal.update(*self.temporal_counters(m.handle))
            m.steps.stamp = -1  # rebuilt from the new rates when next used

    def _steps(self, producer: Producer) -> Steps | None:
        """The producer's temporal ladder, None when its consumers move on layers only (router/temporal.py)."""
        m = self._measured.get(producer.id)
        if m is None or m.temporal is None or m.steps is None:
            return None
        steps = m.steps
        if steps.stamp < 0:
            steps.build(m.rates, m.temporal)
            steps.stamp = self._cycle
        return steps if steps.temporal_steps else None

    def _sync(self, state: TransportAllocation, consumer_ids: set[str], now: float) -> Iterable[Track]:
        """The state's tracks made to match the transport's consumers (new ones unmanaged)."""
        tracks = state.tracks
        known, seen = len(tracks), 0
        for cid in consumer_ids:
            t = tracks.get(cid)
            consumer = self.consumers.find(cid)
            if t is not None:
                seen += 1
                if t.consumer is consumer:
                    continue
                del tracks[cid]  # closed and made again under the same id
                known -= 1
                seen -= 1
            if consumer is None:
                continue
            producer = self.producers.find(consumer.producer_id)
            rates = self._rates(producer, now) if producer is not None else None
            if rates is not None:  # else: not before its producer's layers are measured
                tracks[cid] = Track(consumer, self.consumers.handle(cid), rates)
        if seen < known:  # some tracked consumer left the transport
            state.tracks = tracks = {cid: t for cid, t in tracks.items() if cid in consumer_ids}
        return tracks.values()

    def _run(self, transport: WebRtcTransport, now: float) -> None:
        state = self._states.get(transport.id)
        if state is None:
            state = self._states[transport.id] = TransportAllocation(transport.id)
        state.stamp = self._cycle
        tracks = self._sync(state, transport.consumer_ids, now)
        estimate = self.estimates.estimate(transport.handle)
        if estimate is None:
            if state.managed:  # back to today's behaviour: the preferred layer, nothing paused by us
                state.managed = False
                for t in tracks:
                    if t.layer != NONE:
                        self._apply(t, NONE)
            return
        audio_bps = 0.0
        video = state.video
        video.clear()
        for t in tracks:
            consumer = t.consumer
            producer = self.producers.find(consumer.producer_id)
            if producer is None:
                continue
            rates = self._rates(producer, now)
            if rates is None:
                continue
            t.rates, t.producer = rates, producer
            if not t.video:
                for i, live in enumerate(rates.live):
                    if live:
                        audio_bps += rates.rates[i]
                continue
            if consumer.paused or producer.paused:
                continue  # control's pause: it uses nothing and keeps its allocation
            t.set_steps(self._steps(producer))
            t.priority = consumer.priority
            t.set_cap(consumer.preferred_layer)
            if t.lowest() >= 0:
                video.append(t)
        video.sort(key=priority_order)
        probe = self._probe
        prober: Prober | None = None
        if probe is not None:
            handle = transport.handle

            def prober(bps: float, duration_s: float) -> bool:
                log.debug("transport %s: probe at %d bit/s for %.2f s", transport.id, bps, duration_s)
                return bool(probe(handle, int(bps), int(duration_s * 1000)))

        for t, layer in state.decide(now, estimate, audio_bps, video, prober):
            state.managed = True
            self._apply(t, layer)

    def _apply(self, t: Track, layer: int) -> None:
        consumer = t.consumer
        log.debug("consumer %s: layer %d -> %d", consumer.id, t.layer, layer)
        if layer == PAUSED:
            if not consumer.bw_paused:
                consumer.bw_paused = True
                self.engine.pause_consumer(t.handle)
                self.on_stream_state(consumer, True)
            return
        before = consumer.layer_cap
        lowering = not consumer.bw_paused and 0 <= layer < t.current()
        consumer.allocated_layer, temporal = t.target(layer)
        if temporal != consumer.allocated_temporal:  # a temporal step (router/temporal.py)
            consumer.allocated_temporal = temporal
            set_temporal: Callable[[int, int], None] | None = getattr(self.engine, "set_consumer_temporal", None)
            if set_temporal is not None:  # lower: at the next picture; higher: at the next layer-sync picture
                set_temporal(t.handle, temporal)
        if consumer.layer_cap != before:
            lower: Callable[[int, int], None] | None = getattr(self.engine, "lower_consumer_layer", None)
            if lowering and lower is not None:
                lower(t.handle, consumer.layer_cap)  # congestion: the layer that does not fit stops now
            else:
                self.engine.set_consumer_layer(t.handle, consumer.layer_cap)
        if consumer.bw_paused:
            consumer.bw_paused = False
            producer = t.producer
            if not consumer.paused and (producer is None or not producer.paused):
                self.engine.resume_consumer(t.handle)
            self.on_stream_state(consumer, False)
