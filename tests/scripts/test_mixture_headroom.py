"""scripts/mixture_headroom.py: the headroom table from a suite folder, --vs and --out (the
estimate itself is tested in tests/report/test_headroom.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

from mixlab.mixing.static import read_weights_file
from tests.helpers import load_module
from tests.report.conftest import DOMS, log_linear, suite_of

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
