"""``mixlab compare``: run a suite of mixing methods and summarise it.

The work is :func:`mixlab.comparison.compare` (runs, report).

``--dry-run`` prints the plan (runs, folders, budgets) without running anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mixlab.cli.options import (
    add_command,
    add_set_option,
    add_suite_options,
    executor_from_args,
)

SUMMARY = "run a suite of mixing methods (same budget, seeds) and summarise it"
DESCRIPTION = """\
Run a suite of mixing methods on one budget, for one or more seeds, and summarise them.

A suite is a YAML file of named runs sharing one base config (store, model, budget); runs
may have stages that run first (DoReMi's reference + proxy, AC-ODM's proxy). uniform and
natural are always included (unless the suite says include_baselines: false). Each run is
its own process; finished runs are skipped and interrupted ones continue from their
checkpoint, so re-running the same command resumes an interrupted suite. The processes run
on this machine, or as Ray tasks on a cluster with --executor ray (the run folders must then
be on a filesystem every node sees).

Writes OUT/suite.json (status, wall-clock, tokens and peak RSS of every run and stage),
OUT/<method>/seed<k>/ (normal run folders), and OUT/report/ (report.html, report.md,
results.json) with: final mean / token-weighted / worst-domain perplexity, steps-to-target
against the baseline's best value, paired differences over seeds (95% CI, wins k/n), and
overhead against natural.
"""

EPILOG = """\
example:
  mixlab compare configs/suites/example.yaml --set data.store=shards --out runs/suite
  mixlab compare configs/suites/example.yaml --set data.store=shards --out runs/suite \\
      --seeds 0 1 2 --jobs 2          # 3 seeds, two single-thread runs side by side
  mixlab compare configs/suites/example.yaml --out runs/suite --dry-run   # show the plan
  mixlab compare configs/suites/example.yaml --set data.store=/shared/shards \\
      --out /shared/runs/suite --executor ray --ray-address head:6379   # on a Ray cluster
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(sub, "compare", SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument("suite", help="suite YAML file, e.g. configs/suites/example.yaml")
    p.add_argument("--out", "-o", required=True, help="suite folder (runs, suite.json, report)")
    add_suite_options(p)
    add_set_option(
        p, "override fields of every run, e.g. --set data.store=shards train.max_steps=600"
    )
    p.add_argument("--baseline", help="method the others are measured against (suite default)")
    p.add_argument(
        "--branch-at",
        metavar="STEP",
        help="start every run from one shared uniform trunk per seed, trained to this step "
        "(90) or fraction of the steps (0.3); the runs differ only after it (README "
        "'Branched comparisons'). Overrides the suite's branch.at",
    )
    p.add_argument("--no-report", action="store_true", help="only run and print the table")
    p.add_argument(
        "--dry-run", action="store_true", help="print the runs, folders and budgets; run nothing"
    )
    p.set_defaults(func=cmd_compare)
    return p


def cmd_compare(args: argparse.Namespace) -> int:
    from mixlab.comparison import MANIFEST_NAME, compare, load_suite
    from mixlab.comparison.suite import parse_branch_at

    executor = executor_from_args(args)  # a bad --executor option fails before anything runs
    suite = load_suite(args.suite).select(args.methods, args.exclude)
    if args.seeds:
        suite.seeds = list(args.seeds)
    if args.branch_at is not None:
        suite = suite.branched(parse_branch_at(args.branch_at))
    if args.dry_run:
        for job in suite.plan(args.out, overrides=args.set):
            for step in job.steps:
                kind = "" if step.name == "main" else f" [stage {step.name}: {step.kind}]"
                kind += " (shared)" if step.shared else ""
                c = step.config
                steps = f"{c.train.max_steps} steps"
                if step.trunk_steps:
                    steps = f"steps {step.trunk_steps + 1}-{c.train.max_steps}"
                print(
                    f"{job.method} seed {job.seed}{kind}: {c.model.preset or 'custom model'}, "
                    f"mixing {c.mixing.name}, {steps} x "
                    f"{c.train.batch_size * c.train.grad_accum} x {c.data.seq_len} tokens "
                    f"-> {step.dir}"
                )
        return 0
    summary = compare(
        suite,
        args.out,
        overrides=args.set,
        jobs=args.jobs,
        fresh=args.fresh,
        executor=executor,
        baseline=args.baseline,
        report=not args.no_report,
    )
    print("\n" + summary.table())
    out = Path(args.out)
    print(f"\nmanifest: {out / MANIFEST_NAME}")
    if not args.no_report:
        print(f"report: {out / 'report' / 'report.html'} (and report.md, results.json)")
    return 0
