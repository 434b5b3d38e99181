"""Aggregate metrics over domains and over training curves (METHODS.md §5).

Per domain d, L_d is the token-weighted validation loss (nats/token) and PPL_d = exp(L_d).
Over the K domains (w^nat = natural token shares of the *training* data):

=================  =====================================  ==================================
key                formula                                what it is
=================  =====================================  ==================================
``mean_ppl``       (1/K) Σ_d PPL_d                        ODM / AC-ODM headline
``mean_logppl``    (1/K) Σ_d L_d                          DoReMi "uniform average" (log)
``geo_ppl``        exp(mean_logppl)                       geometric mean of the PPLs
``worst_logppl``   max_d L_d                              DoReMi "worst case"
``worst_ppl``      exp(worst_logppl)
``natural_loss``   Σ_d w^nat_d · L_d                      pooled loss at natural proportions
``natural_ppl``    exp(natural_loss)
=================  =====================================  ==================================

``mean_ppl`` gives a tiny domain the same vote as a large one and is dominated by high-PPL
domains, so any mixture flatter than natural improves it "for free": never report it without
``natural_ppl`` and the worst domain (:func:`worst_domain`) next to it.

Curves (one value per eval step):

* :func:`steps_to_target` — the first eval step whose value is <= the target; ``None`` when
  never reached. No interpolation.
* :func:`baseline_target` — the baseline's best value m* and the first step S_b reaching it.
* :func:`percent_fewer_steps` = 100·(1 − s*/S_b); :func:`times_faster` = S_b/s*.
* :func:`area_under_curve` — trapezoid rule over the eval steps divided by the step span,
  i.e. the time-averaged metric over the run (same unit as the values; lower is better for
  losses). Only comparable between runs evaluated over the same step range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import overload

import numpy as np


def safe_exp(x: float) -> float:
    """exp(x), or inf instead of OverflowError for a diverged loss (x > ~709)."""
    return math.exp(x) if x < 709.0 else math.inf


def aggregates(
    domain_losses: Mapping[str, float] | np.ndarray | Sequence[float],
    natural_weights: Mapping[str, float] | np.ndarray | Sequence[float],
    *,
    domains: Sequence[str] | None = None,
) -> dict[str, float]:
    """The §5 aggregates of per-domain losses L_d (nats/token).

    ``domain_losses`` is a name -> loss mapping or a (K,) array in ``domains`` order.
    ``natural_weights`` are the natural token shares (or raw train-token counts; they are
    normalised here), as a mapping with the same names or an array in the same order. Pass
    ``domains`` to align an array of losses with a mapping of weights. The worst domain's
    name is :func:`worst_domain`.
    """
    names, losses = _as_named_array(domain_losses, domains)
    if losses.size == 0:
        raise ValueError("aggregates: no domains")
    if isinstance(natural_weights, Mapping):
        if names is None:
            raise ValueError("aggregates: weights given by name need losses by name or domains=")
        missing = sorted(set(names) ^ set(natural_weights))
        if missing:
            raise ValueError(f"aggregates: losses and natural weights differ on {missing}")
        weights = np.array([float(natural_weights[d]) for d in names], dtype=np.float64)
    else:
        weights = np.asarray(natural_weights, dtype=np.float64).reshape(-1)
    if weights.shape != losses.shape:
        raise ValueError(f"aggregates: {losses.size} losses but {weights.size} natural weights")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"aggregates: natural weights must be >= 0 and not all 0: {weights}")
    weights = weights / weights.sum()

    mean_logppl = float(losses.mean())
    worst_logppl = float(losses.max())
    natural_loss = float(np.dot(weights, losses))
    return {
        "mean_ppl": float(np.mean([safe_exp(float(x)) for x in losses])),
        "mean_logppl": mean_logppl,
        "geo_ppl": safe_exp(mean_logppl),
        "worst_logppl": worst_logppl,
        "worst_ppl": safe_exp(worst_logppl),
        "natural_loss": natural_loss,
        "natural_ppl": safe_exp(natural_loss),
    }


@overload
def worst_domain(domain_losses: Mapping[str, float], *, domains: None = None) -> str: ...
@overload
def worst_domain(domain_losses: np.ndarray | Sequence[float], *, domains: Sequence[str]) -> str: ...
@overload
def worst_domain(domain_losses: np.ndarray | Sequence[float], *, domains: None = None) -> int: ...
def worst_domain(
    domain_losses: Mapping[str, float] | np.ndarray | Sequence[float],
    *,
    domains: Sequence[str] | None = None,
) -> str | int:
    """Name of the domain with the highest loss (its index if the losses carry no names).

    Ties go to the first domain in order; a NaN loss counts as the worst (a diverged domain).
    """
    names, losses = _as_named_array(domain_losses, domains)
    if losses.size == 0:
        raise ValueError("worst_domain: no domains")
    nan = np.isnan(losses)
    index = int(np.argmax(nan)) if nan.any() else int(np.argmax(losses))
    return names[index] if names is not None else index


def steps_to_target(
    steps: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray, target: float
) -> int | None:
    """First eval step whose value is <= ``target`` (no interpolation); None if never reached.

    ``steps`` must be strictly increasing. NaN values never reach the target.
    """
    s, v = _curve(steps, values)
    hit = np.flatnonzero(v <= target)  # NaN compares False
    return int(s[hit[0]]) if hit.size else None


def baseline_target(
    steps: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray
) -> tuple[int, float]:
    """(S_b, m*): the baseline's best (lowest) value m* and the first eval step reaching it."""
    s, v = _curve(steps, values)
    if np.all(np.isnan(v)):
        raise ValueError("baseline_target: every value is NaN")
    index = int(np.nanargmin(v))
    return int(s[index]), float(v[index])


