"""Hugging Face ``datasets.interleave_datasets(probabilities=...)``: a JSON spec and a snippet.

``interleave_datasets(datasets, probabilities, seed, stopping_strategy)`` draws each next
*example* from source ``i`` with probability ``p_i`` (a seeded numpy generator), so
probabilities are shares of examples. When examples are documents of ``L_d`` tokens on average
(``tokens_per_sample`` in ``--prefixes``) mixlab writes ``p_d ∝ w_d / L_d`` so that the token
shares are ``w``; otherwise examples are taken as fixed-length sequences and ``p = w``.

Finite sources end an interleaved dataset early: ``first_exhausted`` (the default) stops at the
first exhausted source, ``all_exhausted`` when the last one has been seen once — either can be
short of the budget. The snippet therefore repeats every source endlessly
(``IterableDataset.repeat(None)``) and ends each phase with ``.take(num_examples)``, the phase's
share of the budget, so the probabilities hold over the whole run and each domain repeats as
many epochs as mixlab printed. (On a ``datasets`` without ``repeat`` it falls back to
``all_exhausted``.)

Files: ``interleave.json`` (one per phase, ``phase_<k>/`` for several) with ``datasets`` (names
in order: each domain's paths), ``domains``, ``probabilities``, ``token_shares``, ``seed``,
``stopping_strategy`` and ``num_examples`` (when the budget is known); and ``interleave.py``, a
self-contained snippet whose ``mixture(load)`` builds the (phased) stream from a function that
loads a dataset by name.
"""

from __future__ import annotations

import json
from typing import Any

from mixlab.engines.common import ExportContext, Written, readme, write_text
from mixlab.engines.phases import Stage

ENGINE = "hf-datasets"
SPEC = "interleave.json"
SNIPPET = "interleave.py"

SNIPPET_TEXT = '''\
"""Build the mixture exported by `mixlab export-mix` with datasets.interleave_datasets.

    from interleave import mixture
    train = mixture(lambda name: load_from_disk(name))   # or load_dataset(name, split="train")

Each phase repeats its datasets endlessly, interleaves them with its probabilities and seed,
takes its num_examples (when known) and the phases are concatenated in order.
"""

import json
from pathlib import Path

from datasets import Dataset, concatenate_datasets, interleave_datasets

HERE = Path(__file__).resolve().parent
PHASES = {phases!r}


def endless(ds):
    if isinstance(ds, Dataset):
        ds = ds.to_iterable_dataset()
    return ds.repeat(None) if hasattr(ds, "repeat") else ds


def phase(spec, load):
    ds = interleave_datasets(
        [endless(load(name)) for name in spec["datasets"]],
        probabilities=spec["probabilities"],
        seed=spec["seed"],
        stopping_strategy=spec["stopping_strategy"],
    )
    n = spec.get("num_examples")
    return ds.take(n) if n is not None else ds


def mixture(load):
    parts = [phase(json.loads((HERE / p).read_text()), load) for p in PHASES]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)
'''


def spec(ctx: ExportContext, stage: Stage) -> dict[str, Any]:
    pairs = ctx.weighted_paths(stage)
    return {
        "datasets": [p for _, p, _ in pairs],
        "domains": [d for d, _, _ in pairs],
        "probabilities": ctx.sample_shares(pairs),
        "token_shares": [w for _, _, w in pairs],
        "seed": ctx.seed + stage.index - 1,
        "stopping_strategy": "all_exhausted",
        "num_examples": ctx.stage_samples(stage),
        "steps": [stage.start_step, stage.end_step],
    }


def write(ctx: ExportContext) -> Written:
    result = Written()
    names = []
    for stage in ctx.plan.stages:
        path = ctx.phase_dir(stage) / SPEC
        result.files.append(write_text(path, json.dumps(spec(ctx, stage), indent=2) + "\n"))
        names.append(str(path.relative_to(ctx.out)))
    result.files.append(write_text(ctx.out / SNIPPET, SNIPPET_TEXT.format(phases=names)))
    if ctx.multi and ctx.stage_samples(ctx.plan.stages[0]) is None:
        result.warnings.append(
            "hf-datasets: phases have no num_examples (give --budget-tokens and --seq-len or "
            "tokens_per_sample), so only the first phase would ever be read"
        )
    usage = [
        "probabilities are shares of examples: p = w when examples are fixed-length sequences, "
        "p ∝ w / tokens_per_sample when --prefixes gives mean example lengths.",
        "",
        f"  import sys; sys.path.insert(0, '{ctx.out}')",
        "  from interleave import mixture",
        "  train = mixture(lambda name: datasets.load_from_disk(name))",
    ]
    result.files.append(readme(ctx, ENGINE, usage))
    return result
