"""Connection quality of a room's participants: the ConnectionQualityUpdate rounds.

The worker scores every producer (a participant's uplink) and consumer (its downlink) from 0 to 100 and sends a
transport's scores when they change (``transport.scores``, router/scores.py). :class:`QualityBook` keeps the latest
scores of each participant's transports; a participant's quality is its worst score, mapped as LiveKit maps it
(pkg/sfu/connectionquality/scorer.go): above 80 EXCELLENT, above 40 GOOD, above 20 POOR, else LOST, with the score
sent as LiveKit's MOS (1.0-4.5). A participant without scores yet (no media) is EXCELLENT at 4.5, as in LiveKit.

Every :data:`QUALITY_INTERVAL_S` (LiveKit's ``connectionquality.UpdateInterval``) a round (:meth:`QualityBook.round`)
looks at the active participants; when one is new or its quality changed since the last round, each active
participant whose protocol knows ConnectionQualityUpdate (> 4) is sent the qualities of itself and of the
participants it subscribes to, as LiveKit's ``Room.connectionQualityWorker`` does. LOST is reported as POOR for a
participant whose protocol predates LOST (<= 10). docs/PROTOCOL.md, Connection quality.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from livekit.protocol import models, rtc

from router.messages import TransportScores

QUALITY_INTERVAL_S = 5.0
MAX_SCORE = 100.0
MAX_MOS = 4.5
MIN_PROTOCOL = 5  # ConnectionQualityUpdate: protocol > 4
LOST_PROTOCOL = 11  # ConnectionQuality.LOST: protocol > 10
_THRESHOLDS = (
    (80.0, models.ConnectionQuality.EXCELLENT),
    (40.0, models.ConnectionQuality.GOOD),
    (20.0, models.ConnectionQuality.POOR),
)


def quality_of(score: float) -> int:
    """LiveKit's mapping of a 0-100 score to ConnectionQuality."""
    for above, quality in _THRESHOLDS:
        if score > above:
            return quality
    return models.ConnectionQuality.LOST


def mos_of(score: float) -> float:
    """LiveKit's mapping of a 0-100 score to a mean opinion score (ITU-T G.107 R-factor to MOS)."""
    if score <= 0.0:
        return 1.0
    if score >= MAX_SCORE:
        return MAX_MOS
    return 1.0 + 0.035 * score + 0.000007 * score * (score - 60.0) * (100.0 - score)


@dataclass(frozen=True)
class Peer:
    """An active participant as a round sees it: its protocol and the participants whose tracks it receives."""

    sid: str
    protocol: int
    subscribed: frozenset[str] = frozenset()


@dataclass
class QualityBook:
    """The latest scores of one room's participants and what the last round announced."""

    scores: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # participant sid -> transport -> scores
    announced: dict[str, int] = field(default_factory=dict)  # participant sid -> quality at the last round

    def on_scores(self, sid: str, transport_id: str, body: TransportScores) -> None:
        self.scores.setdefault(sid, {})[transport_id] = [s for _, s in (*body.producers, *body.consumers)]

    def score(self, sid: str) -> float:
        """The participant's worst score over its uplink and downlink (100 with none)."""
        return float(min((s for scores in self.scores.get(sid, {}).values() for s in scores), default=MAX_SCORE))

    def info(self, peer: Peer) -> rtc.ConnectionQualityInfo:
        score = self.score(peer.sid)
        quality = quality_of(score)
        if quality == models.ConnectionQuality.LOST and peer.protocol < LOST_PROTOCOL:
            quality = models.ConnectionQuality.POOR
        return rtc.ConnectionQualityInfo(participant_sid=peer.sid, quality=quality, score=mos_of(score))

    def forget(self, present: Iterable[str]) -> None:
        keep = set(present)
        for sid in [s for s in self.scores if s not in keep]:
            del self.scores[sid]

    def round(self, peers: Sequence[Peer]) -> list[tuple[str, list[rtc.ConnectionQualityInfo]]]:
        """One round: (recipient sid, its ConnectionQualityInfos) for each participant to update, or nothing
        when no participant is new and no quality changed."""
        now = {peer.sid: self.info(peer) for peer in peers}
        changed = any(self.announced.get(sid) != info.quality for sid, info in now.items())
        self.announced = {sid: info.quality for sid, info in now.items()}
        if not changed:
            return []
        out: list[tuple[str, list[rtc.ConnectionQualityInfo]]] = []
        for peer in peers:
            if peer.protocol < MIN_PROTOCOL:
                continue
            infos = [now[peer.sid]] + [now[sid] for sid in sorted(peer.subscribed) if sid in now and sid != peer.sid]
            out.append((peer.sid, infos))
        return out

