"""Online mixing inside torchtitan 0.3.0: loader, loss, refusals, and 2 gloo ranks end to end.

torchtitan cannot go into the main environment (its pins would downgrade datasets and
huggingface_hub under transformers), so this module is skipped where torchtitan is not
importable, unless MIXLAB_REQUIRE_TORCHTITAN=1 (then it fails). Run it in a venv that has it:
``python tests/integrations/verify_torchtitan.py``. The torchrun tests (``slow``) launch
:mod:`tests.integrations.titan_worker`, which holds the CPU-only workarounds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

if importlib.util.find_spec("torchtitan") is None or importlib.util.find_spec("triton") is None:
    if os.environ.get("MIXLAB_REQUIRE_TORCHTITAN") == "1":
        raise ImportError("MIXLAB_REQUIRE_TORCHTITAN=1 but torchtitan/triton are not importable")
    pytest.skip(
        "torchtitan 0.3.0 + triton are not installed (tests/integrations/verify_torchtitan.py)",
        allow_module_level=True,
    )

from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError, ResumeError
from mixlab.integrations import torchtitan as tt
from mixlab.integrations.controller import build_adapter_policy
from mixlab.model.losses import per_domain_sums
from mixlab.sampling.sampler import MixtureSampler
from tests.conftest import tiny_run_config
from tests.helpers import torchrun

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("titan_worker.py")
ODM = {"odm": {"warmup_steps": 0}}


def loader(store: Path, rank: int = 0, world: int = 1, **kw: Any) -> tt.MixtureDataLoader:
    cfg = tt.MixtureDataLoader.Config(store=str(store), seed=5, grad_accum=2, **kw)
    return tt.MixtureDataLoader(
        cfg, dp_world_size=world, dp_rank=rank, seq_len=16, local_batch_size=3
    )


def take(it: Any, n: int) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    return [next(it) for _ in range(n)]


def same(a: list, b: list) -> bool:
    return all(
        torch.equal(x["input"], y["input"])
        and torch.equal(x["domain_id"], y["domain_id"])
        and torch.equal(lx, ly)
        for (x, lx), (y, ly) in zip(a, b, strict=True)
    )


# ---------------------------------------------------------------------- loader
def test_loader_yields_the_samplers_windows_shifted_by_one(tiny_store: Path) -> None:
    dl = loader(tiny_store, rank=1, world=2, sampling="homogeneous")
    sampler = MixtureSampler(
        ShardStore(tiny_store),
        seq_len=17,
        batch_size=3,
        grad_accum=2,
        weights=dl.weights(),
        mode="homogeneous",
        seed=5,
        rank=1,
        world_size=2,
    )
    got = take(iter(dl), 4)
    want = [mb for _ in range(2) for mb in sampler.next_step()]
    for (inputs, labels), mb in zip(got, want, strict=True):
        assert inputs["input"].shape == labels.shape == (3, 16)
        assert torch.equal(inputs["input"], mb["input_ids"][:, :-1])
        assert torch.equal(labels, mb["input_ids"][:, 1:])
        assert torch.equal(inputs["domain_id"], mb["domain_id"])
        assert len(set(inputs["domain_id"].tolist())) == 1  # homogeneous micro-batch


def test_new_weights_drive_the_next_step_not_the_current_one(tiny_store: Path) -> None:
    dl = loader(tiny_store)
    it = iter(dl)
    next(it)  # step 1 is drawn
    code = dl.domains.index("code")
    dl.set_weights(np.eye(len(dl.domains))[code])
    rest_of_step_1 = next(it)[0]["domain_id"].tolist()
    step_2 = [x["domain_id"].tolist() for x, _ in take(it, 2)]
    assert rest_of_step_1 != [code] * 3  # natural weights: the drawn step is kept
    assert step_2 == [[code] * 3, [code] * 3]


@pytest.mark.parametrize("consumed", [2, 3])  # at a step boundary and in the middle of one
def test_loader_state_resumes_the_stream_exactly(tiny_store: Path, consumed: int) -> None:
    a = loader(tiny_store, rank=1, world=2)
    it = iter(a)
    take(it, consumed)
    a.set_weights(np.array([0.1, 0.2, 0.3, 0.4]))
    state = a.state_dict()
    assert list(state) == ["dp_rank_1"]  # rank-specific key, as torchtitan's loader
    b = loader(tiny_store, rank=1, world=2)
    b.load_state_dict(state)
    assert same(take(it, 5), take(iter(b), 5))
    np.testing.assert_array_equal(b.weights(), a.weights())
    with pytest.raises(ResumeError, match="dp_rank_0"):
        loader(tiny_store, rank=0, world=2).load_state_dict(state)


def test_loader_needs_a_store() -> None:
    with pytest.raises(ConfigError, match=r"mixing\.store"):
        tt.MixtureDataLoader(
            tt.MixtureDataLoader.Config(), dp_world_size=1, dp_rank=0, seq_len=8, local_batch_size=1
        )


# ---------------------------------------------------------------------- loss
def test_loss_is_torchtitans_and_keeps_per_domain_sums() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 11, requires_grad=True)
    labels = torch.randint(0, 11, (4, 6))
    labels[1, :2] = -100
    domain = torch.tensor([2, 0, 2, 1])
    loss_fn = tt.MixtureLoss(tt.MixtureLoss.Config())
    loss_fn.bind(3, "mixed", None)
    loss_fn.domain_id = domain
    loss, _ = loss_fn(logits, labels, torch.tensor(40))
    expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum") / 40
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad is not None
    tok = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(4, 6)
    sums, counts = per_domain_sums(tok.detach().double(), labels != -100, domain, 3)
    fb = loss_fn.feedback()
    np.testing.assert_allclose(fb["loss_sum"], sums.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(fb["token_count"], [4, 6, 12])
    np.testing.assert_array_equal(counts.numpy(), [4, 6, 12])
    np.testing.assert_array_equal(fb["microbatch_count"], [1, 1, 2])
    assert loss_fn.domain_id is None  # consumed: a validator batch adds nothing
    loss_fn(logits.detach(), labels)
    np.testing.assert_array_equal(loss_fn.feedback()["token_count"], [4, 6, 12])


# ---------------------------------------------------------------------- policies
def test_acodm_takes_its_floor_and_epoch_caps_bound_the_weights(tiny_store: Path) -> None:
    dl = loader(tiny_store, sampling="mixed")
    policy, _, caps = build_adapter_policy("acodm", dl, total_steps=10)
    assert policy.needs.floor_per_domain == 1 and caps is None
    dl.configure(2, policy.needs.floor_per_domain)
    step = take(iter(dl), 2)
    ids = torch.cat([x["domain_id"] for x, _ in step])
    assert set(ids.tolist()) == set(range(len(dl.domains)))  # every domain, every step
    assert dl.tokens_per_step == 3 * 2 * 1 * 16
    steps = 625  # 60k tokens: more than the store's ~47k, so 2 epochs is a real bound
    _, _, caps = build_adapter_policy(
        "odm", dl, total_steps=steps, options={"max_epochs": 2}, tokens_per_step=96
    )
    assert caps is not None
    tokens = np.array([dl.store.num_tokens(d) for d in dl.domains], dtype=float)
    np.testing.assert_allclose(caps, 2 * tokens / (steps * 96))
    with pytest.raises(ConfigError, match="tokens_per_step"):
        build_adapter_policy("odm", dl, total_steps=10, options={"max_epochs": 2})


def test_compiled_models_are_refused_for_acodm() -> None:
    cfg = tt.llama3_debugmodel_mixing()
    cfg.compile.enable = True
    cfg.compile.components = ["model"]
    with pytest.raises(ConfigError, match=r"compile\.components"):
        tt._check_probe_support(cfg, "acodm")


def test_bad_options_and_parallelism_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        tt._parse_options("{odm")
    with pytest.raises(ConfigError, match=r"--mixing\.policy"):
        tt._parse_options('{"name": "odm"}')
    cfg = tt.llama3_debugmodel_mixing()
    cfg.parallelism.pipeline_parallel_degree = 2
    with pytest.raises(ConfigError, match="pipeline_parallel_degree"):
        tt._check_parallelism(cfg)


# ---------------------------------------------------------------------- 2 gloo ranks
def torchrun_titan(store: Path, dump: Path, *args: str) -> str:
    worker = [str(WORKER), "--module", "tests.integrations.titan_worker", "--config"]
    worker += ["mixlab_tiny", "--mixing.store", str(store), "--dump_folder", str(dump)]
    return torchrun([*worker, *args], timeout=600)


def records(dump: Path, rank: int) -> list[dict[str, Any]]:
    lines = (dump / f"mixing.rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def step_losses(log: str) -> dict[int, str]:
    """torchtitan's logged "step: N loss: X grad_norm: Y" per step (ANSI colours removed)."""
    import re

    plain = re.sub(r"\x1b\[[0-9;]*m", "", log)
    found = re.findall(r"step:\s+(\d+)\s+loss:\s+(\S+)\s+grad_norm:\s+(\S+)", plain)
    return {int(s): f"{loss} {gn}" for s, loss, gn in found}


