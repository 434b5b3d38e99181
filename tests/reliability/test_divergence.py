"""A diverged run fails loudly; one bad step is skipped, counted and survived.

Before: with train.lr=1e3, 36 of 40 steps had a NaN loss, the run exited 0, `uniform` printed no
warning and eval.json held bare NaN. Now a step whose loss or gradient is not finite never
updates the model or the policy, and train.max_nonfinite_steps of them in a row stop the run
with a DivergenceError (exit status 2 from the CLI) that keeps the last good checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mixlab.cli import main
from mixlab.config import RunConfig
from mixlab.errors import DivergenceError
from mixlab.train import loop
from mixlab.train.callbacks import read_metrics
from mixlab.train.checkpoint import load_checkpoint
from mixlab.train.loop import train
from tests.conftest import tiny_run_config
from tests.helpers import strict_loads


def test_a_diverging_run_stops_with_an_error_and_keeps_the_last_checkpoint(
    tiny_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tiny_run_config(tiny_store, max_steps=40, lr=1e3, warmup_steps=0, checkpoint_every=2)
    raw["mixing"] = {"name": "odm-smoothed", "odm": {"warmup_steps": 2}}
    config = tmp_path / "diverge.yaml"
    config.write_text(yaml.safe_dump(raw))
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "train.lr" in err
    records = read_metrics(tmp_path / "run")  # valid JSON on every line
    diverged = [r for r in records if r.get("train/diverged")]
    assert len(diverged) == 1 and diverged[0]["step"] < 40
    state = load_checkpoint(tmp_path / "run")
    assert not state["finished"] and state["step"] < diverged[0]["step"]
    params = torch.cat([p.flatten() for p in state["model"].values()])
    assert torch.isfinite(params).all()  # skipped steps never reached the model
    assert not (tmp_path / "run" / "eval.json").exists()


def test_one_non_finite_step_is_skipped_counted_and_the_run_finishes(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = loop.token_losses
    calls = {"n": 0}

    def poisoned(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        out = real(logits, labels)
        return out * float("nan") if calls["n"] == 5 else out  # step 5 (one micro-batch)

    monkeypatch.setattr(loop, "token_losses", poisoned)
    raw = tiny_run_config(tiny_store, max_steps=8, log_every=1, eval_every=0)
    raw["mixing"] = {"name": "odm-smoothed", "odm": {"warmup_steps": 1}}
    cfg = RunConfig.from_dict(raw)
    before: dict[str, Any] = {}

    class Snapshot(loop.Callback):
        def on_step_end(self, trainer: loop.Trainer) -> None:
            if trainer.step in (4, 5):
                before[trainer.step] = [p.detach().clone() for p in trainer.model.parameters()]

    trainer = train(cfg, tmp_path / "run", callbacks=[Snapshot()])
    assert trainer.nonfinite_steps == 1
    for a, b in zip(before[4], before[5], strict=True):  # step 5 changed nothing
        assert torch.equal(a, b)
    records = {r["step"]: r for r in read_metrics(tmp_path / "run") if "train/loss" in r}
    assert records[5]["train/loss"] is None and records[5]["train/nonfinite_steps"] == 1
    assert records[8]["train/loss"] is not None and load_checkpoint(tmp_path / "run")["finished"]
    strict_loads((tmp_path / "run" / "eval.json").read_text())


def test_the_limit_is_configurable_and_stops_at_the_first_bad_step(
    tiny_store: Path, tmp_path: Path
) -> None:
    raw = tiny_run_config(tiny_store, max_steps=20, lr=1e4, warmup_steps=0)
    raw["train"]["max_nonfinite_steps"] = 1
    with pytest.raises(DivergenceError, match="max_nonfinite_steps=1"):
        train(RunConfig.from_dict(raw), tmp_path / "run")
