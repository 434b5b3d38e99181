"""MixingController: per-domain feedback from one forward, policy updates moving the dataset's
weights, update_every, refused policies, the all-reduce over two gloo processes, and exact
resume of policy + dataset."""

from __future__ import annotations

import itertools
import socket

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError
from mixlab.integrations import MixingController, MixtureDataset
from mixlab.model.factory import build_model
from mixlab.model.losses import token_losses

ODM = {"odm": {"warmup_steps": 0}}


def dataset(store, **kw) -> MixtureDataset:
    args = {"seq_len": 16, "batch_size": 4, "grad_accum": 1, "seed": 1}
    args.update(kw)
    return MixtureDataset(store, **args)


def scripted_losses(batch: dict, domains: tuple[str, ...]) -> torch.Tensor:
    """(B, L-1) token losses: 4.0 for the noise domain, 1.0 elsewhere."""
    noisy = batch["domain_id"] == domains.index("noise")
    loss = torch.where(noisy, 4.0, 1.0)[:, None]
    return loss.expand(-1, batch["input_ids"].shape[1] - 1).clone()


def run_steps(controller: MixingController, loader, steps: int) -> list[np.ndarray]:
    weights = []
    for batch in itertools.islice(loader, steps):
        losses = scripted_losses(batch, controller.domains)
        controller.observe_losses(losses, batch["labels"], batch["domain_id"])
        controller.step()
        weights.append(controller.dataset.weights())
    return weights


def test_feedback_is_the_per_domain_split_of_one_forward(tiny_store):
    store = ShardStore(tiny_store)
    ds = dataset(tiny_store, batch_size=8)
    controller = MixingController(ds, "uniform", total_steps=5)
    model = build_model(
        preset="llama-tiny", vocab_size=store.vocab_size, eos_id=store.eos_id, max_seq_len=16
    )
    batch = next(iter(DataLoader(ds, batch_size=ds.batch_size)))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits
    controller.observe(logits, batch["labels"], batch["domain_id"])
    feedback = controller.step()

    tok = token_losses(logits, batch["labels"])
    for k in range(len(store.domains)):
        rows = batch["domain_id"] == k
        assert feedback.token_count[k] == int(rows.sum()) * 15
        assert feedback.microbatch_count[k] == int(rows.sum())  # sequences (mixed sampling)
        if rows.any():
            assert feedback.mean_loss()[k] == pytest.approx(float(tok[rows].mean()), rel=1e-6)
    assert controller.rows_observed == 8 and feedback.step == 1


def test_odm_smoothed_moves_the_dataset_weights_every_update(tiny_store):
    controller = MixingController(dataset(tiny_store), "odm-smoothed", total_steps=50, options=ODM)
    loader = iter(DataLoader(controller.dataset, batch_size=4))
    weights = run_steps(controller, loader, 30)
    noise = controller.domains.index("noise")
    np.testing.assert_allclose(weights[0], 0.25)  # eps_t = 1/K while t <= K ln K
    assert weights[-1][noise] > 0.3  # the highest loss gets upweighted (ODM's reward)
    assert weights[-1][noise] == max(weights[-1])
    np.testing.assert_array_equal(weights[-1], controller.policy.weights())
    values = controller.log_values()
    assert values["mix/weight/noise"] == weights[-1][noise]
    assert values["mix/odm/updates"] == 30.0


def test_epoch_caps_bound_the_weights_odm_asks_for(tiny_store):
    ds = dataset(tiny_store)
    tokens = np.array([ds.store.num_tokens(d) for d in ds.domains], dtype=float)
    noise = ds.domains.index("noise")
    steps = 2000
    budget_share = tokens[noise] / (steps * ds.sampler.tokens_per_step)  # 1 epoch as a weight
    options = {**ODM, "max_epochs": {"noise": 1.0}}
    controller = MixingController(ds, "odm-smoothed", total_steps=steps, options=options)
    assert budget_share < 0.3  # below what ODM gives noise uncapped (see the test above)
    weights = run_steps(controller, iter(DataLoader(controller.dataset, batch_size=4)), 30)
    assert max(w[noise] for w in weights) <= budget_share + 1e-12
    assert controller.policy.weights()[noise] > budget_share  # the policy asked for more


def test_update_every_holds_the_weights_in_between(tiny_store):
    controller = MixingController(
        dataset(tiny_store), "odm-smoothed", total_steps=50, options={**ODM, "update_every": 3}
    )
    weights = run_steps(controller, iter(DataLoader(controller.dataset, batch_size=4)), 9)
    changes = [i + 1 for i in range(1, 9) if not np.array_equal(weights[i], weights[i - 1])]
    assert changes and all(step % 3 == 0 for step in changes)


