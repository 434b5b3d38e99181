"""AC-ODM reward (METHODS.md §2.2): worked example, absent domains, z/clip3, weighting,
pre-clip, scale invariance, large P against a brute-force loop, reward-block selection."""

from __future__ import annotations

import numpy as np
import pytest

from mixlab.errors import ConfigError, ResumeError
from mixlab.mixing.acodm.reward import (
    alignment_reward,
    clip3,
    cosine_matrix,
    gram_matrix,
    select_reward_blocks,
    zscore,
)

EXAMPLE = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


def test_worked_example() -> None:
    reward, raw = alignment_reward(EXAMPLE, np.ones(3, dtype=bool))
    np.testing.assert_allclose(raw, [1.0, 1.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(reward, [0.57735, 0.57735, -1.15470], atol=1e-5)
    assert reward.dtype == np.float64


def test_gram_and_cosines() -> None:
    g = np.vstack([2.0 * EXAMPLE, [[0.0, 0.0]]])
    gram = gram_matrix(g, np.array([True, True, True, False]))
    assert gram[0, 1] == 4.0 and gram[3, 3] == 0.0
    cos = cosine_matrix(gram)
    np.testing.assert_allclose(cos[:3, :3], [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert np.array_equal(cos[3], np.zeros(4))  # zero norm: no cosine


def test_absent_domain_is_excluded_and_gets_zero() -> None:
    g = np.vstack([EXAMPLE, [[50.0, -7.0]]])
    reward, raw = alignment_reward(g, np.array([True, True, True, False]))
    np.testing.assert_allclose(reward[:3], [0.57735, 0.57735, -1.15470], atol=1e-5)
    # The absent row enters neither the Gram sums nor the mean norm.
    np.testing.assert_allclose(raw[:3], [1.0, 1.0, 0.0], atol=1e-5)
    assert reward[3] == 0.0 and raw[3] == 0.0


def test_single_present_domain_and_none_present_give_zeros() -> None:
    reward, raw = alignment_reward(EXAMPLE, np.array([False, True, False]))
    assert np.array_equal(reward, np.zeros(3)) and np.array_equal(raw, np.zeros(3))
    reward, raw = alignment_reward(EXAMPLE, np.zeros(3, dtype=bool))
    assert np.array_equal(reward, np.zeros(3))


def test_zscore_rules() -> None:
    assert np.array_equal(zscore(np.array([4.2])), [0.0])
    assert np.array_equal(zscore(np.full(5, 0.1)), np.zeros(5))  # zero spread
    x = np.array([1.0, 2.0, 6.0])
    expected = (x - 3.0) / (np.sqrt(((x - 3.0) ** 2).sum() / 2) + 1e-8)  # unbiased std
    np.testing.assert_allclose(zscore(x), expected, rtol=1e-12)


def test_reward_is_clipped_to_three() -> None:
    # Domain 0 overlaps a little with each of 19 orthogonal domains: r~_0 = 19 r~_k, so
    # z_0 = 19 / sqrt(20) ~ 4.25 before the clip.
    g = np.zeros((20, 20))
    g[1:, 1:] = np.eye(19)
    g[0, 1:] = 0.1
    reward, raw = alignment_reward(g, np.ones(20, dtype=bool))
    raw_z = zscore(raw)
    assert raw_z[0] > 4.0  # so the clip is really exercised
    assert reward[0] == 3.0 and np.abs(reward).max() <= 3.0
    np.testing.assert_allclose(reward, clip3(raw_z))


def test_scale_invariance_and_float32_input() -> None:
    rng = np.random.default_rng(0)
    g = rng.normal(size=(5, 64))
    r1, raw1 = alignment_reward(g, np.ones(5, dtype=bool))
    r2, raw2 = alignment_reward(7.0 * g.astype(np.float32), np.ones(5, dtype=bool))
    np.testing.assert_allclose(r1, r2, atol=1e-5)
    np.testing.assert_allclose(raw2, 7.0 * raw1, rtol=1e-4)  # r~ is in gradient-norm units


def test_mixture_weighting_matches_hand_computation() -> None:
    rng = np.random.default_rng(1)
    g = rng.normal(size=(4, 10))
    w = np.array([0.1, 0.2, 0.3, 0.4])
    _, raw = alignment_reward(g, np.ones(4, dtype=bool), weighting="mixture", weights=w)
    mean_norm = np.linalg.norm(g, axis=1).mean()
    for i in range(4):
        cross = sum(w[j] * g[i] @ g[j] for j in range(4) if j != i)
        assert raw[i] == pytest.approx(cross / (mean_norm + 1e-6), rel=1e-10)


def test_pre_clip_clamps_raw_before_z() -> None:
    g = np.array([[3000.0, 0.0], [1000.0, 0.0], [0.0, 10.0]])
    _, raw_free = alignment_reward(g, np.ones(3, dtype=bool))
    reward, raw = alignment_reward(g, np.ones(3, dtype=bool), pre_clip=999.0)
    assert raw_free[0] > 999 and raw_free[1] > 999
    np.testing.assert_allclose(raw, np.clip(raw_free, -999, 999))
    np.testing.assert_allclose(reward, clip3(zscore(np.clip(raw_free, -999, 999))))


def test_large_p_agrees_with_brute_force() -> None:
    rng = np.random.default_rng(2)
    g = rng.normal(size=(6, 200_000)).astype(np.float32)
    present = np.array([True, True, False, True, True, True])
    reward, raw = alignment_reward(g, present)
    rows = g[present].astype(np.float64)
    mean_norm = np.mean([np.linalg.norm(r) for r in rows])
    brute = np.array([sum(rows[i] @ rows[j] for j in range(5) if j != i) for i in range(5)]) / (
        mean_norm + 1e-6
    )
    np.testing.assert_allclose(raw[present], brute, rtol=1e-9)
    np.testing.assert_allclose(reward[present], clip3(zscore(brute)), atol=1e-9)


def test_bad_shapes_and_weighting_raise() -> None:
    with pytest.raises(ValueError, match="grad_mean"):
        alignment_reward(EXAMPLE, np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="mixture"):
        alignment_reward(EXAMPLE, np.ones(3, dtype=bool), weighting="mixture")


def test_select_reward_blocks() -> None:
    assert select_reward_blocks(6, [-1, -3, -5]) == [5, 3, 1]
    assert select_reward_blocks(4, [-1, -3, -5]) == [3, 1]  # -5 is out of range: dropped
    assert select_reward_blocks(2, [-1, -3, -5]) == [1]
    assert select_reward_blocks(3, [0, -3, 2, -1]) == [0, 2]  # duplicates removed
    with pytest.raises(ConfigError, match=r"mixing\.acodm\.reward_layers"):
        select_reward_blocks(2, [-3, -5])


def test_heldout_alignment_worked_example() -> None:
    """r~_i = <g_i, h> / (||h|| mean_k ||g_k||): the projection on the held-out direction."""
    from mixlab.mixing.acodm.reward import heldout_alignment, heldout_direction

    # held-out gradients of two domains (sums over 2 and 4 tokens): means [1, 0] and [0, 1]
    h = heldout_direction(np.array([[2.0, 0.0], [0.0, 4.0]]), np.array([2.0, 4.0]))
    assert h is not None
    np.testing.assert_allclose(h, [0.5, 0.5])
    g = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # norms 2, 2, 2.83: mean 2.276
    r = heldout_alignment(g, np.ones(3, dtype=bool), h)
    np.testing.assert_allclose(r, np.array([1.0, 1.0, 2.0]) / (np.sqrt(0.5) * 2.2761424), rtol=1e-6)
    absent = heldout_alignment(g, np.array([True, False, True]), h)
    assert absent[1] == 0.0 and absent[0] < r[0]  # the mean norm is over the present rows
    assert heldout_direction(np.zeros((2, 2)), np.zeros(2)) is None


def test_running_scale_centres_and_keeps_relative_size() -> None:
    from mixlab.mixing.acodm.reward import RunningScale

    scale = RunningScale(beta=0.9)
    present = np.ones(3, dtype=bool)
    first = scale(np.array([1.0, 2.0, 3.0]), present)
    np.testing.assert_allclose(first.sum(), 0.0, atol=1e-12)
    # the first call is its own scale: spread sqrt(2/3) -> centred / sqrt(2/3)
    np.testing.assert_allclose(first, np.array([-1.0, 0.0, 1.0]) / np.sqrt(2 / 3))
    small = scale(np.array([1.0, 1.01, 1.02]), present)
    assert np.abs(small).max() < 0.05  # a quiet step stays quiet (a z-score would give +-1)
    saved = scale.state_dict()
    again = RunningScale(beta=0.9)
    again.load_state_dict(saved)
    x = np.array([0.0, 5.0, -1.0])
    np.testing.assert_array_equal(again(x, present), scale(x, present))
    one = scale(np.array([3.0, 0.0, 0.0]), np.array([True, False, False]))
    assert np.array_equal(one, np.zeros(3))  # one present domain: nothing to compare


def test_progress_reward_is_the_marginal_return_of_a_token() -> None:
    """Power-law losses L_i = E_i + A n_i^-alpha in each domain's own tokens, at unequal
    shares: r~_i = (L_i(n_i / 2) - L_i(n_i)) T / n_i is alpha (L_i - E_i) T / n_i times the
    same constant (2^alpha - 1) / alpha for every domain, so the ranking is the marginal
    return's. The domain with the higher floor and the larger share earns less. The default
    EMA, whose window is a fixed fraction of the domain's tokens, lags both ends of the
    doubling alike: the constant grows a little but stays the same for every share."""
    from mixlab.mixing.acodm.reward import ProgressReward

    floor, scale, alpha = np.array([2.0, 4.0]), np.array([10.0, 10.0]), 0.3
    step = np.array([0.25, 0.75]) * 2048
    for rate, rtol in ((1.0, 2e-3), (None, 4e-2)):
        reward, tokens = ProgressReward(2, rate=rate, points_per_doubling=16), np.zeros(2)
        for _ in range(400):
            tokens += step
            raw = reward(floor + scale * tokens**-alpha, step)
        ratio = raw / (alpha * scale * tokens**-alpha / tokens * tokens.sum())
        np.testing.assert_allclose(ratio, (2**alpha - 1) / alpha, rtol=rtol)
        assert ratio[0] == pytest.approx(ratio[1], rel=1e-6)
        assert raw[0] > raw[1] > 0


def test_progress_reward_noise_falls_as_the_run_goes_on() -> None:
    """Noisy power-law losses (0.1 nats per step, as with ~2 sequences of a domain per step):
    the default EMA averages the last ~9% of the domain's tokens, so at step 1000-1200 its
    reward is several times less noisy than a fixed rate of 0.1 (a 20-step average), and
    unbiased."""
    from mixlab.mixing.acodm.reward import ProgressReward

    floor, scale, alpha = np.array([2.0, 4.0]), np.array([10.0, 10.0]), 0.3
    step = np.array([0.25, 0.75]) * 2048
    spread: dict[float | None, np.ndarray] = {}
    for rate in (0.1, None):
        reward, tokens, rng = ProgressReward(2, rate=rate), np.zeros(2), np.random.default_rng(0)
        late: list[np.ndarray] = []
        for t in range(1200):
            tokens += step
            raw = reward(floor + scale * tokens**-alpha + rng.normal(0.0, 0.1, 2), step)
            late += [raw] if t >= 1000 else []
        spread[rate] = np.std(late, axis=0)
        exact = (2**alpha - 1) * scale * tokens**-alpha / tokens * tokens.sum()
        if rate is None:
            np.testing.assert_allclose(np.mean(late, axis=0), exact, rtol=0.2)
    assert (spread[None] < 0.4 * spread[0.1]).all()


def test_progress_reward_forgets_an_early_transient() -> None:
    """Domain a drops 1 nat in its first 20 steps and is flat afterwards; domain b falls
    slowly all along. The transient counts while it is in the window and is dropped once a's
    tokens have doubled past it: a earns 0, b > 0."""
    from mixlab.mixing.acodm.reward import ProgressReward

    reward, tok = ProgressReward(2), np.array([100.0, 100.0])
    for t in range(1, 201):
        loss = np.array([5.0 - min(t, 20) / 20.0, 5.0 - 0.002 * t])
        raw = reward(loss, tok)
        if t == 15:
            assert raw[0] > raw[1] > 0  # during the transient a is the one improving
    assert raw[0] == pytest.approx(0.0, abs=1e-6) and raw[1] > 0.1


def test_progress_reward_absent_domains_and_round_trip() -> None:
    from mixlab.mixing.acodm.reward import ProgressReward

    reward = ProgressReward(2, rate=0.5)
    np.testing.assert_array_equal(reward(np.array([3.0, np.nan]), np.array([10.0, 0.0])), 0.0)
    assert np.isnan(reward.loss_at(1, 10.0))  # never seen: no history
    for loss in (2.8, 2.6, 2.5):
        reward(np.array([loss, np.nan]), np.array([10.0, 0.0]))
    saved = reward.state_dict()
    again = ProgressReward(2, rate=0.5)
    again.load_state_dict(saved)
    step = (np.array([2.4, 4.0]), np.array([10.0, 10.0]))
    np.testing.assert_array_equal(again(*step), reward(*step))
    assert again.state_dict() == reward.state_dict()
    with pytest.raises(ValueError, match="must"):
        reward(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="rate"):
        ProgressReward(2, rate=0.0)
    with pytest.raises(ValueError, match="points_per_doubling"):
        ProgressReward(2, points_per_doubling=0)
    with pytest.raises(ResumeError, match="earlier mixlab"):
        again.load_state_dict({"fast": [1.0, 2.0], "slow": [1.0, 2.0]})
