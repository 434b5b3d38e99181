"""Levanter: ``data_mixture.yaml`` read by a mirror of ``LMMixtureDatasetConfig`` and
``MixtureDataset`` (Levanter needs JAX and a matching haliax; the PyPI release is from 2023 and
predates staged weights). The simulated run counts sequences block by block like
``MixtureDataset``."""

from __future__ import annotations

import numpy as np
import pytest

from mixlab.engines import export_mix
from tests.engines import mirrors
from tests.engines.conftest import DOMAINS


def _export(tmp_path, run, **kw):
    return export_mix(
        run,
        ["levanter"],
        tmp_path / "out",
        phases=3,
        budget_tokens=1024 * 64 * 1536,
        global_batch_size=64,
        seq_len=1024,
        force=True,
        **kw,
    )


def test_unaligned_stages_are_flagged_and_step_multiple_fixes_them(tmp_path, adaptive_run):
    res = _export(tmp_path, adaptive_run)
    assert any("--step-multiple 32" in w for w in res.warnings)
    data = mirrors.load_yaml(tmp_path / "out/levanter/data_mixture.yaml")
    with pytest.raises(ValueError, match="multiple of 2048"):
        mirrors.levanter_stages(data, batch_size=64)

    res = _export(tmp_path, adaptive_run, step_multiple=32)
    assert not res.warnings
    data = mirrors.load_yaml(tmp_path / "out/levanter/data_mixture.yaml")
    stages = mirrors.levanter_stages(data, batch_size=64)
    assert [s for s, _ in stages] == [s.start_step * 64 for s in res.plan.stages]
    assert set(data["configs"]) == set(DOMAINS)

    # Simulated run: every block of 2048 sequences holds exactly the stage's counts.
    total = np.zeros(len(DOMAINS))
    for stage, (_, weights) in zip(res.plan.stages, stages, strict=True):
        blocks = (stage.end_step - stage.start_step) * 64 // 2048
        counts = mirrors.levanter_block_counts(weights, list(DOMAINS), 2048)
        np.testing.assert_allclose(counts / 2048, stage.weights, atol=4 / 2048)
        total += blocks * counts
    np.testing.assert_allclose(total / total.sum(), res.plan.shares, atol=2e-3)


def test_one_phase_is_a_plain_weight_dict(tmp_path, weights_file, prefixes):
    export_mix(weights_file, ["levanter"], tmp_path / "out", prefixes=prefixes)
    data = mirrors.load_yaml(tmp_path / "out/levanter/data_mixture.yaml")
    assert data["train_weights"] == {"code": 0.3, "noise": 0.1, "numbers": 0.2, "prose": 0.4}
    assert data["configs"]["numbers"] == {
        "train_urls": ["/data/numbers_0_text_document", "/data/numbers_1_text_document"],
        "validation_urls": ["/data/numbers_val_text_document"],
    }
    ((start, weights),) = mirrors.levanter_stages(data, batch_size=1)
    assert start == 0 and weights == pytest.approx(data["train_weights"])
