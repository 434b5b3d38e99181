"""Swarm proposals: which mixtures to train small proxy runs on.

A mixing law is only as good as the spread of the mixtures it is fitted on. Following RegMix
(arXiv 2407.01492) and olmix (arXiv 2602.12237) the swarm is

1. the **prior** ``p0`` itself (natural, uniform or UniMax weights: the caller's choice), so the
   law is anchored where the default run would be;
2. the **corners**: for each domain ``d`` in the prior's support, ``w_d`` pushed to its largest
   feasible value (``min(1, u_d)``, ``u_d = E_d N_d / B`` the epoch-cap bound) and the rest
   shared by the prior; without caps a corner is the pure-domain mixture. Corners pin down
   each domain's own-loss curve (the diagonal ``t_ii`` of the log-linear law);
3. ``n`` draws from a **Dirichlet around the prior**, ``w ~ Dir(alpha)`` with
   ``alpha = c * K * p0`` (``c`` = ``concentration``). Then ``E[w] = p0`` and
   ``Var[w_d] = p0_d (1 - p0_d) / (c K + 1)``. Scaling by ``K`` makes ``c`` mean the same thing
   for every number of domains: with a uniform prior ``alpha_d = c``, so ``c = 1`` is the flat
   distribution on the simplex, ``c > 1`` concentrates around the prior, ``c < 1`` pushes toward
   the corners. (``alpha = c * p0`` would make the same ``c`` far more spread for large K.)

Every proposal is made feasible under the caps by :func:`mixlab.mixing.budget.clip_to_caps`,
and near-duplicates (L1 distance < ``min_l1`` from an earlier proposal, which tight caps
produce by clipping many draws onto the same face) are redrawn. Domains with prior weight 0 stay
at 0 in every proposal unless the caps leave no other room. Seeded by a
``numpy.random.Generator``: the same seed gives the same swarm. :func:`default_swarm_size` is
``3 K`` Dirichlet draws (METHODS.md §7), so the total is about ``4 K + 1`` runs for ``K + 1``
law parameters per evaluation domain.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mixlab.errors import ConfigError
from mixlab.mixing.budget import clip_to_caps

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Proposals:
    """The swarm: ``weights`` (m, K) and one label per row (``prior``, ``corner/<domain>``,
    ``dirichlet/<i>``)."""

    weights: np.ndarray
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def default_swarm_size(n_domains: int) -> int:
    """Dirichlet draws for ``n_domains`` domains: ``3 K`` (prior and corners come on top)."""
    if n_domains < 1:
        raise ConfigError(f"search: needs at least one domain, got {n_domains}")
    return 3 * n_domains


def check_prior(prior: Sequence[float] | np.ndarray, where: str = "search.prior") -> np.ndarray:
    """A prior mixture: finite, >= 0, summing to 1 within 1e-6; returned exactly normalised."""
    p = np.asarray(prior, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ConfigError(f"{where}: one weight per domain expected, got shape {p.shape}")
    if not (np.isfinite(p).all() and (p >= 0).all()):
        raise ConfigError(f"{where}: weights must be finite and >= 0, got {p.tolist()}")
    if abs(float(p.sum()) - 1.0) > 1e-6:
        raise ConfigError(f"{where}: weights sum to {p.sum():.8g}, not 1 (tolerance 1e-6)")
    return p / p.sum()


def feasible(weights: np.ndarray, caps: np.ndarray | None) -> np.ndarray:
    """``weights`` made feasible under ``caps`` (None = no caps)."""
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum() if caps is None else clip_to_caps(w / w.sum(), caps)


def _corner(prior: np.ndarray, d: int, caps: np.ndarray | None) -> np.ndarray:
    top = 1.0 if caps is None else min(1.0, float(caps[d]))
    rest = prior.copy()
    rest[d] = 0.0
    if rest.sum() > 0:
        rest /= rest.sum()
    else:  # the prior is all on d: spread the remainder uniformly over the other domains
        rest = np.ones_like(prior)
        rest[d] = 0.0
        rest /= max(rest.sum(), 1.0)
    w = rest * (1.0 - top)
    w[d] = top
    return feasible(w, caps)


def propose_mixtures(
    prior: Sequence[float] | np.ndarray,
    n: int,
    *,
    concentration: float = 1.0,
    seed: int = 0,
    caps: Sequence[float] | np.ndarray | None = None,
    include_prior: bool = True,
    include_corners: bool = True,
    domains: Sequence[str] | None = None,
    min_l1: float = 0.01,
) -> Proposals:
    """The prior, the feasible corners and ``n`` Dirichlet draws around the prior (see above).

    ``caps`` are weight upper bounds (``mixlab.mixing.budget.weight_caps``). Returns fewer than
    ``n`` draws (with a warning) only when the caps leave too little room for ``n`` mixtures
    ``min_l1`` apart.
    """
    p = check_prior(prior)
    k = p.size
    names = tuple(domains) if domains is not None else tuple(str(i) for i in range(k))
    if len(names) != k:
        raise ConfigError(f"search: {len(names)} domain names for a prior of {k} weights")
    if not (np.isfinite(concentration) and concentration > 0):
        raise ConfigError(f"search.concentration: must be > 0, got {concentration}")
    if n < 0:
        raise ConfigError(f"search.swarm_size: must be >= 0, got {n}")
    u = None if caps is None else np.asarray(caps, dtype=np.float64)
    if u is not None and u.shape != (k,):
        raise ConfigError(f"search: {u.size} weight caps for {k} domains")

    rows = np.empty((n + k + 1, k))
    labels: list[str] = []

    def add(w: np.ndarray, label: str) -> bool:
        m = len(labels)
        if m and np.abs(rows[:m] - w).sum(axis=1).min() < min_l1:
            return False
        rows[m] = w
        labels.append(label)
        return True

    if include_prior:
        add(feasible(p, u), "prior")
    support = np.flatnonzero(p > 0)
    if include_corners:
        for d in support:
            add(_corner(p, int(d), u), f"corner/{names[d]}")

    rng = np.random.default_rng(seed)
    alpha = concentration * k * p[support]
    drawn = attempts = 0
    max_attempts = 100 * max(n, 1)
    while drawn < n and attempts < max_attempts:
        attempts += 1
        sample = rng.dirichlet(alpha)
        if not (np.isfinite(sample).all() and sample.sum() > 0):
            continue  # tiny alphas can underflow every component; draw again
        w = np.zeros(k)
        w[support] = sample
        if add(feasible(w, u), f"dirichlet/{drawn}"):
            drawn += 1
    if drawn < n:
        logger.warning(
            "search: only %d of %d Dirichlet mixtures are %.3g apart (L1) under the epoch caps; "
            "the swarm has %d runs",
            drawn,
            n,
            min_l1,
            len(labels),
        )
    return Proposals(weights=rows[: len(labels)].copy(), labels=tuple(labels))
