"""scripts/acodm_reward_noise.py: reward spread, reward noise and mixture moves of a run's log."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import load_module

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "acodm_reward_noise.py"


def load_script() -> ModuleType:
    return load_module(SCRIPT, "acodm_reward_noise")


def write_run(folder: Path, rows: list[dict[str, float]]) -> Path:
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_spread_noise_and_move(tmp_path: Path) -> None:
    """Domain a's reward is 1 above b's every step (spread 0.5 around their mean, no noise);
    the mixture alternates between (.6, .4) and (.4, .6): a move of 0.2 per logged row."""
    rows = [
        {
            "step": 10 * t,
            "mix/acodm/raw_reward/a": 2.0,
            "mix/acodm/raw_reward/b": 1.0,
            "mix/weight/a": 0.6 if t % 2 else 0.4,
            "mix/weight/b": 0.4 if t % 2 else 0.6,
        }
        for t in range(40)
    ]
    run = write_run(tmp_path / "run", [*rows, {"step": 400, "eval/geo_ppl": 9.0}])
    got = load_script().reward_noise(run, from_step=0, window=10)
    assert got["spread"] == pytest.approx(0.5) and got["noise"] == pytest.approx(0.0)
    assert got["move"] == pytest.approx(0.2)


def test_a_run_without_rewards_is_refused(tmp_path: Path) -> None:
    run = write_run(tmp_path / "uniform", [{"step": 10, "train/loss": 3.0}])
    with pytest.raises(SystemExit, match="fewer than 2 rows"):
        load_script().reward_noise(run, from_step=0, window=10)
    with pytest.raises(SystemExit, match=r"no metrics\.jsonl"):
        load_script().reward_noise(tmp_path / "missing", from_step=0, window=10)
