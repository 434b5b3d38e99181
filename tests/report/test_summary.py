"""METHODS.md §5 in the summary: steps-to-target per seed, paired CI, wins, AUC, aggregates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mixlab.errors import ConfigError, DataError
from mixlab.report import load_records, summarize
from mixlab.report.records import StageCost
from tests.report.conftest import DOMS, NATURAL, record, write_run


def test_steps_to_target_is_per_seed_against_the_same_seed_baseline() -> None:
    records = [
        # seed 0: baseline best 3.0 at S_b = 30; seed 1: best 2.5 at S_b = 20 (not the last)
        record("uniform", 0, {10: 5.0, 20: 4.0, 30: 3.0}),
        record("uniform", 1, {10: 5.0, 20: 2.5, 30: 2.6}),
        # reaches 3.0 at 20 -> 100 (1 - 20/30) = 33.3 %; seed 1 never reaches 2.5, although
        # it would reach seed 0's target: pairing by seed matters
        record("odm", 0, {10: 4.0, 20: 3.0, 30: 2.0}),
        record("odm", 1, {10: 4.0, 20: 3.0, 30: 2.55}),
    ]
    s = summarize(records)
    odm = s.method("odm")
    t0, t1 = odm.targets
    assert (t0.seed, t0.target, t0.baseline_step, t0.step) == (0, 3.0, 30, 20)
    assert t0.percent_fewer == pytest.approx(100 / 3) and t0.times_faster == pytest.approx(1.5)
    assert (t1.seed, t1.target, t1.baseline_step, t1.step) == (1, 2.5, 20, None)
    assert t1.percent_fewer is None and t1.times_faster is None
    assert odm.mean_percent_fewer == pytest.approx(100 / 3)
    assert (len(odm.reached), odm.not_reached) == (1, 1)
    header, rows = s.headline_rows()
    cell = rows[1][header.index("to target: % fewer steps")]
    assert cell == "33.3% (1/2 not reached)"
    assert s.to_dict()["methods"][1]["steps_to_target"]["not_reached"] == 1


def test_target_reached_on_equality_and_never_reached() -> None:
    records = [
        record("uniform", 0, {10: 5.0, 20: 4.0}),
        record("tie", 0, {10: 4.0, 20: 3.0}),  # 4.0 <= 4.0 at step 10: 50 % fewer
        record("never", 0, {10: 6.0, 20: 4.5}),
    ]
    s = summarize(records)
    assert s.method("tie").targets[0].step == 10
    assert s.method("tie").targets[0].percent_fewer == pytest.approx(50.0)
    never = s.method("never")
    assert never.targets[0].step is None and never.mean_percent_fewer is None
    _, rows = s.headline_rows()
    assert "not reached (1/1)" in rows[2]
    assert "baseline" in rows[0][6]  # the baseline row says so instead of 0 %


def test_paired_difference_and_wins_with_known_numbers() -> None:
    base = [record("uniform", k, {10: 10.0}) for k in range(3)]
    method = [record("odm", k, {10: v}) for k, v in enumerate((9.0, 8.0, 11.0))]
    s = summarize(base + method)
    p = s.method("odm").paired
    assert p is not None and s.method("uniform").paired is None
    # diffs -1, -2, +1: mean -2/3, s = sqrt(7/3), half = t(2) s / sqrt(3)
    assert p.mean == pytest.approx(-2 / 3)
    assert p.half_width == pytest.approx(4.302653 * math.sqrt(7 / 3) / math.sqrt(3), rel=1e-4)
    assert (p.wins, p.n) == (2, 3)
    _, rows = s.headline_rows()
    assert rows[1][8] == "2/3"


def test_relative_differences_of_the_metric_and_the_worst_domain() -> None:
    """The table's Δ% cells: per-seed 100 (m / b - 1) of the metric (here -10, -20, +10) and of
    worst_ppl (+5, +5, +20: the mean win costs the worst domain), mean ± 95% t, wins."""
    base = [record("uniform", k, {10: 10.0}) for k in range(3)]
    method = [record("odm", k, {10: v}) for k, v in enumerate((9.0, 8.0, 11.0))]
    for r, worst in zip(base + method, (20.0,) * 3 + (21.0, 21.0, 24.0), strict=True):
        r.final_eval["eval/worst_ppl"] = worst
    s = summarize(base + method)
    pct = s.method("odm").paired_pct
    assert pct["mean_ppl"].diffs == pytest.approx((-10.0, -20.0, 10.0))
    assert pct["worst_ppl"].mean == pytest.approx(10.0) and pct["worst_ppl"].wins == 0
    half = 4.302653 * math.sqrt(75.0) / math.sqrt(3)  # diffs 5, 5, 20: s^2 = 75
    assert pct["worst_ppl"].half_width == pytest.approx(half, rel=1e-4)
    header, rows = s.headline_rows()
    assert rows[1][header.index("Δ% mean_ppl (95% CI)")].startswith("-6.7% ± ")
    assert rows[1][header.index("Δ% worst_ppl (wins)")] == f"+10.0% ± {half:.1f} (0/3)"
    assert rows[0][header.index("Δ% worst_ppl (wins)")] == "-"
    assert s.method("odm").to_dict()["vs_baseline_pct"]["worst_ppl"]["wins"] == 0


def test_area_under_curve_of_the_metric() -> None:
    s = summarize([record("uniform", 0, {10: 5.0, 20: 4.0, 30: 3.0})])
    assert s.method("uniform").auc.mean == pytest.approx(4.0)  # (45 + 35) / 20
    assert not any("AUC" in n for n in s.notes)
    shorter = summarize([record("uniform", 0, {10: 5.0, 30: 3.0}), record("odm", 0, {10: 4.0})])
    assert any("AUC is not comparable" in n for n in shorter.notes)


def test_baseline_choice() -> None:
    runs = [record("odm", 0, {10: 4.0}), record("uniform", 0, {10: 5.0})]
    assert summarize(runs).baseline == "uniform"
    assert [m.method for m in summarize(runs).methods] == ["uniform", "odm"]  # baseline first
    assert summarize(runs, baseline="odm").baseline == "odm"
    assert summarize([record("a", 0, {1: 1.0}), record("b", 0, {1: 1.0})]).baseline == "a"
    suite = [record("odm", 0, {1: 1.0}, suite_baseline="natural"), record("natural", 0, {1: 2.0})]
    assert summarize(suite).baseline == "natural"
    with pytest.raises(ConfigError, match="'doremi' is not among"):
        summarize(runs, baseline="doremi")
    with pytest.raises(ConfigError, match="metric 'nope'"):
        summarize(runs, metric="nope")


def test_unfinished_runs_are_skipped_with_a_note() -> None:
    runs = [
        record("uniform", 0, {10: 5.0}),
        record("odm", 0, {10: 4.0}, status="failed", note="status failed in suite.json"),
    ]
    s = summarize(runs)
    assert [m.method for m in s.methods] == ["uniform"]
    assert any("odm seed 0" in n and "failed" in n for n in s.notes)
    with pytest.raises(DataError, match="no finished run"):
        summarize(runs[1:])


def test_final_aggregates_from_run_folders(tmp_path: Path) -> None:
    losses = {0: (1.0, 2.0, 3.0), 1: (1.2, 2.2, 2.6)}
    for seed, final in losses.items():
        write_run(tmp_path / "uniform" / f"seed{seed}", seed=seed, evals={4: final})
    s = summarize(load_records([tmp_path / "uniform" / "seed0", tmp_path / "uniform" / "seed1"]))
    u = s.method("uniform")
    assert u.seeds == [0, 1]
    mean_ppl = [sum(math.exp(x) for x in v) / 3 for v in losses.values()]
    natural = [
        math.exp(sum(w * x for w, x in zip(NATURAL, v, strict=True))) for v in losses.values()
    ]
    assert u.final["mean_ppl"].mean == pytest.approx(sum(mean_ppl) / 2)
    assert u.final["natural_ppl"].mean == pytest.approx(sum(natural) / 2)
    assert u.final["worst_ppl"].mean == pytest.approx((math.exp(3.0) + math.exp(2.6)) / 2)
    assert u.worst_domain == "c"
    assert u.per_domain["a"].mean == pytest.approx((math.exp(1.0) + math.exp(1.2)) / 2)
    assert s.domains == list(DOMS)


def test_suite_summary_cost_overhead_and_tables(fake_suite: Path) -> None:
    s = summarize(load_records([fake_suite]))
    assert [m.method for m in s.methods] == ["uniform", "natural", "doremi", "acodm"]
    acodm, doremi = s.method("acodm"), s.method("doremi")
    assert acodm.step_seconds_pct == pytest.approx(20.0)  # 0.12 s vs natural's 0.10 s
    assert acodm.peak_rss_pct == pytest.approx(12.5)  # 450 MB vs 400 MB
    assert doremi.stage_tokens.mean == 4096 and doremi.stage_seconds.mean == 20.0
    assert s.method("natural").targets[0].step is None  # flatter-is-better metric
    table = s.table()
    header = table.splitlines()[0]
    # the §5 pitfall: mean_ppl never alone
    assert "mean_ppl" in header and "natural_ppl" in header and "worst_ppl (domain)" in header
    assert "+4.1k (20 s)" in table and "note: skipped odm seed 0" in table
    md = s.markdown()
    assert "## Per-domain validation perplexity" in md and "| doremi |" in md
    json.dumps(s.to_dict(), allow_nan=False)  # strict JSON: no NaN anywhere


def test_no_natural_run_means_no_overhead(tmp_path: Path) -> None:
    runs = [record("uniform", 0, {10: 5.0}, peak_rss_mb=100.0)]
    runs[0].stages = [StageCost("proxy", "train", 3.0, 10.0, None)]
    s = summarize(runs)
    assert s.method("uniform").step_seconds_pct is None
    assert any("no natural run" in n for n in s.notes)
