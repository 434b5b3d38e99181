"""What every engine writer shares: its inputs, its result, and how files are written.

A writer is a function ``write(ctx: ExportContext) -> Written`` registered by engine name in
:mod:`mixlab.engines.export`. It writes into ``ctx.out`` (one folder per engine) files the
engine reads unchanged, plus a ``README.txt`` saying how to use them. Rules all writers keep:

* weights are written with full float precision (``repr``), so sums hold where an engine checks
  them (OLMo-core: ``target_ratio`` sums to 1);
* a domain with weight 0 in a phase is left out of that phase (an engine may refuse to build a
  source of zero samples); Levanter keeps it at 0, which it drops itself;
* an engine without stages gets one file (or folder ``phase_<k>/``) per phase, used for the
  steps the README lists;
* files are written atomically (temp file, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mixlab import __version__
from mixlab.engines.datamap import DataMap
from mixlab.engines.phases import PhasePlan, Stage

SAMPLES_EQUAL_TOKENS = (
    "mixlab weights are token shares. This engine samples fixed-length sequences, so a share of "
    "samples equals a share of tokens: the weights are written unchanged (the engine "
    "normalises them over training samples)."
)


@dataclass(frozen=True)
class ExportContext:
    """Everything a writer needs.

    ``global_batch_size`` is in sequences per optimiser step of the target run; ``seq_len`` its
    sequence length (either may be unknown).
    """

    plan: PhasePlan
    data: DataMap
    out: Path
    source: str
    seed: int = 0
    seq_len: int | None = None
    global_batch_size: int | None = None
    levanter_block_size: int = 2048

    @property
    def domains(self) -> tuple[str, ...]:
        return self.plan.domains

    @property
    def multi(self) -> bool:
        return len(self.plan.stages) > 1

    def phase_dir(self, stage: Stage) -> Path:
        """``out`` for a one-phase plan, else ``out/phase_<k>``."""
        return self.out / f"phase_{stage.index}" if self.multi else self.out

    def weighted_paths(self, stage: Stage) -> list[tuple[str, str, float]]:
        """(domain, path, weight) with each domain's weight split over its paths; no zeros."""
        out: list[tuple[str, str, float]] = []
        for d, w in zip(self.domains, stage.weights, strict=True):
            if w > 0:
                out.extend((d, p, pw) for p, pw in self.data.domains[d].split(float(w)))
        return out

    def sample_shares(self, pairs: list[tuple[str, str, float]]) -> list[float]:
        """Example shares of (domain, path, token weight) pairs: ``∝ w / tokens_per_sample``
        when every domain gives it, else the token weights (fixed-length examples)."""
        lengths = [self.data.domains[d].tokens_per_sample for d, _, _ in pairs]
        raw = [w for _, _, w in pairs]
        if all(n is not None for n in lengths):
            raw = [w / float(n or 1.0) for w, n in zip(raw, lengths, strict=True)]
        total = sum(raw)
        return [r / total for r in raw]

    def stage_samples(self, stage: Stage) -> int | None:
        """Examples a stage draws in the target run: its tokens over the mean example length.

        ``sum_d tokens * w_d / L_d`` with every domain's ``tokens_per_sample`` ``L_d``, else
        ``tokens / seq_len``; None without a target budget (or any length).
        """
        if self.plan.target.budget_tokens is None:
            return None
        lengths = [self.data.domains[d].tokens_per_sample for d in self.domains]
        if all(n is not None for n in lengths):
            return round(
                sum(stage.tokens * w / n for w, n in zip(stage.weights, lengths, strict=True) if n)
            )
        if self.seq_len:
            return round(stage.tokens / self.seq_len)
        return None

    def steps_text(self, stage: Stage) -> str:
        return self.plan.span(stage)

    def header(self, engine: str) -> list[str]:
        """Lines for a comment header or README: provenance and the token/sample statement."""
        lines = [
            f"Written by mixlab {__version__} export-mix --engine {engine}",
            f"source: {self.source}",
        ]
        if self.data.placeholder:
            lines.append(
                "paths are placeholders (each domain's name): pass --prefixes FILE with the "
                "real paths, or edit them"
            )
        return lines


@dataclass
class Written:
    """A writer's result: files written, and notes / warnings for the user."""

    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


Writer = Callable[[ExportContext], Written]


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def comment(lines: list[str], prefix: str = "# ") -> str:
    return "".join(f"{prefix}{line}\n" for line in lines)


def readme(ctx: ExportContext, engine: str, usage: list[str]) -> Path:
    """``README.txt``: provenance, the stages with their steps, and how to use the files."""
    lines = [*ctx.header(engine), ""]
    for stage in ctx.plan.stages:
        weights = ", ".join(f"{d}={w:.4f}" for d, w in stage.named(ctx.domains).items())
        lines.append(f"phase {stage.index}: {ctx.steps_text(stage)}: {weights}")
    lines += ["", *usage]
    return write_text(ctx.out / "README.txt", "\n".join(lines) + "\n")
