"""DocumentSampler: MeCo layout, loss mask, phases, packing, accounting, ranks, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixlab.errors import ConfigError, ResumeError
from mixlab.model.meco import PrefixTable
from mixlab.sampling import MixtureSampler
from mixlab.sampling.documents import DocumentSampler

from .fakes import DOC_LEN, DOMAIN_STRIDE, FakeStore, decode

SIZES = {"code": 5_000, "news": 3_000, "web": 8_000}
PREFIX_BASE = 900_000  # prefix token ids: never a document token of the fake store
BOS = 999_999


def prefix_table(store: FakeStore, missing_every: int = 0) -> PrefixTable:
    """Prefix k has k + 2 tokens; document i of domain d gets prefix (d + i) % 3."""
    tokens = tuple(np.arange(k + 2, dtype=np.int64) + PREFIX_BASE + 10 * k for k in range(3))
    doc_prefix = {}
    for d, name in enumerate(store.domains):
        n = store.num_docs(name)
        ids = (np.arange(n) + d) % 3
        if missing_every:
            ids[::missing_every] = -1
        doc_prefix[name] = ids.astype(np.int64)
    return PrefixTable(("a", "bb", "ccc"), tokens, doc_prefix, dict.fromkeys(store.domains, 0))


def make(store: FakeStore | None = None, **kw: object) -> DocumentSampler:
    store = store or FakeStore(SIZES)
    args: dict[str, object] = {
        "prefixes": prefix_table(store),
        "condition_steps": 5,
        "chunk_len": 20,
        "seq_len": 32,
        "batch_size": 4,
        "grad_accum": 2,
        # Domain 0's first token has the value 0 = the pad id; keep it out unless needed.
        "weights": np.array([0.0, 0.6, 0.4]),
        "seed": 0,
    }
    args.update(kw)
    return DocumentSampler(store, **args)  # type: ignore[arg-type]


def segments(mb: dict[str, torch.Tensor], row: int) -> list[np.ndarray]:
    """Positions of each packed document of a doc_masked row (padding has id 0)."""
    seg, ids = mb["segment_ids"][row].numpy(), mb["input_ids"][row].numpy()
    return [np.flatnonzero((seg == s) & (ids != 0)) for s in np.unique(seg[ids != 0])]


def is_prefix(ids: np.ndarray) -> np.ndarray:
    return (ids % DOMAIN_STRIDE >= PREFIX_BASE) & (ids != BOS)


@pytest.mark.parametrize("bos", [None, BOS])
def test_labels_are_masked_exactly_on_bos_and_prefix(bos: int | None) -> None:
    store = FakeStore(SIZES)
    store.bos_id = bos
    s = make(store, chunk_len=20 - (bos is not None))
    for mb in s.next_step():
        ids, labels = mb["input_ids"].numpy(), mb["labels"].numpy()
        for r in range(len(ids)):
            for pos in segments(mb, r):
                seg_ids, seg_labels = ids[r, pos], labels[r, pos]
                head = int(bos is not None)
                n_prefix = int(is_prefix(seg_ids).sum())
                assert n_prefix >= 2  # conditioning: every document has a prefix here
                if bos is not None:
                    assert seg_ids[0] == bos
                assert is_prefix(seg_ids[head : head + n_prefix]).all()
                assert (seg_labels[: head + n_prefix] == -100).all()
                # The first document token is a target, and so is every later one (and EOS).
                np.testing.assert_array_equal(
                    seg_labels[head + n_prefix :], seg_ids[head + n_prefix :]
                )
                # positions restart at every document
                positions = mb["position_ids"][r].numpy()[pos]
                np.testing.assert_array_equal(positions, np.arange(len(pos)))
        assert (labels[ids == 0] == -100).all()  # padding


def test_cooldown_batches_have_no_prefix_and_plain_first_token_is_masked() -> None:
    s = make(condition_steps=3)
    for t in range(1, 8):
        step = s.next_step()
        ids = np.concatenate([mb["input_ids"].numpy().ravel() for mb in step])
        assert is_prefix(ids).any() == (t <= 3), t
    # cooldown layout: [doc]; its first token has no context (no BOS) so it is no target
    mb = s.next_step()[0]
    for r in range(len(mb["input_ids"])):
        for pos in segments(mb, r):
            labels = mb["labels"][r].numpy()[pos]
            assert labels[0] == -100 and (labels[1:] != -100).all()


def test_documents_are_contiguous_pieces_of_their_domain() -> None:
    store = FakeStore(SIZES)
    s = make(store, condition_steps=0)
    for mb in (mb for _ in range(20) for mb in s.next_step()):
        ids = mb["input_ids"].numpy()
        for r in range(len(ids)):
            for pos in segments(mb, r):
                domain, tok = decode(ids[r, pos])
                assert (domain == int(mb["domain_id"][r])).all()
                assert (np.diff(tok) == 1).all()
                # a segment never crosses a document boundary (documents are DOC_LEN long)
                assert len(set((tok // DOC_LEN).tolist())) == 1


def test_split_fill_serves_every_document_token_once_per_epoch() -> None:
    store = FakeStore({"only": 2_000})
    s = make(store, weights=np.array([1.0]), condition_steps=10**9, batch_size=2, grad_accum=1)
    seen = np.zeros(2_000, dtype=np.int64)
    while s.epochs()[0] < 1.0:
        for mb in s.next_step():
            ids = mb["input_ids"].numpy()
            doc = ids[ids < PREFIX_BASE]
            np.add.at(seen, doc[doc > 0] % DOMAIN_STRIDE, 1)
    assert s.epochs()[0] == pytest.approx(1.0, abs=0.05)
    assert (seen[1:] <= 2).all() and (seen[1:] >= 1).mean() > 0.95  # token 0 is the pad id


@pytest.mark.parametrize(("packing", "fill"), [("pad", "split"), ("doc_masked", "complete")])
def test_pad_and_complete_never_cut_a_piece(packing: str, fill: str) -> None:
    s = make(packing=packing, fill=fill, condition_steps=0)
    for mb in (mb for _ in range(10) for mb in s.next_step()):
        assert ("segment_ids" in mb) == (packing == "doc_masked")
        ids = mb["input_ids"].numpy()
        for r in range(len(ids)):
            if packing == "pad":  # one piece per sequence
                pieces = [ids[r][ids[r] != 0]]
            else:
                pieces = [ids[r][pos] for pos in segments(mb, r)]
            for piece in pieces:
                _, tok = decode(piece)
                assert (np.diff(tok) == 1).all()
                # pieces are 20-token chunks of 50-token documents: 20, 20, 10
                assert tok[0] % DOC_LEN in (0, 20, 40)
                assert len(tok) == min(20, DOC_LEN - tok[0] % DOC_LEN)


def test_domain_labels_match_the_window_sampler() -> None:
    kw = dict(seq_len=32, batch_size=4, grad_accum=2, weights=np.array([0.2, 0.3, 0.5]), seed=3)
    for mode in ("mixed", "stratified", "homogeneous"):
        windows = MixtureSampler(FakeStore(SIZES), mode=mode, **kw)  # type: ignore[arg-type]
        docs = make(mode=mode, **kw)
        for _ in range(6):
            a = torch.cat([mb["domain_id"] for mb in windows.next_step()])
            b = torch.cat([mb["domain_id"] for mb in docs.next_step()])
            assert torch.equal(a, b), mode


def test_homogeneous_microbatches_are_single_domain() -> None:
    s = make(mode="homogeneous")
    for mb in (mb for _ in range(10) for mb in s.next_step()):
        domain, _ = decode(mb["input_ids"].numpy()[mb["labels"].numpy() != -100])
        assert len(set(domain.tolist())) == 1


def test_accounting_counts_loss_tokens_only() -> None:
    s = make(condition_steps=4, weights=np.array([0.5, 0.3, 0.2]))
    loss_tokens = 0
    for _ in range(8):
        for mb in s.next_step():
            loss_tokens += int((mb["labels"][:, 1:] != -100).sum())  # the loop's target count
    totals = s.totals()
    assert totals["loss_tokens"] == loss_tokens == int(s.tokens_served().sum())
    assert totals["positions"] == 8 * s.sequences_per_step * 32
    assert totals["context_tokens"] + totals["pad_tokens"] == totals["positions"]
    assert 0 < totals["metadata_tokens"] < totals["context_tokens"] - totals["loss_tokens"] + 1
    np.testing.assert_allclose(s.requested_shares(), [0.5, 0.3, 0.2], atol=1e-12)
    # shares are of loss tokens: the served counts, not sequences, make them up
    np.testing.assert_allclose(s.achieved_shares(), s.tokens_served() / loss_tokens)
    assert s.achieved_shares().sum() == pytest.approx(1.0)


def test_unmasked_metadata_is_trained_on() -> None:
    s = make(mask_metadata=False)
    mb = s.next_step()[0]
    ids, labels = mb["input_ids"].numpy(), mb["labels"].numpy()
    prefix = is_prefix(ids)
    first = np.zeros_like(prefix)
    first[:, 1:] = prefix[:, 1:] & ~prefix[:, :-1]
    first[:, 0] = prefix[:, 0]
    # every prefix token except a segment's very first (nothing precedes it) is a target
    assert (labels[prefix & ~first] != -100).all()
    assert (labels[first] == -100).all()


def test_missing_metadata_gets_no_prefix() -> None:
    store = FakeStore(SIZES)
    s = make(store, prefixes=prefix_table(store, missing_every=1), condition_steps=100)
    ids = np.concatenate([mb["input_ids"].numpy().ravel() for mb in s.next_step()])
    assert not is_prefix(ids).any()


def test_ranks_split_the_global_step() -> None:
    one = make(grad_accum=4)
    two = [make(grad_accum=2, rank=r, world_size=2) for r in range(2)]
    for _ in range(7):
        full = one.next_step()
        parts = [t.next_step() for t in two]
        for m in range(2):
            for r in range(2):
                for key in ("input_ids", "labels", "domain_id", "segment_ids", "position_ids"):
                    assert torch.equal(parts[r][m][key], full[m * 2 + r][key]), key
    assert two[0].state_dict() == two[1].state_dict()


@pytest.mark.parametrize("stop", [3, 5, 6, 9])
def test_state_round_trip_continues_identically(stop: int) -> None:
    """Before, at and after s_c = 5: the restored sampler serves the same future batches."""
    a = make()
    for _ in range(stop):
        a.next_step()
    b = make()
    b.load_state_dict(a.state_dict())
    for _ in range(8):
        for x, y in zip(a.next_step(), b.next_step(), strict=True):
            assert x.keys() == y.keys()
            for key in x:
                assert torch.equal(x[key], y[key]), key
    assert a.state_dict() == b.state_dict()


def test_resume_refuses_other_geometry_and_window_states() -> None:
    a = make()
    a.next_step()
    with pytest.raises(ResumeError, match="condition_steps"):
        make(condition_steps=6).load_state_dict(a.state_dict())
    with pytest.raises(ResumeError, match="packing"):
        make(packing="pad").load_state_dict(a.state_dict())
    windows = MixtureSampler(FakeStore(SIZES), seq_len=32, batch_size=4, weights=[0.5, 0.3, 0.2])
    with pytest.raises(ResumeError, match="meco"):
        make().load_state_dict(windows.state_dict())
    broken = a.state_dict()
    broken["documents"]["offset"] = [10_000, 0, 0]
    fresh = make()
    with pytest.raises(ResumeError, match="does not fit"):
        fresh.load_state_dict(broken)
    assert fresh.step == 0  # a failed load leaves the sampler untouched


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"meco\.packing"):
        make(packing="nope")
    with pytest.raises(ConfigError, match=r"meco\.fill"):
        make(fill="nope")
    with pytest.raises(ConfigError, match="chunk_len"):
        make(chunk_len=31)  # 31 + the 4-token prefix does not fit seq_len 32
