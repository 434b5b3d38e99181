"""Choose the mixture: minimise the objective of a fitted law over the capped simplex.

Problem (``w`` the mixture, ``L(w)`` the law's per-domain losses, ``p`` the prior)::

    minimise   f(w) = objective(L(w)) + lam * KL(w || p),   KL(w || p) = sum_d w_d log(w_d / p_d)
    subject to sum_d w_d = 1,   0 <= w_d <= u_d = min(1, E_d N_d / B)   (epoch caps)
               KL(w || p) <= rho                                      (trust region, optional)

``lam`` (``kl_weight``) keeps the answer near the prior, where the swarm has data and the law
can be trusted; a huge ``lam`` returns the prior (projected on the caps). With ``lam > 0`` (or
a trust region) domains the prior excludes stay excluded (their KL would be infinite).

``rho`` (``max_kl``) is a hard trust region: a fitted law is only evidence where the swarm
sampled, and its unconstrained optimum is often a vertex far outside it (measured on the demo
corpus: a law with held-out Spearman 0.90 put 0 on four domains and 46% on one, and the target
run was 14% worse in geometric-mean perplexity than uniform). :func:`~mixlab.search.recommend.
search_mixture` sets ``rho`` from the swarm itself (the median KL of its mixtures to the prior).

* Smooth laws (``loglinear``, ``linear``: they give a Jacobian) are solved with SciPy's SLSQP
  (sequential least squares QP: handles the equality, the bounds and, for ``worst``, the
  epigraph constraints ``z >= L_i(w)`` exactly, with analytic gradients). SLSQP is local, so it
  runs from several starts: the prior, uniform, the caller's ``starts`` (e.g. the best swarm
  runs) and ``n_random_starts`` Dirichlet draws around the prior. Every result is cleaned onto
  the feasible set (clip to ``[0, u]``, :func:`mixlab.mixing.budget.clip_to_caps`) and
  re-scored, and the starts themselves are candidates, so the answer is never worse than the
  best start and always satisfies the caps exactly.
* Non-smooth laws (``gbm``: piecewise constant, zero gradient almost everywhere) are searched
  by scoring ``n_candidates`` feasible Dirichlet draws around the prior plus the starts and
  keeping the best (RegMix's procedure, arXiv 2407.01492).

Runner-ups are the next-best candidates at least ``min_l1`` (L1) from every mixture already
chosen: alternatives a user may prefer that the law scores nearly as well. There may be fewer
than asked when the problem has one basin (common: the log-linear objective is often convex).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from mixlab.errors import ConfigError
from mixlab.mixing.budget import clip_to_caps
from mixlab.search.law import DifferentiableLaw, FittedLaw
from mixlab.search.objective import Objective
from mixlab.search.propose import check_prior

_KL_FLOOR = 1e-12  # w_d is floored here inside KL so its gradient stays finite at w_d = 0


@dataclass(frozen=True)
class Candidate:
    """A mixture, the law's losses there, the objective and ``objective + lam * KL``."""

    weights: np.ndarray  # (K,)
    predicted: np.ndarray  # (D,)
    objective: float
    penalised: float


@dataclass(frozen=True)
class OptimizeResult:
    best: Candidate
    runner_ups: tuple[Candidate, ...]
    method: str  # "slsqp" or "random-search"
    n_starts: int


