"""train.branch_from / train.schedule_steps: a run that starts from a trunk's state at step b."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mixlab.config import RunConfig
from mixlab.errors import ConfigError
from mixlab.train.callbacks import read_metrics
from mixlab.train.checkpoint import load_checkpoint
from mixlab.train.loop import train
from tests.conftest import tiny_run_config
from tests.helpers import train_losses

T, B = 12, 4


def run(store: Path, out: Path, mixing: str = "uniform", **train_options: Any) -> Path:
    raw = tiny_run_config(store, **{"max_steps": T, **train_options})
    raw["mixing"] = {"name": mixing}
    cfg = RunConfig.from_dict(raw)
    cfg.validate()
    train(cfg, out)
    return out


def eval_losses(run_dir: Path) -> dict[int, float]:
    key = "eval/mean_logppl"
    return {r["step"]: r[key] for r in read_metrics(run_dir) if key in r}


def test_schedule_steps_gives_a_short_run_the_long_runs_learning_rate(
    tiny_store: Path, tmp_path: Path
) -> None:
    full = run(tiny_store, tmp_path / "full")
    trunk = run(tiny_store, tmp_path / "trunk", max_steps=B, schedule_steps=T)
    lr = {r["step"]: r["train/lr"] for r in read_metrics(full) if "train/lr" in r}
    lr_trunk = {r["step"]: r["train/lr"] for r in read_metrics(trunk) if "train/lr" in r}
    assert lr_trunk and all(lr[s] == v for s, v in lr_trunk.items())
    assert all(train_losses(full)[s] == v for s, v in train_losses(trunk).items())


def test_a_branch_at_the_trunks_mixture_is_the_full_run(tiny_store: Path, tmp_path: Path) -> None:
    full = run(tiny_store, tmp_path / "full")
    trunk = run(tiny_store, tmp_path / "trunk", max_steps=B, schedule_steps=T)
    branch = run(tiny_store, tmp_path / "branch", branch_from=str(trunk))
    assert train_losses(branch) == train_losses(full)  # bit for bit, trunk rows included
    full_evals, branch_evals = eval_losses(full), eval_losses(branch)
    assert B in branch_evals  # the trunk's final eval, copied
    assert {s: branch_evals[s] for s in full_evals} == full_evals
    assert load_checkpoint(branch / "checkpoint.pt")["step"] == T


def test_a_branch_with_another_mixture_shares_the_trunk_only(
    tiny_store: Path, tmp_path: Path
) -> None:
    trunk = run(tiny_store, tmp_path / "trunk", max_steps=B, schedule_steps=T)
    natural = run(tiny_store, tmp_path / "natural", "natural", branch_from=str(trunk))
    uniform = run(tiny_store, tmp_path / "uniform", "uniform", branch_from=str(trunk))
    a, b = train_losses(natural), train_losses(uniform)
    assert all(a[s] == b[s] for s in a if s <= B)  # the shared trunk
    assert any(a[s] != b[s] for s in a if s > B)  # then each its own mixture
    weights = [r for r in read_metrics(natural) if "mix/weight/code" in r]
    assert weights[-1]["mix/weight/code"] != pytest.approx(1 / 3)
    # the checkpoint then resumes like any run's (the trunk is not read again)
    assert load_checkpoint(natural / "checkpoint.pt")["step"] == T


def test_refusals(tiny_store: Path, tmp_path: Path) -> None:
    trunk = run(tiny_store, tmp_path / "trunk", max_steps=B, schedule_steps=T)
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        run(tiny_store, tmp_path / "a", branch_from=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"train.lr: trunk 0.003, this run 0.001"):
        run(tiny_store, tmp_path / "b", branch_from=str(trunk), lr=1e-3)
    with pytest.raises(ConfigError, match="LR schedule's horizon: trunk 12 steps, this run 16"):
        run(tiny_store, tmp_path / "c", branch_from=str(trunk), max_steps=16)
    with pytest.raises(ConfigError, match="model: trunk"):
        raw = tiny_run_config(tiny_store, max_steps=T, branch_from=str(trunk))
        raw["model"] = {"preset": "llama-tiny", "overrides": {"num_hidden_layers": 1}}
        train(RunConfig.from_dict(raw), tmp_path / "d")
    plain = run(tiny_store, tmp_path / "plain")  # ends at T: nothing left to branch into
    with pytest.raises(ConfigError, match="ends at step 12, not before"):
        run(tiny_store, tmp_path / "e", branch_from=str(plain))
    with pytest.raises(ConfigError, match="ends the LR schedule before"):
        run(tiny_store, tmp_path / "f", schedule_steps=T - 1)
