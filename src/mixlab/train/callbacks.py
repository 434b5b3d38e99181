"""Named hooks around the training loop, and the metric sinks and exporters built on them.

A callback derives from :class:`Callback` and overrides the hooks it needs (all are no-ops by
default). The :class:`~mixlab.train.loop.Trainer` calls them in this order::

    on_train_start(trainer)                     once, before the first step
    per step:  on_step_end(trainer)             after the step and its mixture update
               log_values(trainer)              at log steps: extra scalars for the record
               on_log(trainer, record)          every record logged (train and eval; rank 0)
               on_eval_end(trainer, result)     after each validation pass
               on_checkpoint(trainer, path)     after each checkpoint is on disk
    on_error(trainer, error)                    when fit() leaves through an exception
    on_close(trainer)                           always, last (in ``finally``)

Hooks run on every rank, except ``on_log``, which sees the records rank 0 writes; a callback
that writes files checks ``trainer.dist.is_main``. Records are flat dicts with a ``step`` and
namespaced keys: ``train/loss``, ``train/lr``, ``mix/weight/<domain>``, ``mix/achieved/<domain>``,
``domain/<domain>/train_loss``, ``eval/<domain>/ppl``, ``eval/mean_ppl`` ...

:class:`JsonlSink` (always on, rank 0) appends them to ``metrics.jsonl``;
:class:`TensorBoardSink` (``train.tensorboard=true``, extra ``mixlab[tensorboard]``) mirrors the
numeric ones; :class:`PolicyFileExport` writes a policy that ``needs.exports_policy_file``
(AC-ODM's actor) next to every checkpoint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixlab.errors import ConfigError
from mixlab.files import dumps_json, write_text
from mixlab.train.run_folder import RunFolder

if TYPE_CHECKING:
    from mixlab.eval.perplexity import EvalResult
    from mixlab.train.loop import Trainer


class Callback:
    """Base class of the loop's hooks; every hook does nothing unless overridden."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first step of ``fit()`` (``trainer.step`` is the resume step)."""

    def log_values(self, trainer: Trainer) -> dict[str, Any]:
        """Extra scalars merged into the train record of a log step."""
        return {}

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """A train or eval record, as written to ``metrics.jsonl`` (rank 0 only)."""

    def on_step_end(self, trainer: Trainer) -> None:
        """After an optimiser step and its mixture update (before its log line)."""

    def on_eval_end(self, trainer: Trainer, result: EvalResult) -> None:
        """After a validation pass."""

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        """After a checkpoint was written to ``path`` (on every rank, after the barrier)."""

    def on_error(self, trainer: Trainer, error: BaseException) -> None:
        """``fit()`` is leaving through ``error`` (after the interrupt checkpoint, if any)."""

    def on_close(self, trainer: Trainer) -> None:
        """Always called last, whether ``fit()`` finished or failed: release resources."""


class JsonlSink(Callback):
    """Append one JSON object per record to ``path`` (``<run>/metrics.jsonl``), flushed per line.

    On resume, records from steps after the checkpoint are dropped first, so the file always
    describes one consistent run.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh: Any = None

    def open(self, step: int) -> None:
        """Keep the records up to ``step`` and open the file for appending."""
        if self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
            write_metrics(self.path, kept)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            raise RuntimeError(f"{self.path}: write before open")
        self._fh.write(_dumps(record) + "\n")
        self._fh.flush()

    def on_train_start(self, trainer: Trainer) -> None:
        self.open(trainer.step)

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.write(record)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def on_close(self, trainer: Trainer) -> None:
        self.close()


class TensorBoardSink(Callback):
    """Mirror numeric metrics to TensorBoard event files under ``<run>/tb``."""

    def __init__(self, run_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard package missing
            raise ConfigError(
                "train.tensorboard=true needs TensorBoard: pip install 'mixlab[tensorboard]'"
            ) from exc
        self._writer = SummaryWriter(log_dir=str(RunFolder(run_dir).tensorboard))

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(key, value, step)

    def on_close(self, trainer: Trainer) -> None:
        self._writer.close()


class PolicyFileExport(Callback):
    """Write the policy's portable file (``policy.save_policy_file``) with every checkpoint."""

    def __init__(self, path: str | Path, provenance: dict[str, Any]) -> None:
        self.path = Path(path)
        self.provenance = provenance

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        if trainer.dist.is_main:
            trainer.policy.save_policy_file(self.path, self.provenance)


def _dumps(record: dict[str, Any]) -> str:
    # NaN/inf are not JSON; write them as null so every line stays parseable.
    return dumps_json(record, sort_keys=False)


def write_metrics(path: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """Write ``records`` as a metrics.jsonl file (atomically), one JSON object per line."""
    write_text(Path(path), "".join(_dumps(r) + "\n" for r in records))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl`` (a run folder or the file); a torn last line is ignored."""
    p = Path(path)
    if p.is_dir():
        p = RunFolder(p).metrics
    records = []
    with open(p, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write
    return records
