"""Per-token losses and per-domain sums: agree with HF's loss and with brute force."""

from __future__ import annotations

import math

import pytest
import torch

from mixlab.model.factory import build_model
from mixlab.model.losses import (
    IGNORE_INDEX,
    masked_mean,
    per_domain_sums,
    target_mask,
    token_losses,
)


def test_token_losses_shift_by_one_and_ignore_masked_targets() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=gen)
    labels = torch.randint(0, 7, (2, 5), generator=gen)
    labels[0, 3] = IGNORE_INDEX
    out = token_losses(logits, labels)
    assert out.shape == (2, 4) and out.dtype == torch.float32
    logp = torch.log_softmax(logits, dim=-1)
    for b in range(2):
        for j in range(4):
            target = int(labels[b, j + 1])
            expected = 0.0 if target == IGNORE_INDEX else -float(logp[b, j, target])
            assert float(out[b, j]) == pytest.approx(expected, abs=1e-6)
    assert target_mask(labels).tolist() == [[True, True, False, True], [True] * 4]


def test_uniform_logits_give_log_vocab() -> None:
    out = token_losses(torch.zeros(3, 6, 50), torch.randint(0, 50, (3, 6)))
    assert torch.allclose(out, torch.full((3, 5), math.log(50)))


def test_bf16_logits_are_scored_in_fp32() -> None:
    logits = torch.randn(2, 8, 1000).to(torch.bfloat16)
    labels = torch.randint(0, 1000, (2, 8))
    out = token_losses(logits, labels)
    assert out.dtype == torch.float32
    reference = token_losses(logits.float(), labels)
    assert torch.equal(out, reference)


@pytest.mark.parametrize("preset", ["neox-tiny", "llama-tiny"])
def test_masked_mean_equals_hf_loss(preset: str) -> None:
    model = build_model(preset=preset, vocab_size=300, eos_id=0, max_seq_len=32, seed=1)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 300, (4, 24), generator=gen)
    labels = ids.clone()
    labels[:, :5] = IGNORE_INDEX  # e.g. a metadata prefix
    labels[2, 10:] = IGNORE_INDEX
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    tok = token_losses(out.logits, labels)
    mask = target_mask(labels)
    assert float(tok[mask].mean()) == pytest.approx(float(out.loss), abs=1e-5)
    assert float(masked_mean(tok, mask)) == pytest.approx(float(out.loss), abs=1e-5)


def test_per_domain_sums_match_brute_force() -> None:
    gen = torch.Generator().manual_seed(2)
    loss = torch.rand(6, 9, generator=gen) * 5
    mask = torch.rand(6, 9, generator=gen) > 0.3
    domain = torch.tensor([2, 0, 2, 3, 0, 2])
    sums, counts = per_domain_sums(loss, mask, domain, num_domains=5)
    assert sums.dtype == torch.float32 and counts.dtype == torch.int64
    for k in range(5):
        rows = domain == k
        assert float(sums[k]) == pytest.approx(float(loss[rows][mask[rows]].sum()), rel=1e-6)
        assert int(counts[k]) == int(mask[rows].sum())
    assert float(sums[1]) == 0.0 and int(counts[1]) == 0 and int(counts[4]) == 0
    # Together the domains account for every masked-in token: the batch mean is recovered.
    assert float(sums.sum() / counts.sum()) == pytest.approx(float(loss[mask].mean()), rel=1e-6)


def test_per_domain_sums_ignore_masked_out_non_finite_values() -> None:
    loss = torch.tensor([[1.0, float("inf")], [2.0, float("nan")]])
    mask = torch.tensor([[1, 0], [1, 0]])  # 0/1 integers are accepted
    sums, counts = per_domain_sums(loss, mask, torch.tensor([0, 1]), num_domains=2)
    assert sums.tolist() == [1.0, 2.0] and counts.tolist() == [1, 1]


def test_per_domain_sums_are_differentiable() -> None:
    logits = torch.randn(3, 4, 11, requires_grad=True)
    labels = torch.randint(0, 11, (3, 4))
    tok = token_losses(logits, labels)
    sums, counts = per_domain_sums(tok, target_mask(labels), torch.tensor([0, 1, 0]), 2)
    (sums[1] / counts[1]).backward()
    assert logits.grad is not None
    # Only domain 1's row (batch index 1) receives gradient.
    assert float(logits.grad[1].abs().sum()) > 0
    assert float(logits.grad[0].abs().sum()) == 0 and float(logits.grad[2].abs().sum()) == 0


def test_masked_mean_of_nothing_is_zero() -> None:
    assert float(masked_mean(torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool))) == 0.0


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="logits"):
        token_losses(torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="domain_id"):
        per_domain_sums(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([0, 1, 1]), 2)
