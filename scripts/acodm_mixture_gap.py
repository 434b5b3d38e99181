#!/usr/bin/env python
"""How far apart two arms of a suite drive the mixture, seed by seed, from ``metrics.jsonl``.

For each seed folder the two arms share (``<suite>/<arm>/seed<N>``), the mean requested mixture
(``mix/weight/<domain>``) over the logged steps in ``[--from, --to]`` of each arm, and the total
variation distance between the two means, ``TV = sum_i |a_i - b_i| / 2``: 0 when both arms
sampled the same mixture on average, 1 when they never sampled the same domains.

Made for proxy -> target transfer (README "AC-ODM"): the distance from a target driven by a
proxy's frozen actor to the same target whose actor learned online says how much of the online
policy the transfer carries. With ``reward: progress`` it was 0.08-0.15 from step 600 to 1200 on
the demo corpus, and 0.02-0.05 with ``state_gain: true``::

    python scripts/acodm_mixture_gap.py runs/acodm acodm-gain acodm-gain-proxy --from 600
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

WEIGHT = "mix/weight/"


def mean_mixture(run: Path, lo: int, hi: int) -> dict[str, float]:
    """The run's mean ``mix/weight/<domain>`` over its logged steps in [lo, hi]."""
    file = run / "metrics.jsonl"
    if not file.is_file():
        raise SystemExit(f"{run}: no metrics.jsonl (is it a run folder of the suite?)")
    rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if lo <= r["step"] <= hi and any(k.startswith(WEIGHT) for k in r)]
    if not rows:
        raise SystemExit(f"{file}: no {WEIGHT}* rows between steps {lo} and {hi}")
    domains = sorted(k[len(WEIGHT) :] for k in rows[0] if k.startswith(WEIGHT))
    return {d: float(np.mean([r[WEIGHT + d] for r in rows])) for d in domains}


def mixture_gap(
    suite: Path, arm_a: str, arm_b: str, lo: int = 0, hi: int = 2**62
) -> dict[int, tuple[dict[str, float], dict[str, float], float]]:
    """seed -> (mean mixture of arm a, of arm b, their TV distance), for the seeds both ran."""
    seeds = {}
    for arm in (arm_a, arm_b):
        if not (suite / arm).is_dir():
            raise SystemExit(f"{suite}: no arm folder {arm!r} (the suite's arms are its folders)")
        seeds[arm] = {int(p.name[4:]) for p in (suite / arm).glob("seed*") if p.name[4:].isdigit()}
    shared = sorted(seeds[arm_a] & seeds[arm_b])
    if not shared:
        raise SystemExit(f"{suite}: {arm_a} and {arm_b} have no seed in common")
    out = {}
    for seed in shared:
        a = mean_mixture(suite / arm_a / f"seed{seed}", lo, hi)
        b = mean_mixture(suite / arm_b / f"seed{seed}", lo, hi)
        if set(a) != set(b):
            raise SystemExit(
                f"seed {seed}: the arms have different domains ({sorted(a)} vs {sorted(b)})"
            )
        out[seed] = (a, b, float(sum(abs(a[d] - b[d]) for d in a) / 2.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("suite", type=Path, help="the suite's output folder (mixlab compare --out)")
    ap.add_argument("arm_a", help="an arm (folder) of the suite, e.g. acodm-gain")
    ap.add_argument("arm_b", help="the arm to compare with, e.g. acodm-gain-proxy")
    ap.add_argument("--from", dest="lo", type=int, default=0, help="first step counted (0)")
    ap.add_argument("--to", dest="hi", type=int, default=2**62, help="last step counted (all)")
    args = ap.parse_args()
    gaps = mixture_gap(args.suite, args.arm_a, args.arm_b, args.lo, args.hi)
    domains = sorted(next(iter(gaps.values()))[0])
    print("seed  arm" + " " * 18 + " ".join(f"{d[:10]:>10s}" for d in domains) + "      TV")
    for seed, (a, b, tv) in gaps.items():
        for name, mix in ((args.arm_a, a), (args.arm_b, b)):
            cells = " ".join(f"{mix[d]:10.3f}" for d in domains)
            tail = f"  {tv:6.3f}" if name == args.arm_b else ""
            print(f"{seed:>4}  {name[:20]:20s} {cells}{tail}")
    tvs = [tv for _, _, tv in gaps.values()]
    print(f"TV over {len(tvs)} seeds: mean {np.mean(tvs):.3f}, range {min(tvs):.3f}-{max(tvs):.3f}")


if __name__ == "__main__":
    main()
