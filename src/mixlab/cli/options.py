"""Options shared by several subcommands: ``--set`` overrides and the suite selection."""

from __future__ import annotations

import argparse


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