@pytest.mark.slow
def test_odm_on_two_ranks_same_weights_every_step_and_exact_resume(
    tiny_store: Path, tmp_path: Path
) -> None:
    opts = ["--mixing.options", json.dumps(ODM)]
    full = torchrun_titan(tiny_store, tmp_path / "a", *opts)
    a0, a1 = records(tmp_path / "a", 0), records(tmp_path / "a", 1)
    assert [r["step"] for r in a0] == [1, 2, 3, 4, 5, 6]
    assert a0 == a1  # bit-identical weights and reduced sums on both ranks, every step
    weights = np.array([r["weights"] for r in a0])
    assert np.ptp(weights, axis=0).max() > 1e-3  # ODM moved the mixture
    assert all(sum(r["token_count"]) == 8 * 32 for r in a0)  # global tokens of a step

    # resume from the step-3 checkpoint in a fresh folder: steps 4-6 as in the full run
    (tmp_path / "b" / "checkpoint").mkdir(parents=True)
    shutil.copytree(tmp_path / "a/checkpoint/step-3", tmp_path / "b/checkpoint/step-3")
    resumed = torchrun_titan(tiny_store, tmp_path / "b", *opts)
    assert "Training starts at step 4" in resumed
    for rank in (0, 1):
        assert records(tmp_path / "b", rank) == a0[3:]
    want = step_losses(full)
    got = step_losses(resumed)
    assert sorted(got) == [4, 5, 6] and all(got[s] == want[s] for s in got)


