"""router/totals.py: a worker's media totals only grow, also when the objects that counted are removed, and sum
producers (with their layers), consumers, transports and the Engine's own drops."""

from __future__ import annotations

from typing import Any

from router.totals import TOTAL_NAMES, MediaTotals


class Snapshots:
    def __init__(self) -> None:
        self.engine: dict[str, Any] = {"rx_datagrams": 5, "drop_not_rtp": 2}
        self.transports: dict[int, dict[str, Any]] = {}
        self.producers: dict[int, dict[str, Any]] = {}
        self.consumers: dict[int, dict[str, Any]] = {}

    def snapshot_engine(self) -> dict[str, Any]:
        return self.engine

    def snapshot_transport(self, t: int) -> dict[str, Any]:
        return self.transports[t]

    def snapshot_producer(self, p: int) -> dict[str, Any]:
        return self.producers[p]

    def snapshot_consumer(self, c: int) -> dict[str, Any]:
        return self.consumers[c]


def totals_over(snaps: Snapshots) -> MediaTotals:
    return MediaTotals(snaps, lambda: [(f"t{h}", h) for h in snaps.transports],
                       lambda: [(f"p{h}", h) for h in snaps.producers], lambda: [(f"c{h}", h) for h in snaps.consumers])


def test_totals_sum_every_object_and_keep_what_removed_objects_counted() -> None:
    snaps = Snapshots()
    totals = totals_over(snaps)
    first = totals.collect()
    assert first == {"totals": dict.fromkeys(TOTAL_NAMES, 0), "drops": {"not_rtp": 2}}
    snaps.transports[0] = {"rx_packets": 9, "drop_srtp_unprotect": 1}
    snaps.producers[0] = {"packets": 100, "bytes": 10_000, "layers": [
        {"keyframes": 2, "kf_requests": 1, "nack_requested": 3, "rtx_packets": 3, "drop_duplicate": 4},
        {"keyframes": 1, "kf_requests": 0}]}
    snaps.consumers[0] = {"packets": 90, "bytes": 9_000, "retransmits": 3, "nack_rx": 2, "pli_rx": 1,
                          "drop_layer_filtered": 7}
    snaps.consumers[1] = {"packets": 10, "bytes": 1_000}
    now = totals.collect()
    assert now["totals"] == {"rx_packets": 100, "rx_bytes": 10_000, "keyframes_rx": 3, "keyframe_requests_tx": 1,
                             "nacks_tx": 3, "rtx_rx": 3, "tx_packets": 100, "tx_bytes": 10_000, "retransmits": 3,
                             "nacks_rx": 2, "plis_rx": 1}
    assert now["drops"] == {"not_rtp": 2, "srtp_unprotect": 1, "duplicate": 4, "layer_filtered": 7}
    del snaps.consumers[0]  # removed: what it counted stays in the totals
    snaps.consumers[1]["packets"] = 15
    later = totals.collect()
    assert later["totals"]["tx_packets"] == 105 and later["drops"]["layer_filtered"] == 7
    snaps.consumers[0] = {"packets": 1}  # a new object on a freed handle starts from its own zero
    assert totals.collect()["totals"]["tx_packets"] == 106
    snaps.consumers[1] = {"packets": 2}  # replaced under the same id between two heartbeats: still no decrease
    assert totals.collect()["totals"]["tx_packets"] == 108
