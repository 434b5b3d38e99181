import sys

import numpy as np
import pytest

from mixlab.errors import ConfigError, DataError
from mixlab.search.law import (
    DifferentiableLaw,
    FittedLogLinear,
    available_laws,
    build_law,
    check_swarm,
)
from tests.search.synthetic import swarm, true_law


def test_loglinear_recovers_a_noisy_ground_truth_law():
    truth = true_law(4, seed=0)
    x, y = swarm(truth, 40, noise=0.005, seed=1)
    fitted = build_law("loglinear").fit(x, y)
    fresh = np.random.default_rng(2).dirichlet(np.ones(4), size=200)
    assert np.abs(fitted.predict(fresh) - truth(fresh)).max() < 0.03
    # the paper's parametrisation is the same function on the simplex
    k_t = fitted.c + fitted.k * np.exp(fresh @ fitted.t.T)
    np.testing.assert_allclose(k_t, fitted.predict(fresh), rtol=1e-12)
    assert (fitted.c >= 0).all() and (fitted.k > 0).all()


def test_loglinear_is_robust_to_a_diverged_run():
    truth = true_law(3, seed=4)
    x, y = swarm(truth, 30, noise=0.005, seed=5)
    y[7] += 3.0  # one proxy run blew up
    fresh = np.random.default_rng(6).dirichlet(np.ones(3), size=200)
    robust = build_law("loglinear").fit(x, y)
    plain = build_law("loglinear", loss="linear").fit(x, y)
    err_robust = np.abs(robust.predict(fresh) - truth(fresh)).mean()
    err_plain = np.abs(plain.predict(fresh) - truth(fresh)).mean()
    assert err_robust < 0.03 < err_plain


def test_loglinear_jacobian_matches_finite_differences():
    fitted = FittedLogLinear(c=np.array([1.0, 2.0]), s=np.array([[0.5, -1.0, 2.0], [1, 0, -3]]))
    r, h = np.array([0.2, 0.3, 0.5]), 1e-6
    numeric = np.column_stack(
        [(fitted.predict(r + h * e) - fitted.predict(r - h * e))[0] / (2 * h) for e in np.eye(3)]
    )
    np.testing.assert_allclose(fitted.jacobian(r), numeric, rtol=1e-6)
    assert isinstance(fitted, DifferentiableLaw)


def test_loglinear_fits_fewer_runs_than_parameters_without_crashing():
    truth = true_law(4, seed=0)
    x, y = swarm(truth, 4, seed=3)  # 4 runs, 5 parameters per domain
    assert build_law("loglinear").fit(x, y).predict(x).shape == (4, 4)


def test_linear_recovers_an_exact_linear_law():
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(3), size=10)
    coef = np.array([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]])
    y = 2.0 + x @ coef
    fitted = build_law("linear").fit(x, y)
    fresh = rng.dirichlet(np.ones(3), size=5)
    np.testing.assert_allclose(fitted.predict(fresh), 2.0 + fresh @ coef, atol=1e-10)
    np.testing.assert_allclose(
        fitted.jacobian(fresh[0]) @ (fresh[1] - fresh[0]), (fresh[1] - fresh[0]) @ coef, atol=1e-10
    )


def test_gbm_fits_and_is_not_smooth():
    pytest.importorskip("lightgbm")
    truth = true_law(2, seed=0)
    x, y = swarm(truth, 40, seed=1)
    law = build_law("gbm")
    fitted = law.fit(x, y)
    assert not law.smooth and not isinstance(fitted, DifferentiableLaw)
    pred = fitted.predict(x)
    assert pred.shape == (40, 2)
    assert np.corrcoef(pred[:, 0], y[:, 0])[0, 1] > 0.8


def test_gbm_without_lightgbm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # import raises ImportError
    x, y = swarm(true_law(2), 5)
    with pytest.raises(ConfigError, match=r"pip install 'mixlab\[search-gbm\]'"):
        build_law("gbm").fit(x, y)


def test_registry_and_bad_options():
    assert available_laws() == ("loglinear", "linear", "gbm")
    with pytest.raises(ConfigError, match="choose one of loglinear, linear, gbm"):
        build_law("cubic")
    with pytest.raises(ConfigError, match="bad option"):
        build_law("linear", restarts=3)


def test_swarm_checks_name_the_bad_runs():
    x = np.array([[0.5, 0.5], [0.2, 0.8], [0.1, 0.8]])
    y = np.array([[1.0], [np.nan], [1.0]])
    with pytest.raises(DataError, match=r"runs \[1\] have non-finite losses"):
        check_swarm(x, y)
    with pytest.raises(DataError, match=r"runs \[2\] do not sum to 1"):
        check_swarm(x, np.ones((3, 1)))
    with pytest.raises(DataError, match="same number of runs"):
        check_swarm(x, np.ones((2, 1)))
    with pytest.raises(DataError, match="losses must be > 0"):
        build_law("loglinear").fit(x[:2], np.zeros((2, 1)))
