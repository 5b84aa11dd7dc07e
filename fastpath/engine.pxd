# The Engine's C state: transports, producers (one RecvStream per encoding), consumers, the receive and send
# arenas and the event ring. Everything here is preallocated or grown by commands only. Also the route value that
# the rx_ssrc table maps an SSRC to, with its accessors.
#
# How the fast path is cut into files:
# - A `.pxi` include (engine.pyx includes _send, _gso, _forward, _feedback, _publisher_feedback, _reports): a
#   stage of the Engine itself. It works on EngineState, calls and is called by the other stages, and is only
#   split out to keep each file about one concern; it compiles into the engine module, so the C compiler
#   inlines across stages.
# - A header-only `.pxd` of `cdef inline ... noexcept nogil` helpers (rtp, rtcp, seq, store, table, nack, twcc,
#   gso, keyframe, demux): one data structure or wire format with no state beyond what the caller passes in.
#   Each module that cimports it gets its own inlined copy, so the Engine, the bench's limit loop and the small
#   test-facing wrappers (rtp.pyx, seq.pyx, rtcp.pyx, ...) run the same code at no call cost.
# - A separate extension module with non-inline `cdef` functions in its `.pxd` (crypto_kernel, srtp): code with
#   global state of its own or bound to outside libraries (the AES and HMAC primitives installed into libsrtp and
#   the HMAC batch; pylibsrtp's libsrtp entry points). Other modules reach it through Cython's cross-module
#   function pointers, a real call each time, so it only offers calls that do a packet's or a batch's worth of
#   work (hmac_flush once per send arena), never a per-field helper; what must inline (protect_queued) is a
#   `cdef inline` in its `.pxd`.
# A new per-packet helper is a `cdef inline ... noexcept nogil` with C types only, in the `.pxi` of its stage or,
# when another module needs it too, in a header-only `.pxd`.
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from fastpath.counters cimport DROP_REASON_COUNT
from fastpath.includes.linux cimport iovec, mmsghdr, sockaddr_in, sockaddr_in6
from fastpath.bwe cimport Bwe
from fastpath.crypto_kernel cimport HmacBatch, SessionState
from fastpath.gso cimport GSO_ARENA, GsoArena
from fastpath.includes.srtp cimport SrtpFns
from fastpath.nack cimport NackGen
from fastpath.rtp cimport ExtIds, RtpHeader
from fastpath.seq cimport SeqRw, TsRw
from fastpath.store cimport PacketStore
from fastpath.table cimport HashTable
from fastpath.twcc cimport TwccRecv
from fastpath.vp8 cimport Vp8Desc, Vp8Munger

cdef enum:
    MAX_ENCODINGS = 4
    MAX_MID_LEN = 16
    MAX_RID_LEN = 16
    RECV_SLOT_BYTES = 2048
    RECV_MAX_DATAGRAM = RECV_SLOT_BYTES - 32   # keeps SRTP tail room for in-place work
    RECV_CMSG_BYTES = 128                     # ancillary data per datagram (SO_TIMESTAMPNS timespec, IP_PKTINFO)
    LOCAL_CMSG_WORDS = 4                      # CMSG_SPACE(sizeof(in_pktinfo)) = 32 bytes
    SEND_BATCH = GSO_ARENA                    # one flush is one GSO grouping (fastpath/gso.pxd)
    GSO_REFUSALS_OFF = 3
    SEND_SLOT_BYTES = 2048
    EVENT_RING = 1024
    META_RING = 512                           # per-consumer NACK metadata, indexed by output seq
    STORE_SLOTS_VIDEO = 512
    STORE_SLOTS_AUDIO = 128
    PUMP_BUDGET_BATCHES = 16
    PUMP_BUDGET_TX = 16384                    # datagrams sent per pump() before the event loop gets a turn
    MAX_DROPOUT = 3000                        # RFC 3550 A.1 / mediasoup
    MAX_MISORDER = 1500
    KEYFRAME_THROTTLE_MS = 500
    DRAIN_MAX_MS = 2000                       # longest a congestion downswitch stops the current layer (_forward.pxi)
    HOLE_KEYFRAME_MS = 1000                   # key frames per consumer for NACKs that cannot be repaired (_feedback)
    STREAM_ACTIVE_MS = 1500
    REPORT_INTERVAL_MS = 1000
    TICK_FINE_MS = 20                         # the cadence of timers that need one every tick (engine_next_due)
    NEXT_DUE_MAX_MS = 1000                    # engine_next_due looks no further ahead than this
    SRTP_RESET_AFTER = 4                      # consecutive replay_old failures before a stream reset

