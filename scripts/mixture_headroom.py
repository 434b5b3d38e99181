#!/usr/bin/env python
"""How much can any mixture gain at this budget? A first-order estimate from a static-mixture run.

Method. Take the runs of one static-mixture arm of a suite (``uniform`` by default; its mixture
p must not change during the run) and, for each domain i, the drop of its held-out loss over the
last doubling of the run's steps, ``d_i = L_i(t / 2) - L_i(t)`` (eval rows, interpolated in
log2 step; mean over seeds). Under a static mixture a domain's tokens grow like the steps, so
d_i is its loss drop per doubling of its own tokens. If near the end of the budget each domain's
loss is log-linear in its own tokens, ``L_i(n) = c_i - d_i log2 n`` (the local form of a power
law), the mixture w that minimises the mean log-loss over the K domains (log geo_ppl) at the
same total tokens solves

    minimise  -(1/K) sum_i d_i log2 w_i   subject to  sum_i w_i = 1   ->   w*_i = d_i / sum_j d_j,

and its predicted gain over the arm's mixture p is ``(1/K) sum_i d_i log2(w*_i / p_i)`` nats of
mean log-loss, i.e. geo_ppl x exp(-gain); domain i's own predicted change is
``-d_i log2(w*_i / p_i)`` nats. ``reward: progress`` of AC-ODM climbs toward this same optimum
online (its reward d_i / w_i is equal across domains exactly at w*).

What it is for. The gain is the headroom that *any* reallocation of the same tokens has at this
budget, to first order: if it is well inside the paired seed noise between two arms
(``--vs``: the spread of their per-seed geo_ppl differences), no mixing method can be shown to
win at this budget with a feasible number of seeds, and the script says how many seeds a 95%
interval would need. ``--out`` writes w* as a weights file for ``mixing.name: fixed``
(``mixing.weights_file``) to check the prediction with a real run.

What it leaves out. Transfer between domains (when all domains double together, a domain's drop
includes what the others taught it, so cutting a domain costs more than d_i says when its
neighbours are cut too), repetition (a small domain pushed to many epochs learns less per
token), the learning-rate schedule (the last doubling includes the decay) and higher-order
curvature: read the gain as an estimate, measured against real runs in the README.

    python scripts/mixture_headroom.py runs/acodm --arm uniform --vs acodm-prior --out w.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixlab.report.records import RunRecord, load_records
from mixlab.report.stats import paired_difference, spread, t_quantile_975

WEIGHT = "mix/weight/"


@dataclass(frozen=True)
class Headroom:
    """The estimate for one arm: per-domain drops, the optimum and its predicted gain."""

    step: int  # t: the eval step the drops end at
    domains: tuple[str, ...]
    prior: np.ndarray  # p: the arm's (static) mixture
    drop: np.ndarray  # d_i, nats per doubling, mean over seeds
    drop_std: np.ndarray  # its spread over seeds (0 for one seed)
    optimum: np.ndarray  # w* ∝ d (negative drops count as 0), above any floors (optimum())
    seeds: tuple[int, ...]

    def domain_change(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Predicted change of each domain's loss at ``weights`` (default w*), in nats
        (negative = better; inf for a domain given no weight)."""
        w = self.optimum if weights is None else np.asarray(weights, dtype=np.float64)
        with np.errstate(divide="ignore"):
            ratio = np.log2(w / self.prior)
        return np.where(w > 0, -self.drop * ratio, np.inf)

    def predicted_gain(self, weights: np.ndarray | None = None) -> float:
        """Predicted drop of the mean log-loss at ``weights`` (default w*), in nats: log
        geo_ppl falls by this. w* maximises it over the simplex."""
        return float(-np.mean(self.domain_change(weights)))