def test_homogeneous_sampling_counts_microbatches(tiny_store):
    ds = dataset(tiny_store, grad_accum=3, mode="homogeneous")
    controller = MixingController(ds, "natural", total_steps=5)
    loader = iter(DataLoader(ds, batch_size=4))
    for batch in itertools.islice(loader, 3):
        controller.observe_losses(
            scripted_losses(batch, ds.domains), batch["labels"], batch["domain_id"]
        )
    feedback = controller.step()
    assert feedback.microbatch_count.sum() == 3
    assert feedback.token_count.sum() == 3 * 4 * 15


def test_resume_continues_policy_and_data_exactly(tiny_store):
    a = MixingController(dataset(tiny_store), "odm-smoothed", total_steps=50, options=ODM)
    loader = iter(DataLoader(a.dataset, batch_size=4))
    run_steps(a, loader, 5)
    state = a.state_dict()
    expected = run_steps(a, loader, 6)

    b = MixingController(dataset(tiny_store), "odm-smoothed", total_steps=50, options=ODM)
    b.load_state_dict(state)
    resumed = run_steps(b, iter(DataLoader(b.dataset, batch_size=4)), 6)
    for x, y in zip(expected, resumed, strict=True):
        np.testing.assert_array_equal(x, y)
    assert b.dataset.stats() == a.dataset.stats()


def test_policies_that_need_more_than_losses_are_refused(tiny_store):
    ds = dataset(tiny_store)
    held_out = {"acodm": {"reward": "heldout_alignment"}}
    with pytest.raises(ConfigError, match=r"gradients.*mixlab train"):
        MixingController(ds, "acodm", total_steps=10, options=held_out)
    with pytest.raises(ConfigError, match=r"reference model.*mixlab train"):
        MixingController(
            ds, "doremi-online", total_steps=10, options={"doremi": {"reference": "ref"}}
        )
    with pytest.raises(ConfigError, match=r"unknown field.*nope"):
        MixingController(ds, "odm", total_steps=10, options={"odm": {"nope": 1}})


def test_acodm_with_its_default_loss_reward_runs_on_a_floored_dataset(tiny_store):
    agent = {"hidden": 8, "batch_size": 4, "actor_lr": 1e-2, "exploration": "none"}
    options = {"acodm": {"warmup_steps": 4, **agent}}  # the default reward: loss
    with pytest.raises(ConfigError, match=r"floor_per_domain=1"):
        MixingController(dataset(tiny_store), "acodm", total_steps=30, options=options)
    ds = dataset(tiny_store, batch_size=8, floor_per_domain=1)
    controller = MixingController(ds, "acodm", total_steps=60, options=options)
    weights = run_steps(controller, iter(DataLoader(ds, batch_size=8)), 60)
    noise = controller.domains.index("noise")
    assert controller.last_feedback is not None
    assert (controller.last_feedback.microbatch_count >= 1).all()  # the floor: every domain
    assert weights[-1][noise] == max(weights[-1]) > 0.25  # the high-loss domain, in the bound
    assert np.abs(np.log(weights[-1] * 4)).max() <= 1.0 + 1e-9


def test_batches_from_elsewhere_are_a_clear_error(tiny_store):
    controller = MixingController(dataset(tiny_store), "uniform", total_steps=3)
    labels = torch.zeros(2, 16, dtype=torch.int64)
    with pytest.raises(ConfigError, match="domain_id"):
        controller.observe_losses(torch.ones(2, 15), labels, torch.tensor([0, 7]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, store: str, port: int, out: dict) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        ds = dataset(store, rank=rank, world_size=2)
        controller = MixingController(ds, "odm-smoothed", total_steps=50, options=ODM)
        weights = run_steps(controller, iter(DataLoader(ds, batch_size=4)), 4)
        out[rank] = [w.tolist() for w in weights]
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_two_ranks_all_reduce_feedback_and_hold_identical_weights(tiny_store):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank_main, args=(str(tiny_store), _free_port(), out), nprocs=2)
        ranks = dict(out)
    assert ranks[0] == ranks[1]
    # The same as one process that sees both ranks' sequences (world size 1, batch 2 x 4).
    single = MixingController(
        dataset(tiny_store, grad_accum=2), "odm-smoothed", total_steps=50, options=ODM
    )
    loader = iter(DataLoader(single.dataset, batch_size=4))
    expected = []
    for _ in range(4):
        for batch in itertools.islice(loader, 2):
            losses = scripted_losses(batch, single.domains)
            single.observe_losses(losses, batch["labels"], batch["domain_id"])
        single.step()
        expected.append(single.dataset.weights().tolist())
    assert ranks[0] == expected
