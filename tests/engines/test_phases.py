"""Phase compression: exact DP vs brute force, shares kept, placement in a target run, epochs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mixlab.engines.phases import TargetRun, compress, optimal_segments
from mixlab.engines.sources import Trajectory, read_run
from mixlab.errors import ConfigError
from tests.engines.conftest import DOMAINS, SIZES, drifting_weights, write_run


def _traj(weights: np.ndarray, tokens: np.ndarray | None = None, sizes=SIZES) -> Trajectory:
    t = len(weights)
    return Trajectory(
        domains=DOMAINS,
        steps=np.arange(1, t + 1),
        weights=weights,
        tokens=np.ones(t) * 100 if tokens is None else tokens,
        domain_tokens=sizes,
        source="test",
        kind="run",
    )


def _brute_force(w: np.ndarray, n: np.ndarray, k: int) -> float:
    best = np.inf
    t = len(n)
    for cuts in itertools.combinations(range(1, t), k - 1):
        bounds = [0, *cuts, t]
        cost = 0.0
        for a, b in itertools.pairwise(bounds):
            mean = (n[a:b, None] * w[a:b]).sum(0) / n[a:b].sum()
            cost += float((n[a:b, None] * (w[a:b] - mean) ** 2).sum())
        best = min(best, cost)
    return best


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_dp_equals_brute_force(k):
    rng = np.random.default_rng(k)
    w = rng.dirichlet(np.ones(4), size=9)
    n = rng.integers(1, 50, size=9).astype(float)
    bounds, cost, per_n = optimal_segments(w, n, k)
    assert cost == pytest.approx(_brute_force(w, n, len(bounds)), rel=1e-9, abs=1e-12)
    assert per_n[-1] == pytest.approx(_brute_force(w, n, k), rel=1e-9, abs=1e-12)
    assert bounds[0][0] == 0 and bounds[-1][1] == 9
    assert all(b == c for (_, b), (c, _) in itertools.pairwise(bounds))


def test_three_regimes_are_found_and_shares_are_kept():
    w = drifting_weights(60)
    plan = compress(_traj(w), 3)
    assert [(s.start_step, s.end_step) for s in plan.stages] == [(0, 20), (20, 40), (40, 60)]
    np.testing.assert_allclose(plan.stages[1].weights, w[20:40].mean(0), atol=1e-12)
    np.testing.assert_allclose(plan.shares, plan.trajectory_shares, atol=1e-12)
    assert plan.error < plan.static_error / 5
    assert not plan.in_target_steps


def test_a_static_run_stays_one_stage():
    plan = compress(_traj(np.tile([0.1, 0.2, 0.3, 0.4], (20, 1))), 5)
    assert len(plan.stages) == 1 and plan.error == 0.0


def test_more_phases_than_windows_is_one_stage_per_window():
    plan = compress(_traj(drifting_weights(3)), 8)
    assert len(plan.stages) == 3


def test_stages_are_placed_at_the_same_token_fraction_of_the_target():
    w = drifting_weights(60)
    target = TargetRun(budget_tokens=1e6, tokens_per_step=1000, step_multiple=1)
    plan = compress(_traj(w), 3, target=target)
    assert plan.in_target_steps and plan.total_steps == 1000
    assert [(s.start_step, s.end_step) for s in plan.stages] == [(0, 333), (333, 667), (667, 1000)]
    assert sum(s.tokens for s in plan.stages) == 1e6
    # Rounding to steps moves shares by at most ~1 step's worth.
    assert np.abs(plan.shares - plan.trajectory_shares).max() < 1e-3
    # Boundaries on a step grid.
    grid = compress(_traj(w), 3, target=TargetRun(1e6, 1000, step_multiple=64))
    assert all(s.start_step % 64 == 0 for s in grid.stages)


def test_unequal_windows_weigh_by_tokens():
    w = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    plan = compress(_traj(w, tokens=np.array([300.0, 100.0])), 1)
    np.testing.assert_allclose(plan.stages[0].weights, [0.75, 0.25, 0, 0])


def test_epochs_for_the_budget_and_cap_warnings():
    w = np.tile([0.1, 0.2, 0.3, 0.4], (4, 1))
    plan = compress(_traj(w), 1, target=TargetRun(budget_tokens=90_000), max_epochs=2.5)
    np.testing.assert_allclose(plan.epochs, np.array([0.1, 0.2, 0.3, 0.4]) * 90_000 / SIZES)
    over = [d for d, e in zip(DOMAINS, plan.epochs, strict=True) if e > 2.5]
    assert over == ["prose"]
    assert len(plan.warnings) == 1 and "'prose'" in plan.warnings[0]
    assert "exceeds the cap of 2.5" in plan.warnings[0]
    # Domain sizes of the target corpus win over the source's.
    bigger = compress(_traj(w), 1, target=TargetRun(90_000), domain_tokens=SIZES * 10)
    np.testing.assert_allclose(bigger.epochs, plan.epochs / 10)


def test_no_budget_no_epochs(tmp_path):
    plan = compress(read_run(write_run(tmp_path / "r", drifting_weights(6))), 2)
    assert plan.epochs is None and plan.domain_tokens is not None


def test_long_trajectories_are_merged_before_the_dp(monkeypatch):
    import mixlab.engines.phases as phases

    monkeypatch.setattr(phases, "MAX_WINDOWS", 50)
    w = drifting_weights(600)
    plan = compress(_traj(w), 3)
    np.testing.assert_allclose(plan.shares, w.mean(0), atol=1e-12)
    ends = [s.end_step for s in plan.stages]
    assert all(e % 12 == 0 for e in ends)  # 50 blocks of 12 windows
    assert ends[-1] == 600 and abs(ends[0] - 200) <= 12 and abs(ends[1] - 400) <= 12


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_phases": 0}, "--phases"),
        ({"n_phases": 2, "max_epochs": 0}, "--max-epochs"),
        ({"n_phases": 2, "target": TargetRun(1e6, 100, step_multiple=0)}, "--step-multiple"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        compress(_traj(drifting_weights(6)), **kwargs)
