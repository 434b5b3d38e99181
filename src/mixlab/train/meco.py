"""MeCo inside the trainer (arXiv 2501.01956, METHODS.md §4): its logs and the s_c copy.

The data side of MeCo is the :class:`~mixlab.sampling.documents.DocumentSampler` (prefixed
documents until step s_c, plain ones after). :class:`MecoCallback` adds the rest to a run:

* every train record gets the MeCo statistics of its window (:class:`~mixlab.model.meco.
  MecoLog`: phase, context and loss tokens per step, metadata and padding shares, totals);
* at step s_c the run is checkpointed and a copy of that checkpoint is kept as
  ``checkpoint_condition_end.pt`` (the conditioned model, before the cooldown).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixlab.files import copy_file
from mixlab.model.meco import MecoLog
from mixlab.sampling.documents import DocumentSampler
from mixlab.train.callbacks import Callback
from mixlab.train.run_folder import RunFolder

if TYPE_CHECKING:
    from mixlab.train.loop import Trainer

log = logging.getLogger(__name__)


class MecoCallback(Callback):
    """MeCo statistics in the train records; checkpoint and copy at the end of conditioning."""

    def __init__(self, sampler: DocumentSampler) -> None:
        self.sampler = sampler
        self._log: MecoLog | None = None
        self._copied = False  # the s_c copy is made by the first checkpoint at s_c

    def on_train_start(self, trainer: Trainer) -> None:
        self._log = MecoLog(self.sampler, trainer.step)

    def log_values(self, trainer: Trainer) -> dict[str, Any]:
        assert self._log is not None, "on_train_start was not called"
        return self._log.record(trainer.step)

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.step == self.sampler.condition_steps:
            trainer.save()  # on_checkpoint keeps the copy

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        if trainer.step != self.sampler.condition_steps or self._copied:
            return
        self._copied = True
        if trainer.dist.is_main:
            kept = copy_file(path, path.with_name(RunFolder.CONDITION_END))
            log.info("meco: conditioning ends at step %d; kept %s", trainer.step, kept.name)
