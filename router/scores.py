"""Connection-quality scores of a worker's producers and consumers, sent to control as ``transport.scores``.

Every :data:`SCORE_INTERVAL_S` each producer (the uplink of one published track) and each consumer (the downlink of
one subscription) gets a score from 0 to 100 computed from what the interval added to the Engine's counters, on
the scale of LiveKit's connection-quality scorer (pkg/sfu/connectionquality/scorer.go): a simplified E-model,
``100 - delay effect - loss % x loss weight`` (video weight 10: 2 % loss falls to GOOD, 6 % to POOR; Opus 8), for
video also ``100 - 35 x the layers missing`` (the layer a subscriber wants and the producer sends, against the one it
gets: a missing spatial layer counts 1, a missing temporal layer 1 / the temporal layers the forwarded spatial layer
carries, as LiveKit's forwarder counts its distance to the desired layer), smoothed (a fall counts 0.8 of the new
value, a rise 0.4) and kept at or above 30 while packets flow. An interval without a packet from a publisher that
sends is scored directly: 40 (POOR) while its sender reports still arrive, else 20 (LOST); a subscriber that is sent
packets but has sent no receiver report for :data:`NO_REPORT_LOST_S` is LOST. Muted (paused) producers and
consumers, and producers nobody consumes (dynacast may have stopped them), read 100, as LiveKit's muted tracks do;
a consumer the stream allocator paused (nothing fits the subscriber's estimate) reads POOR.

The uplink reads a producer's layers: ``expected`` (highest minus first extended seq), ``received`` (media packets),
``rtx_packets`` (repairs), ``jitter`` (RFC 3550 A.8, RTP units), ``sr_count`` and ``temporal_pictures`` (pictures per
VP8 TID: how many temporal layers each spatial layer carries); loss is what neither the media nor its RTX stream
delivered. The downlink reads a consumer's receiver-report fields (cumulative loss and extended
highest seq, whose deltas are the interval's loss and expected packets; jitter; RTT from LSR/DLSR; the layers it is
forwarded: ``current_layer`` and the VP8 TID cap in force, ``temporal_layer``) and discounts
what the publisher's uplink lost and its jitter, which the subscriber sees but its own link did not cause.

:class:`ScoreKeeper` spreads the work: each transport is scored on its own phase of the interval (a heap of due
times, looked at on every worker tick), its producers and consumers together, and one ``transport.scores`` goes out
only when a rounded score or the set of entities changed. The notifications per second are at most the worker's
transports / 2 s, however many consumers each carries (docs/PROTOCOL.md, Connection quality).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from router.media_router import Consumer, Producer
from router.messages import TransportScores
from router.registry import Registry
from router.temporal import carried_layers

SCORE_INTERVAL_S = 2.0
MAX_SCORE = 100.0
MIN_SCORE = 30.0  # lower bound while packets flow: a bad minute must not take minutes to climb back from
POOR_SCORE = 40.0  # a publisher that sends sender reports but no media
LOST_SCORE = 20.0  # nothing arrives at all
INCREASE_FACTOR = 0.4  # rise slowly
DECREASE_FACTOR = 0.8  # fall fast
LAYER_DISTANCE_WEIGHT = 35.0  # each spatial layer missed drops a quality level ...
# ... and each temporal layer missed a share of it: 1 / the temporal layers the forwarded spatial layer carries
# (L1T3: 35 / 3 per layer, so TID 0 only, a quarter of the frame rate, costs 23.3: GOOD; LiveKit's
# getDistanceToDesired in pkg/sfu/forwarder.go). The Engine's TID cap reads VP8_TID_ALL (3) when nothing is filtered.
ENGINE_TID_ALL = 3
LOSS_WEIGHT = {"audio": 8.0, "video": 10.0}  # LiveKit: Opus without FEC 8, video 10
NO_REPORT_LOST_S = 10.0  # sending to a subscriber whose receiver reports stopped for this long: LOST
SEQ_MOD = 1 << 32


@dataclass(slots=True)
class Window:
    """What one interval saw of one stream: packets expected, lost, the worst jitter, the RTT, the layer gap."""

    packets: int
    lost: int
    jitter_ms: float = 0.0
    rtt_ms: float = 0.0
    layer_distance: float = 0.0


def packet_score(window: Window, loss_weight: float) -> float:
    """The E-model part: delay (half the RTT plus twice the jitter) and weighted loss."""
    delay = window.rtt_ms / 2.0 + window.jitter_ms * 2.0
    delay_effect = delay / 40.0 if delay <= 160.0 else (delay - 120.0) / 10.0
    loss_pct = window.lost * 100.0 / window.packets if window.packets > 0 else 0.0
    return max(0.0, MAX_SCORE - delay_effect - loss_pct * loss_weight)


def window_score(window: Window, loss_weight: float) -> float:
    """The interval's raw score: the worse of the packet score and the layer score."""
    layer = min(MAX_SCORE, max(0.0, MAX_SCORE - window.layer_distance * LAYER_DISTANCE_WEIGHT))
    return min(packet_score(window, loss_weight), layer)


