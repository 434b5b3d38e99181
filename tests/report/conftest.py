"""Fake run and suite folders for the report tests: no training, just the files it would write.

``write_run`` writes ``config.yaml``, ``metrics.jsonl`` (train log lines with weights, shares,
epochs and optionally AC-ODM diagnostics; eval lines with the §5 aggregates) and ``eval.json``.
``write_suite`` adds a ``suite.json`` as ``mixlab compare`` writes it (notes/SUITE_SCHEMA.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixlab.eval.metrics import aggregates
from mixlab.report.records import RunRecord

DOMS = ("a", "b", "c")
NATURAL = (0.5, 0.3, 0.2)


def eval_row(step: int, losses: Sequence[float]) -> dict[str, Any]:
    """One eval line: per-domain loss/ppl and the aggregates, as the loop logs them."""
    row: dict[str, Any] = {"step": step}
    for d, loss in zip(DOMS, losses, strict=True):
        row[f"eval/{d}/loss"] = float(loss)
        row[f"eval/{d}/ppl"] = math.exp(loss)
    row.update({f"eval/{k}": v for k, v in aggregates(list(losses), NATURAL, domains=DOMS).items()})
    return row


def train_row(
    step: int, weights: Sequence[float], *, seconds: float, acodm: bool
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "step": step,
        "train/loss": 3.0 - step / 100,
        "train/step_seconds": seconds,
    }
    tokens = 128 * step
    for d, w, nat in zip(DOMS, weights, NATURAL, strict=True):
        row[f"mix/weight/{d}"] = w
        row[f"mix/requested/{d}"] = w
        row[f"mix/achieved/{d}"] = 0.9 * w + 0.1 / len(DOMS)
        row[f"domain/{d}/tokens"] = w * tokens
        row[f"domain/{d}/epochs"] = w * tokens / (nat * 2000)
    if acodm:
        row["mix/acodm/phase"] = 1.0
        row["mix/acodm/critic_loss"] = 1.0 / step
        row["mix/acodm/actor_loss"] = -0.1 * step
        row["mix/acodm/mean_q"] = 0.05 * step
        row["mix/acodm/kl"] = 0.001 * step
        row["mix/acodm/max_log_ratio"] = 0.01 * step
        row["mix/acodm/bound"] = 1.0
        row["mix/acodm/bound_excess"] = 0.0
        row["mix/acodm/max_cap_use"] = 0.005 * step
        for d in DOMS:
            row[f"mix/acodm/reward/{d}"] = 0.01 * step * (DOMS.index(d) - 1)
            row[f"mix/acodm/heldout_loss/{d}"] = 5.0 - 0.01 * step
    return row


def write_run(
    folder: Path,
    *,
    seed: int,
    evals: Mapping[int, Sequence[float]],
    weights: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
    step_seconds: float = 0.1,
    log_every: int = 2,
    acodm: bool = False,
    final: bool = True,
) -> Path:
    """A run folder whose eval curve has the given per-domain losses at the given steps."""
    folder.mkdir(parents=True, exist_ok=True)
    max_steps = max(evals)
    config = {
        "data": {"store": "shards", "seq_len": 16},
        "mixing": {"name": folder.name},
        "train": {"seed": seed, "max_steps": max_steps, "batch_size": 8, "grad_accum": 1},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    lines = []
    for step in range(log_every, max_steps + 1, log_every):
        lines.append(train_row(step, weights, seconds=step_seconds, acodm=acodm))
        if step in evals:
            lines.append(eval_row(step, evals[step]))
    with open(folder / "metrics.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(line) + "\n" for line in lines)
    if final:
        record = eval_row(max_steps, evals[max_steps])
        (folder / "eval.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def curve(
    final_losses: Sequence[float], steps: Sequence[int] = (2, 4, 6, 8)
) -> dict[int, list[float]]:
    """Losses that fall linearly to ``final_losses`` at the last step (+0.5 nats at the start)."""
    n = len(steps)
    return {
        s: [x + 0.5 * (n - 1 - i) / max(n - 1, 1) for x in final_losses]
        for i, s in enumerate(steps)
    }


def log_linear(
    c: Sequence[float], d: Sequence[float], steps: Sequence[int] = (50, 100, 150, 200)
) -> dict[int, list[float]]:
    """Losses L_i(step) = c_i - d_i log2(step): a drop of exactly d_i per doubling of steps."""
    return {s: [ci - di * math.log2(s) for ci, di in zip(c, d, strict=True)] for s in steps}


def write_suite(
    folder: Path,
    runs: Sequence[dict[str, Any]],
    *,
    baseline: str = "uniform",
    metric: str = "mean_ppl",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    suite = {
        "version": 1,
        "name": "test",
        "baseline": baseline,
        "metric": metric,
        "seeds": sorted({r["seed"] for r in runs}),
        "runs": list(runs),
    }
    (folder / "suite.json").write_text(json.dumps(suite), encoding="utf-8")
    return folder


def suite_of(folder: Path, arms: dict[str, list[dict[int, list[float]]]]) -> Path:
    """A suite folder with one uniform-mixture run per (arm, seed) of the given eval curves."""
    runs = []
    for arm, curves in arms.items():
        for seed, evals in enumerate(curves):
            write_run(folder / arm / f"seed{seed}", seed=seed, evals=evals)
            runs.append({"method": arm, "seed": seed, "dir": f"{arm}/seed{seed}"})
    return write_suite(folder, runs, metric="geo_ppl")


@pytest.fixture
def fake_suite(tmp_path: Path) -> Path:
    return make_fake_suite(tmp_path / "suite")


def make_fake_suite(suite: Path) -> Path:
    """uniform, natural, doremi (one stage) and acodm (diagnostics) x seeds 0, 1; one failed."""
    finals = {
        "uniform": (1.0, 1.2, 1.6),
        "natural": (0.9, 1.2, 1.8),
        "doremi": (0.95, 1.1, 1.5),
        "acodm": (0.97, 1.15, 1.55),
    }
    weights = {
        "uniform": (1 / 3, 1 / 3, 1 / 3),
        "natural": NATURAL,
        "doremi": (0.3, 0.3, 0.4),
        "acodm": (0.4, 0.3, 0.3),
    }
    runs = []
    for method, losses in finals.items():
        for seed in (0, 1):
            rel = f"{method}/seed{seed}"
            shifted = [x + 0.01 * seed for x in losses]
            write_run(
                suite / rel,
                seed=seed,
                evals=curve(shifted),
                weights=weights[method],
                step_seconds=0.1 if method != "acodm" else 0.12,
                acodm=method == "acodm",
            )
            stages = []
            if method == "doremi":
                stages = [
                    {"name": "weights", "kind": "doremi", "dir": f"{rel}/stages/weights",
                     "seconds": 20.0, "tokens": 4096, "peak_rss_mb": 500.0}
                ]  # fmt: skip
            runs.append(
                {"method": method, "seed": seed, "dir": rel, "status": "done", "seconds": 10.0,
                 "tokens": 1024, "peak_rss_mb": 400.0 + (50 if method == "acodm" else 0),
                 "stages": stages}
            )  # fmt: skip
    runs.append(
        {"method": "odm", "seed": 0, "dir": "odm/seed0", "status": "failed", "error": "boom",
         "stages": []}
    )  # fmt: skip
    return write_suite(suite, runs)


def record(method: str, seed: int, values: Mapping[int, float], **extra: Any) -> RunRecord:
    """An in-memory run whose ``eval/mean_ppl`` curve has the given values (final = last)."""
    steps = sorted(values)
    rows = [{"eval/mean_ppl": float(values[s])} for s in steps]
    return RunRecord(
        method=method,
        seed=seed,
        run_dir=Path(f"/runs/{method}/seed{seed}"),
        eval_steps=steps,
        eval_curve=rows,
        final_eval=dict(rows[-1]),
        **extra,
    )


@pytest.fixture(scope="session")
def suite_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fake suite's report, written once per session (drawing figures takes seconds)."""
    from mixlab.report import load_records, write_report

    suite = make_fake_suite(tmp_path_factory.mktemp("report") / "suite")
    return write_report(load_records([suite]), suite / "report", title="Test <suite>")
