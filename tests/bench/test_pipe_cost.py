"""``python -m bench.pipe_cost``: without a pipe B takes nothing in, with one (plain or keyed) it does (no timing
asserted)."""

from __future__ import annotations

from bench import pipe_cost


def test_each_set_up_takes_every_packet_in_and_the_pipe_reaches_b() -> None:
    alone_a, alone_b = pipe_cost.run("alone", 320)
    pipe_a, pipe_b = pipe_cost.run("pipe", 320)
    assert alone_a > 0 and alone_b == 0.0  # B took nothing in without a pipe
    assert pipe_a > 0 and pipe_b > 0  # B's pipe producer took packets in


def test_the_keyed_pipes_reach_b_decrypted() -> None:
    for mode in ("pipe_srtp", "pipe_gcm"):
        a_us, b_us = pipe_cost.run(mode, 320)
        assert a_us > 0 and b_us > 0, mode  # B's pipe producer took packets in: they passed its SRTP check
