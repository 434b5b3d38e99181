"""DoReMi in training (METHODS.md §3): per-token clipping, the frozen reference, the proxy's
weighted gradient, the `mixlab doremi` pipeline (weights, rounds, resume) and doremi-online."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mixlab.cli import main
from mixlab.config import RunConfig
from mixlab.errors import ConfigError
from mixlab.mixing.static import read_weights_file
from mixlab.model.losses import token_losses
from mixlab.train.callbacks import read_metrics
from mixlab.train.checkpoint import load_checkpoint
from mixlab.train.doremi import proxy_trainer, run_doremi
from mixlab.train.loop import Trainer, clipped_excess_sums, train
from tests.conftest import DOMAINS, tiny_run_config
from tests.helpers import KillAt

DOMAIN_ORDER = tuple(sorted(DOMAINS))


def _cfg(store: Path, mixing: dict | None = None, **train_overrides: object) -> RunConfig:
    raw = tiny_run_config(
        store, **{"max_steps": 4, "eval_every": 0, "log_every": 1, **train_overrides}
    )
    raw["mixing"].update(mixing or {})
    if "doremi" in raw["mixing"] and raw["mixing"]["name"] == "natural":
        raw["mixing"]["name"] = "doremi"  # the pipeline (and proxy) policy
    raw["eval"]["max_tokens_per_domain"] = 500
    cfg = RunConfig.from_dict(raw)
    cfg.validate()
    return cfg


@pytest.fixture(scope="module")
def reference_run(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("doremi") / "reference"
    train(_cfg(tiny_store, max_steps=6), run)
    return run


def _proxy(store: Path, reference: Path, run_dir: Path, **doremi: object) -> Trainer:
    mixing = {"name": "doremi", "sampling": "stratified", "doremi": {"reference": str(reference)}}
    mixing["doremi"].update(doremi)  # type: ignore[attr-defined]
    run_dir.mkdir(parents=True)
    return proxy_trainer(_cfg(store, mixing, grad_clip=0.0), run_dir)


def test_clipping_is_per_token_by_hand() -> None:
    # Two sequences of 4 tokens (3 targets each): row 0 is domain 1, row 1 is domain 0.
    tok = torch.tensor([[2.0, 1.0, 3.0], [0.5, 4.0, 1.0]])
    ref = torch.tensor([[1.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    labels = torch.zeros(2, 4, dtype=torch.int64)
    labels[1, 3] = -100  # the last target of row 1 is masked out
    batch = {"labels": labels, "domain_id": torch.tensor([1, 0])}
    sums = clipped_excess_sums(tok, ref, batch, num_domains=3)
    # domain 1: max(1,0)+max(-1,0)+max(2,0) = 3 (unclipped mean would give 2)
    # domain 0: max(-0.5,0)+max(3,0) = 3, the masked token (0) does not count
    torch.testing.assert_close(
        sums["excess_sum"], torch.tensor([3.0, 3.0, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        sums["ref_loss_sum"], torch.tensor([2.0, 4.0, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        sums["clipped_count"], torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    )


def test_reference_is_frozen_and_untouched_by_proxy_training(
    tiny_store: Path, reference_run: Path, tmp_path: Path
) -> None:
    proxy = _proxy(tiny_store, reference_run, tmp_path / "proxy")
    assert proxy.reference is not None
    ref = proxy.reference.model
    before = copy.deepcopy(ref.state_dict())
    assert not ref.training
    assert all(not p.requires_grad for p in ref.parameters())
    in_optimizer = {id(p) for g in proxy.optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in ref.parameters()}
    assert in_optimizer == {id(p) for p in proxy.model.parameters()}
    proxy.fit()
    for name, value in ref.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in ref.parameters())
    # ... and the proxy did learn and move alpha off uniform.
    assert proxy.objective.dro.step == 4 and not np.allclose(proxy.objective.dro.alpha, 0.25)


def _domain_mean_grads(model: torch.nn.Module, batches: list[dict], k: int) -> list[list]:
    """grad of each domain's token-mean loss, from a separate forward per domain."""
    grads = []
    params = list(model.parameters())
    for i in range(k):
        total, count = 0.0, 0
        for b in batches:
            rows = b["domain_id"] == i
            if rows.any():
                logits = model(input_ids=b["input_ids"][rows]).logits
                total = total + token_losses(logits, b["labels"][rows]).sum()
                count += int(rows.sum()) * (b["labels"].shape[1] - 1)
        grads.append(list(torch.autograd.grad(total / count, params)))
    return grads


