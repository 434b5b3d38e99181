import numpy as np
import pytest

from mixlab.errors import ConfigError
from mixlab.search.law import FittedLinear, FittedLogLinear, build_law
from mixlab.search.objective import make_objective
from mixlab.search.optimize import kl_divergence, optimize_mixture
from tests.search.synthetic import swarm, true_law

# L_i(r) = k_i exp(-T r_i): on the simplex s_ij = log k_i - T delta_ij. For sum_i a_i L_i the
# KKT conditions a_i k_i T exp(-T r_i) = mu give r_i = 1/3 + (log(a_i k_i) - mean) / T.
K_I, T = np.array([1.0, 2.0, 4.0]), 4.0
LAW = FittedLogLinear(c=np.zeros(3), s=np.log(K_I)[:, None] * np.ones((3, 3)) - T * np.eye(3))
UNIFORM = np.full(3, 1 / 3)


def kkt(a: np.ndarray) -> np.ndarray:
    v = np.log(a * K_I)
    return 1 / 3 + (v - v.mean()) / T


def test_mean_objective_reaches_the_analytic_optimum():
    res = optimize_mixture(LAW, make_objective("mean", 3), UNIFORM)
    np.testing.assert_allclose(res.best.weights, kkt(np.ones(3)), atol=1e-6)
    assert res.method == "slsqp"
    np.testing.assert_allclose(res.best.predicted, LAW.predict(res.best.weights)[0])


def test_weighted_objective_reaches_the_analytic_optimum():
    a = np.array([0.5, 0.3, 0.2])
    res = optimize_mixture(LAW, make_objective("weighted", 3, weights=a), UNIFORM)
    np.testing.assert_allclose(res.best.weights, kkt(a), atol=1e-6)


def test_an_active_cap_moves_the_optimum_as_kkt_says():
    # r_2 <= 0.3 binds; the rest splits 0.7 with r_1 - r_0 = log 2 / T.
    res = optimize_mixture(LAW, make_objective("mean", 3), UNIFORM, caps=[1.0, 1.0, 0.3])
    r0 = (0.7 - np.log(2) / T) / 2
    np.testing.assert_allclose(res.best.weights, [r0, 0.7 - r0, 0.3], atol=1e-6)
    assert res.best.weights[2] <= 0.3


def test_worst_domain_objective_equalises_the_losses():
    # L_i = a_i - b_i r_i: the minimax point has a_i - b_i r_i = z for all i,
    # z = (sum a/b - 1) / sum 1/b = 2.18, r = (0.82, 0.16, 0.02).
    a, b = np.array([3.0, 2.5, 2.2]), np.array([1.0, 2.0, 1.0])
    law = FittedLinear(intercept=a, coef=np.diag(-b))
    res = optimize_mixture(law, make_objective("worst", 3), UNIFORM)
    np.testing.assert_allclose(res.best.weights, [0.82, 0.16, 0.02], atol=1e-6)
    assert res.best.objective == pytest.approx(2.18, abs=1e-6)


def test_huge_kl_weight_returns_the_prior():
    prior = np.array([0.2, 0.3, 0.5])
    res = optimize_mixture(LAW, make_objective("mean", 3), prior, kl_weight=1e6)
    np.testing.assert_allclose(res.best.weights, prior, atol=1e-5)
    assert res.best.penalised >= res.best.objective


def test_kl_keeps_domains_outside_the_prior_at_zero_and_interpolates():
    prior = np.array([0.5, 0.0, 0.5])
    res = optimize_mixture(LAW, make_objective("mean", 3), prior, kl_weight=0.1)
    assert res.best.weights[1] == 0.0
    free = optimize_mixture(LAW, make_objective("mean", 3), prior).best.weights
    assert free[1] > 0.2  # without the penalty the optimum uses the excluded domain
    assert kl_divergence(prior, prior) == pytest.approx(0.0)


def test_fitted_law_optimum_respects_epoch_caps_and_beats_the_swarm():
    truth = true_law(4, seed=3)
    x, y = swarm(truth, 30, seed=4)
    fitted = build_law("loglinear").fit(x, y)
    caps = np.array([0.1, 0.5, 0.5, 1.0])
    obj = make_objective("mean", 4)
    res = optimize_mixture(fitted, obj, np.full(4, 0.25), caps=caps, starts=x[:3], seed=1)
    for cand in (res.best, *res.runner_ups):
        assert (cand.weights <= caps + 1e-12).all() and (cand.weights >= 0).all()
        assert cand.weights.sum() == pytest.approx(1.0, abs=1e-12)
    feasible = x[(x <= caps).all(axis=1)]
    assert res.best.objective <= obj(fitted.predict(feasible)).min() + 1e-9


