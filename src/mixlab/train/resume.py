"""Train, resume or skip a run folder in this process: :func:`train_in_folder`.

What to do with a folder is decided by :func:`mixlab.train.run_folder.next_action` (start an
empty one, skip a finished one, resume an unfinished one, refuse one made with other
settings). ``existing`` says what an existing folder means to the caller:

* ``"refuse"`` (``mixlab train``): a folder that holds a checkpoint is an error;
* ``"resume"`` (``mixlab train --resume``): continue it with the config saved in it (the
  given one is ignored, with a warning), on any world size that splits its global batch
  (:func:`fit_world_size`); a finished run is left as it is (no second final eval);
* ``"reuse"`` (``mixlab doremi``'s reference and proxy runs): ``next_action`` decides, with
  the checkpoint's ``config`` as the folder's settings.

``mixlab compare`` runs each run as its own process and asks ``next_action`` itself (its
settings are ``planned_config.yaml``, ``cost.json`` marks a finished run). Under torchrun
every rank calls :func:`train_in_folder`; rank 0 writes ``config.yaml`` and ``eval.json``.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mixlab.config import RunConfig, resolved, saved_config
from mixlab.errors import ConfigError, ResumeError
from mixlab.files import write_json
from mixlab.train.branch import start_branch
from mixlab.train.checkpoint import load_checkpoint
from mixlab.train.evaluation import eval_record
from mixlab.train.run_folder import RunFolder, next_action

if TYPE_CHECKING:
    from mixlab.train.callbacks import Callback
    from mixlab.train.loop import Trainer

log = logging.getLogger(__name__)

Existing = Literal["refuse", "resume", "reuse"]
TrainerFactory = Callable[[RunConfig, Path, Sequence["Callback"]], "Trainer"]


def train_in_folder(
    cfg: RunConfig,
    run_dir: str | Path,
    make_trainer: TrainerFactory,
    *,
    existing: Existing = "refuse",
    callbacks: Sequence[Callback] = (),
) -> Trainer | None:
    """Start, resume or skip the run in ``run_dir``; the trainer, or None when skipped."""
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    state: dict[str, Any] | None = None
    if existing == "resume":
        state = load_checkpoint(folder.checkpoint)
        saved = saved_config(state["config"])
        if saved.to_dict() != cfg.to_dict():
            log.warning(
                "resuming with the config saved in %s (command-line config ignored)",
                folder.checkpoint,
            )
        cfg = fit_world_size(saved, int(state.get("world_size", 1)))
    elif folder.checkpoint.exists():
        if existing == "refuse":
            raise ConfigError(
                f"{run_dir} already holds a run; continue it with --resume or choose a new --out"
            )
        state = load_checkpoint(folder.checkpoint)
        action = next_action(
            run_dir,
            resolved(state["config"]),
            cfg.to_dict(),
            finished=bool(state.get("finished")),
            hint="rerun with the same config, or choose a new --out",
        )
        if action == "skip":
            log.info("%s finished at step %d: reused", run_dir, state["step"])
            return None
    trainer = make_trainer(cfg, run_dir, callbacks)
    if trainer.dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(folder.config)
    if state is None and cfg.train.branch_from is not None:  # a new run from a trunk's state
        start_branch(trainer)
    if state is not None:
        trainer.load_state_dict(state)
        if state.get("finished"):  # nothing to train or evaluate again (eval.json is there)
            log.info("%s already finished at step %d: nothing to do", run_dir, trainer.step)
            return trainer
        log.info("%s: resuming at step %d", run_dir, trainer.step)
    trainer.fit()
    if trainer.dist.is_main:
        last = trainer.last_eval
        record = eval_record(last, trainer.step) if last is not None else {}
        write_json(folder.eval, record, nonfinite_key="nonfinite")
    return trainer


def fit_world_size(cfg: RunConfig, saved_world_size: int) -> RunConfig:
    """Keep the global batch when resuming on another number of ranks (grad_accum absorbs it).

    The sampler's step is defined by the global number of micro-batches M = world_size x
    grad_accum, so any world size that divides M continues the same data order exactly.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == saved_world_size:
        return cfg
    total = saved_world_size * cfg.train.grad_accum
    if total % world_size:
        raise ResumeError(
            f"the checkpoint was trained on {saved_world_size} rank(s) x train.grad_accum="
            f"{cfg.train.grad_accum} = {total} micro-batches per step; {world_size} ranks "
            f"cannot split that evenly. Resume with a number of ranks that divides {total}"
        )
    cfg = copy.deepcopy(cfg)
    cfg.train.grad_accum = total // world_size
    log.warning(
        "resuming a %d-rank run on %d ranks: train.grad_accum %d -> %d keeps the global batch",
        saved_world_size,
        world_size,
        total // saved_world_size,
        cfg.train.grad_accum,
    )
    return cfg
