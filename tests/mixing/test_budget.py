import numpy as np
import pytest

from mixlab.errors import ConfigError, DataError
from mixlab.mixing.budget import epochs, natural_weights


def test_epochs_are_served_tokens_over_domain_tokens():
    e = epochs([0.5, 0.25, 0.25], 1000, [100, 1000, 50])
    np.testing.assert_allclose(e, [5.0, 0.25, 5.0])


def test_zero_weight_is_zero_epochs_and_weighted_empty_domain_is_infinite():
    e = epochs([0.0, 1.0, 0.0], 10, [0, 0, 5])
    assert e[0] == 0.0 and np.isinf(e[1]) and e[2] == 0.0


def test_shape_mismatch_and_bad_budget_are_errors():
    with pytest.raises(ConfigError, match="2 weights for 3 domains"):
        epochs([0.5, 0.5], 10, [1, 2, 3])
    with pytest.raises(ConfigError, match="budget"):
        epochs([1.0], float("nan"), [1])


def test_natural_weights_are_token_shares():
    w = natural_weights(np.array([100, 300, 600], dtype=np.int64))
    assert w.dtype == np.float64 and w.tolist() == [0.1, 0.3, 0.6]
    assert natural_weights([0, 5]).tolist() == [0.0, 1.0]  # an empty domain gets no weight


@pytest.mark.parametrize("tokens", [[0, 0], [], [1, -1, 2], [1, float("nan")], [[1, 2]]])
def test_natural_weights_need_a_positive_total(tokens):
    with pytest.raises(DataError, match="positive total"):
        natural_weights(tokens)
