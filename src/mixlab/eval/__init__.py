"""Evaluation: per-domain validation perplexity and the aggregate metrics of METHODS.md §5.

* :mod:`mixlab.eval.perplexity` — :func:`evaluate` scores each domain's fixed validation
  windows and returns an :class:`EvalResult` (loss sums, token counts, tables, JSON).
* :mod:`mixlab.eval.metrics` — ``mean_ppl`` / ``geo_ppl`` / ``worst`` / ``natural_ppl``
  aggregates and curve metrics (steps to target, % fewer steps, area under the curve).
* :mod:`mixlab.eval.conditional` — MeCo's per-document eval modes (``uncond``, ``cond_true``,
  ``cond_fixed``), scoring the same document tokens with and without a metadata prefix.
"""

from __future__ import annotations

from mixlab.eval.metrics import (
    aggregates,
    area_under_curve,
    baseline_target,
    percent_fewer_steps,
    steps_to_target,
    times_faster,
    worst_domain,
)
from mixlab.eval.perplexity import EvalResult, evaluate, validation_windows

__all__ = [
    "EvalResult",
    "aggregates",
    "area_under_curve",
    "baseline_target",
    "evaluate",
    "percent_fewer_steps",
    "steps_to_target",
    "times_faster",
    "validation_windows",
    "worst_domain",
]
