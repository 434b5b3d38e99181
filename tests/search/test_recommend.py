import json

import numpy as np

from mixlab.mixing.static import read_weights_file
from mixlab.search.objective import make_objective
from mixlab.search.optimize import optimize_mixture
from mixlab.search.propose import propose_mixtures
from mixlab.search.recommend import search_mixture
from tests.search.synthetic import true_law

DOMAINS = ("web", "code", "math")


class Truth:
    """The true law as a fitted law, to compute the true optimum."""

    def __init__(self, law):
        self.law, self.n_domains = law, 3

    def predict(self, mixtures):
        return self.law(mixtures)


def test_search_from_a_swarm_finds_the_true_optimum_and_writes_fixed_weights(tmp_path):
    truth = true_law(3, seed=5)
    prior = np.full(3, 1 / 3)
    caps = np.array([1.0, 0.6, 0.6])
    proposals = propose_mixtures(prior, 12, seed=0, caps=caps, domains=DOMAINS)
    rng = np.random.default_rng(1)
    losses = truth(proposals.weights) + rng.normal(0, 0.005, (len(proposals), 3))

    result = search_mixture(
        proposals.weights, losses, prior, caps=caps, n_bootstrap=10, eval_domains=DOMAINS
    )
    assert result.verdict.recommend, str(result.verdict)
    obj = make_objective("mean", 3)
    best_true = optimize_mixture(Truth(truth), obj, prior, caps=caps, n_random_starts=0)
    assert np.abs(result.weights - best_true.best.weights).sum() < 0.1
    # under the true law the chosen mixture is within 1e-3 nats of the optimum; the prior is
    # 9e-3 away
    assert obj(truth(result.weights))[0] - best_true.best.objective < 1e-3
    assert obj(truth(prior))[0] - best_true.best.objective > 5e-3
    assert (result.weights <= caps + 1e-12).all()

    out = result.to_dict(DOMAINS, DOMAINS)
    path = tmp_path / "search_weights.json"
    path.write_text(json.dumps(out, allow_nan=False))
    np.testing.assert_allclose(read_weights_file(path, DOMAINS), result.weights)
    assert out["recommended"] is True and out["fit"]["runs"] == len(proposals)
    assert set(out["uncertainty"]["predicted"]) == set(DOMAINS)
