"""Each adapter example in examples/ runs end to end for a few steps on the tiny store."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # for their shared _common.py
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["plain_pytorch", "hf_trainer", "lightning_trainer"])
def test_example_runs_a_few_steps(name, tiny_store, tmp_path, monkeypatch, capsys):
    example = load_example(name, monkeypatch)
    argv = ["--store", str(tiny_store), "--steps", "4", "--seq-len", "16", "--batch-size", "2"]
    values = example.main([*argv, "--log-every", "2", "--out", str(tmp_path / "out")])
    weights = [v for k, v in values.items() if k.startswith("mix/weight/")]
    assert len(weights) == 4 and math.isclose(sum(weights), 1.0, abs_tol=1e-9)
    assert any(k.startswith("domain/") and k.endswith("/train_loss") for k in values)
    assert "step    4" in capsys.readouterr().out
