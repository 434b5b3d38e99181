"""Compress a weight trajectory into N piecewise-constant stages, and place them in a target run.

Engines take a mixture as a few stages at most (nanotron ``data_stages``, Levanter
``train_weights``, otherwise one file per phase), while an adaptive run changes its weights at
every step. With windows ``t`` of ``n_t`` tokens and weights ``w_t`` (token shares), stages are
consecutive groups of windows ``S_1 .. S_N`` with constant weights ``v_k``, chosen to minimise
the token-weighted squared error of the shares

    E(S, v) = sum_k sum_{t in S_k} n_t * || w_t - v_k ||^2 .

For fixed boundaries the optimum is the token-weighted mean ``v_k = sum n_t w_t / sum n_t``,
so every stage serves exactly the tokens per domain the run served in that span and the
compressed schedule's whole-run shares equal the trajectory's. The boundaries are then found
exactly by dynamic programming over the ``T`` windows (segmented least squares, Bellman 1961):
``D[n][j] = min_i D[n-1][i] + cost(i, j)``, each ``cost(i, j)`` in O(K) from prefix sums of
``n``, ``n w`` and ``n ||w||^2``, O(N T^2 K) overall. Trajectories longer than
``MAX_WINDOWS`` windows are first merged into that many equal-token blocks (their means).

At most ``n_phases`` stages are used: the fewest whose error is within 1e-12 of the best (a
static run stays one stage). The reported error is the token-weighted RMS deviation
``sqrt(E / sum n_t)`` (in share units), next to the one-stage error for scale.

**Placing stages in the target run.** A stage boundary sits at a fraction ``f`` of the source
run's tokens; in a target run of ``S`` optimiser steps it becomes step ``round(f S)`` (rounded
to a multiple of ``step_multiple``, e.g. for Levanter's block alignment). Steps are 0-based and
half-open: a stage covers steps ``start_step .. end_step - 1``. Without a target geometry the
source run's own steps are kept. The *achieved* shares are those of the placed schedule
(stage tokens x stage weights), compared with the trajectory's; per-domain epochs over the
target budget ``B`` are :func:`mixlab.mixing.budget.epochs` of those shares, with a warning for
each domain over the epoch cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mixlab.engines.sources import Trajectory
from mixlab.errors import ConfigError
from mixlab.mixing.budget import epochs as budget_epochs

MAX_WINDOWS = 2048  # windows the exact DP runs on; longer trajectories are merged first


@dataclass(frozen=True)
class Stage:
    """One constant-weight stage of the schedule.

    ``start``/``end`` are fractions of the run's tokens; ``start_step``/``end_step`` are
    optimiser steps of the target run (or of the source run without a target geometry),
    0-based, end exclusive; ``tokens`` are the stage's tokens in the target run (or the source's).
    """

    index: int
    start: float
    end: float
    start_step: int
    end_step: int
    tokens: float
    weights: np.ndarray

    def named(self, domains: tuple[str, ...]) -> dict[str, float]:
        return {d: float(w) for d, w in zip(domains, self.weights, strict=True)}


@dataclass(frozen=True)
class TargetRun:
    """Geometry of the run the mixture is exported for (all optional).

    ``budget_tokens``: tokens of the whole run; ``tokens_per_step``: global batch x sequence
    length; ``step_multiple``: stage boundaries are rounded to multiples of it.
    """

    budget_tokens: float | None = None
    tokens_per_step: int | None = None
    step_multiple: int = 1

    @property
    def steps(self) -> int | None:
        if self.budget_tokens is None or not self.tokens_per_step:
            return None
        return max(1, math.ceil(self.budget_tokens / self.tokens_per_step))


@dataclass(frozen=True)
class PhasePlan:
    """Stages placed in a target run, with the shares and epochs they imply."""

    domains: tuple[str, ...]
    stages: tuple[Stage, ...]
    trajectory_shares: np.ndarray
    shares: np.ndarray
    error: float
    static_error: float
    target: TargetRun
    in_target_steps: bool
    source_timed: bool = True
    domain_tokens: np.ndarray | None = None
    epochs: np.ndarray | None = None
    max_epochs: float | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def total_steps(self) -> int:
        return self.stages[-1].end_step

    def span(self, stage: Stage) -> str:
        """A stage's steps for people: ``target-run steps 0..97`` (0-based, inclusive)."""
        if not self.in_target_steps and not self.source_timed:
            return "the whole run"
        unit = "target-run" if self.in_target_steps else "source-run"
        return f"{unit} steps {stage.start_step}..{stage.end_step - 1} (0-based)"

    def named_shares(self) -> dict[str, float]:
        return {d: float(s) for d, s in zip(self.domains, self.shares, strict=True)}


