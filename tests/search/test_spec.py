"""Search specs: defaults, base_config merging, overrides, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mixlab.errors import ConfigError
from mixlab.search.spec import load_search_spec, parse_search_spec


def _raw(**extra: object) -> dict:
    raw: dict = {"base": {"data": {"store": "shards"}}, "target": {"max_steps": 100}}
    raw.update(extra)
    return raw


def test_defaults_and_overrides() -> None:
    spec = parse_search_spec(_raw(), overrides=["swarm.runs=4", "base.train.max_steps=7"])
    assert spec.swarm.runs == 4 and spec.swarm.prior == "natural"
    assert spec.swarm.proxy_seeds == [0] and spec.swarm.repetition_matching
    assert spec.fit.law == "loglinear" and spec.fit.objective == "mean"
    assert spec.eval.every == 0 and spec.eval.domains is None
    assert spec.base["train"]["max_steps"] == 7
    assert spec.to_dict()["target"] == {"max_steps": 100}


def test_base_config_and_target_config_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"train": {"max_steps": 9}}))
    (tmp_path / "target.yaml").write_text(yaml.safe_dump({"train": {"max_steps": 900}}))
    (tmp_path / "spec.yaml").write_text(
        yaml.safe_dump(
            {
                "base_config": "recipe.yaml",
                "base": {"data": {"store": "shards"}},
                "target": {"config": "target.yaml"},
                "swarm": {"max_epochs": {"code": 2}, "prior": {"a": 0.5, "b": 0.5}},
            }
        )
    )
    spec = load_search_spec(tmp_path / "spec.yaml")
    assert spec.name == "spec"
    assert spec.base == {"train": {"max_steps": 9}, "data": {"store": "shards"}}
    assert spec.target == {"config": {"train": {"max_steps": 900}}}
    assert spec.swarm.max_epochs == {"code": 2.0}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"targets": {}}, "targets"),
        ({"target": None}, "target"),
        ({"target": {"max_steps": 10, "tokens": 5}}, "exactly one"),
        ({"target": {"tokens_per_step": 10, "tokens": 5}}, "target.tokens_per_step"),
        ({"target": {"max_steps": 0}}, "target.max_steps"),
        ({"target": {"max_step": 10}}, "target.max_step"),
        ({"target": {"config": 3}}, "target.config"),
        ({"swarm": {"runs": -1}}, "swarm.runs"),
        ({"swarm": {"prior": "zipf"}}, "swarm.prior"),
        ({"swarm": {"prior": {"a": -1}}}, "swarm.prior.a"),
        ({"swarm": {"concentration": 0}}, "swarm.concentration"),
        ({"swarm": {"max_epochs": 0}}, "swarm.max_epochs"),
        ({"swarm": {"max_epochs": "many"}}, "swarm.max_epochs"),
        ({"swarm": {"proxy_seeds": [1, 1]}}, "swarm.proxy_seeds"),
        ({"swarm": {"corners": "yes"}}, "swarm.corners"),
        ({"swarm": {"size": 3}}, "swarm.size"),
        ({"fit": {"law": "spline"}}, "fit.law"),
        ({"fit": {"objective": "median"}}, "fit.objective"),
        ({"fit": {"objective": "weighted"}}, "fit.objective_weights"),
        ({"fit": {"kl_weight": -1}}, "fit.kl_weight"),
        ({"fit": {"bootstrap_level": 1.5}}, "fit.bootstrap_level"),
        ({"fit": {"cv_folds": 1}}, "fit.cv_folds"),
        ({"eval": {"every": -5}}, "eval.every"),
        ({"eval": {"domains": "code"}}, "eval.domains"),
        ({"fit": [1, 2]}, "fit: must be a mapping"),
    ],
)
def test_bad_specs_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_search_spec(_raw(**change), source="spec.yaml")
    assert field in str(info.value) and "spec.yaml" in str(info.value)


def test_bad_override_and_base_are_reported() -> None:
    with pytest.raises(ConfigError, match="section"):
        parse_search_spec(_raw(), overrides=["runs=3"])
    with pytest.raises(ConfigError, match="base"):
        parse_search_spec(_raw(base=[1]))
    with pytest.raises(ConfigError, match=r"swarm\.bogus"):
        parse_search_spec(_raw(), overrides=["swarm.bogus=1"])
