"""mediarouter's bundled benchmark: a load generator of real WebRTC participants, scenarios and baselines.

``python -m bench <scenario>`` or ``python -m bench suite`` (``make bench``). The generator's participants do ICE
(RFC 8445), DTLS-SRTP (RFC 5764) and SRTP (RFC 3711) against a server started in-process (``bench.server``);
their packets are built, sent, received and checked in Cython (``bench._loadgen``). Baselines measured in the same
run: the limit loop (``bench._limit``) and a relay built on aiortc (``bench.aiortc_relay``). See README
"Performance" for how to read the output.
"""