def _loss_at(record: RunRecord, domain: str, step: float) -> float:
    steps, values = record.curve(f"eval/{domain}/loss")
    ok = [(s, v) for s, v in zip(steps, values, strict=True) if s > 0 and math.isfinite(v)]
    if not ok or step < ok[0][0] or step > ok[-1][0]:
        raise SystemExit(
            f"{record.run_dir}: no eval of {domain} around step {step:g} (eval rows at "
            f"{[s for s, _ in ok]}); the run needs evals from t/2 to t"
        )
    xs, ys = zip(*ok, strict=True)
    return float(np.interp(math.log2(step), np.log2(xs), ys))


def static_mixture(record: RunRecord, domains: Sequence[str], tol: float = 1e-6) -> np.ndarray:
    """The run's mixture (``mix/weight/<d>``); refused when it changes during the run."""
    rows = [r for r in record.train_log if any(k.startswith(WEIGHT) for k in r)]
    if not rows:
        raise SystemExit(f"{record.run_dir}: no {WEIGHT}* rows in metrics.jsonl")
    w = np.array([[float(r[WEIGHT + d]) for d in domains] for r in rows])
    if np.ptp(w, axis=0).max() > tol:
        raise SystemExit(
            f"{record.run_dir}: its mixture changes during the run (by up to "
            f"{np.ptp(w, axis=0).max():.3g}); the estimate needs a static-mixture arm "
            "(uniform, natural, fixed, ...)"
        )
    return w[0]


def headroom(
    records: Sequence[RunRecord], step: int | None = None, keep_hardest: int = 0
) -> Headroom:
    """The estimate from the finished runs of one static-mixture arm (one per seed).

    ``keep_hardest = k`` keeps the k domains with the highest mean loss at step t at least at
    their share of the arm's mixture (as AC-ODM's ``guard_hardest`` does online)."""
    runs = sorted((r for r in records if r.ok), key=lambda r: r.seed)
    if not runs:
        raise SystemExit("no finished run of the arm (status done with a final eval)")
    domains = tuple(runs[0].domains)
    t = step if step is not None else min(max(r.eval_steps) for r in runs)
    prior = static_mixture(runs[0], domains)
    drops = np.array([[_loss_at(r, d, t / 2) - _loss_at(r, d, t) for d in domains] for r in runs])
    drop = drops.mean(axis=0)
    if (drop <= 0).all():
        raise SystemExit(f"no domain's loss fell between steps {t / 2:g} and {t}")
    floors = np.zeros(len(domains))
    if keep_hardest > 0:
        level = np.array([[_loss_at(r, d, t) for d in domains] for r in runs]).mean(axis=0)
        hardest = np.argsort(-level, kind="stable")[:keep_hardest]
        floors[hardest] = prior[hardest]
    return Headroom(
        step=int(t),
        domains=domains,
        prior=prior,
        drop=drop,
        drop_std=drops.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(domains)),
        optimum=optimum(drop, floors),
        seeds=tuple(r.seed for r in runs),
    )


def optimum(drop: np.ndarray, floors: np.ndarray | None = None) -> np.ndarray:
    """argmax of sum_i d_i log w_i over the simplex with w_i >= floors_i (negative d count as
    0): w_i = max(floors_i, d_i / lambda) with lambda such that the weights sum to 1 (KKT), found
    by fixing the domains that fall below their floor until none does."""
    d = np.clip(np.asarray(drop, dtype=np.float64), 0.0, None)
    f = np.zeros_like(d) if floors is None else np.asarray(floors, dtype=np.float64)
    if f.sum() > 1.0 + 1e-12:
        raise SystemExit(f"the floors sum to {f.sum():.4f} > 1: no mixture keeps them all")
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


def seeds_needed(gain_pct: float, diff_std: float, max_seeds: int = 10_000) -> int | None:
    """Fewest paired seeds whose 95% t half-width falls below |gain_pct| (None: more than max)."""
    if diff_std <= 0:
        return 2
    for n in range(2, max_seeds + 1):
        if t_quantile_975(n - 1) * diff_std / math.sqrt(n) < abs(gain_pct):
            return n
    return None


