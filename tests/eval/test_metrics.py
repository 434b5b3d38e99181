"""METHODS.md §5 aggregates and curve metrics, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixlab.eval.metrics import (
    aggregates,
    area_under_curve,
    baseline_target,
    percent_fewer_steps,
    safe_exp,
    steps_to_target,
    times_faster,
    worst_domain,
)

LN2, LN8 = math.log(2), math.log(8)


def test_aggregates_hand_example() -> None:
    agg = aggregates(np.array([LN2, LN8]), np.array([0.25, 0.75]))
    assert agg["mean_ppl"] == pytest.approx(5.0)  # (2 + 8) / 2
    assert agg["mean_logppl"] == pytest.approx(2 * LN2)  # (ln 2 + 3 ln 2) / 2
    assert agg["geo_ppl"] == pytest.approx(4.0)  # sqrt(2 * 8)
    assert agg["worst_logppl"] == pytest.approx(LN8)
    assert agg["worst_ppl"] == pytest.approx(8.0)
    assert agg["natural_loss"] == pytest.approx(0.25 * LN2 + 0.75 * LN8)
    assert agg["natural_ppl"] == pytest.approx(2**2.5)
    assert set(agg) == {
        "mean_ppl",
        "mean_logppl",
        "geo_ppl",
        "worst_logppl",
        "worst_ppl",
        "natural_loss",
        "natural_ppl",
    }


def test_aggregates_by_name_and_from_token_counts() -> None:
    by_name = aggregates({"a": LN2, "b": LN8}, {"b": 0.75, "a": 0.25})
    counts = aggregates([LN2, LN8], [1_000, 3_000])  # raw train-token counts are normalised
    aligned = aggregates(np.array([LN2, LN8]), {"b": 3, "a": 1}, domains=("a", "b"))
    for agg in (by_name, counts, aligned):
        assert agg["natural_loss"] == pytest.approx(2.5 * LN2)
        assert agg["mean_ppl"] == pytest.approx(5.0)


def test_mean_ppl_is_dominated_by_a_high_ppl_domain_but_natural_is_not() -> None:
    # The §5 pitfall: a 1%-of-tokens domain with PPL 1000 decides mean_ppl alone.
    agg = aggregates([math.log(10), math.log(1000)], [0.99, 0.01])
    assert agg["mean_ppl"] == pytest.approx(505.0)
    assert agg["natural_ppl"] == pytest.approx(10**0.99 * 1000**0.01)
    assert agg["natural_ppl"] < 11


def test_aggregates_reject_inconsistent_inputs() -> None:
    with pytest.raises(ValueError, match="differ on"):
        aggregates({"a": 1.0, "b": 2.0}, {"a": 0.5, "c": 0.5})
    with pytest.raises(ValueError, match="2 losses but 3"):
        aggregates([1.0, 2.0], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="not all 0"):
        aggregates([1.0, 2.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="no domains"):
        aggregates([], [])


def test_worst_domain() -> None:
    assert worst_domain({"a": 1.0, "b": 3.0, "c": 2.0}) == "b"
    assert worst_domain([1.0, 3.0, 3.0]) == 1  # ties go to the first
    assert worst_domain([1.0, 3.0, 2.0], domains=("x", "y", "z")) == "y"
    assert worst_domain([1.0, float("nan"), 9.0]) == 1  # a diverged domain is the worst


def test_diverged_loss_gives_inf_not_an_exception() -> None:
    assert safe_exp(1000.0) == math.inf
    agg = aggregates([1.0, 800.0], [0.5, 0.5])
    assert agg["mean_ppl"] == math.inf and agg["worst_logppl"] == 800.0


STEPS = [10, 20, 30, 40, 50]
VALUES = [5.0, 4.0, 3.0, 2.5, 2.5]


def test_steps_to_target_first_step_at_or_below() -> None:
    assert steps_to_target(STEPS, VALUES, 3.0) == 30  # hit exactly
    assert steps_to_target(STEPS, VALUES, 3.5) == 30  # no interpolation between 20 and 30
    assert steps_to_target(STEPS, VALUES, 2.5) == 40  # first of equal values
    assert steps_to_target(STEPS, VALUES, 9.0) == 10
    assert steps_to_target(STEPS, VALUES, 2.0) is None  # not reached


def test_steps_to_target_skips_nan_and_checks_steps() -> None:
    assert steps_to_target([1, 2, 3], [float("nan"), 4.0, 1.0], 2.0) == 3
    with pytest.raises(ValueError, match="strictly increasing"):
        steps_to_target([1, 3, 2], [1.0, 1.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="numbers of steps and values"):
        steps_to_target([1, 2], [1.0], 1.0)


def test_baseline_target_and_speedups() -> None:
    s_b, m_star = baseline_target(STEPS, VALUES)
    assert (s_b, m_star) == (40, 2.5)  # the first step reaching the best value
    method = [4.5, 3.0, 2.5, 2.2, 2.1]
    s_star = steps_to_target(STEPS, method, m_star)
    assert s_star == 30
    assert percent_fewer_steps(s_star, s_b) == pytest.approx(25.0)
    assert times_faster(s_star, s_b) == pytest.approx(4 / 3)
    # The AC-ODM figure's "71% faster": 1 - 12118/41667.
    assert percent_fewer_steps(12_118, 41_667) == pytest.approx(70.92, abs=0.01)
    assert percent_fewer_steps(None, s_b) is None
    assert times_faster(None, s_b) is None


def test_area_under_curve_is_time_averaged() -> None:
    # Trapezoids: 10 * (4 + 2) / 2 + 10 * (2 + 2) / 2 = 50 over a span of 20.
    assert area_under_curve([0, 10, 20], [4.0, 2.0, 2.0]) == pytest.approx(2.5)
    # Uneven spacing weighs each segment by its length.
    assert area_under_curve([0, 30, 40], [1.0, 1.0, 3.0]) == pytest.approx((30 + 20) / 40)
    assert area_under_curve([5, 9, 100], [3.0, 3.0, 3.0]) == pytest.approx(3.0)
    assert area_under_curve([7], [1.5]) == 1.5
