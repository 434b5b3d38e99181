"""ODM policies (METHODS.md §1): eps schedule, both update rules by hand, warm-up,
update_every accumulation, non-finite losses, state round trip, config validation, registry."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence

import numpy as np
import pytest

from mixlab.errors import ConfigError, ResumeError
from mixlab.mixing.base import (
    Feedback,
    MixingPolicy,
    PolicyContext,
    available_policies,
)
from mixlab.mixing.odm import OdmPolicy, exploration_rate, resolve_warmup_steps
from tests.helpers import build

RULE_NAMES = ("odm", "odm-smoothed")


def make(
    name: str,
    k: int = 2,
    tokens: Sequence[int] | None = None,
    total_steps: int = 1000,
    update_every: int = 1,
    **odm: object,
) -> OdmPolicy:
    domains = tuple(f"d{i:02d}" for i in range(k))
    ctx = PolicyContext(
        domains, np.array(tokens if tokens is not None else [1] * k), 0, total_steps
    )
    policy = build(name, ctx, update_every=update_every, odm=odm)
    assert isinstance(policy, OdmPolicy)
    return policy


def fb(step: int, losses: Sequence[float | None], tokens: Sequence[int] | None = None) -> Feedback:
    """Feedback with token-mean loss ``losses[i]`` (None = domain absent) over ``tokens[i]``."""
    tok = np.array(tokens if tokens is not None else [4] * len(losses), dtype=np.int64)
    tok = np.where([x is None for x in losses], 0, tok)
    mean = np.array([0.0 if x is None else x for x in losses])
    return Feedback(step, 1000, mean * tok, tok, (tok > 0).astype(np.int64))


def eps(t: int, k: int) -> float:  # plain restatement of the schedule for hand computations
    return 1 / k if t == 0 else min(1 / k, math.sqrt(math.log(k) / (k * t)))


def test_eps_table_for_22_domains() -> None:
    table = {100: 0.03748, 417: 0.01836, 834: 0.01298, 2000: 0.00838, 10000: 0.00375}
    table[100000] = 0.00119
    for t, expected in table.items():
        assert round(exploration_rate(t, 22), 5) == expected, t
    assert exploration_rate(0, 22) == exploration_rate(68, 22) == 1 / 22  # 22 ln 22 = 68.003
    assert exploration_rate(69, 22) < 1 / 22
    assert exploration_rate(16, 8) == 1 / 8 and exploration_rate(17, 8) < 1 / 8
    assert exploration_rate(5000, 22, constant=0.01) == 0.01


@pytest.mark.parametrize("name", RULE_NAMES)
@pytest.mark.parametrize("k", [8, 49])
def test_exactly_uniform_while_t_at_most_k_ln_k(name: str, k: int) -> None:
    policy = make(name, k, tokens=range(1, k + 1), warmup_steps=2)
    losses = [1.0 + i / k for i in range(k)]  # constant over time, different per domain
    for t in range(1, math.floor(k * math.log(k)) + 2):
        policy.update(fb(t, losses))
        if 2 < t <= k * math.log(k):
            np.testing.assert_allclose(policy.weights(), 1 / k, rtol=0, atol=1e-15)
    assert np.abs(policy.weights() - 1 / k).max() > 1e-6  # first step past K ln K moves


@pytest.mark.parametrize("name", RULE_NAMES)
def test_weights_at_least_eps_finite_and_normalised(name: str) -> None:
    rng = np.random.default_rng(0)
    policy = make(name, 5, warmup_steps=3)
    for t in range(1, 301):
        losses = [None if rng.random() < 0.3 else float(rng.uniform(0.5, 8)) for _ in range(5)]
        policy.update(fb(t, losses))
        w = policy.weights()
        assert np.isfinite(w).all() and abs(w.sum() - 1) < 1e-12
        if t > 3:
            assert (w >= exploration_rate(t, 5)).all()


@pytest.mark.parametrize("name", RULE_NAMES)
def test_warmup_keeps_initial_weights(name: str) -> None:
    assert resolve_warmup_steps(-1, 100) == 20 and resolve_warmup_steps(-1, 2000) == 40
    assert resolve_warmup_steps(7, 2000) == 7
    policy = make(name, 3, tokens=[5, 3, 2], total_steps=2000)  # default warm-up: 40 steps
    for t in range(1, 41):
        policy.update(fb(t, [1.0, 5.0, 2.0]))
        assert np.array_equal(policy.weights(), [0.5, 0.3, 0.2])
    assert policy.log_values()["odm/updates"] == 0
    policy.update(fb(41, [1.0, 5.0, 2.0]))
    assert not np.array_equal(policy.weights(), [0.5, 0.3, 0.2])
    uniform = make(name, 4, tokens=[5, 3, 2, 1], warmup_steps=5, initial="uniform")
    assert np.array_equal(uniform.weights(), [0.25] * 4)


def test_smoothed_mean_hand_example() -> None:
    policy = make("odm-smoothed", 2, tokens=[3, 1], warmup_steps=9, alpha=0.5)
    policy.update(fb(10, [1.0, 2.0]))
    assert np.round(policy.weights(), 5).tolist() == [0.35497, 0.64503]
    e = math.sqrt(math.log(2) / 20)
    r = (0.5 * math.exp(1), 0.5 * math.exp(2))
    expected = [(1 - 2 * e) * x / sum(r) + e for x in r]
    np.testing.assert_allclose(policy.weights(), expected, rtol=1e-14)
    logs = policy.log_values()
    assert logs["odm/reward/d01"] == pytest.approx(r[1], rel=1e-15)
    assert logs["odm/last_reward/d00"] == pytest.approx(math.exp(1), rel=1e-15)
    assert logs["odm/eps"] == pytest.approx(e, rel=1e-15)


def test_smoothed_mean_unobserved_domain_gets_exactly_eps() -> None:
    policy = make("odm-smoothed", 3, warmup_steps=9)
    for t in (10, 11, 12):
        policy.update(fb(t, [1.0, 2.5, None]))
        assert policy.weights()[2] == exploration_rate(t, 3)
    assert policy.log_values()["odm/last_reward/d02"] == 0.0
    assert (
        policy.log_values()["odm/observed/d02"] == 0
        and policy.log_values()["odm/observed/d00"] == 3
    )


@pytest.mark.parametrize(
    ("accumulate", "temperature_eps", "scale"),
    [("ema", "schedule", 1.0), ("sum", "last_update", 0.1)],
)
def test_exp3_by_hand(accumulate: str, temperature_eps: str, scale: float) -> None:
    script = [(10, [2.0, 1.0]), (11, [1.5, 3.0]), (12, [None, 2.5])]
    policy = make(
        "odm", 2, tokens=[3, 1], warmup_steps=9, alpha=0.5, reward_scale=scale,
        accumulate=accumulate, temperature_eps=temperature_eps,
    )  # fmt: skip
    pi, est, last_eps = [0.75, 0.25], [0.0, 0.0], 0.5
    for t, losses in script:
        for i, loss in enumerate(losses):
            if loss is not None:
                r = scale * loss / pi[i]
                est[i] = est[i] + r if accumulate == "sum" else 0.5 * est[i] + 0.5 * r
        temp = eps(t - 1, 2) if temperature_eps == "schedule" else last_eps
        top = max(est)
        ex = [math.exp(temp * (x - top)) for x in est]
        pi = [(1 - 2 * eps(t, 2)) * x / sum(ex) + eps(t, 2) for x in ex]
        last_eps = eps(t, 2)
        policy.update(fb(t, losses))
        np.testing.assert_allclose(policy.weights(), pi, rtol=1e-13)
        np.testing.assert_allclose([policy.log_values()[f"odm/reward/d0{i}"] for i in (0, 1)], est)
    if accumulate == "ema":  # first update written out: r = (2/0.75, 1/0.25), R = r/2
        policy = make("odm", 2, tokens=[3, 1], warmup_steps=9, alpha=0.5)
        policy.update(fb(10, [2.0, 1.0]))
        soft0 = 1 / (1 + math.exp(math.sqrt(math.log(2) / 18) * (2.0 - 4 / 3)))
        e10 = math.sqrt(math.log(2) / 20)
        assert policy.weights()[0] == pytest.approx((1 - 2 * e10) * soft0 + e10, rel=1e-13)
        assert policy.weights()[0] == pytest.approx(0.47950, abs=5e-6)


@pytest.mark.parametrize(
    ("name", "accumulate"), [("odm", "ema"), ("odm", "sum"), ("odm-smoothed", "ema")]
)
def test_high_loss_domain_is_upweighted(name: str, accumulate: str) -> None:
    policy = make(name, 4, tokens=[4, 3, 2, 1], warmup_steps=10, accumulate=accumulate)
    trajectory = []
    for t in range(1, 201):
        policy.update(fb(t, [1.0, 1.0, 3.0, 1.0]))
        trajectory.append(policy.weights()[2])
    w = policy.weights()
    assert int(np.argmax(w)) == 2 and w[2] > 0.25
    if name == "odm-smoothed":  # normalised EMA of exp(loss) is fixed, eps shrinks: keeps rising
        assert np.all(np.diff(trajectory[10:]) >= 0) and trajectory[199] > trajectory[99] + 0.02


def _summed(t: int, steps: list[tuple[list[float | None], list[int]]]) -> Feedback:
    """One feedback holding the loss sums and token counts of several steps."""
    parts = [fb(t, losses, tokens) for losses, tokens in steps]
    loss, tok = sum(f.loss_sum for f in parts), sum(f.token_count for f in parts)
    return Feedback(t, 1000, loss, tok, (tok > 0).astype(np.int64))


@pytest.mark.parametrize("name", RULE_NAMES)
def test_update_every_accumulates_skipped_steps(name: str) -> None:
    script: dict[int, tuple[list[float | None], list[int]]] = {
        5: ([0.7, 4.0], [5, 1]),
        6: ([1.0, 2.0], [3, 5]),
        7: ([3.0, 0.5], [1, 2]),
        8: ([2.0, None], [4, 0]),
        9: ([1.5, 1.0], [2, 6]),
    }
    every = make(name, 2, tokens=[3, 1], warmup_steps=4, update_every=3, alpha=0.5)
    seen = {}
    for t in range(1, 10):
        losses, tokens = script.get(t, ([9.0, 9.0], [1, 1]))  # warm-up losses are never used
        every.update(fb(t, losses, tokens))
        seen[t] = every.weights()
    assert all(np.array_equal(seen[t], [0.75, 0.25]) for t in range(1, 6))  # no update yet
    assert np.array_equal(seen[7], seen[6]) and np.array_equal(seen[8], seen[6])
    assert not np.array_equal(seen[6], [0.75, 0.25])
    # Same as an every-step policy that sees steps 5+6 and 7+8+9 as single feedbacks.
    merged = make(name, 2, tokens=[3, 1], warmup_steps=4, alpha=0.5)
    merged.update(_summed(6, [script[5], script[6]]))
    assert np.array_equal(merged.weights(), seen[6])
    merged.update(_summed(9, [script[7], script[8], script[9]]))
    assert np.array_equal(merged.weights(), seen[9])
    if name == "odm-smoothed":  # by hand: token-mean losses of steps 5-6, then 7-9
        l6 = [(0.7 * 5 + 1.0 * 3) / 8, (4.0 * 1 + 2.0 * 5) / 6]
        l9 = [(3.0 * 1 + 2.0 * 4 + 1.5 * 2) / 7, (0.5 * 2 + 1.0 * 6) / 8]
        est = [0.25 * math.exp(a) + 0.5 * math.exp(b) for a, b in zip(l6, l9, strict=True)]
        expected = [(1 - 2 * eps(9, 2)) * x / sum(est) + eps(9, 2) for x in est]
        np.testing.assert_allclose(seen[9], expected, rtol=1e-13)
    else:  # exp3 by hand at t=6: pi_{t-1} is still the initial (0.75, 0.25)
        r = [(0.7 * 5 + 1.0 * 3) / 8 / 0.75, (4.0 * 1 + 2.0 * 5) / 6 / 0.25]
        ex = [math.exp(eps(5, 2) * 0.5 * x) for x in r]
        expected = [(1 - 2 * eps(6, 2)) * x / sum(ex) + eps(6, 2) for x in ex]
        np.testing.assert_allclose(seen[6], expected, rtol=1e-13)


@pytest.mark.parametrize("name", RULE_NAMES)
def test_nonfinite_loss_is_skipped_and_logged(name: str, caplog: pytest.LogCaptureFixture) -> None:
    policy = make(name, 3, warmup_steps=2)
    policy.update(fb(3, [1.0, 2.0, 3.0]))
    before = policy.log_values()
    bad = Feedback(4, 1000, np.array([4.0, np.nan, np.inf]), np.array([4, 4, 4]), np.ones(3))
    with caplog.at_level(logging.WARNING, logger="mixlab.mixing.odm"):
        policy.update(bad)
    assert len(caplog.records) == 1 and "step 4" in caplog.records[0].getMessage()
    logs = policy.log_values()
    assert logs["odm/skipped_nonfinite"] == 2
    for d in ("d01", "d02"):
        assert logs[f"odm/reward/{d}"] == before[f"odm/reward/{d}"]
        assert logs[f"odm/last_reward/{d}"] == 0.0
    assert logs["odm/reward/d00"] != before["odm/reward/d00"]
    for t in range(5, 30):
        policy.update(fb(t, [1.0, 2.0, 3.0]))
        assert np.isfinite(policy.weights()).all()
    assert int(np.argmax(policy.weights())) == 2


def _scripted(k: int, steps: range, seed: int) -> list[Feedback]:
    rng = np.random.default_rng(seed)
    out = []
    for t in steps:
        tok = rng.integers(0, 5, size=k)
        loss = rng.uniform(0.5, 6.0, size=k) * tok
        if t % 7 == 0:
            loss[rng.integers(k)] = np.nan
        out.append(Feedback(t, 1000, loss, tok, (tok > 0).astype(np.int64)))
    return out


@pytest.mark.parametrize("name", RULE_NAMES)
@pytest.mark.parametrize("options", [{}, {"accumulate": "sum", "temperature_eps": "last_update"}])
def test_state_dict_round_trip_is_bit_identical(name: str, options: dict[str, str]) -> None:
    policy = make(name, 4, tokens=[4, 3, 2, 1], warmup_steps=5, update_every=2, **options)
    for f in _scripted(4, range(1, 32), seed=1):  # ends at an odd step: accumulators non-empty
        policy.update(f)
    state = json.loads(json.dumps(policy.state_dict()))  # plain python content only
    fresh = make(name, 4, tokens=[1, 1, 1, 1], warmup_steps=5, update_every=2, **options)
    fresh.load_state_dict(state)
    assert np.array_equal(fresh.weights(), policy.weights())
    for f in _scripted(4, range(32, 82), seed=2):
        policy.update(f)
        fresh.update(f)
        assert np.array_equal(fresh.weights(), policy.weights())
    assert fresh.log_values() == policy.log_values()
    other = "odm-smoothed" if name == "odm" else "odm"
    with pytest.raises(ResumeError, match="rule"):
        make(other, 4).load_state_dict(state)
    with pytest.raises(ResumeError, match="domains"):
        make(name, 3).load_state_dict(state)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("alpha", 1.0), ("alpha", -0.1), ("alpha", float("nan")), ("alpha", "half"),
        ("warmup_steps", -2), ("warmup_steps", 2.5), ("warmup_steps", True),
        ("initial", "zipf"), ("reward_scale", 0.0), ("reward_scale", float("inf")),
        ("accumulate", "mean"), ("temperature_eps", "previous"),
        ("constant_eps", 0.0), ("constant_eps", 0.5),
    ],
)  # fmt: skip
def test_invalid_config_names_the_field(field: str, value: object) -> None:
    for name in RULE_NAMES:
        with pytest.raises(ConfigError, match=rf"mixing\.odm\.{field}"):
            make(name, 3, **{field: value})
    with pytest.raises(ConfigError, match=r"mixing\.update_every"):
        make("odm", 3, update_every=0)


def test_registry_and_real_config() -> None:
    assert {"odm", "odm-smoothed"} <= set(available_policies())
    ctx = PolicyContext(("a", "b", "c"), np.array([2, 1, 1]), seed=3, total_steps=100)
    for name, rule in (("odm", "exp3"), ("odm-smoothed", "smoothed_mean")):
        policy = build(name, ctx)
        assert isinstance(policy, MixingPolicy) and isinstance(policy, OdmPolicy)
        assert policy.rule == rule and policy.warmup_steps == 20 and policy.alpha == 0.9
        assert np.array_equal(policy.weights(), [0.5, 0.25, 0.25])
        assert {"odm/eps", "odm/reward/a", "odm/last_reward/c"} <= set(policy.log_values())


def test_exp3_ignores_an_arm_that_had_zero_probability() -> None:
    # A domain without training tokens has natural weight 0, so it cannot have been drawn; a
    # stray observation of it must not divide by pi = 0.
    policy = make("odm", 3, tokens=[2, 2, 0], warmup_steps=4)
    policy.update(fb(5, [1.0, 2.0, 3.0]))
    assert np.isfinite(policy.weights()).all()
    assert policy.log_values()["odm/reward/d02"] == 0.0
    assert policy.log_values()["odm/observed/d02"] == 0
