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
    search_spec.yaml              mixlab compare: a search stage's spec (mixlab search)
    run.log                       mixlab compare: the run's output
    cost.json                     mixlab compare: wall-clock, tokens, peak RSS once finished
    cost.partial.json             mixlab compare: the cost of attempts that did not finish
    .executor.lock                mixlab compare --executor ray: held while a run's process lives

``RunFolder(path).checkpoint`` is the path of a file; ``RunFolder.CHECKPOINT`` its name (for
globbing, temporaries and copies next to it).

Whoever trains into a folder asks :func:`next_action` what to do with it:

======================================  ==================================================
the folder holds                        action
======================================  ==================================================
nothing (no saved settings)             ``start``
a run with the same settings, finished  ``skip`` (reuse its results)
a run with the same settings, not yet   ``resume`` (continue from its checkpoint)
a run made with other settings          ConfigError naming the first field that differs
======================================  ==================================================

"Settings" are a resolved config as a nested dict: the checkpoint's ``config`` for a run
trained in this process (:func:`mixlab.train.resume.train_in_folder`), ``planned_config.yaml``
for a run that ``mixlab compare`` started as its own process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from mixlab.errors import ConfigError

Action = Literal["start", "resume", "skip"]


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
    SEARCH_SPEC: ClassVar[str] = "search_spec.yaml"
    RUN_LOG: ClassVar[str] = "run.log"
    COST: ClassVar[str] = "cost.json"
    PARTIAL_COST: ClassVar[str] = "cost.partial.json"
    EXECUTOR_LOCK: ClassVar[str] = ".executor.lock"

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
    def search_spec(self) -> Path:
        return self.path / self.SEARCH_SPEC

    @property
    def run_log(self) -> Path:
        return self.path / self.RUN_LOG

    @property
    def cost(self) -> Path:
        return self.path / self.COST

    @property
    def partial_cost(self) -> Path:
        return self.path / self.PARTIAL_COST

    @property
    def executor_lock(self) -> Path:
        return self.path / self.EXECUTOR_LOCK


def next_action(
    folder: str | Path,
    saved: Mapping[str, Any] | None,
    planned: Mapping[str, Any],
    *,
    finished: bool,
    hint: str,
) -> Action:
    """``start`` / ``resume`` / ``skip`` for a folder whose run was made with ``saved``.

    ``saved`` is None when the folder holds no run yet. A run made with other settings is a
    ConfigError that names the first differing field and ends with ``hint`` (what to do).
    """
    if saved is None:
        return "start"
    diff = first_difference(saved, planned)
    if diff:
        raise ConfigError(f"{folder} holds a run made with other settings ({diff}); {hint}")
    return "skip" if finished else "resume"


def differences(saved: Any, planned: Any, prefix: str = "") -> list[str]:
    """``"train.max_steps: 12 there, 9 now"`` for every leaf that differs, in key order."""
    if isinstance(saved, Mapping) and isinstance(planned, Mapping):
        out: list[str] = []
        for key in sorted(set(saved) | set(planned), key=str):
            out += differences(saved.get(key), planned.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == planned else [f"{prefix[:-1]}: {saved!r} there, {planned!r} now"]


def first_difference(saved: Any, planned: Any) -> str:
    """The first of :func:`differences`, or "" when the settings are equal."""
    found = differences(saved, planned)
    return found[0] if found else ""
