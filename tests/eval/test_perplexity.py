"""Per-domain evaluation: the window rule, exact sums, determinism, modes, errors, result I/O."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mixlab.errors import ConfigError, DataError
from mixlab.eval.metrics import aggregates
from mixlab.eval.perplexity import EvalResult, evaluate, validation_windows
from mixlab.model.factory import build_model

VOCAB = 64


class FakeStore:
    """Duck-typed ShardStore with random tokens; val sizes per domain are chosen by the test."""

    def __init__(self, val_sizes: dict[str, int], train_sizes: dict[str, int] | None = None):
        self.domains = tuple(sorted(val_sizes))
        rng = np.random.default_rng(0)
        self._val = {d: rng.integers(0, VOCAB, n).astype(np.uint16) for d, n in val_sizes.items()}
        self._train = train_sizes or {d: 1000 for d in self.domains}

    def tokens(self, domain: str, split: str = "train") -> np.ndarray:
        assert split == "val", "evaluation must only read the validation split"
        return self._val[domain]

    def train_tokens_per_domain(self) -> np.ndarray:
        return np.array([self._train[d] for d in self.domains], dtype=np.int64)


class UniformModel(torch.nn.Module):
    """Zero logits: every token costs exactly ln(V). Records the batch shapes it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(vocab_size=VOCAB)
        self.scale = torch.nn.Parameter(torch.zeros(()))
        self.shapes: list[tuple[int, ...]] = []
        self.grad_enabled: list[bool] = []

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> SimpleNamespace:
        self.shapes.append(tuple(input_ids.shape))
        self.grad_enabled.append(torch.is_grad_enabled())
        logits = self.scale * torch.ones(*input_ids.shape, VOCAB)
        return SimpleNamespace(logits=logits)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_model(preset="llama-tiny", vocab_size=VOCAB, eos_id=0, max_seq_len=32, seed=0)


def test_windows_are_consecutive_and_capped() -> None:
    tokens = np.arange(1000, dtype=np.uint32)
    w = validation_windows(tokens, seq_len=128, max_tokens=None)
    assert w.shape == (7, 128) and w.dtype == np.int64
    assert np.array_equal(w.reshape(-1), np.arange(896))  # last partial window dropped
    assert validation_windows(tokens, seq_len=128, max_tokens=300).shape == (2, 128)
    assert validation_windows(tokens, seq_len=100, max_tokens=None).shape == (10, 100)
    short = validation_windows(tokens[:50], seq_len=128, max_tokens=None)
    assert np.array_equal(short, np.arange(50)[None, :])  # the only window: what exists
    with pytest.raises(DataError, match=r"'tiny'.*1 token"):
        validation_windows(tokens[:1], seq_len=128, max_tokens=None, domain="tiny")


def test_uniform_model_scores_exactly_log_vocab() -> None:
    store = FakeStore({"a": 100, "b": 45, "c": 10})
    m = UniformModel()
    result = evaluate(m, store, seq_len=20, batch_size=2, max_tokens_per_domain=None)
    assert result.domains == ("a", "b", "c")
    # a: 5 windows x 19 targets; b: 2 x 19 (5 leftover tokens dropped); c: one window of 10.
    assert result.token_count.tolist() == [95, 38, 9]
    assert np.allclose(result.loss_sum, result.token_count * math.log(VOCAB))
    assert np.allclose(result.ppl(), VOCAB)
    assert m.shapes == [(2, 20), (2, 20), (1, 20), (2, 20), (1, 10)]
    assert not any(m.grad_enabled)


def test_matches_hf_loss_per_window(model: torch.nn.Module) -> None:
    store = FakeStore({"x": 130, "y": 70})
    result = evaluate(model, store, seq_len=32, batch_size=3, max_tokens_per_domain=None)
    for k, d in enumerate(store.domains):
        windows = validation_windows(store.tokens(d, "val"), seq_len=32, max_tokens=None)
        with torch.no_grad():
            ids = torch.from_numpy(windows)
            expected = float(model(input_ids=ids, labels=ids).loss)  # equal-length windows
        assert result.losses()[k] == pytest.approx(expected, abs=1e-5)
        assert result.token_count[k] == windows.shape[0] * 31