def kl_divergence(weights: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``KL(w || p)`` in nats for ``w`` (K,) or rows (m, K); domains with ``p_d = 0`` ignored
    (the optimiser keeps them at 0 when the KL term is on)."""
    w = np.maximum(np.asarray(weights, dtype=np.float64), _KL_FLOOR)
    on = prior > 0
    return np.asarray((w[..., on] * np.log(w[..., on] / prior[on])).sum(axis=-1))


class _Problem:
    """The feasible set and the penalised objective, shared by both search methods."""

    def __init__(
        self,
        fitted: FittedLaw,
        objective: Objective,
        prior: np.ndarray,
        caps: np.ndarray | None,
        kl_weight: float,
        max_kl: float | None = None,
    ) -> None:
        k = prior.size
        upper = np.ones(k) if caps is None else np.minimum(1.0, caps)
        if kl_weight > 0 or max_kl is not None:
            upper = np.where(prior > 0, upper, 0.0)
        if upper.sum() < 1.0 - 1e-12:
            raise ConfigError(
                "search: the epoch caps (and, with kl_weight > 0, the prior's support) leave "
                f"weight bounds summing to {upper.sum():.6g} < 1; raise max_epochs or use a "
                "prior that covers more domains"
            )
        self.fitted, self.objective, self.prior = fitted, objective, prior
        self.upper, self.kl_weight, self.max_kl = upper, kl_weight, max_kl

    def inside(self, w: np.ndarray) -> bool:
        """Within the trust region (always, without one)."""
        return self.max_kl is None or float(kl_divergence(w, self.prior)) <= self.max_kl + 1e-9

    def shrink(self, w: np.ndarray) -> np.ndarray:
        """``w`` pulled toward the prior along the straight line until it is inside the trust
        region (bisection; the prior itself is inside)."""
        if self.inside(w):
            return w
        low, high = 0.0, 1.0  # fraction of the way from the prior to w
        for _ in range(50):
            mid = 0.5 * (low + high)
            if self.inside(self.prior + mid * (w - self.prior)):
                low = mid
            else:
                high = mid
        return self.prior + low * (w - self.prior)

    def project(self, weights: np.ndarray) -> np.ndarray | None:
        w = np.clip(np.nan_to_num(np.asarray(weights, dtype=np.float64)), 0.0, None)
        w = np.where(self.upper > 0, w, 0.0)
        if not w.sum() > 0:
            return None
        return self.shrink(clip_to_caps(w / w.sum(), self.upper))

    def score(self, rows: np.ndarray) -> list[Candidate]:
        predicted = self.fitted.predict(rows)
        obj = self.objective(predicted)
        pen = obj + self.kl_weight * kl_divergence(rows, self.prior) if self.kl_weight else obj
        return [
            Candidate(rows[i].copy(), predicted[i].copy(), float(obj[i]), float(pen[i]))
            for i in range(rows.shape[0])
        ]


def _slsqp(problem: _Problem, fitted: DifferentiableLaw, start: np.ndarray) -> np.ndarray:
    k = start.size
    lam, prior, on = problem.kl_weight, problem.prior, problem.prior > 0
    a = problem.objective.domain_weights

    def kl_grad(w: np.ndarray) -> np.ndarray:
        g = np.zeros(k)
        wc = np.maximum(w[on], _KL_FLOOR)
        g[on] = np.log(wc / prior[on]) + 1.0
        return g

    def kl(w: np.ndarray) -> float:
        return float(kl_divergence(w, prior)) if lam else 0.0

    bounds = [(0.0, float(u)) for u in problem.upper]
    total = {"type": "eq", "fun": lambda x: x[:k].sum() - 1.0, "jac": None}
    region: list[dict] = []
    if problem.max_kl is not None:
        rho = problem.max_kl
        region = [
            {
                "type": "ineq",
                "fun": lambda x: rho - float(kl_divergence(x[:k], prior)),
                "jac": lambda x: -np.r_[kl_grad(x[:k]), np.zeros(x.size - k)],
            }
        ]
    options = {"maxiter": 300, "ftol": 1e-12}
    if a is not None:

        def f(w: np.ndarray) -> tuple[float, np.ndarray]:
            value = float(fitted.predict(w)[0] @ a) + lam * kl(w)
            grad = fitted.jacobian(w).T @ a + (lam * kl_grad(w) if lam else 0.0)
            return value, grad

        total["jac"] = lambda x: np.ones(k)
        res = minimize(
            f,
            start,
            jac=True,
            method="SLSQP",
            bounds=bounds,
            constraints=[total, *region],
            options=options,
        )
        return np.asarray(res.x)

    # worst domain, epigraph form: variables (w, z); minimise z s.t. z - L_i(w) >= 0.
    def g(x: np.ndarray) -> tuple[float, np.ndarray]:
        grad = np.zeros(k + 1)
        grad[k] = 1.0
        if lam:
            grad[:k] = lam * kl_grad(x[:k])
        return float(x[k] + lam * kl(x[:k])), grad

    def epigraph(x: np.ndarray) -> np.ndarray:
        return np.asarray(x[k] - fitted.predict(x[:k])[0])

    def epigraph_jac(x: np.ndarray) -> np.ndarray:
        return np.column_stack([-fitted.jacobian(x[:k]), np.ones(fitted.n_domains)])

    total["jac"] = lambda x: np.r_[np.ones(k), 0.0]
    z0 = float(fitted.predict(start)[0].max())
    res = minimize(
        g,
        np.r_[start, z0],
        jac=True,
        method="SLSQP",
        bounds=[*bounds, (None, None)],
        constraints=[total, {"type": "ineq", "fun": epigraph, "jac": epigraph_jac}, *region],
        options=options,
    )
    return np.asarray(res.x[:k])


def _distinct(ranked: Sequence[Candidate], n: int, min_l1: float) -> list[Candidate]:
    chosen: list[Candidate] = []
    for cand in ranked:
        if all(np.abs(cand.weights - c.weights).sum() >= min_l1 for c in chosen):
            chosen.append(cand)
            if len(chosen) == n:
                break
    return chosen


def optimize_mixture(
    fitted: FittedLaw,
    objective: Objective,
    prior: Sequence[float] | np.ndarray,
    *,
    caps: Sequence[float] | np.ndarray | None = None,
    kl_weight: float = 0.0,
    max_kl: float | None = None,
    starts: np.ndarray | None = None,
    n_random_starts: int = 8,
    concentration: float = 1.0,
    n_candidates: int = 20_000,
    n_runner_ups: int = 3,
    min_l1: float = 0.1,
    seed: int = 0,
) -> OptimizeResult:
    """Minimise ``objective(L(w)) + kl_weight * KL(w || prior)`` under the caps (see above).

    ``caps``: weight upper bounds ``E_d N_d / B`` (None = none); ``max_kl``: the trust region
    ``KL(w || prior) <= max_kl`` (None = none); ``starts``: extra start
    mixtures (m, K); ``concentration``: of the Dirichlet random starts / candidates
    (``alpha = c K p``); ``n_candidates``: random-search size for non-smooth laws.
    """
    p = check_prior(prior)
    k = p.size
    u = None if caps is None else np.asarray(caps, dtype=np.float64)
    if u is not None and u.shape != (k,):
        raise ConfigError(f"search: {u.size} weight caps for {k} domains")
    if not (np.isfinite(kl_weight) and kl_weight >= 0):
        raise ConfigError(f"search.kl_weight: must be a number >= 0, got {kl_weight}")
    if not (np.isfinite(concentration) and concentration > 0):
        raise ConfigError(f"search.concentration: must be > 0, got {concentration}")
    if max_kl is not None and not (np.isfinite(max_kl) and max_kl >= 0):
        raise ConfigError(f"search: the trust region (max KL) must be a number >= 0, got {max_kl}")
    problem = _Problem(fitted, objective, p, u, float(kl_weight), max_kl)
    rng = np.random.default_rng(seed)
    support = np.flatnonzero(p > 0)

    def dirichlet(m: int) -> np.ndarray:
        rows = np.zeros((m, k))
        rows[:, support] = rng.dirichlet(concentration * k * p[support], size=m)
        return rows

    raw = [p, np.full(k, 1.0 / k)]
    if starts is not None:
        extra = np.atleast_2d(np.asarray(starts, dtype=np.float64))
        if extra.shape[1] != k:
            raise ConfigError(f"search: start mixtures have {extra.shape[1]} domains, not {k}")
        raw.extend(extra)
    raw.extend(dirichlet(n_random_starts))
    projected = [problem.project(w) for w in raw]
    start_rows = [w for w in projected if w is not None]

    smooth = isinstance(fitted, DifferentiableLaw)
    rows = list(start_rows)
    if isinstance(fitted, DifferentiableLaw):
        for start in start_rows:
            w = problem.project(_slsqp(problem, fitted, start))
            if w is not None:
                rows.append(w)
    else:
        for w in dirichlet(n_candidates):
            w_ok = problem.project(w) if (w > problem.upper).any() else problem.shrink(w)
            if w_ok is not None:
                rows.append(w_ok)
    ranked = sorted(problem.score(np.array(rows)), key=lambda c: c.penalised)
    picked = _distinct(ranked, n_runner_ups + 1, min_l1)
    return OptimizeResult(
        best=picked[0],
        runner_ups=tuple(picked[1:]),
        method="slsqp" if smooth else "random-search",
        n_starts=len(start_rows),
    )
