"""The run folder: one place that names every file a run writes or is judged by.

A run folder is what ``mixlab train --out DIR`` (and every run of ``mixlab doremi`` and
``mixlab compare``) fills::

    checkpoint.pt                 the run's whole state; resume continues it exactly
    config.yaml                   the resolved config it was started with
    metrics.jsonl                 one JSON record per log step and per eval
    eval.json                     the final validation (per-domain loss/ppl, aggregates)
    tb/                           TensorBoard events (train.tensorboard=true)
    checkpoint_condition_end.pt   MeCo: the model at the end of conditioning (step s_c)
    policy.acodm.pt               AC-ODM: the portable policy file (actor, critic, state)
    alpha_trajectory.jsonl        DoReMi proxy: alpha_t, avg alpha_t and lambda_t per step
    eval_modes.json               mixlab eval --mode: per-document eval by MeCo mode
    lm_eval.json                  mixlab eval --lm-eval: lm-evaluation-harness results
    planned_config.yaml           mixlab compare: the config the suite asked for
    run.log                       mixlab compare: the run's output
    cost.json                     mixlab compare: wall-clock, tokens, peak RSS once finished
    cost.partial.json             mixlab compare: the cost of attempts that did not finish

``RunFolder(path).checkpoint`` is the path of a file; ``RunFolder.CHECKPOINT`` its name (for
globbing, temporaries and copies next to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder's files (nothing is created or read here)."""

    path: Path

    CHECKPOINT: ClassVar[str] = "checkpoint.pt"
    CONFIG: ClassVar[str] = "config.yaml"
    METRICS: ClassVar[str] = "metrics.jsonl"
    EVAL: ClassVar[str] = "eval.json"
    TENSORBOARD: ClassVar[str] = "tb"
    CONDITION_END: ClassVar[str] = "checkpoint_condition_end.pt"
    POLICY_FILE: ClassVar[str] = "policy.acodm.pt"
    ALPHA_TRAJECTORY: ClassVar[str] = "alpha_trajectory.jsonl"
    EVAL_MODES: ClassVar[str] = "eval_modes.json"
    LM_EVAL: ClassVar[str] = "lm_eval.json"
    PLANNED_CONFIG: ClassVar[str] = "planned_config.yaml"
    RUN_LOG: ClassVar[str] = "run.log"
    COST: ClassVar[str] = "cost.json"
    PARTIAL_COST: ClassVar[str] = "cost.partial.json"

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def eval(self) -> Path:
        return self.path / self.EVAL

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def condition_end(self) -> Path:
        return self.path / self.CONDITION_END

    @property
    def policy_file(self) -> Path:
        return self.path / self.POLICY_FILE

    @property
    def alpha_trajectory(self) -> Path:
        return self.path / self.ALPHA_TRAJECTORY

    @property
    def eval_modes(self) -> Path:
        return self.path / self.EVAL_MODES

    @property
    def lm_eval(self) -> Path:
        return self.path / self.LM_EVAL

    @property
    def planned_config(self) -> Path:
        return self.path / self.PLANNED_CONFIG

    @property
    def run_log(self) -> Path:
        return self.path / self.RUN_LOG

    @property
    def cost(self) -> Path:
        return self.path / self.COST

    @property
    def partial_cost(self) -> Path:
        return self.path / self.PARTIAL_COST
