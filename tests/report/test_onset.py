"""The report's note on when seed noise was set (mixlab.report.onset)."""

from __future__ import annotations

import math

import pytest

from mixlab.report import summarize
from mixlab.report.onset import ONSET_MIN_PAIRS, branch_note, onset_correlations, onset_note
from tests.report.conftest import record

STEPS = (10, 20, 30, 40)
BASE = {10: 100.0, 20: 50.0, 30: 30.0, 40: 20.0}


def _suite(offsets: dict[str, list[list[float]]]) -> list:
    """uniform plus methods whose per-seed log-ratio vs uniform is given step by step."""
    runs = [record("uniform", seed, BASE) for seed in range(len(next(iter(offsets.values()))))]
    for name, per_seed in offsets.items():
        for seed, logs in enumerate(per_seed):
            values = {s: BASE[s] * math.exp(x) for s, x in zip(STEPS, logs, strict=True)}
            runs.append(record(name, seed, values))
    return runs


def _groups(runs: list) -> tuple[dict, dict]:
    groups: dict = {}
    for r in runs:
        groups.setdefault(r.method, []).append(r)
    return groups, {r.seed: r for r in groups["uniform"]}


def test_a_gap_set_at_step_20_is_named() -> None:
    # each seed's lead or lag appears at step 20 and stays; the mixture adds a constant -0.01
    lag = [0.05, -0.03, 0.02, -0.04]
    early = [[0.0, x, x, x - 0.01] for x in lag]
    runs = _suite({"odm": early, "acodm": [[0.0, -x, -x, -x - 0.01] for x in lag]})
    steps, corr, pairs = onset_correlations(*_groups(runs), "eval/mean_ppl", "uniform")
    assert steps == [10, 20, 30] and pairs == 8
    assert math.isnan(corr[0]) and corr[1] == pytest.approx(1.0) and corr[2] == pytest.approx(1.0)
    note = onset_note(*_groups(runs), "eval/mean_ppl", "uniform")
    assert note is not None and "at step 20 (50% of the run)" in note and "8 method-seed" in note
    assert note in summarize(runs).notes


def test_a_gap_that_appears_only_at_the_end_gives_no_note() -> None:
    # per seed: the differences at steps 20 and 30 are orthogonal to the final ones
    signs = [(1, 1, 1), (-1, 1, -1), (1, -1, -1), (-1, -1, 1)]
    odm = [[0.0, 0.02 * a, 0.02 * c, 0.03 * f] for a, c, f in signs]
    acodm = [[0.0, 0.01 * c, 0.04 * a, -0.02 * f] for a, c, f in signs]
    runs = _suite({"odm": odm, "acodm": acodm})
    _, corr, pairs = onset_correlations(*_groups(runs), "eval/mean_ppl", "uniform")
    assert pairs == 8 and corr[1:] == pytest.approx([0.0, 0.0], abs=1e-9)
    assert onset_note(*_groups(runs), "eval/mean_ppl", "uniform") is None
    assert not any("seed noise" in n for n in summarize(runs).notes)


def test_a_systematic_effect_is_not_seed_noise() -> None:
    # every seed the same difference (a real mixture effect, from step 20): nothing to centre
    same = [[0.0, -0.05, -0.05, -0.05]] * 4
    runs = _suite({"odm": same, "acodm": same, "doremi": same})
    assert onset_correlations(*_groups(runs), "eval/mean_ppl", "uniform") == ([], [], 0)
    assert onset_note(*_groups(runs), "eval/mean_ppl", "uniform") is None


def test_too_few_pairs_say_nothing() -> None:
    lag = [0.05, -0.03]
    runs = _suite({"odm": [[0.0, x, x, x] for x in lag], "acodm": [[0.0, x, x, x] for x in lag]})
    _, _, pairs = onset_correlations(*_groups(runs), "eval/mean_ppl", "uniform")
    assert pairs == 4 < ONSET_MIN_PAIRS
    assert onset_note(*_groups(runs), "eval/mean_ppl", "uniform") is None


def test_runs_with_other_eval_steps_are_left_out() -> None:
    lag = [0.05, -0.03, 0.02, -0.04]
    runs = _suite({"odm": [[0.0, x, x, x] for x in lag], "acodm": [[0.0, x, x, x] for x in lag]})
    runs.append(record("sparse", 0, {20: 40.0, 40: 18.0}))
    runs.append(record("sparse", 1, {20: 60.0, 40: 22.0}))
    assert onset_correlations(*_groups(runs), "eval/mean_ppl", "uniform")[2] == 8


def _branch(runs: list, trunk: object) -> None:
    for r in runs:
        r.config = {"train": {"seed": r.seed, "branch_from": str(trunk)}}


def test_branched_arms_are_named_and_the_onset_remedy_fits_them(tmp_path) -> None:
    import yaml

    trunk = tmp_path / "_shared" / "seed0" / "trunk"
    trunk.mkdir(parents=True)
    (trunk / "config.yaml").write_text(yaml.safe_dump({"train": {"max_steps": 20}}))
    lag = [0.05, -0.03, 0.02, -0.04]
    runs = _suite({"odm": [[0.0, x, x, x] for x in lag], "acodm": [[0.0, -x, -x, -x] for x in lag]})
    groups, _ = _groups(runs)
    assert branch_note(groups) is None  # nothing branched
    _branch(runs, trunk)
    note = branch_note(groups)
    assert note is not None and note.startswith("every arm branched at step 20 from a trunk")
    onset = onset_note(*_groups(runs), "eval/mean_ppl", "uniform")
    assert onset is not None and "the arms already branch from one trunk per seed" in onset
    assert note in summarize(runs).notes
    # some arms from step 0, or a trunk whose folder is gone: a warning that says which
    _branch(groups["odm"], tmp_path / "gone")
    for r in groups["acodm"]:
        r.config = {"train": {"seed": r.seed}}
    note = branch_note(groups)
    assert note is not None and note.startswith("the arms did not all branch at the same step")
    assert "odm: a trunk no longer found; acodm: step 0" in note


def test_noise_set_in_the_second_half_of_the_run_is_not_early() -> None:
    lag = [0.05, -0.03, 0.02, -0.04]
    late = [[0.0, 0.0, x, x] for x in lag]  # each seed's lead appears at step 30 of 40
    runs = _suite({"odm": late, "acodm": [[0.0, 0.0, -x, -x] for x in lag]})
    _, corr, _ = onset_correlations(*_groups(runs), "eval/mean_ppl", "uniform")
    assert corr[2] == pytest.approx(1.0)
    assert onset_note(*_groups(runs), "eval/mean_ppl", "uniform") is None
