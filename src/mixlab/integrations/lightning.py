"""Adaptive domain mixing inside a Lightning ``Trainer`` (extra ``mixlab[lightning]``).

Usage::

    dataset = MixtureDataset("shards/", seq_len=128, batch_size=8)
    controller = MixingController(dataset, "odm-smoothed", total_steps=200)
    trainer = lightning.Trainer(max_steps=200, callbacks=[MixingCallback(controller)])
    trainer.fit(module, train_dataloaders=DataLoader(dataset, batch_size=dataset.batch_size))

``module`` is your ``LightningModule``; its ``training_step`` calls a Hugging Face causal LM
(or any module whose output has ``logits``) on the batch's ``input_ids`` and returns the loss,
as usual. It need not know about mixing.

What happens per optimiser step
    ``on_train_batch_start`` announces the batch's ``domain_id`` and ``labels`` to
    :class:`~mixlab.integrations._capture.LossCapture`, whose hooks on the language model add
    that micro-batch's per-domain loss sums to the controller (one no-grad fp32
    cross-entropy over the logits). When ``trainer.global_step`` advances (every
    ``accumulate_grad_batches`` batches) ``controller.step()`` runs ``policy.update`` and moves
    the dataset's weights. The weights, achieved shares and per-domain losses are logged with
    ``pl_module.log_dict`` as ``mix/weight/<domain>`` etc.

Which model is watched: ``MixingCallback(controller, model_attr="model")`` names the
attribute of the LightningModule; by default the one ``transformers.PreTrainedModel`` inside it
(or the LightningModule itself when it holds none).

Checkpoints: the controller's state (policy, dataset position after the last trained batch,
counters) is the callback's ``state_dict``, so Lightning saves it in every checkpoint and
``trainer.fit(..., ckpt_path=...)`` continues the mixture exactly. Lightning's data fetcher
prefetches one batch; the dataset position accounts for it, and new weights drive the data
from step t + 2 on, as with the HF adapter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from mixlab.errors import ConfigError
from mixlab.integrations._capture import LossCapture
from mixlab.integrations.controller import MixingController

try:
    import lightning.pytorch as pl
except ImportError as exc:  # the extra is not installed
    raise ConfigError(
        "the Lightning adapter needs Lightning: pip install 'mixlab[lightning]'"
    ) from exc

logger = logging.getLogger(__name__)


class MixingCallback(pl.Callback):
    """A Lightning ``Callback`` that feeds per-domain losses to a mixing policy every step.

    Args:
        controller: ties the policy to the ``MixtureDataset`` of the train dataloader.
        model_attr: attribute of the LightningModule holding the language model.
        log: also log the mixing values with ``pl_module.log_dict``.
    """

    def __init__(
        self, controller: MixingController, *, model_attr: str | None = None, log: bool = True
    ) -> None:
        super().__init__()
        self.controller = controller
        self.model_attr = model_attr
        self.log = log
        self._capture: LossCapture | None = None

    # ------------------------------------------------------------------ set-up
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ds = self.controller.dataset
        if trainer.accumulate_grad_batches != ds.grad_accum:
            raise ConfigError(
                f"Trainer(accumulate_grad_batches={trainer.accumulate_grad_batches}) but the "
                f"MixtureDataset has grad_accum={ds.grad_accum}; make them equal"
            )
        self._capture = LossCapture(
            self.controller, self._language_model(pl_module), require_domain_id=False
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.train_dataloader
        batch_size = getattr(loader, "batch_size", None)
        workers = getattr(loader, "num_workers", 0)
        ds = self.controller.dataset
        if batch_size is not None and batch_size != ds.batch_size:
            raise ConfigError(
                f"the train DataLoader has batch_size={batch_size} but the MixtureDataset has "
                f"batch_size={ds.batch_size}; use DataLoader(dataset, batch_size="
                "dataset.batch_size)"
            )
        if workers:
            raise ConfigError(
                f"the train DataLoader has num_workers={workers}; a MixtureDataset needs "
                "num_workers=0 (see mixlab.integrations.torch_dataset)"
            )
        if trainer.max_steps > 0 and trainer.max_steps != self.controller.total_steps:
            logger.warning(
                "Trainer(max_steps=%d) but the controller plans total_steps=%d; policy "
                "schedules follow total_steps",
                trainer.max_steps,
                self.controller.total_steps,
            )

    def _language_model(self, pl_module: pl.LightningModule) -> torch.nn.Module:
        if self.model_attr is not None:
            model = getattr(pl_module, self.model_attr, None)
            if not isinstance(model, torch.nn.Module):
                raise ConfigError(
                    f"MixingCallback(model_attr={self.model_attr!r}): the LightningModule has "
                    "no such torch module"
                )
            return model
        from transformers import PreTrainedModel

        found: list[tuple[str, torch.nn.Module]] = []
        for name, module in pl_module.named_modules():
            nested = any(name.startswith(f"{outer}.") for outer, _ in found)
            if isinstance(module, PreTrainedModel) and not nested:
                found.append((name, module))
        if len(found) > 1:
            raise ConfigError(
                f"the LightningModule holds several Hugging Face models "
                f"({', '.join(n for n, _ in found)}); name the trained one with "
                "MixingCallback(controller, model_attr=...)"
            )
        return found[0][1] if found else pl_module

    # ------------------------------------------------------------------ per batch
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(batch, Mapping) or "domain_id" not in batch:
            raise ConfigError(
                "a training batch has no 'domain_id': train on a mixlab MixtureDataset with "
                "the default collate function"
            )
        assert self._capture is not None
        self._capture.expect(batch)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # global_step counts optimiser steps; it stands still during gradient accumulation.
        # (The controller's own count survives resume; global_step is restored after fit start.)
        if trainer.global_step == self.controller.step_count:
            return
        self.controller.step()
        if self.log:
            pl_module.log_dict(self.controller.log_values(), on_step=True, on_epoch=False)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._capture is not None:
            self._capture.remove()
            self._capture = None

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return self.controller.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.controller.load_state_dict(state_dict)
