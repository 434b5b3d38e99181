"""A report built from real (tiny) training runs, so the real metrics.jsonl keys are read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mixlab.report import load_records, summarize, write_report
from tests.conftest import DOMAINS
from tests.helpers import train_tiny_run

AGENT = {"hidden": 16, "n_hidden": 1, "batch_size": 4, "buffer_size": 100, "warmup_steps": 3}


def _train(store: Path, out: Path, mixing: dict[str, Any]) -> Path:
    budget = {"max_steps": 8, "eval_every": 4, "log_every": 2, "checkpoint_every": 100}
    return train_tiny_run(store, out, mixing=mixing, **budget)


@pytest.fixture(scope="module")
def real_runs(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("e2e")
    return [
        _train(tiny_store, root / "uniform", {"name": "uniform"}),
        _train(tiny_store, root / "acodm", {"name": "acodm", "acodm": AGENT}),
    ]


def test_report_from_real_run_folders(real_runs: list[Path], tmp_path: Path) -> None:
    records = load_records(real_runs)
    assert [r.method for r in records] == ["uniform", "acodm"]
    for r in records:
        assert r.ok and r.eval_steps == [4, 8] and sorted(r.domains) == sorted(DOMAINS)
        assert r.seconds is not None and r.seconds > 0 and r.tokens and r.tokens > 0
    summary = summarize(records)
    assert summary.baseline == "uniform"
    acodm = summary.method("acodm")
    assert acodm.paired is not None and acodm.paired.n == 1 and len(acodm.targets) == 1
    assert acodm.step_seconds.mean is not None and acodm.step_seconds.mean > 0
    assert all(m.final["natural_ppl"].mean for m in summary.methods)
    assert summary.method("uniform").worst_domain in DOMAINS

    paths = write_report(records, tmp_path / "report")
    results = json.loads(paths["json"].read_text())
    assert {"figures/weight_trajectories.png", "figures/shares_and_repetition.png"} <= set(
        results["figures"]
    )
    assert "figures/acodm_diagnostics.png" in results["figures"]  # real mix/acodm/* keys
    assert "acodm" in paths["markdown"].read_text()
