"""Compressed signal frames: messages compressed once that any permessage-deflate reader decodes, whatever it read
before, and a room's listing of participants compressed by block (control/rtc/frames.py, control/rtc/listing.py)."""

from __future__ import annotations

import pytest
from livekit.protocol import models, rtc

from control.rtc import listing as listing_mod
from control.rtc import lk_messages as lk
from control.rtc.frames import DEFLATE_MIN_BYTES, Frame, deflate_piece, deflated_message, websocket_frame
from control.rtc.listing import Listing
from tests.control.ws_reader import Reader


def _update(sid: str, metadata: str) -> rtc.SignalResponse:
    return lk.participant_update([models.ParticipantInfo(sid=sid, identity=sid, metadata=metadata, version=1)])


def test_frames_compressed_once_decode_on_a_connection_in_any_order() -> None:
    """The same compressed bytes serve two sockets that read different things before them: each message refers
    to nothing earlier, so a reader's context (other messages, compressed or not) never matters."""
    small = Frame(_update("PA_small", "s"))
    repetitive = Frame(_update("PA_big", "abc" * 2000))
    varied = Frame(_update("PA_varied", "".join(f"{i:05d}" for i in range(2000))))
    assert len(small.data) < DEFLATE_MIN_BYTES <= len(repetitive.data)
    for order in ([small, repetitive, varied, repetitive], [varied, repetitive, small, varied]):
        reader = Reader()
        got = reader.messages(b"".join(f.deflated(15) for f in order))
        assert got == [f.data for f in order]
        assert reader.compressed == [f is not small for f in order]
    assert len(repetitive.deflated(15)) < len(repetitive.data) // 20
    assert repetitive.deflated(15) is repetitive.deflated(15)  # compressed once
    assert small.deflated(15) is small.wire


def test_a_smaller_window_is_respected() -> None:
    frame = Frame(_update("PA_w", "".join(f"{i:06d}" for i in range(3000))))
    reader = Reader(wbits=9)  # a client that asked for server_max_window_bits=9 inflates with a 512-byte window
    assert reader.messages(frame.deflated(9)) == [frame.data]


def test_pieces_concatenate_into_one_message() -> None:
    parts = [b"head" * 300, bytes(range(256)) * 20, b"", b"tail" * 500]
    payload = deflated_message(b"".join(deflate_piece(p) for p in parts))
    assert Reader().messages(websocket_frame(payload, compressed=True)) == [b"".join(parts)]


def _entry(i: int) -> bytes:
    return lk.listed_participant(models.ParticipantInfo(sid=f"PA_{i:06d}", identity=f"user-{i}", version=1,
                                                        state=models.ParticipantInfo.State.ACTIVE))


def test_listing_keeps_the_order_of_joins_across_blocks_changes_and_leaves() -> None:
    listing = Listing()
    count = 2 * listing_mod.BLOCK + 7
    for i in range(count):
        listing.put(f"PA_{i:06d}", _entry(i))
    before = listing.snapshot(without="PA_000005")
    listing.put("PA_000003", _entry(1003))  # a change in the first block
    listing.discard("PA_000070")  # a leave from the second
    listing.put("PA_new", _entry(5000))  # a join: after everyone
    expected = [_entry(i) for i in range(count) if i != 5]
    assert before.raw() == b"".join(expected)  # a snapshot does not move with the room
    now = [_entry(1003) if i == 3 else _entry(i) for i in range(count) if i != 70] + [_entry(5000)]
    assert listing.snapshot().raw() == b"".join(now) and len(listing) == count
    for i in range(listing_mod.BLOCK):
        listing.discard(f"PA_{i:06d}")  # the first block emptied: dropped
    assert listing.snapshot().raw() == b"".join(now[listing_mod.BLOCK:])


@pytest.mark.parametrize("without", [None, "PA_000000", "PA_000100"])
def test_a_join_response_compressed_from_its_pieces_is_the_join_response(without: str | None) -> None:
    listing = Listing()
    for i in range(150):
        listing.put(f"PA_{i:06d}", _entry(i))
    listing.put("PA_hidden", b"")  # a hidden participant is in the listing with no entry
    snapshot = listing.snapshot(without=without)
    listed = snapshot.raw()
    me = models.ParticipantInfo(sid="PA_me", identity="me", permission=models.ParticipantPermission(can_subscribe=True))
    head = lk.join_response_head(models.Room(sid="RM_x", name="r"), me, len(listed), server_version="1.9.0",
                                 node_id="n", region="")
    frame = Frame.encoded("join", head + listed, deflate=lambda wbits: deflate_piece(head, wbits) +
                          snapshot.deflated(wbits))
    reader = Reader()
    (data,) = reader.messages(frame.deflated(15))
    assert reader.compressed == [True] and data == head + listed
    join = rtc.SignalResponse.FromString(data).join
    sids = [p.sid for p in join.other_participants]
    assert sids == [f"PA_{i:06d}" for i in range(150) if f"PA_{i:06d}" != without]
    assert len(frame.deflated(15)) < len(data) // 2
