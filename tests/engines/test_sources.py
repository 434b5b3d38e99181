"""Reading mixtures: run folders (synthetic and a real training), DoReMi/search/plain weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixlab.engines.sources import read_run, read_source
from mixlab.errors import ConfigError, DataError
from tests.engines.conftest import DOMAINS, SIZES, drifting_weights, write_run


def test_run_windows_are_the_weights_the_sampler_drew(tmp_path):
    w = drifting_weights(30)
    traj = read_run(write_run(tmp_path / "r", w, log_every=1))
    assert traj.domains == DOMAINS and traj.kind == "run" and traj.seq_len == 64
    # Exactly the weights in force per step (mix/weight at a record is the *next* step's).
    np.testing.assert_allclose(traj.weights, w, atol=1e-12)
    np.testing.assert_array_equal(traj.steps, np.arange(1, 31))
    np.testing.assert_allclose(traj.tokens, 512.0)
    np.testing.assert_allclose(traj.domain_tokens, SIZES)
    assert not traj.is_static


def test_windows_of_several_steps_are_their_token_weighted_mean(tmp_path):
    w = drifting_weights(30)
    traj = read_run(write_run(tmp_path / "r", w, log_every=4))
    np.testing.assert_array_equal(traj.steps, [4, 8, 12, 16, 20, 24, 28, 30])
    np.testing.assert_allclose(traj.weights[0], w[:4].mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(traj.weights[-1], w[28:].mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(traj.tokens, [2048] * 7 + [1024])
    np.testing.assert_allclose(traj.shares, w.mean(axis=0), atol=1e-12)


def test_a_resumed_run_keeps_the_later_records_of_repeated_steps(tmp_path):
    w = drifting_weights(12)
    run = write_run(tmp_path / "r", w, log_every=2)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    # Interrupted after step 8, resumed from a step-4 checkpoint: steps 6, 8 are logged twice.
    again = [ln for ln in lines if json.loads(ln)["step"] in (6, 8)]
    head = [ln for ln in lines if json.loads(ln)["step"] <= 8]
    tail = [ln for ln in lines if json.loads(ln)["step"] > 4]
    assert again
    (run / "metrics.jsonl").write_text("\n".join(head + tail) + "\n")
    traj = read_run(run)
    np.testing.assert_array_equal(traj.steps, [2, 4, 6, 8, 10, 12])
    np.testing.assert_allclose(traj.shares, w.mean(axis=0), atol=1e-12)


def test_records_without_requested_fall_back_to_p_eff_then_weight(tmp_path):
    w = drifting_weights(6)
    run = write_run(tmp_path / "r", w, log_every=1)
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    for r in recs:
        for d in DOMAINS:
            r.pop(f"mix/requested/{d}", None)
            if "train/loss" in r:
                r[f"mix/p_eff/{d}"] = 0.25
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    np.testing.assert_allclose(read_run(run).weights, 0.25)


def test_a_real_odm_training_reads_back_its_per_step_weights(tiny_store, tmp_path):
    from mixlab.config import RunConfig
    from mixlab.train.callbacks import read_metrics
    from mixlab.train.loop import train
    from tests.conftest import tiny_run_config

    raw = tiny_run_config(tiny_store, max_steps=8, log_every=1, eval_every=0, checkpoint_every=0)
    raw["mixing"] = {"name": "odm", "odm": {"warmup_steps": 0}}
    cfg = RunConfig.from_dict(raw)
    cfg.validate()
    train(cfg, tmp_path / "odm")
    traj = read_source(tmp_path / "odm")
    recs = [r for r in read_metrics(tmp_path / "odm") if "train/loss" in r]
    proposals = np.array([[r[f"mix/weight/{d}"] for d in traj.domains] for r in recs])
    # Step t (t >= 2) drew from the weights the policy proposed after step t-1.
    np.testing.assert_allclose(traj.weights[1:], proposals[:-1], atol=1e-9)
    assert np.abs(np.diff(traj.weights, axis=0)).max() > 1e-4  # ODM moved the weights
    served = np.array([recs[-1][f"domain/{d}/tokens"] for d in traj.domains])
    epochs = np.array([recs[-1][f"domain/{d}/epochs"] for d in traj.domains])
    np.testing.assert_allclose(traj.domain_tokens, np.round(served / epochs))


def test_weights_files_doremi_search_and_plain(tmp_path, weights_file):
    search = read_source(weights_file)
    assert search.kind == "search" and not search.timed and search.weights.shape == (1, 4)
    assert dict(zip(search.domains, search.weights[0], strict=True))["prose"] == 0.4
    plain = tmp_path / "w.json"
    plain.write_text(json.dumps({"a": 0.5, "b": 0.5}))
    assert read_source(plain).kind == "weights"
    run = write_run(tmp_path / "round_1" / "proxy", drifting_weights(4))
    doremi = tmp_path / "doremi_weights.json"
    doremi.write_text(
        json.dumps(
            {"weights": dict.fromkeys(DOMAINS, 0.25), "proxy_run": "elsewhere/round_1/proxy"}
        )
    )
    traj = read_source(tmp_path)  # the doremi --out folder
    assert traj.kind == "doremi" and run.is_dir()
    np.testing.assert_allclose(traj.domain_tokens, SIZES)  # found the proxy run next to it


def test_weights_that_do_not_sum_to_one_need_normalise(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"a": 2.0, "b": 6.0}))
    with pytest.raises(ConfigError, match="--normalise"):
        read_source(path)
    np.testing.assert_allclose(read_source(path, normalise=True).weights[0], [0.25, 0.75])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"a": 0.5,\n "b": }', "line 2"),
        ("[0.5, 0.5]", "mapping domain name to weight"),
        ('{"a": -0.5, "b": 1.5}', "negative"),
    ],
)
def test_bad_weights_files_name_the_problem(tmp_path, content, match):
    path = tmp_path / "w.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        read_source(path)


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_source(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"no metrics\.jsonl"):
        read_source(tmp_path)
    (tmp_path / "policy.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="holds a network"):
        read_source(tmp_path / "policy.pt")
    for seed in ("seed0", "seed1"):
        write_run(tmp_path / "m" / seed, drifting_weights(3))
    with pytest.raises(ConfigError, match="seed0, seed1"):
        read_source(tmp_path / "m")


def test_corrupt_metrics_name_the_line(tmp_path):
    run = write_run(tmp_path / "r", drifting_weights(4))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=r"metrics.jsonl:2"):
        read_run(run)
    # A torn *last* line is what a crash leaves: ignored.
    (run / "metrics.jsonl").write_text("\n".join([*lines, '{"step": 5, "mix/wei']))
    assert len(read_run(run).steps) == 4


def test_metrics_without_train_records(tmp_path: Path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "eval/mean_ppl": 3.0}\n')
    with pytest.raises(DataError, match="no train records"):
        read_run(tmp_path)
