"""nanotron: ``data_stages`` read by a mirror of nanotron's dacite schema and stage checks
(nanotron's config module imports flash_attn and triton, so it cannot be imported on this CPU
machine; ``verify_engine_parsers.py`` runs its real parser with those modules stubbed)."""

from __future__ import annotations

import numpy as np
import pytest

from mixlab.engines import export_mix
from tests.engines import mirrors
from tests.engines.conftest import DOMAINS


def test_stages_start_at_one_and_follow_the_plan(tmp_path, adaptive_run):
    res = export_mix(
        adaptive_run,
        ["nanotron"],
        tmp_path / "out",
        phases=3,
        budget_tokens=1000 * 8 * 128,
        global_batch_size=8,
        seq_len=128,
        seed=7,
    )
    stages = mirrors.nanotron_stages(mirrors.load_yaml(tmp_path / "out/nanotron/data_stages.yaml"))
    plan = res.plan
    assert [s["start_training_step"] for s in stages] == [s.start_step + 1 for s in plan.stages]
    assert stages[0]["start_training_step"] == 1 and plan.total_steps == 1000
    assert all(s["data"]["seed"] == 7 for s in stages)
    # Simulated run: each stage trains (end - start) steps x 8 samples, split as nanotron does.
    total = np.zeros(len(DOMAINS))
    for stage, spec in zip(plan.stages, stages, strict=True):
        counts = mirrors.nanotron_counts(spec, (stage.end_step - stage.start_step) * 8)
        assert spec["data"]["dataset"]["dataset_folder"] == list(DOMAINS)
        np.testing.assert_allclose(counts / counts.sum(), stage.weights, atol=4 / counts.sum())
        total += counts
    np.testing.assert_allclose(total / total.sum(), plan.shares, atol=1e-3)
    np.testing.assert_allclose(plan.shares, plan.trajectory_shares, atol=1e-3)


def test_several_folders_per_domain_and_zero_weights(tmp_path, prefixes):
    import json

    path = tmp_path / "w.json"
    path.write_text(json.dumps({"code": 0.0, "noise": 0.5, "numbers": 0.5, "prose": 0.0}))
    export_mix(path, ["nanotron"], tmp_path / "out", prefixes=prefixes)
    (stage,) = mirrors.nanotron_stages(
        mirrors.load_yaml(tmp_path / "out/nanotron/data_stages.yaml")
    )
    ds = stage["data"]["dataset"]
    assert ds["dataset_folder"] == [
        "/data/noise_a_text_document",
        "/data/noise_b_text_document",
        "/data/numbers_0_text_document",
        "/data/numbers_1_text_document",
    ]
    assert ds["dataset_weights"] == pytest.approx([0.25, 0.25, 0.375, 0.125])


def test_mirror_refuses_what_nanotron_refuses():
    good = {
        "name": "a",
        "start_training_step": 1,
        "data": {"dataset": {"dataset_folder": ["x"], "dataset_weights": [1.0]}, "seed": 0},
    }
    mirrors.nanotron_stages({"data_stages": [good]})
    late = {**good, "start_training_step": 5}
    with pytest.raises(ValueError, match="starting at 1"):
        mirrors.nanotron_stages({"data_stages": [late]})
    with pytest.raises(ValueError, match="unique"):
        mirrors.nanotron_stages({"data_stages": [good, {**late, "name": "a"}]})
    extra = {**good, "weights": 1}
    with pytest.raises(ValueError, match="DatasetStageArgs"):
        mirrors.nanotron_stages({"data_stages": [extra]})
