import logging

import numpy as np
import pytest

from mixlab.errors import ConfigError
from mixlab.mixing.budget import epochs, weight_caps
from mixlab.search.propose import default_swarm_size, propose_mixtures


def pairwise_l1(w: np.ndarray) -> np.ndarray:
    d = np.abs(w[:, None, :] - w[None, :, :]).sum(axis=2)
    return d[np.triu_indices(len(w), k=1)]


def test_default_swarm_size_is_three_per_domain():
    assert default_swarm_size(8) == 24


def test_prior_corners_then_draws_on_the_simplex():
    prior = [0.5, 0.3, 0.2]
    p = propose_mixtures(prior, 9, seed=1, domains=("web", "code", "math"))
    assert p.labels[:4] == ("prior", "corner/web", "corner/code", "corner/math")
    assert p.labels[4:] == tuple(f"dirichlet/{i}" for i in range(9))
    np.testing.assert_allclose(p.weights[0], prior)
    np.testing.assert_allclose(p.weights[1:4], np.eye(3))  # no caps: the corners are vertices
    np.testing.assert_allclose(p.weights.sum(axis=1), 1.0, atol=1e-12)
    assert (p.weights >= 0).all() and len(p) == 13
    assert pairwise_l1(p.weights).min() >= 0.01


def test_same_seed_same_swarm_other_seed_other_swarm():
    a = propose_mixtures([0.25] * 4, 12, seed=7).weights
    b = propose_mixtures([0.25] * 4, 12, seed=7).weights
    c = propose_mixtures([0.25] * 4, 12, seed=8).weights
    np.testing.assert_array_equal(a, b)
    assert np.abs(a[5:] - c[5:]).sum() > 1.0


def test_dirichlet_centres_on_the_prior_and_concentration_narrows_it():
    prior = np.array([0.6, 0.3, 0.1])
    kw = dict(include_prior=False, include_corners=False, min_l1=0.0)
    wide = propose_mixtures(prior, 3000, concentration=1.0, seed=0, **kw).weights
    narrow = propose_mixtures(prior, 3000, concentration=20.0, seed=0, **kw).weights
    np.testing.assert_allclose(wide.mean(axis=0), prior, atol=0.02)
    # alpha = c K p0: Var[w_d] = p0_d (1 - p0_d) / (c K + 1)
    np.testing.assert_allclose(wide.var(axis=0), prior * (1 - prior) / 4, rtol=0.15)
    np.testing.assert_allclose(narrow.var(axis=0), prior * (1 - prior) / 61, rtol=0.15)


def test_every_proposal_respects_the_epoch_caps_and_corners_reach_them():
    n_tokens = np.array([100.0, 1_000.0, 10_000.0, 50_000.0])
    budget, max_epochs = 20_000.0, 2.0
    caps = weight_caps(max_epochs, budget, n_tokens)  # (0.01, 0.1, 1, 5)
    p = propose_mixtures([0.25] * 4, 30, seed=3, caps=caps)
    for w in p.weights:
        assert (epochs(w, budget, n_tokens) <= max_epochs * (1 + 1e-9)).all()
    np.testing.assert_allclose(p.weights[0], [0.01, 0.1, 0.445, 0.445])  # the capped prior
    # The corners of the two capped domains are the capped prior again: deduplicated.
    assert p.labels[1:3] == ("corner/2", "corner/3")
    np.testing.assert_allclose(p.weights[1:3], [[0, 0, 1, 0], [0, 0, 0, 1]], atol=1e-15)
    # A corner pushes its domain to its cap (0.6) and shares the rest by the prior.
    q = propose_mixtures([0.1, 0.2, 0.7], 0, caps=[1.0, 0.6, 0.5], domains=("a", "b", "c"))
    np.testing.assert_allclose(q.weights[q.labels.index("corner/b")], [0.05, 0.6, 0.35])
    assert len(p) == 33


def test_domains_outside_the_prior_stay_at_zero():
    p = propose_mixtures([0.5, 0.0, 0.5], 10, seed=0)
    assert (p.weights[:, 1] == 0).all()
    assert "corner/1" not in p.labels


def test_tight_caps_give_fewer_draws_with_a_warning(caplog):
    # caps sum to 1: a single feasible mixture, every draw collapses onto it.
    with caplog.at_level(logging.WARNING, logger="mixlab.search.propose"):
        p = propose_mixtures([0.5, 0.5], 5, seed=0, caps=[0.3, 0.7])
    assert len(p) == 1 and "only 0 of 5" in caplog.text
    np.testing.assert_allclose(p.weights[0], [0.3, 0.7])


def test_bad_knobs_are_config_errors():
    with pytest.raises(ConfigError, match="concentration"):
        propose_mixtures([0.5, 0.5], 3, concentration=0.0)
    with pytest.raises(ConfigError, match=r"sum to 0\.9"):
        propose_mixtures([0.5, 0.4], 3)
    with pytest.raises(ConfigError, match=r"caps sum to 0\.5"):
        propose_mixtures([0.5, 0.5], 3, caps=[0.25, 0.25])