def test_runner_ups_are_distinct_and_ranked():
    # One basin at (0.5, 0.5); the runner-ups are the best candidates (optimised points and
    # starts) at least 0.5 (L1) from the best and from each other.
    law = FittedLogLinear(c=np.array([0.0, 0.0]), s=np.array([[3.0, -3.0], [-3.0, 3.0]]))
    res = optimize_mixture(
        law, make_objective("mean", 2), [0.5, 0.5], n_runner_ups=3, min_l1=0.5, seed=0
    )
    chosen = [res.best, *res.runner_ups]
    values = [c.penalised for c in chosen]
    assert values == sorted(values) and len(chosen) >= 2
    np.testing.assert_allclose(res.best.weights, [0.5, 0.5], atol=1e-6)
    for i in range(len(chosen)):
        for j in range(i):
            assert np.abs(chosen[i].weights - chosen[j].weights).sum() >= 0.5


class NoGradient:
    """A fitted law without a Jacobian (like gbm): optimised by random search."""

    n_domains = 3

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        return LAW.predict(mixtures)


def test_a_law_without_gradients_is_searched_by_sampling():
    res = optimize_mixture(NoGradient(), make_objective("mean", 3), UNIFORM, seed=0)
    assert res.method == "random-search"
    assert np.abs(res.best.weights - kkt(np.ones(3))).sum() < 0.03


def test_infeasible_caps_and_bad_knobs_are_config_errors():
    with pytest.raises(ConfigError, match=r"summing to 0\.6 < 1"):
        optimize_mixture(LAW, make_objective("mean", 3), UNIFORM, caps=[0.2, 0.2, 0.2])
    with pytest.raises(ConfigError, match="kl_weight"):
        optimize_mixture(LAW, make_objective("mean", 3), UNIFORM, kl_weight=-1.0)


@pytest.mark.parametrize("radius", [0.0, 0.005, 0.02])
def test_the_trust_region_bounds_the_kl_and_is_tight_when_it_binds(radius: float):
    far = kkt(np.ones(3))  # the unconstrained optimum, KL ~0.03 from uniform
    assert kl_divergence(far, UNIFORM) > radius
    res = optimize_mixture(LAW, make_objective("mean", 3), UNIFORM, max_kl=radius)
    kl = float(kl_divergence(res.best.weights, UNIFORM))
    assert kl <= radius + 1e-8 and kl == pytest.approx(radius, abs=2e-4)
    free = optimize_mixture(LAW, make_objective("mean", 3), UNIFORM)
    assert res.best.objective >= free.best.objective - 1e-12
    for c in res.runner_ups:
        assert kl_divergence(c.weights, UNIFORM) <= radius + 1e-8


def test_the_trust_region_also_holds_for_random_search():
    res = optimize_mixture(NoGradient(), make_objective("mean", 3), UNIFORM, max_kl=0.005)
    assert kl_divergence(res.best.weights, UNIFORM) <= 0.005 + 1e-8


def test_search_mixture_trust_region_comes_from_the_swarm():
    from mixlab.search.recommend import search_mixture, trust_radius

    x, y = swarm(true_law(5), n=30, noise=0.0, seed=1)
    prior = np.full(x.shape[1], 1 / x.shape[1])
    median = float(np.median(kl_divergence(x, prior)))
    assert trust_radius("median", x, prior) == pytest.approx(median)
    assert trust_radius(None, x, prior) is None and trust_radius(0.1, x, prior) == 0.1
    res = search_mixture(x, y, prior, n_bootstrap=0)
    assert res.max_kl == pytest.approx(median)
    assert kl_divergence(res.weights, prior) <= median + 1e-8
    assert res.to_dict(tuple("abcdefgh"[: x.shape[1]]), tuple("abcdefgh"[: y.shape[1]]))[
        "trust_region"
    ]["max_kl"] == pytest.approx(median)
    with pytest.raises(ConfigError, match="trust_region"):
        trust_radius("wide", x, prior)
