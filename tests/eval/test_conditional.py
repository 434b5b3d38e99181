"""MeCo eval modes: the same document tokens scored with and without a prefix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mixlab.config import MecoConfig, RunConfig
from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError
from mixlab.eval.conditional import DocumentEvaluator, conditioning_effect
from mixlab.model.losses import token_losses
from mixlab.train.loop import model_from_config
from tests.conftest import tiny_run_config

MECO = MecoConfig(max_prefix_tokens=24)


@pytest.fixture(scope="module")
def setup(tiny_store):
    store = ShardStore(tiny_store)
    raw = tiny_run_config(tiny_store)
    raw["data"]["seq_len"] = 64
    model = model_from_config(RunConfig.from_dict(raw), store)
    evaluator = DocumentEvaluator(
        store, seq_len=64, meco=MECO, max_tokens_per_domain=1500, batch_size=8
    )
    return store, model, evaluator


def test_every_mode_scores_the_same_document_tokens(setup):
    _, model, ev = setup
    results = ev.evaluate_modes(
        model, ["uncond", "cond_true", "cond_fixed"], fixed_prefix="URL: prose.example.org\n\n"
    )
    counts = [r.token_count for r in results.values()]
    for c in counts[1:]:
        np.testing.assert_array_equal(c, counts[0])
    # no BOS in this tokenizer: every piece token but the first is scored
    expected = [sum(length - 1 for _, length, _ in pieces) for pieces in ev._pieces]
    np.testing.assert_array_equal(counts[0], expected)
    assert all(sum(length for _, length, _ in p) <= 1500 for p in ev._pieces)
    losses = [r.losses() for r in results.values()]
    assert all(np.isfinite(x).all() for x in losses)
    assert not np.allclose(losses[0], losses[1])  # a prefix changes the predictions
    effect = conditioning_effect(results)
    assert set(effect) == {"cond_true", "cond_fixed"}


def test_uncond_equals_scoring_each_piece_alone(setup):
    store, model, ev = setup
    result = ev.evaluate(model, "uncond")
    k = store.domains.index("code")
    tokens = store.tokens("code", "val")
    total, n = 0.0, 0
    with torch.no_grad():
        for start, length, _ in ev._pieces[k]:
            ids = torch.as_tensor(np.asarray(tokens[start : start + length], np.int64))[None]
            total += float(token_losses(model(input_ids=ids).logits, ids).sum(dtype=torch.float64))
            n += length - 1
    assert result.token_count[k] == n
    assert result.loss_sum[k] == pytest.approx(total, rel=1e-5)


def test_pieces_follow_the_training_chunk_rule(setup):
    store, _, ev = setup
    assert ev.chunk_len == 64 - MECO.max_prefix_tokens  # no BOS
    for d, pieces in zip(store.domains, ev._pieces, strict=True):
        offsets = store.doc_offsets(d, "val")
        for start, length, doc in pieces:
            assert offsets[doc] <= start and start + length <= offsets[doc + 1]
            assert length <= ev.chunk_len
        # round-robin: the cap takes every document's first piece before any second one
        n_docs = len(offsets) - 1
        first = pieces[: min(n_docs, len(pieces))]
        assert [doc for _, _, doc in first] == list(range(len(first)))
        assert all(start == offsets[doc] for start, _, doc in first)


def test_mode_errors_name_what_to_fix(setup):
    _, model, ev = setup
    with pytest.raises(ConfigError, match="--prefix"):
        ev.evaluate(model, "cond_fixed")
    with pytest.raises(ConfigError, match=r"meco\.max_prefix_tokens"):
        ev.evaluate(model, "cond_fixed", fixed_prefix="URL: " + "x" * 200)
    with pytest.raises(ConfigError, match="not one of"):
        ev.evaluate(model, "cond_random")


def test_evaluate_run_modes_writes_eval_modes_json(tiny_store, tmp_path):
    from mixlab.eval.runs import evaluate_run_modes
    from mixlab.train.loop import train

    raw = tiny_run_config(tiny_store, max_steps=3, eval_every=0)
    raw["data"]["seq_len"] = 64
    raw["meco"] = {"enabled": True, "max_prefix_tokens": 24}
    cfg = RunConfig.from_dict(raw)
    cfg.validate()
    train(cfg, tmp_path / "run")
    results = evaluate_run_modes(
        tmp_path / "run", ["uncond", "cond_fixed"], prefix="URL: code.example.org\n\n"
    )
    saved = json.loads((tmp_path / "run" / "eval_modes.json").read_text())
    assert saved["step"] == 3 and saved["fixed_prefix"] == "URL: code.example.org\n\n"
    assert set(saved["modes"]) == {"uncond", "cond_fixed"} == set(results)
