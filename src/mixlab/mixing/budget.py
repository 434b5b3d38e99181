"""Token budgets and repetition: how many epochs of each domain a mixture implies.

A run of ``B`` tokens (optimiser steps x tokens per step) sampled with mixture ``w`` (token
shares) serves ``w_d * B`` tokens of domain ``d``, which holds ``N_d`` training tokens, so it
repeats that domain

    e_d = w_d * B / N_d   epochs.

The natural mixture samples every domain in proportion to its size, ``w_d = N_d / sum N``
(:func:`natural_weights`); a natural run therefore repeats every domain equally often.

Scarce domains are where mixtures go wrong: a mixture that looks balanced can mean 20 epochs
of a small domain at the target budget (METHODS.md §7). Everything in mixlab that reasons about
repetition (epoch caps, UniMax, repetition-matched proxies, engine exports) starts here.

**Epoch caps.** A cap ``e_d <= E_d`` is the weight bound ``w_d <= u_d = E_d * N_d / B``
(:func:`weight_caps`). :func:`cap_weights` turns any mixture into a feasible one: clip every
domain at its bound and hand the surplus to the domains still below theirs, in proportion to
their weights; repeat until nothing exceeds its bound (at most K rounds, since each round pins
at least one more domain). It is infeasible when ``sum_d E_d * N_d < B``: the data cannot fill
the budget without breaking some cap.

**UniMax** (Chung et al. 2023, arXiv 2304.09151), :func:`unimax_weights`: visit the domains in
increasing order of size; each gets the smaller of an equal share of the budget still unassigned
and its cap ``E_d * N_d``; subtract and go on. ``w_d = allocation_d / B``. With ``E = inf`` it is
uniform; with a small ``E`` scarce domains sit at their cap and the rest share the remainder
equally. The knob is ``E`` (the paper's "max epochs", typically 1-5).

:func:`budget_summary` puts requested, capped and achieved shares and epochs side by side for
logging (ARCHITECTURE rule 9: report achieved vs requested shares and repetition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mixlab.errors import ConfigError, DataError
from mixlab.mixing.base import validate_weights


def natural_weights(tokens: Sequence[float] | np.ndarray) -> np.ndarray:
    """(K,) float64 natural token shares ``N_d / sum N`` of per-domain training-token counts.

    DataError when the counts are not a non-empty list of finite numbers >= 0 with a positive
    total (a store without training tokens has no natural mixture).
    """
    n = np.asarray(tokens, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or not np.all(np.isfinite(n)) or np.any(n < 0) or n.sum() <= 0:
        raise DataError(
            f"natural weights need per-domain training-token counts >= 0 with a positive "
            f"total, got {n.tolist()}; prepare the store again (mixlab prepare)"
        )
    return n / n.sum()


def epochs(
    weights: Sequence[float] | np.ndarray,
    budget_tokens: float,
    domain_tokens: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """(K,) epochs ``w_d * B / N_d`` of each domain; ``inf`` for a weighted domain with no data.

    A domain with weight 0 has 0 epochs whatever its size.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = np.asarray(domain_tokens, dtype=np.float64)
    if w.shape != n.shape:
        raise ConfigError(
            f"epochs: {w.shape[0] if w.ndim else 0} weights for {n.shape[0] if n.ndim else 0} "
            "domains"
        )
    if not (np.isfinite(budget_tokens) and budget_tokens >= 0):
        raise ConfigError(f"epochs: the token budget must be a number >= 0, got {budget_tokens}")
    served = w * float(budget_tokens)
    out = np.zeros_like(served)
    has_data = n > 0
    out[has_data] = served[has_data] / n[has_data]
    out[~has_data & (served > 0)] = np.inf
    return out


def _domain_tokens(domain_tokens: Sequence[float] | np.ndarray, where: str) -> np.ndarray:
    n = np.asarray(domain_tokens, dtype=np.float64)
    if n.ndim != 1 or n.size == 0:
        raise ConfigError(
            f"{where}: domain_tokens must be one count per domain, got shape {n.shape}"
        )
    if not (np.isfinite(n).all() and (n >= 0).all()):
        raise ConfigError(f"{where}: domain token counts must be finite and >= 0, got {n.tolist()}")
    return n