@dataclass(slots=True)
class Scorer:
    """The smoothed score of one stream."""

    score: float = MAX_SCORE

    def update(self, window: Window, loss_weight: float) -> float:
        raw = window_score(window, loss_weight)
        factor = DECREASE_FACTOR if raw < self.score else INCREASE_FACTOR
        self.score = max(MIN_SCORE, factor * raw + (1.0 - factor) * self.score)
        return self.score

    def set(self, score: float) -> float:
        self.score = score
        return score

    def mute(self) -> float:
        """Muted: excellent at once, except that a LOST stream stays LOST until packets say otherwise."""
        if self.score > LOST_SCORE:
            self.score = MAX_SCORE
        return self.score


def _delta(now: int, before: int) -> int:
    """A counter's growth; a counter that went back (its stream restarted) counts from zero."""
    return now - before if now >= before else now


@dataclass(slots=True)
class ProducerMeter:
    """Interval deltas and the score of one producer (the uplink of one track)."""

    kind: str
    scorer: Scorer = field(default_factory=Scorer)
    started: bool = False
    loss_fraction: float = 0.0  # last interval, for the consumers' discount
    jitter_ms: float = 0.0
    top_layer: int = -1  # highest layer that delivered packets in the last interval
    clock_rate: int = 0
    # per spatial layer: the temporal layers it carries (highest VP8 TID with pictures in the last interval that had
    # any, + 1; 0: no TIDs, or nothing seen yet)
    temporal_layers: list[int] = field(default_factory=list)
    _prev: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    _prev_pictures: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def update(self, snapshot: Mapping[str, Any], *, muted: bool, rtt_ms: float = 0.0) -> float:
        clock = self.clock_rate = int(snapshot.get("clock_rate") or (90000 if self.kind == "video" else 48000))
        expected = received = repaired = reports = 0
        jitter_ms = 0.0
        top = -1
        for i, layer in enumerate(snapshot.get("layers", ())):
            now = (int(layer.get("expected", 0)), int(layer.get("received", 0)),
                   int(layer.get("rtx_packets", 0)), int(layer.get("sr_count", 0)))
            before = self._prev.get(i, (0, 0, 0, 0))
            self._prev[i] = now
            d_expected, d_received, d_repaired, d_reports = (_delta(a, b) for a, b in zip(now, before, strict=True))
            expected += d_expected
            received += d_received
            repaired += d_repaired
            reports += d_reports
            if d_received > 0:
                top = i
                jitter_ms = max(jitter_ms, int(layer.get("jitter", 0)) * 1000.0 / clock)
            self._count_temporal(i, layer.get("temporal_pictures", ()))
        lost = max(0, expected - received - repaired)
        self.loss_fraction = lost / expected if expected > 0 else 0.0
        self.jitter_ms = jitter_ms
        self.top_layer = top
        if received or repaired:
            self.started = True
        if muted:
            return self.scorer.mute()
        if not self.started:
            return self.scorer.score  # nothing has arrived yet: nothing to judge
        if received == 0 and repaired == 0:
            return self.scorer.set(POOR_SCORE if reports else LOST_SCORE)
        window = Window(packets=max(expected, received), lost=lost, jitter_ms=jitter_ms, rtt_ms=max(0.0, rtt_ms))
        return self.scorer.update(window, LOSS_WEIGHT.get(self.kind, LOSS_WEIGHT["video"]))

    def _count_temporal(self, i: int, pictures: Any) -> None:
        """Layer ``i``'s temporal layers from the interval's growth of its per-TID picture counters; a layer that
        sent no picture keeps what it carried before."""
        now = tuple(int(x) for x in pictures)
        before = self._prev_pictures.get(i, ())
        self._prev_pictures[i] = now
        grown = [_delta(n, before[t] if t < len(before) else 0) for t, n in enumerate(now)]
        while len(self.temporal_layers) <= i:
            self.temporal_layers.append(0)
        if any(grown):
            self.temporal_layers[i] = carried_layers(grown)

    def carried_temporal(self, layer: int) -> int:
        """The temporal layers spatial layer ``layer`` carries (0: unknown, or no TIDs)."""
        return self.temporal_layers[layer] if 0 <= layer < len(self.temporal_layers) else 0


