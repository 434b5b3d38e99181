"""MixtureDataset: the sampler's micro-batches through a DataLoader, weights that change while
iterating, the worker guard, and exact resume (also behind a prefetching consumer)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import DataLoader

from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError
from mixlab.integrations import MixtureDataset, torch_dataset
from mixlab.sampling.sampler import MixtureSampler


def make(store, **kw) -> MixtureDataset:
    args = {"seq_len": 16, "batch_size": 2, "grad_accum": 2, "seed": 3}
    args.update(kw)
    return MixtureDataset(store, **args)


def same_rows(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("input_ids", "labels", "domain_id"))


@pytest.mark.parametrize("mode", ["mixed", "homogeneous"])
def test_dataloader_batches_are_the_samplers_microbatches(tiny_store, mode):
    ds = make(tiny_store, batch_size=3, mode=mode, max_steps=3)
    batches = list(DataLoader(ds, batch_size=ds.batch_size))
    sampler = MixtureSampler(
        ShardStore(tiny_store),
        seq_len=16,
        batch_size=3,
        grad_accum=2,
        weights=ds.weights(),
        mode=mode,
        seed=3,
    )
    expected = [mb for _ in range(3) for mb in sampler.next_step()]
    assert len(batches) == len(expected) == 6  # the stream ends after max_steps
    for got, want in zip(batches, expected, strict=True):
        assert same_rows(got, want)
        if mode == "homogeneous":
            assert len(set(got["domain_id"].tolist())) == 1
    assert ds.steps_drawn == 3 and ds.position == 18


def test_new_weights_apply_from_the_next_drawn_step(tiny_store):
    ds = make(tiny_store, grad_accum=1, mode="stratified")
    code = ds.domains.index("code")
    natural = ds.weights()[code]
    loader = iter(DataLoader(ds, batch_size=ds.batch_size))
    first = next(loader)
    ds.set_weights({d: float(d == "code") for d in ds.domains})
    later = [next(loader) for _ in range(5)]
    assert first["domain_id"].tolist() != [code, code]  # natural weights, stratified
    assert all(b["domain_id"].tolist() == [code, code] for b in later)
    assert ds.stats()["mix/requested/code"] == pytest.approx((natural + 5) / 6)


def test_iterating_in_a_worker_is_refused_with_a_clear_error(tiny_store, monkeypatch):
    monkeypatch.setattr(torch_dataset, "get_worker_info", lambda: object())  # as in a worker
    with pytest.raises(ConfigError, match="num_workers=0"):
        next(iter(make(tiny_store)))


@pytest.mark.slow  # a real worker process: torch's clean-up of it waits ~5 s
def test_dataloader_workers_are_refused_with_a_clear_error(tiny_store):
    loader = DataLoader(make(tiny_store), batch_size=2, num_workers=1)
    with pytest.raises(ConfigError, match="num_workers=0"):
        next(iter(loader))


def test_iterating_again_continues_the_stream(tiny_store):
    a, b = make(tiny_store), make(tiny_store)
    first = list(itertools.islice(iter(a), 3)) + list(itertools.islice(iter(a), 4))
    second = list(itertools.islice(iter(b), 7))
    assert all(same_rows(x, y) for x, y in zip(first, second, strict=True))


def test_resume_behind_a_prefetching_consumer_is_exact(tiny_store):
    """A trainer trained on 5 sequences, prefetched a 6th, then the weights changed."""
    a = make(tiny_store)  # 4 sequences per step
    rows = iter(a)
    head = list(itertools.islice(rows, 6))  # step 2 (rows 4-7) drawn with natural weights
    a.set_weights({d: float(d == "numbers") for d in a.domains})  # drives step 3 on
    state = a.state_dict(position=5)
    tail = list(itertools.islice(rows, 10))  # rows 6..15

    b = make(tiny_store)
    b.load_state_dict(state)
    resumed = list(itertools.islice(iter(b), 11))  # rows 5..15
    assert all(same_rows(x, y) for x, y in zip(resumed, head[5:] + tail, strict=True))
    numbers = a.domains.index("numbers")
    assert all(int(r["domain_id"]) == numbers for r in resumed[3:])  # step 3 on
    assert b.stats() == a.stats() and b.position == a.position == 16


def test_state_dict_round_trip_at_a_step_boundary(tiny_store):
    a = make(tiny_store, mode="homogeneous")
    rows = iter(a)
    list(itertools.islice(rows, 8))
    b = make(tiny_store, mode="homogeneous")
    b.load_state_dict(a.state_dict())
    assert all(same_rows(x, y) for x, y in zip(itertools.islice(rows, 6), iter(b), strict=False))


def test_weights_are_checked_at_the_boundary(tiny_store):
    ds = make(tiny_store, weights={"code": 0.5, "noise": 0.0, "numbers": 0.25, "prose": 0.25})
    assert ds.weights().tolist() == [0.5, 0.0, 0.25, 0.25]
    with pytest.raises(ConfigError, match="sum to"):
        ds.set_weights([0.5, 0.5, 0.5, 0.0])
    with pytest.raises(ConfigError, match="unknown domain"):
        ds.set_weights({"web": 1.0})
    with pytest.raises(ConfigError, match="max_steps"):
        make(tiny_store, max_steps=0)
