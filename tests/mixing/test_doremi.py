"""DoReMi's Group-DRO update (METHODS.md §3): hand-computed values, invariants, absent
domains, lambda_0, non-finite excess, state round trip, and the doremi-online policy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixlab.errors import ConfigError, ResumeError
from mixlab.mixing.base import (
    Feedback,
    MixingPolicy,
    PolicyContext,
    available_policies,
)
from mixlab.mixing.doremi import DoremiOnlinePolicy, DoremiSection, GroupDRO, group_dro
from tests.helpers import build

TWO = ("a", "b")


def lam_sums(lam: list[float], tokens: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Excess sums and counts whose per-domain mean is ``lam``."""
    count = np.full(len(lam), tokens)
    return np.array(lam) * tokens, count


def test_hand_example() -> None:
    # u = (.5, .5), lambda = (0.2, 0), eta = 1, c = 1e-3:
    # softmax(log u + lambda) = (e^.2, 1) / (e^.2 + 1) = (0.549834, 0.450166), then
    # (1 - c) * that + c / 2 = (0.549784, 0.450216).
    dro = GroupDRO(TWO, eta=1.0, smoothing=1e-3)
    alpha = dro.update(*lam_sums([0.2, 0.0]))
    np.testing.assert_allclose(alpha, [0.549784, 0.450216], atol=5e-7)
    p = math.exp(0.2) / (math.exp(0.2) + 1)
    assert alpha[0] == pytest.approx(0.999 * p + 0.0005, abs=1e-15)
    np.testing.assert_allclose(dro.lam, [0.2, 0.0])
    # After one step the running average includes alpha_0 = u.
    np.testing.assert_allclose(dro.avg_alpha, (np.array([0.5, 0.5]) + alpha) / 2, atol=1e-15)


def test_second_step_by_hand() -> None:
    dro = GroupDRO(TWO, eta=0.5, smoothing=0.0)
    a1 = dro.update(*lam_sums([0.2, 0.0]))
    a2 = dro.update(*lam_sums([0.0, 1.0]))
    logits = np.log(a1) + 0.5 * np.array([0.0, 1.0])
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(a2, expected, rtol=1e-12)
    # avg_2 = (2 * avg_1 + alpha_2) / 3 with avg_1 = (u + alpha_1) / 2, i.e. the plain mean.
    np.testing.assert_allclose(dro.avg_alpha, (np.full(2, 0.5) + a1 + a2) / 3, rtol=1e-12)


def test_eta_zero_keeps_uniform() -> None:
    dro = GroupDRO(("a", "b", "c"), eta=0.0, smoothing=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        dro.update(rng.random(3) * 50, rng.integers(1, 30, 3))
        np.testing.assert_allclose(dro.alpha, np.full(3, 1 / 3), atol=1e-15)
        np.testing.assert_allclose(dro.avg_alpha, np.full(3, 1 / 3), atol=1e-15)


def test_floor_and_simplex_under_extreme_excess() -> None:
    k, c = 5, 1e-3
    dro = GroupDRO(tuple("abcde"), eta=1.0, smoothing=c)
    for _ in range(50):
        dro.update(np.array([500.0, 0, 0, 0, 0]), np.ones(k))  # domain a: excess 500 per token
        assert np.all(dro.alpha >= c / k - 1e-15)
        assert abs(dro.alpha.sum() - 1) < 1e-12 and np.all(np.isfinite(dro.alpha))
    assert dro.alpha[0] == pytest.approx(1 - c + c / k)


def test_largest_excess_gains_most_weight() -> None:
    dro = GroupDRO(("a", "b", "c"), eta=1.0)
    before = dro.alpha.copy()
    dro.update(*lam_sums([0.1, 0.9, 0.4]))
    gain = dro.alpha - before
    assert np.argmax(gain) == 1 and gain[1] > 0 and gain[0] < 0


def test_absent_domain_keeps_previous_lambda() -> None:
    dro = GroupDRO(("a", "b", "c"), eta=1.0, smoothing=0.0)
    dro.update(*lam_sums([0.3, 0.6, 0.1]))
    alpha_1 = dro.alpha.copy()
    # Domain b is absent (0 tokens): its stale lambda 0.6 is applied again.
    dro.update(np.array([4.0, 0.0, 2.0]), np.array([10, 0, 10]))
    np.testing.assert_allclose(dro.lam, [0.4, 0.6, 0.2])
    logits = np.log(alpha_1) + np.array([0.4, 0.6, 0.2])
    np.testing.assert_allclose(dro.alpha, np.exp(logits) / np.exp(logits).sum(), rtol=1e-12)


def test_lambda_init_applies_to_domains_missing_at_the_start() -> None:
    zero = GroupDRO(TWO, smoothing=0.0)
    release = GroupDRO(TWO, smoothing=0.0, lambda_init=math.log(512))
    for dro in (zero, release):
        dro.update(np.array([1.0, 0.0]), np.array([10, 0]))  # b missing at step 1
    assert zero.alpha[0] > 0.5  # a's excess 0.1 beats b's lambda_0 = 0
    assert release.alpha[1] > 0.99  # b's lambda_0 = ln V = 6.2 grabs the weight (release quirk)


def test_non_finite_excess_keeps_previous_lambda(caplog: pytest.LogCaptureFixture) -> None:
    dro = GroupDRO(TWO)
    dro.update(*lam_sums([0.2, 0.1]))
    dro.update(np.array([np.nan, 3.0]), np.array([10, 10]))
    np.testing.assert_allclose(dro.lam, [0.2, 0.3])
    assert np.all(np.isfinite(dro.alpha)) and dro.skipped_nonfinite == 1
    assert "non-finite excess" in caplog.text


def test_state_dict_round_trip_is_bit_identical() -> None:
    rng = np.random.default_rng(1)
    feed = [(rng.random(4) * 30, rng.integers(0, 20, 4)) for _ in range(30)]
    a = GroupDRO(tuple("wxyz"), eta=0.7, smoothing=2e-3)
    for excess, count in feed[:10]:
        a.update(excess, count)
    b = GroupDRO(tuple("wxyz"), eta=0.7, smoothing=2e-3)
    b.load_state_dict(a.state_dict())
    for excess, count in feed[10:]:
        assert np.array_equal(a.update(excess, count), b.update(excess, count))
        assert np.array_equal(a.avg_alpha, b.avg_alpha) and np.array_equal(a.lam, b.lam)
    with pytest.raises(ResumeError, match="domains"):
        GroupDRO(("w", "x")).load_state_dict(a.state_dict())
    with pytest.raises(ResumeError, match="eta"):
        GroupDRO(tuple("wxyz"), eta=1.0, smoothing=2e-3).load_state_dict(a.state_dict())


def test_update_checks_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2,\)"):
        GroupDRO(TWO).update(np.zeros(3), np.zeros(3))


