"""MixtureSampler: proportions, windows, epochs, determinism, exact resume, ranks, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mixlab.errors import ConfigError, DataError, ResumeError
from mixlab.sampling import MixtureSampler

from .fakes import FakeStore, decode

SIZES = {"code": 20_000, "news": 9_000, "web": 30_000}


def make(store: FakeStore | None = None, **kw: object) -> MixtureSampler:
    args: dict[str, object] = {
        "seq_len": 16,
        "batch_size": 4,
        "grad_accum": 2,
        "weights": np.array([0.5, 0.3, 0.2]),
        "seed": 0,
    }
    args.update(kw)
    return MixtureSampler(store or FakeStore(SIZES), **args)  # type: ignore[arg-type]


def run(sampler: MixtureSampler, steps: int) -> list[list[dict[str, torch.Tensor]]]:
    return [sampler.next_step() for _ in range(steps)]


def flat_ids(steps: list[list[dict[str, torch.Tensor]]]) -> np.ndarray:
    return np.concatenate([mb["input_ids"].numpy() for step in steps for mb in step])


def assert_same(a: list[list[dict[str, torch.Tensor]]], b: list[list[dict[str, torch.Tensor]]]):
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b, strict=True):
        assert len(step_a) == len(step_b)
        for mb_a, mb_b in zip(step_a, step_b, strict=True):
            for key in ("input_ids", "labels", "domain_id"):
                assert torch.equal(mb_a[key], mb_b[key]), key


def test_batch_layout_and_labels_equal_input_ids() -> None:
    step = make(seq_len=16, batch_size=4, grad_accum=3).next_step()
    assert len(step) == 3
    for mb in step:
        assert mb["input_ids"].shape == (4, 16) and mb["input_ids"].dtype == torch.int64
        assert mb["domain_id"].shape == (4,) and mb["domain_id"].dtype == torch.int64
        assert torch.equal(mb["labels"], mb["input_ids"])
        assert mb["labels"].data_ptr() != mb["input_ids"].data_ptr()  # a copy, safe to mask


def test_windows_are_contiguous_and_domain_id_is_true_domain() -> None:
    store = FakeStore(SIZES)
    steps = run(make(store, mode="mixed"), 30)
    for mb in (mb for step in steps for mb in step):
        domain, pos = decode(mb["input_ids"].numpy())
        assert (domain == mb["domain_id"].numpy()[:, None]).all()
        assert (np.diff(pos, axis=1) == 1).all()  # one packed window of the stream
        sizes = np.array([SIZES[store.domains[d]] for d in mb["domain_id"].tolist()])
        assert (pos[:, -1] < sizes).all()


@pytest.mark.parametrize("mode", ["mixed", "homogeneous"])
def test_achieved_shares_track_requested(mode: str) -> None:
    w = np.array([0.5, 0.3, 0.2])
    s = make(weights=w, mode=mode, batch_size=2, grad_accum=4)
    run(s, 1500)  # 12k sequences (mixed) or 6k micro-batch draws (homogeneous)
    np.testing.assert_allclose(s.requested_shares(), w, atol=1e-12)
    np.testing.assert_allclose(s.achieved_shares(), w, atol=0.025)
    assert s.tokens_served().sum() == 1500 * s.tokens_per_step


def test_homogeneous_microbatches_are_single_domain() -> None:
    s = make(mode="homogeneous", batch_size=5, grad_accum=4)
    seen = set()
    for step in run(s, 20):
        for mb in step:
            ids = mb["domain_id"].numpy()
            assert (ids == ids[0]).all()
            seen.add(int(ids[0]))
    assert seen == {0, 1, 2}


def step_counts(sampler: MixtureSampler, steps: int, k: int) -> np.ndarray:
    """(steps, k) sequences of each domain in each step."""
    return np.array(
        [
            np.bincount(torch.cat([mb["domain_id"] for mb in step]).numpy(), minlength=k)
            for step in run(sampler, steps)
        ]
    )


def test_stratified_counts_round_each_share_up_or_down_and_are_exact_on_average() -> None:
    # S = 4 sequences, S*w = (2, 1.2, 0.8): domain 0 gets 2 every step, domain 1 gets 1 or 2,
    # domain 2 gets 0 or 1, and over the steps each gets its share (a fixed rounding would give
    # (2, 1, 1) every step: shares .25 / .25 where .3 / .2 were asked).
    s = make(mode="stratified", weights=np.array([0.5, 0.3, 0.2]), batch_size=2, grad_accum=2)
    counts = step_counts(s, 2000, 3)
    assert (counts.sum(axis=1) == 4).all() and (counts[:, 0] == 2).all()
    assert set(counts[:, 1]) == {1, 2} and set(counts[:, 2]) == {0, 1}
    np.testing.assert_allclose(counts.mean(axis=0), [2.0, 1.2, 0.8], atol=0.05)
    # shares that are whole sequences are served exactly, every step
    s = make(mode="stratified", weights=np.array([0.5, 0.3, 0.2]), batch_size=5, grad_accum=2)
    assert (step_counts(s, 10, 3) == [5, 3, 2]).all()
    # uniform over 9 domains, 16 sequences: 1 or 2 each, 16/9 on average for every domain
    nine = FakeStore({f"d{i}": 5_000 for i in range(9)})
    s = make(nine, mode="stratified", weights=np.full(9, 1 / 9), batch_size=16, grad_accum=1)
    counts = step_counts(s, 900, 9)
    assert set(counts.ravel()) == {1, 2} and (counts.sum(axis=1) == 16).all()
    np.testing.assert_allclose(counts.mean(axis=0), 16 / 9, atol=0.06)
    # weights inside the 1e-6 tolerance but not summing to exactly 1 still give S sequences
    s = make(mode="stratified", weights=np.array([0.3, 0.3, 0.4 + 9e-7]), batch_size=5)
    assert step_counts(s, 1, 3).tolist() == [[3, 3, 4]]


def test_zero_weight_domain_is_never_drawn_and_set_weights_applies_next_step() -> None:
    s = make(weights=np.array([0.0, 1.0, 0.0]), mode="mixed")
    for step in run(s, 20):
        assert all((mb["domain_id"] == 1).all() for mb in step)
    s.set_weights(np.array([1.0, 0.0, 0.0]))
    assert all((mb["domain_id"] == 0).all() for mb in s.next_step())
    # 20 steps on news, 1 on code: the token-weighted average of the weights used.
    np.testing.assert_allclose(s.requested_shares(), [1 / 21, 20 / 21, 0.0])
    np.testing.assert_allclose(s.achieved_shares(), s.requested_shares())


def test_same_seed_same_batches_different_seed_differs() -> None:
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    steps_a, steps_b, steps_c = run(a, 5), run(b, 5), run(c, 5)
    assert_same(steps_a, steps_b)
    assert not np.array_equal(flat_ids(steps_a), flat_ids(steps_c))


def test_epochs_never_replay_an_order_and_cover_every_window() -> None:
    n, seq_len = 1000, 32
    s = MixtureSampler(
        FakeStore({"only": n}), seq_len=seq_len, batch_size=4, weights=np.array([1.0]), seed=1
    )
    starts = decode(flat_ids(run(s, 40)))[1][:, 0]  # one domain: global order = stream order
    epochs: list[list[int]] = [[]]
    for x in starts.tolist():  # an epoch ends when its offset changes or a window repeats
        cur = epochs[-1]
        if cur and (x % seq_len != cur[0] % seq_len or x in cur):
            epochs.append([])
        epochs[-1].append(x)
    assert len(epochs) >= 4
    for ep in epochs[:-1]:  # all complete epochs
        offset = ep[0] % seq_len
        assert sorted(ep) == [offset + i * seq_len for i in range((n - offset) // seq_len)]
    assert len({tuple(ep) for ep in epochs[:-1]}) == len(epochs) - 1
    np.testing.assert_allclose(s.epochs(), [40 * 4 * seq_len / n])
    assert s.stats()["domain/only/epochs"] == pytest.approx(5.12)


def test_small_domain_epochs_counted_per_domain() -> None:
    store = FakeStore({"big": 50_000, "tiny": 200})
    s = MixtureSampler(store, seq_len=16, batch_size=4, weights=np.array([0.5, 0.5]), seed=2)
    run(s, 50)
    served = s.tokens_served()
    np.testing.assert_allclose(s.epochs(), served / np.array([50_000, 200]))
    assert s.epochs()[1] > 3 and s.epochs()[0] < 0.1
    stats = s.stats()
    assert stats["domain/tiny/tokens"] == served[1]
    assert stats["mix/achieved/big"] + stats["mix/achieved/tiny"] == pytest.approx(1.0)
    assert stats["mix/requested/tiny"] == pytest.approx(0.5)


@pytest.mark.parametrize("mode", ["mixed", "stratified", "homogeneous"])
def test_resume_is_exact_across_epochs_and_weight_changes(mode: str) -> None:
    store = FakeStore({"a": 400, "b": 3_000, "c": 900})
    schedule = {3: [0.2, 0.2, 0.6], 9: [0.7, 0.0, 0.3]}

    def drive(s: MixtureSampler, first: int, last: int) -> list[list[dict[str, torch.Tensor]]]:
        out = []
        for t in range(first, last + 1):
            if t in schedule:
                s.set_weights(np.array(schedule[t]))
            out.append(s.next_step())
        return out

    kw = {"mode": mode, "weights": np.array([0.6, 0.2, 0.2]), "seed": 7}
    full = make(store, **kw)
    expected = drive(full, 1, 16)
    assert full.epochs()[0] > 2  # the run crosses several epochs of domain a

    first = make(store, **kw)
    drive(first, 1, 6)
    state = json.loads(json.dumps(first.state_dict()))  # plain python, survives JSON
    resumed = make(store, **{**kw, "weights": np.array([1.0, 0.0, 0.0])})
    resumed.load_state_dict(state)
    assert resumed.step == 6
    assert_same(drive(resumed, 7, 16), expected[6:])
    assert resumed.stats() == full.stats()
    assert resumed.state_dict() == full.state_dict()


def test_resume_rejects_other_store_or_geometry() -> None:
    s = make()
    s.next_step()
    state = s.state_dict()
    with pytest.raises(ResumeError, match="fingerprint"):
        make(FakeStore({**SIZES, "web": 30_001})).load_state_dict(state)
    with pytest.raises(ResumeError, match="seq_len"):
        make(seq_len=8).load_state_dict(state)
    with pytest.raises(ResumeError, match="microbatches_per_step"):
        make(world_size=2).load_state_dict(state)
    fresh = make()
    with pytest.raises(ResumeError, match="position"):
        fresh.load_state_dict({**state, "position": [0, 10**9, 0]})
    assert fresh.step == 0 and fresh.state_dict()["position"] == [0, 0, 0]  # untouched


@pytest.mark.parametrize("mode", ["mixed", "homogeneous"])
def test_ranks_split_one_global_step(mode: str) -> None:
    # Rank r's micro-batch m is micro-batch m*W + r of the single-process sampler with W times
    # the grad_accum; the two ranks never share a window within a step.
    store = FakeStore(SIZES)
    single = make(store, mode=mode, grad_accum=6, batch_size=3)
    ranks = [
        make(store, mode=mode, grad_accum=3, batch_size=3, rank=r, world_size=2) for r in (0, 1)
    ]
    for _ in range(6):
        whole = single.next_step()
        parts = [rk.next_step() for rk in ranks]
        for r in (0, 1):
            for m in range(3):
                for key in ("input_ids", "domain_id"):
                    assert torch.equal(parts[r][m][key], whole[m * 2 + r][key])
        windows = [
            {tuple(row[:2]) for mb in parts[r] for row in mb["input_ids"].tolist()} for r in (0, 1)
        ]
        assert not windows[0] & windows[1]
    assert ranks[0].state_dict() == ranks[1].state_dict()
    assert ranks[0].stats() == single.stats()
    # The state is global: a single-process sampler continues where the two ranks stopped.
    resumed = make(store, mode=mode, grad_accum=6, batch_size=3)
    resumed.load_state_dict(ranks[1].state_dict())
    after = resumed.next_step()
    for m, mb in enumerate(single.next_step()):
        assert torch.equal(mb["input_ids"], after[m]["input_ids"])


def test_val_split_reads_val_tokens() -> None:
    s = make(FakeStore(SIZES, val_size=200), split="val")
    _, pos = decode(flat_ids(run(s, 10)))
    assert pos.max() < 200
    np.testing.assert_allclose(s.epochs(), s.tokens_served() / 200)


def test_too_small_domain_is_a_data_error_naming_it() -> None:
    with pytest.raises(DataError, match=r"'news' has only 16 train tokens.*data\.seq_len"):
        make(FakeStore({"code": 1000, "news": 16, "web": 1000}), seq_len=16)
    make(FakeStore({"code": 1000, "news": 17, "web": 1000}), seq_len=16).next_step()


def test_invalid_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"mixing\.sampling"):
        make(mode="sometimes")
    with pytest.raises(ConfigError, match="rank 2"):
        make(rank=2, world_size=2)
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        make(batch_size=0)
    with pytest.raises(ConfigError, match="'news' is negative"):
        make(weights=np.array([0.7, -0.1, 0.4]))
    s = make()
    with pytest.raises(ConfigError, match="sum to"):
        s.set_weights(np.array([0.5, 0.5, 0.5]))
    np.testing.assert_allclose(s.weights(), [0.5, 0.3, 0.2])  # unchanged after a rejected call


@pytest.mark.parametrize("mode", ["mixed", "stratified", "homogeneous"])
def test_floor_gives_every_domain_its_units_each_step(mode: str) -> None:
    store = FakeStore({"a": 5000, "b": 5000, "c": 5000})
    w = [0.0, 0.0, 1.0]  # without the floor only c would ever be drawn
    s = MixtureSampler(
        store,
        seq_len=8,
        batch_size=2,
        grad_accum=5,
        weights=w,
        mode=mode,
        seed=3,
        floor_per_domain=1,
    )
    for _ in range(20):
        ids = torch.cat([b["domain_id"] for b in s.next_step()]).numpy()
        units = ids[::2] if mode == "homogeneous" else ids  # one label per micro-batch
        counts = np.bincount(units, minlength=3)
        assert counts.sum() == (5 if mode == "homogeneous" else 10)
        assert counts.min() >= 1
        if mode != "homogeneous":
            assert counts[0] == counts[1] == 1  # the floor and nothing more
    k_f_over_u = 3 / (5 if mode == "homogeneous" else 10)
    np.testing.assert_allclose(
        s.effective_weights(), k_f_over_u / 3 + (1 - k_f_over_u) * np.array(w)
    )
    np.testing.assert_allclose(s.requested_shares(), s.effective_weights())


def test_floor_says_how_much_of_each_step_it_fixes(caplog: pytest.LogCaptureFixture) -> None:
    """Three domains, one sequence each out of 4 per step: the sampled mixture is 75% uniform."""
    store = FakeStore({"a": 5000, "b": 5000, "c": 5000})
    with caplog.at_level("INFO", logger="mixlab.sampling.sampler"):
        MixtureSampler(store, seq_len=8, batch_size=4, weights=[0.2, 0.3, 0.5], floor_per_domain=1)
    assert "3 of the 4 sequences" in caplog.text and "75% uniform + 25%" in caplog.text


def test_floor_zero_keeps_the_draws_and_too_big_a_floor_is_an_error() -> None:
    store = FakeStore({"a": 5000, "b": 5000, "c": 5000})
    kw = {"seq_len": 8, "batch_size": 4, "weights": [0.2, 0.3, 0.5], "seed": 1}
    plain, floor0 = MixtureSampler(store, **kw), MixtureSampler(store, floor_per_domain=0, **kw)
    for _ in range(3):
        a, b = plain.next_step()[0], floor0.next_step()[0]
        assert torch.equal(a["input_ids"], b["input_ids"])
    with pytest.raises(ConfigError, match="floor_per_domain=2 forces 6 sequences"):
        MixtureSampler(store, floor_per_domain=2, **kw)
    with pytest.raises(ConfigError, match="micro-batches"):
        MixtureSampler(store, floor_per_domain=1, mode="homogeneous", grad_accum=2, **kw)
    state = MixtureSampler(store, floor_per_domain=1, **kw).state_dict()
    with pytest.raises(ResumeError, match="floor_per_domain"):
        plain.load_state_dict(state)
