"""RunFolder names the files of a run folder; the names are part of mixlab's file format."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mixlab.errors import ConfigError
from mixlab.train.run_folder import RunFolder, differences, first_difference, next_action


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
        "search_spec": "search_spec.yaml",
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


PLAN = {"mixing": {"name": "odm", "odm": {"eta": 0.1}}, "train": {"max_steps": 12}}


def test_start_resume_or_skip_by_what_the_folder_holds() -> None:
    assert next_action("f", None, PLAN, finished=False, hint="h") == "start"
    assert next_action("f", None, PLAN, finished=True, hint="h") == "start"
    assert next_action("f", PLAN, PLAN, finished=False, hint="h") == "resume"
    assert next_action("f", PLAN, PLAN, finished=True, hint="h") == "skip"


def test_other_settings_are_refused_naming_the_first_differing_field() -> None:
    other = {"mixing": {"name": "odm", "odm": {"eta": 0.2}}, "train": {"max_steps": 9}}
    with pytest.raises(
        ConfigError,
        match=r"^runs/a holds a run made with other settings "
        r"\(mixing\.odm\.eta: 0\.1 there, 0\.2 now\); delete it$",
    ):
        next_action("runs/a", PLAN, other, finished=True, hint="delete it")
    assert first_difference(PLAN, PLAN) == "" and differences(PLAN, PLAN) == []
    assert differences(PLAN, other) == [
        "mixing.odm.eta: 0.1 there, 0.2 now",
        "train.max_steps: 12 there, 9 now",
    ]
    assert first_difference({"a": 1}, {"a": 1, "b": {"c": 2}}) == "b: None there, {'c': 2} now"
