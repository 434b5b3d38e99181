"""Trainer step time with and without ``train.tune_malloc`` (glibc mmap/trim thresholds).

The tuning is process-wide and cannot be undone, so each measurement is a child process
(``--child plain|tuned``) that builds a Trainer on the demo store, runs a few warm-up steps
and times the next ones; the parent alternates plain and tuned children (A, B, A, B, ...) so
machine noise hits both. A child reports ms/step, minor page faults per step and peak RSS.

Prints the medians and ``RESULT tuned/plain step time`` (lower is better; < 1 means the
tuning helps).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import bench_config, demo_store, median, step_parser, workdir


def child(args: argparse.Namespace, variant: str) -> None:
    import torch

    from mixlab.train.loop import Trainer

    torch.set_num_threads(args.threads)
    root = workdir(args.workdir)
    cfg = bench_config(
        demo_store(root),
        preset=args.preset,
        mixing={"name": "uniform"},
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        precision=args.precision,
        threads=args.threads,
    )
    cfg.train.tune_malloc = variant == "tuned"
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, run_dir)
        for _ in range(5):
            trainer.run_step()
        report(trainer, args.per_block)


def report(trainer: Any, steps: int) -> None:
    """Time ``steps`` more steps; print ms/step, page faults/step and peak RSS as JSON."""
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(steps):
        trainer.run_step()
    seconds = (time.perf_counter() - start) / steps
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"ms": 1000 * seconds, "faults": faults, "rss_mb": rss}))


def main() -> None:
    ap = step_parser(__doc__, per_block=15)
    ap.add_argument("--child", choices=("plain", "tuned"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args, args.child)
        return
    root = workdir(args.workdir)
    demo_store(root)  # build the store once, before the timed children
    passthrough = [
        f"--preset={args.preset}",
        f"--batch-size={args.batch_size}",
        f"--seq-len={args.seq_len}",
        f"--per-block={args.per_block}",
        f"--threads={args.threads}",
        f"--precision={args.precision}",
        f"--workdir={root}",
    ]
    results: dict[str, list[dict[str, float]]] = {"plain": [], "tuned": []}
    for block in range(args.blocks):
        for variant in ("plain", "tuned"):
            out = subprocess.run(
                [sys.executable, str(Path(__file__)), f"--child={variant}", *passthrough],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            results[variant].append(row)
            print(
                f"block {block} {variant:5s} {row['ms']:7.1f} ms/step "
                f"{row['faults']:9.0f} page faults/step  peak RSS {row['rss_mb']:.0f} MB",
                flush=True,
            )
    med = {v: {k: median([r[k] for r in rows]) for k in rows[0]} for v, rows in results.items()}
    for v, m in med.items():
        print(
            f"{v:5s} median {m['ms']:.1f} ms/step, {m['faults']:.0f} faults/step, "
            f"peak RSS {m['rss_mb']:.0f} MB"
        )
    print(
        f"RESULT tuned/plain step time {med['tuned']['ms'] / med['plain']['ms']:.3f} "
        f"({args.preset}, batch {args.batch_size}x{args.seq_len}, {args.threads} threads; "
        f"peak RSS {med['tuned']['rss_mb'] - med['plain']['rss_mb']:+.0f} MB)"
    )


if __name__ == "__main__":
    main()