# The route value, rx_ssrc's int32 value for an SSRC a transport receives: which producer slot, which of its
# encodings (layer) and whether the SSRC is the encoding's RTX stream (RFC 4588):
#     route_pack(p_slot, layer, rtx) == p_slot << ROUTE_SLOT_SHIFT | layer << ROUTE_LAYER_SHIFT | rtx
# It is never negative (the table's -1 means "no route") while p_slot < 2**(31 - ROUTE_SLOT_SHIFT).
cdef enum:
    ROUTE_RTX_BITS = 1
    ROUTE_LAYER_BITS = 2                      # MAX_ENCODINGS <= 1 << ROUTE_LAYER_BITS, checked by the C compiler
    ROUTE_LAYER_SHIFT = ROUTE_RTX_BITS
    ROUTE_SLOT_SHIFT = ROUTE_LAYER_SHIFT + ROUTE_LAYER_BITS
    ROUTE_RTX_MASK = (1 << ROUTE_RTX_BITS) - 1
    ROUTE_LAYER_MASK = (1 << ROUTE_LAYER_BITS) - 1

cdef extern from *:
    """
    /* A C11 static assertion: the C compilation of a module that packs a route value fails when the layer bits
       cannot hold every encoding index. */
    #define FASTPATH_ROUTE_LAYERS_FIT(fits) _Static_assert(fits, "engine.pxd: MAX_ENCODINGS exceeds ROUTE_LAYER_BITS")
    """
    void route_layers_fit "FASTPATH_ROUTE_LAYERS_FIT"(bint fits) noexcept nogil


cdef inline int32_t route_pack(int32_t p_slot, int32_t layer, bint rtx) noexcept nogil:
    route_layers_fit(MAX_ENCODINGS <= (1 << ROUTE_LAYER_BITS))
    return (p_slot << ROUTE_SLOT_SHIFT) | (layer << ROUTE_LAYER_SHIFT) | (ROUTE_RTX_MASK if rtx else 0)


cdef inline int32_t route_slot(int32_t value) noexcept nogil:
    """The producer slot (e.producers[...]) of a route value."""
    return value >> ROUTE_SLOT_SHIFT


cdef inline int32_t route_layer(int32_t value) noexcept nogil:
    """The encoding index (Producer.enc[...]) of a route value."""
    return (value >> ROUTE_LAYER_SHIFT) & ROUTE_LAYER_MASK


cdef inline bint route_is_rtx(int32_t value) noexcept nogil:
    """True when the route value's SSRC is the RTX stream of its encoding."""
    return (value & ROUTE_RTX_MASK) != 0


cdef enum EventCode:
    EV_UNKNOWN = 0
    EV_NEW_STREAM = 1                         # (p, layer, ssrc)
    EV_LAYER_SWITCHED = 2                     # (c, layer)
    EV_KEY_FRAME_REQUESTED = 3                # (p, layer, ssrc)
    EV_STREAM_RESTARTED = 4                   # (p, layer, ssrc)
    EV_PRODUCER_CLOSED = 5                    # (c,) its producer was removed
    EV_SRTP_STREAM_RESET = 6                  # (t, ssrc) large sequence gap: libsrtp stream re-created
    EV_BWE_CHANGED = 7                        # (t, state, bps) the send-side estimate moved by > 10 % (_bwe.pxi)


ctypedef struct IntList:
    int32_t* items
    int32_t n
    int32_t cap


ctypedef struct Event:
    int32_t code
    int32_t a
    int32_t b
    int64_t c


