"""Sequence/timestamp rewriting as table rows (fastpath.seq), the same C code the Engine runs per consumer.

Row steps: ("in", seq, expected output or None), ("sync",), ("drop", seq), ("insert", expected output or None: a
number taken for a packet of our own, probe padding on the media SSRC). The rewriter starts at 1000.
"""

from __future__ import annotations

import pytest

import fastpath

Step = tuple


ROWS: dict[str, list[Step]] = {
    "in_order": [("in", 10, 1000), ("in", 11, 1001), ("in", 12, 1002)],
    "input_wraps": [("in", 65534, 1000), ("in", 65535, 1001), ("in", 0, 1002), ("in", 1, 1003)],
    "gap_then_late_arrivals": [("in", 10, 1000), ("in", 13, 1003), ("in", 11, 1001), ("in", 12, 1002),
                               ("in", 11, None)],
    "reordering": [("in", 10, 1000), ("in", 12, 1002), ("in", 11, 1001), ("in", 13, 1003)],
    "duplicates": [("in", 10, 1000), ("in", 10, None), ("in", 11, 1001), ("in", 11, None)],
    "layer_switch_continues_at_last_plus_one": [
        ("in", 10, 1000), ("in", 11, 1001), ("sync",), ("in", 5000, 1002), ("in", 5001, 1003),
        ("in", 12, None), ("in", 4999, None)],
    "pause_resume_continuity": [("in", 10, 1000), ("in", 11, 1001), ("sync",), ("in", 30, 1002),
                                ("in", 31, 1003)],
    "sync_before_any_input_is_a_no_op": [("sync",), ("in", 7, 1000), ("in", 8, 1001)],
    "padding_drop_leaves_no_hole": [("in", 10, 1000), ("drop", 11), ("in", 12, 1001), ("in", 13, 1002)],
    "drop_after_gap_keeps_late_numbers": [("in", 10, 1000), ("in", 12, 1002), ("drop", 13), ("in", 14, 1003),
                                          ("in", 11, 1001), ("in", 13, None)],
    "insert_moves_later_inputs_up": [("in", 10, 1000), ("in", 11, 1001), ("insert", 1002), ("insert", 1003),
                                     ("in", 12, 1004), ("in", 13, 1005)],
    "insert_keeps_the_numbers_of_a_gap": [("in", 10, 1000), ("in", 12, 1002), ("insert", 1003), ("in", 11, 1001),
                                          ("in", 13, 1004), ("in", 12, None)],
    "insert_before_a_pending_sync": [("in", 10, 1000), ("sync",), ("insert", 1001), ("in", 500, 1002),
                                     ("in", 501, 1003)],
    "insert_before_any_input_takes_nothing": [("insert", None), ("in", 7, 1000), ("insert", 1001), ("in", 8, 1002)],
    "insert_after_drop": [("in", 10, 1000), ("drop", 11), ("insert", 1001), ("in", 12, 1002)],
    "too_old_outside_ring": [("in", 10, 1000), ("in", 1010, 2000), ("in", 11, None)],
    "backward_jump_is_old": [("in", 10, 1000), ("in", 40000, None), ("in", 11, 1001)],
}


@pytest.mark.parametrize("steps", list(ROWS.values()), ids=list(ROWS))
def test_seq_rewriter_rows(steps: list[Step]) -> None:
    rw = fastpath.SeqRewriter(1000)
    for step in steps:
        if step[0] == "sync":
            rw.sync()
        elif step[0] == "drop":
            rw.drop(step[1])
        elif step[0] == "insert":
            assert rw.insert() == step[1], step
        else:
            assert rw.input(step[1]) == step[2], (step, rw.last_result)


def test_output_wraps_around() -> None:
    rw = fastpath.SeqRewriter(65534)
    assert [rw.input(s) for s in (1, 2, 3, 4)] == [65534, 65535, 0, 1]


def test_result_names() -> None:
    rw = fastpath.SeqRewriter(1000)
    rw.input(5)
    rw.input(5)
    assert rw.last_result == "duplicate"
    rw.sync()
    rw.input(100)
    rw.input(4)
    assert rw.last_result == "too_old"


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="initial_out must be in 0..65535"):
        fastpath.SeqRewriter(70000)
    with pytest.raises(ValueError, match="seq must be in 0..65535"):
        fastpath.SeqRewriter(1).input(-1)


@pytest.mark.parametrize(("values", "expected"), [
    ([1, 2, 3], [1, 2, 3]),
    ([65535, 0, 1], [65535, 65536, 65537]),
    ([0, 65535, 1], [0, -1, 1]),
    ([10, 32777, 9, 8], [10, 32777, 9, 65544]),       # exactly half a range back is older
])
def test_unwrapper_16(values: list[int], expected: list[int]) -> None:
    u = fastpath.Unwrapper()
    assert [u.unwrap(v) for v in values] == expected


def test_unwrapper_32() -> None:
    u = fastpath.Unwrapper(32)
    assert [u.unwrap(v) for v in (0xFFFFFFF0, 0x10, 0xFFFFFFFF)] == [0xFFFFFFF0, 0x100000010, 0xFFFFFFFF]


@pytest.mark.parametrize(("steps", "expected"), [
    ([("in", 1000), ("in", 4000)], [1000, 4000]),
    ([("in", 1000), ("switch", 777_000, None), ("in", 780_000)], [1000, 4000, 7000]),
    ([("in", 1000), ("switch", 50, 6000), ("in", 3050)], [1000, 7000, 10000]),
    ([("in", 1000), ("switch", 50, -9000)], [1000, 4000]),            # never backwards
    ([("in", 0xFFFFF000), ("switch", 5, None)], [0xFFFFF000, (0xFFFFF000 + 3000) & 0xFFFFFFFF]),
])
def test_ts_rewriter_rows(steps: list[tuple], expected: list[int]) -> None:
    tr = fastpath.TsRewriter()
    out = []
    for step in steps:
        if step[0] == "in":
            out.append(tr.input(step[1]))
        else:
            out.append(tr.switch(step[1], 3000, step[2]))
    assert out == expected
