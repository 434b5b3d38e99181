"""Mean ± spread over seeds, paired differences with a 95% t interval, the t table."""

from __future__ import annotations

import math

import pytest

from mixlab.report.stats import fmt, json_float, paired_difference, spread, t_quantile_975


def test_t_quantile_matches_known_values() -> None:
    assert t_quantile_975(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile_975(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile_975(30) == pytest.approx(2.042, abs=1e-3)
    assert t_quantile_975(60) == pytest.approx(2.000, abs=1e-3)  # beyond the table
    assert t_quantile_975(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_t_quantile_agrees_with_scipy_when_installed() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 3, 7, 29, 31, 45, 200):
        assert t_quantile_975(df) == pytest.approx(float(stats.t.ppf(0.975, df)), abs=1e-3)


def test_spread_is_mean_and_sample_std() -> None:
    s = spread([1.0, 2.0, 3.0])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)
    assert s.format(2) == "2.00 ± 1.00"
    one = spread([4.0, None])
    assert (one.mean, one.std, one.n) == (4.0, None, 1) and one.format(1) == "4.0"
    assert spread([]).format() == "-" and spread([]).to_dict()["mean"] is None


def test_spread_keeps_a_diverged_seed_visible() -> None:
    s = spread([2.0, math.inf])
    assert s.mean == math.inf and s.format().startswith("inf")
    assert s.to_dict()["mean"] is None  # JSON has no inf


def test_paired_difference_known_numbers() -> None:
    # diffs -1, -2, -3: mean -2, s = 1, half-width = t(0.975, 2) / sqrt(3)
    d = paired_difference({0: 9.0, 1: 8.0, 2: 7.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert d.mean == pytest.approx(-2.0)
    assert d.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-4)
    assert (d.wins, d.n) == (3, 3)
    assert d.format(2) == "-2.00 ± 2.48"


def test_paired_difference_uses_shared_seeds_and_counts_ties_as_no_win() -> None:
    d = paired_difference({0: 10.0, 1: 9.0, 5: 1.0}, {0: 10.0, 1: 10.0, 2: 3.0})
    assert d.seeds == (0, 1) and d.diffs == (0.0, -1.0)
    assert (d.wins, d.n) == (1, 2)
    single = paired_difference({0: 9.0}, {0: 10.0})
    assert single.mean == -1.0 and single.half_width is None and single.format(1) == "-1.0"
    assert paired_difference({1: 1.0}, {0: 1.0}).format() == "-"


def test_number_formatting_and_json_safety() -> None:
    assert fmt(None) == "-" and fmt(math.nan) == "nan" and fmt(-math.inf) == "-inf"
    assert fmt(1.5, 1, signed=True) == "+1.5"
    assert json_float(math.nan) is None and json_float(2) == 2.0