ctypedef struct RecvStream:
    uint32_t ssrc                             # 0 = not known yet
    uint32_t rtx_ssrc
    uint8_t rid[MAX_RID_LEN]
    int32_t rid_len
    # sequence state (RFC 3550 A.1 with 64-bit unwrapping)
    uint8_t seq_started
    int64_t max_ext_seq
    int64_t base_ext_seq
    int32_t bad_seq                           # -1 = none
    # receiver report state (RFC 3550 A.3, A.8)
    uint64_t received
    int64_t expected_prior
    uint64_t received_prior
    uint32_t transit
    uint8_t have_transit
    uint32_t jitter_q4
    uint8_t have_sr
    uint32_t sr_ntp_sec
    uint32_t sr_ntp_frac
    uint32_t sr_rtp
    int64_t sr_arrival_ms
    uint64_t sr_count
    int64_t last_packet_ms
    # key frames
    int64_t last_kf_request_ms
    uint8_t kf_pending
    uint64_t keyframes
    uint64_t kf_requests
    # counters
    uint64_t packets
    uint64_t bytes
    uint64_t rtx_packets
    # per VP8 temporal layer (TID 0-3; fanout_queue): what each costs and how many pictures it carries
    # (snapshot_producer; the stream allocator prices its temporal steps with them: router/temporal.py)
    uint64_t tid_bytes[4]
    uint64_t tid_pictures[4]
    uint64_t drops[DROP_REASON_COUNT]
    PacketStore store
    NackGen* nack                             # video only: NACK generation toward the publisher


ctypedef struct Producer:
    int32_t handle
    int32_t transport
    uint8_t kind                              # 0 audio, 1 video
    uint8_t mid[MAX_MID_LEN]
    int32_t mid_len
    int32_t n_enc
    RecvStream enc[MAX_ENCODINGS]
    uint8_t media_pt[128]
    int16_t rtx_apt[128]                      # -1 = not an RTX PT
    uint8_t codec[128]
    uint32_t clock_rate
    IntList consumers
    uint64_t audio_level_sum
    uint64_t audio_level_count


ctypedef struct MetaSlot:
    uint32_t src_lo                           # low 32 bits of the source ext seq
    uint32_t out_ts
    uint16_t out16
    uint8_t layer
    uint8_t valid
    # Retransmission discipline (_rtx.pxi): low 32 bits of now_ms when first sent and when last resent
    uint32_t sent_ms
    uint32_t resent_ms
    uint8_t resends                           # times resent so far (at most RESEND_MAX_TIMES)
    uint8_t vp8                               # 1: the copy's VP8 PictureID/TL0PICIDX were rewritten to these
    uint8_t vp8_tl0
    uint16_t vp8_pid


ctypedef struct Consumer:
    # Fields read or written for every forwarded packet come first, so that they share the struct's first
    # cache line(s): with a thousand consumers per packet the fan-out loop is bound by cache misses.
    int32_t handle
    int32_t transport
    int32_t producer                          # -1 once the producer is removed
    uint32_t out_ssrc
    uint8_t nack
    uint8_t paused
    uint8_t wait_keyframe
    uint8_t last_pt_in                        # one-entry cache of pt_map (255 = empty): one PT per stream
    uint8_t drain                             # a congestion downswitch: current layer stopped until the switch
    int16_t last_pt_out
    uint8_t pinned                            # a pipe consumer (_pipe.pxi): its target is `preferred`, always
    uint8_t test_loss                         # test hook: percent of first sends dropped (pipe loss tests)
    uint8_t frame_end                         # the newest packet sent had the marker bit: a frame boundary
    uint8_t pd_on                             # a playout delay element goes into each packet until pd_until_us
    int32_t preferred                         # asked (-1 = highest)
    int32_t target
    int32_t current                           # -1 = nothing sent yet
    SeqRw* seq
    MetaSlot* meta
    TsRw ts
    Vp8Munger vp8                             # VP8 PictureID/TL0PICIDX continuity and temporal cap (vp8.pxd)
    uint64_t packets
    uint64_t bytes
    int16_t pt_map[128]                       # -1 = unsupported
    uint64_t retransmits
    uint64_t nack_rx
    uint64_t pli_rx
    uint64_t layer_switches
    uint64_t drops[DROP_REASON_COUNT]
    # from the subscriber's receiver reports
    uint64_t rr_count
    uint8_t rr_fraction_lost
    int32_t rr_cumulative_lost
    uint32_t rr_highest_seq
    uint32_t rr_jitter
    int64_t rtt_ms                            # -1 until measured
    uint32_t last_sr_mid
    int64_t last_sr_ms
    # RTX toward the subscriber (RFC 4588, _rtx.pxi): retransmissions go out on rtx_ssrc (0 = off: on out_ssrc)
    # with their own sequence counter and the RTX payload type of the media payload type they carry.
    uint32_t rtx_ssrc
    uint16_t rtx_seq
    uint8_t rtx_pt[128]                       # subscriber media PT -> its RTX PT, RTX_PT_NONE = none
    uint64_t rtx_packets
    int64_t drain_until_ms                    # drain ends here even if the target's key frame never came
    int64_t hole_kf_ms                        # last key frame asked for an unrepairable NACK (consumer_hole)
    uint64_t hole_keyframes
    uint64_t test_lost                        # first sends the test_loss hook dropped
    # Playout delay toward the subscriber (_playout.pxi): element pd_id (0 = not offered) carrying pd_data (min and
    # max delay, 10 ms units, 12 bits each) in every packet sent until pd_until_us after the value was set.
    uint8_t pd_id
    uint8_t pd_data[3]
    int64_t pd_until_us
    uint64_t pd_stamped                       # packets that carried it


