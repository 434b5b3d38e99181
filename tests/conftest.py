"""Shared fixtures: a tiny real shard store built once per test session.

The corpus is synthetic but clearly multi-domain (prose-like words, digits, code-like lines,
a noisy domain), written as Pile-style JSONL so the whole ingest path is exercised.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

DOMAINS = ("code", "numbers", "prose", "noise")
WORDS = tuple(
    "the of and to in is was for on that with as by at from his her they this which".split()
)


def make_text(domain: str, rng: random.Random) -> str:
    if domain == "prose":
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 120))) + "."
    if domain == "numbers":
        return " ".join(str(rng.randint(0, 999)) for _ in range(rng.randint(30, 90)))
    if domain == "code":
        lines = [
            f"def f{i}(x):\n    return x + {rng.randint(0, 9)}\n" for i in range(rng.randint(3, 8))
        ]
        return "\n".join(lines)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return "".join(rng.choice(letters + " ") for _ in range(rng.randint(100, 300)))


def write_pile_jsonl(folder: Path, docs_per_domain: int = 120, seed: int = 0) -> Path:
    """Two Pile-format JSONL files ({"text", "meta": {"pile_set_name"}}) with a url field."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = [
        {
            "text": make_text(d, rng),
            "meta": {"pile_set_name": d},
            "url": f"https://{d}.example.org/{i}",
        }
        for d in DOMAINS
        for i in range(docs_per_domain)
    ]
    rng.shuffle(records)
    half = len(records) // 2
    for name, chunk in (("part-0.jsonl", records[:half]), ("part-1.jsonl", records[half:])):
        with open(folder / name, "w", encoding="utf-8") as fh:
            for r in chunk:
                fh.write(json.dumps(r) + "\n")
    return folder


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (the writer of a stale temporary)."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="session")
def pile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pile_jsonl(tmp_path_factory.mktemp("pile"))


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory, pile_dir: Path) -> Path:
    """A prepared store (vocab 512) over the synthetic Pile-format corpus."""
    from mixlab.data.prepare import prepare_store
    from mixlab.data.readers import iter_documents

    out = tmp_path_factory.mktemp("store") / "shards"
    prepare_store(
        lambda: iter_documents(
            [pile_dir], domain_from="field", domain_field="meta.pile_set_name", metadata_field="url"
        ),
        out,
        vocab_size=512,
        val_fraction=0.1,
        progress=False,
    )
    return out


def tiny_run_config(store: Path, **train: object) -> dict:
    """A config dict for a ~100K-parameter Llama that trains in a second or two."""
    t = {
        "max_steps": 12,
        "batch_size": 4,
        "lr": 3e-3,
        "warmup_steps": 2,
        "log_every": 2,
        "eval_every": 6,
        "checkpoint_every": 6,
        "precision": "fp32",
        "progress": False,
        "threads": 1,
    }
    t.update(train)
    return {
        "data": {"store": str(store), "seq_len": 32},
        "model": {"preset": "llama-tiny"},
        "mixing": {"name": "natural"},
        "train": t,
        "eval": {"max_tokens_per_domain": 2000, "batch_size": 8},
    }
