"""OLMo-core: files read by a mirror of ``source_mixture.py`` (ai2-olmo-core cannot be installed
here without downgrading huggingface_hub/rich/filelock; ``verify_engine_parsers.py`` runs
OLMo-core's own classes in a separate venv). The simulated build selects per-source tokens
exactly like ``SourceMixtureDatasetConfig.build``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixlab.engines import export_mix
from tests.engines import mirrors
from tests.engines.conftest import DOMAINS, SIZES


def test_sources_and_dataset_config(tmp_path, weights_file, prefixes):
    res = export_mix(
        weights_file,
        ["olmo-core"],
        tmp_path / "out",
        prefixes=prefixes,
        budget_tokens=4096 * 100,
        global_batch_size=8,
        seq_len=512,
        max_epochs=4,
    )
    folder = tmp_path / "out" / "olmo-core"
    sources = mirrors.olmo_sources(mirrors.load_yaml(folder / "sources.yaml"))
    assert [s["source_name"] for s in sources] == list(DOMAINS)
    assert [s["target_ratio"] for s in sources] == [0.3, 0.1, 0.2, 0.4]
    assert sources[1]["paths"] == ["/data/noise_a_text_document", "/data/noise_b_text_document"]
    assert all(s["max_repetition_ratio"] == 4.0 for s in sources)
    cfg = mirrors.olmo_dataset(mirrors.load_yaml(folder / "source_mixture.yaml"))
    assert cfg["requested_tokens"] == 409_600 and cfg["global_batch_size"] == 4096
    assert res.plan.epochs is None  # --prefixes gives sizes for 2 of 4 domains only


def test_simulated_build_gives_the_target_ratios(tmp_path, adaptive_run):
    res = export_mix(
        adaptive_run,
        ["olmo-core"],
        tmp_path / "out",
        phases=3,
        budget_tokens=256 * 2000,
        global_batch_size=4,
        seq_len=64,
    )
    population = dict(zip(DOMAINS, (SIZES * 100).astype(int).tolist(), strict=True))
    total = np.zeros(len(DOMAINS))
    for stage in res.plan.stages:
        cfg = mirrors.olmo_dataset(
            mirrors.load_yaml(tmp_path / f"out/olmo-core/phase_{stage.index}/source_mixture.yaml")
        )
        assert cfg["requested_tokens"] == stage.tokens
        got = mirrors.olmo_selected_tokens(cfg, population, sequence_length=64)
        tokens = np.array([got[d] for d in DOMAINS], dtype=float)
        assert tokens.sum() == stage.tokens  # whole batches of instances
        np.testing.assert_allclose(tokens / tokens.sum(), stage.weights, atol=64 * 4 / tokens.sum())
        total += tokens
    np.testing.assert_allclose(total / total.sum(), res.plan.shares, atol=1e-3)


def test_repetition_ratio_is_what_the_phase_needs_without_a_cap(tmp_path, adaptive_run):
    res = export_mix(
        adaptive_run,
        ["olmo-core"],
        tmp_path / "out",
        budget_tokens=1e6,
        global_batch_size=4,
        seq_len=64,
    )
    stage = res.plan.stages[0]
    cfg = mirrors.olmo_dataset(mirrors.load_yaml(tmp_path / "out/olmo-core/source_mixture.yaml"))
    needed = stage.tokens * stage.weights / SIZES
    ratios = np.array([s["max_repetition_ratio"] for s in cfg["sources"]])
    assert np.all(ratios >= needed) and np.all(ratios - needed <= 0.011)
    # OLMo-core accepts it on exactly the corpus the run saw.
    mirrors.olmo_selected_tokens(
        cfg, dict(zip(DOMAINS, SIZES.astype(int).tolist(), strict=True)), 64
    )


def test_a_domain_over_the_cap_is_warned_here_and_refused_there(tmp_path, weights_file):
    pre = tmp_path / "p.json"
    pre.write_text(json.dumps({d: {"paths": [f"/d/{d}.npy"], "tokens": 10_000} for d in DOMAINS}))
    res = export_mix(
        weights_file,
        ["olmo-core"],
        tmp_path / "out",
        prefixes=pre,
        budget_tokens=100_000,
        global_batch_size=2,
        seq_len=50,
        max_epochs=3,
    )
    assert any("'prose'" in w and "exceeds the cap of 3" in w for w in res.warnings)
    cfg = mirrors.olmo_dataset(mirrors.load_yaml(tmp_path / "out/olmo-core/source_mixture.yaml"))
    with pytest.raises(ValueError, match="Insufficient tokens for source: prose"):
        mirrors.olmo_selected_tokens(cfg, dict.fromkeys(DOMAINS, 10_000), 50)


def test_without_a_budget_only_the_source_list(tmp_path, weights_file):
    res = export_mix(weights_file, ["olmo-core"], tmp_path / "out")
    assert not (tmp_path / "out/olmo-core/source_mixture.yaml").exists()
    assert any("only sources.yaml" in n for n in res.notes)
    raw = mirrors.load_yaml(tmp_path / "out/olmo-core/sources.yaml")
    mirrors.olmo_sources(raw)
    assert all("max_repetition_ratio" not in s for s in raw["sources"])  # OLMo-core's default 1