ctypedef struct Transport:
    # Per-forwarded-packet fields first (one cache line: handle, bound, addr, srtp_out, tx counters, and where
    # srtp_out keeps its cipher and HMAC states, prefetched one consumer ahead).
    int32_t handle
    uint8_t bound
    uint8_t has_local                         # send with local_cmsg (IP_PKTINFO: the checks' local address)
    sockaddr_in addr
    void* srtp_out
    uint64_t tx_packets
    uint64_t tx_bytes
    SessionState out_hot
    void* srtp_in
    uint64_t tuple_key
    ExtIds ids
    uint8_t has_id_map
    uint8_t id_map[256]
    TwccRecv* twcc                            # created when transport-cc is negotiated (ids.twcc != 0)
    int64_t rtt_ms                            # toward the peer as a publisher, 0 = unknown
    uint32_t rrtr_mid                         # middle 32 bits of the NTP time of our last XR RRTR
    int64_t rrtr_ms
    IntList producers
    IntList consumers
    int64_t last_rr_ms
    int64_t last_sr_ms
    uint32_t fail_ssrc
    int32_t fail_count
    uint64_t rx_packets
    uint64_t rx_bytes
    uint64_t rtp_rx
    uint64_t rtcp_rx
    uint64_t rtcp_tx
    uint64_t stun_rx
    uint64_t dtls_rx
    uint64_t srtp_resets
    uint64_t drops[DROP_REASON_COUNT]
    # Send-side bandwidth estimation toward this transport's peer (_bwe.pxi), NULL until enabled or a REMB.
    Bwe* bwe
    int64_t rate_ms                           # start of the send-rate window (tick), 0 = none yet
    uint64_t rate_bytes                       # tx_bytes at rate_ms
    uint64_t sent_bps                         # measured send rate over the last window
    # Probe cluster (_rtx.pxi, Engine.probe): until probe_until_ms the tick tops the send rate up to probe_bps
    # with padding-only packets on an RTX stream of one of the transport's video consumers.
    int64_t probe_until_ms                    # 0 = not probing
    int64_t probe_last_ms                     # the last top-up
    uint64_t probe_last_tx                    # tx_bytes expected at that top-up, padding included
    uint64_t probe_bps
    uint64_t probe_clusters
    uint64_t probe_packets
    uint64_t probe_bytes
    uint64_t rtx_bytes                        # NACK answers sent toward the transport (RTX or media SSRC)
    uint64_t local_cmsg[LOCAL_CMSG_WORDS]    # CMSG_SPACE(sizeof(in_pktinfo)): cold, read by the kernel only


ctypedef struct PendingRtp:
    # A received packet whose copies are not made yet (the fan-out run, _forward.pxi).
    uint8_t* buf                              # in the receive arena: valid until the next recvmmsg
    RtpHeader h
    int64_t ext
    int32_t length
    int32_t key
    Vp8Desc vp8                               # its VP8 payload descriptor (present = 0: not VP8)


