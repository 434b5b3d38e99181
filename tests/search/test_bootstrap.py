import numpy as np
import pytest

from mixlab.errors import ConfigError
from mixlab.search.bootstrap import bootstrap
from mixlab.search.law import build_law
from mixlab.search.objective import make_objective
from tests.search.synthetic import swarm, true_law

PRIOR = np.full(3, 1 / 3)


def widths(n_runs: int) -> np.ndarray:
    truth = true_law(3, seed=2)
    x, y = swarm(truth, n_runs, noise=0.02, seed=n_runs)
    result = bootstrap(
        build_law("loglinear"),
        x,
        y,
        PRIOR,
        make_objective("mean", 3),
        PRIOR,
        n_resamples=20,
        reoptimize=False,
    )
    low, high = result.predicted_interval
    assert (low <= result.predicted.mean(axis=0)).all()
    assert (result.predicted.mean(axis=0) <= high).all()
    return high - low


def test_intervals_are_finite_ordered_and_shrink_with_more_runs():
    few, many = widths(12), widths(96)
    assert np.isfinite(few).all() and (few > 0).all()
    assert many.mean() < 0.6 * few.mean()


def test_reoptimised_optima_respect_caps_and_are_summarised():
    truth = true_law(3, seed=2)
    x, y = swarm(truth, 20, noise=0.01, seed=0)
    caps = np.array([0.5, 0.5, 0.25])
    obj = make_objective("worst", 3)
    result = bootstrap(
        build_law("linear"), x, y, [0.4, 0.4, 0.2], obj, PRIOR, n_resamples=10, caps=caps
    )
    assert result.optima is not None and result.optima.shape == (10, 3)
    assert (result.optima <= caps + 1e-12).all()
    np.testing.assert_allclose(result.objective, obj(result.predicted))
    lo, hi = result.objective_interval
    assert lo <= hi
    summary = result.summary(("a", "b", "c"), ("a", "b", "c"))
    assert summary["resamples"] == 10 and summary["failed"] == 0
    assert set(summary["weights"]) == {"a", "b", "c"}
    assert summary["optimum_l1_median"] >= 0


def test_same_seed_same_bootstrap():
    x, y = swarm(true_law(2), 10, seed=0)
    args = (build_law("linear"), x, y, [0.5, 0.5], make_objective("mean", 2), [0.5, 0.5])
    a = bootstrap(*args, n_resamples=5, seed=3)
    b = bootstrap(*args, n_resamples=5, seed=3)
    np.testing.assert_array_equal(a.predicted, b.predicted)


def test_bad_bootstrap_knobs():
    x, y = swarm(true_law(2), 10, seed=0)
    args = (build_law("linear"), x, y, [0.5, 0.5], make_objective("mean", 2), [0.5, 0.5])
    with pytest.raises(ConfigError, match="at least 2 resamples"):
        bootstrap(*args, n_resamples=1)
    with pytest.raises(ConfigError, match="level"):
        bootstrap(*args, level=1.0)
