"""scripts/mixture_headroom.py: the headroom table from a suite folder, --vs and --out (the
estimate itself is tested in tests/report/test_headroom.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mixlab.mixing.static import read_weights_file
from tests.helpers import load_module
from tests.report.conftest import DOMS, log_linear, suite_of, write_run, write_suite

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mixture_headroom.py"
D = (0.2, 0.4, 0.6)


def load_script() -> ModuleType:
    return load_module(SCRIPT, "mixture_headroom")


def test_cli_prints_the_table_and_writes_a_weights_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = suite_of(
        tmp_path / "s",
        {
            arm: [log_linear((6 + off * s, 5, 4), D) for s in (0, 1, 2)]
            for arm, off in (("uniform", 0.01), ("other", -0.02))
        },
    )
    out = tmp_path / "w.json"
    argv = ["mixture_headroom.py", str(suite), "--vs", "uniform", "other", "--out", str(out)]
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
    monkeypatch.setattr(sys, "argv", ["mixture_headroom.py", str(suite), "--arm", "nope"])
    with pytest.raises(SystemExit, match="no runs of arm 'nope'"):
        load_script().main()
    only = suite_of(tmp_path / "only", {"proxy": [log_linear((6, 5, 4), D)]})
    monkeypatch.setattr(sys, "argv", ["mixture_headroom.py", str(only)])
    load_script().main()  # one arm, not named uniform: it is the arm
    assert "predicted geo_ppl at w* vs proxy" in capsys.readouterr().out
    flat = suite_of(tmp_path / "flat", {"uniform": [log_linear((6, 5, 4), (0, 0, 0))]})
    monkeypatch.setattr(sys, "argv", ["mixture_headroom.py", str(flat)])
    with pytest.raises(SystemExit, match="mixture_headroom: headroom: no domain's loss fell"):
        load_script().main()


def test_guard_worst_with_a_check_arm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--guard-worst --check-arm: the check arm (here at uniform, a 0.05 nats worse than the
    model says) lifts a above its share; the table prints the floors and the worst_ppl change."""
    base = log_linear((5.1, 5.0, 4.9), D)
    worse = {s: [x + 0.05, y, z] for s, (x, y, z) in base.items()}
    suite = suite_of(tmp_path / "s", {"uniform": [base], "check": [worse]})
    out = tmp_path / "w.json"
    argv = ["mixture_headroom.py", str(suite), "--guard-worst", "--check-arm", "check"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    load_script().main()
    text = capsys.readouterr().out
    assert "at their floor: ['a'" in text and "worst_ppl" in text
    assert read_weights_file(out, DOMS)[0] > 1 / 3


def test_explain_an_arm_at_other_mixtures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--explain: an arm at (0.2, 0.3, 0.5) whose changes are twice the model's prints each
    domain's predicted and measured change and the scale 2.00x."""
    base = log_linear((5.1, 5.0, 4.9), D)
    w = (0.2, 0.3, 0.5)
    change = [-2 * d * math.log2(x * 3) for d, x in zip(D, w, strict=True)]
    shifted = {s: [x + c for x, c in zip(xs, change, strict=True)] for s, xs in base.items()}
    suite = suite_of(tmp_path / "s", {"uniform": [base]})
    write_run(tmp_path / "s" / "headroom" / "seed0", seed=0, evals=shifted, weights=w)
    write_suite(
        tmp_path / "s",
        [
            {"method": "uniform", "seed": 0, "dir": "uniform/seed0"},
            {"method": "headroom", "seed": 0, "dir": "headroom/seed0"},
        ],
        metric="geo_ppl",
    )
    monkeypatch.setattr(sys, "argv", ["mixture_headroom.py", str(suite), "--explain", "headroom"])
    load_script().main()
    text = capsys.readouterr().out
    assert "headroom vs uniform, seeds [0]" in text
    assert f"{-D[0] * math.log2(0.6):+10.3f}" in text  # a's predicted change at w_a = 0.2
    assert "the measured changes are 2.00x the predicted ones" in text
    assert "(0.000 after that scale)" in text
