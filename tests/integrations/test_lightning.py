"""The Lightning adapter: a plain LightningModule around a tiny Llama (CPU) with gradient
accumulation; per-domain losses reach the policy each optimiser step; checkpoints resume the
mixture exactly; geometry mismatches and a missing Lightning install are named."""

from __future__ import annotations

import importlib
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError
from mixlab.integrations import MixingController, MixtureDataset
from mixlab.integrations.lightning import MixingCallback
from mixlab.model.factory import build_model


class TinyLM(pl.LightningModule):
    def __init__(self, store: ShardStore) -> None:
        super().__init__()
        self.model = build_model(
            preset="llama-tiny", vocab_size=store.vocab_size, eos_id=store.eos_id, max_seq_len=16
        )

    def training_step(self, batch, batch_idx):
        return self.model(input_ids=batch["input_ids"], labels=batch["labels"]).loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def fit(store, root, *, steps=6, ckpt_path=None, loader_batch=4, every=0):
    pl.seed_everything(0, verbose=False)
    shards = ShardStore(store)
    ds = MixtureDataset(shards, seq_len=16, batch_size=4, grad_accum=2, seed=2)
    controller = MixingController(
        ds, "odm-smoothed", total_steps=steps, options={"odm": {"warmup_steps": 0}}
    )
    callbacks: list = [MixingCallback(controller)]
    if every:
        callbacks.append(
            pl.callbacks.ModelCheckpoint(
                dirpath=root, every_n_train_steps=every, save_top_k=-1, filename="{step}"
            )
        )
    trainer = pl.Trainer(
        max_steps=steps,
        accumulate_grad_batches=2,
        callbacks=callbacks,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=bool(every),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    module = TinyLM(shards)
    trainer.fit(module, DataLoader(ds, batch_size=loader_batch), ckpt_path=ckpt_path)
    return trainer, controller, module


def test_lightning_steps_update_the_mixture(tiny_store, tmp_path):
    trainer, controller, _ = fit(tiny_store, tmp_path)
    assert controller.step_count == trainer.global_step == 6
    assert controller.rows_observed == 6 * 2 * 4
    assert controller.policy.log_values()["odm/updates"] == 6
    feedback = controller.last_feedback
    assert feedback is not None and feedback.token_count.sum() == 2 * 4 * 15
    assert abs(controller.dataset.weights() - 0.25).max() > 1e-3  # the mixture moved
    logged = trainer.callback_metrics
    assert float(logged["mix/weight/code"]) == pytest.approx(controller.policy.weights()[0])


def test_resume_from_a_lightning_checkpoint_is_exact(tiny_store, tmp_path):
    _, full, full_module = fit(tiny_store, tmp_path, steps=8, every=4)
    ckpt = tmp_path / "step=4.ckpt"
    assert ckpt.is_file()
    _, resumed, resumed_module = fit(tiny_store, tmp_path / "r", steps=8, ckpt_path=ckpt)
    np.testing.assert_array_equal(resumed.policy.weights(), full.policy.weights())
    assert resumed.dataset.stats() == full.dataset.stats()
    for a, b in zip(full_module.parameters(), resumed_module.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_loader_batch_size_unlike_the_datasets_is_named(tiny_store, tmp_path):
    with pytest.raises(ConfigError, match="batch_size=2"):
        fit(tiny_store, tmp_path, loader_batch=2)


def test_missing_lightning_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "mixlab.integrations.lightning")
    with pytest.raises(ConfigError, match=r"pip install 'mixlab\[lightning\]'"):
        importlib.import_module("mixlab.integrations.lightning")
