"""Config loading, overrides and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixlab.config import RunConfig, apply_override, describe_fields, resolved, saved_config
from mixlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_recipes_load_and_validate():
    for recipe in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = RunConfig.load(recipe, ["data.store=somewhere"])
        assert cfg.data.store == "somewhere", recipe


def test_overrides_parse_yaml_values():
    cfg = RunConfig.load(
        None,
        [
            "train.lr=1e-3",
            "train.max_steps=7",
            "mixing.weights={a: 0.5, b: 0.5}",
            "mixing.name=fixed",
            "train.tensorboard=true",
            "model.preset=null",
            "model.config_path=c.json",
        ],
    )
    assert cfg.train.lr == 1e-3 and cfg.train.max_steps == 7
    assert cfg.mixing.weights == {"a": 0.5, "b": 0.5}
    assert cfg.train.tensorboard is True and cfg.model.preset is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_step=3", "unknown field.*max_step.*allowed:.*max_steps"),
        ("trian.lr=1", "unknown field.*trian"),
        ("train.max_steps=abc", "train.max_steps: expected an integer"),
        ("train.max_steps=0", "train.max_steps: must be an integer >= 1"),
        ("train.precision=fp8", "train.precision: 'fp8' is not one of auto, bf16, fp32"),
        ("mixing.sampling=random", "mixing.sampling"),
        ("mixing.temperature=0", "mixing.temperature: an option of temperature, not of"),
        ("train.lr=-1", "train.lr"),
        ("model.config_path=x.json", "exactly one of model.preset"),
        ("nodots", "section.field=value"),
    ],
)
def test_validation_names_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.load(None, [override])


def test_round_trip_through_yaml(tmp_path):
    cfg = RunConfig.load(None, ["mixing.name=uniform", "train.seed=3"])
    cfg.save(tmp_path / "c.yaml")
    again = RunConfig.load(tmp_path / "c.yaml")
    assert again == cfg


def test_bad_yaml_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.load(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.load(tmp_path / "missing.yaml")


def test_apply_override_rejects_non_section():
    raw = {"train": 3}
    with pytest.raises(ConfigError, match="not a section"):
        apply_override(raw, "train.lr=1")


def test_every_field_is_documented():
    text = describe_fields()
    assert "train.max_steps" in text and "mixing.update_every" in text
    for line in text.splitlines():
        if line.startswith("      "):
            assert line.strip(), "a field without help text"


def test_meco_can_be_switched_on_in_every_recipe():
    for recipe in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = RunConfig.load(recipe, ["data.store=somewhere", "meco.enabled=true"])
        assert cfg.meco.enabled and cfg.meco.metadata_template == "URL: {host}\n\n", recipe


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("meco.cooldown_fraction=1.5", "meco.cooldown_fraction: must be a number <= 1"),
        ("meco.packing=flat", "meco.packing: 'flat' is not one of doc_masked, pad, concat"),
        ("meco.fill=greedy", "meco.fill"),
        ("meco.metadata_variant=path", "meco.metadata_variant"),
        ("meco.missing_metadata=drop", "meco.missing_metadata"),
        ('meco.metadata_template="URL: {url}"', "meco.metadata_template: .* not a valid"),
        ("meco.max_prefix_tokens=0", "meco.max_prefix_tokens"),
        ("eval.document_modes=[uncond,cond_random]", "eval.document_modes: 'cond_random'"),
        ("eval.document_modes=[cond_fixed]", "eval.fixed_prefix is empty"),
        ("eval.document_modes=5", "eval.document_modes: expected a list"),
    ],
)
def test_meco_validation_names_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.load(None, [override])


def test_meco_seq_len_must_leave_room_for_documents():
    with pytest.raises(ConfigError, match=r"data\.seq_len=40 is too short"):
        RunConfig.load(None, ["meco.enabled=true", "data.seq_len=40", "meco.max_prefix_tokens=38"])
    RunConfig.load(None, ["data.seq_len=40", "meco.max_prefix_tokens=38"])  # meco off: fine


def test_list_fields_accept_yaml_lists_and_comma_strings():
    a = RunConfig.load(None, ["eval.document_modes=[uncond, cond_true]"])
    b = RunConfig.load(None, ["eval.document_modes=uncond,cond_true"])
    assert a.eval.document_modes == b.eval.document_modes == ["uncond", "cond_true"]
    assert RunConfig().eval.document_modes == []


def test_configs_of_earlier_versions_still_load():
    old = {"mixing": {"name": "acodm", "acodm": {"policy_in": "p.pt", "policy_out": None}}}
    cfg = RunConfig.from_dict(old)
    assert cfg.mixing.policy_in == "p.pt" and cfg.mixing.policy_out is None
    # 0.1 saved every policy's section with every run: only the chosen one is kept.
    every = {"odm": {"alpha": 0.5}, "doremi": {"eta": 2.0}, "acodm": {"hidden": 8}}
    cfg = RunConfig.from_dict({"mixing": {"name": "odm", "temperature": 1.0, **every}})
    assert cfg.mixing.odm.alpha == 0.5 and set(cfg.to_dict()["mixing"]) >= {"odm", "name"}
    assert "acodm" not in cfg.to_dict()["mixing"] and "temperature" not in cfg.to_dict()["mixing"]


def test_an_acodm_run_saved_before_the_mixlab_variant_stays_the_papers():
    saved = RunConfig.from_dict({"mixing": {"name": "acodm"}}).to_dict()
    assert saved["mixing"]["acodm"]["variant"] == "mixlab"  # the default, saved with the run
    del saved["mixing"]["acodm"]["variant"]  # how an earlier mixlab saved it
    assert saved_config(saved).mixing.acodm.variant == "paper"
    assert resolved(saved)["mixing"]["acodm"]["variant"] == "paper"
    # a recipe is not a saved config: there no variant means the default
    assert RunConfig.from_dict(saved).mixing.acodm.variant == "mixlab"


def test_mixing_is_tagged_by_policy():
    cfg = RunConfig.load(None, ["mixing.name=temperature", "mixing.temperature=2"])
    assert cfg.mixing.temperature == 2.0
    common = {"name", "update_every", "sampling", "max_epochs"}
    assert set(RunConfig().to_dict()["mixing"]) == common
    with pytest.raises(ConfigError, match=r"mixing\.weights: an option of fixed, not of mixing"):
        RunConfig.load(None, ["mixing.name=uniform", "mixing.weights={a: 1}"])
    with pytest.raises(ConfigError, match=r"mixing\.policy_in: an option of acodm"):
        RunConfig.load(None, ["mixing.name=odm", "mixing.policy_in=p.pt"])
    # a section set to null is dropped: how a recipe's section is cleared for another policy
    RunConfig.load(None, ["mixing.name=uniform", "mixing.doremi=null"])
    with pytest.raises(ConfigError, match=r"mixing\.temperature: must be a number > 0"):
        RunConfig.load(None, ["mixing.name=temperature", "mixing.temperature=0"])
    with pytest.raises(ConfigError, match=r"mixing\.name: unknown policy 'odmm'"):
        RunConfig.load(None, ["mixing.name=odmm"])