def final_geo(records: Sequence[RunRecord], step: int) -> dict[int, float]:
    """seed -> geo_ppl of the eval row at ``step`` (runs that reached it)."""
    out = {}
    for r in records:
        if r.ok and step in r.eval_steps:
            value = r.eval_curve[r.eval_steps.index(step)].get("eval/geo_ppl")
            if value is not None:
                out[r.seed] = float(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("suite", type=Path, help="the suite's output folder (mixlab compare --out)")
    ap.add_argument("--arm", default="uniform", help="a static-mixture arm (default uniform)")
    ap.add_argument("--step", type=int, help="t, an eval step (default: the runs' last)")
    ap.add_argument(
        "--vs",
        nargs=2,
        metavar=("ARM_A", "ARM_B"),
        help="two arms whose paired geo_ppl differences give the seed noise (e.g. uniform "
        "acodm-prior); default: none",
    )
    ap.add_argument(
        "--keep-hardest",
        type=int,
        default=0,
        metavar="K",
        help="keep the K domains with the highest loss at t at least at the arm's share "
        "(AC-ODM's guard_hardest; default 0)",
    )
    ap.add_argument("--out", type=Path, help="write w* as a weights file (mixing.weights_file)")
    args = ap.parse_args()
    records = load_records([args.suite])
    arms = sorted({r.method for r in records})
    mine = [r for r in records if r.method == args.arm]
    if not mine:
        raise SystemExit(f"{args.suite}: no runs of arm {args.arm!r} (arms: {arms})")
    h = headroom(mine, args.step, args.keep_hardest)
    kept = [d for d, w, p in zip(h.domains, h.optimum, h.prior, strict=True) if w == p]
    print(
        f"{args.arm}, seeds {list(h.seeds)}: drop over steps {h.step // 2}-{h.step}"
        + (f"; kept at least at the arm's share: {kept}" if args.keep_hardest else "")
    )
    print(f"{'domain':20s} {'p':>6s} {'drop (nats)':>14s} {'w*':>6s} {'predicted':>10s}")
    change = h.domain_change()
    for i, d in enumerate(h.domains):
        drop = f"{h.drop[i]:.3f} ± {h.drop_std[i]:.3f}"
        pct = f"{100 * math.expm1(change[i]):+.1f}%" if math.isfinite(change[i]) else "starved"
        print(f"{d[:20]:20s} {h.prior[i]:6.3f} {drop:>14s} {h.optimum[i]:6.3f} {pct:>10s}")
    gain = h.predicted_gain()
    gain_pct = 100 * math.expm1(-gain)
    print(f"predicted geo_ppl at w* vs {args.arm}: {gain_pct:+.2f}% ({gain:.4f} nats)")
    if args.vs:
        pair = [[r for r in records if r.method == a] for a in args.vs]
        for name, runs in zip(args.vs, pair, strict=True):
            if not runs:
                raise SystemExit(f"{args.suite}: no runs of arm {name!r} (arms: {arms})")
        a, b = (final_geo(runs, h.step) for runs in pair)
        rel = {s: 100 * (a[s] / b[s] - 1) for s in a if s in b}
        diff = paired_difference(rel, {s: 0.0 for s in rel})
        sd = spread(list(rel.values())).std
        if sd is None:
            raise SystemExit(
                f"--vs {' '.join(args.vs)}: fewer than 2 shared seeds at step {h.step}"
            )
        n = seeds_needed(gain_pct, sd)
        print(
            f"paired noise {args.vs[0]} vs {args.vs[1]} at step {h.step}: {diff.format(2)}% "
            f"(sd {sd:.2f}% over {diff.n} seeds); a 95% interval narrower than the predicted "
            f"gain needs {n if n is not None else '> 10000'} paired seeds"
        )
    if args.out:
        weights = {d: round(float(w), 6) for d, w in zip(h.domains, h.optimum, strict=True)}
        weights[h.domains[-1]] = round(1.0 - sum(list(weights.values())[:-1]), 6)
        args.out.write_text(json.dumps({"weights": weights}, indent=1) + "\n")
        print(f"w* written to {args.out} (mixing.name: fixed, mixing.weights_file: {args.out})")


if __name__ == "__main__":
    main()
