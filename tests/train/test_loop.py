"""End-to-end training on a tiny store: metrics, checkpoints, exact resume, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixlab.config import RunConfig
from mixlab.errors import ConfigError, ResumeError
from mixlab.train.callbacks import read_metrics
from mixlab.train.checkpoint import load_checkpoint
from mixlab.train.loop import lr_factor, train
from tests.conftest import DOMAINS, tiny_run_config
from tests.helpers import KillAt, train_losses


def _cfg(store, **train_overrides) -> RunConfig:
    cfg = RunConfig.from_dict(tiny_run_config(store, **train_overrides))
    cfg.validate()
    return cfg


def test_train_writes_metrics_checkpoint_and_eval(tiny_store, tmp_path):
    trainer = train(_cfg(tiny_store), tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "eval.json").is_file()
    records = read_metrics(run)
    train_recs = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train_recs] == [2, 4, 6, 8, 10, 12]
    first = train_recs[0]
    for d in sorted(DOMAINS):
        assert math.isclose(sum(first[f"mix/weight/{x}"] for x in DOMAINS), 1.0, abs_tol=1e-9)
        assert f"mix/achieved/{d}" in first and f"domain/{d}/epochs" in first
    eval_recs = [r for r in records if "eval/mean_ppl" in r]
    assert [r["step"] for r in eval_recs] == [6, 12]
    assert all(np.isfinite(r["eval/natural_ppl"]) for r in eval_recs)
    state = load_checkpoint(run)
    assert state["step"] == 12 and state["finished"]
    assert trainer.last_eval is not None
    # Loss goes down on this learnable corpus.
    assert train_recs[-1]["train/loss"] < train_recs[0]["train/loss"]


def test_resume_gives_the_same_loss_curve(tiny_store, tmp_path):
    cfg = _cfg(tiny_store, max_steps=12, checkpoint_every=100, eval_every=0, log_every=1)
    train(cfg, tmp_path / "full")

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, part, callbacks=[KillAt(5)])
    assert load_checkpoint(part)["step"] == 5  # saved on the way out
    # A torn, later record that a crash could leave behind is dropped on resume.
    with open(part / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 6, "train/loss": 123.0}\n{"step": 7, "tra')

    train(cfg, part, resume=True)
    a, b = train_losses(tmp_path / "full"), train_losses(part)
    assert sorted(a) == sorted(b) == list(range(1, 13))
    for step in range(1, 13):
        assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-7), step


def test_refuses_to_overwrite_and_resume_needs_checkpoint(tiny_store, tmp_path):
    cfg = _cfg(tiny_store, max_steps=2, eval_every=0)
    train(cfg, tmp_path / "r")
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, tmp_path / "r")
    with pytest.raises(ResumeError, match="no checkpoint"):
        train(cfg, tmp_path / "empty", resume=True)


def test_resume_with_other_store_is_refused(tiny_store, tmp_path, pile_dir):
    from mixlab.data.prepare import prepare_store
    from mixlab.data.readers import iter_documents

    train(_cfg(tiny_store, max_steps=2, eval_every=0), tmp_path / "r")
    other = tmp_path / "other"
    prepare_store(
        lambda: iter_documents([pile_dir], domain_from="field", domain_field="meta.pile_set_name"),
        other,
        vocab_size=400,
        val_fraction=0.1,
        progress=False,
    )
    state = load_checkpoint(tmp_path / "r")
    state["config"]["data"]["store"] = str(other)
    import torch

    torch.save(state, tmp_path / "r" / "checkpoint.pt")
    with pytest.raises(ResumeError, match="another shard store"):
        train(_cfg(tiny_store), tmp_path / "r", resume=True)


def test_grad_accum_equals_bigger_batch(tiny_store, tmp_path):
    """Two micro-batches of 2 sequences make the same update as one batch of 4."""
    import torch

    from mixlab.train.loop import Trainer

    big = Trainer(_cfg(tiny_store, batch_size=4, grad_accum=1), tmp_path / "a")
    small = Trainer(_cfg(tiny_store, batch_size=2, grad_accum=2), tmp_path / "b")
    (batch,) = big.sampler.next_step()
    halves = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    out_big = big.train_step([batch])
    out_small = small.train_step(halves)
    assert out_big["loss"] == pytest.approx(out_small["loss"], rel=1e-6)
    np.testing.assert_allclose(out_big["loss_sum"], out_small["loss_sum"], rtol=1e-6)
    assert out_big["token_count"].sum() == 4 * 31
    for p, q in zip(big.model.parameters(), small.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_lr_schedule_shape():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    mid = lr_factor(55, 10, 100, 0.1)
    assert 0.1 < mid < 1.0


def test_subsampled_run_trains_on_the_subset_and_refuses_another_on_resume(tiny_store, tmp_path):
    from mixlab.train.loop import Trainer

    cfg = _cfg(tiny_store, max_steps=6, eval_every=0, log_every=3)
    cfg.data.subsample = 0.5
    cfg.validate()
    trainer = train(cfg, tmp_path / "half")
    kept = trainer.train_data.train_tokens_per_domain()
    full = trainer.store.train_tokens_per_domain()
    assert (kept < full).all() and np.allclose(kept / full, 0.5, atol=0.05)
    served = trainer.sampler.tokens_served()
    last = [r for r in read_metrics(tmp_path / "half") if "train/loss" in r][-1]
    for i, d in enumerate(trainer.domains):  # epochs are relative to the subsample
        assert last[f"domain/{d}/epochs"] == pytest.approx(served[i] / kept[i])
    assert np.isfinite(json_eval(tmp_path / "half")["eval/mean_ppl"])

    state = load_checkpoint(tmp_path / "half")
    assert state["sampler"]["subsample"] == {"fraction": 0.5, "seed": 0}
    for fraction, seed in ((0.25, 0), (0.5, 1), (1.0, 0)):
        other = _cfg(tiny_store, max_steps=6, eval_every=0)
        other.data.subsample, other.data.subsample_seed = fraction, seed
        with pytest.raises(ResumeError, match="subsample"):
            Trainer(other, tmp_path / f"other-{fraction}-{seed}").load_state_dict(state)


def json_eval(run_dir) -> dict:
    import json

    return json.loads((run_dir / "eval.json").read_text())
