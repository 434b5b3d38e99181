"""Reading suite and run folders back into RunRecords."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixlab.errors import DataError
from mixlab.report import load_records
from mixlab.report.records import load_run
from tests.report.conftest import curve, write_run, write_suite


def test_suite_folder_in_suite_order_with_costs(fake_suite: Path) -> None:
    records = load_records([fake_suite])
    assert [(r.method, r.seed) for r in records[:3]] == [
        ("uniform", 0),
        ("uniform", 1),
        ("natural", 0),
    ]
    doremi = next(r for r in records if r.method == "doremi")
    assert doremi.seconds == 10.0 and doremi.tokens == 1024 and doremi.peak_rss_mb == 400.0
    assert doremi.stage_tokens == 4096 and doremi.stages[0].kind == "doremi"
    assert doremi.suite_baseline == "uniform" and doremi.suite_name == "test"
    assert doremi.eval_steps == [2, 4, 6, 8] and doremi.ok
    assert doremi.domains == ["a", "b", "c"]
    steps, values = doremi.curve("eval/mean_ppl")
    assert steps == [2, 4, 6, 8] and values[-1] == doremi.final_eval["eval/mean_ppl"]
    assert doremi.train_series("mix/weight/c")[1][0] == pytest.approx(0.4)
    failed = records[-1]
    assert (failed.method, failed.status, failed.ok) == ("odm", "failed", False)
    assert failed.note == "status failed in suite.json: boom"


def test_run_folder_method_and_seed(tmp_path: Path) -> None:
    a = write_run(tmp_path / "odm" / "seed3", seed=3, evals=curve((1.0, 1.0, 1.0)))
    b = write_run(tmp_path / "my-run", seed=7, evals=curve((1.0, 1.0, 1.0)))
    ra, rb = load_records([a, b])
    assert (ra.method, ra.seed) == ("odm", 3)
    assert (rb.method, rb.seed) == ("my-run", 7)
    assert rb.seconds == pytest.approx(0.1 * 8)  # estimated from train/step_seconds
    assert rb.tokens == pytest.approx(128 * 8)  # the sampler's served tokens
    assert rb.suite_name is None and rb.stages == []


def test_final_eval_falls_back_to_the_last_eval_line_and_a_torn_line_is_ignored(
    tmp_path: Path,
) -> None:
    run = write_run(tmp_path / "r", seed=0, evals=curve((1.0, 2.0, 3.0)), final=False)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 9, "eval/mean_')
    (r,) = load_records([run])
    assert r.ok and r.final_eval["eval/mean_ppl"] == r.eval_curve[-1]["eval/mean_ppl"]


def test_a_run_without_any_evaluation_is_not_ok(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", seed=0, evals={4: (1.0, 1.0, 1.0)}, final=False)
    lines = [ln for ln in (run / "metrics.jsonl").read_text().splitlines() if "eval/" not in ln]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (r,) = load_records([run])
    assert not r.ok and r.status == "missing" and "no evaluation" in r.note


def test_errors_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: neither a suite folder"):
        load_records([tmp_path / "empty"])
    with pytest.raises(DataError, match="nope: not a folder"):
        load_records([tmp_path / "nope"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "suite.json").write_text("{not json")
    with pytest.raises(DataError, match=r"suite\.json: not readable JSON"):
        load_records([bad])
    write_suite(tmp_path / "s", [{"method": "x", "seed": 0}])
    with pytest.raises(DataError, match=r"runs\[0\] needs"):
        load_records([tmp_path / "s"])


def test_a_suite_run_without_files_is_missing(tmp_path: Path) -> None:
    write_suite(tmp_path / "s", [{"method": "uniform", "seed": 0, "dir": "u/seed0"}])
    (r,) = load_records([tmp_path / "s"])
    assert r.status == "missing" and not r.ok
    assert json.dumps(r.metadata(), allow_nan=False)


def test_a_diverged_run_is_marked_diverged(tmp_path: Path) -> None:
    run = write_run(tmp_path / "uniform", seed=0, evals=curve([2.0, 3.0, 4.0]), final=False)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": 9, "train/diverged": 1}) + "\n")
    record = load_run(run)
    assert record.status == "diverged" and not record.ok
    assert "diverged at step 9" in (record.note or "")
