"""OLMo-core: ``SourceMixtureList`` / ``SourceMixtureDatasetConfig`` YAML.

What OLMo-core reads (``olmo_core/data/source_mixture.py``, loaded with ``Config.from_yaml``):

* ``SourceMixtureConfig``: ``source_name``, ``target_ratio`` (in (0, 1]), ``paths`` (``.npy``
  token files or globs), ``max_repetition_ratio`` (>= 1, default 1) and
  ``max_source_fraction`` (default 1);
* ``SourceMixtureList``: ``{sources: [...]}``, whose ``validate`` wants the ratios to sum to 1
  (``np.allclose``) — this is ``sources.yaml``, the file OLMo's own recipes load with
  ``SourceMixtureList.from_yaml``;
* ``SourceMixtureDatasetConfig``: ``{source_list: {sources: [...]}, requested_tokens,
  global_batch_size (tokens), seed, ...}`` — ``source_mixture.yaml``, written when the target
  budget and batch are known.

When building, OLMo-core takes ``int(requested_tokens * target_ratio)`` tokens of each source and
refuses a source whose ``tokens x max_source_fraction x max_repetition_ratio`` is smaller, so
``max_repetition_ratio`` is the epoch cap: mixlab writes ``--max-epochs`` when given (a domain
over it is warned about here and refused there), else the epochs the phase needs (rounded up to
0.01, at least 1) when the domain sizes are known, else leaves OLMo-core's default 1.
``target_ratio`` is a share of tokens and OLMo-core selects whole ``sequence_length``
instances, so no conversion is needed. A domain is one source with all its paths (OLMo-core
spreads a source's tokens over its paths itself). Multi-phase plans get ``phase_<k>/`` folders,
one dataset config per phase (``requested_tokens`` = the phase's tokens); OLMo-core then caps
each phase's repetition on its own, while mixlab's epoch warning counts the whole run.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from mixlab.engines.common import ExportContext, Written, comment, readme, write_text
from mixlab.engines.phases import Stage

ENGINE = "olmo-core"
SOURCES = "sources.yaml"
DATASET = "source_mixture.yaml"


def repetition_ratio(ctx: ExportContext, stage: Stage, k: int) -> float | None:
    """``max_repetition_ratio`` of domain ``k`` in ``stage`` (see the module docstring)."""
    if ctx.plan.max_epochs is not None:
        return max(1.0, float(ctx.plan.max_epochs))
    sizes = ctx.plan.domain_tokens
    if sizes is None or ctx.plan.target.budget_tokens is None or sizes[k] <= 0:
        return None
    needed = stage.tokens * float(stage.weights[k]) / float(sizes[k])
    return max(1.0, math.ceil(needed * 100 - 1e-9) / 100)


def sources(ctx: ExportContext, stage: Stage) -> list[dict[str, Any]]:
    out = []
    for k, (d, w) in enumerate(zip(ctx.domains, stage.weights, strict=True)):
        if w <= 0:
            continue
        src: dict[str, Any] = {
            "source_name": d,
            "target_ratio": float(w),
            "paths": list(ctx.data.domains[d].paths),
        }
        ratio = repetition_ratio(ctx, stage, k)
        if ratio is not None:
            src["max_repetition_ratio"] = ratio
        out.append(src)
    return out


def write(ctx: ExportContext) -> Written:
    result = Written()
    tokens_per_step = (
        ctx.global_batch_size * ctx.seq_len if ctx.global_batch_size and ctx.seq_len else None
    )
    for stage in ctx.plan.stages:
        folder = ctx.phase_dir(stage)
        srcs = sources(ctx, stage)
        head = [*ctx.header(ENGINE), f"phase {stage.index}: {ctx.steps_text(stage)}"]
        body = yaml.safe_dump({"sources": srcs}, sort_keys=False)
        result.files.append(write_text(folder / SOURCES, comment(head) + body))
        if ctx.plan.target.budget_tokens is not None and tokens_per_step:
            dataset = {
                "source_list": {"sources": srcs},
                "requested_tokens": int(stage.tokens),
                "global_batch_size": int(tokens_per_step),
                "seed": ctx.seed,
            }
            body = yaml.safe_dump(dataset, sort_keys=False)
            result.files.append(write_text(folder / DATASET, comment(head) + body))
    if ctx.plan.target.budget_tokens is None or not tokens_per_step:
        result.notes.append(
            f"olmo-core: only {SOURCES} (SourceMixtureList); give --budget-tokens, "
            f"--global-batch-size and --seq-len for the full {DATASET}"
        )
    if ctx.plan.max_epochs is None and ctx.plan.domain_tokens is None:
        result.notes.append(
            "olmo-core: max_repetition_ratio left at OLMo-core's default 1 (no domain sizes: "
            "give tokens in --prefixes, or --max-epochs)"
        )
    phase = "phase_<k>/" if ctx.multi else ""
    usage = [
        "target_ratio is a share of tokens; OLMo-core selects whole sequence_length instances "
        "per source, so shares of instances equal shares of tokens.",
        "",
        "In a training script:",
        "  from olmo_core.data.source_mixture import SourceMixtureList, SourceMixtureDatasetConfig",
        f"  source_list = SourceMixtureList.from_yaml('{phase}{SOURCES}'); source_list.validate()",
        "  src_mix = SourceMixtureDatasetConfig(source_list=source_list, requested_tokens=..., "
        "global_batch_size=...)",
        f"or the whole config: SourceMixtureDatasetConfig.from_yaml('{phase}{DATASET}'),",
        "then NumpyFSLDatasetConfig.from_src_mix(src_mix=..., tokenizer=..., sequence_length=...).",
    ]
    if ctx.multi:
        usage += [
            "",
            "One dataset config per phase: train the phases in order, each for its steps.",
        ]
    result.files.append(readme(ctx, ENGINE, usage))
    return result
