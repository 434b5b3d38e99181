"""Named hooks around the training loop, and the metric sinks built on them.

The loop calls, in order: ``on_train_start`` once, ``on_log`` with every record it logs (train
records every ``train.log_every`` steps, eval records after each validation pass), and
``on_train_end`` once. Records are flat dicts with a ``step`` and namespaced keys:
``train/loss``, ``train/lr``, ``train/tokens_per_s``, ``mix/weight/<domain>``,
``mix/achieved/<domain>``, ``domain/<domain>/train_loss``, ``eval/<domain>/ppl``,
``eval/mean_ppl`` ...

:class:`JsonlSink` (always on) appends them to ``metrics.jsonl``; :class:`TensorBoardSink`
(``train.tensorboard=true``, extra ``mixlab[tensorboard]``) mirrors the numeric ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

from mixlab.errors import ConfigError
from mixlab.files import dumps_json, write_text

METRICS_NAME = "metrics.jsonl"


class Callback(Protocol):
    def on_train_start(self, step: int) -> None: ...
    def on_log(self, record: dict[str, Any]) -> None: ...
    def on_train_end(self, step: int) -> None: ...


class JsonlSink:
    """Append one JSON object per record to ``<run>/metrics.jsonl`` (flushed per line).

    On resume, records from steps after the checkpoint are dropped first, so the file always
    describes one consistent run.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / METRICS_NAME
        self._fh: Any = None

    def on_train_start(self, step: int) -> None:
        if self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
            write_text(self.path, "".join(_dumps(r) + "\n" for r in kept))
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)

    def on_log(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            raise RuntimeError("JsonlSink.on_log before on_train_start")
        self._fh.write(_dumps(record) + "\n")
        self._fh.flush()

    def on_train_end(self, step: int) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class TensorBoardSink:
    """Mirror numeric metrics to TensorBoard event files under ``<run>/tb``."""

    def __init__(self, run_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard package missing
            raise ConfigError(
                "train.tensorboard=true needs TensorBoard: pip install 'mixlab[tensorboard]'"
            ) from exc
        self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))

    def on_train_start(self, step: int) -> None:
        pass

    def on_log(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(key, value, step)

    def on_train_end(self, step: int) -> None:
        self._writer.close()


def _dumps(record: dict[str, Any]) -> str:
    # NaN/inf are not JSON; write them as null so every line stays parseable.
    return dumps_json(record, sort_keys=False)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl`` (a run folder or the file); a torn last line is ignored."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_NAME
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
