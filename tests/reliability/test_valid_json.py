"""Fault injection: non-finite numbers never make a JSON file invalid.

JSON has no NaN or infinity; a strict parser (and most tools other than Python's ``json``)
rejects the bare ``NaN`` that ``json.dumps`` writes by default. Every file is parsed here with a
parser that refuses them: non-finite values must arrive as ``null``, and ``eval.json`` says which
keys they were in ``"nonfinite"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mixlab.config import RunConfig
from mixlab.data.store import ShardStore
from mixlab.eval.perplexity import EvalResult
from mixlab.files import write_json
from mixlab.train import evaluation
from mixlab.train.callbacks import JsonlSink
from mixlab.train.loop import eval_record, train
from mixlab.train.run_folder import RunFolder
from tests.conftest import tiny_run_config
from tests.helpers import strict_loads


def nan_result(domains: tuple[str, ...]) -> EvalResult:
    """An eval whose first domain's loss is NaN (as after a diverged step)."""
    loss_sum = np.full(len(domains), 20.0)
    loss_sum[0] = np.nan
    return EvalResult(
        domains=domains,
        loss_sum=loss_sum,
        token_count=np.full(len(domains), 10, dtype=np.int64),
        natural_weights=np.full(len(domains), 1 / len(domains)),
    )


def test_eval_record_with_nan_is_written_as_null_with_a_flag(tmp_path: Path) -> None:
    record = eval_record(nan_result(("code", "prose")), step=4)
    write_json(RunFolder(tmp_path).eval, record, nonfinite_key="nonfinite")  # as train() does
    saved = strict_loads(RunFolder(tmp_path).eval.read_text(encoding="utf-8"))
    assert saved["eval/code/loss"] is None and saved["eval/code/ppl"] is None
    assert saved["eval/prose/loss"] == pytest.approx(2.0)
    assert "eval/code/loss" in saved["nonfinite"] and "eval/code/ppl" in saved["nonfinite"]
    assert all(saved[key] is None for key in saved["nonfinite"])
    assert not any(k.startswith("eval/prose/") for k in saved["nonfinite"])


def test_a_nan_eval_in_training_leaves_valid_eval_json_and_metrics(
    tmp_path: Path, tiny_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def diverged(model: Any, store: Any, **kwargs: Any) -> EvalResult:
        return nan_result(store.domains)

    monkeypatch.setattr(evaluation, "evaluate", diverged)
    cfg = RunConfig.from_dict(tiny_run_config(tiny_store, max_steps=2, eval_every=0))
    train(cfg, tmp_path / "run")
    nan_key = f"eval/{ShardStore(tiny_store).domains[0]}/ppl"
    saved = strict_loads(RunFolder(tmp_path / "run").eval.read_text(encoding="utf-8"))
    assert saved["step"] == 2 and saved[nan_key] is None and nan_key in saved["nonfinite"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [strict_loads(line) for line in lines]  # every line parses strictly
    assert [r["step"] for r in records if nan_key in r] == [2] and records[-1][nan_key] is None


def test_metrics_lines_are_valid_json_for_numpy_and_nested_non_finite(tmp_path: Path) -> None:
    sink = JsonlSink(RunFolder(tmp_path).metrics)
    sink.open(0)
    sink.write({"step": 1, "train/loss": np.float32("nan"), "x": {"y": [np.inf, 1]}})
    sink.close()
    sink.open(1)  # resume: the file is rewritten through the same sanitiser
    sink.close()
    (line,) = (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert strict_loads(line) == {"step": 1, "train/loss": None, "x": {"y": [None, 1]}}
