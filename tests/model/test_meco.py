"""MeCo pieces: schedule, prefixes, layout and loss mask, document isolation in real HF models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixlab.config import MecoConfig, RunConfig
from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError, DataError
from mixlab.model.losses import IGNORE_INDEX, token_losses
from mixlab.model.meco import (
    block_causal_mask,
    build_prefix_table,
    condition_steps,
    model_inputs,
    phase_of_step,
    segment_layout,
    supports_doc_masking,
    unescape_prefix,
)
from mixlab.train.loop import Trainer
from tests.conftest import tiny_run_config


def meco_trainer(store, tmp_path, **meco) -> Trainer:
    raw = tiny_run_config(store)
    raw["data"]["seq_len"] = 64  # the tiny store's prefixes take ~20 tokens
    raw["meco"] = {"enabled": True, "max_prefix_tokens": 24, **meco}
    preset = raw["meco"].pop("preset", None)
    if preset:
        raw["model"]["preset"] = preset
    cfg = RunConfig.from_dict(raw)
    cfg.validate()
    return Trainer(cfg, tmp_path / "run")


@pytest.mark.parametrize(
    ("steps", "fraction", "expected"),
    [(100, 0.1, 90), (30, 0.1, 27), (12, 0.25, 9), (7, 0.3, 4), (10, 0.0, 10), (10, 1.0, 0)],
)
def test_condition_steps_is_the_floor_of_the_conditioning_share(steps, fraction, expected):
    assert condition_steps(steps, fraction) == expected


def test_phase_switches_after_s_c():
    assert [phase_of_step(t, 3) for t in range(1, 6)] == [0, 0, 0, 1, 1]
    with pytest.raises(ConfigError, match=r"meco\.cooldown_fraction"):
        condition_steps(10, 1.5)


def test_segment_layout_masks_bos_and_prefix_only():
    prefix, doc = np.array([7, 8, 9]), np.array([20, 21, 22, 0])
    ids, labels, n = segment_layout(prefix, doc, bos_id=5)
    assert ids.tolist() == [5, 7, 8, 9, 20, 21, 22, 0] and n == 3
    assert labels.tolist() == [-100, -100, -100, -100, 20, 21, 22, 0]  # first doc token: target
    _, labels, _ = segment_layout(prefix, doc, bos_id=None)
    assert labels.tolist() == [-100, -100, -100, 20, 21, 22, 0]
    _, labels, _ = segment_layout(np.empty(0, np.int64), doc, bos_id=None)
    assert labels.tolist() == [-100, 21, 22, 0]  # nothing precedes the first token
    _, labels, _ = segment_layout(prefix, doc, bos_id=None, first_target=False)
    assert labels.tolist() == [-100, -100, -100, -100, 21, 22, 0]
    _, labels, _ = segment_layout(prefix, doc, bos_id=None, mask_metadata=False)
    assert labels.tolist() == [-100, 8, 9, 20, 21, 22, 0]


def test_block_causal_mask_and_model_inputs():
    seg = torch.tensor([[0, 0, 1, 1, 1]])
    mask = block_causal_mask(seg, torch.float32)
    allowed = (mask[0, 0] == 0).int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 1],
    ]
    batch = {"input_ids": seg, "labels": seg, "domain_id": seg[:, 0], "segment_ids": seg}
    batch["position_ids"] = torch.tensor([[0, 1, 0, 1, 2]])
    kwargs = model_inputs(batch)
    assert set(kwargs) == {"input_ids", "position_ids", "attention_mask"}
    assert set(model_inputs({"input_ids": seg, "labels": seg})) == {"input_ids"}


def test_unescape_prefix():
    assert unescape_prefix(r"URL: a.org\n\n") == "URL: a.org\n\n"
    assert unescape_prefix(r"a\tb\\n") == "a\tb\\n"


def test_prefix_table_tokenises_each_host_once(tiny_store):
    store = ShardStore(tiny_store)
    table = build_prefix_table(store, MecoConfig(), store.tokenizer())
    assert sorted(table.texts) == sorted(f"URL: {d}.example.org\n\n" for d in store.domains)
    tok = store.tokenizer()
    for text, ids in zip(table.texts, table.tokens, strict=True):
        assert tok.decode(ids.tolist()) == text
        assert ids.tolist() == tok.encode(text, add_special_tokens=False).ids
    for d in store.domains:
        assert len(table.doc_prefix[d]) == store.num_docs(d) and (table.doc_prefix[d] >= 0).all()
        assert table.texts[int(table.doc_prefix[d][0])] == f"URL: {d}.example.org\n\n"
    hashed = build_prefix_table(store, MecoConfig(metadata_variant="hashed"), tok)
    assert all(t.startswith("URL: site-") for t in hashed.texts)
    with pytest.raises(ConfigError, match=r"meco\.max_prefix_tokens=2"):
        build_prefix_table(store, MecoConfig(max_prefix_tokens=2), tok)


class _Metadata:
    domains = ("code",)

    def metadata(self, domain: str, split: str = "train") -> list[str]:
        return ["", "https://a.example.org/x", "  "]


def test_missing_metadata_policies(tiny_store):
    tok = ShardStore(tiny_store).tokenizer()
    skip = build_prefix_table(_Metadata(), MecoConfig(), tok)
    assert skip.doc_prefix["code"].tolist() == [-1, 0, -1] and skip.missing == {"code": 2}
    named = build_prefix_table(_Metadata(), MecoConfig(missing_metadata="use_domain_name"), tok)
    assert [named.texts[i] for i in named.doc_prefix["code"]] == [
        "URL: code\n\n",
        "URL: a.example.org\n\n",
        "URL: code\n\n",
    ]
    with pytest.raises(DataError, match="document 0 has no usable metadata"):
        build_prefix_table(_Metadata(), MecoConfig(missing_metadata="error"), tok)


def test_prefix_tokens_give_zero_loss_and_zero_gradient(tiny_store, tmp_path):
    trainer = meco_trainer(tiny_store, tmp_path)
    batch = trainer.sampler.next_step()[0]
    labels = batch["labels"]
    logits = trainer.model(**model_inputs(batch)).logits
    logits.retain_grad()
    tok_loss = token_losses(logits, labels)
    tok_loss.sum().backward()
    masked = labels[:, 1:] == IGNORE_INDEX  # positions whose target is a prefix token (or pad)
    ids = batch["input_ids"][:, 1:]
    prefix_ids = {int(x) for t in trainer.sampler.prefixes.tokens for x in t}
    assert masked.any() and any(int(x) in prefix_ids for x in ids[masked])
    assert (tok_loss[masked] == 0).all()
    assert (logits.grad[:, :-1][masked] == 0).all()
    assert (logits.grad[:, :-1][~masked].abs().sum(dim=-1) > 0).all()
    # each document's first target is its first token, right after the last prefix token
    seg, checked = batch["segment_ids"], 0
    for r in range(len(seg)):
        for s in seg[r].unique().tolist():
            targets = torch.nonzero((seg[r] == s) & (labels[r] != IGNORE_INDEX)).flatten()
            if len(targets):
                k = int(targets[0])
                assert int(batch["input_ids"][r, k - 1]) in prefix_ids
                assert labels[r, k] == batch["input_ids"][r, k]
                checked += 1
    assert checked >= len(seg)


@pytest.mark.parametrize("preset", ["llama-tiny", "neox-tiny"])
def test_doc_masked_isolates_documents_in_hf_models(tiny_store, tmp_path, preset):
    """Editing a token of document A leaves the logits of document B unchanged."""
    trainer = meco_trainer(tiny_store, tmp_path, preset=preset)
    model = trainer.model.eval()
    assert supports_doc_masking(model) and trainer.sampler.packing == "doc_masked"
    batch = trainer.sampler.next_step()[0]
    seg = batch["segment_ids"]
    r = int(torch.nonzero((seg == 1).any(dim=1))[0])
    a_pos = torch.nonzero(seg[r] == 0).flatten()
    b_pos = torch.nonzero(seg[r] == 1).flatten()
    edited = batch["input_ids"].clone()
    edited[r, a_pos[1]] = (edited[r, a_pos[1]] + 1) % model.config.vocab_size
    with torch.no_grad():
        before = model(**model_inputs(batch)).logits[r]
        after = model(**model_inputs({**batch, "input_ids": edited})).logits[r]
        alone = model(input_ids=batch["input_ids"][r : r + 1, b_pos]).logits[0]
        plain = model(input_ids=edited).logits[r]  # concat: no isolation (the control)
    torch.testing.assert_close(after[b_pos], before[b_pos], rtol=0, atol=1e-6)
    torch.testing.assert_close(before[b_pos], alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(after[a_pos[1:]], before[a_pos[1:]])
    assert not torch.allclose(plain[b_pos], before[b_pos], atol=1e-4)


class _Ignores4dMask(torch.nn.Module):
    """A causal 'model' whose logits at j sum the embeddings of tokens 0..j (no isolation)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(300, 4)
        self.config = type("Config", (), {"vocab_size": 300})()

    def forward(self, input_ids, **kwargs):
        return type("Out", (), {"logits": self.embed(input_ids).cumsum(dim=1)})()


def test_packing_falls_back_to_pad_when_the_model_cannot_isolate(caplog):
    from mixlab.model.meco import resolve_packing

    model = _Ignores4dMask()
    assert not supports_doc_masking(model)
    assert resolve_packing("doc_masked", model) == "pad"
    assert "falling back to packing=pad" in caplog.text
    assert resolve_packing("concat", model) == "concat"
