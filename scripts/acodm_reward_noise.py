#!/usr/bin/env python
"""How noisy an AC-ODM run's reward is, and how much its mixture moves, from ``metrics.jsonl``.

For each run folder (or ``metrics.jsonl``) given, over the logged steps from ``--from-step``:

* **spread**: the standard deviation, across domains, of each domain's raw reward
  (``mix/acodm/raw_reward/<domain>``) averaged over a window of ``--window`` logged rows
  (100 steps at ``train.log_every=10``): the part of the reward that ranks domains;
* **noise**: the standard deviation of each logged raw reward around that window mean;
* **move**: the mean total-variation distance between consecutive logged mixtures
  (``mix/weight/<domain>``): how far the actor moves the mixture per logged interval.

A reward whose noise is as large as its spread makes a bounded actor jump between the bounds
(README "AC-ODM": ``reward: progress`` over a fixed 20-step loss EMA had noise 0.97 against a
spread of 1.0 and moved 0.15 per 10 steps; over the domain-proportional EMA 0.24 against 0.7-0.9,
0.05 per 10 steps)::

    python scripts/acodm_reward_noise.py runs/acodm-progress/seed0 runs/acodm/seed0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RAW = "mix/acodm/raw_reward/"
WEIGHT = "mix/weight/"


def reward_noise(path: Path, from_step: int, window: int) -> dict[str, float]:
    """spread, noise and move (see the module docstring) of one run's metrics.jsonl."""
    file = path / "metrics.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise SystemExit(f"{path}: no metrics.jsonl here (give a run folder or the file)")
    rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if any(k.startswith(RAW) for k in r) and r["step"] >= from_step]
    if len(rows) < 2:
        raise SystemExit(
            f"{file}: fewer than 2 rows with {RAW}* from step {from_step} "
            "(is it an AC-ODM run in a training mode? lower --from-step)"
        )
    domains = sorted(k[len(RAW) :] for k in rows[-1] if k.startswith(RAW))
    raw = np.array([[r.get(RAW + d, np.nan) for d in domains] for r in rows])
    weights = np.array([[r.get(WEIGHT + d, np.nan) for d in domains] for r in rows])
    half = max(window // 2, 1)
    smooth = np.array(
        [np.nanmean(raw[max(0, i - half) : i + half], axis=0) for i in range(len(raw))]
    )
    spread = float(np.nanstd(smooth - np.nanmean(smooth, axis=1, keepdims=True)))
    noise = float(np.nanstd(raw - smooth))
    move = float(np.nanmean(np.abs(np.diff(weights, axis=0)).sum(axis=1) / 2.0))
    return {"spread": spread, "noise": noise, "move": move}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("runs", nargs="+", type=Path, help="run folders or metrics.jsonl files")
    ap.add_argument("--from-step", type=int, default=300, help="first step counted (300)")
    ap.add_argument("--window", type=int, default=10, help="logged rows per window mean (10)")
    args = ap.parse_args()
    print(f"{'run':50s} {'spread':>7s} {'noise':>7s} {'move':>7s}")
    for path in args.runs:
        m = reward_noise(path, args.from_step, args.window)
        print(f"{str(path)[-50:]:50s} {m['spread']:7.2f} {m['noise']:7.2f} {m['move']:7.3f}")


if __name__ == "__main__":
    main()
