"""``mixlab eval``: per-domain validation of saved runs, MeCo eval modes, or lm-eval tasks.

Standard eval: :func:`mixlab.eval.runs.evaluate_run` (one table, or several runs side by side);
``--mode``: :func:`mixlab.eval.runs.evaluate_run_modes` (per-document, with/without metadata
prefixes); ``--lm-eval``: :func:`mixlab.eval.harness.run_harness` (offline
lm-evaluation-harness).
"""

from __future__ import annotations

import argparse
import json

from mixlab.cli.options import add_command
from mixlab.errors import ConfigError
from mixlab.files import write_json

SUMMARY = "per-domain validation loss / perplexity of runs, or lm-eval tasks (--lm-eval)"
DESCRIPTION = """\
Evaluate saved runs (run folders or checkpoint files) on their store's validation split:
per-domain loss and perplexity (token-weighted within a domain), the unweighted mean PPL,
geometric mean, worst domain and the natural (token-weighted) loss. Several runs are
compared side by side. Results are written as eval.json in each run folder (or --json FILE
for all). With --lm-eval TASKS the runs (or exported HF model folders) are scored with
lm-evaluation-harness instead (pip install 'mixlab[lm-eval]'), offline: mixlab bundles the
local tasks mixlab_domain_cloze and mixlab_domain_text (tag: mixlab); add your own task YAML
folders with --lm-eval-include. Results are printed as a table and written as lm_eval.json
in each run folder (or --json FILE).
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(sub, "eval", SUMMARY, DESCRIPTION)
    p.add_argument("runs", nargs="+", help="run folders, checkpoint.pt files (or HF folders)")
    p.add_argument(
        "--max-tokens", type=int, help="validation tokens per domain (default: run's eval config)"
    )
    p.add_argument("--json", help="also write all results to this JSON file")
    m = p.add_argument_group("MeCo conditional evaluation")
    m.add_argument(
        "--mode",
        nargs="+",
        choices=("uncond", "cond_true", "cond_fixed"),
        metavar="MODE",
        help=(
            "per-document eval instead of the standard one, side by side: uncond (plain "
            "documents), cond_true (each document's own metadata prefix, by the run's meco.* "
            "settings), cond_fixed (the --prefix text before every document). The same "
            "document tokens are scored in every mode; prefix tokens never are. Written to "
            "eval_modes.json in the run folder"
        ),
    )
    m.add_argument(
        "--prefix",
        help=(
            "prefix text of --mode cond_fixed (steering), e.g. 'URL: en.wikipedia.org\\n\\n'; "
            "the escapes \\n and \\t are turned into newline and tab"
        ),
    )
    g = p.add_argument_group("lm-evaluation-harness")
    g.add_argument(
        "--lm-eval",
        metavar="TASKS",
        help="comma-separated lm-eval tasks, groups or tags, e.g. mixlab_domain_cloze or mixlab",
    )
    g.add_argument(
        "--lm-eval-include",
        nargs="+",
        default=[],
        metavar="DIR",
        help="folders of extra lm-eval task YAML files (local data)",
    )
    g.add_argument("--limit", type=float, help="documents per task (lm-eval --limit)")
    g.add_argument("--batch-size", type=int, default=8, help="lm-eval batch size")
    g.add_argument(
        "--max-length", type=int, help="context length in tokens (default: training seq_len)"
    )
    p.set_defaults(func=cmd_eval)
    return p


def cmd_eval(args: argparse.Namespace) -> int:
    if args.lm_eval:
        return _lm_eval(args)
    from mixlab.eval.runs import compare_table, evaluate_run

    if args.prefix is not None and "cond_fixed" not in (args.mode or ()):
        raise ConfigError("--prefix is the text of --mode cond_fixed; add --mode cond_fixed")
    if args.mode:
        return _eval_modes(args)

    results = {}
    for run in args.runs:
        results[run] = evaluate_run(run, max_tokens_per_domain=args.max_tokens)
    if len(results) == 1:
        print(next(iter(results.values())).format_table())
    else:
        print(compare_table(results))
    if args.json:
        write_json(args.json, {k: v.to_dict() for k, v in results.items()})
    return 0


def _eval_modes(args: argparse.Namespace) -> int:
    from mixlab.eval.conditional import conditioning_effect
    from mixlab.eval.runs import compare_table, evaluate_run_modes
    from mixlab.model.meco import unescape_prefix

    prefix = unescape_prefix(args.prefix) if args.prefix is not None else None
    modes = list(dict.fromkeys(args.mode))
    everything = {}
    for run in args.runs:
        results = evaluate_run_modes(
            run, modes, prefix=prefix, max_tokens_per_domain=args.max_tokens
        )
        print(f"\n{run}: per-document validation perplexity by eval mode\n")
        print(compare_table(results))
        if "cond_fixed" in results:
            print(f"cond_fixed prefix: {prefix!r}")
        for mode, delta in conditioning_effect(results).items():
            print(f"{mode} - uncond: {delta:+.4f} nats/token (natural loss)")
        everything[run] = {mode: r.to_dict() for mode, r in results.items()}
    if args.json:
        write_json(args.json, everything)
    return 0


def _lm_eval(args: argparse.Namespace) -> int:
    from mixlab.eval.harness import (
        default_result_path,
        force_offline,
        parse_tasks,
        run_harness,
        write_result,
    )

    force_offline()  # before anything imports the HF hub
    tasks = parse_tasks(args.lm_eval)
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    payload = {}
    for run in args.runs:
        result = run_harness(
            run,
            tasks,
            include=args.lm_eval_include,
            limit=limit,
            batch_size=args.batch_size,
            max_length=args.max_length,
        )
        print(f"lm-eval: {run}\n{result.format_table()}")
        path = write_result(result, default_result_path(run))
        print(f"wrote {path}")
        payload[run] = json.loads(result.to_json())
    if args.json:
        write_json(args.json, payload)
    return 0
