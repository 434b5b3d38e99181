"""What the backward pass of a training step minimises, given each micro-batch's token losses.

The loop forwards every micro-batch, computes its per-token losses (fp32, 0 where masked) and
hands them to the run's objective, which decides when and what to back-propagate:

* :class:`Objective` itself (every ordinary run): the mean loss over all target tokens of the step,
  back-propagated micro-batch by micro-batch, so gradient accumulation is exactly a bigger batch:
  ``backward(sum of token losses * world_size / global target tokens)``.
* :class:`GroupDroObjective` (``group_dro``; the ``doremi`` policy, DoReMi's proxy,
  METHODS.md §3): the alpha-weighted sum of per-domain mean losses, with alpha updated from the
  step's excess loss over the frozen reference the policy names.

A policy picks its objective by name (``policy.needs.objective``; :func:`build_objective`).
The loop scores every micro-batch with the policy's reference model, if it has one, and passes
the step's per-domain sums to :meth:`Objective.end_step`.
"""

from __future__ import annotations

import numpy as np
import torch

from mixlab.mixing.base import MixingPolicy
from mixlab.mixing.doremi import DoremiProxyPolicy, GroupDRO
from mixlab.model.losses import per_domain_sums, target_mask


class Objective:
    """The token-mean language-modelling loss; the base class of every objective."""

    def begin_step(self, batches: list[dict[str, torch.Tensor]], num_domains: int) -> None:
        """Called before the step's first forward pass, with all its micro-batches."""

    def micro_batch(
        self, tok_loss: torch.Tensor, batch: dict[str, torch.Tensor], scale: float
    ) -> None:
        """One micro-batch's (B, L-1) token losses (with graph): back-propagate the mean.

        ``scale`` = world size / the step's global target tokens.
        """
        (tok_loss.sum() * scale).backward()

    def end_step(self, reference_sums: dict[str, torch.Tensor]) -> None:
        """After the last micro-batch (``reference_sums``: the reference's per-domain sums)."""


class GroupDroObjective(Objective):
    """DoReMi's proxy objective: Group DRO on the excess loss over a frozen reference.

    Per step (``alpha_timing=exact``): forward every micro-batch, keep its per-domain loss sums
    (with graph); with the reference's clipped excess of the whole step, ``dro.update`` turns
    lambda_t into alpha_t; then back-propagate ``L = sum_i alpha_t,i * mean loss of domain i``
    (``loss_normalizer=per_domain``) or the token-weighted variant. ``lagged`` weights each
    micro-batch by alpha_{t-1} and back-propagates it at once (less memory, the release).

    ``dro`` belongs to the ``doremi`` policy (:class:`~mixlab.mixing.doremi.DoremiProxyPolicy`),
    whose state checkpoints it; ``sampling`` are the proxy's sampling weights (uniform in
    DoReMi): alpha reweights the loss, never the sampling.
    """

    def __init__(
        self,
        dro: GroupDRO,
        sampling: np.ndarray,
        *,
        loss_normalizer: str = "per_domain",
        alpha_timing: str = "exact",
    ) -> None:
        self.dro = dro
        self.sampling = np.asarray(sampling, dtype=np.float64)
        self.loss_normalizer = loss_normalizer
        self.exact = alpha_timing == "exact"
        self._count = torch.zeros(0, dtype=torch.int64)
        self._alpha_prev = dro.alpha.copy()
        self._kept: list[torch.Tensor] = []

    def weighted_loss(
        self, loss_sum: torch.Tensor, count: torch.Tensor, alpha: np.ndarray
    ) -> torch.Tensor:
        """L = sum_i alpha_i * loss_sum_i / n_i (per_domain), or the token-weighted variant.

        ``token_weighted`` (the release) weighs token j by v = alpha_d / s_d (s = sampling
        weights) and normalises by sum_j v_j. Absent domains (n_i = 0) contribute nothing.
        """
        a = torch.as_tensor(alpha, dtype=loss_sum.dtype)
        present = count > 0
        if self.loss_normalizer == "per_domain":
            return (a * loss_sum / count.clamp(min=1)).where(present, 0).sum()
        s = torch.as_tensor(self.sampling, dtype=loss_sum.dtype)
        v = (a / s).where(s > 0, 0)
        return (v * loss_sum).sum() / (v * count).sum().clamp(min=1e-12)

    def begin_step(self, batches: list[dict[str, torch.Tensor]], num_domains: int) -> None:
        self._count = torch.zeros(num_domains, dtype=torch.int64)  # target tokens per domain
        for b in batches:
            self._count.index_add_(0, b["domain_id"], target_mask(b["labels"]).sum(dim=1))
        self._alpha_prev = self.dro.alpha.copy()
        self._kept = []

    def micro_batch(
        self, tok_loss: torch.Tensor, batch: dict[str, torch.Tensor], scale: float
    ) -> None:
        k = len(self._count)
        sums, _ = per_domain_sums(tok_loss, target_mask(batch["labels"]), batch["domain_id"], k)
        if self.exact:
            self._kept.append(sums)
        else:  # lagged: alpha_t-1 is known, so this micro-batch's graph can go now
            self.weighted_loss(sums, self._count.to(sums.dtype), self._alpha_prev).backward()

    def end_step(self, reference_sums: dict[str, torch.Tensor]) -> None:
        alpha = self.dro.update(reference_sums["excess_sum"].numpy(), self._count.numpy())
        if self.exact:
            total = torch.stack(self._kept).sum(dim=0)
            self.weighted_loss(total, self._count.to(total.dtype), alpha).backward()
            self._kept = []


def build_objective(name: str, policy: MixingPolicy) -> Objective:
    """The objective ``policy.needs.objective`` names: ``token_mean`` or ``group_dro``."""
    if name == "token_mean":
        return Objective()
    if name == "group_dro":
        assert isinstance(policy, DoremiProxyPolicy), "group_dro is the doremi policy's objective"
        return GroupDroObjective(
            policy.dro,
            policy.weights(),
            loss_normalizer=policy.loss_normalizer,
            alpha_timing=policy.alpha_timing,
        )
    raise ValueError(f"unknown training objective {name!r}")