@pytest.mark.parametrize(
    ("normalizer", "timing", "grad_accum"),
    [("per_domain", "exact", 1), ("token_weighted", "exact", 1), ("per_domain", "lagged", 2)],
)
def test_proxy_gradient_is_alpha_weighted_sum_of_domain_gradients(
    tiny_store: Path,
    reference_run: Path,
    tmp_path: Path,
    normalizer: str,
    timing: str,
    grad_accum: int,
) -> None:
    proxy = _proxy(
        tiny_store, reference_run, tmp_path / "p", loss_normalizer=normalizer, alpha_timing=timing
    )
    proxy.cfg.train.grad_accum = grad_accum
    batches = [proxy.sampler.next_step()[0] for _ in range(grad_accum)]
    before = copy.deepcopy(proxy.model)
    captured = {}
    proxy.optimizer.register_step_pre_hook(
        lambda *_: captured.update({n: p.grad.clone() for n, p in proxy.model.named_parameters()})
    )
    alpha_prev = proxy.objective.dro.alpha.copy()
    out = proxy.train_step(batches)
    # exact: alpha_t from this step's excess; lagged: alpha_{t-1} (= uniform at step 1).
    alpha = proxy.objective.dro.alpha if timing == "exact" else alpha_prev
    assert not np.allclose(proxy.objective.dro.alpha, alpha_prev)
    coef = alpha.copy()
    if normalizer == "token_weighted":  # sum_i a_i S_i / sum_i a_i n_i = sum_i (a_i n_i / Z) mean_i
        n = out["token_count"]
        coef = alpha * n / (alpha * n).sum()
    grads = _domain_mean_grads(before, batches, len(DOMAIN_ORDER))
    for j, (name, _) in enumerate(before.named_parameters()):
        expected = sum(float(coef[i]) * grads[i][j] for i in range(len(DOMAIN_ORDER)))
        torch.testing.assert_close(captured[name], expected, rtol=1e-4, atol=1e-6)


