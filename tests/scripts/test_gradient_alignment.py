"""scripts/gradient_alignment.py: the split-half, Adam-weighted gradient matrix of a trained
tiny run, and its --check table against a run of the same proxy at another mixture."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from mixlab.eval.runs import load_run
from tests.helpers import load_module, train_tiny_run

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gradient_alignment.py"


def load_script() -> ModuleType:
    return load_module(SCRIPT, "gradient_alignment")


def test_matrix_and_check(
    tiny_store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """M is symmetric with a positive diagonal (T's is 1); the same windows give the same M in
    any batch size, other windows another; --check prints both models' rms errors."""
    proxy = train_tiny_run(tiny_store, tmp_path / "proxy", mixing={"name": "uniform"})
    domains = list(load_run(proxy).store.domains)
    tilt = {d: (0.5 if i == 0 else 0.5 / (len(domains) - 1)) for i, d in enumerate(domains)}
    other = train_tiny_run(
        tiny_store, tmp_path / "check", mixing={"name": "fixed", "weights": tilt}
    )
    script = load_script()
    names, m = script.alignment(proxy, windows=4, seed=0, batch=3)
    assert names == domains and m.shape == (len(domains), len(domains))
    assert np.allclose(m, m.T) and (np.diag(m) > 0).all()
    assert np.allclose(script.alignment(proxy, windows=4, seed=0)[1], m, rtol=1e-5)  # any batch
    assert not np.allclose(script.alignment(proxy, windows=4, seed=1)[1], m, rtol=1e-5)
    out = tmp_path / "m.json"
    argv = ["gradient_alignment.py", str(proxy), "--windows", "4", "--check", str(other)]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    script.main()
    text = capsys.readouterr().out
    assert "T_ij = M_ij / M_ii" in text and "rms error: own-token model" in text
    record = json.loads(out.read_text())
    assert record["domains"] == domains and np.allclose(np.diag(record["T"]), 1.0)
    monkeypatch.setattr(sys, "argv", ["gradient_alignment.py", str(proxy), "--windows", "0"])
    with pytest.raises(SystemExit, match="at least 1"):
        script.main()
