"""Runs -> one comparison table: every method against the baseline, over seeds (METHODS.md §5).

For each method (suite order, the baseline first) :func:`summarize` reports:

* **final validation** — ``mean_ppl``, ``natural_ppl``, ``worst_ppl`` (+ the worst domain,
  the most frequent over seeds), ``geo_ppl``, each as mean ± sample std over seeds. The
  pitfall of §5: ``mean_ppl`` rewards any mixture flatter than natural, so it is never shown
  without ``natural_ppl`` and the worst domain next to it;
* **area under the validation curve** of the chosen metric (time-averaged value);
* **steps to target**, per seed against the *same-seed* baseline: m* = the baseline's best
  value of the metric, S_b its first eval step; s* = the method's first eval step with a value
  <= m* (no interpolation); "% fewer steps" = 100·(1 − s*/S_b), averaged over the seeds that
  reached the target, plus the count that did not ("not reached");
* **paired difference** of the final metric vs the baseline: mean of per-seed differences
  ± t_{0.975,n−1}·s/√n (95% CI) and "wins k/n"; the tables show it relative, in percent of the
  same-seed baseline (``100 (m / b − 1)``), for the metric and for ``worst_ppl``, so a mean win
  is never read without what happened to the worst domain;
* **cost** — tokens and wall-clock of the main run, the extra tokens and seconds spent in
  stages (DoReMi reference + proxy, AC-ODM proxy), and the overhead against the ``natural``
  run: mean ``train/step_seconds`` and peak RSS as a percentage of natural's;
* a **per-domain** table: final perplexity per (method, domain), mean over seeds;
* **notes**: skipped runs, when the seed noise was set (:mod:`.onset`), how much any mixture
  could win at this budget and how many seeds would show it (:mod:`.headroom`), AC-ODM alarms.

:meth:`Summary.table` is the terminal view, :meth:`Summary.markdown` the report's tables and
:meth:`Summary.to_dict` the JSON form (no NaN: null).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mixlab.errors import ConfigError, DataError
from mixlab.eval.metrics import (
    area_under_curve,
    baseline_target,
    percent_fewer_steps,
    steps_to_target,
    times_faster,
    worst_domain,
)
from mixlab.report.headroom import headroom_note
from mixlab.report.onset import branch_note, onset_note
from mixlab.report.records import RunRecord
from mixlab.report.stats import (
    PairedDiff,
    Spread,
    fmt,
    json_float,
    paired_difference,
    paired_percent,
    spread,
)
from mixlab.tables import markdown_table, text_table

FINAL_KEYS = ("mean_ppl", "natural_ppl", "worst_ppl", "geo_ppl")
NATURAL = "natural"


def metric_key(metric: str) -> str:
    """``mean_ppl`` -> ``eval/mean_ppl``; a key with a ``/`` (``eval_uncond/mean_ppl``) as is."""
    return metric if "/" in metric else f"eval/{metric}"


@dataclass(frozen=True)
class TargetResult:
    """Steps-to-target of one seed against the same-seed baseline."""

    seed: int
    target: float  # m*: the baseline's best value of the metric
    baseline_step: int  # S_b: the baseline's first eval step reaching m*
    step: int | None  # s*: the method's first eval step <= m*; None = not reached
    percent_fewer: float | None
    times_faster: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "target": json_float(self.target),
            "baseline_step": self.baseline_step,
            "step": self.step,
            "percent_fewer": json_float(self.percent_fewer),
            "times_faster": json_float(self.times_faster),
        }


@dataclass
class MethodSummary:
    """Everything the report says about one method, aggregated over its seeds."""

    method: str
    seeds: list[int]
    final: dict[str, Spread]
    worst_domain: str | None
    auc: Spread
    targets: list[TargetResult]
    paired: PairedDiff | None  # None for the baseline itself
    per_domain: dict[str, Spread]
    tokens: Spread
    seconds: Spread
    stage_tokens: Spread
    stage_seconds: Spread
    step_seconds: Spread
    peak_rss_mb: Spread
    step_seconds_pct: float | None = None  # vs natural, as a percentage (+ = slower)
    peak_rss_pct: float | None = None
    is_baseline: bool = False
    # relative paired differences in %, for the metric and worst_ppl (empty for the baseline)
    paired_pct: dict[str, PairedDiff] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def reached(self) -> list[TargetResult]:
        return [t for t in self.targets if t.step is not None]

    @property
    def not_reached(self) -> int:
        return sum(1 for t in self.targets if t.step is None)

    @property
    def mean_percent_fewer(self) -> float | None:
        """Mean "% fewer steps" over the seeds that reached the target (None if none did)."""
        values = [t.percent_fewer for t in self.reached if t.percent_fewer is not None]
        return math.fsum(values) / len(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "is_baseline": self.is_baseline,
            "seeds": list(self.seeds),
            "n": self.n,
            "final": {k: v.to_dict() for k, v in self.final.items()},
            "worst_domain": self.worst_domain,
            "auc": self.auc.to_dict(),
            "steps_to_target": {
                "per_seed": [t.to_dict() for t in self.targets],
                "mean_percent_fewer": json_float(self.mean_percent_fewer),
                "reached": len(self.reached),
                "not_reached": self.not_reached,
            },
            "vs_baseline": None if self.paired is None else self.paired.to_dict(),
            "vs_baseline_pct": {k: v.to_dict() for k, v in self.paired_pct.items()} or None,
            "per_domain_ppl": {d: s.to_dict() for d, s in self.per_domain.items()},
            "cost": {
                "tokens": self.tokens.to_dict(),
                "seconds": self.seconds.to_dict(),
                "stage_tokens": self.stage_tokens.to_dict(),
                "stage_seconds": self.stage_seconds.to_dict(),
                "step_seconds": self.step_seconds.to_dict(),
                "peak_rss_mb": self.peak_rss_mb.to_dict(),
                "step_seconds_pct_vs_natural": json_float(self.step_seconds_pct),
                "peak_rss_pct_vs_natural": json_float(self.peak_rss_pct),
            },
        }


@dataclass
class Summary:
    """The comparison of all methods; build it with :func:`summarize`."""

    baseline: str
    metric: str
    methods: list[MethodSummary]
    domains: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def metric_key(self) -> str:
        return metric_key(self.metric)

    def method(self, name: str) -> MethodSummary:
        for m in self.methods:
            if m.method == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (NaN and inf become null)."""
        return {
            "baseline": self.baseline,
            "metric": self.metric,
            "domains": list(self.domains),
            "notes": list(self.notes),
            "methods": [m.to_dict() for m in self.methods],
        }

    # ------------------------------------------------------------------ tables
    def headline_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the main table (shared by the text, markdown and HTML views)."""
        m = self.metric
        header = [
            "method",
            "seeds",
            "mean_ppl",
            "natural_ppl",
            "worst_ppl (domain)",
            f"AUC {m}",
            "to target: % fewer steps",
            f"Δ% {m} (95% CI)",
            "wins",
            "Δ% worst_ppl (wins)",
            "extra tokens (stages)",
        ]
        rows = []
        for s in self.methods:
            worst = s.final["worst_ppl"].format()
            if s.worst_domain:
                worst = f"{worst} ({s.worst_domain})"
            rows.append(
                [
                    s.method,
                    str(s.n),
                    s.final["mean_ppl"].format(),
                    s.final["natural_ppl"].format(),
                    worst,
                    s.auc.format(),
                    _target_cell(s),
                    "baseline" if s.paired is None else _pct_cell(s.paired_pct.get(m)),
                    "-" if s.paired is None else f"{s.paired.wins}/{s.paired.n}",
                    "-" if s.paired is None else _pct_cell(s.paired_pct.get("worst_ppl"), True),
                    _extra_cell(s),
                ]
            )
        return header, rows

    def cost_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the cost table: tokens, wall-clock and overhead vs natural."""
        header = [
            "method",
            "tokens",
            "wall-clock s",
            "s/step",
            "vs natural",
            "peak RSS MB",
            "vs natural",
            "stage tokens",
            "stage s",
        ]
        rows = [
            [
                s.method,
                fmt_tokens(s.tokens.mean),
                fmt(s.seconds.mean, 1),
                fmt(s.step_seconds.mean, 4),
                fmt_pct(s.step_seconds_pct),
                fmt(s.peak_rss_mb.mean, 0),
                fmt_pct(s.peak_rss_pct),
                fmt_tokens(s.stage_tokens.mean) if s.stage_tokens.mean else "0",
                fmt(s.stage_seconds.mean, 1) if s.stage_seconds.mean else "0",
            ]
            for s in self.methods
        ]
        return header, rows

    def per_domain_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the per-domain table: final ppl, mean over seeds."""
        header = ["method", *self.domains]
        rows = [
            [
                s.method,
                *(fmt(s.per_domain[d].mean) if d in s.per_domain else "-" for d in self.domains),
            ]
            for s in self.methods
        ]
        return header, rows

    def target_rows(self) -> tuple[list[str], list[list[str]]]:
        """Per-seed steps-to-target details: m*, S_b, s*, % fewer, × faster."""
        header = ["method", "seed", f"target {self.metric}", "S_b", "s*", "% fewer", "× faster"]
        rows = [
            [
                s.method,
                str(t.seed),
                fmt(t.target),
                str(t.baseline_step),
                "not reached" if t.step is None else str(t.step),
                fmt(t.percent_fewer, 1),
                fmt(t.times_faster, 2),
            ]
            for s in self.methods
            if not s.is_baseline
            for t in s.targets
        ]
        return header, rows

    def table(self) -> str:
        """The main table as aligned plain text (for the terminal), then the notes."""
        header, rows = self.headline_rows()
        lines = [text_table(header, rows)]
        lines.append(
            f"baseline: {self.baseline}; metric: {self.metric} (lower is better); ± = std over "
            f"seeds; target = the same-seed {self.baseline}'s best {self.metric}; "
            f"Δ% = paired difference vs the same-seed {self.baseline}, in % of it, ± 95% t "
            "interval"
        )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def markdown(self) -> str:
        """All tables as GitHub markdown (main, cost, per-domain, per-seed targets, notes)."""
        parts = [
            "## Summary",
            "",
            f"Baseline **{self.baseline}**, metric **{self.metric}** (lower is better). "
            "mean_ppl is the unweighted mean over domains: it favours flatter mixtures, so "
            "read it next to natural_ppl (token-weighted) and the worst domain. "
            "± is the std over seeds. Steps to target: the first eval step at which a method "
            f"reaches the same-seed {self.baseline}'s best {self.metric} (S_b = the step of that "
            "best), as 100·(1 − s*/S_b). Δ% is the mean paired difference vs the same-seed "
            "baseline in % of it, ± a 95% t interval; wins counts the seeds where the method is "
            "lower.",
            "",
            markdown_table(*self.headline_rows()),
            "",
            "## Cost",
            "",
            "Stage tokens and seconds are the extra cost of multi-stage methods (reference, "
            "proxy) on top of the main run; overheads are relative to the `natural` run. "
            "Wall-clock compares only between runs made under the same load (same `--jobs`, "
            "nothing else running).",
            "",
            markdown_table(*self.cost_rows()),
            "",
            "## Per-domain validation perplexity (final, mean over seeds)",
            "",
            markdown_table(*self.per_domain_rows()),
        ]
        header, rows = self.target_rows()
        if rows:
            parts += ["", "## Steps to target, per seed", "", markdown_table(header, rows)]
        if self.notes:
            parts += ["", "## Notes", "", *(f"- {n}" for n in self.notes)]
        return "\n".join(parts) + "\n"


def summarize(
    records: Sequence[RunRecord], *, baseline: str | None = None, metric: str = "mean_ppl"
) -> Summary:
    """Aggregate the runs per method and compare each with the baseline (see module doc).

    ``baseline`` None -> the suite's baseline, else ``uniform`` when present, else the first
    method. Runs that did not finish are skipped with a note. ConfigError when the baseline
    is not among the methods or the metric is not logged; DataError when no run is usable.
    """
    notes = [f"skipped {r.method} seed {r.seed}: {r.note or r.status}" for r in records if not r.ok]
    usable = [r for r in records if r.ok]
    if not usable:
        raise DataError("summarize: no finished run with an evaluation" + _notes_suffix(notes))
    groups: dict[str, list[RunRecord]] = {}
    for r in usable:
        groups.setdefault(r.method, []).append(r)
    base = _choose_baseline(baseline, usable, list(groups))
    order = [base, *(m for m in groups if m != base)]
    key = metric_key(metric)
    if not any(key in r.final_eval for r in groups[base]):
        known = sorted(
            k.removeprefix("eval/") for k in groups[base][0].final_eval if k.count("/") == 1
        )
        raise ConfigError(f"metric {metric!r} is not logged by the baseline {base}; known: {known}")

    domains: list[str] = []
    for r in usable:
        domains += [d for d in r.domains if d not in domains]
    base_by_seed = {r.seed: r for r in groups[base]}
    nat = groups.get(NATURAL)
    nat_step = spread([r.mean_step_seconds() for r in nat]).mean if nat else None
    nat_rss = spread([r.peak_rss_mb for r in nat]).mean if nat else None
    if nat is None:
        notes.append("no natural run: overheads vs natural are not reported")

    spans = {(r.eval_steps[0], r.eval_steps[-1]) for r in usable if r.eval_steps}
    if len(spans) > 1:
        notes.append(f"eval step ranges differ between runs {sorted(spans)}: AUC is not comparable")
    methods = []
    for name in order:
        runs = groups[name]
        seeds = [r.seed for r in runs]
        if len(set(seeds)) != len(seeds):
            notes.append(f"{name}: repeated seeds {seeds}; paired comparisons use the last")
        summary = _method_summary(
            name, runs, base_by_seed, key, domains, notes, is_baseline=name == base
        )
        summary.step_seconds_pct = _pct(summary.step_seconds.mean, nat_step)
        summary.peak_rss_pct = _pct(summary.peak_rss_mb.mean, nat_rss)
        methods.append(summary)
    for note in (
        branch_note(groups),
        onset_note(groups, base_by_seed, key, base),
        headroom_note(groups, base_by_seed, base),
    ):
        if note:
            notes.append(note)
    notes.extend(acodm_alarms(usable))
    return Summary(baseline=base, metric=metric, methods=methods, domains=domains, notes=notes)


def acodm_alarms(records: Sequence[RunRecord]) -> list[str]:
    """Report notes for AC-ODM runs whose mixture left its bound or whose domains went past
    their epoch caps (from ``mix/acodm/bound_excess`` and ``mix/acodm/max_cap_use``)."""
    notes = []
    for run in records:
        _, excess = run.train_series("mix/acodm/bound_excess")
        steps, bounds = run.train_series("mix/acodm/bound")
        worst = max((v for v in excess if math.isfinite(v)), default=0.0)
        if worst > 1e-9:
            bound = bounds[-1] if bounds else math.nan
            notes.append(
                f"ALARM {run.method} seed {run.seed}: the mixture left its bound "
                f"(max |log w/p0| = {bound + worst:.3g} > bound {bound:g}); epoch caps force "
                "this when the prior needs more of a capped domain than it may give"
            )
        steps, use = run.train_series("mix/acodm/max_cap_use")
        over = [(s, u) for s, u in zip(steps, use, strict=True) if u > 1.0 + 1e-9]
        if over:
            notes.append(
                f"ALARM {run.method} seed {run.seed}: a domain went past its epoch cap from "
                f"step {over[0][0]} (served {max(u for _, u in over):.3g}x its cap; the "
                "per-domain floor can do this: lower floor_per_domain or raise the cap)"
            )
    return notes


# ---------------------------------------------------------------------------- internals
def _paired_values(
    runs: list[RunRecord], base_by_seed: dict[int, RunRecord], key: str
) -> tuple[dict[int, float], dict[int, float]]:
    """Final ``key`` per seed of the method and of the baseline (missing values left out)."""
    method = {r.seed: _final(r, key) for r in runs}
    base = {s: _final(b, key) for s, b in base_by_seed.items()}
    return (
        {s: v for s, v in method.items() if v is not None},
        {s: v for s, v in base.items() if v is not None},
    )


def _pct_cell(diff: PairedDiff | None, wins: bool = False) -> str:
    """``+1.2% ± 0.8`` (and ``(k/n)`` with wins) for a relative paired difference."""
    if diff is None or diff.mean is None:
        return "-"
    text = f"{diff.mean:+.1f}%"
    if diff.half_width is not None and math.isfinite(diff.half_width):
        text += f" ± {diff.half_width:.1f}"
    return f"{text} ({diff.wins}/{diff.n})" if wins else text


def _choose_baseline(baseline: str | None, records: Sequence[RunRecord], methods: list[str]) -> str:
    if baseline is not None:
        if baseline not in methods:
            raise ConfigError(f"baseline {baseline!r} is not among the methods {methods}")
        return baseline
    suite = next((r.suite_baseline for r in records if r.suite_baseline), None)
    if suite in methods:
        assert suite is not None
        return suite
    return "uniform" if "uniform" in methods else methods[0]


def _method_summary(
    name: str,
    runs: list[RunRecord],
    base_by_seed: dict[int, RunRecord],
    key: str,
    domains: list[str],
    notes: list[str],
    *,
    is_baseline: bool,
) -> MethodSummary:
    final = {k: spread([_final(r, f"eval/{k}") for r in runs]) for k in FINAL_KEYS}
    if key.removeprefix("eval/") not in final:
        final[key.removeprefix("eval/")] = spread([_final(r, key) for r in runs])
    worsts = [_worst(r) for r in runs]
    counts = Counter(w for w in worsts if w is not None)
    worst = max(counts, key=lambda d: counts[d]) if counts else None  # ties: first seen

    aucs: list[float | None] = []
    targets: list[TargetResult] = []
    for r in runs:
        steps, values = _finite_curve(r, key)
        aucs.append(area_under_curve(steps, values) if steps else None)
        base = base_by_seed.get(r.seed)
        if base is None:
            notes.append(f"{name} seed {r.seed}: no same-seed baseline; no steps-to-target")
            continue
        b_steps, b_values = _finite_curve(base, key)
        if not b_steps:
            continue
        s_b, target = baseline_target(b_steps, b_values)
        if s_b <= 0:
            notes.append(f"{name} seed {r.seed}: baseline's best is at step {s_b}; skipped")
            continue
        s_star = steps_to_target(steps, values, target) if steps else None
        targets.append(
            TargetResult(
                seed=r.seed,
                target=target,
                baseline_step=s_b,
                step=s_star,
                percent_fewer=percent_fewer_steps(s_star, s_b),
                times_faster=times_faster(s_star, s_b) if s_star else None,
            )
        )
    paired = None
    paired_pct: dict[str, PairedDiff] = {}
    if not is_baseline:
        pairs = {k: _paired_values(runs, base_by_seed, k) for k in [key, "eval/worst_ppl"]}
        paired = paired_difference(*pairs[key])
        paired_pct = {k.removeprefix("eval/"): paired_percent(*v) for k, v in pairs.items()}
    return MethodSummary(
        method=name,
        seeds=[r.seed for r in runs],
        final=final,
        worst_domain=worst,
        auc=spread(aucs),
        targets=targets,
        paired=paired,
        paired_pct=paired_pct,
        per_domain={d: spread([_final(r, f"eval/{d}/ppl") for r in runs]) for d in domains},
        tokens=spread([r.tokens for r in runs]),
        seconds=spread([r.seconds for r in runs]),
        stage_tokens=spread([r.stage_tokens for r in runs]),
        stage_seconds=spread([r.stage_seconds for r in runs]),
        step_seconds=spread([r.mean_step_seconds() for r in runs]),
        peak_rss_mb=spread([r.peak_rss_mb for r in runs]),
        is_baseline=is_baseline,
    )


def _final(r: RunRecord, key: str) -> float | None:
    value = r.final_eval.get(key)
    return None if value is None or math.isnan(value) else float(value)


def _worst(r: RunRecord) -> str | None:
    losses = {
        d: r.final_eval[f"eval/{d}/loss"] for d in r.domains if f"eval/{d}/loss" in r.final_eval
    }
    return worst_domain(losses) if losses else None


def _finite_curve(r: RunRecord, key: str) -> tuple[list[int], list[float]]:
    """The eval curve of ``key`` at the evals that logged it."""
    kept = [(s, row[key]) for s, row in zip(r.eval_steps, r.eval_curve, strict=True) if key in row]
    # A NaN (diverged, or null in the JSON) never reaches a target: count it as +inf.
    return [s for s, _ in kept], [math.inf if math.isnan(v) else v for _, v in kept]


def _pct(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or not reference > 0:
        return None
    return 100.0 * (value / reference - 1.0)


def _target_cell(s: MethodSummary) -> str:
    if s.is_baseline:
        steps = sorted({t.baseline_step for t in s.targets})
        return "baseline (S_b " + ",".join(str(x) for x in steps) + ")" if steps else "baseline"
    n = len(s.targets)
    if n == 0:
        return "-"
    if not s.reached:
        return f"not reached ({n}/{n})"
    text = f"{s.mean_percent_fewer:.1f}%" if s.mean_percent_fewer is not None else "-"
    return f"{text} ({s.not_reached}/{n} not reached)" if s.not_reached else text


def _extra_cell(s: MethodSummary) -> str:
    tokens, seconds = s.stage_tokens.mean, s.stage_seconds.mean
    if not tokens and not seconds:
        return "0"
    return f"+{fmt_tokens(tokens)} ({fmt(seconds, 0)} s)"


def _notes_suffix(notes: list[str]) -> str:
    return (": " + "; ".join(notes)) if notes else ""


def fmt_tokens(value: float | None) -> str:
    """1234567 -> ``1.23M``; ``-`` when unknown."""
    if value is None or not math.isfinite(value):
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"
