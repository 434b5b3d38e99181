"""Per-domain gradients from ONE backward of a mixed batch equal brute force (METHODS.md §2.1).

Brute force: for each domain, a separate forward/backward of only that domain's sequences with
the loss = sum of their token losses, reading ``weight.grad`` of the captured layers.
"""

from __future__ import annotations

import pytest
import torch

from mixlab.model.factory import build_model
from mixlab.model.grad_capture import DomainGradCapture
from mixlab.model.layers import role_modules
from mixlab.model.losses import IGNORE_INDEX, token_losses

K = 3


def tiny(preset: str) -> torch.nn.Module:
    return build_model(preset=preset, vocab_size=300, eos_id=1, max_seq_len=32, seed=0)


def batch(seed: int, n: int = 6, length: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 300, (n, length), generator=g)
    labels = ids.clone()
    labels[0, :5] = IGNORE_INDEX  # a masked prefix (MeCo) must not matter
    return {
        "input_ids": ids,
        "labels": labels,
        "domain_id": torch.tensor([0, 2, 0, 2, 2, 0][:n]),  # domain 1 absent
    }


def brute_force(model, modules, batches) -> torch.Tensor:
    """(K, P): sum over micro-batches of d(sum of domain-d token losses)/dW per domain."""
    rows = []
    for d in range(K):
        model.zero_grad(set_to_none=True)
        for b in batches:
            keep = b["domain_id"] == d
            if keep.any():
                logits = model(input_ids=b["input_ids"][keep]).logits
                token_losses(logits, b["labels"][keep]).sum().backward()
        rows.append(
            torch.cat(
                [
                    m.weight.grad.flatten()
                    if m.weight.grad is not None
                    else torch.zeros(m.weight.numel())
                    for m in modules
                ]
            )
        )
    model.zero_grad(set_to_none=True)
    return torch.stack(rows)


@pytest.mark.parametrize("preset", ["llama-tiny", "neox-tiny"])
def test_one_backward_equals_per_domain_backwards(preset: str) -> None:
    model = tiny(preset)
    modules = role_modules(model, "mlp_down", [1, 0])
    batches = [batch(0), batch(1)]  # gradient accumulation over two micro-batches
    expected = brute_force(model, modules, batches)

    capture = DomainGradCapture(modules, K)
    n_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
    for b in batches:
        capture.begin(b["domain_id"])
        loss = token_losses(model(input_ids=b["input_ids"]).logits, b["labels"]).sum()
        (loss / n_tokens).backward()
    got = torch.from_numpy(capture.collect(scale=n_tokens))
    assert got.shape == (K, sum(m.weight.numel() for m in modules))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert torch.count_nonzero(got[1]) == 0  # absent domain
    # The domain gradients sum to the whole batch's gradient on those layers.
    total = torch.cat([m.weight.grad.flatten() for m in modules]) * n_tokens
    torch.testing.assert_close(got.sum(0), total, rtol=1e-4, atol=1e-6)
    assert capture.backward_calls == 2 * len(modules)
    # collect() restarted the buffer; no-grad forwards (evaluation) add nothing.
    with torch.no_grad():
        capture.begin(batches[0]["domain_id"])
        model(input_ids=batches[0]["input_ids"])
    assert not capture.collect().any()
    capture.close()
    assert not any(m._forward_hooks for m in modules)


def test_batch_size_mismatch_is_reported() -> None:
    model = tiny("llama-tiny")
    capture = DomainGradCapture(role_modules(model, "mlp_down", [0]), K)
    b = batch(0)
    capture.begin(b["domain_id"][:2])
    with pytest.raises(ValueError, match="2 domain ids"):
        model(input_ids=b["input_ids"])
