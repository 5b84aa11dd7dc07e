"""router/collector.py: while control or a worker serves, start-up objects are frozen and full collections are
paced; both are restored when it stops."""

from __future__ import annotations

import gc

from router.collector import FULL_AFTER_MIDDLE, paced_collector


def test_paced_collector_freezes_paces_and_restores() -> None:
    before_threshold, before_frozen = gc.get_threshold(), gc.get_freeze_count()
    alive = [object() for _ in range(10)] + [[n] for n in range(1000)]
    with paced_collector():
        assert gc.get_freeze_count() >= before_frozen + 1000
        assert gc.get_threshold() == (before_threshold[0], before_threshold[1], FULL_AFTER_MIDDLE)
    assert gc.get_threshold() == before_threshold and gc.get_freeze_count() == 0
    assert len(alive) == 1010
