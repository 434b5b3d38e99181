import numpy as np
import pytest

from mixlab.errors import ConfigError
from mixlab.search.law import build_law
from mixlab.search.objective import make_objective
from mixlab.search.validate import cross_validate, r2_score, verdict
from tests.search.synthetic import swarm, true_law


def test_r2_score():
    assert r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert r2_score([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == 0.0
    assert np.isnan(r2_score([1.0, 1.0], [1.0, 2.0]))


def test_a_true_law_cross_validates_well_and_is_recommended():
    truth = true_law(3, seed=0)
    x, y = swarm(truth, 20, noise=0.005, seed=1)
    cv = cross_validate(build_law("loglinear"), x, y, make_objective("mean", 3))
    assert cv.folds == 20  # leave-one-out for a small swarm
    assert (cv.r2 > 0.95).all() and cv.objective_r2 > 0.9 and cv.spearman > 0.9
    # held-out predictions really are held out: they differ from the in-sample fit
    in_sample = build_law("loglinear").fit(x, y).predict(x)
    assert np.abs(cv.predicted - in_sample).max() > 1e-6
    v = verdict(cv, eval_domains=("a", "b", "c"))
    assert v.recommend and not v.reasons and not v.advice
    assert cv.summary(("a", "b", "c"))["r2"]["b"] == pytest.approx(cv.r2[1])


def test_pure_noise_is_refused_with_reasons_and_advice():
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(4), size=12)
    y = 3.0 + rng.normal(0, 0.05, size=(12, 2))  # the mixture does not matter at all
    cv = cross_validate(build_law("loglinear"), x, y, make_objective("mean", 2))
    v = verdict(cv)
    assert not v.recommend
    text = str(v)
    assert "not recommending" in text and "R^2 of the objective" in text
    assert any("more swarm runs: 12 runs for 5 law parameters" in a for a in v.advice)
    assert any("bigger proxy" in a for a in v.advice)
    assert any("law=linear" in a for a in v.advice)
    assert "warning: held-out R^2 below 0.0" in text


def test_spearman_threshold_alone_can_refuse():
    truth = true_law(3, seed=0)
    x, y = swarm(truth, 20, noise=0.005, seed=1)
    cv = cross_validate(build_law("linear"), x, y, make_objective("mean", 3), folds=5)
    assert cv.folds == 5
    v = verdict(cv, min_spearman=1.01, min_objective_r2=-np.inf)
    assert not v.recommend and len(v.reasons) == 1 and "Spearman" in v.reasons[0]
    assert any("law=loglinear" in a for a in v.advice)


def test_constant_objective_cannot_be_judged():
    x = np.random.default_rng(0).dirichlet(np.ones(2), size=6)
    cv = cross_validate(build_law("linear"), x, np.ones((6, 2)), make_objective("mean", 2))
    v = verdict(cv)
    assert not v.recommend and "does not vary" in v.reasons[0]


def test_folds_out_of_range_are_config_errors():
    x, y = swarm(true_law(2), 6)
    with pytest.raises(ConfigError, match="between 2 and the number of runs 6"):
        cross_validate(build_law("linear"), x, y, make_objective("mean", 2), folds=7)
