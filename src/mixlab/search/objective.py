"""What "the best mixture" means: one number from the per-domain validation losses.

A mixing law predicts a loss ``L_i`` (nats per token) for every evaluation domain ``i``; the
optimiser needs a single score to minimise. Four objectives (``search.objective``):

* ``mean`` (default)  ``(1/D) * sum_i L_i`` = log of the geometric-mean perplexity over domains,
  the headline metric of the comparisons (every domain counts the same).
* ``worst``           ``max_i L_i``: the worst domain. Not differentiable where two domains tie,
  so :mod:`mixlab.search.optimize` minimises it in epigraph form (``min z`` s.t. ``z >= L_i``).
* ``weighted``        ``sum_i a_i L_i`` with user weights ``a_i >= 0`` (normalised to sum 1 so
  values stay in nats per token).
* ``natural``         ``sum_i a_i L_i`` with ``a_i`` the domains' natural token shares: the loss
  of the natural corpus, which up-weights big domains.

All but ``worst`` are linear in the losses: :attr:`Objective.domain_weights` holds ``a``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mixlab.errors import ConfigError

OBJECTIVES: tuple[str, ...] = ("mean", "worst", "weighted", "natural")


@dataclass(frozen=True)
class Objective:
    """A score of per-domain losses; lower is better.

    ``domain_weights`` is ``a`` (D,) for the linear objectives and None for ``worst``.
    """

    kind: str
    n_domains: int
    domain_weights: np.ndarray | None

    @property
    def is_linear(self) -> bool:
        return self.domain_weights is not None

    def __call__(self, losses: np.ndarray) -> np.ndarray:
        """(m,) scores of the rows of ``losses`` (m, D); a (D,) vector gives a 0-d array."""
        values = np.asarray(losses, dtype=np.float64)
        if values.shape[-1] != self.n_domains:
            raise ConfigError(
                f"objective {self.kind!r}: losses for {values.shape[-1]} domains, "
                f"expected {self.n_domains}"
            )
        if self.domain_weights is None:
            return np.asarray(values.max(axis=-1))
        return np.asarray(values @ self.domain_weights)


def _weights(values: Sequence[float] | np.ndarray, n_domains: int, what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.shape != (n_domains,):
        raise ConfigError(f"objective: {what} has {a.size} values for {n_domains} domains")
    if not (np.isfinite(a).all() and (a >= 0).all() and a.sum() > 0):
        raise ConfigError(f"objective: {what} must be finite, >= 0 and not all 0, got {a.tolist()}")
    return a / a.sum()


def make_objective(
    kind: str = "mean",
    n_domains: int = 1,
    *,
    weights: Sequence[float] | np.ndarray | None = None,
    domain_tokens: Sequence[float] | np.ndarray | None = None,
) -> Objective:
    """Build an objective over ``n_domains`` evaluation domains.

    ``weighted`` needs ``weights`` (one per evaluation domain); ``natural`` needs
    ``domain_tokens`` (training tokens of each evaluation domain). ConfigError otherwise.
    """
    if kind not in OBJECTIVES:
        raise ConfigError(f"objective: unknown {kind!r}; choose one of {', '.join(OBJECTIVES)}")
    if n_domains < 1:
        raise ConfigError(f"objective: needs at least one domain, got {n_domains}")
    if kind == "worst":
        return Objective(kind, n_domains, None)
    if kind == "mean":
        return Objective(kind, n_domains, np.full(n_domains, 1.0 / n_domains))
    if kind == "weighted":
        if weights is None:
            raise ConfigError("objective 'weighted' needs one weight per evaluation domain")
        return Objective(kind, n_domains, _weights(weights, n_domains, "weights"))
    if domain_tokens is None:
        raise ConfigError("objective 'natural' needs the training tokens of every domain")
    return Objective(kind, n_domains, _weights(domain_tokens, n_domains, "domain_tokens"))