# ---------------------------------------------------------------------------- the DP
def segment_cost_row(s0: np.ndarray, s1: np.ndarray, s2: np.ndarray, i: int) -> np.ndarray:
    """cost(i, j) for every j > i from prefix sums (index 0 = empty prefix); inf for j <= i."""
    out = np.full(len(s0), np.inf)
    n = s0[i + 1 :] - s0[i]
    m = s1[i + 1 :] - s1[i]
    sq = s2[i + 1 :] - s2[i]
    with np.errstate(invalid="ignore", divide="ignore"):
        cost = sq - (m * m).sum(axis=1) / n
    out[i + 1 :] = np.clip(np.nan_to_num(cost, nan=0.0), 0.0, None)  # clip rounding below 0
    return out


def optimal_segments(
    weights: np.ndarray, tokens: np.ndarray, n_segments: int
) -> tuple[list[tuple[int, int]], float, list[float]]:
    """Exact least-squares segmentation of ``weights`` (T, K) into at most ``n_segments``.

    Returns the segments as (start, end) window indices (end exclusive), their total cost, and
    the best cost for every number of segments 1..n (for choosing fewer).
    """
    t = len(tokens)
    n_max = max(1, min(n_segments, t))
    # The cost is invariant to shifting w and scaling n: centre and rescale for precision
    # (the prefix-sum form subtracts large numbers); costs are scaled back at the end.
    scale = float(np.mean(tokens))
    n = np.asarray(tokens, dtype=np.float64) / scale
    w = weights - (n[:, None] * weights).sum(axis=0) / n.sum()
    s0 = np.concatenate([[0.0], np.cumsum(n)])
    s1 = np.vstack([np.zeros(w.shape[1]), np.cumsum(n[:, None] * w, axis=0)])
    s2 = np.concatenate([[0.0], np.cumsum(n * (w * w).sum(axis=1))])
    cost = np.vstack([segment_cost_row(s0, s1, s2, i) for i in range(t + 1)])  # (T+1, T+1)
    best = [cost[0].copy()]  # best[n-1][j]: n segments covering windows 0..j-1
    arg: list[np.ndarray] = [np.zeros(t + 1, dtype=np.int64)]
    for _ in range(1, n_max):
        total = best[-1][:, None] + cost  # split at i, last segment i..j
        arg.append(np.argmin(total, axis=0))
        best.append(total[arg[-1], np.arange(t + 1)])
    per_n = [float(b[t]) * scale for b in best]
    tol = 1e-12 * max(1.0, float(s2[-1])) * scale
    n_best = next(k for k in range(1, n_max + 1) if per_n[k - 1] <= per_n[-1] + tol)
    bounds, j = [], t
    for k in range(n_best, 0, -1):
        i = int(arg[k - 1][j]) if k > 1 else 0
        bounds.append((i, j))
        j = i
    return bounds[::-1], per_n[n_best - 1], per_n


