"""Ctrl-C / SIGTERM delivered at any point inside a step: the resumed run is the same run.

A signal used to raise KeyboardInterrupt wherever it landed, so the checkpoint written on the
way out held the model of step N with a sampler that had already drawn step N + 1: the resumed
run skipped a batch. Now the first signal only asks to stop; the step finishes, the checkpoint
is whole, and every later loss equals the uninterrupted run's. The signal is sent to this
process from inside the step (sampling, forward, backward, optimiser step, policy update),
from the evaluation and from a checkpoint write.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from mixlab.config import RunConfig
from mixlab.train.callbacks import Callback, read_metrics
from mixlab.train.checkpoint import load_checkpoint
from mixlab.train.loop import Trainer, train
from tests.conftest import tiny_run_config

STEPS = 12
POINTS = ("sampling", "forward", "backward", "optimizer", "policy", "eval", "checkpoint")
MIXINGS = {
    "uniform": {"name": "uniform"},
    "odm": {"name": "odm-smoothed", "odm": {"warmup_steps": 2}},
    "acodm": {"name": "acodm", "acodm": {"warmup_steps": 4, "batch_size": 2}},
}


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class SignalAt(Callback):
    """Sends SIGTERM to this process the ``nth`` time the trainer reaches ``point``."""

    def __init__(self, point: str, nth: int) -> None:
        self.point, self.nth, self.calls = point, nth, 0

    def _tick(self) -> None:
        self.calls += 1
        if self.calls == self.nth:
            _kill()

    def _wrap(self, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.point in ("sampling", "policy"):
                self._tick()
                return fn(*args, **kwargs)
            result = fn(*args, **kwargs)  # eval, checkpoint: the signal lands after the work
            self._tick()
            return result

        return wrapped

    def on_train_start(self, trainer: Trainer) -> None:
        p = self.point
        if p == "sampling":
            trainer.sampler.next_step = self._wrap(trainer.sampler.next_step)  # type: ignore[method-assign]
        elif p == "policy":
            trainer.policy.update = self._wrap(trainer.policy.update)  # type: ignore[method-assign]
        elif p == "eval":
            trainer.evaluator = self._wrap(trainer.evaluator)  # type: ignore[assignment]
        elif p == "checkpoint":
            trainer.save = self._wrap(trainer.save)  # type: ignore[method-assign]
        elif p == "forward":
            model = trainer.model  # training forwards only, not the evaluation's
            model.register_forward_pre_hook(lambda *_: self._tick() if model.training else None)
        elif p == "backward":
            first = next(trainer.model.parameters())
            first.register_hook(lambda grad: (self._tick(), grad)[1])
        elif p == "optimizer":
            trainer.optimizer.register_step_pre_hook(lambda *_: self._tick())


def _config(store: Path, mixing: dict[str, Any]) -> RunConfig:
    raw = tiny_run_config(store, max_steps=STEPS, eval_every=4, checkpoint_every=6, log_every=1)
    raw["mixing"] = mixing
    cfg = RunConfig.from_dict(raw)
    cfg.validate()
    return cfg


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_metrics(run) if "train/loss" in r}


def _interrupted_then_resumed(cfg: RunConfig, run: Path, point: str, nth: int) -> int:
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, callbacks=[SignalAt(point, nth)])
    stopped = int(load_checkpoint(run)["step"])
    state = load_checkpoint(run)
    assert state["sampler"]["step"] == stopped  # the sampler has drawn exactly the saved steps
    train(cfg, run, resume=True)
    return stopped


@pytest.fixture(scope="module")
def uninterrupted(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = {}
    for name, mixing in MIXINGS.items():
        run = tmp_path_factory.mktemp("full") / name
        train(_config(tiny_store, mixing), run)
        out[name] = _losses(run)
    return out


@pytest.mark.parametrize("point", POINTS)
def test_a_signal_anywhere_in_a_step_resumes_exactly(
    tiny_store: Path, tmp_path: Path, uninterrupted: dict[str, Any], point: str
) -> None:
    cfg = _config(tiny_store, MIXINGS["odm"])
    nth = {"eval": 1, "checkpoint": 1}.get(point, 5)  # a forward/backward per micro-batch
    stopped = _interrupted_then_resumed(cfg, tmp_path / "run", point, nth)
    assert 0 < stopped < STEPS
    assert _losses(tmp_path / "run") == uninterrupted["odm"]


@pytest.mark.parametrize("name", ["uniform", "acodm"])
def test_every_stateful_policy_resumes_exactly_after_a_signal(
    tiny_store: Path, tmp_path: Path, uninterrupted: dict[str, Any], name: str
) -> None:
    _interrupted_then_resumed(_config(tiny_store, MIXINGS[name]), tmp_path / name, "backward", 7)
    assert _losses(tmp_path / name) == uninterrupted[name]


def test_meco_document_sampler_resumes_exactly_after_a_signal(
    tiny_store: Path, tmp_path: Path
) -> None:
    raw = tiny_run_config(tiny_store, max_steps=STEPS, eval_every=0, log_every=1)
    raw["data"]["seq_len"] = 64
    raw["meco"] = {"enabled": True, "cooldown_fraction": 0.25, "max_prefix_tokens": 24}
    cfg = RunConfig.from_dict(raw)
    train(cfg, tmp_path / "full")
    _interrupted_then_resumed(cfg, tmp_path / "part", "forward", 9)
    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_whole_checkpoint(
    tiny_store: Path, tmp_path: Path
) -> None:
    cfg = _config(tiny_store, MIXINGS["uniform"])

    class TwoCtrlC(Callback):
        def on_train_start(self, trainer: Trainer) -> None:
            def twice(*_: Any) -> None:
                if trainer.step == 7:
                    os.kill(os.getpid(), signal.SIGINT)
                    os.kill(os.getpid(), signal.SIGINT)

            trainer.optimizer.register_step_pre_hook(twice)

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", callbacks=[TwoCtrlC()])
    assert load_checkpoint(tmp_path / "run")["step"] == 6  # the periodic one, not a torn one
    train(cfg, tmp_path / "run", resume=True)
    full = tmp_path / "full"
    train(cfg, full)
    assert _losses(tmp_path / "run") == _losses(full)


@pytest.mark.slow
def test_signals_at_random_points_resume_exactly(
    tiny_store: Path, tmp_path: Path, uninterrupted: dict[str, Any]
) -> None:
    rng = random.Random(0)
    for trial in range(12):
        name = rng.choice(sorted(MIXINGS))
        point = rng.choice(POINTS)
        nth = 1 if point in ("eval", "checkpoint") else rng.randint(1, 2 * STEPS - 2)
        torch.manual_seed(trial)
        run = tmp_path / f"{trial}-{name}-{point}"
        cfg = _config(tiny_store, MIXINGS[name])
        try:
            _interrupted_then_resumed(cfg, run, point, nth)
        except pytest.fail.Exception:  # the point was never reached: the run just finished
            assert load_checkpoint(run)["finished"]
        assert _losses(run) == uninterrupted[name], (name, point, nth)
