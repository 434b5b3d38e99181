"""RunFolder names the files of a run folder; the names are part of mixlab's file format."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mixlab.train.run_folder import RunFolder


def test_paths_are_the_documented_names_inside_the_folder() -> None:
    folder = RunFolder("runs/a")
    assert folder.path == Path("runs/a")
    expected = {
        "checkpoint": "checkpoint.pt",
        "config": "config.yaml",
        "metrics": "metrics.jsonl",
        "eval": "eval.json",
        "tensorboard": "tb",
        "condition_end": "checkpoint_condition_end.pt",
        "policy_file": "policy.acodm.pt",
        "alpha_trajectory": "alpha_trajectory.jsonl",
        "eval_modes": "eval_modes.json",
        "lm_eval": "lm_eval.json",
        "planned_config": "planned_config.yaml",
        "run_log": "run.log",
        "cost": "cost.json",
        "partial_cost": "cost.partial.json",
    }
    for name, file in expected.items():
        assert getattr(folder, name) == Path("runs/a") / file, name
    assert RunFolder.CHECKPOINT == "checkpoint.pt" and RunFolder.METRICS == "metrics.jsonl"


def test_a_run_folder_is_a_frozen_value() -> None:
    assert RunFolder(Path("x")) == RunFolder("x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunFolder("x").path = Path("y")  # type: ignore[misc]
