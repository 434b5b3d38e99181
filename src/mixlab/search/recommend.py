"""One call from a finished swarm to a recommended mixture: fit, judge, optimise, bootstrap.

:func:`search_mixture` chains the steps of the package on the swarm's mixtures (n, K) and
per-domain validation losses (n, D):

1. cross-validate the law (:mod:`~mixlab.search.validate`) and give a :class:`Verdict`;
2. fit it on every run and minimise the objective under the caps
   (:mod:`~mixlab.search.optimize`), starting also from the ``n_best_starts`` best swarm runs;
3. bootstrap the law over the runs for intervals on the predictions and the spread of the
   optimum (:mod:`~mixlab.search.bootstrap`; ``n_bootstrap=0`` skips it).

The optimum is computed even when the verdict refuses (so a user can look at it), but
``SearchResult.to_dict()["recommended"]`` is the verdict: callers should not write it as the
mixture to train unless it is True (or the user insists).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mixlab.errors import ConfigError
from mixlab.search.bootstrap import BootstrapResult, bootstrap
from mixlab.search.law import FittedLaw, MixingLaw, build_law, check_swarm
from mixlab.search.objective import Objective, make_objective
from mixlab.search.optimize import Candidate, OptimizeResult, kl_divergence, optimize_mixture
from mixlab.search.propose import check_prior
from mixlab.search.validate import CrossValidation, Verdict, cross_validate, verdict


@dataclass(frozen=True)
class SearchResult:
    law: str
    fitted: FittedLaw
    cv: CrossValidation
    verdict: Verdict
    optimum: OptimizeResult
    uncertainty: BootstrapResult | None
    prior: np.ndarray
    caps: np.ndarray | None
    max_kl: float | None = None  # the trust region's radius (nats), None = none

    @property
    def weights(self) -> np.ndarray:
        return self.optimum.best.weights

    def to_dict(self, domains: Sequence[str], eval_domains: Sequence[str]) -> dict[str, object]:
        """JSON-ready; ``{"weights": {...}}`` is what ``mixing.name=fixed`` reads."""

        def named(values: np.ndarray, names: Sequence[str]) -> dict[str, float]:
            return {d: float(v) for d, v in zip(names, values, strict=True)}

        def candidate(c: Candidate) -> dict[str, object]:
            return {
                "weights": named(c.weights, domains),
                "predicted": named(c.predicted, eval_domains),
                "objective": c.objective,
            }

        best = self.optimum.best
        out: dict[str, object] = {
            "weights": named(best.weights, domains),
            "recommended": self.verdict.recommend,
            "verdict": {
                "reasons": list(self.verdict.reasons),
                "advice": list(self.verdict.advice),
                "warnings": list(self.verdict.warnings),
            },
            "predicted": named(best.predicted, eval_domains),
            "objective": best.objective,
            "penalised_objective": best.penalised,
            "prior": named(self.prior, domains),
            "caps": None
            if self.caps is None
            else {
                d: (float(u) if np.isfinite(u) else None)
                for d, u in zip(domains, self.caps, strict=True)
            },
            "runner_ups": [candidate(c) for c in self.optimum.runner_ups],
            "fit": self.cv.summary(tuple(eval_domains)),
            "optimizer": {"method": self.optimum.method, "starts": self.optimum.n_starts},
            "trust_region": {
                "max_kl": self.max_kl,
                "kl": float(kl_divergence(best.weights, self.prior)),
            },
        }
        if self.uncertainty is not None:
            out["uncertainty"] = self.uncertainty.summary(domains, eval_domains)
        return out


def trust_radius(
    trust_region: str | float | None, mixtures: np.ndarray, prior: np.ndarray
) -> float | None:
    """The trust region's radius in nats of ``KL(w || prior)``: ``median``/``max`` over the
    swarm's mixtures (those the prior gives support), a number, or None (no region)."""
    if trust_region is None:
        return None
    if isinstance(trust_region, str):
        inside = mixtures[(mixtures[:, prior <= 0] <= 0).all(axis=1)]
        spread = kl_divergence(inside, prior) if inside.size else np.zeros(1)
        if trust_region == "median":
            return float(np.median(spread))
        if trust_region == "max":
            return float(np.max(spread))
        raise ConfigError(
            f"search.trust_region: {trust_region!r} is not median, max, a number or null"
        )
    if not (np.isfinite(trust_region) and trust_region >= 0):
        raise ConfigError(f"search.trust_region: must be >= 0 nats, got {trust_region}")
    return float(trust_region)


def search_mixture(
    mixtures: np.ndarray,
    losses: np.ndarray,
    prior: Sequence[float] | np.ndarray,
    *,
    objective: Objective | None = None,
    law: str | MixingLaw = "loglinear",
    caps: Sequence[float] | np.ndarray | None = None,
    kl_weight: float = 0.0,
    trust_region: str | float | None = "median",
    n_best_starts: int = 3,
    cv_folds: int | None = None,
    n_bootstrap: int = 50,
    bootstrap_level: float = 0.9,
    min_spearman: float = 0.7,
    min_objective_r2: float = 0.5,
    eval_domains: Sequence[str] | None = None,
    seed: int = 0,
) -> SearchResult:
    """Fit, judge, optimise and bootstrap a mixing law on a finished swarm (see above).

    ``objective`` defaults to the mean loss over the evaluation domains; ``law`` is a name
    (built with ``seed``) or a configured law; ``caps`` are weight upper bounds
    (:func:`mixlab.mixing.budget.weight_caps`). ``trust_region`` bounds ``KL(w || prior)`` of
    the answer: ``"median"`` / ``"max"`` of the swarm's own mixtures (the law is evidence only
    where the swarm sampled), a number of nats, or None for no bound.
    """
    x, y = check_swarm(mixtures, losses)
    p = check_prior(prior)
    obj = objective if objective is not None else make_objective("mean", y.shape[1])
    mixing_law = build_law(law, seed=seed) if isinstance(law, str) else law
    u = None if caps is None else np.asarray(caps, dtype=np.float64)

    cv = cross_validate(mixing_law, x, y, obj, folds=cv_folds, seed=seed)
    names = tuple(eval_domains) if eval_domains is not None else None
    judged = verdict(
        cv, min_spearman=min_spearman, min_objective_r2=min_objective_r2, eval_domains=names
    )
    fitted = mixing_law.fit(x, y)
    max_kl = trust_radius(trust_region, x, p)
    best_runs = x[np.argsort(obj(y))[: max(n_best_starts, 0)]]
    optimum = optimize_mixture(
        fitted,
        obj,
        p,
        caps=u,
        kl_weight=kl_weight,
        max_kl=max_kl,
        starts=best_runs,
        seed=seed,
    )
    uncertainty = None
    if n_bootstrap > 0:
        uncertainty = bootstrap(
            mixing_law,
            x,
            y,
            optimum.best.weights,
            obj,
            p,
            n_resamples=n_bootstrap,
            level=bootstrap_level,
            seed=seed,
            caps=u,
            kl_weight=kl_weight,
            max_kl=max_kl,
        )
    return SearchResult(
        law=mixing_law.name,
        fitted=fitted,
        cv=cv,
        verdict=judged,
        optimum=optimum,
        uncertainty=uncertainty,
        prior=p,
        caps=u,
        max_kl=max_kl,
    )
