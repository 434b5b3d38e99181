"""Measurements inside the model that some mixing policies need in their Feedback (AC-ODM).

Most policies learn from per-domain losses alone. A policy may also ask, through attributes
the loop reads once at start-up (see :mod:`mixlab.mixing.base`, "optional capabilities"):

* ``requires_gradients`` with ``reward_layers`` and ``reward_role``: per-domain gradient sums of
  those blocks' weight matrices, captured in the ordinary backward pass of the mixed batch
  (:class:`~mixlab.model.grad_capture.DomainGradCapture`). Feedback gets ``grad_sum`` (K, P),
  the sum of per-token gradients, and ``extras["grad_count"]`` = the domain's target tokens,
  so ``grad_sum[i] / grad_count[i]`` is domain i's mean gradient.
* ``depth_points`` with ``weight_tracker``: Frobenius norms of the MLP down-projections at
  those relative depths, measured after the optimiser step, and their change against the
  tracker's reference (Feedback ``param_norms`` and ``extras["param_diff_norms"]``).

Blocks and matrices are found by role (:mod:`mixlab.model.layers`), so GPT-NeoX and Llama
models (and most other HF decoders) work alike. :meth:`ModelProbes.for_policy` returns None
when a policy needs none of this, and the loop then does no extra work at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mixlab.mixing.acodm.reward import select_reward_blocks
from mixlab.mixing.acodm.state import select_depth_blocks
from mixlab.model.grad_capture import DomainGradCapture
from mixlab.model.layers import decoder_blocks, role_modules
from mixlab.train.distributed import full_tensor


class ModelProbes:
    """Gradient capture and weight-norm tracking for one (policy, model) pair."""

    def __init__(self, policy: Any, model: torch.nn.Module, num_domains: int) -> None:
        n_layers = len(decoder_blocks(model))
        self.capture: DomainGradCapture | None = None
        if getattr(policy, "requires_gradients", False):
            blocks = select_reward_blocks(n_layers, policy.reward_layers)
            modules = role_modules(model, getattr(policy, "reward_role", "mlp_down"), blocks)
            self.capture = DomainGradCapture(modules, num_domains)
        self.tracked: list[torch.nn.Linear] = []  # modules, not weights: FSDP swaps params
        self.tracker = getattr(policy, "weight_tracker", None)
        points = getattr(policy, "depth_points", None)
        if points and self.tracker is not None:
            self.tracked = role_modules(model, "mlp_down", select_depth_blocks(n_layers, points))

    @classmethod
    def for_policy(
        cls, policy: Any, model: torch.nn.Module, num_domains: int
    ) -> ModelProbes | None:
        wants = getattr(policy, "requires_gradients", False) or getattr(
            policy, "depth_points", None
        )
        return cls(policy, model, num_domains) if wants else None

    @property
    def capture_seconds(self) -> float:
        """Seconds spent in the gradient hooks since the last :meth:`measure`."""
        return 0.0 if self.capture is None else self.capture.seconds

    def begin(self, batch: dict[str, torch.Tensor]) -> None:
        """Call before each micro-batch's forward pass."""
        if self.capture is not None:
            self.capture.begin(batch["domain_id"])

    def measure(self, loss_scale_inverse: float, token_count: np.ndarray) -> dict[str, np.ndarray]:
        """This step's ``grad_sum``, ``grad_count``, ``param_norms``, ``param_diff_norms``.

        Call after ``optimizer.step()``. ``loss_scale_inverse`` undoes the loss normalisation
        of the backward pass (the step's target tokens for a token-mean loss), so the captured
        sums become sums of per-token gradients. The first two are this rank's and must be
        summed over ranks; the norms are the same on every rank (gathered under FSDP, so
        every rank must call this).
        """
        fields: dict[str, np.ndarray] = {}
        if self.capture is not None:
            fields["grad_sum"] = self.capture.collect(scale=loss_scale_inverse)
            fields["grad_count"] = np.asarray(token_count, dtype=np.float64).copy()
        if self.tracked and self.tracker is not None:
            matrices = [full_tensor(m.weight) for m in self.tracked]
            fields["param_norms"], fields["param_diff_norms"] = self.tracker.measure(matrices)
        return fields

    def close(self) -> None:
        if self.capture is not None:
            self.capture.close()
