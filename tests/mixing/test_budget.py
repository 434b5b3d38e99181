import numpy as np
import pytest

from mixlab.errors import ConfigError, DataError
from mixlab.mixing.budget import (
    budget_summary,
    cap_weights,
    clip_to_caps,
    epochs,
    natural_weights,
    unimax_weights,
    weight_caps,
)


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


def test_weight_caps_are_epochs_times_tokens_over_budget_and_zero_without_data():
    u = weight_caps([2.0, np.inf, 3.0], 1000, [100, 50, 0])
    np.testing.assert_allclose(u, [0.2, np.inf, 0.0])


def test_cap_weights_clips_and_redistributes_proportionally():
    # N = (100, 1000, 10000), B = 1000, E = 1: caps (0.1, 1, 10).
    # Requested (0.4, 0.3, 0.3): domain 0 gives up 0.3, split 1:1 over the other two.
    w = cap_weights([0.4, 0.3, 0.3], 1.0, 1000, [100, 1000, 10000])
    np.testing.assert_allclose(w, [0.1, 0.45, 0.45], atol=1e-15)
    assert abs(w.sum() - 1) < 1e-12


def test_cap_weights_iterates_when_redistribution_overflows_another_domain():
    # caps (0.1, 0.3, inf); requested (0.5, 0.25, 0.25):
    # round 1: d0 -> 0.1, surplus 0.4 split 1:1 -> (0.1, 0.45, 0.45)
    # round 2: d1 -> 0.3, surplus 0.15 -> d2 = 0.6
    w = clip_to_caps([0.5, 0.25, 0.25], [0.1, 0.3, np.inf])
    np.testing.assert_allclose(w, [0.1, 0.3, 0.6], atol=1e-15)


def test_cap_weights_per_domain_caps_and_uncapped_domains_are_untouched():
    w = cap_weights([0.2, 0.3, 0.5], [1.0, np.inf, np.inf], 1000, [100, 10, 10])
    np.testing.assert_allclose(w, [0.1, 0.3 + 0.1 * 3 / 8, 0.5 + 0.1 * 5 / 8])
    same = cap_weights([0.2, 0.3, 0.5], np.inf, 1000, [100, 10, 10])
    np.testing.assert_allclose(same, [0.2, 0.3, 0.5])


def test_cap_weights_surplus_goes_uniformly_when_the_rest_has_zero_weight():
    # Everything on domain 0 (cap 0.4); domains 1, 2 have room but weight 0; 3 has no data.
    w = cap_weights([1.0, 0.0, 0.0, 0.0], 2.0, 1000, [200, 500, 500, 0])
    np.testing.assert_allclose(w, [0.4, 0.3, 0.3, 0.0], atol=1e-15)


def test_cap_weights_result_is_feasible_on_random_inputs():
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(2, 9))
        n = rng.integers(1, 10_000, size=k).astype(float)
        e = rng.uniform(0.1, 5.0, size=k)
        b = float((e * n).sum() * rng.uniform(0.1, 1.0))
        w = cap_weights(rng.dirichlet(np.full(k, 0.3)), e, b, n)
        assert abs(w.sum() - 1) < 1e-12 and (w >= 0).all()
        assert (epochs(w, b, n) <= e * (1 + 1e-9)).all()


def test_cap_weights_infeasible_says_by_how_much_and_what_to_do():
    with pytest.raises(
        ConfigError,
        match=r"at most 2200 tokens .* budget is 3000 tokens, 800 .*"
        r"short: raise max_epochs to at least 2\.727",
    ):
        cap_weights([0.5, 0.5], 2.0, 3000, [100, 1000])
    with pytest.raises(ConfigError, match="scale the per-domain max_epochs up"):
        cap_weights([0.5, 0.5], [1.0, 2.0], 3000, [100, 1000])
    with pytest.raises(ConfigError, match="2 values for 3 domains"):
        cap_weights([0.2, 0.3, 0.5], [1.0, 2.0], 3000, [100, 1000, 5])
    with pytest.raises(ConfigError, match=r"sum to 0\.9"):
        cap_weights([0.4, 0.5], 2.0, 100, [100, 1000])


def test_unimax_hand_computed():
    # shares: 3000/3 = 1000 > 2*100 -> 200; 2800/2 = 1400 < 2000 -> 1400; 1400 -> 1400.
    w = unimax_weights([100, 1000, 10000], 3000, 2.0)
    np.testing.assert_allclose(w * 3000, [200, 1400, 1400])
    # order follows size, not position
    w = unimax_weights([10000, 100, 1000], 3000, 2.0)
    np.testing.assert_allclose(w * 3000, [1400, 200, 1400])


def test_unimax_without_cap_is_uniform_and_empty_domains_get_zero():
    np.testing.assert_allclose(unimax_weights([5, 50, 500, 0], 10**6, np.inf), [1 / 3] * 3 + [0])


def test_unimax_per_domain_caps_visit_in_order_of_capacity():
    # N = (100, 200, 10000), E = (10, 0.5, 1), B = 3000: capacities 1000, 100, 10000.
    # visit d1 (100) -> 100; d0: min(2900/2, 1000) = 1000; d2 -> 1900.
    w = unimax_weights([100, 200, 10000], 3000, [10.0, 0.5, 1.0])
    np.testing.assert_allclose(w * 3000, [1000, 100, 1900])


def test_unimax_infeasible_is_a_config_error():
    with pytest.raises(ConfigError, match="short"):
        unimax_weights([100, 1000], 3000, 2.0)


def test_budget_summary_reports_requested_capped_achieved_and_epochs():
    s = budget_summary(
        ("a", "b"),
        [0.5, 0.5],
        budget_tokens=1000,
        domain_tokens=[100, 10_000],
        max_epochs=2.0,
        achieved=[0.25, 0.75],
    )
    assert s.capped_domains == ("a",)
    rows = s.per_domain()
    assert rows["a"] == {
        "requested": 0.5,
        "capped": 0.2,
        "epochs_requested": 5.0,
        "epochs_capped": 2.0,
        "max_epochs": 2.0,
        "achieved": 0.25,
        "epochs_achieved": 2.5,
    }
    assert rows["b"]["capped"] == pytest.approx(0.8)
    logged = s.log_values()
    assert logged["budget/capped/b"] == pytest.approx(0.8)
    assert logged["budget/epochs_capped/b"] == pytest.approx(0.08)
