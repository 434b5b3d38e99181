"""``export_mix``: a mixlab mixture -> phases -> files each engine reads unchanged.

The pipeline: :func:`~mixlab.engines.sources.read_source` (run folder, DoReMi or search
weights, plain mapping) -> :func:`~mixlab.engines.phases.compress` (at most N stages placed in
the target run, achieved shares, epochs for the budget, cap warnings) -> one writer per engine
(:data:`ENGINES`), each into ``<out>/<engine>/``, and ``<out>/export_plan.json`` with the whole
plan for programs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixlab.engines import hf_datasets, levanter, megatron, mosaic, nanotron, olmo_core
from mixlab.engines.common import ExportContext, Writer, write_text
from mixlab.engines.datamap import DataMap, placeholder_map, read_data_map
from mixlab.engines.phases import PhasePlan, TargetRun, compress
from mixlab.engines.sources import Trajectory, read_source
from mixlab.errors import ConfigError
from mixlab.tables import text_table

ENGINES: dict[str, Writer] = {
    megatron.ENGINE: megatron.write,
    olmo_core.ENGINE: olmo_core.write,
    nanotron.ENGINE: nanotron.write,
    levanter.ENGINE: levanter.write,
    hf_datasets.ENGINE: hf_datasets.write,
    mosaic.ENGINE: mosaic.write,
}
PLAN_NAME = "export_plan.json"


@dataclass
class ExportResult:
    """What :func:`export_mix` did: the plan, the files per engine, notes and warnings."""

    trajectory: Trajectory
    plan: PhasePlan
    data: DataMap
    out: Path
    files: dict[str, list[Path]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def table(self) -> str:
        return format_plan(self.trajectory, self.plan)


def resolve_engines(names: Sequence[str]) -> list[str]:
    """Engine names in registry order; ``all`` means every engine."""
    if not names or "all" in names:
        return list(ENGINES)
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise ConfigError(
            f"--engine: unknown engine(s) {', '.join(unknown)}; choose from "
            f"{', '.join(ENGINES)} or all"
        )
    return [n for n in ENGINES if n in names]


def export_mix(
    source: str | Path,
    engines: Sequence[str],
    out: str | Path,
    *,
    prefixes: str | Path | None = None,
    phases: int = 1,
    budget_tokens: float | None = None,
    global_batch_size: int | None = None,
    seq_len: int | None = None,
    max_epochs: float | None = None,
    step_multiple: int = 1,
    seed: int = 0,
    normalise: bool = False,
    levanter_block_size: int = 2048,
    force: bool = False,
) -> ExportResult:
    """Read ``source``, compress it into at most ``phases`` stages and write every engine's files.

    ``global_batch_size`` (sequences per optimiser step) and ``seq_len`` describe the target
    run; with ``budget_tokens`` they place the stages at target steps. ``seq_len`` defaults to
    the source run's. ``force`` replaces existing ``<out>/<engine>`` folders.
    """
    names = resolve_engines(engines)
    out = Path(out)
    _check_positive(budget_tokens, "--budget-tokens")
    _check_positive(global_batch_size, "--global-batch-size")
    _check_positive(seq_len, "--seq-len")
    if levanter_block_size < 1:
        raise ConfigError(
            f"--levanter-block-size: expected an integer >= 1, got {levanter_block_size}"
        )
    traj = read_source(source, normalise=normalise)
    data = read_data_map(prefixes, traj.domains) if prefixes else placeholder_map(traj.domains)
    notes: list[str] = []
    if seq_len is None and traj.seq_len is not None and global_batch_size:
        seq_len = traj.seq_len
        notes.append(f"--seq-len not given: using the source run's seq_len {seq_len}")
    if global_batch_size and not seq_len:
        raise ConfigError(
            "--global-batch-size needs --seq-len (the target run's sequence length in tokens)"
        )
    tokens_per_step = global_batch_size * seq_len if global_batch_size and seq_len else None
    target = TargetRun(budget_tokens, tokens_per_step, step_multiple)
    plan = compress(
        traj,
        phases,
        target=target,
        domain_tokens=data.domain_tokens(traj.domains),
        max_epochs=max_epochs,
    )
    for name in names:
        folder = out / name
        if folder.exists() and any(folder.iterdir()):
            if not force:
                raise ConfigError(
                    f"{folder} already holds files; pass --force to replace them or choose "
                    "another --out"
                )
            shutil.rmtree(folder)
    result = ExportResult(traj, plan, data, out, notes=notes, warnings=list(plan.warnings))
    if data.placeholder:
        result.notes.append(
            "no --prefixes: each domain's path is its name; pass --prefixes FILE (domain -> "
            "path(s)) or edit the files"
        )
    for name in names:
        ctx = ExportContext(
            plan=plan,
            data=data,
            out=out / name,
            source=str(source),
            seed=seed,
            seq_len=seq_len,
            global_batch_size=global_batch_size,
            levanter_block_size=levanter_block_size,
        )
        written = ENGINES[name](ctx)
        result.files[name] = written.files
        result.notes += written.notes
        result.warnings += written.warnings
    write_text(out / PLAN_NAME, json.dumps(plan_record(result), indent=2) + "\n")
    return result


def _check_positive(value: float | None, name: str) -> None:
    if value is not None and not (np.isfinite(value) and value > 0):
        raise ConfigError(f"{name}: expected a number > 0, got {value!r}")


def _floats(values: np.ndarray | None, domains: Sequence[str]) -> dict[str, float] | None:
    if values is None:
        return None
    return {d: float(v) for d, v in zip(domains, values, strict=True)}


def plan_record(result: ExportResult) -> dict[str, Any]:
    """``export_plan.json``: the plan, the source and the files, for programs."""
    traj, plan = result.trajectory, result.plan
    return {
        "source": traj.source,
        "kind": traj.kind,
        "domains": list(plan.domains),
        "steps_unit": "target" if plan.in_target_steps else "source",
        "phases": [
            {
                "index": s.index,
                "start_step": s.start_step,
                "end_step": s.end_step,
                "start_fraction": s.start,
                "end_fraction": s.end,
                "tokens": s.tokens,
                "weights": s.named(plan.domains),
            }
            for s in plan.stages
        ],
        "trajectory_shares": _floats(plan.trajectory_shares, plan.domains),
        "achieved_shares": _floats(plan.shares, plan.domains),
        "error_rms": plan.error,
        "one_stage_error_rms": plan.static_error,
        "budget_tokens": plan.target.budget_tokens,
        "tokens_per_step": plan.target.tokens_per_step,
        "target_steps": plan.target.steps,
        "domain_tokens": _floats(plan.domain_tokens, plan.domains),
        "epochs": _floats(plan.epochs, plan.domains),
        "max_epochs": plan.max_epochs,
        "prefixes": result.data.source,
        "warnings": result.warnings,
        "notes": result.notes,
        "files": {k: [str(p) for p in v] for k, v in result.files.items()},
    }


def format_plan(traj: Trajectory, plan: PhasePlan) -> str:
    """The weights table: one column per phase, then trajectory vs achieved shares and epochs."""
    if traj.timed:
        what = f"{traj.kind}, {int(traj.steps[-1])} steps, {len(traj.steps)} logged windows"
        what += ", static" if traj.is_static else ", adaptive"
    else:
        what = f"{traj.kind}, static"
    if plan.in_target_steps:
        unit = f"target-run steps of {plan.target.steps} (0-based, end exclusive)"
    elif traj.timed:
        unit = "the source run's steps (give --budget-tokens, --global-batch-size for the target's)"
    else:
        unit = "one static mixture for the whole run"
    lines = [
        f"source: {traj.source} ({what})",
        f"phases: {len(plan.stages)} (token-share RMS error {plan.error:.4f}; one stage: "
        f"{plan.static_error:.4f}); {unit}",
    ]
    timed = plan.in_target_steps or traj.timed
    header = ["domain", *(f"phase {s.index}" for s in plan.stages), "trajectory", "achieved"]
    spans = ["", *(f"{s.start_step}-{s.end_step}" if timed else "all" for s in plan.stages)]
    spans += ["", ""]
    widths = [8, *(15 for _ in plan.stages), 11, 9]
    if plan.domain_tokens is not None:
        header.append("domain tokens")
        spans.append("")
        widths.append(14)
    if plan.epochs is not None:  # a last column flags epochs above --max-epochs
        header += ["epochs", ""]
        spans += ["@" + format(plan.target.budget_tokens, ".3g"), ""]
        widths.append(8)
    rows = [spans]
    for k, d in enumerate(plan.domains):
        row = [d, *(f"{s.weights[k]:.4f}" for s in plan.stages)]
        row += [f"{plan.trajectory_shares[k]:.4f}", f"{plan.shares[k]:.4f}"]
        if plan.domain_tokens is not None:
            row.append(f"{plan.domain_tokens[k]:.4g}")
        if plan.epochs is not None:
            over = plan.max_epochs is not None and plan.epochs[k] > plan.max_epochs
            row += [f"{plan.epochs[k]:.2f}", "!" if over else ""]
        rows.append(row)
    lines += ["", text_table(header, rows, sep=" ", min_widths=widths, rule=None)]
    gap = float(np.abs(plan.shares - plan.trajectory_shares).max())
    lines.append("")
    lines.append(f"achieved vs trajectory shares: max |difference| {gap:.2e}")
    if plan.epochs is None:
        lines.append(
            "epochs: give --budget-tokens and domain sizes (tokens in --prefixes, or a run "
            "folder) to see them"
        )
    return "\n".join(lines)