@pytest.mark.slow
def test_doremi_online_under_fsdp_with_a_mixlab_reference(tiny_store: Path, tmp_path: Path) -> None:
    from mixlab.config import RunConfig
    from mixlab.train.loop import train

    ref_cfg = tiny_run_config(tiny_store, max_steps=4, eval_every=0, checkpoint_every=4)
    train(RunConfig.from_dict(ref_cfg), tmp_path / "ref")
    options = {"doremi": {"reference": str(tmp_path / "ref")}}
    torchrun_titan(
        tiny_store,
        tmp_path / "d",
        "--mixing.policy",
        "doremi-online",
        "--mixing.sampling",
        "mixed",
        "--mixing.options",
        json.dumps(options),
        "--parallelism.data_parallel_replicate_degree",
        "1",
        "--parallelism.data_parallel_shard_degree",
        "2",
        "--training.steps",
        "4",
        "--checkpoint.no-enable",
    )
    r0, r1 = records(tmp_path / "d", 0), records(tmp_path / "d", 1)
    assert r0 == r1 and [r["step"] for r in r0] == [1, 2, 3, 4]
    assert all("excess_sum" in r and "ref_loss_sum" in r for r in r0)
    assert all(min(r["excess_sum"]) >= 0 for r in r0)
    weights = np.array([r["weights"] for r in r0])
    assert np.ptp(weights, axis=0).max() > 1e-4  # DoReMi's alpha moved


# the held-out alignment reward exercises the capture (the default reward, loss, needs none)
AGENT = {"hidden": 16, "n_hidden": 1, "batch_size": 2, "warmup_steps": 2, "heldout_every": 2}
ACODM = {"acodm": {**AGENT, "reward": "heldout_alignment"}}


