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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mixlab.errors import ConfigError, DataError


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
