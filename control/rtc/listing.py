"""Listing: a room's JoinResponse entries of its participants, in the room's order, encoded and compressed by block.

Every JoinResponse lists everyone else in the room (``other_participants``), so at 1,000 participants each newcomer
is sent some 80 KB, and a browser (which negotiates permessage-deflate) is sent them compressed: compressing that
list for each join cost control more than the rest of the join (about 3 ms per join at 1,000 participants, at
zlib's fastest level; docs/PERFORMANCE.md, "Large rooms: joins"). Here the entries are kept in blocks of
:data:`BLOCK` consecutive participants, and each block's bytes and compressed bytes (``frames.deflate_piece``:
pieces that refer to nothing before them) are built once and kept until one of its participants' entry changes or
leaves: a join compresses its own fields and the block its newcomer sits in (the last one), and reuses every other
block as it is. A block is immutable once built (a change makes a new one), so what a JoinResponse took from the
listing stays true however the room changes before the frame is written.

Order: a participant's entry is added to the last block (a new one when that is full) and stays in its block until
it leaves, so the blocks keep the room's order of joins. Blocks emptied by leaves are dropped; blocks thinned by
leaves stay as they are (they compress a little less well).
"""

from __future__ import annotations

from control.rtc.frames import deflate_piece

BLOCK = 64  # entries per block: about 5 KB, which deflate compresses about 3:1


class _Block:
    """Some participants' entries (sid -> entry), never changed once built; its bytes and compressed bytes are
    made on first use."""

    __slots__ = ("_deflated", "_raw", "entries")

    def __init__(self, entries: dict[str, bytes]) -> None:
        self.entries = entries
        self._raw: bytes | None = None
        self._deflated: dict[int, bytes] = {}

    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = b"".join(self.entries.values())
        return self._raw

    def deflated(self, wbits: int) -> bytes:
        done = self._deflated.get(wbits)
        if done is None:
            done = self._deflated[wbits] = deflate_piece(self.raw(), wbits)
        return done

    def without(self, sid: str) -> _Block:
        return _Block({k: v for k, v in self.entries.items() if k != sid})


class Snapshot:
    """What one JoinResponse lists: the blocks at one moment, without the newcomer's own entry."""

    __slots__ = ("_blocks",)

    def __init__(self, blocks: list[_Block]) -> None:
        self._blocks = blocks

    def raw(self) -> bytes:
        return b"".join(block.raw() for block in self._blocks)

    def deflated(self, wbits: int) -> bytes:
        """The entries as :func:`control.rtc.frames.deflate_piece` outputs, one per block."""
        return b"".join(block.deflated(wbits) for block in self._blocks)


class Listing:
    """The entries of a room's participants (empty bytes for one that is not listed), by block."""

    def __init__(self) -> None:
        self._blocks: dict[int, _Block] = {}  # block number -> block, in the room's order
        self._block_of: dict[str, int] = {}  # sid -> its block's number
        self._next = 0

    def __contains__(self, sid: object) -> bool:
        return sid in self._block_of

    def __len__(self) -> int:
        return len(self._block_of)

    def put(self, sid: str, entry: bytes) -> None:
        """Sets ``sid``'s entry; a new sid goes after everyone else."""
        number = self._block_of.get(sid)
        if number is None:
            last = self._next - 1
            block = self._blocks.get(last)
            if block is None or len(block.entries) >= BLOCK:
                last = self._next
                self._next += 1
                block = _Block({})
            number = self._block_of[sid] = last
        else:
            block = self._blocks[number]
            if block.entries[sid] == entry:
                return
        self._blocks[number] = _Block({**block.entries, sid: entry})

    def discard(self, sid: str) -> None:
        number = self._block_of.pop(sid, None)
        if number is None:
            return
        block = self._blocks[number].without(sid)
        if block.entries:
            self._blocks[number] = block
        else:
            del self._blocks[number]

    def snapshot(self, without: str | None = None) -> Snapshot:
        """Every entry but ``without``'s, as they are now."""
        blocks = list(self._blocks.values())
        if without is not None and without in self._block_of:
            mine = self._blocks[self._block_of[without]]
            blocks = [mine.without(without) if block is mine else block for block in blocks]
        return Snapshot(blocks)
