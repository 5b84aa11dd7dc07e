"""Names of the fast path's drop reasons (``counters.pxd`` ``DropReason``), for snapshots and stats."""

DROP_REASON_NAMES = (
    "unknown", "not_rtp", "unknown_tuple", "no_srtp", "srtp_unprotect", "unknown_ssrc", "too_short",
    "bad_version", "bad_header", "duplicate", "layer_filtered", "paused", "srtp_protect", "send_failed",
    "unsupported_pt", "padding_only", "bad_seq", "wait_keyframe", "rtx_empty", "no_route", "too_big",
    "seq_too_old", "bad_rtcp", "nack_miss", "unsupported_address", "nack_too_soon", "nack_too_old", "nack_limit",
    "nack_other_layer",
    "temporal_filtered",
)