@dataclass(slots=True)
class ConsumerMeter:
    """Interval deltas of one consumer's receiver reports and its score (the downlink of one subscription)."""

    kind: str
    scorer: Scorer = field(default_factory=Scorer)
    _packets: int = 0
    _rr_count: int = 0
    _rr_lost: int = 0
    _rr_highest: int = 0
    _reported_at: float | None = None  # when the last new receiver report was seen
    _streaming_since: float | None = None

    def update(self, snapshot: Mapping[str, Any], now: float, *, muted: bool, upstream: ProducerMeter | None = None,
               preferred: int = -1, congested: bool = False) -> float:
        """``congested``: the stream allocator paused this consumer because not even its lowest layer fits the
        subscriber's bandwidth estimate; that is a POOR downlink, not a mute (LiveKit scores the full layer gap)."""
        packets = int(snapshot.get("packets", 0))
        sent = _delta(packets, self._packets)
        self._packets = packets
        rr_count = int(snapshot.get("rr_count", 0))
        new_report = rr_count != self._rr_count
        first_report = self._rr_count == 0
        lost_total = int(snapshot.get("rr_cumulative_lost", 0))
        highest = int(snapshot.get("rr_highest_seq", 0))
        d_lost = lost_total - self._rr_lost
        d_expected = (highest - self._rr_highest) % SEQ_MOD
        self._rr_count, self._rr_lost, self._rr_highest = rr_count, lost_total, highest
        if new_report:
            self._reported_at = now
        if congested:
            self._streaming_since = None
            return self.scorer.set(min(self.scorer.score, POOR_SCORE))
        if muted or snapshot.get("paused"):
            self._streaming_since = None
            return self.scorer.mute()
        if sent <= 0:
            self._streaming_since = None  # nothing to judge the link by (the publisher is silent)
            return self.scorer.score
        if self._streaming_since is None:
            self._streaming_since = now
        if not new_report:
            since = max(self._streaming_since, self._reported_at or self._streaming_since)
            if now - since >= NO_REPORT_LOST_S:
                return self.scorer.set(LOST_SCORE)
            return self.scorer.score
        if first_report or d_expected == 0 or d_expected > SEQ_MOD // 2:
            return self.scorer.score  # the first report only sets the baseline
        upstream_lost = round(upstream.loss_fraction * d_expected) if upstream is not None else 0
        lost = max(0, d_lost - upstream_lost)
        clock_rate = upstream.clock_rate if upstream is not None and upstream.clock_rate else (
            90000 if self.kind == "video" else 48000)
        jitter_ms = int(snapshot.get("rr_jitter", 0)) * 1000.0 / clock_rate
        if upstream is not None:
            jitter_ms = max(0.0, jitter_ms - upstream.jitter_ms)
        window = Window(packets=d_expected, lost=min(lost, d_expected), jitter_ms=jitter_ms,
                        rtt_ms=max(0, int(snapshot.get("rtt_ms", 0))),
                        layer_distance=self._layer_distance(snapshot, upstream, preferred))
        return self.scorer.update(window, LOSS_WEIGHT.get(self.kind, LOSS_WEIGHT["video"]))

    def _layer_distance(self, snapshot: Mapping[str, Any], upstream: ProducerMeter | None, preferred: int) -> float:
        """Spatial layers between the one wanted (asked for, and sent by the publisher) and the one forwarded,
        plus the temporal layers the forwarded one carries but its TID cap filters out, each 1 / those it carries
        (LiveKit's distance to the desired layer, pkg/sfu/forwarder.go getDistanceToDesired)."""
        if self.kind != "video":
            return 0.0
        current = int(snapshot.get("current_layer", -1))
        if current < 0:
            return 0.0
        wanted = int(snapshot.get("target_layer", -1))
        if upstream is not None and upstream.top_layer >= 0:
            wanted = upstream.top_layer if preferred < 0 else min(preferred, upstream.top_layer)
        distance = float(max(0, wanted - current))
        carried = upstream.carried_temporal(current) if upstream is not None else 0
        cap = int(snapshot.get("temporal_layer", ENGINE_TID_ALL))
        if carried > 1 and 0 <= cap < carried - 1:
            distance += (carried - 1 - cap) / carried
        return distance


class ScoreEngine(Protocol):
    """The Engine counters the keeper reads (fastpath.Engine)."""

    def snapshot_transport(self, t: int) -> dict[str, Any]: ...
    def snapshot_producer(self, p: int) -> dict[str, Any]: ...
    def snapshot_consumer(self, c: int) -> dict[str, Any]: ...


class ScoredTransport(Protocol):
    """What the keeper needs of a WebRtcTransport."""

    handle: int
    producer_ids: set[str]
    consumer_ids: set[str]


