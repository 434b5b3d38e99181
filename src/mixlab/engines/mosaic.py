"""mosaic streaming: ``Stream(remote/local, proportion=...)`` as a YAML of streams.

What streaming reads (``streaming/base/stream.py``): each ``Stream`` takes ``remote`` and/or
``local`` and at most one of ``proportion`` / ``repeat`` / ``choose``; with proportions (all
streams must have one) ``Stream.apply_weights`` normalises them and draws
``epoch_size x proportion`` *samples* per stream per epoch (``epoch_size`` defaults to the total
samples of all streams). llm-foundry builds ``Stream(**cfg)`` for each entry of
``dataset.streams``, so the file is ``{streams: {name: {remote|local, proportion}}, epoch_size}``.

Samples are shards' rows: fixed-length token sequences (llm-foundry's ``concat_tokens``) make
proportions equal token shares; documents of ``L_d`` tokens on average (``tokens_per_sample``
in ``--prefixes``) get ``proportion ∝ w_d / L_d``. A path with a URL scheme (``s3://``,
``gs://``, ``oci://``, ``hf://``, ``https://`` ...) is a ``remote``, anything else ``local``.
``epoch_size`` is the phase's samples when the budget is known. One file per phase.
"""

from __future__ import annotations

from typing import Any

import yaml

from mixlab.engines.common import ExportContext, Written, comment, readme, write_text
from mixlab.engines.phases import Stage

ENGINE = "mosaic"
FILE = "streams.yaml"


def stream_names(pairs: list[tuple[str, str, float]]) -> list[str]:
    """The domain's name, or ``<domain>_<i>`` when a domain has several paths."""
    counts: dict[str, int] = {}
    for d, _, _ in pairs:
        counts[d] = counts.get(d, 0) + 1
    seen: dict[str, int] = {}
    names = []
    for d, _, _ in pairs:
        if counts[d] == 1:
            names.append(d)
        else:
            names.append(f"{d}_{seen.get(d, 0)}")
            seen[d] = seen.get(d, 0) + 1
    return names


def streams(ctx: ExportContext, stage: Stage) -> dict[str, dict[str, Any]]:
    pairs = ctx.weighted_paths(stage)
    shares = ctx.sample_shares(pairs)
    out = {}
    for name, (_, path, _), share in zip(stream_names(pairs), pairs, shares, strict=True):
        where = "remote" if "://" in path else "local"
        out[name] = {where: path, "proportion": share}
    return out


def write(ctx: ExportContext) -> Written:
    result = Written()
    for stage in ctx.plan.stages:
        data: dict[str, Any] = {"streams": streams(ctx, stage)}
        samples = ctx.stage_samples(stage)
        if samples is not None:
            data["epoch_size"] = samples
        head = [
            *ctx.header(ENGINE),
            f"phase {stage.index}: {ctx.steps_text(stage)}",
            "proportions are shares of samples (= token shares for fixed-length samples)",
        ]
        body = yaml.safe_dump(data, sort_keys=False)
        result.files.append(write_text(ctx.phase_dir(stage) / FILE, comment(head) + body))
    phase = "phase_<k>/" if ctx.multi else ""
    usage = [
        "proportion = share of samples: equal to the token share when samples are fixed-length "
        "token sequences; ∝ w / tokens_per_sample when --prefixes gives mean sample lengths.",
        "",
        f"llm-foundry: put the streams of {phase}{FILE} under train_loader.dataset.streams (and "
        "epoch_size under train_loader.dataset). Plain streaming:",
        "  spec = yaml.safe_load(open(...))",
        "  ds = StreamingDataset(streams=[Stream(**s) for s in spec['streams'].values()],",
        "                        epoch_size=spec.get('epoch_size'), batch_size=...)",
    ]
    if ctx.multi:
        usage += ["", "One file per phase: switch streams at each phase's first step."]
    result.files.append(readme(ctx, ENGINE, usage))
    return result
