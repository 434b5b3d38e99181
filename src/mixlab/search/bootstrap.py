"""How sure is the law about its answer? Bootstrap over the swarm's runs.

The swarm is one sample of runs; another swarm of the same size would give another law and
maybe another optimum. The (nonparametric) bootstrap (Efron 1979) imitates that: draw ``n`` runs
with replacement from the ``n`` runs (seeded), refit the law, and

* predict the per-domain losses at the **chosen** mixture: their spread across resamples is the
  uncertainty of the prediction (std and a central percentile interval at ``level``);
* optionally re-optimise on each refit (from the chosen mixture and the prior): the spread of
  those optima (per-domain std/interval, and the L1 distance to the chosen mixture) says how
  firmly the data pin the mixture down. A wide spread with a flat objective is fine; a wide
  spread with a steep objective means more runs.

Cost: ``n_resamples`` law fits (~0.1 s each for the log-linear law at K = 8) plus as many local
optimisations. Resamples whose fit fails are skipped and counted in ``n_failed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mixlab.errors import ConfigError, DataError
from mixlab.search.law import MixingLaw, check_swarm
from mixlab.search.objective import Objective
from mixlab.search.optimize import optimize_mixture


@dataclass(frozen=True)
class BootstrapResult:
    """Per-resample predictions at the chosen mixture (and each resample's own optimum)."""

    level: float
    chosen: np.ndarray  # (K,)
    predicted: np.ndarray  # (B, D): losses each refit predicts at ``chosen``
    objective: np.ndarray  # (B,)
    optima: np.ndarray | None  # (B, K): each refit's optimum, if re-optimised
    n_failed: int

    def _interval(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tail = 100 * (1 - self.level) / 2
        low, high = np.percentile(values, [tail, 100 - tail], axis=0)
        return np.asarray(low), np.asarray(high)

    @property
    def predicted_std(self) -> np.ndarray:
        return np.asarray(self.predicted.std(axis=0, ddof=1))

    @property
    def predicted_interval(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) per domain, the central ``level`` percentile interval."""
        return self._interval(self.predicted)

    @property
    def objective_interval(self) -> tuple[float, float]:
        low, high = self._interval(self.objective)
        return float(low), float(high)

    @property
    def optima_l1(self) -> np.ndarray | None:
        """(B,) L1 distance of each resample's optimum to the chosen mixture."""
        if self.optima is None:
            return None
        return np.asarray(np.abs(self.optima - self.chosen).sum(axis=1))

    def summary(self, domains: Sequence[str], eval_domains: Sequence[str]) -> dict[str, object]:
        """Plain-data intervals for logs and JSON."""
        low, high = self.predicted_interval
        out: dict[str, object] = {
            "resamples": int(self.predicted.shape[0]),
            "failed": self.n_failed,
            "level": self.level,
            "predicted": {
                d: {"std": float(s), "low": float(lo), "high": float(hi)}
                for d, s, lo, hi in zip(eval_domains, self.predicted_std, low, high, strict=True)
            },
            "objective_interval": list(self.objective_interval),
        }
        if self.optima is not None and self.optima_l1 is not None:
            w_low, w_high = self._interval(self.optima)
            out["weights"] = {
                d: {"std": float(s), "low": float(lo), "high": float(hi)}
                for d, s, lo, hi in zip(
                    domains, self.optima.std(axis=0, ddof=1), w_low, w_high, strict=True
                )
            }
            out["optimum_l1_median"] = float(np.median(self.optima_l1))
        return out


def bootstrap(
    law: MixingLaw,
    mixtures: np.ndarray,
    losses: np.ndarray,
    chosen: np.ndarray,
    objective: Objective,
    prior: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 50,
    level: float = 0.9,
    seed: int = 0,
    reoptimize: bool = True,
    caps: Sequence[float] | np.ndarray | None = None,
    kl_weight: float = 0.0,
    max_kl: float | None = None,
) -> BootstrapResult:
    """Refit ``law`` on ``n_resamples`` bootstrap resamples of the swarm (see above)."""
    x, y = check_swarm(mixtures, losses)
    w = np.asarray(chosen, dtype=np.float64)
    if w.shape != (x.shape[1],):
        raise ConfigError(f"bootstrap: the chosen mixture has {w.size} weights, not {x.shape[1]}")
    if n_resamples < 2:
        raise ConfigError(f"search.bootstrap: needs at least 2 resamples, got {n_resamples}")
    if not 0 < level < 1:
        raise ConfigError(f"search.bootstrap_level: must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    predicted, optima = [], []
    failed = 0
    for _ in range(n_resamples):
        rows = rng.integers(0, n, size=n)
        try:
            fitted = law.fit(x[rows], y[rows])
        except (ValueError, np.linalg.LinAlgError):  # a degenerate resample; counted below
            failed += 1
            continue
        predicted.append(fitted.predict(w)[0])
        if reoptimize:
            result = optimize_mixture(
                fitted,
                objective,
                prior,
                caps=caps,
                kl_weight=kl_weight,
                max_kl=max_kl,
                starts=w[None, :],
                n_random_starts=0,
                n_runner_ups=0,
                n_candidates=2_000,
                seed=seed,
            )
            optima.append(result.best.weights)
    if len(predicted) < 2:
        raise DataError(
            f"bootstrap: {failed} of {n_resamples} refits failed; the swarm is too small or "
            "degenerate for this law"
        )
    pred = np.array(predicted)
    return BootstrapResult(
        level=level,
        chosen=w.copy(),
        predicted=pred,
        objective=np.asarray(objective(pred)),
        optima=np.array(optima) if reoptimize else None,
        n_failed=failed,
    )