def test_deterministic_batch_invariant_and_restores_mode(model: torch.nn.Module) -> None:
    store = FakeStore({"x": 200, "y": 100})
    model.train()
    first = evaluate(model, store, seq_len=32, batch_size=4)
    assert model.training
    again = evaluate(model, store, seq_len=32, batch_size=4)
    assert np.array_equal(first.loss_sum, again.loss_sum)
    one_by_one = evaluate(model, store, seq_len=32, batch_size=1)
    assert np.allclose(first.loss_sum, one_by_one.loss_sum, rtol=1e-5)
    model.eval()
    evaluate(model, store, seq_len=32)
    assert not model.training
    model.train()


def test_cap_limits_tokens_per_domain(model: torch.nn.Module) -> None:
    store = FakeStore({"x": 500})
    capped = evaluate(model, store, seq_len=32, max_tokens_per_domain=100)
    assert capped.token_count.tolist() == [3 * 31]
    with pytest.raises(ConfigError, match=r"eval\.max_tokens_per_domain=16"):
        evaluate(model, store, seq_len=32, max_tokens_per_domain=16)


def test_bf16_autocast_is_close_to_fp32(model: torch.nn.Module) -> None:
    store = FakeStore({"x": 256})
    fp32 = evaluate(model, store, seq_len=32)
    bf16 = evaluate(model, store, seq_len=32, autocast_dtype=torch.bfloat16)
    assert bf16.loss_sum.dtype == np.float64
    assert bf16.losses()[0] == pytest.approx(fp32.losses()[0], abs=0.05)


def test_data_errors() -> None:
    with pytest.raises(DataError, match=r"'b'.*1 token"):
        evaluate(UniformModel(), FakeStore({"a": 40, "b": 1}), seq_len=8)
    store = FakeStore({"a": 40})
    store._val["a"][5] = VOCAB + 3
    with pytest.raises(DataError, match="token id 67 >= model vocab_size 64"):
        evaluate(UniformModel(), store, seq_len=8)


def test_result_aggregates_table_and_json_round_trip() -> None:
    store = FakeStore({"a": 100, "b": 60}, train_sizes={"a": 300, "b": 100})
    result = evaluate(UniformModel(), store, seq_len=20, max_tokens_per_domain=None)
    result = EvalResult(
        result.domains,
        result.loss_sum * np.array([1.0, 2.0]),  # make b twice as hard
        result.token_count,
        result.natural_weights,
    )
    assert result.natural_weights.tolist() == [0.75, 0.25]
    expected = aggregates({"a": math.log(VOCAB), "b": 2 * math.log(VOCAB)}, {"a": 0.75, "b": 0.25})
    got = result.aggregates()
    assert got.keys() == expected.keys()
    for key, value in expected.items():  # ln V was computed in fp32 by the loss
        assert got[key] == pytest.approx(value, rel=1e-6), key
    assert result.worst_domain() == "b"
    metrics = result.to_metrics()
    assert metrics["eval/b/ppl"] == pytest.approx(VOCAB**2)
    assert metrics["eval/natural_loss"] == pytest.approx(1.25 * math.log(VOCAB))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["worst_domain"] == "b"
    assert data["domains"]["a"]["tokens"] == 95
    back = EvalResult.from_dict(data)
    assert back.domains == result.domains
    assert np.array_equal(back.token_count, result.token_count)
    assert np.allclose(back.loss_sum, result.loss_sum)
    table = result.format_table()
    for needle in ("a ", "b ", "mean_ppl", "geo_ppl", "natural_ppl", "worst_ppl", "4096.000"):
        assert needle in table
