"""One rank of the 2-process gloo tests (tests/train/test_distributed.py).

Run as ``python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_worker.py SPEC``;
SPEC is a JSON file ``{"config": {...}, "run_dir": ..., "resume": bool, "kill_at": int|null}``.
Every rank records, per step, the weights its sampler will draw the next step with and the
step's (all-reduced) loss into ``<run_dir>/rank<r>.json``; ``kill_at`` interrupts every rank
after that step like Ctrl-C does (a stop between steps; the trainer saves a checkpoint on the
way out).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from mixlab.config import RunConfig
from mixlab.train.callbacks import Callback
from mixlab.train.loop import Trainer, train


class StopAt(Callback):
    """Raise KeyboardInterrupt at the end of step ``step``, where Ctrl-C stops a run."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.step == self.step:
            raise KeyboardInterrupt


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    cfg = RunConfig.from_dict(spec["config"])
    cfg.validate()
    rank = int(os.environ.get("RANK", "0"))
    records: list[dict] = []
    original = Trainer.run_step

    def run_step(self: Trainer) -> dict:
        out = original(self)
        records.append(
            {"step": self.step, "weights": self.sampler.weights().tolist(), "loss": out["loss"]}
        )
        return out

    Trainer.run_step = run_step  # type: ignore[method-assign]
    with contextlib.suppress(KeyboardInterrupt):  # kill_at: stopped like Ctrl-C
        train(
            cfg,
            spec["run_dir"],
            resume=spec.get("resume", False),
            callbacks=[StopAt(spec.get("kill_at"))],
        )
    name = f"rank{rank}{'-resumed' if spec.get('resume') else ''}.json"
    (Path(spec["run_dir"]) / name).write_text(json.dumps(records))


if __name__ == "__main__":
    main()
