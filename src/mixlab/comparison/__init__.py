"""Compare mixing methods on one budget: suites of runs, seeds, resumable execution.

* :mod:`mixlab.comparison.suite` — the suite file: named runs sharing one base config,
  multi-stage methods (DoReMi reference + proxy, AC-ODM proxy -> target), seeds.
* :mod:`mixlab.comparison.runner` — runs every (method, seed) as its own process, skips what
  finished, resumes what was interrupted, records each run's cost in ``suite.json``.
* :mod:`mixlab.comparison.executor` — where those processes run: children of this process
  (:class:`LocalExecutor`, the default) or Ray tasks on a cluster
  (:mod:`mixlab.comparison.ray_executor`; ``make_executor("ray", ray_address=...)``).
* :func:`compare` — the notebook entry point: run a suite, then summarise it with
  :mod:`mixlab.report` (steps-to-target, paired differences over seeds, overhead).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mixlab.comparison.executor import Executor, LocalExecutor, make_executor
from mixlab.comparison.runner import MANIFEST_NAME, SuiteFailed, run_suite
from mixlab.comparison.suite import Job, RunSpec, StageSpec, Step, Suite, load_suite, parse_suite
from mixlab.errors import ConfigError

if TYPE_CHECKING:
    from mixlab.report import Summary

__all__ = [
    "MANIFEST_NAME",
    "Executor",
    "Job",
    "LocalExecutor",
    "RunSpec",
    "StageSpec",
    "Step",
    "Suite",
    "SuiteFailed",
    "compare",
    "load_suite",
    "make_executor",
    "parse_suite",
    "run_suite",
]


def compare(
    suite: str | Path | Suite,
    out: str | Path,
    *,
    seeds: Sequence[int] | None = None,
    methods: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    overrides: Sequence[str] = (),
    jobs: int | None = None,
    fresh: bool = False,
    executor: Executor | None = None,
    baseline: str | None = None,
    branch_at: int | float | None = None,
    report: bool = True,
    report_dir: str | Path | None = None,
    title: str = "mixlab report",
) -> Summary:
    """Run (or resume) a suite into ``out`` and return its :class:`~mixlab.report.Summary`.

    ``suite`` is a suite file or a :class:`Suite`; ``seeds`` / ``methods`` / ``exclude``
    narrow it; ``overrides`` (``"a.b=c"``) apply to every run. ``executor`` says where the
    runs go (default: processes on this machine, ``jobs`` at a time, default 1;
    ``make_executor("ray", ray_address="HOST:PORT")`` for a Ray cluster, where ``jobs``
    defaults to all of them). ``branch_at`` (a step, or a fraction of the steps) starts every
    run from one shared trunk per seed (:meth:`Suite.branched`). With ``report=True`` the
    report (``report.html``, ``report.md``, ``results.json``) is written to ``report_dir``
    (default ``out/report``) under ``title``.

    >>> summary = compare("configs/suites/example.yaml", "runs/suite")  # doctest: +SKIP
    >>> print(summary.table())  # doctest: +SKIP
    """
    from mixlab.report import load_records, summarize, write_report

    spec = suite if isinstance(suite, Suite) else load_suite(suite)
    spec = spec.select(methods, exclude)
    if seeds:
        spec.seeds = list(seeds)
    if baseline is not None:
        if baseline not in spec.methods:
            raise ConfigError(
                f"baseline {baseline!r} is not a method of the suite ({', '.join(spec.methods)})"
            )
        spec.baseline = baseline
    if branch_at is not None:
        spec = spec.branched(branch_at)
    manifest = run_suite(spec, out, overrides=overrides, jobs=jobs, fresh=fresh, executor=executor)
    records = load_records([manifest.parent])
    if report:
        write_report(
            records,
            Path(report_dir) if report_dir is not None else Path(out) / "report",
            baseline=spec.baseline,
            metric=spec.metric,
            title=title,
        )
    return summarize(records, baseline=spec.baseline, metric=spec.metric)
