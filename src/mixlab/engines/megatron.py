"""Megatron-Core / NeMo: the ``--data-args-path`` and ``--per-split-data-args-path`` files.

What Megatron reads (``megatron/training/utils``: ``get_blend_and_blend_per_split``, and
``megatron/core/datasets/utils.get_blend_from_list``):

* ``--data-args-path FILE``: the file's text is split on *whitespace* (``f.read().split()``) and
  read like ``--data-path``: an even-length list ``w1 prefix1 w2 prefix2 ...`` of weights and
  dataset prefixes (``prefix.bin`` / ``prefix.idx``). There is no comment syntax: every token
  is data, so this file holds pairs only, one ``weight prefix`` per line.
* ``--per-split-data-args-path FILE``: JSON ``{"train": [...], "valid": [...], "test": [...]}``,
  each value a flat list ``["w1", "prefix1", "w2", "prefix2", ...]`` (or one string of the same
  tokens, or ``null`` for no blend of that split). All three keys must be present. It is *not*
  a list of ``[w, prefix]`` pairs: ``get_blend_from_list`` takes a flat list of strings.

``BlendedMegatronDatasetConfig`` keeps the weights; the builder normalises them to sum 1
(``normalize``) and builds, for ``S`` training samples, ``ceil(w_i * S)`` samples of each
dataset, interleaved by ``build_blending_indices`` (each next sample goes to the dataset
furthest below ``w_i * n``). Weights are therefore shares of *samples*; GPTDataset samples are
fixed-length (``seq_length`` tokens), so they equal mixlab's token shares.

A domain mapped to several prefixes has its weight split over them (by their token counts when
given in ``--prefixes``, else equally). Valid/test blends use the ``valid``/``test`` prefixes of
``--prefixes`` with the same weights, or ``null`` when some weighted domain has none.
Multi-phase plans get ``phase_<k>/`` folders: train phase ``k`` for its steps with its files
(on resume Megatron continues at ``consumed_train_samples`` in the new blend).
"""

from __future__ import annotations

import json

from mixlab.engines.common import SAMPLES_EQUAL_TOKENS, ExportContext, Written, readme, write_text
from mixlab.engines.phases import Stage
from mixlab.errors import ConfigError

ENGINE = "megatron"
DATA_ARGS = "data_args.txt"
PER_SPLIT = "per_split_data_args.json"


def blend_list(pairs: list[tuple[str, float]]) -> list[str]:
    """``["w1", "prefix1", ...]``: the flat list ``get_blend_from_list`` reads."""
    out = []
    for prefix, w in pairs:
        out += [repr(float(w)), prefix]
    return out


def check_prefix(prefix: str, where: str) -> str | None:
    """Error for a prefix Megatron would misread; a warning text for a suspicious one."""
    if any(c.isspace() for c in prefix):
        raise ConfigError(
            f"{where}: Megatron prefix {prefix!r} contains whitespace; Megatron splits the data "
            "args file on whitespace, so rename or symlink the dataset"
        )
    try:
        float(prefix)
    except ValueError:
        pass
    else:
        raise ConfigError(
            f"{where}: Megatron prefix {prefix!r} reads as a number, which Megatron would take "
            "for a weight; use a path such as ./{prefix}"
        )
    if prefix.endswith((".bin", ".idx")):
        return (
            f"{where}: prefix {prefix!r} ends in .bin/.idx; Megatron wants the prefix without "
            "the extension (it opens prefix.bin and prefix.idx)"
        )
    return None


def _split_pairs(ctx: ExportContext, stage: Stage, split: str) -> list[tuple[str, float]] | None:
    pairs = []
    for d, w in zip(ctx.domains, stage.weights, strict=True):
        if w <= 0:
            continue
        prefixes = getattr(ctx.data.domains[d], split)
        if not prefixes:
            return None
        pairs += [(p, float(w) / len(prefixes)) for p in prefixes]
    return pairs


def write(ctx: ExportContext) -> Written:
    result = Written()
    where = ctx.data.source or "--prefixes"
    for stage in ctx.plan.stages:
        train = [(p, w) for _, p, w in ctx.weighted_paths(stage)]
        for prefix, _ in train:
            warning = check_prefix(prefix, where)
            if warning and warning not in result.warnings:
                result.warnings.append(warning)
        folder = ctx.phase_dir(stage)
        lines = "".join(f"{float(w)!r} {p}\n" for p, w in train)
        result.files.append(write_text(folder / DATA_ARGS, lines))
        per_split = {
            "train": blend_list(train),
            "valid": _maybe_list(_split_pairs(ctx, stage, "valid")),
            "test": _maybe_list(_split_pairs(ctx, stage, "test")),
        }
        text = json.dumps(per_split, indent=2) + "\n"
        result.files.append(write_text(folder / PER_SPLIT, text))
    if any(
        v is None for v in (_split_pairs(ctx, ctx.plan.stages[0], s) for s in ("valid", "test"))
    ):
        result.notes.append(
            "megatron: valid/test are null in per_split_data_args.json (give 'valid:'/'test:' "
            "prefixes per domain in --prefixes to blend them too)"
        )
    phase = "phase_<k>/" if ctx.multi else ""
    usage = [
        SAMPLES_EQUAL_TOKENS,
        "",
        "Use one of (the files hold data only: Megatron reads every token of them):",
        f"  --data-args-path {phase}{DATA_ARGS} --split 99,1,0",
        f"  --per-split-data-args-path {phase}{PER_SPLIT}",
    ]
    if ctx.multi:
        usage += [
            "",
            "Megatron has no stages: stop the run at each phase's end step and resume from that "
            "checkpoint with the next phase's files (keep --train-iters and the learning-rate "
            "schedule of the whole run).",
        ]
    result.files.append(readme(ctx, ENGINE, usage))
    return result


def _maybe_list(pairs: list[tuple[str, float]] | None) -> list[str] | None:
    return blend_list(pairs) if pairs else None
