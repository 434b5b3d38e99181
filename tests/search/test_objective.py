import numpy as np
import pytest

from mixlab.errors import ConfigError
from mixlab.search.objective import make_objective

LOSSES = np.array([[1.0, 2.0, 4.0], [3.0, 3.0, 0.0]])


def test_mean_worst_weighted_natural_scores():
    np.testing.assert_allclose(make_objective("mean", 3)(LOSSES), [7 / 3, 2.0])
    np.testing.assert_allclose(make_objective("worst", 3)(LOSSES), [4.0, 3.0])
    weighted = make_objective("weighted", 3, weights=[2, 0, 2])  # normalised to (0.5, 0, 0.5)
    np.testing.assert_allclose(weighted(LOSSES), [2.5, 1.5])
    natural = make_objective("natural", 3, domain_tokens=[100, 300, 0])
    np.testing.assert_allclose(natural(LOSSES), [1.75, 3.0])
    assert make_objective("worst", 3).domain_weights is None
    assert make_objective("mean", 3).is_linear


def test_objective_errors_name_what_is_missing():
    with pytest.raises(ConfigError, match="choose one of mean, worst, weighted, natural"):
        make_objective("median", 3)
    with pytest.raises(ConfigError, match="needs one weight per evaluation domain"):
        make_objective("weighted", 3)
    with pytest.raises(ConfigError, match="training tokens"):
        make_objective("natural", 3)
    with pytest.raises(ConfigError, match="2 values for 3 domains"):
        make_objective("weighted", 3, weights=[1, 1])
    with pytest.raises(ConfigError, match="losses for 2 domains, expected 3"):
        make_objective("mean", 3)(np.ones((4, 2)))
