"""When were the seed-to-seed differences between methods set? A report note that says so.

Small language models learn in bursts: the loss sits on a plateau (e.g. at the unigram
entropy) and leaves it at a step that depends on the exact batches drawn. Two runs that differ
only in their data order can leave the plateau tens of steps apart, and a run that is behind
there stays behind: at the end of a short budget it shows as a few percent of perplexity that
no mixture caused. At the demo's budget (llama-1m, 300 steps x 16 x 128; the junk-domain
store, 4 AC-ODM arms x 5 seeds) the seed part of the paired differences vs ``uniform`` at step
90 already correlated 0.89 with the final one, 0.95 at step 120 (README, "AC-ODM without
collapse").

:func:`onset_note` measures this on any set of runs. For every (method, seed) with a same-seed
baseline run evaluated at the same steps, the paired log-ratio ``log(m_t / b_t)`` of the metric
is taken at each eval step ``t``; each method's mean over seeds is subtracted (so a real,
systematic effect of a mixture does not count, only the seed-to-seed part); then the Pearson
correlation between the value at step ``t`` and at the final step is computed over all pairs.
The note names the first step where it reaches :data:`ONSET_R`, if that is in the first half of
the run (:data:`ONSET_MAX_SHARE`): the paired differences' seed noise was mostly in place by
then. What to do about it: compare arms whose early batches are shared (e.g. AC-ODM against
``acodm-prior``, whose label draws are coupled), branch every arm from one trunk per seed
(``mixlab compare --branch-at``, :mod:`mixlab.train.branch`: measured, a trunk of 10% of the
steps removes a seed that lagged from the start, one of 30% also halves the ordinary spread,
and both measure only what the mixtures do after it) or add seeds. Branched from a 30% trunk,
the held-out corpus's arms reached :data:`ONSET_R` only at 90% of the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from mixlab.report.records import RunRecord

ONSET_R = 0.8  # correlation with the final difference at which the note speaks
ONSET_MIN_PAIRS = 6  # fewer (method, seed) pairs say nothing reliable
ONSET_MAX_SHARE = 0.5  # a correlation reached later in the run is not "set early"


def onset_correlations(
    groups: Mapping[str, Sequence[RunRecord]],
    base_by_seed: Mapping[int, RunRecord],
    key: str,
    baseline: str,
) -> tuple[list[int], list[float], int]:
    """(eval steps before the last, correlation at each with the final step, pairs used).

    Only methods with at least two paired seeds and runs evaluated at the baseline's steps
    count; a method whose difference is the same on every seed (e.g. identical to the
    baseline) is left out.
    Empty lists when fewer than :data:`ONSET_MIN_PAIRS` pairs are usable.
    """
    steps: list[int] | None = None
    centred: list[np.ndarray] = []
    for name, runs in groups.items():
        if name == baseline:
            continue
        rows = []
        for run in runs:
            base = base_by_seed.get(run.seed)
            if base is None or not run.eval_steps or run.eval_steps != base.eval_steps:
                continue
            if steps is not None and run.eval_steps != steps:
                continue
            ratio = _log_ratio(run.curve(key)[1], base.curve(key)[1])
            if ratio is not None:
                steps = steps or list(run.eval_steps)
                rows.append(ratio)
        if len(rows) < 2:
            continue
        block = np.array(rows)
        block -= block.mean(axis=0)
        if np.allclose(block, 0.0, atol=1e-12):
            continue  # the same difference on every seed: no seed noise to trace
        centred.extend(block)
    if steps is None or len(centred) < ONSET_MIN_PAIRS or len(steps) < 2:
        return [], [], len(centred)
    table = np.array(centred)
    final = table[:, -1]
    corr = [_pearson(table[:, i], final) for i in range(len(steps) - 1)]
    return steps[:-1], corr, len(centred)


def onset_note(
    groups: Mapping[str, Sequence[RunRecord]],
    base_by_seed: Mapping[int, RunRecord],
    key: str,
    baseline: str,
) -> str | None:
    """A report note naming the first eval step whose paired differences (seed part only)
    correlate >= :data:`ONSET_R` with the final ones, or None when none does."""
    steps, corr, pairs = onset_correlations(groups, base_by_seed, key, baseline)
    last = max((r.eval_steps[-1] for r in base_by_seed.values() if r.eval_steps), default=0)
    branched = all(r.branched for runs in groups.values() for r in runs)
    remedy = (
        "the arms already branch from one trunk per seed: a later branch step narrows it "
        "further (and measures less of each mixture), more seeds always do"
        if branched
        else "compare arms that share early batches (e.g. AC-ODM vs acodm-prior), branch the "
        "arms from one trunk per seed (mixlab compare --branch-at: it removes a seed that "
        "lagged early; a longer trunk also narrows the spread but measures less of each "
        "mixture) or add seeds"
    )
    for step, r in zip(steps, corr, strict=True):
        if last and step > ONSET_MAX_SHARE * last:
            break
        if r >= ONSET_R:
            share = f" ({100 * step / last:.0f}% of the run)" if last else ""
            return (
                f"seed noise was set early: the seed-to-seed part of each method's paired "
                f"difference in {key.removeprefix('eval/')} vs {baseline} at step {step}{share} "
                f"already correlates {r:.2f} with the final one ({pairs} method-seed pairs). "
                "Such differences are usually data-order luck early in training (e.g. when a "
                f"run leaves a loss plateau), not the mixture's doing; {remedy}"
            )
    return None


def branch_note(groups: Mapping[str, Sequence[RunRecord]]) -> str | None:
    """Where the arms branched from a trunk (``mixlab compare --branch-at``), or None when
    none did; a warning when some arms branched and others did not, or at other steps."""
    where = {name: sorted({_start(r) for r in runs}) for name, runs in groups.items() if runs}
    starts = {b for bs in where.values() for b in bs}
    if starts == {"step 0"}:
        return None
    if len(starts) == 1 and "no longer found" not in next(iter(starts)):
        b = next(iter(starts))
        return (
            f"every arm branched at {b} from a trunk (train.branch_from): the paired "
            f"differences measure only what the mixtures did after {b}; each arm's stage "
            "tokens include the trunk's"
        )
    described = "; ".join(f"{name}: {', '.join(bs)}" for name, bs in where.items())
    return (
        f"the arms did not all branch at the same step ({described}): their paired differences "
        "mix the mixtures' effects with different starting points"
    )


def _start(run: RunRecord) -> str:
    """Where ``run`` started: "step 0", "step b" (its trunk's last step) or unknown."""
    if not run.branched:
        return "step 0"
    b = run.branch_step()
    return f"step {b}" if b is not None else "a trunk no longer found"


def _log_ratio(method: Sequence[float], base: Sequence[float]) -> np.ndarray | None:
    m, b = np.asarray(method, dtype=float), np.asarray(base, dtype=float)
    if not (np.isfinite(m).all() and np.isfinite(b).all() and (m > 0).all() and (b > 0).all()):
        return None
    return np.log(m / b)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    sx, sy = float(np.sqrt(np.sum(x * x))), float(np.sqrt(np.sum(y * y)))
    if sx == 0.0 or sy == 0.0:
        return math.nan
    return float(np.sum(x * y) / (sx * sy))
