"""The ``mixlab`` command: prepare | train | eval | export | doremi | compare | report | demo.

Each subcommand is a thin wrapper: it parses arguments, configures logging once, calls the
library and prints a result. Errors a user can fix (:class:`~mixlab.errors.MixlabError`) are
printed as one line without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from mixlab import __version__
from mixlab.errors import ConfigError, MixlabError
from mixlab.files import write_json
from mixlab.search.cli import add_parser as add_search_parser

log = logging.getLogger("mixlab")

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
    _terminate_as_interrupt()
    try:
        return int(args.func(args) or 0)
    except MixlabError as exc:
        print(f"mixlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mixlab {args.command}: interrupted", file=sys.stderr)
        return 130


def _terminate_as_interrupt() -> None:
    """``kill`` (SIGTERM) stops a command like Ctrl-C: a training saves its checkpoint first.

    Not under torchrun with several ranks: there SIGTERM is how the launcher stops the others
    when one rank failed, and a checkpoint would wait on the dead rank.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _add_set_option(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--set a.b=c ...``: config overrides (train, doremi, compare)."""
    p.add_argument("--set", nargs="+", default=[], metavar="A.B=C", help=help_text)


def _add_report(sub: argparse._SubParsersAction) -> None:
    from mixlab.report.cli import add_parser

    add_parser(sub)


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
    _add_prepare(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_export(sub)
    _add_doremi(sub)
    _add_compare(sub)
    _add_report(sub)
    from mixlab.engines.cli import add_parser as add_export_mix

    add_export_mix(sub)
    _add_demo(sub)
    add_search_parser(sub)
    return parser


# ---------------------------------------------------------------------------- prepare
def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="ingest a corpus, train/load a tokenizer, write per-domain token shards",
        description=(
            "Read documents (JSONL incl. .gz/.zst, Parquet, text files/folders, HF datasets "
            "saved with save_to_disk), assign each a domain, tokenize with both cores and write "
            "a shard store: per-domain uint16/uint32 token memmaps, document index, metadata, "
            "manifest with checksums, and a deterministic train/validation split. Malformed "
            "lines are reported with file and line and skipped (or fatal with --on-error fail); "
            "a per-domain summary is printed and saved as ingest_summary.json."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--input", "-i", nargs="+", required=True, help="files or folders to read")
    p.add_argument("--out", "-o", required=True, help="folder of the shard store to write")
    p.add_argument(
        "--domain-field", help="dotted field holding the domain, e.g. meta.pile_set_name"
    )
    p.add_argument(
        "--domain-from",
        choices=("field", "file", "folder"),
        help="where the domain comes from (default: field if --domain-field is given, else file)",
    )
    p.add_argument(
        "--domain-map",
        help="JSON file or inline JSON mapping raw domain labels to domain names",
    )
    p.add_argument("--text-field", default="text", help="dotted field holding the text")
    p.add_argument("--metadata-field", help="dotted field kept per document, e.g. url or source")
    p.add_argument(
        "--on-error",
        choices=("skip", "fail"),
        default="skip",
        help="malformed lines: skip and count, or stop",
    )
    p.add_argument(
        "--tokenizer", help="tokenizer.json or local HF tokenizer folder (default: train one)"
    )
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of a trained tokenizer")
    p.add_argument(
        "--tokenizer-sample-mb",
        type=float,
        default=20.0,
        help="MB of text sampled across domains to train the tokenizer",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.05,
        help="share of documents (by content hash) held out for validation",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_prepare)


def _domain_map(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    path = Path(text)
    try:
        raw = json.loads(path.read_text(encoding="utf-8") if path.is_file() else text)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"--domain-map: not a JSON file or JSON mapping: {text!r} ({exc})"
        ) from exc
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError("--domain-map: expected a JSON object mapping label -> domain name")
    return raw


def cmd_prepare(args: argparse.Namespace) -> int:
    from mixlab.data.prepare import prepare_from_inputs

    domain_from = args.domain_from or ("field" if args.domain_field else "file")
    options = dict(
        domain_from=domain_from,
        domain_field=args.domain_field,
        domain_map=_domain_map(args.domain_map),
        text_field=args.text_field,
        metadata_field=args.metadata_field,
        on_error=args.on_error,
    )
    store, stats = prepare_from_inputs(
        args.input,
        args.out,
        reader_options=options,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        tokenizer_sample_bytes=int(args.tokenizer_sample_mb * 1e6),
        val_fraction=args.val_fraction,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(stats.format_table())
    print(
        f"\nwrote {store.path}: {len(store.domains)} domains, vocab {store.vocab_size}, "
        f"{int(store.train_tokens_per_domain().sum()):,} train tokens"
    )
    return 0


# ---------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a causal LM on a shard store with a mixing policy",
        description=(
            "Train a Hugging Face causal LM on a prepared shard store. The mixing policy "
            "(mixing.name) sets the domain weights and may update them from per-domain "
            "training losses. The run folder gets config.yaml (resolved config), metrics.jsonl, "
            "checkpoint.pt (atomic; --resume continues it exactly) and eval.json. "
            "Show every config field with --help-config."
        ),
    )
    p.add_argument("--config", "-c", help="YAML recipe, e.g. configs/tiny_cpu.yaml")
    _add_set_option(p, "override config fields, e.g. --set mixing.name=uniform train.max_steps=200")
    p.add_argument("--out", "-o", help="run folder (required unless --help-config)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    p.add_argument("--help-config", action="store_true", help="list every config field and exit")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from mixlab.config import RunConfig, describe_fields

    if args.help_config:
        from mixlab.mixing.base import available_policies
        from mixlab.model.factory import describe_presets

        print(describe_fields())
        print("\nmixing policies: " + ", ".join(available_policies()))
        print("\nmodel presets:\n" + describe_presets())
        return 0
    if not args.out:
        raise ConfigError("--out: name the run folder, e.g. --out runs/natural")
    from mixlab.train.loop import train

    if args.resume and not args.config and not args.set:
        from mixlab.train.checkpoint import load_checkpoint

        cfg = RunConfig.from_dict(load_checkpoint(args.out)["config"])
    else:
        cfg = RunConfig.load(args.config, args.set)
    trainer = train(cfg, args.out, resume=args.resume)
    if trainer.last_eval is not None:
        print(trainer.last_eval.format_table())
    print(f"\nrun folder: {args.out}")
    return 0


# ---------------------------------------------------------------------------- eval
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="per-domain validation loss / perplexity of runs, or lm-eval tasks (--lm-eval)",
        description=(
            "Evaluate saved runs (run folders or checkpoint files) on their store's validation "
            "split: per-domain loss and perplexity (token-weighted within a domain), the "
            "unweighted mean PPL, geometric mean, worst domain and the natural (token-weighted) "
            "loss. Several runs are compared side by side. Results are written as eval.json in "
            "each run folder (or --json FILE for all). With --lm-eval TASKS the runs (or "
            "exported HF model folders) are scored with lm-evaluation-harness instead "
            "(pip install 'mixlab[lm-eval]'), offline: mixlab bundles the local tasks "
            "mixlab_domain_cloze and mixlab_domain_text (tag: mixlab); add your own task YAML "
            "folders with --lm-eval-include. Results are printed as a table and written as "
            "lm_eval.json in each run folder (or --json FILE)."
        ),
    )
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


# ---------------------------------------------------------------------------- export
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run as a Hugging Face model folder (from_pretrained loads it)",
        description=(
            "Export a trained run (run folder or checkpoint file) as a standard Hugging Face "
            "model folder: config.json, model.safetensors, the store's tokenizer as "
            "tokenizer.json + tokenizer_config.json (a PreTrainedTokenizerFast with eos/pad/bos "
            "set), and mixlab_export.json (run, step, store fingerprint, final mixture). "
            "AutoModelForCausalLM.from_pretrained(DIR) and AutoTokenizer.from_pretrained(DIR) "
            "load it; the logits equal the run's."
        ),
    )
    p.add_argument("run", help="run folder or checkpoint.pt file")
    p.add_argument("--out", "-o", required=True, help="folder to write (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from mixlab.model.export import export_run

    out = export_run(args.run, args.out, overwrite=args.overwrite)
    print(f"exported {args.run} to {out}")
    print(
        "load it with: AutoModelForCausalLM.from_pretrained("
        f"{str(out)!r}), AutoTokenizer.from_pretrained({str(out)!r})"
    )
    return 0


# ---------------------------------------------------------------------------- doremi
DOREMI_DESCRIPTION = """\
DoReMi (arXiv 2305.10429) from one command:
  1. train a small reference model on the reference mixture (natural by default);
  2. train a proxy of the same recipe on uniform sampling with Group DRO on its excess
     loss over the reference (per token: max(proxy loss - reference loss, 0));
  3. write the proxy's time-averaged domain weights to <out>/doremi_weights.json.
With mixing.doremi.rounds > 1 the next round's reference is trained on those weights,
until they change by less than mixing.doremi.tol (L1). Model, data and step budget come
from the config (train.* applies to every run). Runs go to <out>/round_<k>/reference and
<out>/round_<k>/proxy; rerunning the same command skips finished runs and resumes an
interrupted one. Prints the weights and the command that trains the target with them.
"""

DOREMI_EPILOG = """\
example:
  mixlab doremi --config configs/doremi.yaml --set data.store=shards --out runs/doremi
  mixlab train --config configs/doremi.yaml --set data.store=shards mixing.name=fixed \\
      mixing.weights_file=runs/doremi/doremi_weights.json --out runs/doremi-target

knobs (mixing.doremi.*, all listed by `mixlab train --help-config`):
  eta, smoothing              Group-DRO step size (1.0) and uniform mix-in c (1e-3)
  reference_mixture           natural | uniform: what the reference is trained on
  reference                   reuse a trained reference run instead of training one
  rounds, tol                 iterated DoReMi: round k+1's reference uses round k's weights
  reference_steps, proxy_steps  run lengths (0 = train.max_steps)
  loss_normalizer, alpha_timing, proxy_sampling, lambda_init   paper vs release variants
"""


def _add_doremi(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doremi",
        help="find static domain weights with DoReMi (reference -> proxy -> weights)",
        description=DOREMI_DESCRIPTION,
        epilog=DOREMI_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", help="YAML recipe, e.g. configs/doremi.yaml")
    _add_set_option(
        p, "override config fields, e.g. --set data.store=shards mixing.doremi.rounds=3"
    )
    p.add_argument("--out", "-o", required=True, help="folder for the runs and the weights")
    p.set_defaults(func=cmd_doremi)


def cmd_doremi(args: argparse.Namespace) -> int:
    import shlex

    from mixlab.config import RunConfig
    from mixlab.train.doremi import doremi_options, run_doremi

    # The pipeline trains mixing.name=doremi proxies whatever the recipe's name says.
    cfg = RunConfig.load(args.config, [*args.set, "mixing.name=doremi"])
    result = run_doremi(cfg, args.out)
    print("\nDoReMi domain weights (token shares; DoReMi = time-averaged proxy alpha):\n")
    print(result.format_table())
    last = result.rounds[-1]
    if result.converged:
        status = f"converged: L1 change {last.change:.4f} < mixing.doremi.tol"
    else:
        status = f"mixing.doremi.rounds={doremi_options(cfg).rounds} done"
    print(f"\n{len(result.rounds)} round(s), {status}; weights: {result.weights_path}")
    target = ["mixlab", "train"] + (["--config", args.config] if args.config else [])
    target += ["--set", *args.set, "mixing.name=fixed", "mixing.doremi=null"]
    target += [f"mixing.weights_file={result.weights_path}", "--out", "runs/doremi-target"]
    print("train the target with them:\n  " + shlex.join(target))
    return 0


# ---------------------------------------------------------------------------- compare
COMPARE_DESCRIPTION = """\
Run a suite of mixing methods on one budget, for one or more seeds, and summarise them.

A suite is a YAML file of named runs sharing one base config (store, model, budget); runs
may have stages that run first (DoReMi's reference + proxy, AC-ODM's proxy). uniform and
natural are always included (unless the suite says include_baselines: false). Each run is
its own process; finished runs are skipped and interrupted ones continue from their
checkpoint, so re-running the same command resumes an interrupted suite.

Writes OUT/suite.json (status, wall-clock, tokens and peak RSS of every run and stage),
OUT/<method>/seed<k>/ (normal run folders), and OUT/report/ (report.html, report.md,
results.json) with: final mean / token-weighted / worst-domain perplexity, steps-to-target
against the baseline's best value, paired differences over seeds (95% CI, wins k/n), and
overhead against natural.
"""

COMPARE_EPILOG = """\
example:
  mixlab compare configs/suites/example.yaml --set data.store=shards --out runs/suite
  mixlab compare configs/suites/example.yaml --set data.store=shards --out runs/suite \\
      --seeds 0 1 2 --jobs 2          # 3 seeds, two single-thread runs side by side
  mixlab compare configs/suites/example.yaml --out runs/suite --dry-run   # show the plan
"""


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="run a suite of mixing methods (same budget, seeds) and summarise it",
        description=COMPARE_DESCRIPTION,
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("suite", help="suite YAML file, e.g. configs/suites/example.yaml")
    p.add_argument("--out", "-o", required=True, help="suite folder (runs, suite.json, report)")
    _add_suite_options(p)
    _add_set_option(
        p, "override fields of every run, e.g. --set data.store=shards train.max_steps=600"
    )
    p.add_argument("--baseline", help="method the others are measured against (suite default)")
    p.add_argument("--no-report", action="store_true", help="only run and print the table")
    p.add_argument(
        "--dry-run", action="store_true", help="print the runs, folders and budgets; run nothing"
    )
    p.set_defaults(func=cmd_compare)


def _add_suite_options(p: argparse.ArgumentParser, *, jobs: int = 1) -> None:
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


def cmd_compare(args: argparse.Namespace) -> int:
    from mixlab.comparison import compare, load_suite

    suite = load_suite(args.suite).select(args.methods, args.exclude)
    if args.seeds:
        suite.seeds = list(args.seeds)
    if args.dry_run:
        for job in suite.plan(args.out, overrides=args.set):
            for step in job.steps:
                kind = "" if step.name == "main" else f" [stage {step.name}: {step.kind}]"
                c = step.config
                print(
                    f"{job.method} seed {job.seed}{kind}: {c.model.preset or 'custom model'}, "
                    f"mixing {c.mixing.name}, {c.train.max_steps} steps x "
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
        baseline=args.baseline,
        report=not args.no_report,
    )
    print("\n" + summary.table())
    out = Path(args.out)
    print(f"\nmanifest: {out / 'suite.json'}")
    if not args.no_report:
        print(f"report: {out / 'report' / 'report.html'} (and report.md, results.json)")
    return 0


# ---------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="compare every mixing method on the built-in demo corpus (no data needed)",
        description=(
            "Unpack the 8-domain corpus shipped with mixlab (Python stdlib source, C headers, "
            "docstrings, license texts, ...; the same on every machine, its fingerprint is "
            "printed), prepare shards, and run the "
            "demo suite: uniform, natural, odm, doremi (reference + proxy -> target), acodm "
            "(actor-critic learned on a tiny proxy, frozen on the target) and meco, with the "
            "same tiny model, seed and token budget (~10 min on 2 CPU cores). Prints the "
            "summary table and writes OUT/report/report.html. Interrupted demos resume."
        ),
    )
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
    _add_suite_options(p, jobs=2)
    p.set_defaults(func=cmd_demo)


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
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
