"""Small statistics over seeds: mean ± spread and paired differences with a 95% CI.

* :func:`spread` — mean and sample standard deviation (ddof = 1) of one value per seed.
* :func:`paired_difference` — METHODS.md §5: with d_i = method_i − baseline_i over the seeds
  both share, report mean(d) ± t_{0.975, n−1}·s_d/√n and "wins k/n" (k = seeds with d_i < 0,
  lower is better for perplexities).
* :func:`t_quantile_975` — the two-sided 95% Student-t critical value: an exact table for
  n − 1 <= 30, a Cornish-Fisher expansion beyond (error < 1e-3), so no SciPy is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# t_{0.975, df} for df = 1 .. 30
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z975 = 1.959964


def t_quantile_975(df: int) -> float:
    """Two-sided 95% critical value of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"t_quantile_975: degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Spread:
    """Mean ± sample standard deviation of one value per seed (``std`` None for one seed)."""

    mean: float | None
    std: float | None
    n: int
    values: tuple[float, ...] = ()

    def format(self, digits: int = 3) -> str:
        """``12.345 ± 0.120`` (no ± for a single seed, ``-`` when empty)."""
        if self.mean is None:
            return "-"
        text = fmt(self.mean, digits)
        return text if self.std is None else f"{text} ± {fmt(self.std, digits)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": json_float(self.mean),
            "std": json_float(self.std),
            "n": self.n,
            "values": [json_float(v) for v in self.values],
        }


def spread(values: Sequence[float | None]) -> Spread:
    """Mean and sample std of the given values (None entries are dropped; inf/NaN kept)."""
    kept = tuple(float(v) for v in values if v is not None)
    n = len(kept)
    if n == 0:
        return Spread(None, None, 0)
    mean = math.fsum(kept) / n
    if n == 1:
        return Spread(mean, None, 1, kept)
    if not all(math.isfinite(v) for v in kept):
        return Spread(mean, math.nan, n, kept)
    var = math.fsum((v - mean) ** 2 for v in kept) / (n - 1)
    return Spread(mean, math.sqrt(var), n, kept)


@dataclass(frozen=True)
class PairedDiff:
    """Paired method − baseline differences over shared seeds, with a 95% CI half-width."""

    mean: float | None
    half_width: float | None  # t_{0.975,n-1}·s/√n; None for fewer than 2 pairs
    n: int
    wins: int  # seeds where the method is strictly lower (better) than the baseline
    seeds: tuple[int, ...] = ()
    diffs: tuple[float, ...] = field(default=())

    def format(self, digits: int = 3) -> str:
        if self.mean is None:
            return "-"
        text = fmt(self.mean, digits, signed=True)
        return text if self.half_width is None else f"{text} ± {fmt(self.half_width, digits)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean_diff": json_float(self.mean),
            "ci95": json_float(self.half_width),
            "n": self.n,
            "wins": self.wins,
            "seeds": list(self.seeds),
            "diffs": [json_float(d) for d in self.diffs],
        }


def paired_difference(method: dict[int, float], baseline: dict[int, float]) -> PairedDiff:
    """Mean of method − baseline over the seeds both have, ± 95% CI, and wins k/n."""
    seeds = tuple(s for s in method if s in baseline)
    diffs = tuple(method[s] - baseline[s] for s in seeds)
    n = len(diffs)
    if n == 0:
        return PairedDiff(None, None, 0, 0)
    wins = sum(1 for d in diffs if d < 0)
    mean = math.fsum(diffs) / n
    if n < 2 or not all(math.isfinite(d) for d in diffs):
        return PairedDiff(mean, None, n, wins, seeds, diffs)
    s = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    return PairedDiff(mean, t_quantile_975(n - 1) * s / math.sqrt(n), n, wins, seeds, diffs)


def paired_percent(method: dict[int, float], baseline: dict[int, float]) -> PairedDiff:
    """Per-seed relative differences 100 (method / baseline - 1) in percent, their mean ± 95%
    CI and wins: the view that reads the same on any corpus (baselines <= 0 are skipped)."""
    ratios = {
        s: 100.0 * (v / baseline[s] - 1.0)
        for s, v in method.items()
        if s in baseline and baseline[s] > 0
    }
    return paired_difference(ratios, dict.fromkeys(ratios, 0.0))


def fmt(value: float | None, digits: int = 3, *, signed: bool = False) -> str:
    """A number for a table: ``-`` for None, ``inf``/``nan`` spelled out."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def json_float(value: float | None) -> float | None:
    """A float for JSON: None for None, NaN and ±inf (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
