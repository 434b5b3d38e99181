"""The HF Trainer adapter: a stock Trainer on a tiny Llama (CPU) whose per-domain losses reach
an adaptive policy every step, the geometry checks, and exact resume from a checkpoint."""

from __future__ import annotations

import sys

import pytest
from transformers import Trainer, TrainingArguments

from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError
from mixlab.integrations import MixingController, MixtureDataset
from mixlab.integrations.hf_trainer import STATE_FILE, MixingCallback
from mixlab.model.factory import build_model

STEPS = 6


def make_trainer(store, out, *, steps=STEPS, save_steps=0, **overrides):
    shards = ShardStore(store)
    ds = MixtureDataset(shards, seq_len=16, batch_size=4, grad_accum=2, seed=2, max_steps=steps)
    controller = MixingController(
        ds, "odm-smoothed", total_steps=steps, options={"odm": {"warmup_steps": 0}}
    )
    model = build_model(
        preset="llama-tiny", vocab_size=shards.vocab_size, eos_id=shards.eos_id, max_seq_len=16
    )
    args = {
        "output_dir": str(out),
        "max_steps": steps,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "learning_rate": 3e-3,
        "logging_steps": 1,
        "save_strategy": "steps" if save_steps else "no",
        "save_steps": save_steps or 500,
        "remove_unused_columns": False,
        "ignore_data_skip": True,
        "use_cpu": True,
        "report_to": [],
        "disable_tqdm": True,
        "seed": 0,
    }
    args.update(overrides)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**args),
        train_dataset=ds,
        callbacks=[MixingCallback(controller)],
    )
    return trainer, controller


def train_logs(trainer) -> list[dict]:
    return [h for h in trainer.state.log_history if "loss" in h]


def test_trainer_feeds_per_domain_losses_to_the_policy(tiny_store, tmp_path):
    trainer, controller = make_trainer(tiny_store, tmp_path)
    last_losses = []
    original_step = controller.step

    def step():
        feedback = original_step()
        last_losses.append(float(feedback.loss_sum.sum() / feedback.token_count.sum()))
        return feedback

    controller.step = step  # type: ignore[method-assign]
    trainer.train()

    assert controller.step_count == STEPS
    assert controller.rows_observed == STEPS * 2 * 4  # every trained sequence, once
    assert controller.policy.log_values()["odm/updates"] == STEPS
    logs = train_logs(trainer)
    # The feedback is the Trainer's own loss, split by domain: same forward, same tokens.
    assert [h["loss"] for h in logs] == pytest.approx(last_losses, rel=1e-5)
    noise = controller.domains.index("noise")
    assert logs[-1]["mix/weight/noise"] == controller.policy.weights()[noise]
    assert list(controller.dataset.weights()) == list(controller.policy.weights())
    assert abs(controller.policy.weights() - 0.25).max() > 1e-3  # the mixture moved
    assert all(f"domain/{d}/epochs" in logs[-1] for d in controller.domains)


def test_resume_from_a_trainer_checkpoint_is_exact(tiny_store, tmp_path):
    full, full_controller = make_trainer(tiny_store, tmp_path / "a", steps=8, save_steps=4)
    full.train()
    resumed, resumed_controller = make_trainer(tiny_store, tmp_path / "a", steps=8, save_steps=4)
    assert (tmp_path / "a" / "checkpoint-4" / STATE_FILE).is_file()
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-4"))

    def curve(trainer):
        return [(h["step"], h["loss"], h["mix/weight/code"]) for h in train_logs(trainer)]

    assert curve(resumed) == curve(full)
    assert list(resumed_controller.policy.weights()) == list(full_controller.policy.weights())
    assert resumed_controller.dataset.stats() == full_controller.dataset.stats()


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"per_device_train_batch_size": 2}, "per_device_train_batch_size"),
        ({"remove_unused_columns": True}, "remove_unused_columns"),
    ],
)
def test_mismatched_trainer_arguments_are_named(tiny_store, tmp_path, override, field):
    trainer, _ = make_trainer(tiny_store, tmp_path, **override)
    with pytest.raises(ConfigError, match=field):
        trainer.train()


def test_resume_without_ignore_data_skip_is_refused(tiny_store, tmp_path):
    first, _ = make_trainer(tiny_store, tmp_path, steps=4, save_steps=2)
    first.train()
    again, _ = make_trainer(tiny_store, tmp_path, steps=4, save_steps=2, ignore_data_skip=False)
    with pytest.raises(ConfigError, match="ignore_data_skip=True"):
        again.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


def test_missing_accelerate_names_the_extra(tiny_store, monkeypatch):
    controller = MixingController(
        MixtureDataset(tiny_store, seq_len=16, batch_size=2), "uniform", total_steps=2
    )
    monkeypatch.setitem(sys.modules, "accelerate", None)
    with pytest.raises(ConfigError, match=r"pip install 'mixlab\[hf-trainer\]'"):
        MixingCallback(controller)
