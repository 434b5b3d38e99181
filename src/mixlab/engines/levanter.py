"""Levanter: an ``LMMixtureDatasetConfig`` data YAML with ``configs`` and ``train_weights``.

What Levanter reads (``levanter/data/text.py``, ``LMMixtureDatasetConfig``, parsed by draccus):
``configs: {name: source}`` (a URL source: ``train_urls``, ``validation_urls``) and
``train_weights``: either ``{name: w}`` or a list of ``[step, {name: w}]`` stages, steps being
0-based optimiser steps; the weight keys must be a subset of ``configs``. ``MixtureDataset``
normalises each stage's weights (a weight of 0 drops the source), wants the first stage at 0,
stages sorted, and each stage's first *sequence* (``step x batch size``) a multiple of
``mixture_block_size`` (default 2048). Within a block of that many sequences every source gets
exactly ``round(w x block)`` sequences, so weights are shares of fixed-length sequences = token
shares.

mixlab writes ``configs`` with each domain's paths as ``train_urls`` (and its ``valid`` paths as
``validation_urls``), and ``train_weights`` as a dict for one phase or the staged list. With
``--global-batch-size`` it checks the block alignment and says which ``--step-multiple`` makes
every stage start aligned. Tokenizer, ``cache_dir`` and the rest of the data config are yours to
add.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from mixlab.engines.common import (
    SAMPLES_EQUAL_TOKENS,
    ExportContext,
    Written,
    comment,
    readme,
    write_text,
)

ENGINE = "levanter"
FILE = "data_mixture.yaml"


def train_weights(ctx: ExportContext) -> dict[str, float] | list[list[Any]]:
    if not ctx.multi:
        return ctx.plan.stages[0].named(ctx.domains)
    return [[stage.start_step, stage.named(ctx.domains)] for stage in ctx.plan.stages]


def configs(ctx: ExportContext) -> dict[str, dict[str, list[str]]]:
    out = {}
    for d in ctx.domains:
        data = ctx.data.domains[d]
        entry = {"train_urls": list(data.paths)}
        if data.valid:
            entry["validation_urls"] = list(data.valid)
        out[d] = entry
    return out


def alignment_warning(ctx: ExportContext) -> str | None:
    """Text when a stage would start off Levanter's block grid (needs the batch size)."""
    batch, block = ctx.global_batch_size, ctx.levanter_block_size
    if not ctx.multi or not batch:
        return None
    bad = [s.start_step for s in ctx.plan.stages[1:] if (s.start_step * batch) % block]
    if not bad:
        return None
    multiple = block // math.gcd(block, batch)
    return (
        f"levanter: stage start step(s) {', '.join(map(str, bad))} x batch {batch} are not "
        f"multiples of mixture_block_size {block}; Levanter will refuse them: re-export with "
        f"--step-multiple {multiple} (or set mixture_block_size to a divisor of the offsets)"
    )


def write(ctx: ExportContext) -> Written:
    result = Written()
    warning = alignment_warning(ctx)
    if warning:
        result.warnings.append(warning)
    if ctx.multi and not ctx.global_batch_size:
        result.notes.append(
            f"levanter: stage starts x batch size must be multiples of mixture_block_size "
            f"({ctx.levanter_block_size}); give --global-batch-size to have it checked"
        )
    if not ctx.plan.in_target_steps and ctx.multi:
        result.warnings.append(
            "levanter: stage steps are the source run's; give --budget-tokens, "
            "--global-batch-size and --seq-len to place them in the target run"
        )
    head = [*ctx.header(ENGINE), SAMPLES_EQUAL_TOKENS]
    data = {"configs": configs(ctx), "train_weights": train_weights(ctx)}
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    result.files.append(write_text(ctx.out / FILE, comment(head) + body))
    usage = [
        SAMPLES_EQUAL_TOKENS,
        "",
        f"Use {FILE} as the `data:` section of a Levanter config (add tokenizer and cache_dir);",
        "train_weights steps are 0-based optimiser steps.",
    ]
    result.files.append(readme(ctx, ENGINE, usage))
    return result