def _merge_windows(traj: Trajectory, max_windows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, weights, tokens) merged into at most ``max_windows`` equal-token blocks."""
    if len(traj.tokens) <= max_windows:
        return traj.steps, traj.weights, traj.tokens
    edges = np.searchsorted(
        np.cumsum(traj.tokens),
        np.linspace(0, traj.tokens.sum(), max_windows + 1)[1:-1],
        side="right",
    )
    groups = np.split(np.arange(len(traj.tokens)), np.unique(edges))
    groups = [g for g in groups if len(g)]
    tok = np.array([traj.tokens[g].sum() for g in groups])
    w = np.vstack(
        [(traj.tokens[g, None] * traj.weights[g]).sum(0) / traj.tokens[g].sum() for g in groups]
    )
    return np.array([traj.steps[g[-1]] for g in groups]), w, tok


# ---------------------------------------------------------------------------- the plan
def compress(
    traj: Trajectory,
    n_phases: int = 1,
    *,
    target: TargetRun | None = None,
    domain_tokens: np.ndarray | None = None,
    max_epochs: float | None = None,
) -> PhasePlan:
    """At most ``n_phases`` stages of ``traj`` placed in ``target``, with shares and epochs.

    ``domain_tokens`` (K,) overrides the source's domain sizes for the epoch count (e.g. the
    token counts of the target corpus); ``max_epochs`` adds a warning per domain above it.
    """
    if not isinstance(n_phases, int) or n_phases < 1:
        raise ConfigError(f"--phases: expected an integer >= 1, got {n_phases!r}")
    if max_epochs is not None and not (max_epochs > 0):
        raise ConfigError(f"--max-epochs: expected a number > 0, got {max_epochs!r}")
    target = target or TargetRun()
    if target.step_multiple < 1:
        raise ConfigError(f"--step-multiple: expected an integer >= 1, got {target.step_multiple}")
    steps, weights, tokens = _merge_windows(traj, MAX_WINDOWS)
    bounds, err, per_n = optimal_segments(weights, tokens, n_phases)
    total = float(tokens.sum())
    cum = np.concatenate([[0.0], np.cumsum(tokens)]) / total

    raw = []
    for a, b in bounds:
        v = (tokens[a:b, None] * weights[a:b]).sum(axis=0) / tokens[a:b].sum()
        raw.append((cum[a], cum[b], v / v.sum(), a, b))

    target_steps = target.steps
    starts = np.concatenate([[0], steps[:-1]])
    stages: list[Stage] = []
    for start, end, v, a, b in raw:
        if target_steps is not None:
            s0 = _place(start, target_steps, target.step_multiple)
            s1 = _place(end, target_steps, target.step_multiple)
            stage_tokens = float((s1 - s0) * (target.tokens_per_step or 0))
        else:
            s0, s1 = int(starts[a]), int(steps[b - 1])
            budget = target.budget_tokens
            stage_tokens = (end - start) * (budget if budget is not None else total)
        if s1 <= s0 and target_steps is not None:
            continue  # rounding left this stage no step: its neighbours absorb it
        stages.append(Stage(len(stages) + 1, start, end, s0, s1, stage_tokens, v))
    if target_steps is not None:  # re-chain after dropping empty stages
        stages = _rechain(stages, target_steps, target.tokens_per_step or 0)

    stage_tokens_arr = np.array([s.tokens for s in stages])
    shares = (stage_tokens_arr[:, None] * np.vstack([s.weights for s in stages])).sum(0)
    shares = shares / shares.sum()
    domain_tokens = domain_tokens if domain_tokens is not None else traj.domain_tokens
    ep = None
    warns: list[str] = []
    if not traj.timed and n_phases > 1:
        warns.append(f"{traj.source} holds one static mixture: it stays one stage")
    if target.budget_tokens is not None and domain_tokens is not None:
        ep = budget_epochs(shares, target.budget_tokens, domain_tokens)
        if max_epochs is not None:
            for d, e in zip(traj.domains, ep, strict=True):
                if e > max_epochs:
                    warns.append(
                        f"domain {d!r}: {e:.2f} epochs over {target.budget_tokens:.4g} tokens "
                        f"exceeds the cap of {max_epochs:g} epochs (lower its weight, add data, "
                        "or raise --max-epochs)"
                    )
    return PhasePlan(
        domains=traj.domains,
        stages=tuple(stages),
        trajectory_shares=traj.shares,
        shares=shares,
        error=math.sqrt(err / total),
        static_error=math.sqrt(per_n[0] / total),
        target=target,
        in_target_steps=target_steps is not None,
        source_timed=traj.timed,
        domain_tokens=domain_tokens,
        epochs=ep,
        max_epochs=max_epochs,
        warnings=tuple(warns),
    )


def _place(fraction: float, total_steps: int, multiple: int) -> int:
    if fraction >= 1.0:
        return total_steps
    return min(total_steps, round(fraction * total_steps / multiple) * multiple)


def _rechain(stages: list[Stage], total_steps: int, tokens_per_step: int) -> list[Stage]:
    out: list[Stage] = []
    for i, s in enumerate(stages):
        start = 0 if i == 0 else out[-1].end_step
        end = total_steps if i == len(stages) - 1 else s.end_step
        out.append(
            Stage(
                i + 1, s.start, s.end, start, end, float((end - start) * tokens_per_step), s.weights
            )
        )
    return out
