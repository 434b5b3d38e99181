"""export_mix end to end: every engine, the plan file, folders and argument errors."""

from __future__ import annotations

import json

import pytest

from mixlab.engines import ENGINES, export_mix
from mixlab.engines.export import resolve_engines
from mixlab.errors import ConfigError


def test_all_engines_from_an_adaptive_run(tmp_path, adaptive_run, prefixes):
    res = export_mix(
        adaptive_run,
        ["all"],
        tmp_path / "out",
        prefixes=prefixes,
        phases=3,
        budget_tokens=3e6,
        global_batch_size=8,
        seq_len=256,
        max_epochs=4,
        step_multiple=256,
    )
    assert list(res.files) == list(ENGINES)
    for engine, files in res.files.items():
        assert files and all(f.is_file() for f in files), engine
        assert (tmp_path / "out" / engine / "README.txt") in files
    assert (tmp_path / "out/megatron/phase_3/data_args.txt").is_file()
    assert (tmp_path / "out/olmo-core/phase_2/source_mixture.yaml").is_file()
    plan = json.loads((tmp_path / "out/export_plan.json").read_text())
    assert plan["kind"] == "run" and plan["steps_unit"] == "target"
    assert [p["start_step"] for p in plan["phases"]] == [s.start_step for s in res.plan.stages]
    assert plan["target_steps"] == 1465 and plan["phases"][-1]["end_step"] == 1465
    assert all(p["start_step"] % 256 == 0 for p in plan["phases"])
    assert plan["files"]["nanotron"][0].endswith("data_stages.yaml")
    assert sum(plan["achieved_shares"].values()) == pytest.approx(1.0)
    assert not (tmp_path / "out/megatron/data_args.txt").exists()  # per phase only


def test_existing_engine_folders_need_force(tmp_path, weights_file):
    export_mix(weights_file, ["mosaic"], tmp_path / "out")
    with pytest.raises(ConfigError, match="--force"):
        export_mix(weights_file, ["mosaic"], tmp_path / "out")
    stale = tmp_path / "out/mosaic/phase_9"
    stale.mkdir()
    export_mix(weights_file, ["mosaic"], tmp_path / "out", force=True)
    assert not stale.exists()
    export_mix(weights_file, ["nanotron"], tmp_path / "out")  # another engine: no clash


def test_engine_names():
    assert resolve_engines(["all"]) == list(ENGINES)
    assert resolve_engines(["mosaic", "megatron"]) == ["megatron", "mosaic"]
    with pytest.raises(ConfigError, match="unknown engine"):
        resolve_engines(["torchtitan"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget_tokens": -1.0}, "--budget-tokens"),
        ({"global_batch_size": 8}, "needs --seq-len"),
        ({"seq_len": 0}, "--seq-len"),
        ({"levanter_block_size": 0}, "--levanter-block-size"),
    ],
)
def test_argument_errors(tmp_path, weights_file, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        export_mix(weights_file, ["all"], tmp_path / "out", **kwargs)


def test_seq_len_defaults_to_the_run(tmp_path, adaptive_run):
    res = export_mix(
        adaptive_run, ["mosaic"], tmp_path / "out", budget_tokens=64_000, global_batch_size=10
    )
    assert res.plan.target.tokens_per_step == 640
    assert any("seq_len 64" in n for n in res.notes)
