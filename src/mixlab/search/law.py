"""Mixing laws: regressions from a mixture to the per-domain validation loss it leads to.

A swarm gives ``n`` runs; run ``m`` trained on mixture ``r_m`` (a point of the K-simplex) and
ended with validation losses ``Y_m`` (one per evaluation domain, D of them). A law is fitted on
``(R, Y)`` and predicts ``L(r)`` (D,) for any mixture, which the optimiser then minimises.

Three laws share one interface (``build_law(name).fit(R, Y).predict(R') -> (m', D)``):

* ``loglinear`` (default), the mixing law of Data Mixing Laws (Ye et al., arXiv 2403.16952),
  also olmix's default: ``L_i(r) = c_i + k_i * exp(sum_j t_ij r_j)`` with ``c_i >= 0``,
  ``k_i > 0``. On the simplex (``sum_j r_j = 1``) only ``log k_i + t_ij`` is identifiable, so we
  fit ``L_i(r) = c_i + exp(sum_j s_ij r_j)`` (``K + 1`` parameters per domain, ``k > 0`` for
  free) and report ``k_i = exp(mean_j s_ij)``, ``t_ij = s_ij - mean_j s_ij``. Each domain is
  fitted by ``scipy.optimize.least_squares`` (trust-region reflective, bound ``c >= 0``,
  analytic Jacobian) with a robust loss (``soft_l1`` by default: quadratic for residuals below
  ``f_scale``, linear above, so one diverged proxy run cannot drag the law). ``f_scale``
  defaults to ``1.345 * sigma``, ``sigma = 1.4826 * MAD`` of the residuals (Huber's
  95%-efficiency constant times a robust noise estimate), re-estimated once after the first
  refinement; ``|s_ij| <= 20`` (``S_MAX``) keeps predictions finite. Starts: ``restarts``
  values of ``c0`` (0.5 and seeded random fractions of ``min y``), each with ``s0`` from a
  near-L1 fit of the linearised law ``log(y - c0) = R s`` (IRLS); the start with the lowest
  robust cost is refined. Robust starts matter: a least-squares start bends toward a diverged
  run and the refinement stays in that basin (tests/search/test_law.py has the case).
* ``linear``: ``L_i(r) = b_i + sum_j a_ij r_j`` by ``numpy.linalg.lstsq`` (minimum-norm: the
  intercept is collinear with the mixture on the simplex, the predictions are not affected).
  Fewer effective parameters; the fallback when the swarm is small. Mind that a linear law's
  optimum is a vertex of the capped simplex (a linear programme): it predicts well inside
  the swarm and extrapolates to an extreme mixture, so pair it with ``kl_weight > 0`` or caps
  (benchmarks/bench_search.py measures the gap on a log-linear truth).
* ``gbm``: one LightGBM regressor per domain (RegMix, arXiv 2407.01492), the optional extra
  ``pip install 'mixlab[search-gbm]'``. Piecewise constant in ``r``, so the optimiser searches
  it by sampling instead of gradients (``smooth = False``).

Smooth fitted laws also give ``jacobian(r) -> (D, K)``, ``dL_i / dr_j``, for the optimiser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy.optimize import least_squares

from mixlab.errors import ConfigError, DataError

SIMPLEX_TOLERANCE = 1e-6
# |s_ij| <= S_MAX: exp(20) ~ 5e8, so the bound only excludes absurd laws (real mixing effects have
# |t| of a few units) while keeping every prediction finite and stopping a fit on pure noise
# from building an arbitrarily steep spike through one run.
S_MAX = 20.0
ROBUST_LOSSES = ("linear", "soft_l1", "huber", "cauchy", "arctan")  # scipy least_squares names


@runtime_checkable
class FittedLaw(Protocol):
    """A fitted law: per-domain losses (m, D) for mixtures (m, K)."""

    @property
    def n_domains(self) -> int: ...  # D, evaluation domains

    def predict(self, mixtures: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class DifferentiableLaw(FittedLaw, Protocol):
    """A fitted law with ``jacobian(r) -> (D, K)``, the derivatives ``dL_i / dr_j`` at ``r``."""

    def jacobian(self, mixture: np.ndarray) -> np.ndarray: ...


class MixingLaw(Protocol):
    """An unfitted law; ``smooth`` says whether gradient-based optimisation applies."""

    name: str
    smooth: bool

    def fit(self, mixtures: np.ndarray, losses: np.ndarray) -> FittedLaw: ...


def check_swarm(mixtures: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a swarm: ``mixtures`` (n, K) on the simplex, ``losses`` (n, D) finite, n >= 2."""
    x = np.asarray(mixtures, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise DataError(
            f"swarm: mixtures must be (runs, domains) and losses (runs, eval domains) with the "
            f"same number of runs; got {x.shape} and {y.shape}"
        )
    if x.shape[0] < 2:
        raise DataError(f"swarm: a law needs at least 2 finished runs, got {x.shape[0]}")
    bad = ~np.isfinite(y).all(axis=1)
    if bad.any():
        raise DataError(
            f"swarm: runs {np.flatnonzero(bad).tolist()} have non-finite losses; drop or rerun them"
        )
    if not (np.isfinite(x).all() and (x >= 0).all()):
        raise DataError("swarm: mixtures must be finite and >= 0")
    off = np.abs(x.sum(axis=1) - 1.0) > SIMPLEX_TOLERANCE
    if off.any():
        raise DataError(
            f"swarm: the mixtures of runs {np.flatnonzero(off).tolist()} do not sum to 1 "
            f"(tolerance {SIMPLEX_TOLERANCE}); pass the token shares the runs used"
        )
    return x, y


# --- log-linear ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FittedLogLinear:
    """``L_i(r) = c_i + exp(s_i . r)``; ``k`` and ``t`` give the paper's parametrisation."""

    c: np.ndarray  # (D,)
    s: np.ndarray  # (D, K)

    @property
    def n_domains(self) -> int:
        return int(self.c.size)

    @property
    def k(self) -> np.ndarray:
        return np.exp(self.s.mean(axis=1))

    @property
    def t(self) -> np.ndarray:
        return self.s - self.s.mean(axis=1, keepdims=True)

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        r = np.atleast_2d(np.asarray(mixtures, dtype=np.float64))
        return np.asarray(self.c + np.exp(r @ self.s.T))

    def jacobian(self, mixture: np.ndarray) -> np.ndarray:
        r = np.asarray(mixture, dtype=np.float64)
        return np.asarray(np.exp(self.s @ r)[:, None] * self.s)


def _mad_sigma(r: np.ndarray) -> float:
    """Robust noise estimate: 1.4826 x median absolute deviation (= std for Gaussian noise)."""
    return 1.4826 * float(np.median(np.abs(r - np.median(r))))


def _robust_linear(x: np.ndarray, z: np.ndarray, iterations: int = 8) -> np.ndarray:
    """Near-L1 fit of ``z ~ x @ s`` by iteratively reweighted least squares (soft-L1 weights
    ``(1 + (r/f)^2)^(-1/2)`` with ``f`` a tenth of the residuals' robust scale)."""
    s = np.linalg.lstsq(x, z, rcond=None)[0]
    for _ in range(iterations):
        r = z - x @ s
        f = 0.1 * _mad_sigma(r)
        if not f > 0:
            break
        root_w = (1.0 + (r / f) ** 2) ** -0.25
        s = np.linalg.lstsq(x * root_w[:, None], z * root_w, rcond=None)[0]
    return np.asarray(s)


def _robust_cost(r: np.ndarray, loss: str, scale: float) -> float:
    z = (r / scale) ** 2
    rho = {
        "linear": z,
        "soft_l1": 2.0 * (np.sqrt(1.0 + z) - 1.0),
        "huber": np.where(z <= 1.0, z, 2.0 * np.sqrt(z) - 1.0),
        "cauchy": np.log1p(z),
        "arctan": np.arctan(z),
    }[loss]
    return float(rho.sum())


def _fit_one_loglinear(
    x: np.ndarray, y: np.ndarray, law: LogLinearLaw, rng: np.random.Generator
) -> np.ndarray:
    k = x.shape[1]
    robust = law.loss != "linear"

    def residuals(p: np.ndarray) -> np.ndarray:
        return np.asarray(p[0] + np.exp(x @ p[1:]) - y)

    def jac(p: np.ndarray) -> np.ndarray:
        e = np.exp(x @ p[1:])
        return np.column_stack([np.ones_like(y), e[:, None] * x])

    # Starts: c0 a fraction of min(y); s0 fits the linearised law log(y - c0) = x @ s, robustly
    # when the loss is (a plain fit would already bend toward a diverged run and trap the
    # refinement in that basin).
    fractions = [0.5, *rng.uniform(0.05, 0.95, size=max(law.restarts, 1) - 1).tolist()]
    starts = []
    for frac in fractions:
        c0 = frac * float(y.min())
        z = np.log(y - c0)
        s0 = _robust_linear(x, z) if robust else np.linalg.lstsq(x, z, rcond=None)[0]
        starts.append(np.r_[c0, s0])
    fixed_scale = law.f_scale is not None
    scale = 1.345 * _mad_sigma(residuals(starts[0])) if law.f_scale is None else law.f_scale
    if not scale > 0:
        scale = 1.0  # the first start fits exactly: any scale will do
    params = min(starts, key=lambda p: _robust_cost(residuals(p), law.loss, scale))
    bounds = (np.r_[0.0, np.full(k, -S_MAX)], np.r_[np.inf, np.full(k, S_MAX)])
    params = np.clip(params, bounds[0], bounds[1])
    # Refine the best start; then, with an automatic scale, re-estimate it from the refined
    # residuals and refine once more.
    for _ in range(1 if fixed_scale or not robust else 2):
        fit = least_squares(
            residuals,
            params,
            jac=jac,
            bounds=bounds,
            loss=law.loss,
            f_scale=scale,
            max_nfev=law.max_nfev,
        )
        params = np.asarray(fit.x)
        new_scale = 1.345 * _mad_sigma(fit.fun)
        if not new_scale > 0:
            break
        scale = new_scale
    return params


@dataclass
class LogLinearLaw:
    """Fit ``L_i(r) = c_i + k_i exp(t_i . r)`` per domain (Data Mixing Laws, arXiv 2403.16952).

    ``restarts``: starts per domain (seeded by ``seed``); ``loss``: scipy ``least_squares`` loss
    (``linear`` = plain least squares; ``soft_l1``, ``huber``, ``cauchy``, ``arctan``);
    ``f_scale``: residual size (nats) where the robust loss turns linear (None = automatic,
    ``1.345 * sigma``); ``max_nfev``: evaluations per refinement.
    """

    restarts: int = 3
    loss: str = "soft_l1"
    f_scale: float | None = None
    seed: int = 0
    max_nfev: int = 100
    name: str = field(default="loglinear", init=False)
    smooth: bool = field(default=True, init=False)

    def fit(self, mixtures: np.ndarray, losses: np.ndarray) -> FittedLogLinear:
        x, y = check_swarm(mixtures, losses)
        if self.loss not in ROBUST_LOSSES:
            raise ConfigError(
                f"loglinear law: loss {self.loss!r} unknown; choose one of "
                f"{', '.join(ROBUST_LOSSES)} (linear = plain least squares)"
            )
        if self.restarts < 1 or self.max_nfev < 1:
            raise ConfigError("loglinear law: restarts and max_nfev must be >= 1")
        if self.f_scale is not None and not self.f_scale > 0:
            raise ConfigError(f"loglinear law: f_scale must be > 0 or None, got {self.f_scale}")
        if (y <= 0).any():
            raise DataError("loglinear law: losses must be > 0 (nats per token); use law=linear")
        rng = np.random.default_rng(self.seed)
        params = [_fit_one_loglinear(x, y[:, i], self, rng) for i in range(y.shape[1])]
        p = np.stack(params)
        return FittedLogLinear(c=p[:, 0].copy(), s=p[:, 1:].copy())


# --- linear ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FittedLinear:
    """``L(r) = intercept + r @ coef``; ``coef`` is (K, D)."""

    intercept: np.ndarray  # (D,)
    coef: np.ndarray  # (K, D)

    @property
    def n_domains(self) -> int:
        return int(self.intercept.size)

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        r = np.atleast_2d(np.asarray(mixtures, dtype=np.float64))
        return np.asarray(self.intercept + r @ self.coef)

    def jacobian(self, mixture: np.ndarray) -> np.ndarray:
        return np.asarray(self.coef.T)


@dataclass
class LinearLaw:
    """Least squares with an intercept (``numpy.linalg.lstsq``, minimum norm)."""

    seed: int = 0  # unused: the fit is deterministic; accepted so every law takes a seed
    name: str = field(default="linear", init=False)
    smooth: bool = field(default=True, init=False)

    def fit(self, mixtures: np.ndarray, losses: np.ndarray) -> FittedLinear:
        x, y = check_swarm(mixtures, losses)
        design = np.column_stack([np.ones(x.shape[0]), x])
        beta = np.linalg.lstsq(design, y, rcond=None)[0]
        return FittedLinear(intercept=beta[0].copy(), coef=beta[1:].copy())


# --- gradient-boosted trees (optional extra) -------------------------------------------------


@dataclass(frozen=True)
class FittedGBM:
    """One LightGBM regressor per evaluation domain."""

    models: tuple[Any, ...]

    @property
    def n_domains(self) -> int:
        return len(self.models)

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        r = np.atleast_2d(np.asarray(mixtures, dtype=np.float64))
        return np.column_stack([m.predict(r) for m in self.models])


@dataclass
class GBMLaw:
    """LightGBM per domain, sized for swarms of tens of runs (RegMix, arXiv 2407.01492)."""

    n_estimators: int = 100
    learning_rate: float = 0.05
    num_leaves: int = 7
    min_child_samples: int = 3
    seed: int = 0
    name: str = field(default="gbm", init=False)
    smooth: bool = field(default=False, init=False)

    def fit(self, mixtures: np.ndarray, losses: np.ndarray) -> FittedGBM:
        x, y = check_swarm(mixtures, losses)
        try:
            import lightgbm
        except ImportError:
            raise ConfigError(
                "law=gbm needs LightGBM: pip install 'mixlab[search-gbm]' "
                "(or use law=loglinear / law=linear)"
            ) from None
        models = []
        for i in range(y.shape[1]):
            model = lightgbm.LGBMRegressor(
                n_estimators=self.n_estimators,
                learning_rate=self.learning_rate,
                num_leaves=self.num_leaves,
                min_child_samples=self.min_child_samples,
                min_data_in_bin=1,
                random_state=self.seed,
                n_jobs=1,
                verbose=-1,
            )
            model.fit(x, y[:, i])
            models.append(model)
        return FittedGBM(models=tuple(models))


_LAWS: dict[str, Callable[..., MixingLaw]] = {
    "loglinear": LogLinearLaw,
    "linear": LinearLaw,
    "gbm": GBMLaw,
}


def available_laws() -> tuple[str, ...]:
    return tuple(_LAWS)


def build_law(name: str = "loglinear", **options: Any) -> MixingLaw:
    """The law called ``name`` with its ``options`` (e.g. ``restarts=8, seed=1``)."""
    if name not in _LAWS:
        raise ConfigError(f"search.law: unknown law {name!r}; choose one of {', '.join(_LAWS)}")
    try:
        return _LAWS[name](**options)
    except TypeError as exc:
        raise ConfigError(f"search.law {name!r}: bad option ({exc})") from None
