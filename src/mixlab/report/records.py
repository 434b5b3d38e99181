"""Read finished runs back from disk: one :class:`RunRecord` per (method, seed).

A record gathers everything the report needs from a run folder written by ``mixlab train``:

* ``config.yaml`` — the resolved config (kept as a plain dict; the store need not exist);
  the seed is ``train.seed``;
* ``metrics.jsonl`` — split into *eval lines* (those with ``eval/mean_ppl``: the validation
  curve) and *train log lines* (those with ``train/loss``: weights, shares, epochs, AC-ODM
  diagnostics);
* ``eval.json`` — the final validation pass (falls back to the last eval line).

:func:`load_records` accepts two kinds of folders:

* a **suite folder** (has ``suite.json``, written by ``mixlab compare``): every listed run in
  suite order, with its status, wall-clock, tokens, peak RSS and the extra cost of its stages
  (DoReMi reference + proxy, AC-ODM proxy). Runs whose status is not ``done`` are kept with
  ``status`` set so the report can say they were skipped;
* a **run folder** (has ``metrics.jsonl`` or ``eval.json``): the method is the folder name, or
  the parent's name when the folder is called ``seed<k>``. Wall-clock is estimated from the
  logged ``train/step_seconds``; peak RSS is unknown.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixlab.comparison.runner import MANIFEST_NAME
from mixlab.errors import ConfigError, DataError
from mixlab.train.callbacks import read_metrics
from mixlab.train.run_folder import RunFolder

EVAL_MARKER = "eval/mean_ppl"  # present in every eval line, absent from train lines
TRAIN_MARKER = "train/loss"

_SEED_DIR = re.compile(r"^seed(\d+)$")


@dataclass(frozen=True)
class StageCost:
    """Extra cost of one stage of a multi-stage method (a proxy or reference run)."""

    name: str
    kind: str
    seconds: float | None
    tokens: float | None
    peak_rss_mb: float | None
    dir: Path | None = None  # the stage's folder (a search stage's results live there)


@dataclass
class RunRecord:
    """One run (a method trained with one seed) as read back from its folder.

    ``eval_curve`` holds one dict per eval line (keys ``eval/...`` and ``eval_<mode>/...``)
    in the order of ``eval_steps``; ``final_eval`` is the last validation pass. ``status`` is
    ``done`` for a usable run; anything else (``failed``, ``diverged``, ``pending``,
    ``missing``) is skipped
    by the summary, with ``note`` saying why.
    """

    method: str
    seed: int
    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    eval_steps: list[int] = field(default_factory=list)
    eval_curve: list[dict[str, float]] = field(default_factory=list)
    final_eval: dict[str, float] = field(default_factory=dict)
    train_log: list[dict[str, Any]] = field(default_factory=list)
    stages: list[StageCost] = field(default_factory=list)
    seconds: float | None = None
    tokens: float | None = None
    peak_rss_mb: float | None = None
    status: str = "done"
    note: str = ""
    suite_name: str | None = None
    suite_baseline: str | None = None
    suite_metric: str | None = None

    @property
    def ok(self) -> bool:
        """True when the run finished and has a final evaluation."""
        return self.status == "done" and bool(self.final_eval)

    @property
    def domains(self) -> list[str]:
        """Domain names in the order of the final eval record (``eval/<d>/ppl`` keys)."""
        return _domains(self.final_eval)

    @property
    def branched(self) -> bool:
        """Whether the run started from a trunk's state (``train.branch_from``)."""
        train = self.config.get("train")
        return isinstance(train, dict) and bool(train.get("branch_from"))

    def branch_step(self) -> int | None:
        """The step its trunk stopped at (None: not branched, or the trunk's folder is gone).

        The trunk is read where ``train.branch_from`` says, else among the run's stages (a
        suite folder that was moved keeps its stages' folders relative to it)."""
        if not self.branched:
            return None
        origin = Path(str(self.config["train"]["branch_from"]))
        places = [origin, *(s.dir for s in self.stages if s.dir and s.dir.name == origin.name)]
        for place in places:
            train = _read_config(place).get("train")
            steps = train.get("max_steps") if isinstance(train, dict) else None
            if isinstance(steps, int) and not isinstance(steps, bool):
                return steps
        return None

    @property
    def stage_tokens(self) -> float:
        """Tokens spent in stages (proxies, references) before the main run."""
        return float(sum(s.tokens or 0.0 for s in self.stages))

    @property
    def stage_seconds(self) -> float:
        """Wall-clock seconds spent in stages before the main run."""
        return float(sum(s.seconds or 0.0 for s in self.stages))

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of an eval metric, e.g. ``eval/mean_ppl``; missing values -> NaN."""
        values = [_number(row.get(key)) for row in self.eval_curve]
        return list(self.eval_steps), values

    def train_series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a train log key over the lines that have it."""
        rows = [r for r in self.train_log if key in r]
        return [int(r["step"]) for r in rows], [_number(r[key]) for r in rows]

    def mean_step_seconds(self) -> float | None:
        """Mean of the logged ``train/step_seconds`` (None when never logged)."""
        values = [
            _number(r["train/step_seconds"]) for r in self.train_log if "train/step_seconds" in r
        ]
        finite = [v for v in values if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else None

    def metadata(self) -> dict[str, Any]:
        """JSON-safe description of the run (no curves) for ``results.json``."""
        return {
            "method": self.method,
            "seed": self.seed,
            "dir": str(self.run_dir),
            "status": self.status,
            "note": self.note or None,
            "eval_steps": list(self.eval_steps),
            "seconds": _json_number(self.seconds),
            "tokens": _json_number(self.tokens),
            "peak_rss_mb": _json_number(self.peak_rss_mb),
            "mean_step_seconds": _json_number(self.mean_step_seconds()),
            "stages": [
                {
                    "name": s.name,
                    "kind": s.kind,
                    "seconds": _json_number(s.seconds),
                    "tokens": _json_number(s.tokens),
                    "peak_rss_mb": _json_number(s.peak_rss_mb),
                }
                for s in self.stages
            ],
            "final_eval": {k: _json_number(v) for k, v in self.final_eval.items()},
        }


def load_records(paths: Sequence[str | Path]) -> list[RunRecord]:
    """Records of every run under ``paths`` (suite folders and/or run folders), in order.

    DataError naming the path when a path is not a folder, or is neither a suite folder
    (``suite.json``) nor a run folder (``metrics.jsonl`` / ``eval.json``).
    """
    if not paths:
        raise ConfigError("load_records: give at least one suite or run folder")
    records: list[RunRecord] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise DataError(f"{path}: not a folder (expected a suite folder or a run folder)")
        if (path / MANIFEST_NAME).is_file():
            records.extend(_load_suite(path))
        elif _has_run_files(RunFolder(path)):
            records.append(load_run(path))
        else:
            raise DataError(
                f"{path}: neither a suite folder (no {MANIFEST_NAME}) nor a run folder "
                f"(no {RunFolder.METRICS} or {RunFolder.EVAL})"
            )
    return records


def load_run(
    run_dir: str | Path, *, method: str | None = None, seed: int | None = None
) -> RunRecord:
    """Read one run folder; ``method`` defaults to the folder name (parent's for ``seed<k>``)."""
    path = Path(run_dir)
    config = _read_config(path)
    train_cfg = config.get("train")
    if seed is None and isinstance(train_cfg, dict):
        seed = int(train_cfg.get("seed", 0) or 0)
    if seed is None:
        seed = 0
    if method is None:
        method = path.parent.name if _SEED_DIR.match(path.name) else path.name
    rows = read_metrics(path) if RunFolder(path).metrics.is_file() else []
    evals = [r for r in rows if EVAL_MARKER in r]
    train_log = [r for r in rows if TRAIN_MARKER in r]
    by_step: dict[int, dict[str, float]] = {}
    for r in evals:  # a resumed run may repeat a step: the later line wins
        by_step[int(r["step"])] = _eval_part(r)
    final = _read_final_eval(path)
    if final is None and by_step:
        final = dict(by_step[max(by_step)])
        final["step"] = float(max(by_step))
    if final is not None and "step" in final and int(final["step"]) not in by_step:
        by_step[int(final["step"])] = _eval_part(final)
    steps = sorted(by_step)
    record = RunRecord(
        method=method,
        seed=seed,
        run_dir=path,
        config=config,
        eval_steps=steps,
        eval_curve=[by_step[s] for s in steps],
        final_eval=_eval_part(final) if final else {},
        train_log=train_log,
        seconds=_estimate_seconds(train_log),
        tokens=_served_tokens(train_log, config),
    )
    diverged = [int(r["step"]) for r in rows if r.get("train/diverged")]
    if diverged:  # the trainer stopped it: too many non-finite steps in a row
        record.status = "diverged"
        record.note = (
            f"{path}: diverged at step {diverged[-1]} (non-finite loss or gradient for "
            "train.max_nonfinite_steps steps in a row; lower train.lr)"
        )
    elif not record.final_eval:
        record.status = "missing"
        record.note = f"{path}: no evaluation (no {RunFolder.EVAL} and no eval lines)"
    return record


# ---------------------------------------------------------------------------- suite folders
def _load_suite(folder: Path) -> list[RunRecord]:
    suite_file = folder / MANIFEST_NAME
    try:
        suite = json.loads(suite_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{suite_file}: not readable JSON: {exc}") from exc
    if not isinstance(suite, dict) or not isinstance(suite.get("runs"), list):
        raise DataError(f"{suite_file}: expected an object with a 'runs' list")
    name, baseline, metric = suite.get("name"), suite.get("baseline"), suite.get("metric")
    records = []
    for i, entry in enumerate(suite["runs"]):
        if not isinstance(entry, dict) or "method" not in entry or "dir" not in entry:
            raise DataError(f"{suite_file}: runs[{i}] needs at least 'method' and 'dir'")
        run_dir = folder / str(entry["dir"])
        method, seed = str(entry["method"]), int(entry.get("seed", 0) or 0)
        status = str(entry.get("status", "done"))
        if _has_run_files(RunFolder(run_dir)):
            record = load_run(run_dir, method=method, seed=seed)
        else:
            record = RunRecord(method=method, seed=seed, run_dir=run_dir, status="missing")
            record.note = f"{run_dir}: no run files"
        if status != "done" and record.status != "diverged":
            record.status = status
            error = entry.get("error")
            record.note = f"status {status} in {MANIFEST_NAME}" + (f": {error}" if error else "")
        record.seconds = _opt_float(entry.get("seconds"), record.seconds)
        record.tokens = _opt_float(entry.get("tokens"), record.tokens)
        record.peak_rss_mb = _opt_float(entry.get("peak_rss_mb"), None)
        record.stages = [
            StageCost(
                name=str(s.get("name", "")),
                kind=str(s.get("kind", "train")),
                seconds=_opt_float(s.get("seconds"), None),
                tokens=_opt_float(s.get("tokens"), None),
                peak_rss_mb=_opt_float(s.get("peak_rss_mb"), None),
                dir=folder / str(s["dir"]) if s.get("dir") else None,
            )
            for s in entry.get("stages") or []
            if isinstance(s, dict)
        ]
        record.suite_name = str(name) if name is not None else None
        record.suite_baseline = str(baseline) if baseline is not None else None
        record.suite_metric = str(metric) if metric is not None else None
        records.append(record)
    return records


# ---------------------------------------------------------------------------- helpers
def _has_run_files(folder: RunFolder) -> bool:
    return folder.metrics.is_file() or folder.eval.is_file()


def _read_config(path: Path) -> dict[str, Any]:
    file = RunFolder(path).config
    if not file.is_file():
        return {}
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    return raw if isinstance(raw, dict) else {}


def _read_final_eval(path: Path) -> dict[str, Any] | None:
    file = RunFolder(path).eval
    if not file.is_file():
        return None
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{file}: not readable JSON: {exc}") from exc
    return raw if isinstance(raw, dict) and EVAL_MARKER in raw else None


def _eval_part(row: Mapping[str, Any]) -> dict[str, float]:
    """The eval metrics of a line (``eval/...``, ``eval_<mode>/...``) as floats (None -> NaN)."""
    return {
        k: _number(v)
        for k, v in row.items()
        if k.startswith("eval") and (v is None or isinstance(v, (int, float)))
    }


def _domains(evals: Mapping[str, float]) -> list[str]:
    return [
        k[len("eval/") : -len("/ppl")]
        for k in evals
        if k.startswith("eval/") and k.endswith("/ppl")
    ]


def _estimate_seconds(train_log: Sequence[Mapping[str, Any]]) -> float | None:
    """Σ step_seconds × steps since the previous log line (a run folder has no wall-clock)."""
    total, prev, seen = 0.0, 0, False
    for r in train_log:
        value = _number(r.get("train/step_seconds"))
        step = int(r["step"])
        if math.isfinite(value):
            total += value * max(step - prev, 1)
            seen = True
        prev = step
    return total if seen else None


def _served_tokens(
    train_log: Sequence[Mapping[str, Any]], config: Mapping[str, Any]
) -> float | None:
    """Tokens trained: the sampler's served tokens at the last log line, else from the config."""
    if train_log:
        last = train_log[-1]
        served = [
            _number(v) for k, v in last.items() if k.startswith("domain/") and k.endswith("/tokens")
        ]
        if served and all(math.isfinite(v) for v in served):
            return float(sum(served))
    train, data = config.get("train"), config.get("data")
    if isinstance(train, dict) and isinstance(data, dict):
        try:
            return float(
                int(train["max_steps"])
                * int(train.get("batch_size", 1))
                * int(train.get("grad_accum", 1))
                * int(data["seq_len"])
            )
        except (KeyError, TypeError, ValueError):
            return None
    return None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _opt_float(value: Any, default: float | None) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def _json_number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