def _max_epochs(max_epochs: float | Sequence[float] | np.ndarray, k: int, where: str) -> np.ndarray:
    e = np.asarray(max_epochs, dtype=np.float64)
    if e.ndim == 0:
        e = np.full(k, float(e))
    if e.shape != (k,):
        raise ConfigError(
            f"{where}: max_epochs has {e.size} values for {k} domains "
            "(give one number for every domain, or one per domain)"
        )
    bad = np.isnan(e) | (e < 0)
    if bad.any():
        raise ConfigError(
            f"{where}: max_epochs must be >= 0 (inf = no cap), got {e[bad][0]} "
            f"for domain #{int(np.flatnonzero(bad)[0])}"
        )
    return e


def _budget(budget_tokens: float, where: str) -> float:
    b = float(budget_tokens)
    if not (np.isfinite(b) and b > 0):
        raise ConfigError(f"{where}: the token budget must be a number > 0, got {budget_tokens}")
    return b


def _capacity_tokens(e: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Tokens each domain may serve, ``E_d * N_d``; 0 for a domain with no data (even if E=inf)."""
    out = np.zeros_like(n)
    has_data = n > 0
    out[has_data] = e[has_data] * n[has_data]
    return out


def _check_feasible(e: np.ndarray, n: np.ndarray, b: float, where: str) -> None:
    capacity = float(_capacity_tokens(e, n).sum())
    if capacity >= b * (1.0 - 1e-12):
        return
    short = b - capacity
    if n.sum() <= 0:
        raise ConfigError(f"{where}: no domain has training tokens, so no budget can be served")
    if np.all(e == e[0]):
        fix = f"raise max_epochs to at least {b / n.sum():.4g}"
    else:
        fix = f"scale the per-domain max_epochs up by at least {b / capacity:.4g}x"
    raise ConfigError(
        f"{where}: the epoch caps let the data serve at most {capacity:.6g} tokens "
        f"(sum of max_epochs x domain tokens) but the budget is {b:.6g} tokens, "
        f"{short:.6g} ({100 * short / b:.3g}%) short: {fix}, lower the budget or add data"
    )


def weight_caps(
    max_epochs: float | Sequence[float] | np.ndarray,
    budget_tokens: float,
    domain_tokens: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """(K,) upper bounds ``u_d = E_d * N_d / B`` on the weights that epoch caps imply.

    ``max_epochs`` is one number for every domain or one per domain; ``inf`` means no cap
    (``u_d = inf``). A domain with no training tokens can serve nothing: ``u_d = 0`` whatever
    its cap. Does not check feasibility (``sum_d u_d >= 1``); :func:`cap_weights` does.
    """
    n = _domain_tokens(domain_tokens, "weight_caps")
    e = _max_epochs(max_epochs, n.size, "weight_caps")
    return _capacity_tokens(e, n) / _budget(budget_tokens, "weight_caps")


def run_caps(
    max_epochs: float | Mapping[str, float],
    domains: Sequence[str],
    budget_tokens: float,
    domain_tokens: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """Weight caps of a run from ``mixing.max_epochs`` (one number, or domain -> number).

    Domains missing from a mapping are not capped; an unknown name is a ConfigError. Raises a
    ConfigError when the caps cannot hold the budget (sum_d E_d N_d < B).
    """
    if isinstance(max_epochs, Mapping):
        unknown = sorted(set(max_epochs) - set(domains))
        if unknown:
            raise ConfigError(
                f"mixing.max_epochs: unknown domain(s) {', '.join(unknown)}; the store has "
                f"{', '.join(domains)}"
            )
        values = np.array([float(max_epochs.get(d, np.inf)) for d in domains])
    else:
        values = np.full(len(domains), float(max_epochs))
    if (values <= 0).any() or np.isnan(values).any():
        raise ConfigError(f"mixing.max_epochs: every cap must be > 0, got {max_epochs!r}")
    n = _domain_tokens(domain_tokens, "mixing.max_epochs")
    _check_feasible(values, n, _budget(budget_tokens, "mixing.max_epochs"), "mixing.max_epochs")
    return weight_caps(values, budget_tokens, n)


def clip_to_caps(
    weights: Sequence[float] | np.ndarray, caps: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Project a mixture under weight upper bounds ``caps`` by clip-and-redistribute.

    Every domain above its bound is set to it; the surplus goes to the domains not yet pinned,
    in proportion to their weights, and the loop repeats until no domain is above its bound.
    When the unpinned domains all have weight 0 (e.g. the mixture put everything on one
    capped domain), the surplus is spread **uniformly** over the unpinned domains whose bound
    is > 0: there is no preference to follow, and uniform is the least informative choice.

    The weights must be finite, >= 0 and sum to 1 within 1e-6; the result sums to 1 (within
    1e-12), is >= 0 and respects the caps. ConfigError when ``sum(caps) < 1``.
    """
    w = np.asarray(weights, dtype=np.float64).copy()
    u = np.asarray(caps, dtype=np.float64)
    if w.ndim != 1 or w.shape != u.shape:
        raise ConfigError(f"cap weights: {w.size} weights for {u.size} caps")
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise ConfigError(f"cap weights: weights must be finite and >= 0, got {w.tolist()}")
    if abs(float(w.sum()) - 1.0) > 1e-6:
        raise ConfigError(f"cap weights: weights sum to {w.sum():.8g}, not 1 (tolerance 1e-6)")
    if np.isnan(u).any() or (u < 0).any():
        raise ConfigError(f"cap weights: caps must be >= 0 (inf = none), got {u.tolist()}")
    if float(u.sum()) < 1.0 - 1e-12:
        raise ConfigError(
            f"cap weights: the weight caps sum to {u.sum():.8g} < 1, so no mixture meets them; "
            "raise max_epochs, lower the budget or add data"
        )
    w /= w.sum()
    pinned = np.zeros(w.shape, dtype=bool)
    for _ in range(w.size + 1):  # each round pins at least one more domain
        over = w > u
        if not over.any():
            break
        surplus = float((w[over] - u[over]).sum())
        w[over] = u[over]
        pinned |= over
        free = ~pinned
        base = float(w[free].sum())
        if base > 0:
            w[free] += surplus * w[free] / base
        else:
            room = free & (u > 0)
            if not room.any():  # only rounding is left over: the caps are feasible
                break
            w[room] += surplus / room.sum()
    w = np.minimum(w, u)
    return w / w.sum()


def cap_weights(
    weights: Sequence[float] | np.ndarray,
    max_epochs: float | Sequence[float] | np.ndarray,
    budget_tokens: float,
    domain_tokens: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """The mixture ``weights`` with every domain held to at most ``max_epochs`` over the budget.

    ``max_epochs`` is one number or one per domain (``inf`` = no cap). Clip-and-redistribute as
    in :func:`clip_to_caps` with ``u_d = E_d * N_d / B``. ConfigError when the caps cannot fill
    the budget (``sum_d E_d * N_d < B``), saying by how many tokens and what to change.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = _domain_tokens(domain_tokens, "cap weights")
    if w.shape != n.shape:
        raise ConfigError(f"cap weights: {w.size} weights for {n.size} domains")
    e = _max_epochs(max_epochs, n.size, "cap weights")
    b = _budget(budget_tokens, "cap weights")
    _check_feasible(e, n, b, "cap weights")
    return clip_to_caps(w, _capacity_tokens(e, n) / b)


def unimax_weights(
    domain_tokens: Sequence[float] | np.ndarray,
    budget_tokens: float,
    max_epochs: float | Sequence[float] | np.ndarray,
) -> np.ndarray:
    """UniMax (arXiv 2304.09151): as uniform as possible with at most ``max_epochs`` per domain.

    Domains are visited in increasing order of the tokens they may serve, ``E_d * N_d`` (with a
    single ``E`` that is increasing ``N_d``, the paper's order; with per-domain caps this order
    keeps the result the max-min fair allocation). Each gets ``min(remaining / domains_left,
    E_d * N_d)``. Domains with no tokens get 0 and do not count. ``E = inf`` gives uniform over
    the domains with data. ConfigError when ``sum_d E_d * N_d < B``.
    """
    n = _domain_tokens(domain_tokens, "unimax")
    e = _max_epochs(max_epochs, n.size, "unimax")
    b = _budget(budget_tokens, "unimax")
    _check_feasible(e, n, b, "unimax")
    capacity = _capacity_tokens(e, n)
    visit = sorted(np.flatnonzero(n > 0).tolist(), key=lambda d: (capacity[d], n[d], d))
    alloc = np.zeros_like(n)
    remaining = b
    for i, d in enumerate(visit):
        alloc[d] = min(remaining / (len(visit) - i), capacity[d])
        remaining -= alloc[d]
    return alloc / alloc.sum()


@dataclass(frozen=True)
class BudgetSummary:
    """Requested vs capped (vs achieved) token shares and the epochs each implies, per domain.

    ``achieved`` is the share each domain actually got over the whole budget (from the
    sampler's token accounting), or None before the run.
    """

    domains: tuple[str, ...]
    budget_tokens: float
    domain_tokens: np.ndarray
    max_epochs: np.ndarray
    requested: np.ndarray
    capped: np.ndarray
    achieved: np.ndarray | None = None

    @property
    def capped_domains(self) -> tuple[str, ...]:
        """Domains whose weight the caps lowered."""
        lowered = self.capped < self.requested - 1e-12
        return tuple(d for d, low in zip(self.domains, lowered, strict=True) if low)

    def per_domain(self) -> dict[str, dict[str, float]]:
        """``{domain: {requested, capped, achieved?, epochs_requested, epochs_capped,
        epochs_achieved?, max_epochs}}`` as plain floats (``max_epochs`` may be inf)."""
        columns = {
            "requested": self.requested,
            "capped": self.capped,
            "epochs_requested": epochs(self.requested, self.budget_tokens, self.domain_tokens),
            "epochs_capped": epochs(self.capped, self.budget_tokens, self.domain_tokens),
            "max_epochs": self.max_epochs,
        }
        if self.achieved is not None:
            columns["achieved"] = self.achieved
            columns["epochs_achieved"] = epochs(
                self.achieved, self.budget_tokens, self.domain_tokens
            )
        return {
            d: {key: float(col[i]) for key, col in columns.items()}
            for i, d in enumerate(self.domains)
        }

    def log_values(self, prefix: str = "budget") -> dict[str, float]:
        """Flat metric keys ``<prefix>/<field>/<domain>`` for a JSONL sink."""
        return {
            f"{prefix}/{key}/{d}": value
            for d, row in self.per_domain().items()
            for key, value in row.items()
        }


def budget_summary(
    domains: Sequence[str],
    requested: Sequence[float] | np.ndarray,
    *,
    budget_tokens: float,
    domain_tokens: Sequence[float] | np.ndarray,
    max_epochs: float | Sequence[float] | np.ndarray = float("inf"),
    achieved: Sequence[float] | np.ndarray | None = None,
) -> BudgetSummary:
    """Cap ``requested`` with ``max_epochs`` and summarise it next to ``achieved`` (if given)."""
    names = tuple(domains)
    req = validate_weights(requested, names, where="budget summary: requested weights")
    ach = None
    if achieved is not None:
        ach = validate_weights(achieved, names, where="budget summary: achieved weights")
    n = _domain_tokens(domain_tokens, "budget summary")
    if n.size != len(names):
        raise ConfigError(f"budget summary: {n.size} domain token counts for {len(names)} domains")
    e = _max_epochs(max_epochs, len(names), "budget summary")
    capped = cap_weights(req, e, budget_tokens, n)
    return BudgetSummary(
        domains=names,
        budget_tokens=float(budget_tokens),
        domain_tokens=n,
        max_epochs=e,
        requested=req,
        capped=capped,
        achieved=ach,
    )
