"""Adaptive domain mixing inside a Hugging Face ``Trainer`` (extra ``mixlab[hf-trainer]``).

Usage::

    dataset = MixtureDataset("shards/", seq_len=128, batch_size=8, max_steps=200)
    controller = MixingController(dataset, "odm-smoothed", total_steps=200)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(output_dir, max_steps=200, per_device_train_batch_size=8,
                               remove_unused_columns=False, ignore_data_skip=True, ...),
        train_dataset=dataset,
        callbacks=[MixingCallback(controller)],
    )
    trainer.train()

What happens per optimiser step
    The Trainer forwards each micro-batch; :class:`~mixlab.integrations._capture.LossCapture`
    removes ``domain_id`` from the model inputs and adds the micro-batch's per-domain loss sums
    to the controller (one no-grad fp32 cross-entropy over the logits). ``on_step_end`` then
    calls ``controller.step()``: ``policy.update(feedback)`` and new weights for the dataset.
    Weights, achieved shares and per-domain train losses are added to the Trainer's logs
    (``state.log_history``, ``trainer_state.json``) as ``mix/weight/<domain>`` etc. The
    Trainer calls its reporting integrations (``report_to``: TensorBoard, W&B, ...) before user
    callbacks, so those do not receive the ``mix/*`` keys; read them from the log history.

Timing
    accelerate's data loader prefetches one batch, so the weights computed at step t drive the
    data from step t + 2 on (one step later than in ``mixlab train``). The feedback itself is
    exact: each micro-batch's losses are matched with its own ``domain_id``.

Checkpoints and resume
    ``on_save`` writes ``mixlab_mixing.pt`` (policy, dataset position, counters) into the
    Trainer's ``checkpoint-<step>`` folder. ``trainer.train(resume_from_checkpoint=...)``
    restores it; the Trainer must not skip batches itself (``ignore_data_skip=True``), because
    the dataset resumes at the exact sequence after the last one trained on, prefetched ones
    included. A checkpoint outside ``output_dir`` needs ``MixingCallback(controller,
    resume_from=that_folder)``.

Geometry is checked at ``on_train_begin``: ``per_device_train_batch_size`` and
``gradient_accumulation_steps`` must equal the dataset's ``batch_size`` and ``grad_accum``,
``dataloader_num_workers`` must be 0 (see :mod:`mixlab.integrations.torch_dataset`) and
``remove_unused_columns`` False (else the Trainer's collator drops ``domain_id``).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from mixlab.errors import ConfigError, ResumeError
from mixlab.integrations._capture import LossCapture
from mixlab.integrations.controller import MixingController

logger = logging.getLogger(__name__)

STATE_FILE = "mixlab_mixing.pt"


class MixingCallback(TrainerCallback):
    """A ``TrainerCallback`` that feeds per-domain losses to a mixing policy every step.

    Args:
        controller: ties the policy to the ``MixtureDataset`` passed as ``train_dataset``.
        resume_from: checkpoint folder to restore the mixing state from when the Trainer
            resumes (default: ``<output_dir>/checkpoint-<global_step>``).
    """

    def __init__(self, controller: MixingController, *, resume_from: str | Path | None = None):
        try:  # the Trainer itself refuses to run without it
            importlib.import_module("accelerate")
        except ImportError as exc:
            raise ConfigError(
                "the HF Trainer adapter needs accelerate: pip install 'mixlab[hf-trainer]'"
            ) from exc
        self.controller = controller
        self.resume_from = Path(resume_from) if resume_from is not None else None
        self._capture: LossCapture | None = None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        self._check_geometry(args)
        if state.global_step > 0:
            self._resume(args, state)
        if model is None:
            raise ConfigError("MixingCallback: the Trainer passed no model to on_train_begin")
        self._capture = LossCapture(self.controller, model, require_domain_id=True)

    def _check_geometry(self, args: TrainingArguments) -> None:
        ds = self.controller.dataset
        pairs = (
            ("per_device_train_batch_size", args.per_device_train_batch_size, ds.batch_size),
            ("gradient_accumulation_steps", args.gradient_accumulation_steps, ds.grad_accum),
            ("dataloader_num_workers", args.dataloader_num_workers, 0),
            # Else the Trainer's collator drops domain_id (not a forward() parameter).
            ("remove_unused_columns", args.remove_unused_columns, False),
        )
        for name, theirs, ours in pairs:
            if theirs != ours:
                raise ConfigError(
                    f"TrainingArguments.{name}={theirs}, but the MixtureDataset needs {ours}; "
                    f"set {name}={ours} (or build the dataset to match)"
                )
        if args.max_steps > 0 and args.max_steps != self.controller.total_steps:
            logger.warning(
                "TrainingArguments.max_steps=%d but the controller plans total_steps=%d; "
                "policy schedules follow total_steps",
                args.max_steps,
                self.controller.total_steps,
            )

    def _resume(self, args: TrainingArguments, state: TrainerState) -> None:
        if not args.ignore_data_skip:
            raise ConfigError(
                "resuming with mixing needs TrainingArguments(ignore_data_skip=True): the "
                "MixtureDataset resumes at the exact next sequence itself, and the Trainer "
                "would otherwise skip batches a second time"
            )
        folder = self.resume_from or _checkpoint_dir(args, state)
        path = folder / STATE_FILE
        if not path.is_file():
            raise ResumeError(
                f"no mixing state at {path}; resume from a checkpoint written with "
                "MixingCallback, or pass MixingCallback(controller, resume_from=<folder>)"
            )
        self.controller.load(path)
        if self.controller.step_count != state.global_step:
            raise ResumeError(
                f"{path} holds mixing state of step {self.controller.step_count}, but the "
                f"Trainer resumes at step {state.global_step}"
            )
        logger.info("mixing state restored from %s (step %d)", path, state.global_step)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.controller.step()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs is None or "loss" not in logs:  # train log lines only, not eval results
            return
        values = self.controller.log_values()
        logs.update(values)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(values)  # lands in trainer_state.json

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        folder = _checkpoint_dir(args, state)
        folder.mkdir(parents=True, exist_ok=True)
        self.controller.save(folder / STATE_FILE)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._capture is not None:
            self._capture.remove()
            self._capture = None


def _checkpoint_dir(args: TrainingArguments, state: TrainerState) -> Path:
    """The folder the Trainer writes checkpoint ``state.global_step`` to."""
    return Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