@pytest.mark.slow
def test_acodm_on_two_ranks_replicated_and_sharded_then_exact_resume(
    tiny_store: Path, tmp_path: Path
) -> None:
    """AC-ODM (mixlab variant: held-out gradient reward) inside torchtitan on 2 gloo ranks."""
    args = ["--mixing.policy", "acodm", "--mixing.sampling", "mixed"]
    args += ["--mixing.options", json.dumps(ACODM)]
    runs = {}
    for dp, (replicate, shard) in {"replicate": ("2", "1"), "shard": ("1", "2")}.items():
        degrees = ["--parallelism.data_parallel_replicate_degree", replicate]
        degrees += ["--parallelism.data_parallel_shard_degree", shard]
        log = torchrun_titan(tiny_store, tmp_path / dp, *args, *degrees)
        r0, r1 = records(tmp_path / dp, 0), records(tmp_path / dp, 1)
        assert [r["step"] for r in r0] == [1, 2, 3, 4, 5, 6] and r0 == r1  # same on both ranks
        assert all(min(r["grad_count"]) > 0 for r in r0)  # the floor: every domain, every step
        assert all(r["grad_count"] == r["token_count"] for r in r0)
        assert all(min(r["grad_sum_norm"]) > 0 for r in r0)  # captured in the one backward
        assert [r["step"] for r in r0 if "heldout_loss" in r] == [1, 3, 5]
        weights = np.array([r["weights"] for r in r0])
        assert np.ptp(weights[2:], axis=0).max() > 1e-6  # the actor drives it after warm-up
        assert not (tmp_path / dp / "policy.acodm.pt").exists()  # online mode exports nothing
        runs[dp] = (log, r0)
    # torchtitan initialises replicated and sharded parameters from different random streams,
    # so the first gradients differ a little; a wrong normaliser (the global token count, the
    # rank count) would differ by a factor of 2 or more
    (_, rep), (_, shd) = runs["replicate"], runs["shard"]
    np.testing.assert_allclose(rep[0]["grad_sum_norm"], shd[0]["grad_sum_norm"], rtol=0.15)

    # resume the replicated run from its step-3 checkpoint: steps 4-6 as in the full run
    (tmp_path / "b" / "checkpoint").mkdir(parents=True)
    shutil.copytree(tmp_path / "replicate/checkpoint/step-3", tmp_path / "b/checkpoint/step-3")
    resumed = torchrun_titan(tiny_store, tmp_path / "b", *args)
    for rank in (0, 1):
        assert records(tmp_path / "b", rank) == rep[3:]  # the agent's state resumed exactly
    want, got = step_losses(runs["replicate"][0]), step_losses(resumed)
    assert sorted(got) == [4, 5, 6] and all(got[s] == want[s] for s in got)


@pytest.mark.slow
def test_acodm_proxy_to_frozen_target_inside_torchtitan(tiny_store: Path, tmp_path: Path) -> None:
    """The paper variant (weight-norm state, gathered from FSDP shards) from proxy to target."""
    policy = tmp_path / "proxy.acodm.pt"
    args = ["--mixing.policy", "acodm", "--mixing.sampling", "mixed", "--checkpoint.no-enable"]
    args += ["--parallelism.data_parallel_replicate_degree", "1"]
    args += ["--parallelism.data_parallel_shard_degree", "2"]
    paper = {"acodm": {**AGENT, "variant": "paper"}}
    proxy = {**paper, "policy_out": str(policy)}
    torchrun_titan(tiny_store, tmp_path / "p", *args, "--mixing.options", json.dumps(proxy))
    assert policy.is_file()  # proxy_train: rank 0 wrote the actor at the last step
    target = {**paper, "policy_in": str(policy)}
    torchrun_titan(tiny_store, tmp_path / "t", *args, "--mixing.options", json.dumps(target))
    r0, r1 = records(tmp_path / "t", 0), records(tmp_path / "t", 1)
    assert r0 == r1 and [r["step"] for r in r0] == [1, 2, 3, 4, 5, 6]
    assert all("grad_count" not in r and "heldout_loss" not in r for r in r0)  # frozen: no capture
    weights = np.array([r["weights"] for r in r0])
    assert np.ptp(weights[2:], axis=0).max() > 1e-6  # the transferred actor drives the mixture


def test_example_config_module_parses_like_torchtitans_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchtitan.config import ConfigManager

    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    argv = ["--module", "torchtitan_odm", "--config", "odm_llama3_debug"]
    cfg = ConfigManager().parse_args([*argv, "--mixing.store", "shards/", "--mixing.seed", "7"])
    assert isinstance(cfg, tt.MixingTrainer.Config)
    assert (cfg.mixing.store, cfg.mixing.seed, cfg.mixing.policy) == ("shards/", 7, "odm")
    assert cfg.mixing.sampling == "homogeneous"
    assert json.loads(cfg.mixing.options)["odm"]["warmup_steps"] == 100
    assert cfg._owner is tt.MixingTrainer  # config.build() makes a MixingTrainer