# Engine.totals(): the media totals of the worker's heartbeat (TOTAL_NAMES in engine.pyx, in this order).
cdef enum:
    TOTAL_RX_PACKETS = 0
    TOTAL_RX_BYTES = 1
    TOTAL_KEYFRAMES_RX = 2
    TOTAL_KEYFRAME_REQUESTS_TX = 3
    TOTAL_NACKS_TX = 4
    TOTAL_RTX_RX = 5
    TOTAL_TX_PACKETS = 6
    TOTAL_TX_BYTES = 7
    TOTAL_RETRANSMITS = 8
    TOTAL_NACKS_RX = 9
    TOTAL_PLIS_RX = 10
    TOTAL_COUNT = 11


ctypedef struct EngineState:
    int fd
    SrtpFns srtp
    uint32_t rtcp_ssrc
    uint64_t rng
    int64_t now_ms
    int64_t now_us                            # same clock, microseconds since epoch_us (TWCC arrivals)
    int64_t epoch_us
    uint8_t kernel_ts                         # SO_TIMESTAMPNS is on: datagrams carry their arrival time
    uint8_t pktinfo                           # IP_PKTINFO is on: datagrams carry their local address
    int32_t twcc_transports                   # transports that want TWCC feedback: only they need kernel_ts
    int64_t realtime_offset_us                # CLOCK_REALTIME - CLOCK_MONOTONIC at the last recvmmsg
    int64_t last_rx_at_us                     # the latest kernel arrival time handed out (rx_arrival_us)
    int32_t cur_rx                            # arena index of the datagram being handled
    Transport** transports
    int32_t cap_transports
    Producer** producers
    int32_t cap_producers
    Consumer** consumers
    int32_t cap_consumers
    HashTable tuples                          # (addr << 16 | port) -> transport slot
    HashTable rx_ssrc                         # (transport << 32 | ssrc) -> route value (route_pack)
    HashTable tx_ssrc                         # (transport << 32 | out_ssrc) -> consumer slot
    int32_t batch
    uint8_t* recv_buf
    mmsghdr* recv_msgs
    iovec* recv_iov
    sockaddr_in6* recv_addr
    uint8_t* recv_cmsg
    # The fan-out run (_forward.pxi): consecutive packets of one producer's layer within a receive batch are
    # forwarded consumer by consumer when the run ends, so each consumer's copies queue back to back (one GSO
    # message) and its state is loaded once per run instead of once per packet.
    PendingRtp* run                           # batch entries
    int32_t n_run
    int32_t run_p                             # producer slot and layer of the run
    int32_t run_layer
    uint8_t* send_buf
    HmacBatch* hmac                           # tags of the send arena's AES-CM-80 packets, written at flush
    mmsghdr send_msgs[SEND_BATCH]
    iovec send_iov[SEND_BATCH]
    int32_t send_t[SEND_BATCH]
    int32_t n_send
    # UDP GSO at flush time (_gso.pxi): each transport's queued datagrams of one size leave as one message.
    uint8_t gso                               # 1 while segmented sends are on
    int32_t gso_errno                         # the kernel's last refusal of a segmented send, 0 = none
    int32_t gso_refusals                      # refused segmented messages in a row (GSO_REFUSALS_OFF turns it off)
    uint64_t gso_refused                      # refused segmented messages (each resent unsegmented)
    GsoArena gso_arena
    uint64_t tx_messages                      # sendmmsg messages; fewer than tx_datagrams when GSO coalesces
    Event events[EVENT_RING]
    uint32_t ev_head
    uint32_t ev_tail
    uint64_t ev_dropped
    uint8_t cname[32]
    int32_t cname_len
    uint64_t rx_datagrams
    uint64_t tx_datagrams
    uint64_t recv_errors
    uint64_t pumps                            # receive batches that returned datagrams
    uint64_t wakeups                          # pump() calls: the worker's wake-ups for the socket
    # Timers in the packet path (Engine.auto_tick_ms): pump() runs engine_tick when a batch arrives at least
    # auto_tick_ms after the last tick (0 = only Engine.tick runs the timers); last_tick_ms is the tick's clock.
    int64_t last_tick_ms
    int32_t auto_tick_ms
    uint64_t pump_ticks                       # engine_tick runs from pump()
    uint64_t drops[DROP_REASON_COUNT]
    # What removed transports, producers and consumers counted (Engine.totals(): the heartbeat's media totals
    # only grow): TOTAL_* sums and drops by reason, folded in when each object is removed.
    uint64_t retired[TOTAL_COUNT]
    uint64_t retired_drops[DROP_REASON_COUNT]
