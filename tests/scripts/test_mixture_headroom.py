"""scripts/mixture_headroom.py: the headroom table from a suite folder, --vs and --out (the
estimate itself is tested in tests/report/test_headroom.py)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml

from mixlab.mixing.static import read_weights_file
from tests.helpers import load_module

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mixture_headroom.py"
DOMS = ("a", "b", "c")


def load_script() -> ModuleType:
    return load_module(SCRIPT, "mixture_headroom")


def write_run(
    folder: Path,
    seed: int,
    losses: dict[int, Sequence[float]],
    weights: Sequence[Sequence[float]] = ((1 / 3, 1 / 3, 1 / 3),),
) -> dict[str, object]:
    """A run folder with eval rows at ``losses``' steps and train rows cycling ``weights``."""
    folder.mkdir(parents=True)
    cfg = {"train": {"seed": seed, "max_steps": max(losses)}, "mixing": {"name": "x"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows: list[dict[str, float]] = []
    for i, step in enumerate(range(10, max(losses) + 1, 10)):
        w = weights[i % len(weights)]
        rows.append(
            {
                "step": step,
                "train/loss": 3.0,
                **{f"mix/weight/{d}": x for d, x in zip(DOMS, w, strict=True)},
            }
        )
        if step in losses:
            row = {"step": step, "eval/mean_ppl": 1.0}
            for d, loss in zip(DOMS, losses[step], strict=True):
                row[f"eval/{d}/loss"], row[f"eval/{d}/ppl"] = loss, math.exp(loss)
            row["eval/geo_ppl"] = math.exp(float(np.mean(losses[step])))
            rows.append(row)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {
        "method": folder.parent.name,
        "seed": seed,
        "dir": f"{folder.parent.name}/{folder.name}",
    }


def log_linear(
    c: Sequence[float], d: Sequence[float], steps: Sequence[int]
) -> dict[int, list[float]]:
    """L_i(step) = c_i - d_i log2(step): a drop of exactly d_i per doubling."""
    return {s: [ci - di * math.log2(s) for ci, di in zip(c, d, strict=True)] for s in steps}


def write_suite(folder: Path, runs: list[dict[str, object]]) -> Path:
    (folder / "suite.json").write_text(
        json.dumps({"name": "t", "baseline": "uniform", "metric": "geo_ppl", "runs": runs})
    )
    return folder


D = (0.2, 0.4, 0.6)
STEPS = (50, 100, 150, 200)


def test_cli_prints_the_table_and_writes_a_weights_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = [
        write_run(tmp_path / arm / f"seed{s}", s, log_linear((6 + off * s, 5, 4), D, STEPS))
        for arm, off in (("uniform", 0.01), ("other", -0.02))
        for s in (0, 1, 2)
    ]
    write_suite(tmp_path, runs)
    out = tmp_path / "w.json"
    argv = ["mixture_headroom.py", str(tmp_path), "--vs", "uniform", "other", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    load_script().main()
    text = capsys.readouterr().out
    assert "drop over steps 100-200" in text and "predicted geo_ppl at w* vs uniform" in text
    assert "paired noise uniform vs other: per-seed geo_ppl differences spread by" in text
    assert "paired seeds" in text
    weights = read_weights_file(out, DOMS)
    assert weights.sum() == pytest.approx(1.0) and weights == pytest.approx(
        [1 / 6, 1 / 3, 1 / 2], abs=1e-5
    )
    monkeypatch.setattr(sys, "argv", ["mixture_headroom.py", str(tmp_path), "--arm", "nope"])
    with pytest.raises(SystemExit, match="no runs of arm 'nope'"):
        load_script().main()
    flat = tmp_path / "flat"
    write_suite(
        flat, [write_run(flat / "uniform" / "seed0", 0, log_linear((6, 5, 4), (0, 0, 0), STEPS))]
    )
    monkeypatch.setattr(sys, "argv", ["mixture_headroom.py", str(flat)])
    with pytest.raises(SystemExit, match="mixture_headroom: headroom: no domain's loss fell"):
        load_script().main()
