"""What the subcommands share: how one is registered, ``--set`` overrides, suite selection,
where a suite's runs go (``--executor``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mixlab.comparison.executor import Executor


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    summary: str,
    description: str,
    epilog: str | None = None,
    *,
    show_defaults: bool = False,
) -> argparse.ArgumentParser:
    """Register subcommand ``name`` (``summary`` in ``mixlab --help``, ``description`` in its own).

    A description with an ``epilog`` (examples, knobs) is printed with its line breaks kept;
    ``show_defaults`` appends each option's default to its help.
    """
    formatter: type[argparse.HelpFormatter] = argparse.HelpFormatter
    if show_defaults:
        formatter = argparse.ArgumentDefaultsHelpFormatter
    elif epilog is not None:
        formatter = argparse.RawDescriptionHelpFormatter
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description, epilog=epilog, formatter_class=formatter
    )
    return parser


def add_set_option(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--set a.b=c ...``: config overrides (train, doremi, compare)."""
    p.add_argument("--set", nargs="+", default=[], metavar="A.B=C", help=help_text)


def add_suite_options(p: argparse.ArgumentParser, *, jobs: int | None = None) -> None:
    """Seeds and methods of a suite, runs side by side, ``--fresh``, ``--executor`` (compare,
    demo)."""
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the suite's)")
    p.add_argument("--methods", nargs="+", metavar="NAME", help="run only these methods")
    p.add_argument("--exclude", nargs="+", metavar="NAME", help="leave these methods out")
    p.add_argument("--jobs", "-j", type=int, default=jobs, help=jobs_help(jobs))
    p.add_argument("--fresh", action="store_true", help="delete and redo finished runs")
    add_executor_options(p)


def jobs_help(jobs: int | None) -> str:
    """``--jobs``' help: the local default and what it means with ``--executor ray``."""
    return (
        f"runs side by side, each with cores/jobs threads (default {jobs or 1}; 2 on 2 cores: "
        "~31%% more total throughput than 1); with --executor ray: runs in flight "
        f"(default {jobs or 'all'}; the cluster queues them by their CPU request)"
    )


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """``--executor local|ray``, ``--ray-address``, ``--gpus-per-run``, ``--ray-max-retries``."""
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where the runs go: processes on this machine (default) or Ray tasks on a "
        "cluster (pip install 'mixlab[ray]'; run folders on a filesystem all nodes share)",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster: HOST:PORT of its head, 'auto' (one started on this machine) "
        "or ray://HOST:10001 (default: $RAY_ADDRESS, else a private Ray on this machine)",
    )
    p.add_argument(
        "--gpus-per-run",
        type=float,
        default=0.0,
        metavar="G",
        help="GPUs Ray reserves for each run (default 0; CPUs: train.threads, 1 when 0)",
    )
    p.add_argument(
        "--ray-max-retries",
        type=int,
        default=3,
        metavar="N",
        help="reruns of a run whose Ray worker or node died; it resumes from its "
        "checkpoint (default 3)",
    )


def executor_from_args(args: argparse.Namespace) -> Executor:
    """The executor that :func:`add_executor_options`' flags ask for."""
    from mixlab.comparison.executor import make_executor

    return make_executor(
        args.executor,
        ray_address=args.ray_address,
        gpus_per_run=args.gpus_per_run,
        max_retries=args.ray_max_retries,
    )