# ------------------------------------------------------------------ doremi-online policy
def online(reference: str | None = "runs/ref", **doremi: object) -> MixingPolicy:
    ctx = PolicyContext(("a", "b", "c"), np.array([10, 20, 70]), 0, 100)
    return build("doremi-online", ctx, doremi={"reference": reference, **doremi})


def fb(step: int, excess_mean: list[float], tokens: int = 8) -> Feedback:
    tok = np.full(len(excess_mean), tokens)
    return Feedback(
        step,
        100,
        np.ones(3),
        tok,
        np.ones(3, dtype=np.int64),
        excess_sum=np.array(excess_mean) * tokens,
    )


def test_online_policy_samples_from_alpha() -> None:
    assert "doremi-online" in available_policies()
    policy = online(eta=1.0, smoothing=1e-3)
    assert isinstance(policy, DoremiOnlinePolicy)
    assert policy.needs.reference == "runs/ref"
    np.testing.assert_allclose(policy.weights(), np.full(3, 1 / 3))  # alpha_0 = u
    policy.update(fb(1, [0.0, 1.0, 0.0]))
    w = policy.weights()
    assert np.argmax(w) == 1 and abs(w.sum() - 1) < 1e-12
    logs = policy.log_values()
    assert logs["doremi/lambda/b"] == 1.0 and logs["doremi/alpha/b"] == w[1]
    assert logs["doremi/avg_alpha/b"] == pytest.approx((1 / 3 + w[1]) / 2)
    fresh = online(eta=1.0, smoothing=1e-3)
    fresh.load_state_dict(policy.state_dict())
    for t in range(2, 6):
        policy.update(fb(t, [0.3 * t, 0.1, 0.0]))
        fresh.update(fb(t, [0.3 * t, 0.1, 0.0]))
        assert np.array_equal(policy.weights(), fresh.weights())


def test_online_policy_errors() -> None:
    with pytest.raises(ConfigError, match=r"mixing\.doremi\.reference"):
        online(reference=None)
    with pytest.raises(ConfigError, match=r"mixing\.doremi\.eta"):
        online(eta=-1.0)
    with pytest.raises(ConfigError, match=r"mixing\.doremi\.smoothing"):
        online(smoothing=2.0)
    with pytest.raises(ConfigError, match=r"mixing\.doremi: unknown field\(s\) lambda_init"):
        online(lambda_init="log_vocab")  # the proxy's option (mixing.name=doremi) only
    with pytest.raises(ConfigError, match="zero, log_vocab"):
        DoremiSection(lambda_init="ln")
    no_excess = Feedback(1, 100, np.ones(3), np.ones(3), np.ones(3, dtype=np.int64))
    with pytest.raises(ConfigError, match="excess"):
        online().update(no_excess)


def test_log_vocab_needs_the_vocabulary() -> None:
    dro = group_dro(TWO, DoremiSection(lambda_init="log_vocab"), vocab_size=512)
    np.testing.assert_allclose(dro.lam, [math.log(512)] * 2)
