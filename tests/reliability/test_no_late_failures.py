"""What can be known before step 1 fails before step 1; a failing eval loses no steps; nothing
is silently ignored; resuming a finished run changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixlab.config import RunConfig
from mixlab.errors import ConfigError
from mixlab.train.callbacks import read_metrics
from mixlab.train.checkpoint import load_checkpoint
from mixlab.train.loop import Trainer, train
from tests.conftest import tiny_run_config


def _cfg(store: Path, **train_options: object) -> RunConfig:
    cfg = RunConfig.from_dict(tiny_run_config(store, **train_options))
    cfg.validate()
    return cfg


def test_an_eval_budget_below_one_window_is_an_error_at_load() -> None:
    with pytest.raises(ConfigError, match=r"eval\.max_tokens_per_domain=16 is below one window"):
        RunConfig.load(None, ["data.seq_len=32", "eval.max_tokens_per_domain=16"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["mixing.name=uniform", "mixing.weights={a: 1}"], r"mixing\.weights: an option of fixed"),
        (["mixing.name=odm", "mixing.policy_in=p.acodm.pt"], r"mixing\.policy_in: an option of"),
        (["mixing.name=natural", "mixing.weights_file=w.json"], r"mixing\.weights_file"),
    ],
)
def test_options_of_another_policy_are_errors_not_ignored(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig.load(None, overrides)


def test_a_failing_eval_keeps_the_trained_steps(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tiny_store, max_steps=10, eval_every=7, checkpoint_every=0)
    real = Trainer.run_eval

    def broken(self: Trainer) -> object:
        if self.step == 7:
            raise RuntimeError("eval broke")
        return real(self)

    monkeypatch.setattr(Trainer, "run_eval", broken)
    with pytest.raises(RuntimeError, match="eval broke"):
        train(cfg, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run")["step"] == 7  # saved on the way out
    monkeypatch.setattr(Trainer, "run_eval", real)
    train(cfg, tmp_path / "run", resume=True)
    assert load_checkpoint(tmp_path / "run")["finished"]


def test_the_last_steps_are_saved_before_the_final_eval(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tiny_store, max_steps=5, eval_every=0, checkpoint_every=0)

    def broken(self: Trainer) -> object:
        raise MemoryError("no room for the eval")

    monkeypatch.setattr(Trainer, "run_eval", broken)
    with pytest.raises(MemoryError):
        train(cfg, tmp_path / "run")
    state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 5 and not state["finished"]


def test_resuming_a_finished_run_adds_no_second_final_eval(
    tiny_store: Path, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_store, max_steps=4, eval_every=0)
    train(cfg, tmp_path / "run")
    before = read_metrics(tmp_path / "run")
    trainer = train(cfg, tmp_path / "run", resume=True)
    assert trainer.last_eval is None and read_metrics(tmp_path / "run") == before
