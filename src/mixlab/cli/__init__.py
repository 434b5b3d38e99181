"""The ``mixlab`` command: prepare | train | eval | export | doremi | compare | report | demo.

Each subcommand is a module of this package (the report's is :mod:`mixlab.report.cli`) with
``add_parser(sub)``, which registers it, and its command function, a thin wrapper: it parses
arguments, calls the library and prints a result. :func:`build_parser` registers them, one
line each; :func:`main` configures logging once and runs the chosen command with SIGTERM
treated like Ctrl-C (:mod:`mixlab.interrupt`). Errors a user can fix
(:class:`~mixlab.errors.MixlabError`) are printed as one line without a traceback and exit
with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mixlab import __version__
from mixlab.cli import compare, demo, doremi, export, prepare, train
from mixlab.cli import eval as evaluate
from mixlab.engines import cli as export_mix
from mixlab.errors import MixlabError
from mixlab.interrupt import terminate_as_interrupt
from mixlab.report import cli as report
from mixlab.search import cli as search

__all__ = ["build_parser", "main"]

EPILOG = """\
typical use:
  mixlab prepare --input data/ --domain-field meta.pile_set_name --out shards/ --vocab-size 8192
  mixlab train --config configs/tiny_cpu.yaml \
      --set data.store=shards mixing.name=natural --out runs/natural
  mixlab eval runs/natural runs/uniform
  mixlab eval runs/meco --mode uncond cond_true cond_fixed --prefix 'URL: en.wikipedia.org\\n\\n'
  mixlab export runs/natural --out hf/natural      # a Hugging Face model folder
  mixlab eval runs/natural --lm-eval mixlab --limit 20   # lm-evaluation-harness, offline
  mixlab doremi --config configs/doremi.yaml --set data.store=shards --out runs/doremi
  mixlab compare configs/suites/example.yaml --set data.store=shards --out runs/suite
  mixlab report runs/suite         # report.html / report.md / results.json
  mixlab search configs/search/demo.yaml --out runs/search   # a mixture from a proxy swarm
  mixlab demo                      # every method compared on the built-in demo corpus
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with terminate_as_interrupt():  # `kill` stops a training like Ctrl-C: it checkpoints
            return int(args.func(args) or 0)
    except MixlabError as exc:
        print(f"mixlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mixlab {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixlab",
        description="Find and apply the best domain mixture for language-model pretraining.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mixlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    prepare.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    export.add_parser(sub)
    doremi.add_parser(sub)
    compare.add_parser(sub)
    report.add_parser(sub)
    export_mix.add_parser(sub)
    demo.add_parser(sub)
    search.add_parser(sub)
    return parser
