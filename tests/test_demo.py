"""`mixlab demo` end to end: every method of the demo suite, the summary and the report.

The demo corpus and its store have their own tests (tests/data); here the suite runs on the
session's tiny store with tiny budgets, which exercises the same suite, runner and report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixlab.demo import demo_suite, run_demo

pytestmark = pytest.mark.slow  # ~50 s: every method of the suite, each its own process


def test_demo_runs_every_method_and_writes_the_report(tmp_path: Path, tiny_store: Path) -> None:
    out = tmp_path / "demo"
    summary = run_demo(
        out,
        steps=10,
        store=tiny_store,
        jobs=2,
        overrides=["model.preset=llama-tiny", "eval.max_tokens_per_domain=1024"],
    )
    methods = demo_suite().methods
    results = json.loads((out / "report" / "results.json").read_text())
    assert [m["method"] for m in results["methods"]] == methods
    table = summary.table()
    for m in methods:
        assert m in table
    html = (out / "report" / "report.html").read_text()
    assert html.count("<img") >= 4
    manifest = json.loads((out / "runs" / "suite.json").read_text())
    assert {r["status"] for r in manifest["runs"]} == {"done"}
    doremi = next(r for r in manifest["runs"] if r["method"] == "doremi")
    assert doremi["stages"][0]["tokens"] > 0  # reference + proxy cost recorded
