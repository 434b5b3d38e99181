"""The own-token model of a mixture: each domain's loss log-linear in its own tokens.

Near the end of a budget, ``L_i(n) = c_i - d_i log2 n``: d_i is domain i's loss drop per
doubling of its own tokens (measured over the last doubling of a static-mixture run, or online
by AC-ODM's ``reward: progress`` estimate). Moving from a mixture p to w at the same total
tokens then changes domain i's loss by ``-d_i log2(w_i / p_i)``, and two pure answers follow:

* :func:`optimum` — the mixture that minimises the mean log-loss (log geo_ppl),
  ``argmax sum_i d_i log w_i`` on the simplex with lower bounds: ``w_i = max(f_i, d_i / lambda)``;
* :func:`worst_floors` — the lowest weights at which no domain's predicted loss passes the
  highest loss under p: ``f_i = p_i 2^(-(L_max - L_i) / d_i)``, so a mixture above them spends
  only the slack below the worst domain.

The model leaves out transfer between domains and repetition; :mod:`mixlab.report.headroom`
reads d from run folders and says what that costs, :mod:`mixlab.mixing.headroom` trains at the
optimum and AC-ODM's ``guard_worst`` applies the floors online.
"""

from __future__ import annotations

import numpy as np

from mixlab.errors import DataError


def optimum(drop: np.ndarray, floors: np.ndarray | None = None) -> np.ndarray:
    """argmax of sum_i d_i log w_i over the simplex with w_i >= floors_i (negative d count as
    0): w_i = max(floors_i, d_i / lambda) with lambda such that the weights sum to 1 (KKT),
    found by fixing the domains that fall below their floor until none does."""
    d = np.clip(np.asarray(drop, dtype=np.float64), 0.0, None)
    f = np.zeros_like(d) if floors is None else np.asarray(floors, dtype=np.float64)
    if f.sum() > 1.0 + 1e-12:
        raise DataError(f"headroom: the floors sum to {f.sum():.4f} > 1; no mixture keeps them")
    fixed = np.zeros(len(d), dtype=bool)
    while True:
        free_drop = d[~fixed].sum()
        if free_drop <= 0:  # nothing left that learns: the rest of the mass goes to the floors
            w = f.copy()
            w[fixed] += (1.0 - f.sum()) * f[fixed] / f[fixed].sum()
            return w
        w = np.where(fixed, f, (1.0 - f[fixed].sum()) * d / free_drop)
        low = ~fixed & (w < f)
        if not low.any():
            return w
        fixed |= low


def worst_floors(
    prior: np.ndarray,
    drop: np.ndarray,
    loss: np.ndarray,
    residual: np.ndarray | None = None,
) -> np.ndarray:
    """The lowest weights at which no domain's predicted loss exceeds ``max(loss)``:
    ``p_i 2^(-(max(loss) - loss_i - r_i) / d_i)``. ``residual`` r (default 0) is what the model
    missed at a checked mixture (:func:`mixlab.report.headroom.transfer_residual`): a domain
    that got r_i nats worse there than its own tokens explain needs that much more slack, and a
    floor above p_i when it has less. Without r the hardest domain's floor is p_i and every
    floor is at most p_i; a domain whose loss did not fall (d_i <= 0), which no weight changes
    in the model, gets p_i if it has no slack left, else 0."""
    r = np.zeros_like(np.asarray(loss, dtype=np.float64)) if residual is None else residual
    slack = float(np.max(loss)) - np.asarray(loss, dtype=np.float64) - r
    d = np.asarray(drop, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        floors = prior * np.exp2(-slack / np.where(d > 0, d, np.nan))
    return np.where(d > 0, floors, np.where(slack <= 0, prior, 0.0))
