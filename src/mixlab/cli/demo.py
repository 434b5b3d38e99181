"""``mixlab demo``: every mixing method on the built-in demo corpus.

The work is :func:`mixlab.demo.run_demo`: corpus, store, the demo suite and its report.
"""

from __future__ import annotations

import argparse

from mixlab.cli.options import add_command, add_suite_options, executor_from_args

SUMMARY = "compare every mixing method on the built-in demo corpus (no data needed)"
DESCRIPTION = """\
Unpack the 8-domain corpus shipped with mixlab (Python stdlib source, C headers, docstrings,
license texts, ...; the same on every machine, its fingerprint is printed), prepare shards,
and run the demo suite: the baselines uniform, natural, unimax and stratified, then odm,
doremi (reference + proxy -> target), acodm (actor-critic learned on a tiny proxy, frozen on
the target) and meco, with the same tiny model, seed and token budget (~11 min on 2 CPU
cores). Prints the summary table and writes
OUT/report/report.html. Interrupted demos resume.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(sub, "demo", SUMMARY, DESCRIPTION)
    p.add_argument(
        "--out",
        default="mixlab-demo",
        help="folder for the store, runs and report (default ./mixlab-demo)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short version: 60 steps per run, smaller evals (~3.5 min)",
    )
    p.add_argument(
        "--steps", type=int, help="training steps per run (default 300; evals every 10%%)"
    )
    p.add_argument("--preset", help="model preset of the main runs (default llama-1m)")
    add_suite_options(p, jobs=2)
    p.set_defaults(func=cmd_demo)
    return p


def cmd_demo(args: argparse.Namespace) -> int:
    from mixlab.demo import run_demo

    run_demo(
        args.out,
        steps=args.steps,
        quick=args.quick,
        seeds=args.seeds or (0,),
        methods=args.methods,
        exclude=args.exclude,
        preset=args.preset,
        jobs=args.jobs,
        fresh=args.fresh,
        executor=executor_from_args(args),
    )
    return 0
