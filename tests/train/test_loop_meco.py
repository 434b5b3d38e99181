"""MeCo inside one run: the phase switch at s_c, exact resume across it, LR/optimizer continuity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixlab.config import RunConfig
from mixlab.train.callbacks import read_metrics
from mixlab.train.checkpoint import load_checkpoint
from mixlab.train.loop import lr_factor, train
from mixlab.train.run_folder import RunFolder
from tests.conftest import tiny_run_config
from tests.helpers import KillAt, train_losses
from tests.train.test_distributed import ACODM, check_ddp_run, run_worker

S_C = 9  # floor(0.75 * 12)


def _cfg(store, *, meco: bool = True, mixing: dict | None = None, **train) -> RunConfig:
    raw = tiny_run_config(store, **{"eval_every": 0, "log_every": 1, **train})
    raw["data"]["seq_len"] = 64  # the tiny store's prefixes take ~20 tokens
    raw["meco"] = {"enabled": meco, "cooldown_fraction": 0.25, "max_prefix_tokens": 24}
    raw["mixing"].update(mixing or {})
    cfg = RunConfig.from_dict(raw)
    cfg.validate()
    return cfg


def _train_records(run_dir) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run_dir) if "train/loss" in r}


def test_phase_switches_at_s_c_and_the_conditioned_model_is_kept(tiny_store, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tiny_store, checkpoint_every=100), run)
    records = _train_records(run)
    assert [records[t]["train/phase"] for t in range(1, 13)] == [0] * S_C + [1] * 3
    for t in range(1, 13):
        share = records[t]["train/metadata_share"]
        assert (share > 0) if t <= S_C else (share == 0), t
        assert 0 < records[t]["train/loss_tokens"] <= records[t]["train/context_tokens"]
    assert records[12]["train/context_tokens_total"] == sum(
        records[t]["train/context_tokens"] for t in range(1, 13)
    )
    kept = load_checkpoint(RunFolder(run).condition_end)
    assert kept["step"] == S_C and not kept["finished"]
    assert load_checkpoint(run)["step"] == 12


@pytest.mark.parametrize("kill_at", [5, S_C, 10])
def test_resume_before_at_and_after_the_switch_gives_the_same_losses(tiny_store, tmp_path, kill_at):
    cfg = _cfg(tiny_store, checkpoint_every=100)
    train(cfg, tmp_path / "full")
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, part, callbacks=[KillAt(kill_at)])
    assert load_checkpoint(part)["step"] == kill_at
    train(cfg, part, resume=True)
    a, b = _train_records(tmp_path / "full"), _train_records(part)
    assert sorted(a) == sorted(b) == list(range(1, 13))
    for t in range(1, 13):
        for key in ("train/loss", "train/lr", "train/phase", "train/loss_tokens_total"):
            assert a[t][key] == pytest.approx(b[t][key], rel=1e-6, abs=1e-7), (t, key)
    assert load_checkpoint(RunFolder(part).condition_end)["step"] == S_C


def test_lr_and_optimizer_moments_continue_through_the_switch(tiny_store, tmp_path):
    cfg = _cfg(tiny_store, checkpoint_every=100)
    # The continuous run, stopped just after s_c.
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "continuous", callbacks=[KillAt(S_C + 1)])
    # A run stopped at s_c, resumed from the s_c checkpoint and stopped after s_c + 1.
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", callbacks=[KillAt(S_C)])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", resume=True, callbacks=[KillAt(S_C + 1)])
    a, b = load_checkpoint(tmp_path / "continuous"), load_checkpoint(tmp_path / "resumed")
    assert a["step"] == b["step"] == S_C + 1
    for pid, moments in a["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(b["optimizer"]["state"][pid][key], moments[key])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == S_C + 1
    # LR at s_c and s_c + 1: the one schedule a run without MeCo follows too.
    train(_cfg(tiny_store, meco=False), tmp_path / "plain")
    meco_lr = {t: r["train/lr"] for t, r in _train_records(tmp_path / "resumed").items()}
    plain_lr = {t: r["train/lr"] for t, r in _train_records(tmp_path / "plain").items()}
    t_cfg = cfg.train
    for t in (S_C, S_C + 1):
        expected = t_cfg.lr * lr_factor(t, t_cfg.warmup_steps, t_cfg.max_steps, t_cfg.min_lr_ratio)
        assert meco_lr[t] == pytest.approx(expected) == pytest.approx(plain_lr[t])


@pytest.mark.parametrize(
    ("policy", "sampling"),
    [
        ("uniform", "mixed"),
        ("odm", "homogeneous"),
        ("odm-smoothed", "stratified"),
        ("acodm", "homogeneous"),
    ],
)
def test_meco_combines_with_mixing_policies(tiny_store, tmp_path, policy, sampling):
    extra = {"acodm": ACODM} if policy == "acodm" else {}
    cfg = _cfg(
        tiny_store,
        mixing={"name": policy, "sampling": sampling, **extra},
        max_steps=8,
        batch_size=2,
        grad_accum=4,
    )
    trainer = train(cfg, tmp_path / policy)
    records = _train_records(tmp_path / policy)
    assert [records[t]["train/phase"] for t in range(1, 9)] == [0] * 6 + [1] * 2
    assert all(np.isfinite(r["train/loss"]) for r in records.values())
    weights = trainer.policy.weights()
    assert abs(weights.sum() - 1) < 1e-6 and (weights >= 0).all()
    shares = trainer.sampler.achieved_shares()
    assert shares.sum() == pytest.approx(1.0)


def test_document_eval_modes_are_logged_during_training(tiny_store, tmp_path):
    cfg = _cfg(tiny_store, max_steps=4)
    cfg.eval.document_modes = ["uncond", "cond_true"]
    train(cfg, tmp_path / "run")
    (final,) = [r for r in read_metrics(tmp_path / "run") if "eval/mean_ppl" in r]
    for mode in ("uncond", "cond_true"):
        assert np.isfinite(final[f"eval_{mode}/natural_loss"])
    assert final["eval_uncond/natural_loss"] != final["eval_cond_true/natural_loss"]
    assert train_losses(tmp_path / "run")


@pytest.mark.slow
@pytest.mark.distributed
def test_meco_under_ddp_ranks_agree_and_match_one_process(tiny_store, tmp_path):
    """2 gloo ranks pack different documents of the same global step as one process does."""
    raw = _cfg(tiny_store, mixing={"name": "odm-smoothed", "odm": {"warmup_steps": 2}}).to_dict()
    raw["train"].update(max_steps=8, batch_size=4)  # s_c = 6: the switch happens under DDP
    run_worker(tmp_path, raw, tmp_path / "ddp")
    check_ddp_run(tmp_path / "ddp", raw, tmp_path)
    phases = [r["train/phase"] for r in read_metrics(tmp_path / "ddp") if "train/phase" in r]
    assert phases == [0] * 6 + [1] * 2
    assert load_checkpoint(RunFolder(tmp_path / "ddp").condition_end)["step"] == 6
