"""mediarouter worker processes: the per-core media plane (control channel, ICE-lite, DTLS, SCTP, policy)."""
