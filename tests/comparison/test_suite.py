"""Suite files: parsing, validation errors, placeholders, baselines, planning."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mixlab.comparison import load_suite, parse_suite
from mixlab.errors import ConfigError

BASE = {"data": {"store": "shards", "seq_len": 32}, "model": {"preset": "llama-tiny"}}


def suite_dict(**extra: object) -> dict:
    raw: dict = {
        "name": "t",
        "base": BASE,
        "seeds": [0, 1],
        "runs": [
            {"name": "odm", "set": {"mixing.name": "odm"}},
            {
                "name": "acodm",
                "stages": [
                    {
                        "name": "proxy",
                        "set": {"mixing.name": "acodm", "mixing.policy_out": "{dir}/p.pt"},
                    }
                ],
                "set": {"mixing.name": "acodm", "mixing.policy_in": "{stage:proxy}/p.pt"},
            },
        ],
    }
    raw.update(extra)
    return raw


def test_baselines_are_added_first_unless_disabled() -> None:
    base = ["uniform", "natural", "unimax", "stratified"]
    assert parse_suite(suite_dict()).methods == [*base, "odm", "acodm"]
    stratified = parse_suite(suite_dict()).runs[3]
    assert dict(stratified.overrides) == {"mixing.name": "uniform", "mixing.sampling": "stratified"}
    raw = suite_dict(include_baselines=False, baseline="odm")
    assert parse_suite(raw).methods == ["odm", "acodm"]


def test_plan_resolves_folders_seeds_and_placeholders(tmp_path: Path) -> None:
    jobs = parse_suite(suite_dict()).plan(tmp_path)
    assert [(j.method, j.seed) for j in jobs][:6] == [
        ("uniform", 0),
        ("natural", 0),
        ("unimax", 0),
        ("stratified", 0),
        ("odm", 0),
        ("acodm", 0),
    ]
    assert len(jobs) == 12
    acodm = next(j for j in jobs if j.method == "acodm" and j.seed == 1)
    proxy = acodm.stages[0]
    assert acodm.dir == tmp_path / "acodm" / "seed1"
    assert proxy.dir == acodm.dir / "stages" / "proxy"
    assert proxy.config.mixing.policy_out == str(proxy.dir / "p.pt")
    assert acodm.main.config.mixing.policy_in == str(proxy.dir / "p.pt")
    assert acodm.main.config.train.seed == 1
    assert proxy.config.train.seed == 1
    assert acodm.main.tokens == (
        acodm.main.config.train.max_steps * acodm.main.config.train.batch_size * 32
    )


def test_placeholders_in_a_list(tmp_path: Path) -> None:
    """mixing.headroom.runs is a list: each of its strings gets its placeholders filled."""
    headroom = {
        "name": "headroom",
        "stages": [{"name": "proxy", "set": {"mixing.name": "uniform"}}],
        "set": {"mixing.name": "headroom", "mixing.headroom.runs": ["{stage:proxy}", "x/{seed}"]},
    }
    raw = suite_dict(runs=[headroom], include_baselines=False, baseline="headroom")
    job = parse_suite(raw).plan(tmp_path)[1]
    runs = job.main.config.mixing.headroom.runs  # type: ignore[attr-defined]
    assert runs == [str(job.stages[0].dir), "x/1"]


def test_global_overrides_apply_before_run_settings(tmp_path: Path) -> None:
    suite = parse_suite(suite_dict())
    jobs = suite.plan(tmp_path, overrides=["train.max_steps=7", "mixing.name=natural"])
    odm = next(j for j in jobs if j.method == "odm")
    assert odm.main.config.train.max_steps == 7
    assert odm.main.config.mixing.name == "odm"  # the run's own set wins


def test_base_config_is_relative_to_the_suite_file(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"train": {"max_steps": 33}}))
    raw = suite_dict(base_config="recipe.yaml")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    suite = load_suite(tmp_path / "s.yaml")
    assert suite.plan(tmp_path / "out")[0].main.config.train.max_steps == 33
    assert suite.plan(tmp_path / "out")[0].main.config.model.preset == "llama-tiny"


def test_select_keeps_order_and_rejects_unknown_names() -> None:
    suite = parse_suite(suite_dict())
    base = ["uniform", "natural", "unimax", "stratified"]
    assert suite.select(exclude=["odm"]).methods == [*base, "acodm"]
    assert suite.select(["acodm", "uniform"]).methods == ["uniform", "acodm"]
    with pytest.raises(ConfigError, match="no run named 'nope'"):
        suite.select(["nope"])
    assert suite.select(exclude=["uniform"]).baseline == "natural"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"runs": []}, "'runs' must be a non-empty list"),
        ({"seeds": [0, 0]}, "distinct integers"),
        ({"seeds": "x"}, "distinct integers"),
        ({"colour": 1}, "unknown key"),
        ({"baseline": "nope"}, "baseline 'nope' is not a run"),
        ({"runs": [{"name": "a/b"}]}, "names a folder"),
        ({"runs": [{"name": "a"}, {"name": "a"}]}, "repeated: a"),
        ({"runs": [{"name": "a", "stages": [{"name": "s", "kind": "magic"}]}]}, "kind 'magic'"),
        ({"runs": [{"name": "a", "set": {"nodot": 1}}]}, "name a section and field"),
        ({"runs": [{"name": "a", "sett": {}}]}, "run 'a': unknown key"),
    ],
)
def test_invalid_suites_name_the_problem(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_suite(suite_dict(**change), source="s.yaml")


def test_bad_run_settings_name_the_run(tmp_path: Path) -> None:
    raw = suite_dict(runs=[{"name": "odm", "set": {"train.max_steps": -1}}])
    with pytest.raises(ConfigError, match=r"run 'odm'.*max_steps"):
        parse_suite(raw, source="s.yaml").plan(tmp_path)
    raw = suite_dict(runs=[{"name": "x", "set": {"mixing.weights_file": "{stage:w}/a.json"}}])
    with pytest.raises(ConfigError, match=r"\{stage:w\} names no stage"):
        parse_suite(raw, source="s.yaml").plan(tmp_path)


def test_shipped_suites_parse() -> None:
    from mixlab.demo import demo_suite

    demo = demo_suite()
    assert demo.methods == [
        *["uniform", "natural", "unimax", "stratified"],
        *["search", "odm", "doremi", "acodm", "meco"],
    ]
    jobs = demo.plan("/tmp/x", overrides=["data.store=/tmp/s"])
    assert {s.kind for j in jobs for s in j.stages} == {"doremi", "search", "train"}
    suites = sorted((Path(__file__).parents[2] / "configs" / "suites").glob("*.yaml"))
    assert len(suites) >= 2
    for path in suites:
        suite = load_suite(path)
        assert {"uniform", "natural", "unimax", "stratified"} <= set(suite.methods)
        assert suite.plan("/tmp/x", overrides=["data.store=/tmp/s"])


def search_suite(**stage: object) -> dict:
    return {
        "name": "s",
        "base": {**BASE, "train": {"max_steps": 400, "batch_size": 8}},
        "seeds": [0, 1],
        "include_baselines": False,
        "runs": [
            {
                "name": "search",
                "stages": [
                    {
                        "name": "swarm",
                        "kind": "search",
                        "set": {"train.max_steps": 50},
                        **stage,
                    }
                ],
                "set": {
                    "mixing.name": "fixed",
                    "mixing.weights_file": "{stage:swarm}/search_weights.json",
                },
            }
        ],
        "baseline": "search",
    }


def test_search_stage_targets_the_main_run_and_seeds_its_swarm(tmp_path: Path) -> None:
    suite = parse_suite(search_suite(search={"swarm": {"runs": 5}, "fit": {"law": "linear"}}))
    jobs = suite.plan(tmp_path)
    job = jobs[1]
    (stage,) = job.stages
    assert stage.kind == "search" and stage.search is not None
    spec = stage.search
    assert spec["target"] == {"max_steps": 400, "tokens_per_step": 8 * 32}
    assert spec["base"] == stage.config.to_dict() and spec["base"]["train"]["max_steps"] == 50
    assert spec["swarm"]["runs"] == 5 and spec["swarm"]["proxy_seeds"] == [1]
    assert spec["swarm"]["seed"] == 1 and spec["fit"]["law"] == "linear"
    assert not stage.allow_unrecommended
    assert job.main.config.mixing.weights_file == str(stage.dir / "search_weights.json")
    own = parse_suite(
        search_suite(search={"target": {"tokens": 10**6}, "allow_unrecommended": True})
    ).plan(tmp_path)[0]
    assert own.stages[0].search["target"] == {"tokens": 10**6}
    assert own.stages[0].allow_unrecommended


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"kind": "train", "search": {"swarm": {}}}, "need kind: search"),
        ({"search": {"swarms": {}}}, "search.swarms"),
        ({"search": [1]}, "'search' must map"),
        ({"search": {"swarm": {"prior": "zipf"}}}, "swarm.prior"),
    ],
)
def test_search_stage_errors_name_the_stage(tmp_path: Path, stage: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_suite(search_suite(**stage), source="s.yaml").plan(tmp_path)
    assert "s.yaml" in str(info.value)


def branched_suite(**trunk: object) -> dict:
    """Two runs that branch at step 30 of 300 from a shared uniform trunk."""
    stage = {
        "name": "trunk",
        "shared": True,
        "set": {"mixing.name": "uniform", "train.max_steps": 30, "train.schedule_steps": 300},
        **trunk,
    }
    return {
        "name": "b",
        "base": {**BASE, "train": {"max_steps": 300, "batch_size": 8}},
        "seeds": [0, 1],
        "include_baselines": False,
        "runs": [
            {
                "name": name,
                "stages": [stage],
                "set": {"mixing.name": name, "train.branch_from": "{stage:trunk}"},
            }
            for name in ("uniform", "natural")
        ],
    }


def test_a_shared_stage_has_one_folder_per_seed_and_a_branch_counts_its_own_steps(
    tmp_path: Path,
) -> None:
    jobs = parse_suite(branched_suite()).plan(tmp_path)
    trunks = [j.stages[0] for j in jobs]
    assert [t.dir for t in trunks] == [
        tmp_path / "_shared" / f"seed{s}" / "trunk" for s in (0, 0, 1, 1)
    ]
    assert all(t.shared for t in trunks)
    assert [t.config.train.seed for t in trunks] == [j.seed for j in jobs]
    for job in jobs:
        assert job.main.config.train.branch_from == str(job.stages[0].dir)
        assert job.main.trunk_steps == 30
        # the trunk trains 30 steps, the branch the other 270: the job's tokens add up to 300
        assert job.stages[0].tokens == 30 * 8 * 32 and job.main.tokens == 270 * 8 * 32
    unshared = parse_suite(branched_suite(shared=False)).plan(tmp_path)
    assert unshared[0].stages[0].dir == tmp_path / "uniform" / "seed0" / "stages" / "trunk"
    assert unshared[0].main.tokens == 270 * 8 * 32


def test_a_shared_stage_must_be_the_same_in_every_run(tmp_path: Path) -> None:
    raw = branched_suite()
    raw["runs"][1]["stages"] = [
        {**raw["runs"][1]["stages"][0], "set": {"mixing.name": "natural", "train.max_steps": 30}}
    ]
    with pytest.raises(
        ConfigError, match=r"run 'natural', stage 'trunk': shared stage differs from run 'uniform'"
    ) as err:
        parse_suite(raw, source="s.yaml").plan(tmp_path)
    assert "(mixing.name: 'uniform' there, 'natural' now; 2 field(s) differ)" in str(err.value)
    with pytest.raises(ConfigError, match="'shared' must be true or false"):
        parse_suite(branched_suite(shared="yes"))


def test_a_suite_branch_gives_every_run_the_shared_trunk(tmp_path: Path) -> None:
    raw = suite_dict(branch={"at": 0.3}, base={**BASE, "train": {"max_steps": 300}})
    raw["runs"][0]["set"]["train.lr"] = 0.01  # odm: a trunk of its own (not a mixing field)
    # the run's own lr reaches its trunk, so it cannot share the others' (the error says why)
    with pytest.raises(ConfigError, match=r"run 'odm', stage 'trunk': shared stage differs.*lr"):
        parse_suite(raw).plan(tmp_path)
    del raw["runs"][0]["set"]["train.lr"]
    jobs = parse_suite(raw).plan(tmp_path)
    assert len(jobs) == 12 and all(j.stages[0].name == "trunk" for j in jobs)
    acodm = next(j for j in jobs if j.method == "acodm" and j.seed == 1)
    trunk, proxy = acodm.stages
    assert trunk.shared and trunk.dir == tmp_path / "_shared" / "seed1" / "trunk"
    assert trunk.config.mixing.name == "uniform" and trunk.config.train.max_steps == 90
    assert trunk.config.train.schedule_steps == 300 and proxy.name == "proxy"
    assert acodm.main.config.train.branch_from == str(trunk.dir)
    assert acodm.main.config.mixing.policy_in == str(proxy.dir / "p.pt")
    assert acodm.main.trunk_steps == 90
    # a step, and the trunk's own settings; Suite.branched (--branch-at) keeps those
    natural = parse_suite(suite_dict(branch={"at": 30, "set": {"mixing.name": "natural"}}))
    trunk = natural.plan(tmp_path)[0].stages[0]
    assert trunk.config.train.max_steps == 30 and trunk.config.mixing.name == "natural"
    trunk = natural.branched(0.5).plan(tmp_path)[0].stages[0]
    assert trunk.config.mixing.name == "natural"
    assert (
        trunk.config.train.max_steps == natural.plan(tmp_path)[0].main.config.train.max_steps // 2
    )


@pytest.mark.parametrize(
    ("branch", "message"),
    [
        ({"at": 1.5}, "a fraction between 0 and 1"),
        ({"at": "half"}, "at must be a step or a fraction"),
        ({"step": 3}, "expected a mapping with 'at'"),
        ({"at": 3, "colour": 1}, "unknown key"),
    ],
)
def test_bad_branch_settings_are_named(branch: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_suite(suite_dict(branch=branch), source="s.yaml")


def test_branching_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    from mixlab.comparison.suite import parse_branch_at

    assert parse_branch_at("90") == 90 and parse_branch_at("0.3") == 0.3
    with pytest.raises(ConfigError, match="--branch-at: 'x' is not a step"):
        parse_branch_at("x")
    late = parse_suite(suite_dict()).branched(10**6)
    with pytest.raises(ConfigError, match=r"run 'uniform': branch.at 1000000 is step 1000000 of"):
        late.plan(tmp_path)
    own = suite_dict(branch={"at": 0.5})
    own["runs"][0]["set"]["train.branch_from"] = "elsewhere"
    with pytest.raises(ConfigError, match=r"run 'odm': sets train.branch_from itself"):
        parse_suite(own).plan(tmp_path)
    own = suite_dict(branch={"at": 0.5})
    own["runs"][1]["stages"][0]["name"] = "trunk"
    own["runs"][1]["set"]["mixing.policy_in"] = "{stage:trunk}/p.pt"
    with pytest.raises(ConfigError, match=r"run 'acodm': a stage is named 'trunk'"):
        parse_suite(own).plan(tmp_path)
