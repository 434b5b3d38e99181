"""Document subsamples: deterministic, nested, sized by tokens, an index that slices correctly."""

from __future__ import annotations

import numpy as np
import pytest

from mixlab.data.store import ShardStore
from mixlab.data.subsample import (
    SubsampledStore,
    SubsampledTokens,
    document_keys,
    select_documents,
    subsample_store,
)
from mixlab.errors import ConfigError
from mixlab.sampling.sampler import MixtureSampler
from tests.sampling.fakes import FakeStore, decode


def _ragged_store() -> FakeStore:
    """A fake store whose documents have uneven lengths (so runs and sizes are non-trivial)."""
    store = FakeStore({"a": 5000, "b": 1200, "c": 800})
    rng = np.random.default_rng(3)
    offsets = {}
    for d in store.domains:
        n = store.num_tokens(d)
        cuts = np.sort(rng.choice(np.arange(1, n), size=n // 40, replace=False))
        offsets[d] = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    store.doc_offsets = lambda domain, split="train": (  # type: ignore[method-assign]
        offsets[domain] if split == "train" else np.array([0, store.num_tokens(domain, split)])
    )
    return store


def _selected_stream(store: FakeStore, sub: SubsampledStore, domain: str) -> np.ndarray:
    offsets = store.doc_offsets(domain)
    tokens = store.tokens(domain)
    docs = sub.selected_documents(domain)
    return np.concatenate([tokens[offsets[i] : offsets[i + 1]] for i in docs])


def test_keys_depend_on_seed_domain_and_index_only() -> None:
    a = document_keys(0, "code", 100)
    assert np.array_equal(a, document_keys(0, "code", 100))
    assert np.array_equal(a[:40], document_keys(0, "code", 40))  # not on the number of docs
    assert not np.array_equal(a, document_keys(1, "code", 100))
    assert not np.array_equal(a, document_keys(0, "prose", 100))
    assert len(np.unique(a)) == 100


def test_selection_is_nested_and_holds_the_fraction_of_tokens() -> None:
    lengths = np.random.default_rng(0).integers(5, 400, size=300)
    previous: set[int] = set()
    for f in (0.05, 0.2, 0.5, 0.8, 1.0):
        docs = select_documents(lengths, f, seed=7, domain="web")
        assert np.all(np.diff(docs) > 0)  # sorted, unique
        assert previous <= set(docs.tolist())  # nested as f grows
        previous = set(docs.tolist())
        held = int(lengths[docs].sum())
        # the closest whole-document count to f of the tokens: off by at most half a document
        assert abs(held - f * lengths.sum()) <= lengths.max() / 2
    assert len(previous) == 300
    assert select_documents([10], 0.01, seed=0, domain="x").tolist() == [0]  # >= one doc
    with pytest.raises(ConfigError, match=r"data\.subsample"):
        select_documents(lengths, 0.0, seed=0, domain="x")


def test_subsampled_tokens_match_the_selected_documents() -> None:
    store = _ragged_store()
    sub = SubsampledStore(store, 0.4, seed=1)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    for d in store.domains:
        expected = _selected_stream(store, sub, d)
        view = sub.tokens(d)
        assert isinstance(view, SubsampledTokens)
        assert len(view) == sub.num_tokens(d) == len(expected)
        assert sub.doc_offsets(d)[-1] == len(expected)
        assert sub.num_docs(d) == len(sub.selected_documents(d))
        for _ in range(200):
            a = int(rng.integers(0, len(expected) - 1))
            b = int(rng.integers(a, min(len(expected), a + 300) + 1))
            assert np.array_equal(view[a:b], expected[a:b])
        assert np.array_equal(np.asarray(view), expected)
        longest = int(np.diff(store.doc_offsets(d)).max())
        assert abs(sub.num_tokens(d) - 0.4 * store.num_tokens(d)) <= longest / 2
    assert sub.tokens("a", "val") is store.tokens("a", "val")  # validation untouched
    with pytest.raises(TypeError, match="slices"):
        sub.tokens("a")[3]  # type: ignore[index]


def test_sampler_windows_contain_only_selected_documents_and_count_epochs() -> None:
    store = _ragged_store()
    sub = SubsampledStore(store, 0.3, seed=2)  # type: ignore[arg-type]
    allowed = {}
    for i, d in enumerate(store.domains):
        offsets = store.doc_offsets(d)
        docs = sub.selected_documents(d)
        allowed[i] = set(
            np.concatenate([np.arange(offsets[j], offsets[j + 1]) for j in docs]).tolist()
        )
    sampler = MixtureSampler(sub, seq_len=16, batch_size=8, weights=[0.5, 0.3, 0.2], seed=4)
    for _ in range(40):
        for batch in sampler.next_step():
            domain, position = decode(batch["input_ids"].numpy())
            for row_d, row_p in zip(domain, position, strict=True):
                assert len(set(row_d.tolist())) == 1
                assert set(row_p.tolist()) <= allowed[int(row_d[0])]
    served = sampler.tokens_served()
    kept = sub.train_tokens_per_domain()
    assert np.allclose(sampler.epochs(), served / kept)
    assert (sampler.epochs() > served / store.train_tokens_per_domain()).all()
    assert sampler.state_dict()["subsample"] == {"fraction": 0.3, "seed": 2}


def test_full_fraction_is_the_store_itself(tiny_store) -> None:
    store = ShardStore(tiny_store)
    assert subsample_store(store, 1.0) is store
    sub = subsample_store(store, 0.5, seed=3)
    assert isinstance(sub, SubsampledStore)
    for d in store.domains:
        rows = store.metadata(d)
        docs = sub.selected_documents(d)
        assert sub.metadata(d) == [rows[i] for i in docs]
        # every selected document still ends with EOS in the virtual stream
        ends = sub.doc_offsets(d)[1:] - 1
        view = sub.tokens(d)
        assert all(int(view[e : e + 1][0]) == store.eos_id for e in ends.tolist())
    summary = sub.summary(np.full(len(store.domains), 0.25), 10_000.0)
    for d, row in summary.items():
        assert row["tokens"] == sub.num_tokens(d)
        assert row["epochs"] == pytest.approx(0.25 * 10_000 / row["tokens"])


def test_document_sampler_reads_only_selected_documents() -> None:
    from mixlab.sampling.documents import DocumentSampler

    store = _ragged_store()
    sub = SubsampledStore(store, 0.3, seed=5)  # type: ignore[arg-type]
    sampler = DocumentSampler(
        sub,
        prefixes=None,
        condition_steps=0,
        chunk_len=24,
        packing="pad",
        seq_len=24,
        batch_size=4,
        weights=[0.4, 0.3, 0.3],
        seed=1,
    )
    docs_of = {}
    for i, d in enumerate(store.domains):
        offsets = store.doc_offsets(d)
        docs_of[i] = {
            int(p): j for j in sub.selected_documents(d) for p in range(offsets[j], offsets[j + 1])
        }
    for _ in range(30):
        for batch in sampler.next_step():
            ids, labels = batch["input_ids"].numpy(), batch["labels"].numpy()
            for row, lab in zip(ids, labels, strict=True):
                domain, position = decode(row[lab != -100])
                if domain.size:
                    # one document of the subsample per padded sequence
                    owners = {docs_of[int(domain[0])][int(p)] for p in position}
                    assert len(owners) == 1
    assert sampler.state_dict()["subsample"] == {"fraction": 0.3, "seed": 5}
