"""HF datasets: the exported snippet runs ``interleave_datasets`` on tiny in-memory datasets and
the achieved shares over many examples equal the requested ones within sampling error."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from mixlab.engines import export_mix
from tests.engines.conftest import DOMAINS

datasets = pytest.importorskip("datasets")


def _mixture(folder):
    spec = importlib.util.spec_from_file_location(
        f"interleave_{id(folder)}", folder / "interleave.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.mixture


def _load(name: str):
    return datasets.Dataset.from_dict({"source": [name] * 200, "i": list(range(200))})


def _within_sampling_error(counts: np.ndarray, p: np.ndarray, sigmas: float = 4.5) -> None:
    n = counts.sum()
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(counts / n - p) <= sigmas * se + 1e-12), (counts / n, p)


def test_static_mixture_through_interleave_datasets(tmp_path, weights_file):
    export_mix(weights_file, ["hf-datasets"], tmp_path / "out", budget_tokens=8_000, seq_len=1)
    folder = tmp_path / "out" / "hf-datasets"
    spec = json.loads((folder / "interleave.json").read_text())
    assert spec["datasets"] == list(DOMAINS) and spec["stopping_strategy"] == "all_exhausted"
    assert spec["num_examples"] == 8_000
    sources = [ex["source"] for ex in _mixture(folder)(_load)]
    assert len(sources) == 8_000  # 200 rows per source: repeated up to the budget
    counts = np.array([sources.count(d) for d in DOMAINS])
    _within_sampling_error(counts, np.array(spec["probabilities"]))
    np.testing.assert_allclose(spec["probabilities"], [0.3, 0.1, 0.2, 0.4])


def test_phases_with_document_lengths_give_token_shares(tmp_path, adaptive_run):
    lengths = {"code": 400, "noise": 100, "numbers": 250, "prose": 800}
    pre = tmp_path / "p.json"
    pre.write_text(
        json.dumps({d: {"paths": [d], "tokens_per_sample": n} for d, n in lengths.items()})
    )
    res = export_mix(
        adaptive_run,
        ["hf-datasets"],
        tmp_path / "out",
        prefixes=pre,
        phases=3,
        budget_tokens=3e6,
        global_batch_size=8,
        seq_len=1000,
    )
    folder = tmp_path / "out" / "hf-datasets"
    specs = [json.loads((folder / f"phase_{k}/interleave.json").read_text()) for k in (1, 2, 3)]
    sources = [ex["source"] for ex in _mixture(folder)(_load)]
    assert len(sources) == sum(s["num_examples"] for s in specs)
    tokens = np.zeros(len(DOMAINS))
    start = 0
    for stage, spec in zip(res.plan.stages, specs, strict=True):
        part = sources[start : start + spec["num_examples"]]
        start += spec["num_examples"]
        counts = np.array([part.count(d) for d in DOMAINS])
        _within_sampling_error(counts, np.array(spec["probabilities"]))
        # Examples of L_d tokens drawn with p ∝ w / L_d: token shares are the stage's weights.
        lens = np.array([lengths[d] for d in DOMAINS])
        p = np.array(spec["probabilities"])
        np.testing.assert_allclose(p * lens / (p * lens).sum(), stage.weights, atol=1e-12)
        tokens += counts * lens
    # The simulated run's token shares are the plan's within sampling error (~1e-2 here).
    np.testing.assert_allclose(tokens / tokens.sum(), res.plan.shares, atol=0.02)
