# Pipe transports between workers (included by engine.pyx before _send.pxi): docs/FORWARDING.md, Pipe transports.
#
# A pipe carries a producer's packets, decrypted once on the worker that receives them from the publisher, to
# another worker of the same host as plain RTP over loopback UDP (mediasoup's PipeTransport). The Engine needs no
# path of its own for them:
# - a pipe transport is an ordinary transport whose SRTP profile is PROFILE_PLAIN (fastpath/srtp.pyx: libsrtp's
#   null cipher and null authentication, so RTP leaves as it is and RTCP only gains the 4-byte SRTCP index), bound
#   to the other worker's UDP port; both workers route it by 5-tuple then SSRC like any transport;
# - on the sending worker each encoding of the producer is one *pinned* consumer (Consumer.pinned): its target
#   layer is its encoding, always (consumer_retarget), so the pipe carries every layer under SSRCs control chose,
#   each with its own NACK metadata and RTX stream; a NACK or PLI arriving from the other worker is served by the
#   ordinary consumer feedback path (_feedback.pxi), key-frame requests throttled as for any subscriber;
# - on the receiving worker the pipe is an ordinary producer with those SSRCs as its encodings: its consumers keep
#   their layer selection, NACK store and rewriting, and its NACK generation asks the sending worker for losses.
# - toward a worker of another host the pipe transport has a real SRTP profile instead (AES-CM-128-HMAC-SHA1-80 or
#   AEAD-AES-128-GCM, keys from control): the same transport, protected and checked like a client's
#   (docs/FORWARDING.md, Pipes between hosts).
# The only per-packet code here is the test hook below (Consumer.test_loss, 0 outside tests).


cdef inline bint pipe_test_drop(EngineState* e, Consumer* c) noexcept nogil:
    """Test hook: lose this first send with probability c.test_loss percent (the loss tests of the pipe)."""
    if rng_next(e) % 100 < c.test_loss:
        c.test_lost += 1
        return True
    return False
