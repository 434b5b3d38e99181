"""The policy seam: weight validation, name->weight mappings, the registry, Feedback."""

from __future__ import annotations

import numpy as np
import pytest

from mixlab.errors import ConfigError
from mixlab.mixing import base
from mixlab.mixing.base import (
    Feedback,
    MixingPolicy,
    PolicyContext,
    available_policies,
    register_policy,
    validate_weights,
    weights_from_mapping,
)
from mixlab.mixing.static import StaticPolicy
from tests.helpers import build

DOMAINS = ("code", "news", "web")


def test_validate_weights_accepts_a_mixture_and_returns_float64() -> None:
    w = validate_weights([0.25, 0.25, 0.5], DOMAINS)
    assert w.dtype == np.float64 and w.tolist() == [0.25, 0.25, 0.5]
    validate_weights([0.5, 0.5 + 9e-7, 0.0], DOMAINS)  # inside the 1e-6 tolerance


@pytest.mark.parametrize(
    ("weights", "pattern"),
    [
        ([0.5, float("nan"), 0.5], r"'news' is nan, not a finite number"),
        ([float("inf"), 0.0, 0.0], r"'code' is inf, not a finite number"),
        ([0.6, 0.6, -0.2], r"'web' is negative \(-0.2\)"),
        ([0.5, 0.5, 2e-6], r"sum to 1\.000002, not 1"),
        ([0.5, 0.5], r"expected 3 weights, got shape \(2,\)"),
        ([[0.5, 0.5, 0.0]], r"expected 3 weights, got shape \(1, 3\)"),
    ],
)
def test_validate_weights_errors_name_domain_and_value(weights: list, pattern: str) -> None:
    with pytest.raises(ConfigError, match=r"^my weights: .*" + pattern):
        validate_weights(weights, DOMAINS, where="my weights")


def test_weights_from_mapping_orders_by_domain() -> None:
    w = weights_from_mapping({"web": 0.5, "code": 0.2, "news": 0.3}, DOMAINS)
    assert w.tolist() == [0.2, 0.3, 0.5]


def test_weights_from_mapping_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown domain\(s\) 'wiki'; the store has code, news"):
        weights_from_mapping({"code": 0.5, "news": 0.5, "web": 0.0, "wiki": 0.0}, DOMAINS)
    with pytest.raises(ConfigError, match=r"no weight for domain\(s\) 'web'.*use 0 to exclude"):
        weights_from_mapping({"code": 0.5, "news": 0.5}, DOMAINS)
    with pytest.raises(ConfigError, match=r"weight of domain 'news' is 'lots', not a number"):
        weights_from_mapping({"code": 0.5, "news": "lots", "web": 0.5}, DOMAINS)
    with pytest.raises(ConfigError, match=r"'code' is negative"):
        weights_from_mapping({"code": -0.5, "news": 1.0, "web": 0.5}, DOMAINS)


def test_unknown_policy_lists_valid_names() -> None:
    ctx = PolicyContext(DOMAINS, np.array([1, 1, 2]))
    with pytest.raises(
        ConfigError, match=r"mixing.name: unknown policy 'odmm'; choose one of "
    ) as e:
        build("odmm", ctx)
    for name in ("fixed", "natural", "temperature", "uniform"):
        assert name in str(e.value)
    assert {"fixed", "natural", "temperature", "uniform"} <= set(available_policies())


def test_registry_rejects_duplicates_and_checks_initial_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    with pytest.raises(ValueError, match="'uniform' registered twice"):
        register_policy("uniform")(lambda ctx, cfg: StaticPolicy(ctx.domains, np.ones(3) / 3))

    class Broken(StaticPolicy):
        def weights(self) -> np.ndarray:
            return np.array([0.5, 0.5, 0.5])

    register_policy("broken")(lambda ctx, cfg: Broken(ctx.domains, np.ones(3) / 3))
    ctx = PolicyContext(DOMAINS, np.array([1, 1, 2]))
    with pytest.raises(
        ConfigError, match=r"initial weights of policy 'broken': weights sum to 1.5"
    ):
        build("broken", ctx)
    assert "broken" in available_policies()


def test_feedback_mean_loss_marks_absent_domains_nan() -> None:
    fb = Feedback(
        step=3,
        total_steps=10,
        loss_sum=np.array([6.0, 0.0, 4.5]),
        token_count=np.array([3, 0, 9]),
        microbatch_count=np.array([1, 0, 2]),
    )
    mean = fb.mean_loss()
    assert mean[0] == 2.0 and mean[2] == 0.5 and np.isnan(mean[1])
    assert fb.present.tolist() == [True, False, True]


def test_natural_weights_and_protocol() -> None:
    ctx = PolicyContext(DOMAINS, np.array([100, 300, 600]))
    np.testing.assert_allclose(ctx.natural_weights, [0.1, 0.3, 0.6])
    assert isinstance(StaticPolicy(DOMAINS, ctx.natural_weights), MixingPolicy)
