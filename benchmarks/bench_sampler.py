"""Sampler throughput vs what the trainer consumes, measured in one run.

Times ``MixtureSampler.next_step()`` (packed windows read from the store's memmaps, domain
labels, tensors) in each sampling mode on a real prepared store, and a few training steps of
the same batch shape; prints tokens/s of each and ``RESULT sampler/trainer ratio`` (the
slowest mode; target >= 50x, so sampling never shows up in a profile).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import demo_store, interleaved, median, workdir


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="llama-1m")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=200, help="sampler steps per mode and block")
    ap.add_argument("--workdir")
    args = ap.parse_args()
    torch.set_num_threads(2)

    from mixlab.config import RunConfig
    from mixlab.data.store import ShardStore
    from mixlab.sampling.sampler import MODES, MixtureSampler
    from mixlab.train.loop import Trainer

    root = workdir(args.workdir)
    store = ShardStore(demo_store(root))
    k = len(store.domains)
    samplers = {
        mode: MixtureSampler(
            store,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            weights=np.full(k, 1 / k),
            mode=mode,
            seed=0,
        )
        for mode in MODES
    }
    cfg = RunConfig.from_dict(
        {
            "data": {"store": str(store.path), "seq_len": args.seq_len},
            "model": {"preset": args.preset},
            "train": {"batch_size": args.batch_size, "precision": "fp32", "progress": False},
        }
    )
    cfg.validate()
    trainer = Trainer(cfg, root / "bench-sampler-run")

    fns = {mode: s.next_step for mode, s in samplers.items()}
    interleaved(fns, blocks=1, per_block=20)
    times = interleaved(fns, blocks=3, per_block=args.steps)
    train_times = interleaved(
        {"train": lambda: trainer.train_step(trainer.sampler.next_step())}, blocks=1, per_block=10
    )["train"][4:]
    tokens = args.batch_size * args.seq_len
    train_rate = tokens / median(train_times)
    print(f"trainer ({args.preset}, {args.batch_size}x{args.seq_len}): {train_rate:,.0f} tok/s")
    rates = {}
    for mode, ts in times.items():
        rates[mode] = tokens / median(ts)
        print(f"sampler {mode:<12} {rates[mode]:>14,.0f} tok/s  ({rates[mode] / train_rate:,.0f}x)")
    worst = min(rates.values())
    print(f"RESULT sampler/trainer ratio = {worst / train_rate:.0f}x (slowest mode; target >= 50x)")


if __name__ == "__main__":
    main()
