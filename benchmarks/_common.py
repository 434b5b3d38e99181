"""Shared helpers for the benchmark scripts: a real store to measure on, and A/B timing."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def demo_store(root: Path, *, vocab_size: int = 4096) -> Path:
    """Prepare a shard store from the shipped demo corpus (cached under ``root``)."""
    from mixlab.data.demo_corpus import build_demo_corpus, demo_corpus_files, shipped_manifest
    from mixlab.data.prepare import prepare_from_inputs

    corpus = build_demo_corpus(root / "corpus")
    store = root / f"store-{shipped_manifest()['fingerprint'][:12]}-{vocab_size}"
    if not (store / "manifest.json").exists():
        prepare_from_inputs(
            demo_corpus_files(corpus),
            store,
            reader_options={"domain_from": "field", "domain_field": "domain"},
            vocab_size=vocab_size,
            progress=False,
        )
    return store


def step_parser(
    doc: str | None, *, batch_size: int = 16, per_block: int = 4
) -> argparse.ArgumentParser:
    """The options every training-step benchmark shares (model, batch, timing blocks)."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="llama-1m", help="model preset")
    ap.add_argument("--batch-size", type=int, default=batch_size, help="sequences per step")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    ap.add_argument("--blocks", type=int, default=6, help="alternation rounds")
    ap.add_argument("--per-block", type=int, default=per_block, help="steps per variant and round")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--workdir", help="where the demo store (and runs) are cached")
    return ap


def bench_config(
    store: Path,
    *,
    preset: str,
    mixing: dict[str, Any],
    batch_size: int,
    seq_len: int,
    precision: str = "fp32",
    threads: int = 2,
) -> Any:
    """A validated RunConfig for timing steps (no progress bar, a long schedule)."""
    from mixlab.config import RunConfig

    cfg = RunConfig.from_dict(
        {
            "data": {"store": str(store), "seq_len": seq_len},
            "model": {"preset": preset},
            "mixing": mixing,
            "train": {
                "max_steps": 10_000,
                "batch_size": batch_size,
                "precision": precision,
                "progress": False,
                "threads": threads,
            },
        }
    )
    cfg.validate()
    return cfg


def workdir(path: str | None) -> Path:
    return Path(path) if path else Path(tempfile.gettempdir()) / "mixlab-bench"


def interleaved(
    fns: dict[str, Callable[[], None]], *, blocks: int, per_block: int
) -> dict[str, list[float]]:
    """Run each function ``per_block`` times per block, alternating A, B, A, B, ...

    Returns the per-call seconds of every call; interleaving spreads machine noise evenly.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(blocks):
        for name, fn in fns.items():
            for _ in range(per_block):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)