class ScoreKeeper:
    """Scores every producer and consumer once per interval, each transport on its own phase, and emits a
    transport's scores when they changed. ``tick(now)`` runs from the worker's tick."""

    def __init__(
        self,
        engine: ScoreEngine,
        transports: Registry[Any],
        producers: Registry[Producer],
        consumers: Registry[Consumer],
        emit: Callable[[str, TransportScores], None],
        *,
        interval_s: float = SCORE_INTERVAL_S,
        observe_consumer: Callable[[str, Mapping[str, Any], float], None] | None = None,
    ) -> None:
        self.engine = engine
        self.transports = transports
        self.producers = producers
        self.consumers = consumers
        self.emit = emit
        self.interval_s = interval_s
        # Also shown each consumer snapshot the keeper takes (router/playout.py reads the same window).
        self.observe_consumer = observe_consumer
        self.producer_meters: dict[str, ProducerMeter] = {}
        self.consumer_meters: dict[str, ConsumerMeter] = {}
        self._due: list[tuple[float, str]] = []
        self._scheduled: set[str] = set()
        self._sent: dict[str, TransportScores] = {}
        self._next_sweep = 0.0

    def tick(self, now: float) -> None:
        if now >= self._next_sweep:
            self._next_sweep = now + self.interval_s
            self._schedule(self.transports.ids(), now)
            self._prune()
        while self._due and self._due[0][0] <= now:
            _, transport_id = heapq.heappop(self._due)
            transport = self.transports.find(transport_id)
            if transport is None:
                self._forget_transport(transport_id)
                continue
            heapq.heappush(self._due, (now + self.interval_s, transport_id))
            self.score_transport(transport_id, transport, now)

    def _schedule(self, transport_ids: Iterable[str], now: float) -> None:
        """New transports get a phase spread over the interval, so that no tick scores them all."""
        new = [t for t in transport_ids if t not in self._scheduled]
        for i, transport_id in enumerate(new):
            self._scheduled.add(transport_id)
            heapq.heappush(self._due, (now + self.interval_s * (i + 1) / len(new), transport_id))

    def _forget_transport(self, transport_id: str) -> None:
        self._scheduled.discard(transport_id)
        self._sent.pop(transport_id, None)

    def score_transport(self, transport_id: str, transport: ScoredTransport, now: float) -> TransportScores:
        """Scores a transport's producers and consumers; emits them when a rounded score or the set changed."""
        producer_scores: list[tuple[str, int]] = []
        rtt_ms = 0.0
        if transport.producer_ids:
            rtt_ms = float(max(0, int(self.engine.snapshot_transport(transport.handle).get("rtt_ms", 0))))
        for producer_id in sorted(transport.producer_ids):
            producer = self.producers.find(producer_id)
            if producer is None:
                continue
            meter = self.producer_meters.get(producer_id)
            if meter is None:
                meter = self.producer_meters[producer_id] = ProducerMeter(producer.kind)
            snapshot = self.engine.snapshot_producer(self.producers.handle(producer_id))
            unwatched = not any(
                (c := self.consumers.find(cid)) is not None and not c.paused for cid in producer.consumers
            )
            score = meter.update(snapshot, muted=producer.paused or (producer.kind == "video" and unwatched),
                                 rtt_ms=rtt_ms)
            producer_scores.append((producer_id, round(score)))
        consumer_scores: list[tuple[str, int]] = []
        for consumer_id in sorted(transport.consumer_ids):
            consumer = self.consumers.find(consumer_id)
            if consumer is None:
                continue
            meter_c = self.consumer_meters.get(consumer_id)
            if meter_c is None:
                meter_c = self.consumer_meters[consumer_id] = ConsumerMeter(consumer.kind)
            upstream = self.producer_meters.get(consumer.producer_id)
            producer = self.producers.find(consumer.producer_id)
            snapshot = self.engine.snapshot_consumer(self.consumers.handle(consumer_id))
            if self.observe_consumer is not None:
                self.observe_consumer(consumer_id, snapshot, now)
            score = meter_c.update(snapshot, now, muted=consumer.paused or (producer is not None and producer.paused),
                                   upstream=upstream, preferred=consumer.preferred_layer,
                                   congested=consumer.bw_paused)
            consumer_scores.append((consumer_id, round(score)))
        scores = TransportScores(producers=producer_scores, consumers=consumer_scores)
        if self._sent.get(transport_id) != scores and (producer_scores or consumer_scores
                                                       or transport_id in self._sent):
            self._sent[transport_id] = scores
            self.emit(transport_id, scores)
        return scores

    def _prune(self) -> None:
        """Drops the meters of producers and consumers that are gone (closed since the last round)."""
        for producer_id in [p for p in self.producer_meters if p not in self.producers]:
            del self.producer_meters[producer_id]
        for consumer_id in [c for c in self.consumer_meters if c not in self.consumers]:
            del self.consumer_meters[consumer_id]
