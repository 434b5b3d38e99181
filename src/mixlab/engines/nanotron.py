"""nanotron: a ``data_stages`` list to paste into a nanotron config YAML.

What nanotron reads (``nanotron/config/config.py``, parsed with dacite, ``strict=True``):
``Config.data_stages: list[DatasetStageArgs]``, each ``{name, start_training_step, data:
DataArgs}`` with ``DataArgs = {dataset, seed, num_loading_workers}`` and, for pre-tokenised data,
``dataset = NanosetDatasetsArgs {dataset_folder: [...], dataset_weights: [...]}`` (one weight
per folder; nanotron normalises them and draws ``int(steps x global_batch x w_i)`` samples of
each folder). ``Config.__post_init__`` sorts the stages by ``start_training_step`` and wants one
stage starting at step **1** (nanotron counts steps from 1), unique names and unique start steps.

mixlab's stage covering 0-based steps ``[s, e)`` becomes ``start_training_step: s + 1``.
Samples are fixed-length sequences, so sample shares equal mixlab's token shares. A domain
mapped to several folders has its weight split over them (by tokens when given, else
equally); a domain at weight 0 is left out of the stage.
"""

from __future__ import annotations

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

ENGINE = "nanotron"
FILE = "data_stages.yaml"


def stages(ctx: ExportContext) -> list[dict[str, Any]]:
    out = []
    for stage in ctx.plan.stages:
        pairs = ctx.weighted_paths(stage)
        out.append(
            {
                "name": f"mixlab phase {stage.index}",
                "start_training_step": stage.start_step + 1,
                "data": {
                    "dataset": {
                        "dataset_folder": [p for _, p, _ in pairs],
                        "dataset_weights": [float(w) for _, _, w in pairs],
                    },
                    "seed": ctx.seed,
                    "num_loading_workers": 1,
                },
            }
        )
    return out


def write(ctx: ExportContext) -> Written:
    result = Written()
    head = [
        *ctx.header(ENGINE),
        SAMPLES_EQUAL_TOKENS,
        "Paste data_stages into your nanotron config.",
    ]
    if not ctx.plan.in_target_steps and ctx.multi:
        result.warnings.append(
            "nanotron: stage steps are the source run's; give --budget-tokens, "
            "--global-batch-size and --seq-len to place them in the target run"
        )
    body = yaml.safe_dump({"data_stages": stages(ctx)}, sort_keys=False)
    result.files.append(write_text(ctx.out / FILE, comment(head) + body))
    usage = [
        SAMPLES_EQUAL_TOKENS,
        "",
        f"Copy the data_stages list of {FILE} into your nanotron config YAML (start_training_step "
        "counts from 1; each stage uses nanotron's Nanoset/tokenized-bytes dataset args).",
    ]
    result.files.append(readme(ctx, ENGINE, usage))
    return result
