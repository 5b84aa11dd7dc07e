"""The cost-of-feedback comparison's own logic (bench/feedback_cost.py): medians, the ratio, the pair order, the
option checks and the verdict on a run whose allocation changed. The measurement itself is a benchmark."""

from __future__ import annotations

import pytest

from bench.__main__ import main
from bench.feedback_cost import (
    allocation_changed,
    capacity_point,
    check_options,
    cost_ratio,
    layers,
    median,
    pair_order,
)
from bench.scenarios import Options


def test_median_of_odd_and_even_counts() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(ValueError):
        median([])


def test_ratio_is_of_the_medians_so_one_outlier_does_not_move_it() -> None:
    assert cost_ratio([1.1, 1.1, 9.0], [1.0, 1.0, 0.1]) == pytest.approx(1.1)
    with pytest.raises(ValueError):
        cost_ratio([1.0], [0.0])


def test_pairs_alternate_their_order() -> None:
    assert [pair_order(i) for i in range(4)] == [(False, True), (True, False), (False, True), (True, False)]


@pytest.mark.parametrize("changes", [
    {"scenario": "audio"},
    {"twcc_feedback": True},
    {"downlink_loss": 5.0},
    {"steps": 4},
    {"tcp": True},
])
def test_options_that_would_not_compare_like_with_like_are_refused(changes: dict[str, object]) -> None:
    fields = {"scenario": "fanout", "subscribers": 10, "seconds": 1.0}
    fields.update(changes)
    with pytest.raises(ValueError):
        check_options(Options(**fields))  # type: ignore[arg-type]


def test_plain_fanout_options_are_accepted() -> None:
    check_options(Options("fanout", subscribers=10, seconds=1.0, rate=0.0))


def test_a_paused_or_lowered_subscriber_marks_the_run() -> None:
    assert not allocation_changed({"downlinks": {"others": {"layers": {"0": 10}}}})
    assert allocation_changed({"downlinks": {"others": {"layers": {"0": 9, "paused": 1}}}})
    assert not allocation_changed({})


def test_cli_refuses_the_comparison_outside_fanout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audio", "--cost-of-feedback"]) == 2
    assert "fanout" in capsys.readouterr().err


def test_layers_add_up_over_the_groups() -> None:
    point = {"downlinks": {"capped": {"layers": {"0": 2, "paused": 1}}, "others": {"layers": {"0": 7}}}}
    assert layers(point) == {"0": 9, "paused": 1}
    assert layers({}) == {}


@pytest.mark.parametrize(("capacity", "step", "load"), [(1000, 100, 800), (1050, 100, 800), (100, 100, 100),
                                                         (900, 200, 600)])
def test_the_capacity_point_is_a_share_of_the_capacity_in_whole_steps(capacity: int, step: int, load: int) -> None:
    assert capacity_point(capacity, step) == load
