"""The ``mixlab export-mix`` subcommand: a mixture -> files the training engines read as is.

:func:`add_parser` registers it on the ``mixlab`` command's subparsers; the library does the
work (:func:`mixlab.engines.export_mix`). User errors are :class:`~mixlab.errors.MixlabError`,
printed by ``mixlab``'s main as one line.
"""

from __future__ import annotations

import argparse
import re

from mixlab.errors import ConfigError

DESCRIPTION = """\
Export a mixture chosen with mixlab as files that training engines read unchanged.

SOURCE is a run folder (config.yaml + metrics.jsonl, from `mixlab train` / `compare`), a
doremi_weights.json (or the `mixlab doremi` --out folder), a search_weights.json
({"weights": {domain: w}, ...}) or a JSON mapping {domain: weight}. A run's weights are read
per logged window exactly as the sampler drew them (per-domain floor included).

Phases: an adaptive run (odm, acodm, doremi-online) is compressed into at most --phases N
piecewise-constant stages minimising the token-weighted squared error of the shares,
sum_t tokens_t * ||w_t - stage weights||^2, solved exactly by dynamic programming; each stage's
weights are the token-weighted mean of its windows. Stages are placed in the target run at the
same fraction of its tokens (--budget-tokens, --global-batch-size, --seq-len); without them
the source run's steps are kept. Steps are 0-based, end exclusive (nanotron: +1).

Printed: the weights of each phase, the trajectory's token shares vs those the exported
schedule achieves, each domain's tokens and epochs over --budget-tokens, and a warning for
every domain above --max-epochs.

Engines (one folder each under --out, with a README.txt; export_plan.json for programs):
  megatron     data_args.txt (--data-args-path: "weight prefix" lines) and
               per_split_data_args.json (--per-split-data-args-path: {"train": ["w", "prefix",
               ...], "valid": ..., "test": ...}); per-phase folders
  olmo-core    sources.yaml (SourceMixtureList) and source_mixture.yaml
               (SourceMixtureDatasetConfig: requested_tokens, global_batch_size);
               max_repetition_ratio from --max-epochs; per-phase folders
  nanotron     data_stages.yaml (data_stages with start_training_step, dataset_folder,
               dataset_weights)
  levanter     data_mixture.yaml (configs + train_weights, staged [[step, {name: w}], ...])
  hf-datasets  interleave.json (datasets, probabilities, seed) per phase + interleave.py
  mosaic       streams.yaml ({streams: {name: {local|remote, proportion}}, epoch_size}) per phase

--prefixes FILE (YAML/JSON) maps each domain to its data in the engine: a path, a list of
paths, or {paths: [...], tokens: [...], valid: [...], test: [...], tokens_per_sample: L}. A
domain's weight is split over its paths by their tokens (else equally). Token counts give the
domain sizes for the epochs. Weights are token shares; engines that sample fixed-length
sequences (Megatron, nanotron, Levanter, OLMo-core) take them as they are, HF datasets and
mosaic sample examples: p ∝ w / tokens_per_sample when given.
"""

EPILOG = """\
examples:
  mixlab export-mix runs/demo/runs/odm/seed0 --engine all --out export/odm --phases 3
  mixlab export-mix runs/doremi/doremi_weights.json --engine megatron --out export/doremi \\
      --prefixes prefixes.yaml
  mixlab export-mix search_weights.json --engine olmo-core --out export/search \\
      --prefixes sources.yaml --budget-tokens 2T --global-batch-size 1024 --seq-len 4096 \\
      --max-epochs 4
  mixlab export-mix runs/odm --engine levanter --out export/lev --phases 4 \\
      --budget-tokens 100B --global-batch-size 512 --seq-len 2048 --step-multiple 4
"""

_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def token_count(text: str) -> float:
    """``2e12``, ``2T``, ``500B``, ``1.5M``, ``100K`` -> a number of tokens."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMBGT]?)\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a token count; write e.g. 2e12, 2T, 500B, 1.5M"
        )
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``export-mix`` on the ``mixlab`` subparsers; returns the new parser."""
    from mixlab.engines.export import ENGINES

    p: argparse.ArgumentParser = sub.add_parser(
        "export-mix",
        help="export a mixture (run, DoReMi, search, weights) for Megatron, OLMo-core, "
        "nanotron, Levanter, HF datasets, mosaic streaming",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="run folder or weights JSON file")
    p.add_argument(
        "--engine",
        nargs="+",
        default=["all"],
        choices=[*ENGINES, "all"],
        metavar="ENGINE",
        help=f"one or more of {', '.join(ENGINES)}, or all (default)",
    )
    p.add_argument(
        "--out", "-o", required=True, help="folder to write into (one subfolder per engine)"
    )
    p.add_argument("--prefixes", metavar="FILE", help="YAML/JSON: domain -> path(s) in the engine")
    p.add_argument(
        "--phases", type=int, default=1, metavar="N", help="at most N stages (default 1: static)"
    )
    p.add_argument(
        "--budget-tokens",
        type=token_count,
        metavar="B",
        help="tokens of the target run (2e12, 2T, 500B): places the stages, gives epochs",
    )
    p.add_argument(
        "--global-batch-size",
        type=int,
        metavar="S",
        help="sequences per optimiser step of the target run",
    )
    p.add_argument(
        "--seq-len", type=int, metavar="L", help="target sequence length (default: the run's)"
    )
    p.add_argument(
        "--max-epochs",
        type=float,
        metavar="E",
        help="epoch cap per domain: warn above it; OLMo-core's max_repetition_ratio",
    )
    p.add_argument(
        "--step-multiple",
        type=int,
        default=1,
        metavar="M",
        help="round stage boundaries to multiples of M steps (Levanter block alignment)",
    )
    p.add_argument(
        "--levanter-block-size",
        type=int,
        default=2048,
        metavar="N",
        help="Levanter's mixture_block_size, for the alignment check (default 2048)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed written into the engine files")
    p.add_argument(
        "--normalise",
        action="store_true",
        help="rescale weights files that do not sum to 1 (otherwise an error)",
    )
    p.add_argument("--force", action="store_true", help="replace existing engine folders in --out")
    p.set_defaults(func=cmd_export_mix)
    return p


def cmd_export_mix(args: argparse.Namespace) -> int:
    from mixlab.engines.export import export_mix

    if args.phases < 1:
        raise ConfigError(f"--phases: expected an integer >= 1, got {args.phases}")
    result = export_mix(
        args.source,
        args.engine,
        args.out,
        prefixes=args.prefixes,
        phases=args.phases,
        budget_tokens=args.budget_tokens,
        global_batch_size=args.global_batch_size,
        seq_len=args.seq_len,
        max_epochs=args.max_epochs,
        step_multiple=args.step_multiple,
        seed=args.seed,
        normalise=args.normalise,
        levanter_block_size=args.levanter_block_size,
        force=args.force,
    )
    print(result.table())
    for note in result.notes:
        print(f"note: {note}")
    for warning in result.warnings:
        print(f"WARNING: {warning}")
    print()
    for engine, files in result.files.items():
        print(f"{engine}:")
        for f in files:
            print(f"  {f}")
    print(f"plan: {result.out / 'export_plan.json'}")
    return 0
