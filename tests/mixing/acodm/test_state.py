"""AC-ODM state vector (METHODS.md §2.3): layout and dim, per-group z/clip3, absent-domain
repeat, delta reference previous vs first, depth blocks, weight-norm tracker, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from mixlab.errors import ConfigError
from mixlab.mixing.acodm.reward import clip3, zscore
from mixlab.mixing.acodm.state import (
    StateBuilder,
    StateSpec,
    select_depth_blocks,
)

K, D = 5, 3


def groups(s: np.ndarray, k: int = K, d: int = D) -> list[np.ndarray]:
    cuts = np.cumsum([k, k, k, d, d])
    return np.split(s, cuts)


def build(b: StateBuilder, loss: list[float], t: int = 1, **kw: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(t)
    return b.build(
        np.array(loss),
        kw.get("counts", rng.integers(1, 5, size=b.num_domains)),
        kw.get("norms", rng.uniform(1, 3, size=b.num_depths)),
        kw.get("diffs", rng.uniform(0, 1, size=b.num_depths)),
        t,
        100,
    )


def test_dim_layout_and_progress() -> None:
    b = StateBuilder(K, D, progress_scale=100.0)
    s = build(b, [1.0, 2.0, 3.0, 4.0, 5.0], t=25)
    assert s.shape == (3 * K + 2 * D + 1,) == (b.dim,)
    assert s[-1] == pytest.approx(100.0 * 25 / 100)
    assert StateSpec(K, D, (0.0, 0.5, 1.0), "previous", 1.0).dim == b.dim


def test_groups_are_standardised_and_clipped() -> None:
    rng = np.random.default_rng(0)
    b = StateBuilder(K, D)
    for t in range(1, 6):
        s = build(b, list(rng.normal(3, 1, size=K)), t=t)
        for g in groups(s)[:5]:
            assert np.abs(g).max() <= 3.0
            assert abs(g.mean()) < 1e-9 or np.all(g == 0)
    # Many domains, one outlier: z would exceed 3, the group is clipped.
    big = StateBuilder(30, 2)
    loss = [1.0] * 29 + [50.0]
    g1 = groups(build(big, loss), 30, 2)[0]
    assert g1.max() == 3.0
    np.testing.assert_allclose(g1, clip3(zscore(np.array(loss))))


def test_constant_group_is_zero() -> None:
    b = StateBuilder(K, D)
    s = build(b, [1, 2, 3, 4, 5], counts=np.full(K, 2))
    g = groups(s)
    assert np.array_equal(g[2], np.zeros(K))  # equal counts
    assert np.array_equal(g[1], np.zeros(K))  # loss change at the first step


def test_absent_domain_repeats_previous_loss() -> None:
    b = StateBuilder(K, D)
    build(b, [1.0, 2.0, 3.0, 4.0, 5.0], t=1)
    s = build(b, [np.nan, 2.5, 3.0, 4.0, 5.5], t=2)
    np.testing.assert_allclose(groups(s)[0], clip3(zscore(np.array([1.0, 2.5, 3.0, 4.0, 5.5]))))
    # The repeated loss has zero change against the previous step.
    assert groups(s)[1][0] == pytest.approx(clip3(zscore(np.array([0.0, 0.5, 0.0, 0.0, 0.5])))[0])


def test_absent_before_first_observation_uses_mean_of_present() -> None:
    b = StateBuilder(3, 1)
    s = build(b, [np.nan, 1.0, 3.0])
    np.testing.assert_allclose(groups(s, 3, 1)[0], clip3(zscore(np.array([2.0, 1.0, 3.0]))))


@pytest.mark.parametrize("reference", ["previous", "first"])
def test_delta_reference(reference: str) -> None:
    b = StateBuilder(K, D, delta_reference=reference)
    l1, l2, l3 = ([1.0, 2, 3, 4, 5], [0.5, 2, 2, 4, 6], [0.0, 3, 1, 4, 9])
    build(b, l1, t=1)
    build(b, l2, t=2)
    s = build(b, l3, t=3)
    ref = l2 if reference == "previous" else l1
    expected = clip3(zscore(np.array(l3) - np.array(ref)))
    np.testing.assert_allclose(groups(s)[1], expected)
    assert b.refresh_reference == (reference == "previous")


def test_builder_state_round_trip() -> None:
    a = StateBuilder(K, D, delta_reference="first")
    build(a, [1.0, 2, 3, 4, 5], t=1)
    build(a, [2.0, np.nan, 3, 4, 5], t=2)
    b = StateBuilder(K, D, delta_reference="first")
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(
        build(a, [np.nan, 1, 1, 4, 5], t=3), build(b, [np.nan, 1, 1, 4, 5], t=3)
    )


def test_shape_errors() -> None:
    b = StateBuilder(K, D)
    with pytest.raises(ValueError, match="param_norms"):
        b.build(np.ones(K), np.ones(K), np.ones(D + 1), np.ones(D), 1, 10)


def test_select_depth_blocks() -> None:
    points = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert select_depth_blocks(4, points) == [0, 1, 2, 2, 3]
    assert select_depth_blocks(12, points) == [0, 3, 6, 8, 11]
    assert select_depth_blocks(2, points) == [0, 0, 1, 1, 1]
    assert select_depth_blocks(1, points) == [0] * 5
    with pytest.raises(ConfigError):
        select_depth_blocks(0, points)
    with pytest.raises(ConfigError, match="depth_points"):
        select_depth_blocks(4, [0.5, 1.5])


def test_state_spec_round_trip() -> None:
    spec = StateSpec(8, 5, (0.0, 0.25, 0.5, 0.75, 1.0), "first", 100.0)
    assert StateSpec.from_dict(spec.to_dict()) == spec


def test_mixlab_state_layout_and_scale_free() -> None:
    """3K + 1: z(EMA loss), z(trend), clip3(log served share / p0), t/T; a loss offset and a
    loss scale (a bigger model's lower, flatter losses) leave the first two groups unchanged."""
    from mixlab.mixing.acodm.state import MixlabStateBuilder

    prior = np.array([0.4, 0.2, 0.2, 0.1, 0.1])
    rng = np.random.default_rng(0)
    losses = rng.uniform(3, 6, size=(20, K))
    tokens = np.tile([40.0, 20.0, 20.0, 10.0, 10.0], (20, 1))  # served exactly at the prior
    a, b = MixlabStateBuilder(prior, ema=0.2), MixlabStateBuilder(prior, ema=0.2)
    for t in range(20):
        sa = a.build(losses[t], tokens[t], t + 1, 40)
        sb = b.build(0.5 * losses[t] - 1.0, tokens[t], t + 1, 40)
    assert sa.shape == (3 * K + 1,) and a.dim == 3 * K + 1
    np.testing.assert_allclose(sa[: 2 * K], sb[: 2 * K], atol=1e-9)
    np.testing.assert_allclose(sa[2 * K : 3 * K], 0.0, atol=1e-12)  # share == prior
    assert sa[-1] == 0.5
    for g in (sa[:K], sa[K : 2 * K]):
        assert abs(g.mean()) < 1e-9 and np.abs(g).max() <= 3
    # a domain absent from a step keeps its averages; never-served shares are clipped at -3
    c = MixlabStateBuilder(prior)
    s1 = c.build(np.array([4.0, np.nan, 5.0, 5.0, 5.0]), np.array([10.0, 0, 10, 10, 10]), 1, 10)
    assert np.isfinite(s1).all() and s1[2 * K + 1] == -3.0
    saved = c.state_dict()
    d = MixlabStateBuilder(prior)
    d.load_state_dict(saved)
    step2 = (np.array([4.5, 4.0, 5.0, 5.0, 5.0]), np.full(K, 10.0), 2, 10)
    np.testing.assert_array_equal(c.build(*step2), d.build(*step2))


def test_mixlab_state_gain_group() -> None:
    """With ``gain`` the step's estimate is appended as clip3(z(g)) (4K + 1) and is required."""
    from mixlab.mixing.acodm.state import MixlabStateBuilder

    prior = np.full(K, 1.0 / K)
    builder = MixlabStateBuilder(prior, gain=True)
    g = np.array([0.1, 0.5, -0.2, 0.0, 9.0])
    state = builder.build(np.full(K, 4.0), np.full(K, 10.0), 1, 10, gain=g)
    assert state.shape == (4 * K + 1,) and builder.dim == 4 * K + 1
    np.testing.assert_allclose(state[3 * K + 1 :], clip3(zscore(g)))
    with pytest.raises(ValueError, match="needs the step's gain estimate"):
        builder.build(np.full(K, 4.0), np.full(K, 10.0), 2, 10)
    with pytest.raises(ValueError, match=r"gain must have shape \(5,\)"):
        builder.build(np.full(K, 4.0), np.full(K, 10.0), 2, 10, gain=np.zeros(3))


def test_state_spec_kinds_round_trip() -> None:
    spec = StateSpec(4, 0, (), "previous", 1.0, kind="mixlab", ema=0.1)
    assert spec.dim == 13 and StateSpec.from_dict(spec.to_dict()) == spec
    old = {
        "K": 4,
        "D": 5,
        "depth_points": [0, 0.25, 0.5, 0.75, 1],
        "delta_reference": "first",
        "progress_scale": 100.0,
        "clip": 3.0,
    }  # a format-1 file has no kind
    assert StateSpec.from_dict(old).kind == "paper" and StateSpec.from_dict(old).dim == 23
