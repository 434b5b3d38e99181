"""AC-ODM in the training loop: online / proxy -> frozen target, ablation, fine-tune, resume,
the held-out pass of the mixlab variant (no side effect on training), the paper variant.

Each run trains a ~100K-parameter model for a few steps on the tiny store, with a small agent
(hidden 16, replay minibatch 4, warm-up 6 steps) so the main phase is reached quickly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mixlab.config import RunConfig
from mixlab.errors import ConfigError
from mixlab.mixing.acodm import load_policy_file, save_policy_file
from mixlab.train.callbacks import read_metrics
from mixlab.train.checkpoint import load_checkpoint
from mixlab.train.loop import Trainer, train
from tests.conftest import DOMAINS, tiny_run_config
from tests.helpers import KillAt

AGENT = {"hidden": 16, "n_hidden": 1, "batch_size": 4, "buffer_size": 100, "warmup_steps": 6}


def acodm_cfg(store: Path, mixing: dict[str, Any] | None = None, **train_kw: Any) -> RunConfig:
    train_kw = {"max_steps": 14, "batch_size": 8, "log_every": 1, "eval_every": 7, **train_kw}
    raw = tiny_run_config(store, **train_kw)
    raw["eval"]["max_tokens_per_domain"] = 512  # leaves unscored text for the held-out reward
    raw["mixing"] = {"name": "acodm", **(mixing or {})}
    raw["mixing"]["acodm"] = {**AGENT, **raw["mixing"].get("acodm", {})}
    cfg = RunConfig.from_dict(raw)
    cfg.validate()
    return cfg


def weight_rows(run: Path) -> dict[int, np.ndarray]:
    names = sorted(DOMAINS)
    return {
        r["step"]: np.array([r[f"mix/weight/{d}"] for d in names])
        for r in read_metrics(run)
        if "train/loss" in r
    }


@pytest.fixture(scope="module")
def proxy_run(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("acodm") / "proxy"
    held_out = {"reward": "heldout_alignment"}  # the gradient paths (the default is loss)
    train(
        acodm_cfg(tiny_store, {"policy_out": str(run / "proxy.acodm.pt"), "acodm": held_out}), run
    )
    return run


def test_the_default_loss_reward_runs_without_probes(tiny_store: Path, tmp_path: Path) -> None:
    trainer = Trainer(acodm_cfg(tiny_store), tmp_path / "loss")
    assert trainer.policy.opts.reward == "loss"  # type: ignore[attr-defined]
    assert trainer.probes is None  # no hook, no held-out pass
    trainer.fit()
    last = [r for r in read_metrics(tmp_path / "loss") if "train/loss" in r][-1]
    assert all(np.isfinite(last[f"mix/acodm/reward/{d}"]) for d in DOMAINS)
    assert last["mix/acodm/actor_drift"] > 0 and "mix/capture_seconds" not in last


def test_proxy_run_learns_online_and_writes_a_policy_file(proxy_run: Path) -> None:
    records = read_metrics(proxy_run)
    last = [r for r in records if "train/loss" in r][-1]
    for d in DOMAINS:
        assert np.isfinite(last[f"mix/acodm/reward/{d}"])
        assert f"mix/p_eff/{d}" in last and f"mix/requested/{d}" in last
    assert last["mix/acodm/phase"] == 1.0
    assert last["mix/acodm/actor_drift"] > 0  # the actor really learns
    assert last["mix/capture_seconds"] > 0
    assert [r["step"] for r in records if "mix/heldout_seconds" in r] == [1, 11]  # every 10
    for key in ("critic_loss", "actor_loss", "mean_q", "kl", "max_log_ratio", "bound"):
        assert np.isfinite(last[f"mix/acodm/{key}"]), key
    evals = [r for r in records if "eval/mean_ppl" in r]
    assert any(k.startswith("mix/acodm/cos/") for k in evals[0])
    # Every step drew at least one sequence of every domain (the floor).
    assert all(r[f"mix/achieved/{d}"] > 0 for d in DOMAINS for r in records if "train/loss" in r)
    policy = load_checkpoint(proxy_run)["policy"]
    steps = [r for r in records if "train/loss" in r]
    assert all(r["mix/acodm/bound_excess"] == 0.0 for r in steps)  # never outside the bound
    assert all(np.isfinite(r[f"mix/acodm/heldout_loss/{d}"]) for r in steps for d in DOMAINS)
    pf = _load(proxy_run / "proxy.acodm.pt")
    assert pf.bound == 1.0 and pf.prior == "uniform" and pf.state_spec.kind == "mixlab"
    assert pf.provenance["steps"] == policy["step"] == 14
    assert pf.provenance["model_params"] > 0 and pf.critic_state is not None


def _spec():
    from mixlab.mixing.acodm import AcodmOptions, state_spec

    return state_spec(AcodmOptions(), len(DOMAINS))


def _load(path: Path, domains: tuple[str, ...] = tuple(sorted(DOMAINS))):
    return load_policy_file(path, domains, _spec(), bound=1.0)


def test_frozen_target_of_another_family_never_captures(
    proxy_run: Path, tiny_store: Path, tmp_path: Path
) -> None:
    policy_file = proxy_run / "proxy.acodm.pt"
    cfg = acodm_cfg(tiny_store, {"policy_in": str(policy_file)})
    cfg.model.preset = "neox-tiny"
    cfg.model.overrides = {"num_hidden_layers": 3, "hidden_size": 48}
    trainer = Trainer(cfg, tmp_path / "target")
    assert trainer.policy.opts.mode == "frozen"  # type: ignore[attr-defined]
    assert trainer.probes is None  # the mixlab state needs nothing from inside the model
    actor = trainer.policy.agent.actor  # type: ignore[attr-defined]
    before = {k: v.clone() for k, v in actor.state_dict().items()}
    trainer.fit()
    after = actor.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    file_actor = _load(policy_file, trainer.domains).actor_state
    assert all(torch.equal(file_actor[k], after[k]) for k in after)
    last = [r for r in read_metrics(tmp_path / "target") if "train/loss" in r][-1]
    assert last["mix/acodm/agent_updates"] == 0 and "mix/capture_seconds" not in last
    assert "mix/heldout_seconds" not in last
    assert not (tmp_path / "target" / "policy.acodm.pt").exists()


def test_fine_tuning_starts_from_the_file(
    proxy_run: Path, tiny_store: Path, tmp_path: Path
) -> None:
    policy_file = proxy_run / "proxy.acodm.pt"
    online = {"mode": "online", "reward": "heldout_alignment"}
    cfg = acodm_cfg(tiny_store, {"policy_in": str(policy_file), "acodm": online})
    trainer = Trainer(cfg, tmp_path / "ft")
    assert trainer.probes is not None and trainer.probes.capture is not None
    assert trainer.probes.heldout is not None
    file_actor = _load(policy_file, trainer.domains).actor_state
    actor = trainer.policy.agent.actor  # type: ignore[attr-defined]
    assert all(torch.equal(file_actor[k], v) for k, v in actor.state_dict().items())
    trainer.fit()
    assert any(not torch.equal(file_actor[k], v) for k, v in actor.state_dict().items())


def test_policy_file_of_other_domains_is_refused(
    proxy_run: Path, tiny_store: Path, tmp_path: Path
) -> None:
    pf = _load(proxy_run / "proxy.acodm.pt")
    other = ("alpha", "beta", "gamma", "delta")
    path = save_policy_file(
        tmp_path / "other.acodm.pt",
        domains=tuple(sorted(other)),
        state_spec=pf.state_spec,
        hidden=pf.hidden,
        n_hidden=pf.n_hidden,
        bound=pf.bound,
        actor_state=pf.actor_state,
    )
    with pytest.raises(ConfigError, match="trained on domains"):
        Trainer(acodm_cfg(tiny_store, {"policy_in": str(path)}), tmp_path / "t")
    with pytest.raises(ConfigError, match=r"bound=1\.0"):  # the same file, another bound
        cfg = acodm_cfg(tiny_store, {"policy_in": str(proxy_run / "proxy.acodm.pt")})
        cfg.mixing.acodm.bound = 0.5  # type: ignore[attr-defined]
        Trainer(cfg, tmp_path / "t2")


def test_release_ablation_keeps_the_actor_at_init(tiny_store: Path, tmp_path: Path) -> None:
    cfg = acodm_cfg(tiny_store, {"acodm": {"preset": "acodm_release"}})
    trainer = train(cfg, tmp_path / "release")
    assert trainer.probes is not None and trainer.probes.heldout is None  # paper: train Gram
    assert trainer.probes.tracker is not None  # and the paper state's weight norms
    last = [r for r in read_metrics(tmp_path / "release") if "train/loss" in r][-1]
    assert last["mix/acodm/actor_drift"] == 0.0 and last["mix/acodm/critic_drift"] > 0
    assert "mix/acodm/bound" not in last and "mix/heldout_seconds" not in last


def test_heldout_pass_leaves_training_untouched(tiny_store: Path, tmp_path: Path) -> None:
    """An untrained mixlab actor without noise outputs p0: with and without the held-out pass the
    mixtures are the same, so the LM's loss curve must be bit-identical (the pass changes no
    gradient, no weight and no RNG state)."""
    curves = {}
    for reward in ("heldout_alignment", "alignment"):
        acodm = {"train_actor": False, "reward": reward, "exploration": "none"}
        run = tmp_path / reward
        train(acodm_cfg(tiny_store, {"acodm": acodm}, eval_every=0), run)
        rows = [r for r in read_metrics(run) if "train/loss" in r]
        curves[reward] = [r["train/loss"] for r in rows]
        assert all(r["mix/weight/code"] == pytest.approx(0.25) for r in rows)
    assert curves["heldout_alignment"] == curves["alignment"]


def assert_resumes_exactly(cfg: RunConfig, root: Path, kill_at: int) -> None:
    """Train ``root/full`` whole and ``root/part`` stopped after step ``kill_at`` and resumed:
    the mixtures of every step are the same."""
    train(cfg, root / "full")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, root / "part", callbacks=[KillAt(kill_at)])
    train(cfg, root / "part", resume=True)
    full, part = weight_rows(root / "full"), weight_rows(root / "part")
    assert sorted(full) == sorted(part) == list(range(1, cfg.train.max_steps + 1))
    for step in full:
        np.testing.assert_array_equal(full[step], part[step], err_msg=f"step {step}")


def test_resume_in_the_main_phase_is_exact(tiny_store: Path, tmp_path: Path) -> None:
    assert_resumes_exactly(acodm_cfg(tiny_store, checkpoint_every=100, eval_every=0), tmp_path, 9)


def test_policy_out_needs_a_policy_that_exports(tiny_store: Path, tmp_path: Path) -> None:
    raw = tiny_run_config(tiny_store)
    raw["mixing"] = {"name": "uniform", "policy_out": str(tmp_path / "p.pt")}
    with pytest.raises(ConfigError, match=r"mixing\.policy_out: an option of acodm"):
        Trainer(RunConfig.from_dict(raw), tmp_path / "run")


def test_heldout_progress_probes_forward_only_and_resumes_exactly(
    tiny_store: Path, tmp_path: Path
) -> None:
    """``progress_loss: heldout``: a loss-only probe every heldout_every steps (no hook, no
    gradient), its losses in the logs, and a resume between two probes gives the same
    mixtures as the uninterrupted run."""
    acodm = {"reward": "progress", "progress_loss": "heldout", "heldout_every": 4}
    cfg = acodm_cfg(tiny_store, {"acodm": acodm}, checkpoint_every=100, eval_every=0)
    trainer = Trainer(cfg, tmp_path / "probe")
    assert trainer.probes is not None and trainer.probes.capture is None
    assert trainer.probes.heldout is not None and trainer.probes.heldout.capture is None
    assert_resumes_exactly(cfg, tmp_path, 10)
    records = [r for r in read_metrics(tmp_path / "full") if "train/loss" in r]
    assert [r["step"] for r in records if "mix/heldout_seconds" in r] == [1, 5, 9, 13]
    last = records[-1]
    assert all(np.isfinite(last[f"mix/acodm/heldout_loss/{d}"]) for d in DOMAINS)