def _write_config(path: Path, store: Path, **doremi: object) -> Path:
    raw = tiny_run_config(store, max_steps=4, eval_every=0, log_every=2, checkpoint_every=2)
    raw["eval"]["max_tokens_per_domain"] = 500
    raw["mixing"]["doremi"] = doremi
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_mixlab_doremi_end_to_end(
    tiny_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_config(tmp_path / "doremi.yaml", tiny_store)
    out = tmp_path / "out"
    argv = ["doremi", "--config", str(config), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for d in DOMAIN_ORDER:
        assert d in printed
    assert "natural" in printed and "reference" in printed and "DoReMi" in printed
    assert "mixing.name=fixed" in printed and "mixing.weights_file=" in printed

    assert load_checkpoint(out / "round_1" / "reference")["finished"]
    proxy_state = load_checkpoint(out / "round_1" / "proxy")
    dro = proxy_state["policy"]["group_dro"]
    saved = json.loads((out / "doremi_weights.json").read_text())
    assert saved == json.loads((out / "round_1" / "doremi_weights.json").read_text()) | {
        "converged": saved["converged"]
    }
    # The written weights are the running average, not the last alpha.
    for d in DOMAIN_ORDER:
        assert saved["weights"][d] == pytest.approx(dro["avg_alpha"][d], abs=1e-12)
        assert saved["last_alpha"][d] == dro["alpha"][d]
    assert saved["weights"] != saved["last_alpha"]
    weights = read_weights_file(out / "doremi_weights.json", DOMAIN_ORDER)
    assert np.all(weights >= 1e-3 / 4) and abs(weights.sum() - 1) < 1e-9

    trajectory = read_metrics(out / "round_1" / "proxy" / "alpha_trajectory.jsonl")
    assert [r["step"] for r in trajectory] == [1, 2, 3, 4]
    assert trajectory[-1]["avg_alpha"] == dro["avg_alpha"]
    proxy_logs = [r for r in read_metrics(out / "round_1" / "proxy") if "train/loss" in r]
    for key in ("mix/doremi/alpha/code", "mix/doremi/avg_alpha/code", "mix/doremi/lambda/code"):
        assert key in proxy_logs[-1]
    assert "domain/code/ref_loss" in proxy_logs[-1]
    assert 0 <= proxy_logs[-1]["train/excess_clipped_fraction"] <= 1
    assert proxy_logs[-1]["mix/weight/code"] == 0.25  # the proxy samples uniformly

    # The target trains with `fixed` on the file.
    target = _cfg(tiny_store, {"name": "fixed", "weights_file": str(out / "doremi_weights.json")})
    trainer = train(target, tmp_path / "target")
    np.testing.assert_allclose(trainer.sampler.weights(), weights)

    # Rerunning the command reuses every finished run; other settings are refused.
    mtime = (out / "round_1" / "proxy" / "checkpoint.pt").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "round_1" / "proxy" / "checkpoint.pt").stat().st_mtime_ns == mtime
    capsys.readouterr()
    assert main([*argv, "--set", "mixing.doremi.eta=0.5"]) == 2
    assert "other settings (mixing.doremi.eta" in capsys.readouterr().err


def test_interrupted_proxy_resumes_to_the_same_weights(
    tiny_store: Path, reference_run: Path, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_store, {"doremi": {"reference": str(reference_run)}}, max_steps=5)
    full = run_doremi(cfg, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run_doremi(cfg, tmp_path / "part", callbacks=[KillAt(3)])
    assert load_checkpoint(tmp_path / "part" / "round_1" / "proxy")["step"] == 3
    part = run_doremi(cfg, tmp_path / "part")
    np.testing.assert_allclose(part.weights, full.weights, rtol=1e-6)
    trajectory = read_metrics(tmp_path / "part" / "round_1" / "proxy" / "alpha_trajectory.jsonl")
    assert [r["step"] for r in trajectory] == [1, 2, 3, 4, 5]
    # A reused reference is not retrained, and its static mixture is known.
    assert not (tmp_path / "full" / "round_1" / "reference").exists()
    assert full.rounds[0].reference_run == reference_run.resolve()
    np.testing.assert_allclose(full.rounds[0].reference_mixture, full.natural)


def test_rounds_stop_on_tol_and_write_one_file_per_round(
    tiny_store: Path, reference_run: Path, tmp_path: Path
) -> None:
    base = {"reference": str(reference_run)}
    run_doremi(_cfg(tiny_store, {"doremi": base}, max_steps=3), tmp_path / "a")
    proxy_1 = tmp_path / "a" / "round_1" / "proxy" / "checkpoint.pt"
    mtime = proxy_1.stat().st_mtime_ns
    # Asking for more rounds later continues from the finished round 1.
    more = {**base, "rounds": 2, "tol": 0.0}
    two = run_doremi(_cfg(tiny_store, {"doremi": more}, max_steps=3), tmp_path / "a")
    assert proxy_1.stat().st_mtime_ns == mtime
    assert [r.round for r in two.rounds] == [1, 2] and not two.converged
    r1 = json.loads((tmp_path / "a" / "round_1" / "doremi_weights.json").read_text())
    r2 = json.loads((tmp_path / "a" / "round_2" / "doremi_weights.json").read_text())
    # Round 2's reference was trained on round 1's weights.
    ref2 = RunConfig.from_dict(load_checkpoint(tmp_path / "a" / "round_2" / "reference")["config"])
    assert ref2.mixing.name == "fixed" and ref2.mixing.weights == r1["weights"]
    assert r2["reference_mixture"] == r1["weights"]
    assert r2["l1_change"] == pytest.approx(
        sum(abs(r2["weights"][d] - r1["weights"][d]) for d in DOMAIN_ORDER)
    )
    final = json.loads((tmp_path / "a" / "doremi_weights.json").read_text())
    assert final["weights"] == r2["weights"] and final["round"] == 2

    # L1 between two distributions is at most 2: tol 2.5 stops right after round 1.
    stop = {**base, "rounds": 3, "tol": 2.5}
    one = run_doremi(_cfg(tiny_store, {"doremi": stop}, max_steps=3), tmp_path / "b")
    assert len(one.rounds) == 1 and one.converged
    assert not (tmp_path / "b" / "round_2").exists()


def test_pipeline_config_errors(tiny_store: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mixing\.doremi\.loss_normalizer"):
        run_doremi(_cfg(tiny_store, {"doremi": {"loss_normalizer": "mean"}}), tmp_path / "x")
    with pytest.raises(ConfigError, match="proxy_sampling=random"):
        run_doremi(_cfg(tiny_store, batch_size=2), tmp_path / "y")


def test_doremi_online_trains_with_a_reference_and_logs_excess(
    tiny_store: Path, reference_run: Path, tmp_path: Path
) -> None:
    mixing = {"name": "doremi-online", "doremi": {"reference": str(reference_run)}}
    trainer = train(_cfg(tiny_store, mixing), tmp_path / "online")
    assert trainer.reference is not None
    ref = trainer.reference.model
    assert all(not p.requires_grad for p in ref.parameters()) and not ref.training
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in ref.parameters()}
    records = [r for r in read_metrics(tmp_path / "online") if "train/loss" in r]
    last = records[-1]
    for d in DOMAIN_ORDER:
        assert np.isfinite(last[f"mix/doremi/lambda/{d}"])
        if f"domain/{d}/excess" in last:
            assert last[f"domain/{d}/excess"] >= 0
            assert last[f"domain/{d}/excess"] >= last[f"domain/{d}/excess_unclipped"] - 1e-9
    assert any(k.startswith("domain/") and k.endswith("/excess") for k in last)
    # alpha moved off uniform and is what the sampler uses.
    w = np.array([last[f"mix/weight/{d}"] for d in DOMAIN_ORDER])
    assert not np.allclose(w, 0.25)
    np.testing.assert_allclose(trainer.sampler.weights(), trainer.policy.weights())


def test_trainer_without_reference_policy_has_no_reference(
    tiny_store: Path, tmp_path: Path
) -> None:
    assert Trainer(_cfg(tiny_store), tmp_path / "r").reference is None


def test_doremi_help_and_config_fields(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["doremi", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "doremi_weights.json" in out and "mixing.doremi.rounds" in out
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    for name in ("eta", "smoothing", "reference_mixture", "loss_normalizer", "proxy_sampling"):
        assert f"mixing.doremi.{name} =" in out
    assert "doremi-online" in out
