"""Portable AC-ODM policy files (METHODS.md §2.5): weights_only loading, same action after a
save/load round trip, and ConfigError on every mismatch (domains, order, spec, format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mixlab.errors import ConfigError
from mixlab.mixing.acodm import (
    AcodmOptions,
    DdpgAgent,
    StateSpec,
    build_actor,
    load_policy_file,
    save_policy_file,
)
from mixlab.mixing.acodm.policy_file import FORMAT

DOMAINS = ("code", "prose", "web")
SPEC = StateSpec(3, 5, (0.0, 0.25, 0.5, 0.75, 1.0), "previous", 1.0)


def trained_agent() -> DdpgAgent:
    agent = DdpgAgent(
        SPEC.dim, 3, AcodmOptions(variant="paper", hidden=24, n_hidden=3, batch_size=8), seed=0
    )
    rng = np.random.default_rng(0)
    for _ in range(16):
        s = rng.normal(size=SPEC.dim)
        agent.push(s, rng.dirichlet(np.ones(3)), rng.normal(size=3), s, np.ones(3))
    for _ in range(5):
        agent.update()
    return agent


def write(path: Path, agent: DdpgAgent, **kw: object) -> Path:
    args: dict = dict(
        domains=DOMAINS,
        state_spec=SPEC,
        hidden=24,
        n_hidden=3,
        actor_state=agent.actor_state(),
        critic_output="vector",
        critic_state=agent.critic_state(),
        provenance={"proxy_params": 123_456, "steps": 5, "seed": 0, "run": Path("/runs/x")},
    )
    args.update(kw)
    return save_policy_file(path, **args)


def test_round_trip_gives_the_same_action(tmp_path: Path) -> None:
    agent = trained_agent()
    path = write(tmp_path / "sub" / "p.acodm.pt", agent)
    raw = torch.load(path, weights_only=True)  # plain types only: no pickled code
    assert raw["format"] == FORMAT and raw["domains"] == list(DOMAINS)
    pf = load_policy_file(path, DOMAINS, SPEC)
    assert (pf.hidden, pf.n_hidden, pf.critic_output) == (24, 3, "vector")
    assert pf.provenance == {"proxy_params": 123_456, "steps": 5, "seed": 0, "run": "/runs/x"}
    # A frozen agent of another configured size takes the file's architecture and weights.
    frozen = DdpgAgent(
        SPEC.dim, 3, AcodmOptions(variant="paper", hidden=pf.hidden, n_hidden=pf.n_hidden), 9
    )
    frozen.load_actor_state(pf.actor_state)
    actor = build_actor(pf)
    rng = np.random.default_rng(1)
    for _ in range(5):
        s = rng.normal(size=SPEC.dim)
        assert np.array_equal(frozen.act(s), agent.act(s))
        with torch.no_grad():
            expected = agent.actor(torch.as_tensor(s, dtype=torch.float32))
            assert torch.equal(actor(torch.as_tensor(s, dtype=torch.float32)), expected)
    assert not list(tmp_path.glob("sub/.*.tmp-*"))  # written atomically


def test_critic_is_optional(tmp_path: Path) -> None:
    path = write(tmp_path / "p.acodm.pt", trained_agent(), critic_state=None, provenance=None)
    pf = load_policy_file(path, DOMAINS, SPEC)
    assert pf.critic_state is None and pf.critic_output is None and pf.provenance == {}


@pytest.mark.parametrize(
    ("domains", "match"),
    [
        (("code", "prose"), "only in the file: \\['web'\\]"),
        (("code", "math", "prose", "web"), "missing in the file: \\['math'\\]"),
        (("prose", "code", "web"), "different order"),
    ],
)
def test_domain_mismatch_raises(tmp_path: Path, domains: tuple[str, ...], match: str) -> None:
    path = write(tmp_path / "p.acodm.pt", trained_agent())
    with pytest.raises(ConfigError, match=match):
        load_policy_file(path, domains, SPEC)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (StateSpec(3, 3, (0.0, 0.5, 1.0), "previous", 1.0), "D: file 5 vs run 3"),
        (StateSpec(3, 5, SPEC.depth_points, "first", 1.0), "delta_reference"),
        (StateSpec(3, 5, SPEC.depth_points, "previous", 100.0), "progress_scale"),
        (StateSpec(3, 5, (0.0, 0.2, 0.5, 0.8, 1.0), "previous", 1.0), "depth_points"),
    ],
)
def test_spec_mismatch_raises(tmp_path: Path, spec: StateSpec, match: str) -> None:
    path = write(tmp_path / "p.acodm.pt", trained_agent())
    with pytest.raises(ConfigError, match=match):
        load_policy_file(path, DOMAINS, spec)


def test_missing_foreign_and_future_files_raise(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_policy_file(tmp_path / "nope.acodm.pt", DOMAINS, SPEC)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ConfigError, match="not an AC-ODM policy file"):
        load_policy_file(foreign, DOMAINS, SPEC)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="not a readable"):
        load_policy_file(garbage, DOMAINS, SPEC)
    path = write(tmp_path / "p.acodm.pt", trained_agent())
    raw = torch.load(path, weights_only=True)
    raw["version"] = 99
    torch.save(raw, path)
    with pytest.raises(ConfigError, match="version 99"):
        load_policy_file(path, DOMAINS, SPEC)


def test_format_1_files_load_as_paper_and_are_refused_by_mixlab(tmp_path: Path) -> None:
    agent = trained_agent()
    path = write(tmp_path / "old.acodm.pt", agent)
    raw = torch.load(path, weights_only=True)
    raw["version"] = 1  # what mixlab < 0.3 wrote: no kind, no bound, no prior
    del raw["actor"]["bound"], raw["actor"]["prior"], raw["state_spec"]["kind"]
    del raw["state_spec"]["ema"]
    torch.save(raw, tmp_path / "v1.acodm.pt")
    pf = load_policy_file(tmp_path / "v1.acodm.pt", DOMAINS, SPEC)
    assert pf.bound is None and pf.prior == "uniform" and pf.state_spec.kind == "paper"
    mixlab_spec = StateSpec(3, 0, (), "previous", 1.0, kind="mixlab", ema=0.1)
    with pytest.raises(ConfigError, match=r"format-1 file .*variant=paper"):
        load_policy_file(tmp_path / "v1.acodm.pt", DOMAINS, mixlab_spec, bound=1.0)
    with pytest.raises(ConfigError, match=r"bound=None, prior='uniform'; this run has bound=1.0"):
        load_policy_file(path, DOMAINS, SPEC, bound=1.0)
    raw["version"] = 3
    torch.save(raw, tmp_path / "v3.acodm.pt")
    with pytest.raises(ConfigError, match="reads versions 1, 2"):
        load_policy_file(tmp_path / "v3.acodm.pt", DOMAINS, SPEC)
