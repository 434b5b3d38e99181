"""scripts/acodm_mixture_gap.py: the mean mixture of two suite arms per seed and their TV gap."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import load_module

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "acodm_mixture_gap.py"


def load_script() -> ModuleType:
    return load_module(SCRIPT, "acodm_mixture_gap")


def write_run(folder: Path, weights: list[tuple[float, float]]) -> None:
    folder.mkdir(parents=True)
    rows = [
        {"step": 10 * (t + 1), "mix/weight/a": a, "mix/weight/b": b}
        for t, (a, b) in enumerate(weights)
    ]
    rows.append({"step": 10 * len(weights), "eval/geo_ppl": 9.0})  # eval rows carry no mixture
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_window_means_and_tv(tmp_path: Path) -> None:
    """Arm x holds (.5, .5); arm y is at (.9, .1) for steps 10-20, then at (.7, .3): from step
    30 its mean is (.7, .3), a TV gap of .2; over all steps (.78, .22), a gap of .28. Seed 1 of
    y is missing, so only seed 0 is compared."""
    write_run(tmp_path / "x" / "seed0", [(0.5, 0.5)] * 5)
    write_run(tmp_path / "x" / "seed1", [(0.5, 0.5)] * 5)
    write_run(tmp_path / "y" / "seed0", [(0.9, 0.1)] * 2 + [(0.7, 0.3)] * 3)
    script = load_script()
    late = script.mixture_gap(tmp_path, "x", "y", lo=30)
    assert list(late) == [0]
    a, b, tv = late[0]
    assert a == pytest.approx({"a": 0.5, "b": 0.5}) and b == pytest.approx({"a": 0.7, "b": 0.3})
    assert tv == pytest.approx(0.2)
    assert script.mixture_gap(tmp_path, "x", "y")[0][2] == pytest.approx(0.28)


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    write_run(tmp_path / "x" / "seed0", [(0.5, 0.5)] * 3)
    write_run(tmp_path / "y" / "seed1", [(0.5, 0.5)] * 3)
    script = load_script()
    with pytest.raises(SystemExit, match="no arm folder 'z'"):
        script.mixture_gap(tmp_path, "x", "z")
    with pytest.raises(SystemExit, match="no seed in common"):
        script.mixture_gap(tmp_path, "x", "y")
    write_run(tmp_path / "y" / "seed0", [(0.5, 0.5)] * 3)
    with pytest.raises(SystemExit, match=r"no mix/weight/\* rows between steps 100"):
        script.mixture_gap(tmp_path, "x", "y", lo=100)
