"""Per-token causal-LM losses and per-domain sums from ONE forward pass of a mixed batch.

A packed batch mixes sequences of several domains (``domain_id`` (B,) says which). Instead of
one forward per domain, the loop runs the whole batch once, keeps the per-token cross-entropy
and groups it by the sequence's domain:

    token_loss[b, j] = CE(logits[b, j], labels[b, j + 1])          (B, L-1), fp32
    loss_sum[k]      = Σ_{b: domain_id[b] = k} Σ_j mask[b, j] · token_loss[b, j]
    token_count[k]   = Σ_{b: domain_id[b] = k} Σ_j mask[b, j]

Position j predicts token j + 1 (the causal shift Hugging Face applies when ``labels`` are
passed); ``labels == -100`` (:data:`IGNORE_INDEX`, e.g. MeCo's metadata prefix) gives loss 0 and
``mask`` False there. The training loss ``token_loss[mask].mean()`` is exactly the loss HF
returns for ``model(input_ids, labels=labels)``; ``loss_sum / token_count`` is the per-domain
token-mean loss the mixing policies consume (METHODS.md §0, feedback contract).

The cross-entropy is always computed in fp32, even from bf16 logits under autocast: a bf16
log-softmax over thousands of classes loses about two decimal digits of the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy (B, L-1) in fp32; 0 where the target label is ``IGNORE_INDEX``.

    ``logits`` is (B, L, V) in any float dtype, ``labels`` (B, L) int64 aligned with the inputs
    (usually ``labels = input_ids``); the shift by one happens here. Differentiable.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"token_losses: expected logits (B, L, V) and labels (B, L), "
            f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    batch, length, vocab = logits.shape
    # Shift the labels, not the logits: slicing (B, L, V) logits would copy them (tens of MB
    # per micro-batch, forward and backward); the padded last position is ignored.
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    losses = F.cross_entropy(
        logits.float().reshape(-1, vocab),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return losses.view(batch, length)[:, :-1]


def target_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, L-1) bool: True where position j has a real target ``labels[:, j + 1]``."""
    return labels[:, 1:] != IGNORE_INDEX


def masked_mean(token_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean loss over masked-in tokens; 0 (not NaN) when the mask is empty. Differentiable."""
    mask = mask.to(torch.bool)
    count = mask.sum().clamp(min=1)
    return torch.where(mask, token_loss, torch.zeros_like(token_loss)).sum() / count


def per_domain_sums(
    token_loss: torch.Tensor, mask: torch.Tensor, domain_id: torch.Tensor, num_domains: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss sums (K,) in ``token_loss``'s dtype and token counts (K,) int64 per domain.

    ``token_loss`` and ``mask`` are (B, L-1) (``mask`` bool, or 0/1 of any dtype); every row b
    belongs to domain ``domain_id[b]`` in ``[0, num_domains)``. Rows are reduced first and
    then scattered with ``index_add`` (no Python loop over the batch). Gradients flow into
    ``loss_sum`` (DoReMi reweights per-domain means); pass a detached ``token_loss`` when the
    sums are only feedback.
    """
    if token_loss.shape != mask.shape or token_loss.dim() != 2:
        raise ValueError(
            f"per_domain_sums: token_loss and mask must both be (B, L-1), "
            f"got {tuple(token_loss.shape)} and {tuple(mask.shape)}"
        )
    if domain_id.shape != (token_loss.shape[0],):
        raise ValueError(
            f"per_domain_sums: domain_id must be ({token_loss.shape[0]},), "
            f"got {tuple(domain_id.shape)}"
        )
    mask = mask.to(torch.bool)
    # where() rather than multiply: a masked-out inf/NaN loss must not poison the sum.
    row_loss = torch.where(mask, token_loss, torch.zeros_like(token_loss)).sum(dim=1)
    row_count = mask.sum(dim=1, dtype=torch.int64)
    index = domain_id.to(device=token_loss.device, dtype=torch.int64)
    loss_sum = torch.zeros(num_domains, dtype=token_loss.dtype, device=token_loss.device)
    token_count = torch.zeros(num_domains, dtype=torch.int64, device=token_loss.device)
    return loss_sum.index_add(0, index, row_loss), token_count.index_add(0, index, row_count)
