"""Shared by the adapter examples: arguments, the store, the model, one log line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from mixlab.data.store import ShardStore
from mixlab.model.factory import build_model


def parse_args(argv: Sequence[str] | None, description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--store", help="shard store (default: build ./mixlab-demo/store)")
    p.add_argument("--steps", type=int, default=60, help="optimiser steps")
    p.add_argument("--policy", default="odm-smoothed", help="mixing policy name")
    p.add_argument("--preset", default="llama-tiny", help="mixlab model preset")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--out", default="runs/example", help="output folder (HF / Lightning)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    args = p.parse_args(argv)
    if args.threads > 0:
        # Tiny models gain nothing from more threads, and on a busy machine OpenMP's spinning
        # threads make every step several times slower (60 steps here: 100 s vs 17 s).
        torch.set_num_threads(args.threads)
    return args


def open_store(path: str | None) -> ShardStore:
    """The given store, or the demo store (prepared once from the shipped demo corpus)."""
    if path is None:
        from mixlab.demo import prepare_demo_store

        path = str(prepare_demo_store(Path("mixlab-demo")))
    return ShardStore(path)


def tiny_model(store: ShardStore, args: argparse.Namespace) -> torch.nn.Module:
    """A Hugging Face causal LM from a mixlab preset, sized to the store's tokenizer."""
    return build_model(
        preset=args.preset,
        vocab_size=store.vocab_size,
        eos_id=store.eos_id,
        bos_id=store.bos_id,
        max_seq_len=args.seq_len,
    )


def format_mixture(values: dict[str, float], domains: Sequence[str]) -> str:
    """``domain=weight (train loss)`` for each domain, from ``controller.log_values()``."""
    cells = []
    for d in domains:
        loss = values.get(f"domain/{d}/train_loss")
        cells.append(f"{d}={values[f'mix/weight/{d}']:.3f}" + (f" ({loss:.2f})" if loss else ""))
    return "  ".join(cells)
