"""The ``mixlab search`` subcommand: a spec -> a proxy swarm -> a recommended mixture.

:func:`add_parser` registers it on the ``mixlab`` command's subparsers; the library does the
work (:func:`mixlab.search.run.run_search`). Exit status: 0 when the mixture is recommended
(or ``--dry-run``), 3 when the fit is not trusted (the weights are written anyway, marked
``"recommended": false``; ``--allow-unrecommended`` exits 0), 2 on errors, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse

NOT_RECOMMENDED_EXIT = 3

DESCRIPTION = """\
Search a mixture from a swarm of small proxy runs (RegMix / Data Mixing Laws / olmix; UniMax
caps): propose mixtures around a prior (Dirichlet + the prior + one corner per domain, within
the epoch caps of the TARGET budget), train one small proxy per mixture and proxy seed, fit a
mixing law from mixture to per-domain validation loss, judge it on held-out runs, and minimise
the objective under the caps.

Repetition matching: every proxy trains on data.subsample = proxy tokens / target tokens of
each domain's documents (a seeded, fixed subset), so it repeats every domain as often as the
target run will.

The swarm is resumable: finished runs are reused, interrupted ones continue; OUT made with
another base/target/swarm is refused (a changed fit section only refits). Writes
OUT/search_weights.json ({"weights": ..., "recommended": ...}; use it with
--set mixing.name=fixed mixing.weights_file=OUT/search_weights.json), OUT/swarm.json and the
runs under OUT/swarm/ (a suite folder: `mixlab report OUT` draws the search's figures).
The swarm's runs are processes on this machine, or Ray tasks on a cluster with --executor ray.
"""

EPILOG = """\
examples:
  mixlab search configs/search/demo.yaml --out runs/search --dry-run   # the plan only
  mixlab search configs/search/demo.yaml --out runs/search --jobs 2
  mixlab search configs/search/demo.yaml --out /shared/runs/search --executor ray \\
      --ray-address head:6379          # the swarm as Ray tasks (folders on a shared filesystem)
  mixlab search configs/search/demo.yaml --out runs/search --set swarm.runs=4 fit.law=linear
exit status: 0 recommended, 3 not recommended (see the printed reasons), 2 error
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``search`` on the ``mixlab`` subparsers; returns the new parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "search",
        help="search a mixture from a swarm of small repetition-matched proxy runs",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", metavar="SPEC", help="search spec YAML, e.g. configs/search/demo.yaml")
    p.add_argument("--out", "-o", required=True, help="search folder (swarm runs and results)")
    from mixlab.cli.options import add_executor_options, jobs_help

    p.add_argument("--jobs", type=int, default=None, help=jobs_help(None))
    p.add_argument("--dry-run", action="store_true", help="print the plan; train nothing")
    p.add_argument("--fresh", action="store_true", help="delete OUT's swarm and redo it")
    p.add_argument(
        "--allow-unrecommended",
        action="store_true",
        help="exit 0 even when the fit is not trusted (the weights are written either way)",
    )
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="A.B=C",
        help="override spec fields: swarm.runs=4 fit.law=linear base.train.max_steps=50",
    )
    add_executor_options(p)
    p.set_defaults(func=cmd_search)
    return p


def cmd_search(args: argparse.Namespace) -> int:
    from mixlab.cli.options import executor_from_args
    from mixlab.search.run import run_search

    outcome = run_search(
        args.spec,
        args.out,
        jobs=args.jobs,
        executor=executor_from_args(args),
        fresh=args.fresh,
        dry_run=args.dry_run,
        overrides=args.set,
    )
    if args.dry_run or outcome.recommended:
        return 0
    if args.allow_unrecommended:
        print("(--allow-unrecommended: exiting 0 although the fit is not trusted)")
        return 0
    return NOT_RECOMMENDED_EXIT
