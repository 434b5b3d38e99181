"""Fixtures for the engine exports: synthetic run folders written like the trainer writes them.

``write_run`` produces ``config.yaml`` + ``metrics.jsonl`` whose train records carry the same
keys as :class:`mixlab.train.loop._Window.record` + :meth:`MixtureSampler.stats`: cumulative
``domain/<d>/tokens`` / ``epochs``, cumulative ``mix/requested/<d>`` and the policy's weights
at the record ``mix/weight/<d>`` (the weights of the *next* window), plus eval records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml

DOMAINS = ("code", "noise", "numbers", "prose")
SIZES = np.array([7_000.0, 18_000.0, 13_000.0, 9_000.0])


def write_run(
    run_dir: Path,
    weights: np.ndarray,
    *,
    tokens_per_step: int = 512,
    log_every: int = 1,
    domains: Sequence[str] = DOMAINS,
    sizes: np.ndarray = SIZES,
    seq_len: int = 64,
) -> Path:
    """A run of ``len(weights)`` steps; step ``t`` drew from ``weights[t]`` (token shares)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump({"data": {"store": "", "seq_len": seq_len}, "mixing": {"name": "odm"}})
    )
    served = np.zeros(len(domains))
    requested = np.zeros(len(domains))
    lines = []
    for t, w in enumerate(weights, start=1):
        served += w * tokens_per_step  # exact expected counts: enough for the reader
        requested += w * tokens_per_step
        if t % log_every == 0 or t == len(weights):
            nxt = weights[t] if t < len(weights) else w
            rec: dict = {"step": t, "train/loss": 5.0}
            for i, d in enumerate(domains):
                rec[f"domain/{d}/tokens"] = float(served[i])
                rec[f"domain/{d}/epochs"] = float(served[i] / sizes[i])
                rec[f"mix/achieved/{d}"] = float(served[i] / served.sum())
                rec[f"mix/requested/{d}"] = float(requested[i] / served.sum())
                rec[f"mix/weight/{d}"] = float(nxt[i])
            lines.append(json.dumps(rec))
            lines.append(json.dumps({"step": t, "eval/mean_ppl": 100.0}))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def drifting_weights(steps: int = 60, seed: int = 0) -> np.ndarray:
    """Three regimes with noise: what an adaptive policy's trajectory looks like."""
    rng = np.random.default_rng(seed)
    base = [
        np.array([0.10, 0.40, 0.30, 0.20]),
        np.array([0.40, 0.20, 0.20, 0.20]),
        np.array([0.25, 0.25, 0.25, 0.25]),
    ]
    rows = []
    for t in range(steps):
        w = base[min(2, 3 * t // steps)] + rng.normal(0, 0.01, 4)
        w = np.clip(w, 1e-3, None)
        rows.append(w / w.sum())
    return np.vstack(rows)


@pytest.fixture()
def adaptive_run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "odm", drifting_weights(), log_every=3)


@pytest.fixture()
def weights_file(tmp_path: Path) -> Path:
    path = tmp_path / "search_weights.json"
    w = {"code": 0.3, "noise": 0.1, "numbers": 0.2, "prose": 0.4}
    path.write_text(json.dumps({"weights": w, "score": 1.23, "trials": 64}))
    return path


@pytest.fixture()
def prefixes(tmp_path: Path) -> Path:
    path = tmp_path / "prefixes.yaml"
    path.write_text(
        "code: /data/code_text_document\n"
        "noise: [/data/noise_a_text_document, /data/noise_b_text_document]\n"
        "numbers:\n"
        "  paths: [/data/numbers_0_text_document, /data/numbers_1_text_document]\n"
        "  tokens: [3000, 1000]\n"
        "  valid: [/data/numbers_val_text_document]\n"
        "prose:\n"
        "  paths: [/data/prose_text_document]\n"
        "  tokens: 9000\n"
    )
    return path
