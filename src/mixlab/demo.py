"""``mixlab demo``: the whole path on the built-in demo corpus, with no data of your own.

1. Build (or reuse from the cache) the demo corpus: several clearly different kinds of real
   text found on this machine (see :mod:`mixlab.data.demo_corpus`).
2. Prepare a shard store from it (train a small byte-level BPE, tokenize, split).
3. Train a tiny model once per mixing policy (default: ``uniform`` and ``natural``) with the
   same seed, model and token budget. Finished runs are reused, so an interrupted demo resumes.
4. Print per-domain validation perplexity side by side.

Everything lands under one folder (default ``./mixlab-demo``): ``store/`` and ``runs/<policy>``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from mixlab.config import RunConfig
from mixlab.errors import ConfigError

log = logging.getLogger(__name__)

DEMO_VOCAB_SIZE = 4096


def demo_config(store: Path, *, steps: int, preset: str, method: str, seed: int) -> RunConfig:
    """The demo's run recipe: a tiny model, 16 x 128-token sequences per step."""
    cfg = RunConfig.from_dict(
        {
            "data": {"store": str(store), "seq_len": 128},
            "model": {"preset": preset},
            "mixing": {"name": method},
            "train": {
                "max_steps": steps,
                "batch_size": 16,
                "lr": 3e-3,
                "warmup_steps": max(1, steps // 20),
                "seed": seed,
                "log_every": max(1, steps // 50),
                "eval_every": max(1, steps // 10),
                "checkpoint_every": max(1, steps // 4),
            },
            "eval": {"max_tokens_per_domain": 50_000},
        }
    )
    cfg.validate()
    return cfg


def prepare_demo_store(root: Path) -> Path:
    """Build the corpus (cached) and its shard store under ``root/store`` (reused if present)."""
    from mixlab.data.demo_corpus import (
        build_demo_corpus,
        demo_corpus_files,
        describe_demo_corpus,
    )
    from mixlab.data.prepare import prepare_from_inputs
    from mixlab.data.store import ShardStore

    store_dir = root / "store"
    corpus = build_demo_corpus()
    print(describe_demo_corpus(corpus))
    if (store_dir / "manifest.json").exists():
        return ShardStore(store_dir).path
    prepare_from_inputs(
        demo_corpus_files(corpus),
        store_dir,
        reader_options={
            "domain_from": "field",
            "domain_field": "domain",
            "metadata_field": "source",
        },
        vocab_size=DEMO_VOCAB_SIZE,
        val_fraction=0.08,
    )
    return store_dir


def run_demo(
    out: str | Path,
    *,
    steps: int = 400,
    preset: str = "llama-1m",
    methods: Sequence[str] = ("uniform", "natural"),
    seed: int = 0,
    fresh: bool = False,
) -> dict[str, object]:
    """Run the demo; returns {method: EvalResult}."""
    from mixlab.eval.runs import compare_table, evaluate_run
    from mixlab.train.checkpoint import load_checkpoint
    from mixlab.train.loop import train

    if not methods:
        raise ConfigError("--methods: name at least one mixing policy")
    root = Path(out)
    store = prepare_demo_store(root)
    results = {}
    for method in methods:
        run_dir = root / "runs" / method
        ckpt = run_dir / "checkpoint.pt"
        cfg = demo_config(store, steps=steps, preset=preset, method=method, seed=seed)
        resume = False
        if ckpt.exists():
            state = load_checkpoint(ckpt)
            if fresh or state["config"] != cfg.to_dict():
                # A demo-owned folder from other settings: start that run over.
                shutil.rmtree(run_dir)
            elif state.get("finished"):
                print(f"[{method}] already finished: reusing {run_dir}")
                results[method] = evaluate_run(run_dir)
                continue
            else:
                resume = True
        print(f"\n[{method}] training {preset} for {steps} steps -> {run_dir}")
        trainer = train(cfg, run_dir, resume=resume)
        assert trainer.last_eval is not None
        results[method] = trainer.last_eval
    print("\nper-domain validation perplexity (lower is better), same model, seed and budget:\n")
    print(compare_table({m: r for m, r in results.items()}))
    print(
        f"\nruns and metrics under {root / 'runs'}; evaluate again with: mixlab eval "
        + " ".join(str(root / "runs" / m) for m in methods)
    )
    return dict(results)
