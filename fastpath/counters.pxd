# Drop reasons counted by the fast path (an enum starting at UNKNOWN = 0) and the counter blocks.
from libc.stdint cimport uint64_t

cdef enum:  # DropReason
    DROP_UNKNOWN = 0
    DROP_NOT_RTP = 1            # first byte matches no RFC 7983 range
    DROP_UNKNOWN_TUPLE = 2      # RTP/RTCP/DTLS from an address that is no bound tuple
    DROP_NO_SRTP = 3            # RTP/RTCP before set_srtp
    DROP_SRTP_UNPROTECT = 4     # authentication, replay or other libsrtp failure
    DROP_UNKNOWN_SSRC = 5       # no producer stream for the SSRC, MID or RID
    DROP_TOO_SHORT = 6
    DROP_BAD_VERSION = 7
    DROP_BAD_HEADER = 8         # CSRC, extension or padding lengths inconsistent
    DROP_DUPLICATE = 9
    DROP_LAYER_FILTERED = 10    # another simulcast layer than the consumer's current one
    DROP_PAUSED = 11
    DROP_SRTP_PROTECT = 12
    DROP_SEND_FAILED = 13
    DROP_UNSUPPORTED_PT = 14    # PT not in the producer's list or not in the consumer's pt_map
    DROP_PADDING_ONLY = 15
    DROP_BAD_SEQ = 16           # a jump outside the RFC 3550 window (waits for a second packet)
    DROP_WAIT_KEYFRAME = 17     # consumer needs a key frame before it can (re)start
    DROP_RTX_EMPTY = 18         # RTX probe without an original sequence number
    DROP_NO_ROUTE = 19          # consumer transport has no tuple or no outbound SRTP yet
    DROP_TOO_BIG = 20           # datagram truncated by the arena or no tail room
    DROP_SEQ_TOO_OLD = 21       # older than the consumer's last sync point
    DROP_BAD_RTCP = 22
    DROP_NACK_MISS = 23         # NACKed packet no longer in the store
    DROP_UNSUPPORTED_ADDRESS = 24
    DROP_NACK_TOO_SOON = 25     # NACKed packet already resent less than one RTT ago (docs/FORWARDING.md)
    DROP_NACK_TOO_OLD = 26      # NACKed packet first sent longer ago than its kind's retransmission age
    DROP_NACK_LIMIT = 27        # NACKed packet already resent RESEND_MAX_TIMES times
    DROP_NACK_OTHER_LAYER = 28  # NACKed packet of a layer the consumer left at a switch (useless after the key frame)
    DROP_TEMPORAL_FILTERED = 29  # a VP8 picture above the consumer's temporal layer cap
    DROP_REASON_COUNT = 30
