"""What the subcommands share: how one is registered, ``--set`` overrides, suite selection."""

from __future__ import annotations

import argparse


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


def add_suite_options(p: argparse.ArgumentParser, *, jobs: int = 1) -> None:
    """Seeds and methods of a suite, runs side by side, ``--fresh`` (compare, demo)."""
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the suite's)")
    p.add_argument("--methods", nargs="+", metavar="NAME", help="run only these methods")
    p.add_argument("--exclude", nargs="+", metavar="NAME", help="leave these methods out")
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=jobs,
        help=f"runs side by side, each with cores/jobs threads (default {jobs}; 2 on 2 cores: "
        "~31%% more total throughput than 1)",
    )
    p.add_argument("--fresh", action="store_true", help="delete and redo finished runs")