def percent_fewer_steps(s_star: int | None, s_b: int) -> float | None:
    """100·(1 − s*/S_b): how many fewer steps the method needed; None when not reached."""
    if s_b <= 0:
        raise ValueError(f"percent_fewer_steps: baseline step must be > 0, got {s_b}")
    return None if s_star is None else 100.0 * (1.0 - s_star / s_b)


def times_faster(s_star: int | None, s_b: int) -> float | None:
    """S_b / s*: the speed-up factor; None when the target was not reached."""
    if s_star is not None and s_star <= 0:
        raise ValueError(f"times_faster: step must be > 0, got {s_star}")
    return None if s_star is None else s_b / s_star


def area_under_curve(
    steps: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray
) -> float:
    """Trapezoid area under the curve divided by the step span (a time-averaged value).

    A single eval point returns its value. Runs are comparable only over the same span.
    """
    s, v = _curve(steps, values)
    if s.size == 1:
        return float(v[0])
    s = s.astype(np.float64)
    area = float(np.sum((s[1:] - s[:-1]) * (v[1:] + v[:-1]) / 2.0))
    return area / float(s[-1] - s[0])


def _as_named_array(
    domain_losses: Mapping[str, float] | np.ndarray | Sequence[float],
    domains: Sequence[str] | None,
) -> tuple[list[str] | None, np.ndarray]:
    if isinstance(domain_losses, Mapping):
        names = list(domain_losses)
        if domains is not None and list(domains) != names:
            raise ValueError(f"domain order {list(domains)} differs from the losses' {names}")
        return names, np.array([float(domain_losses[d]) for d in names], dtype=np.float64)
    losses = np.asarray(domain_losses, dtype=np.float64).reshape(-1)
    if domains is not None and len(domains) != losses.size:
        raise ValueError(f"{losses.size} losses but {len(domains)} domain names")
    return (list(domains) if domains is not None else None), losses


def _curve(
    steps: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(steps, dtype=np.int64).reshape(-1)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if s.size == 0 or s.shape != v.shape:
        raise ValueError(
            f"curve needs equal, non-zero numbers of steps and values: {s.size}, {v.size}"
        )
    if np.any(np.diff(s) <= 0):
        raise ValueError(f"curve steps must be strictly increasing: {s.tolist()}")
    return s, v
